/* A growable list of chat messages owned by the CLI (strings are copies). */
#ifndef CAMELID_CHAT_MESSAGES_H
#define CAMELID_CHAT_MESSAGES_H

#include "camelid/chat.h"

typedef struct chat_messages {
    cm_chat_message *items;
    size_t n, cap;
} chat_messages;

cm_status chat_messages_add(chat_messages *m, const char *role, const char *content);
/* Put `system` first (replacing a system message already there). */
cm_status chat_messages_set_system(chat_messages *m, const char *system);
/* Drop everything but a leading system message. */
void chat_messages_clear_turns(chat_messages *m);
/* Remove the first user/assistant exchange after the system message (to fit a context). */
void chat_messages_drop_oldest_turn(chat_messages *m);
/* Parse an OpenAI-style JSON list [{"role", "content"}...]; `name` is used in errors. */
cm_status chat_messages_parse(const char *json, size_t len, const char *name, chat_messages *out);
void chat_messages_free(chat_messages *m);

#endif
