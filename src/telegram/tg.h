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
 * few times with backoff. A request that may have reached Telegram and got
 * no answer (a timeout mid-transfer) is not repeated, so a message is never
 * sent twice.
 *
 * So does the one rate limiter for all calls that write to a chat
 * (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this):
 * about 30 calls a second overall, one a second per private chat, 20 a
 * minute per group. A call waits for its chat's slot, then for an overall
 * one; a 429 pauses its whole chat for retry_after.
 */
#ifndef TGLLM_TG_H
#define TGLLM_TG_H

#include <event2/event.h>
#include <jansson.h>
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
	 * The answer's result, borrowed for the callback; NULL unless ok, and
	 * NULL for "true" and for a Message, of which only message_id is read:
	 * Telegram echoes the whole message, and nothing here needs more.
	 */
	json_t *result;
	int64_t message_id; /* the Message's, when the result is one; else 0 */
	/*
	 * A list result as Telegram writes it (getUpdates), as text and not as
	 * a tree: borrowed, checked to be a well-formed JSON array; NULL when
	 * result holds the list instead.
	 */
	const char *list;
	size_t list_len;
};

typedef void (*tg_done_cb)(void *arg, const struct tg_result *res);

/* A decoded Bot API answer; result borrows from root. */
struct tg_answer {
	struct tg_result result;
	long retry_after; /* seconds, from parameters.retry_after; at least 1 */
	json_t *root;
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
	 * not repeated; it fails with error_code 429 (a later frame supersedes it).
	 */
	TG_CALL_DROPPABLE = 1,
};

struct tg_call *tg_call(struct tg_client *tg, const char *method, char *params, int64_t chat_id,
			unsigned flags, long timeout_s, tg_done_cb done, void *arg);
/* Appends the member that makes a message a reply to message_id (kept if that is gone). */
int tg_write_reply_parameters(struct buf *b, int64_t message_id);
/*
 * Seconds until a new call to chat_id would go out (0 when it would go now):
 * streaming uses it to send frames no faster than the chat's budget.
 */
double tg_chat_wait(struct tg_client *tg, int64_t chat_id);
/*
 * True when a failed call says the token is wrong (Telegram answers 401, or
 * 404 for a token of the right shape that names no bot); then also logs the
 * line that tells the operator what to fix.
 */
bool tg_is_token_rejected(const struct tg_result *res);
/* Cancels a call, including one waiting to retry; done is not called. */
void tg_call_cancel(struct tg_call *call);

#endif
