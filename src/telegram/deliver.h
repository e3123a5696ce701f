/*
 * deliver: one answer from the model to the chat, live.
 *
 * While the model streams, the answer so far is rendered (render.h) and
 * shown: in private chats as a draft (sendMessageDraft, Bot API 9.5), in
 * groups — or where drafts fail — as a message that is edited as it grows.
 * Frames go out no faster than the chat's rate budget (tg_chat_wait); a
 * frame hit by a 429 is dropped, the next one carries the newer text.
 * Drafts are no messages: they are paced among themselves, take none of the
 * chat's message slots, and a draft in flight or just sent never delays the
 * final message (a quick answer goes out at once). When
 * the answer is complete, the final parts are sent (or the streamed messages
 * edited into them) in order, the first as a reply to the user's message.
 * A part Telegram rejects (400) is sent again as plain text, without
 * entities, rather than lost.
 */
#ifndef TGLLM_DELIVER_H
#define TGLLM_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "lib/buf.h"
#include "telegram/render.h"
#include "telegram/send.h"
#include "telegram/tg.h"

/* is_delivered: every part reached the chat (in some form). */
typedef void (*delivery_done_cb)(void *arg, bool is_delivered);
/* The first text became visible: the typing indicator can stop. */
typedef void (*delivery_visible_cb)(void *arg);

struct delivery;

/*
 * An answer to t->reply_to in t's chat. text is the answer as the model
 * writes it (Markdown), read live: owned by the caller, kept until the
 * delivery is freed, only growing while it streams. think says what becomes
 * of the model's <think> text.
 */
struct delivery *delivery_new(struct tg_client *tg, struct event_base *base, enum render_think think,
			      const struct tg_target *t, const struct buf *text, delivery_visible_cb visible,
			      void *arg);
/*
 * While it streams, the answer can be stopped: a draft carries Telegram's
 * own stop control (can_stop, Bot API 10.3: the chat then gets a
 * stopped_message_generation update naming delivery_draft_id), a message
 * shown by edits an inline button (label, callback data; at most 64 bytes)
 * that the final parts no longer carry. Before the first frame.
 */
void delivery_offer_stop(struct delivery *d, const char *label, const char *data);
/* The draft_id of the answer's drafts: the user's message it answers. */
int64_t delivery_draft_id(const struct delivery *d);
/* The text grew. Safe to call from inside other callbacks: nothing is sent from here. */
void delivery_progress(struct delivery *d);
/*
 * The complete answer: replaces what came before. done runs once everything
 * is sent. After this, no more progress.
 */
void delivery_finish(struct delivery *d, const char *text, size_t len, delivery_done_cb done);
/* Stops at once; no callback runs afterwards. NULL is a no-op. */
void delivery_free(struct delivery *d);

#endif
