#include "telegram/send.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jsonw.h"
#include "lib/log.h"

#define SEND_TIMEOUT_S    30
#define TYPING_INTERVAL_S 4 /* Telegram shows "typing" for 5 s */

int tg_open_target(struct buf *b, const struct tg_target *t, bool is_reply)
{
	buf_init(b, SIZE_MAX - 1);
	int rc = buf_append_str(b, "{");
	if (rc == BUF_OK)
		rc = jsonw_member_int(b, "chat_id", t->chat_id);
	if (rc == BUF_OK && t->thread_id)
		rc = jsonw_member_int(b, "message_thread_id", t->thread_id);
	if (!is_reply || !t->reply_to || rc != BUF_OK)
		return rc;
	rc = jsonw_member(b, "reply_parameters");
	if (rc == BUF_OK)
		rc = buf_append_str(b, "{");
	if (rc == BUF_OK)
		rc = jsonw_member_int(b, "message_id", t->reply_to);
	if (rc == BUF_OK)
		rc = buf_append_str(b, ",\"allow_sending_without_reply\":true}");
	return rc;
}


/* "reply_markup":{"inline_keyboard":[[{"text":…,"callback_data":…}],…]}, a button a row. */
static int write_keyboard(struct buf *b, const struct tg_button *buttons, size_t n)
{
	int rc = jsonw_member(b, "reply_markup");
	if (rc == BUF_OK)
		rc = buf_append_str(b, "{\"inline_keyboard\":[");
	for (size_t i = 0; i < n && rc == BUF_OK; i++) {
		rc = jsonw_member(b, NULL);
		if (rc == BUF_OK)
			rc = buf_append_str(b, "[{");
		if (rc == BUF_OK)
			rc = jsonw_member_string(b, "text", buttons[i].text, strlen(buttons[i].text));
		if (rc == BUF_OK)
			rc = jsonw_member_string(b, "callback_data", buttons[i].data, strlen(buttons[i].data));
		if (rc == BUF_OK)
			rc = buf_append_str(b, "}]");
	}
	return rc == BUF_OK ? buf_append_str(b, "]}") : rc;
}

/* Ends a body opened for chat_id with the text and n buttons (none: no keyboard), and calls method. */
static struct tg_call *call_with_text(struct tg_client *tg, const char *method, struct buf *b, int rc,
                                      int64_t chat_id, const char *text, size_t len,
                                      const struct tg_button *buttons, size_t n, tg_done_cb done, void *arg)
{
	if (rc == BUF_OK)
		rc = jsonw_member_string(b, "text", text, len);
	if (rc == BUF_OK && n)
		rc = write_keyboard(b, buttons, n);
	char *params = jsonw_finish_object(b, rc);
	if (!params) {
		log_error("chat=%lld: out of memory writing a message", (long long)chat_id);
		return NULL;
	}
	return tg_call(tg, method, params, chat_id, 0, SEND_TIMEOUT_S, done, arg);
}

struct tg_call *tg_send_text(struct tg_client *tg, const struct tg_target *t, const char *text, size_t len,
                             tg_done_cb done, void *arg)
{
	struct buf b;
	int rc = tg_open_target(&b, t, true);
	return call_with_text(tg, "sendMessage", &b, rc, t->chat_id, text, len, NULL, 0, done, arg);
}

struct tg_call *tg_send_keyboard(struct tg_client *tg, const struct tg_target *t, const char *text,
                                 const struct tg_button *buttons, size_t n, tg_done_cb done, void *arg)
{
	struct buf b;
	int rc = tg_open_target(&b, t, true);
	return call_with_text(tg, "sendMessage", &b, rc, t->chat_id, text, strlen(text), buttons, n, done, arg);
}

struct tg_call *tg_edit_keyboard(struct tg_client *tg, int64_t chat_id, int64_t message_id, const char *text,
                                 const struct tg_button *buttons, size_t n, tg_done_cb done, void *arg)
{
	struct buf b;
	struct tg_target t = {.chat_id = chat_id};
	int rc = tg_open_target(&b, &t, false);
	if (rc == BUF_OK)
		rc = jsonw_member_int(&b, "message_id", message_id);
	return call_with_text(tg, "editMessageText", &b, rc, chat_id, text, strlen(text), buttons, n, done, arg);
}

