/*
 * chat: per-chat queues and the conversation state machine.
 *
 * Updates of one chat are handled strictly in order, one at a time, so a
 * history is never read and written by two jobs at once; different chats
 * run concurrently on the loop. A reply is a chain of steps, each starting
 * one asynchronous operation and naming its continuation:
 *
 *   load history -> ask the model (trim, retry on context overflow)
 *     -> deliver the answer -> save both turns -> next job
 *
 * "typing…" is shown from the start of a job until the answer is delivered
 * or the job fails. See docs/internals/CONVERSATION.md.
 */
#ifndef TGLLM_CHAT_H
#define TGLLM_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "gate/bot.h"
#include "telegram/update.h"

struct chats;

struct chats *chats_new(struct bot *b);
/* Cancels whatever is running; unfinished updates stay pending in the journal. */
void chats_free(struct chats *cs);
/* Queues u (ownership moves to the queue; *u is left cleared) for action. -1 when out of memory. */
int chats_submit(struct chats *cs, struct tg_update *u, enum bot_action action);
/*
 * Stops every job at once (no callbacks, nothing marked done) and writes the
 * update ids of up to max of them to update_ids; returns how many it wrote.
 */
size_t chats_abandon(struct chats *cs, int64_t *update_ids, size_t max);
/* Jobs queued or running. */
size_t chats_busy(const struct chats *cs);
void chats_on_idle(struct chats *cs, void (*cb)(void *arg), void *arg);
/*
 * Time is nearly up (serverless): every answer still streaming from the
 * model is cut where it is and delivered with a notice, then stored, so the
 * history stays consistent.
 */
void chats_hurry(struct chats *cs);

#endif
