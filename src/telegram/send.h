/*
 * send: the messages the bot sends beside its answers, built here so that
 * the conversation never writes a Bot API body: a notice (plain text, as a
 * reply) and the "typing…" indicator, repeated while the model works
 * (https://core.telegram.org/bots/api#sendchataction: it shows for 5 s).
 * struct tg_target, where a message goes, is shared with the delivery of
 * answers (telegram/deliver.h).
 */
#ifndef TGLLM_SEND_H
#define TGLLM_SEND_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "telegram/tg.h"
#include "telegram/update.h"

struct tg_target {
	int64_t chat_id;
	int64_t thread_id; /* message_thread_id of a forum topic to send into, 0 for none */
	int64_t reply_to;  /* the message_id answered, 0 for none */
	bool is_private;
};

/* Where the bot answers message m: its chat, its topic, as a reply to it. */
static inline struct tg_target tg_target_of(const struct tg_message *m)
{
	return (struct tg_target){
	    .chat_id = m->chat_id,
	    .thread_id = m->is_topic_message ? m->thread_id : 0,
	    .reply_to = m->message_id,
	    .is_private = m->chat_type == TG_CHAT_PRIVATE,
	};
}

/*
 * Opens a request body for the target: {"chat_id":…[,"message_thread_id":…]
 * and, with is_reply, the reply_parameters that make it an answer to
 * reply_to (sent even if that message is gone). The caller adds its members
 * and closes it (jsonw_finish_object).
 */
int tg_open_target(struct buf *b, const struct tg_target *t, bool is_reply);

/*
 * sendMessage of plain text (copied) to t, as a reply to t->reply_to when
 * that is set. Like tg_call: NULL when it cannot start, else done runs once.
 */
struct tg_call *tg_send_text(struct tg_client *tg, const struct tg_target *t, const char *text, size_t len,
                             tg_done_cb done, void *arg);

/*
 * sendPhoto of len bytes (copied) uploaded as multipart/form-data, a PNG or
 * JPEG, with caption (at most 1024 characters: cut here, on a character)
 * to t, as a reply (https://core.telegram.org/bots/api#sendphoto).
 */
struct tg_call *tg_send_photo(struct tg_client *tg, const struct tg_target *t, const char *data, size_t len,
                              const char *caption, tg_done_cb done, void *arg);

/* A button of an inline keyboard: its label and its callback data (at most 64 bytes). */
struct tg_button {
	const char *text;
	const char *data;
};

/* tg_send_text with an inline keyboard of n buttons (copied), one a row, under the text. */
struct tg_call *tg_send_keyboard(struct tg_client *tg, const struct tg_target *t, const char *text,
                                 const struct tg_button *buttons, size_t n, tg_done_cb done, void *arg);
/* editMessageText: message_id of chat_id now reads text, with n buttons under it (0: none). */
struct tg_call *tg_edit_keyboard(struct tg_client *tg, int64_t chat_id, int64_t message_id, const char *text,
                                 const struct tg_button *buttons, size_t n, tg_done_cb done, void *arg);
/* answerCallbackQuery: ends the button's spinner, showing text (NULL: nothing) to who pressed it. */
struct tg_call *tg_answer_callback(struct tg_client *tg, const char *callback_id, const char *text,
                                   tg_done_cb done, void *arg);

/*
 * The indicator's state, held by whoever shows it (a conversation: thousands
 * wait at once, so no allocation of its own). All zero: not running.
 */
struct tg_typing {
	struct tg_client *tg;
	const char *action; /* a literal: "typing", "upload_photo" */
	int64_t chat_id, thread_id; /* the chat action's target: no reply */
	struct event *timer;
	struct tg_call *call;
};

/* Shows "typing…" in the target's chat now and every few seconds until stopped. */
void tg_typing_start(struct tg_typing *typing, struct tg_client *tg, struct event_base *base,
                     const struct tg_target *t);
/* The same with another chat action (https://core.telegram.org/bots/api#sendchataction), a literal. */
void tg_action_start(struct tg_typing *typing, struct tg_client *tg, struct event_base *base,
                     const struct tg_target *t, const char *action);
/* Stops it, also a call in flight; typing is left all zero. Stopping one not running is a no-op. */
void tg_typing_stop(struct tg_typing *typing);

#endif