struct tg_call *tg_answer_callback(struct tg_client *tg, const char *callback_id, const char *text,
                                   tg_done_cb done, void *arg)
{
	struct buf b;
	buf_init(&b, SIZE_MAX - 1);
	int rc = buf_append_str(&b, "{");
	if (rc == BUF_OK)
		rc = jsonw_member_string(&b, "callback_query_id", callback_id, strlen(callback_id));
	if (rc == BUF_OK && text)
		rc = jsonw_member_string(&b, "text", text, strlen(text));
	char *params = jsonw_finish_object(&b, rc);
	if (!params) {
		log_error("out of memory answering a button");
		return NULL;
	}
	/* Not paced as a message: it writes to no chat, and the person waits on a spinner. */
	return tg_call(tg, "answerCallbackQuery", params, 0, 0, SEND_TIMEOUT_S, done, arg);
}

#define CAPTION_MAX 1024 /* characters (https://core.telegram.org/bots/api#sendphoto) */

/* The bytes of caption's first CAPTION_MAX characters (UTF-16 units, as Telegram counts). */
static size_t caption_cut(const char *s)
{
	size_t units = 0, i = 0;
	while (s[i]) {
		unsigned char c = (unsigned char)s[i];
		size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
		size_t u = n == 4 ? 2 : 1;
		if (units + u > CAPTION_MAX)
			break;
		for (size_t k = 1; k < n; k++)
			if (!s[i + k])
				return i; /* a cut sequence: what came before */
		units += u;
		i += n;
	}
	return i;
}

struct tg_call *tg_send_photo(struct tg_client *tg, const struct tg_target *t, const char *data, size_t len,
                              const char *caption, tg_done_cb done, void *arg)
{
	char chat[24], thread[24], reply[96];
	snprintf(chat, sizeof chat, "%lld", (long long)t->chat_id);
	snprintf(thread, sizeof thread, "%lld", (long long)t->thread_id);
	snprintf(reply, sizeof reply, "{\"message_id\":%lld,\"allow_sending_without_reply\":true}",
	         (long long)t->reply_to);
	bool is_png = len > 8 && memcmp(data, "\x89PNG", 4) == 0;
	struct http_form_field form[5];
	size_t n = 0;
	form[n++] = (struct http_form_field){.name = "chat_id", .data = chat, .len = strlen(chat)};
	form[n++] = (struct http_form_field){.name = "photo",
	                                     .data = data,
	                                     .len = len,
	                                     .filename = is_png ? "image.png" : "image.jpg",
	                                     .type = is_png ? "image/png" : "image/jpeg"};
	if (caption && caption[0])
		form[n++] = (struct http_form_field){.name = "caption", .data = caption, .len = caption_cut(caption)};
	if (t->thread_id)
		form[n++] = (struct http_form_field){.name = "message_thread_id", .data = thread, .len = strlen(thread)};
	if (t->reply_to)
		form[n++] = (struct http_form_field){.name = "reply_parameters", .data = reply, .len = strlen(reply)};
	return tg_call_form(tg, "sendPhoto", form, n, t->chat_id, 0, 120, done, arg);
}

static void on_action_sent(void *arg, const struct tg_result *res)
{
	struct tg_typing *t = arg;
	t->call = NULL;
	if (!res->ok)
		log_debug("chat=%lld: sendChatAction: %ld %s", (long long)t->chat_id, res->error_code,
		          res->description);
}

static void send_typing(struct tg_typing *t)
{
	if (t->call)
		return;
	struct buf b;
	struct tg_target target = {.chat_id = t->chat_id, .thread_id = t->thread_id};
	int rc = tg_open_target(&b, &target, false);
	if (rc == BUF_OK)
		rc = jsonw_member_string(&b, "action", t->action, strlen(t->action));
	char *params = jsonw_finish_object(&b, rc);
	if (params)
		t->call = tg_call(t->tg, "sendChatAction", params, t->chat_id, 0, SEND_TIMEOUT_S,
		                  on_action_sent, t);
}

static void on_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	send_typing(arg);
}

void tg_typing_start(struct tg_typing *t, struct tg_client *tg, struct event_base *base,
                     const struct tg_target *target)
{
	tg_action_start(t, tg, base, target, "typing");
}

void tg_action_start(struct tg_typing *t, struct tg_client *tg, struct event_base *base,
                     const struct tg_target *target, const char *action)
{
	tg_typing_stop(t);
	t->tg = tg;
	t->action = action;
	t->chat_id = target->chat_id;
	t->thread_id = target->thread_id;
	send_typing(t);
	t->timer = event_new(base, -1, EV_PERSIST, on_timer, t);
	struct timeval tv = {TYPING_INTERVAL_S, 0};
	if (!t->timer || event_add(t->timer, &tv) != 0)
		log_warn("chat=%lld: cannot repeat the typing indicator", (long long)t->chat_id);
}

void tg_typing_stop(struct tg_typing *t)
{
	if (t->timer)
		event_free(t->timer);
	tg_call_cancel(t->call);
	memset(t, 0, sizeof *t);
}
