/*
 * tg: the Telegram Bot API client.
 *
 * A method call is a JSON POST to <api_base>/bot<token>/<method>; the answer
 * is {"ok":true,"result":...} or {"ok":false,"error_code","description",
 * "parameters":{"retry_after"}} (https://core.telegram.org/bots/api#making-requests).
 * The URL holds the token, so it is never logged: log lines name the method.
 *
 * Retries live here because Telegram says when to retry: a 429 is repeated
 * after parameters.retry_after seconds; 5xx answers and failed connections a
 * few times with backoff. A method that creates something (sendMessage,
 * sendPhoto, copyMessage…) is sent at most once: after a transport failure
 * once some of it went out (a reset, a connection closed unanswered, a
 * timeout) it is not repeated, by this client nor by libcurl on a reused
 * connection (http.h, is_at_most_once), and fails with is_maybe_delivered,
 * so a message is never sent twice. Failures before it could go out (no
 * connection, TLS) are retried. Edits and reads may be repeated after such
 * a failure too (not after a timeout).
 *
 * So does the one rate limiter for all calls that write to a chat
 * (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this):
 * about 30 calls a second overall, one a second per private chat, 20 a
 * minute per group. A call waits for its chat's slot, then for an overall
 * one; a 429 pauses its whole chat for retry_after. The per-chat limit is
 * about messages: drafts (sendMessageDraft) take slots of their own, as far
 * apart as the messages', so a draft in flight or just sent never delays a
 * message (the final one of an answer goes at once); every call still
 * counts against the overall budget.
 */
#ifndef TGLLM_TG_H
#define TGLLM_TG_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/http.h"

struct tg_client;
struct tg_call;

struct tg_result {
	bool ok;
	long error_code;         /* Bot API error_code, or the HTTP status; 0 for transport errors */
	const char *description; /* Telegram's description or the transport error; never NULL */
	/*
	 * The answer's result as a jansson tree (getMe's User, getUpdates' list),
	 * borrowed for the callback; NULL unless ok, and NULL for "true" and for
	 * a Message, of which only message_id is read: Telegram echoes the whole
	 * message, and nothing here needs more.
	 */
	const struct json_t *result;
	int64_t message_id; /* the Message's, when the result is one; else 0 */
	/*
	 * A call that creates something failed after its request went out: it
	 * may have reached Telegram (and was not sent again).
	 */
	bool is_maybe_delivered;
};

typedef void (*tg_done_cb)(void *arg, const struct tg_result *res);

struct json_t; /* jansson's */

/* A decoded Bot API answer; result borrows from root. */
struct tg_answer {
	struct tg_result result;
	long retry_after; /* seconds, from parameters.retry_after; at least 1 */
	struct json_t *root;
	char what[96];
};

/* Decodes an answer body; http_status stands in when the body is not a Bot API answer. */
void tg_answer_decode(struct tg_answer *a, const char *body, size_t len, long http_status);
void tg_answer_free(struct tg_answer *a);

/*
 * Seconds between calls: Telegram's published limits, or an operator's
 * (TELEGRAM_PACING). 0 leaves that limit out.
 */
struct tg_pacing {
	double private_s; /* to one private chat */
	double group_s;   /* to one group or channel */
	double global_s;  /* between any two paced calls */
};
#define TG_PACING_DEFAULT ((struct tg_pacing){1.0, 3.0, 1.0 / 30})

struct tg_client *tg_client_new(struct event_base *base, struct http_client *http, const char *api_base,
				const char *token, const struct tg_pacing *pacing);
void tg_client_free(struct tg_client *tg);

/*
 * Calls method with params, the text of a JSON object (taken: freed by the
 * call, also when it fails to start; NULL for a method without any).
 * chat_id names the chat the call writes to, for the rate limiter; 0 for
 * calls that write to no chat (getMe, getUpdates), which are not limited;
 * neither is sendChatAction (no message: pacing it would only delay the answer).
 * timeout_s bounds one attempt (getUpdates passes its long-poll timeout plus
 * a margin). done is called exactly once unless the call is cancelled.
 * Returns NULL if the call could not even be started (done is not called).
 */
enum tg_call_flags {
	/*
	 * A streaming frame: on 429 the chat is paused as usual but the call is
	 * not repeated, nor after a 5xx; it fails with that error_code (a later
	 * frame, or the final message, supersedes it: retrying a frame for
	 * seconds would only hold the final message back).
	 */
	TG_CALL_DROPPABLE = 1,
	/* Tried once: no retry after a 429, a 5xx or a failed connection (a person at a command line decides). */
	TG_CALL_ONCE = 2,
};

struct tg_call *tg_call(struct tg_client *tg, const char *method, char *params, int64_t chat_id,
			unsigned flags, long timeout_s, tg_done_cb done, void *arg);
/* tg_call with multipart/form-data parameters (copied), for methods that upload a file. */
struct tg_call *tg_call_form(struct tg_client *tg, const char *method, const struct http_form_field *form,
			     size_t n, int64_t chat_id, unsigned flags, long timeout_s, tg_done_cb done, void *arg);
/*
 * Seconds until a new call of method to chat_id would go out (0 when it
 * would go now): streaming uses it to send frames no faster than the chat's
 * budget. Drafts and messages have budgets of their own (see above).
 */
double tg_chat_wait(struct tg_client *tg, int64_t chat_id, const char *method);
/*
 * Whether streaming by drafts (sendMessageDraft, Bot API 9.5) is worth
 * trying: true until tg_note_no_drafts says the server does not know it,
 * and then for as long as the client lives.
 */
bool tg_has_drafts(const struct tg_client *tg);
void tg_note_no_drafts(struct tg_client *tg);
/*
 * True when a failed call says the token is wrong (Telegram answers 401, or
 * 404 for a token of the right shape that names no bot); then also logs the
 * line that tells the operator what to fix.
 */
bool tg_is_token_rejected(const struct tg_result *res);
/* Whether the call's request is out, awaiting Telegram's answer (not waiting for a slot or a retry). */
bool tg_call_is_sent(const struct tg_call *call);
/* Cancels a call, including one waiting to retry; done is not called. */
void tg_call_cancel(struct tg_call *call);

/*
 * Files (https://core.telegram.org/bots/api#getfile): getFile with the
 * file_id, then GET <api_base>/file/bot<token>/<file_path> into a buffer of
 * at most max_bytes. That URL holds the token: log lines say "a file".
 * At most TG_MAX_DOWNLOADS files come in at once; more wait their turn (a
 * queue, not a failure), so memory stays bounded whatever arrives.
 */
#define TG_MAX_DOWNLOADS 4

struct tg_file {
	bool ok;
	bool is_too_big;       /* over max_bytes: stopped, nothing kept */
	const char *data;      /* the bytes (NUL-terminated), borrowed for the callback */
	size_t len;
	const char *file_path; /* Telegram's path ("voice/file_1.oga"), "" when unknown */
	const char *detail;    /* why it failed, for the log; never the URL */
};

typedef void (*tg_file_cb)(void *arg, const struct tg_file *file);
struct tg_download;

/* NULL when it cannot start (done is not called); done runs once unless cancelled. */
struct tg_download *tg_download(struct tg_client *tg, const char *file_id, size_t max_bytes, tg_file_cb done,
                                void *arg);
/* NULL is a no-op; done is not called. */
void tg_download_cancel(struct tg_download *d);

#endif
