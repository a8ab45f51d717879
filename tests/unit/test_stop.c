/* Stop strings over streamed text: the earliest match wins, empty stops never match, and exactly the bytes
 * that could still grow into a stop string are held back. */
#include "camelid/generate.h"

#include "check.h"

int main(void) {
    const char *const stops[] = {"", "world", "lo w", "\n\n"};
    const char *t = "hello world\n\n";
    size_t n = strlen(t);
    CHECK(cm_stop_find(t, n, stops, 1) == -1);     /* "" alone never matches */
    CHECK(cm_stop_find(t, n, stops, 2) == 6);      /* "world" */
    CHECK(cm_stop_find(t, n, stops, 3) == 3);      /* "lo w" starts earlier and wins */
    CHECK(cm_stop_find(t, n, stops + 3, 1) == 11); /* "\n\n" */
    CHECK(cm_stop_find(t, 4, stops, 4) == -1);     /* too short to hold any */
    CHECK(cm_stop_find(t, n, stops, 0) == -1);

    /* held back: the longest proper prefix of a stop string that ends the text */
    CHECK(cm_stop_held_back("say wor", 7, stops, 4) == 3);    /* "wor" of "world" */
    CHECK(cm_stop_held_back("hello", 5, stops, 4) == 2);      /* "lo" of "lo w" */
    CHECK(cm_stop_held_back("hey", 3, stops, 4) == 0);        /* nothing can grow into a stop */
    CHECK(cm_stop_held_back("hel lo ", 7, stops, 4) == 3);    /* "lo " of "lo w" */
    CHECK(cm_stop_held_back("line\n", 5, stops, 4) == 1);     /* "\n" of "\n\n" */
    CHECK(cm_stop_held_back("worl", 4, stops + 1, 1) == 4);   /* the whole text can be a prefix */
    CHECK(cm_stop_held_back("world", 5, stops + 1, 1) == 0);  /* a whole match is not held: find sees it */
    CHECK(cm_stop_held_back("", 0, stops, 4) == 0);
    CHECK_DONE();
}
