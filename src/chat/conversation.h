/*
 * conversation: one job of a chat (chat.h), from the update to the journal's
 * "done". Private to the chat stage: the queue (chat/queue.c) runs one at a
 * time per chat. See docs/internals/CONVERSATION.md for the steps.
 */
#ifndef TGLLM_CONVERSATION_H
#define TGLLM_CONVERSATION_H

#include <stdbool.h>
#include <stdint.h>

#include "chat/chat.h"

struct conversation;

/*
 * Takes u (its contents move in; *u is left cleared). ended runs once, from
 * the loop, when the job is over, whatever happened. NULL when out of memory.
 */
struct conversation *conversation_new(const struct chat_env *env, struct tg_update *u, enum chat_job job,
                                      void (*ended)(void *arg), void *arg);
/* Starts the job's first step. */
void conversation_start(struct conversation *c);
/* While the model streams: cuts the answer short and delivers what there is; false when not streaming. */
bool conversation_hurry(struct conversation *c);
int64_t conversation_update_id(const struct conversation *c);
/* Stops at once: no callback runs afterwards; the update is not marked done. NULL is a no-op. */
void conversation_free(struct conversation *c);

#endif
