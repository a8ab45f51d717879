/* Server-sent events for the streamed replies (serve_internal.h): the OpenAI completions and the arena's
 * battles write their events into an sse_out that srv_reply_sse hands to libmicrohttpd, so the
 * event framing, the [DONE] end, the error event and the reply's headers are the same for both. */
#include <stdlib.h>
#include <string.h>

#include "serve/serve_internal.h"

void srv_sse_event(sse_out *o, char *json) {
    if (!json) {
        o->buf.failed = true;
        return;
    }
    cm_strbuf_append(&o->buf, "data: ", 6);
    cm_strbuf_append(&o->buf, json, strlen(json));
    cm_strbuf_append(&o->buf, "\n\n", 2);
    free(json);
}

void srv_sse_done(sse_out *o) {
    cm_strbuf_append(&o->buf, "data: [DONE]\n\n", 14);
    o->ended = true;
}

void srv_sse_error(sse_out *o, int status, const char *type, const char *message) {
    cm_api_error e;
    cm_api_error_set(&e, status, type, NULL, NULL, "%s", message);
    srv_sse_event(o, cm_api_error_json(&e));
    srv_sse_done(o);
}

/* What libmicrohttpd's callbacks get: the stream, how to fill it and whose it is. */
typedef struct {
    sse_out *o;
    bool (*more)(void *cls);
    void (*done)(void *cls);
    void *cls;
} sse_reply;

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    sse_reply *r = cls;
    sse_out *o = r->o;
    (void)pos;
    while (o->off >= o->buf.len) {
        /* all that was buffered is sent: start the buffer over before waiting for more */
        o->buf.len = o->off = 0;
        if (o->buf.failed) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (o->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        if (!r->more(r->cls)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = o->buf.len - o->off;
    if (n > max) n = max;
    memcpy(buf, o->buf.buf + o->off, n);
    o->off += n;
    return (ssize_t)n;
}

static void sse_free(void *cls) {
    sse_reply *r = cls;
    r->done(r->cls);
    free(r);
}

enum MHD_Result srv_reply_sse(cm_server *s, struct MHD_Connection *c, sse_out *o, bool (*more)(void *cls),
                              void (*done)(void *cls), void *cls) {
    sse_reply *r = malloc(sizeof *r);
    if (!r) {
        done(cls);
        return MHD_NO;
    }
    *r = (sse_reply){o, more, done, cls};
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, r, sse_free);
    if (!resp) {
        sse_free(r);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* proxies must not hold events back */
    srv_keep_alive(s, resp);
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

int srv_sse_finish(cm_server *s, route_id r, const sse_out *o, int status) {
    /* a stream cut before its end while all was well lost its client; it began as a 200 and counts so */
    if (!o->ended && status == 200) status = 499;
    srv_count_request(s, r, status == 499 ? 200 : status);
    return status;
}
