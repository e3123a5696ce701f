#include "telegram/tg.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/backoff.h"
#include "lib/jsonr.h"
#include "lib/jsonw.h"
#include "lib/log.h"
#include "lib/metrics.h"

#define TG_MAX_ATTEMPTS 4 /* for 5xx and connection failures */
static const struct backoff retry_backoff = {1000, 8000, false};
#define TG_MAX_429_WAITS   10   /* a flood-wait loop must end some day */
#define TG_MAX_RETRY_AFTER 3600 /* seconds; beyond that, give up */
#define TG_MAX_RESPONSE    (16u << 20)

#define PACE_BUCKETS  1024
#define PACE_FORGET_S 60.0 /* a chat idle this long needs no record */
/*
 * Requests in flight at once; the rest wait in order. Thousands of chats
 * starting at once would otherwise open a connection each (a TLS session,
 * a libcurl handle and buffers) for calls Telegram answers in milliseconds.
 */
#define TG_MAX_IN_FLIGHT 32

/*
 * When a chat may next be written to. Messages (new ones and edits) and
 * drafts have a slot each: Telegram's one message a second per chat is
 * about messages, and a draft is none; drafts are spaced among themselves
 * alike, and a draft just sent never holds back the message that ends it.
 */
struct pace {
	struct pace *next_in_bucket;
	int64_t chat_id;
	double next;         /* the next free slot for a message */
	double draft_next;   /* the next free slot for a draft */
	double paused_until; /* a 429's retry_after: no call goes before it */
};

struct tg_client {
	struct event_base *base;
	struct http_client *http;
	char *url_prefix; /* "<api_base>/bot<token>/": a secret, as every URL made from it */
	struct tg_pacing pacing;
	bool has_no_drafts; /* sendMessageDraft failed once: answers stream by edits */
	double global_next;
	struct pace *paces[PACE_BUCKETS];
	size_t in_flight;
	struct tg_call *waiting_head, *waiting_tail;         /* for a free request slot, oldest first */
	struct event *kick;                                  /* starts waiting calls from the loop */
	char *file_prefix;                                   /* "<api_base>/file/bot<token>/": a secret too */
	size_t downloading;                                  /* files coming in (TG_MAX_DOWNLOADS) */
	struct tg_download *downloads_head, *downloads_tail; /* waiting for one of those, oldest first */
};

struct tg_call {
	struct tg_client *tg;
	const char *method; /* for log lines: the end of url */
	int64_t chat_id;
	bool is_action; /* sendChatAction: the overall budget only */
	bool is_draft;  /* sendMessageDraft: the chat's draft slot, not its message slot */
	bool is_droppable;
	bool is_once;
	bool is_at_most_once; /* the method creates something (is_creating) */
	enum { STAGE_CHAT_SLOT, STAGE_GLOBAL_SLOT, STAGE_SEND } stage;
	double not_before; /* monotonic seconds */
	char *url;
	char *body; /* JSON parameters, or NULL with a form */
	struct http_form_field
	    *form; /* multipart parameters (a file to upload), ended by a NULL name; owned */
	long timeout_s;
	int attempts;
	int waits_429;
	struct http_call *http;
	struct tg_call *next_waiting, *prev_waiting;
	bool is_waiting;
	struct event *retry_timer;
	tg_done_cb done;
	void *arg;
};

static void fields_free(struct http_form_field *form, size_t n)
{
	for (size_t i = 0; form && i < n; i++) {
		free((char *)form[i].name);
		free((char *)form[i].data);
		free((char *)form[i].path);
		free((char *)form[i].filename);
		free((char *)form[i].type);
	}
	free(form);
}

static char *copy_or_null(const char *s, size_t len, bool *has_failed)
{
	if (!s)
		return NULL;
	char *copy = malloc(len + 1);
	if (!copy) {
		*has_failed = true;
		return NULL;
	}
	memcpy(copy, s, len);
	copy[len] = '\0';
	return copy;
}

static size_t form_count(const struct http_form_field *form)
{
	size_t n = 0;
	while (form && form[n].name)
		n++;
	return n;
}

static void form_free(struct http_form_field *form)
{
	fields_free(form, form_count(form));
}

/* A deep copy: a call outlives its caller's fields (it waits for its slot, and may be repeated). */
static struct http_form_field *form_copy(const struct http_form_field *form, size_t n)
{
	struct http_form_field *copy = calloc(n + 1, sizeof *copy);
	bool has_failed = !copy;
	for (size_t i = 0; copy && i < n; i++) {
		const struct http_form_field *f = &form[i];
		copy[i] = (struct http_form_field){
		    .name = copy_or_null(f->name, strlen(f->name), &has_failed),
		    .data = copy_or_null(f->data, f->len, &has_failed),
		    .len = f->len,
		    .path = copy_or_null(f->path, f->path ? strlen(f->path) : 0, &has_failed),
		    .filename = copy_or_null(f->filename, f->filename ? strlen(f->filename) : 0, &has_failed),
		    .type = copy_or_null(f->type, f->type ? strlen(f->type) : 0, &has_failed),
		};
	}
	if (has_failed) {
		fields_free(copy, n); /* a name that failed to copy is NULL: the count is n, not form_count */
		return NULL;
	}
	return copy;
}

static void unwait(struct tg_call *call)
{
	struct tg_client *tg = call->tg;
	if (!call->is_waiting)
		return;
	if (call->prev_waiting)
		call->prev_waiting->next_waiting = call->next_waiting;
	else
		tg->waiting_head = call->next_waiting;
	if (call->next_waiting)
		call->next_waiting->prev_waiting = call->prev_waiting;
	else
		tg->waiting_tail = call->prev_waiting;
	call->next_waiting = call->prev_waiting = NULL;
	call->is_waiting = false;
}

/* A request ended: its slot goes to the oldest waiting call, from the loop. */
static void slot_freed(struct tg_client *tg)
{
	tg->in_flight--;
	if (tg->waiting_head)
		event_active(tg->kick, 0, 0);
}

static void call_free(struct tg_call *call)
{
	if (!call)
		return;
	unwait(call);
	if (call->http) {
		http_cancel(call->http);
		slot_freed(call->tg);
	}
	if (call->retry_timer)
		event_free(call->retry_timer);
	free(call->url);
	free(call->body);
	form_free(call->form);
	free(call);
}

static void finish(struct tg_call *call, const struct tg_result *res)
{
	metrics_telegram_call(call->method, res->ok, res->error_code);
	call->done(call->arg, res);
	call_free(call);
}

static void finish_error(struct tg_call *call, long code, const char *description)
{
	struct tg_result res = {.ok = false, .error_code = code, .description = description};
	finish(call, &res);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Group and channel ids are negative (https://core.telegram.org/bots/api#chat). */
static double pace_interval(const struct tg_client *tg, int64_t chat_id)
{
	return chat_id < 0 ? tg->pacing.group_s : tg->pacing.private_s;
}

/* The chat's record, made when missing (NULL when out of memory); forgets idle chats on the way. */
static struct pace *pace_get(struct tg_client *tg, int64_t chat_id, double now)
{
	uint64_t h = (uint64_t)chat_id * 0x9E3779B97F4A7C15u;
	struct pace **p = &tg->paces[h >> 54]; /* 10 bits: PACE_BUCKETS */
	struct pace *found = NULL;
	while (*p) {
		struct pace *x = *p;
		if (x->chat_id == chat_id) {
			found = x;
		} else if (x->next < now - PACE_FORGET_S && x->draft_next < now - PACE_FORGET_S &&
		           x->paused_until < now - PACE_FORGET_S) {
			*p = x->next_in_bucket;
			free(x);
			continue;
		}
		p = &x->next_in_bucket;
	}
	if (found)
		return found;
	found = calloc(1, sizeof *found);
	if (found) {
		found->chat_id = chat_id;
		found->next_in_bucket = tg->paces[h >> 54];
		tg->paces[h >> 54] = found;
	}
	return found;
}

static double later(double a, double b)
{
	return a > b ? a : b;
}

/* The chat's slot a call takes: its drafts', or its messages'. */
static double *pace_slot(struct pace *p, bool is_draft)
{
	return is_draft ? &p->draft_next : &p->next;
}

static double pace_peek(struct tg_client *tg, int64_t chat_id, bool is_draft, double now)
{
	struct pace *p = pace_get(tg, chat_id, now);
	double at = later(tg->global_next, now);
	return p ? later(at, later(*pace_slot(p, is_draft), p->paused_until)) : at;
}

static bool is_paced(const struct tg_call *call)
{
	/* Chat actions are no messages: they would only delay the answer they announce. */
	return call->chat_id && !call->is_action;
}

/*
 * A 429 pauses the whole chat: every call to it waits, not just this one,
 * also those that took their slot before the 429 came (advance checks).
 */
static void pace_pause(struct tg_call *call, double now, long seconds)
{
	struct pace *p = call->chat_id ? pace_get(call->tg, call->chat_id, now) : NULL;
	if (!p)
		return;
	if (p->paused_until < now + (double)seconds)
		p->paused_until = now + (double)seconds;
}

double tg_chat_wait(struct tg_client *tg, int64_t chat_id, const char *method)
{
	double now = now_s();
	return pace_peek(tg, chat_id, strcmp(method, "sendMessageDraft") == 0, now) - now;
}

static int send_attempt(struct tg_call *call);

static int advance(struct tg_call *call);

static void on_slot(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct tg_call *call = arg;
	if (advance(call) != 0)
		finish_error(call, 0, "cannot start the request");
}

static int wait_for(struct tg_call *call, double seconds)
{
	if (!call->retry_timer)
		call->retry_timer = evtimer_new(call->tg->base, on_slot, call);
	long us = (long)(seconds * 1e6);
	struct timeval tv = {us / 1000000, us % 1000000};
	return call->retry_timer && evtimer_add(call->retry_timer, &tv) == 0 ? 0 : -1;
}

/*
 * Moves a call towards sending, in two steps so that one chat's distant turn
 * never holds up the other chats: first it takes its chat's next slot (and
 * waits for it), then, when that comes, the next overall slot.
 */
static int advance(struct tg_call *call)
{
	struct tg_client *tg = call->tg;
	double now = now_s(), at;
	switch (call->stage) {
	case STAGE_CHAT_SLOT:
		at = call->not_before;
		if (is_paced(call)) {
			struct pace *p = pace_get(tg, call->chat_id, now);
			if (p) {
				double *slot = pace_slot(p, call->is_draft);
				at = later(at, later(*slot, p->paused_until));
				*slot = at + pace_interval(tg, call->chat_id);
			}
		}
		call->stage = STAGE_GLOBAL_SLOT;
		if (at - now > 0.0005)
			return wait_for(call, at - now);
		/* fall through */
	case STAGE_GLOBAL_SLOT:
		if (is_paced(call)) {
			/* Paused by a 429 while it waited: it takes a new slot of its chat after the pause.
			 */
			struct pace *p = pace_get(tg, call->chat_id, now);
			if (p && p->paused_until > now) {
				call->not_before = p->paused_until;
				call->stage = STAGE_CHAT_SLOT;
				return advance(call);
			}
		}
		call->stage = STAGE_SEND;
		if (is_paced(call)) {
			at = tg->global_next > now ? tg->global_next : now;
			tg->global_next = at + tg->pacing.global_s;
			if (at - now > 0.0005)
				return wait_for(call, at - now);
		}
		/* fall through */
	case STAGE_SEND:
		break;
	}
	if (tg->in_flight < TG_MAX_IN_FLIGHT)
		return send_attempt(call);
	call->prev_waiting = tg->waiting_tail;
	if (tg->waiting_tail)
		tg->waiting_tail->next_waiting = call;
	else
		tg->waiting_head = call;
	tg->waiting_tail = call;
	call->is_waiting = true;
	return 0;
}

static void on_kick(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct tg_client *tg = arg;
	while (tg->waiting_head && tg->in_flight < TG_MAX_IN_FLIGHT) {
		struct tg_call *call = tg->waiting_head;
		unwait(call);
		if (send_attempt(call) != 0)
			finish_error(call, 0, "cannot start the request");
	}
}

/* Sends the call in its first free slot after delay seconds. 0, or -1 when it cannot be scheduled. */
static int schedule(struct tg_call *call, double delay)
{
	call->not_before = now_s() + delay;
	call->stage = STAGE_CHAT_SLOT;
	return advance(call);
}

static void retry_later(struct tg_call *call, double seconds)
{
	if (schedule(call, seconds) != 0)
		finish_error(call, 0, "cannot schedule a retry");
}

static void on_http_done(void *arg, const struct http_response *resp)
{
	struct tg_call *call = arg;
	call->http = NULL; /* it ended: http frees its own call after this callback */
	slot_freed(call->tg);
	call->attempts++;

	if (resp->is_transport_error) {
		/* Telegram may have taken it: some of it went out, or its answer began. */
		bool has_left = resp->has_sent_request || resp->status != 0 || resp->body_len != 0;
		/*
		 * A call that creates something is never repeated once it left (a
		 * second sendMessage is a second message); an edit may be, but not
		 * a frame (the next one supersedes it) nor after a timeout (asking
		 * again would only wait as long once more).
		 */
		bool may_repeat =
		    !has_left || (!call->is_at_most_once && !call->is_droppable && !resp->is_timeout);
		if (may_repeat && !call->is_once && call->attempts < TG_MAX_ATTEMPTS) {
			log_warn("tg: %s failed (%s), retrying", call->method, resp->error);
			retry_later(call, backoff_ms(&retry_backoff, call->attempts) / 1000.0);
			return;
		}
		struct tg_result res = {.description = resp->error};
		if (has_left && call->is_at_most_once) {
			res.is_maybe_delivered = true;
			log_warn(
			    "tg: %s: %s after the request went out; it may have reached Telegram, so it is "
			    "not sent again",
			    call->method, resp->error);
		}
		finish(call, &res);
		return;
	}

	struct tg_answer ans;
	tg_answer_decode(&ans, resp->body, resp->body_len, resp->status);
	const struct tg_result *res = &ans.result;
	if (res->ok) {
		finish(call, res);
		tg_answer_free(&ans);
		return;
	}
	long code = res->error_code;
	if (code == 429) {
		metrics_telegram_flood(call->method);
		pace_pause(call, now_s(),
		           ans.retry_after < TG_MAX_RETRY_AFTER ? ans.retry_after : TG_MAX_RETRY_AFTER);
	}
	if (code == 429 && !call->is_droppable && !call->is_once && call->waits_429 < TG_MAX_429_WAITS &&
	    ans.retry_after <= TG_MAX_RETRY_AFTER) {
		call->waits_429++;
		call->attempts--; /* waiting as told is not a failed attempt */
		log_warn("tg: %s: flood limit, retrying in %ld s", call->method, ans.retry_after);
		retry_later(call, (double)ans.retry_after);
		tg_answer_free(&ans);
		return;
	}
	if (code >= 500 && !call->is_once && !call->is_droppable && call->attempts < TG_MAX_ATTEMPTS) {
		log_warn("tg: %s: %ld %s, retrying", call->method, code, res->description);
		retry_later(call, backoff_ms(&retry_backoff, call->attempts) / 1000.0);
		tg_answer_free(&ans);
		return;
	}
	finish(call, res);
	tg_answer_free(&ans);
}

static bool read_message_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
                                unsigned *seen)
{
	if (!jsonr_is_key(key, len, "message_id"))
		return jsonr_skip(r, depth);
	bool is_integer;
	/* jansson keeps the last of duplicate keys: refused, for jansson to read. */
	return jsonr_first_time(seen, 1) && jsonr_number(r, ctx, &is_integer) && is_integer;
}

/*
 * Reads, without building a tree, a success as Telegram writes it for most
 * calls: {"ok":true,"result":true}, or a Message (the answer to sendMessage
 * echoes the whole message, ~30 k instructions through jansson), of which
 * only message_id is read. The answer is checked whole by jsonr; anything
 * else is for jansson.
 */
static bool decode_plain_success(struct tg_answer *a, const char *body, size_t len)
{
	static const char ok[] = "{\"ok\":true,\"result\":";
	if (len < sizeof ok - 1 || memcmp(body, ok, sizeof ok - 1) != 0)
		return false;
	struct jsonr r;
	jsonr_init(&r, body + sizeof ok - 1, len - (sizeof ok - 1));
	int64_t id = 0;
	bool is_true = false;
	if (jsonr_at(&r, '{') ? !jsonr_object(&r, 2, read_message_member, &id) || id == 0
	                      : !jsonr_boolean(&r, &is_true) || !is_true)
		return false;
	if (!jsonr_take(&r, '}') || !jsonr_is_end(&r))
		return false;
	a->result = (struct tg_result){.ok = true, .description = "", .message_id = id};
	return true;
}

void tg_answer_decode(struct tg_answer *a, const char *body, size_t len, long http_status)
{
	memset(a, 0, sizeof *a);
	a->retry_after = 1; /* a 429 without parameters (a proxy's page) still waits */
	if (decode_plain_success(a, body, len))
		return;
	a->root = json_loadb(body, len, 0, NULL);
	size_t mended_len;
	char *mended = a->root ? NULL : jsonr_mend(body, len, &mended_len, NULL);
	if (mended) {
		/* One odd string (a user's \u0000) must not make a whole getUpdates batch unreadable. */
		a->root = json_loadb(mended, mended_len, 0, NULL);
		if (a->root)
			log_warn("tg: an answer held text that is not UTF-8, \\u0000 or a lone surrogate; "
			         "read as U+FFFD");
		free(mended);
	}
	const json_t *ok = json_object_get(a->root, "ok");
	if (!json_is_boolean(ok)) {
		snprintf(a->what, sizeof a->what, "HTTP %ld with a body that is not a Bot API answer",
		         http_status);
		a->result =
		    (struct tg_result){.ok = false, .error_code = http_status, .description = a->what};
		return;
	}
	if (json_is_true(ok)) {
		const json_t *result = json_object_get(a->root, "result");
		json_t *id = json_object_get(result, "message_id");
		a->result =
		    (struct tg_result){.ok = true,
		                       .description = "",
		                       .result = result,
		                       .message_id = json_is_integer(id) ? json_integer_value(id) : 0};
		return;
	}
	json_int_t code = json_integer_value(json_object_get(a->root, "error_code"));
	const char *desc = json_string_value(json_object_get(a->root, "description"));
	json_int_t retry_after =
	    json_integer_value(json_object_get(json_object_get(a->root, "parameters"), "retry_after"));
	a->result = (struct tg_result){.ok = false,
	                               .error_code = code ? (long)code : http_status,
	                               .description = desc ? desc : "no description"};
	a->retry_after = retry_after < 1 ? 1 : backoff_asked_s(retry_after);
}

void tg_answer_free(struct tg_answer *a)
{
	json_decref(a->root);
	a->root = NULL;
}

static int send_attempt(struct tg_call *call)
{
	static const char *const headers[] = {"Content-Type: application/json", NULL};
	struct http_request req = {
	    .method = "POST",
	    .url = call->url,
	    .headers = call->body ? headers : NULL,
	    .body = call->body,
	    .body_len = call->body ? strlen(call->body) : 0,
	    .form = call->form,
	    .n_form = form_count(call->form),
	    .timeout_ms = call->timeout_s * 1000,
	    .is_at_most_once = call->is_at_most_once,
	    .max_body = TG_MAX_RESPONSE,
	    .on_done = on_http_done,
	    .arg = call,
	};
	call->http = http_start(call->tg->http, &req);
	if (!call->http)
		return -1;
	call->tg->in_flight++;
	return 0;
}

struct tg_client *tg_client_new(struct event_base *base, struct http_client *http, const char *api_base,
                                const char *token, const struct tg_pacing *pacing)
{
	struct tg_client *tg = calloc(1, sizeof *tg);
	if (!tg)
		return NULL;
	tg->base = base;
	tg->http = http;
	tg->pacing = *pacing;
	if (asprintf(&tg->url_prefix, "%s/bot%s/", api_base, token) < 0)
		tg->url_prefix = NULL;
	if (asprintf(&tg->file_prefix, "%s/file/bot%s/", api_base, token) < 0)
		tg->file_prefix = NULL;
	tg->kick = event_new(base, -1, 0, on_kick, tg);
	if (!tg->url_prefix || !tg->file_prefix || !tg->kick) {
		tg_client_free(tg);
		return NULL;
	}
	return tg;
}

void tg_client_free(struct tg_client *tg)
{
	if (!tg)
		return;
	for (size_t i = 0; i < PACE_BUCKETS; i++) {
		while (tg->paces[i]) {
			struct pace *p = tg->paces[i];
			tg->paces[i] = p->next_in_bucket;
			free(p);
		}
	}
	if (tg->kick)
		event_free(tg->kick);
	free(tg->url_prefix);
	free(tg->file_prefix);
	free(tg);
}

/*
 * Methods that create something in a chat (a message, a photo, a poll, a
 * copy): sent twice, they show twice. Edits, deletions, drafts, chat actions
 * and reads may be repeated.
 */
static bool is_creating(const char *method)
{
	if (strcmp(method, "sendChatAction") == 0 || strcmp(method, "sendMessageDraft") == 0)
		return false;
	return strncmp(method, "send", 4) == 0 || strncmp(method, "copyMessage", 11) == 0 ||
	       strncmp(method, "forwardMessage", 14) == 0;
}

static struct tg_call *call_new(struct tg_client *tg, const char *method, int64_t chat_id, unsigned flags,
                                long timeout_s, tg_done_cb done, void *arg)
{
	struct tg_call *call = calloc(1, sizeof *call);
	if (!call)
		return NULL;
	call->tg = tg;
	call->chat_id = chat_id;
	call->is_action = strcmp(method, "sendChatAction") == 0;
	call->is_draft = strcmp(method, "sendMessageDraft") == 0;
	call->is_droppable = flags & TG_CALL_DROPPABLE;
	call->is_once = flags & TG_CALL_ONCE;
	call->is_at_most_once = is_creating(method);
	call->timeout_s = timeout_s;
	call->done = done;
	call->arg = arg;
	size_t prefix_len = strlen(tg->url_prefix), method_len = strlen(method);
	if (!(call->url = malloc(prefix_len + method_len + 1))) {
		call_free(call);
		return NULL;
	}
	memcpy(call->url, tg->url_prefix, prefix_len);
	memcpy(call->url + prefix_len, method, method_len + 1);
	call->method = call->url + prefix_len;
	return call;
}

struct tg_call *tg_call(struct tg_client *tg, const char *method, char *params, int64_t chat_id,
                        unsigned flags, long timeout_s, tg_done_cb done, void *arg)
{
	struct tg_call *call = call_new(tg, method, chat_id, flags, timeout_s, done, arg);
	if (!call)
		goto fail;
	call->body = params ? params : strdup("{}");
	params = NULL;
	if (!call->body || schedule(call, 0) != 0)
		goto fail;
	return call;
fail:
	log_error("tg: cannot start %s", method);
	free(params);
	call_free(call);
	return NULL;
}

struct tg_call *tg_call_form(struct tg_client *tg, const char *method, const struct http_form_field *form,
                             size_t n, int64_t chat_id, unsigned flags, long timeout_s, tg_done_cb done,
                             void *arg)
{
	struct tg_call *call = call_new(tg, method, chat_id, flags, timeout_s, done, arg);
	if (call && (call->form = form_copy(form, n)) && schedule(call, 0) == 0)
		return call;
	log_error("tg: cannot start %s", method);
	call_free(call);
	return NULL;
}

bool tg_has_drafts(const struct tg_client *tg)
{
	return !tg->has_no_drafts;
}

void tg_note_no_drafts(struct tg_client *tg)
{
	tg->has_no_drafts = true;
}

bool tg_is_token_rejected(const struct tg_result *res)
{
	if (res->ok || (res->error_code != 401 && res->error_code != 404))
		return false;
	log_error("tg: Telegram rejects the bot token (%ld %s): check TG_BOT_TOKEN", res->error_code,
	          res->description);
	return true;
}

bool tg_call_is_sent(const struct tg_call *call)
{
	return call->http != NULL;
}

void tg_call_cancel(struct tg_call *call)
{
	call_free(call);
}

/* ---- files ---- */

#define TG_FILE_TIMEOUT_S 120 /* 20 MB at well under 1 Mbit/s */

struct tg_download {
	struct tg_client *tg;
	size_t max_bytes;
	char *file_path; /* from getFile */
	struct tg_call *get_file;
	struct http_call *http;
	bool is_waiting; /* in the queue for a turn */
	bool has_turn;   /* counts in tg->downloading */
	struct tg_download *next;
	struct event *start; /* a turn that came free starts the download from the loop */
	tg_file_cb done;
	void *arg;
};

static void give_turn(struct tg_download *d)
{
	d->has_turn = true;
	d->tg->downloading++;
	event_active(d->start, 0, 0);
}

/* d's turn ends: the oldest waiting download may start. */
static void end_turn(struct tg_download *d)
{
	struct tg_client *tg = d->tg;
	if (!d->has_turn)
		return;
	d->has_turn = false;
	tg->downloading--;
	struct tg_download *next = tg->downloads_head;
	if (!next)
		return;
	tg->downloads_head = next->next;
	if (!tg->downloads_head)
		tg->downloads_tail = NULL;
	next->is_waiting = false;
	next->next = NULL;
	give_turn(next);
}

static void unqueue(struct tg_download *d)
{
	struct tg_client *tg = d->tg;
	if (!d->is_waiting)
		return;
	struct tg_download *prev = NULL;
	for (struct tg_download *w = tg->downloads_head; w; prev = w, w = w->next) {
		if (w != d)
			continue;
		if (prev)
			prev->next = d->next;
		else
			tg->downloads_head = d->next;
		if (tg->downloads_tail == d)
			tg->downloads_tail = prev;
		break;
	}
	d->is_waiting = false;
	d->next = NULL;
}

static void download_free(struct tg_download *d)
{
	if (!d)
		return;
	unqueue(d);
	tg_call_cancel(d->get_file);
	if (d->http)
		http_cancel(d->http);
	if (d->start)
		event_free(d->start);
	end_turn(d);
	free(d->file_path);
	free(d);
}

static void download_end(struct tg_download *d, const struct tg_file *f)
{
	end_turn(d);
	d->done(d->arg, f);
	download_free(d);
}

static void download_fail(struct tg_download *d, bool is_too_big, const char *detail)
{
	struct tg_file f = {
	    .is_too_big = is_too_big, .file_path = d->file_path ? d->file_path : "", .detail = detail};
	download_end(d, &f);
}

static void on_file(void *arg, const struct http_response *resp)
{
	struct tg_download *d = arg;
	d->http = NULL;
	if (resp->is_too_big) {
		download_fail(d, true, "the file is over the limit");
		return;
	}
	if (resp->is_transport_error || resp->status != 200) {
		char detail[160];
		snprintf(detail, sizeof detail, "HTTP %ld %s", resp->status, resp->error);
		download_fail(d, false, detail);
		return;
	}
	struct tg_file f = {.ok = true, .data = resp->body, .len = resp->body_len, .file_path = d->file_path};
	download_end(d, &f);
}

static void on_turn(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct tg_download *d = arg;
	char *url = NULL;
	if (asprintf(&url, "%s%s", d->tg->file_prefix, d->file_path) < 0) {
		download_fail(d, false, "out of memory");
		return;
	}
	struct http_request req = {
	    .method = "GET",
	    .url = url, /* holds the token: http never logs it */
	    .timeout_ms = TG_FILE_TIMEOUT_S * 1000L,
	    .stall_s = 30,
	    .max_body = d->max_bytes,
	    .on_done = on_file,
	    .arg = d,
	};
	d->http = http_start(d->tg->http, &req);
	free(url);
	if (!d->http)
		download_fail(d, false, "the request could not start");
}

static void on_file_path(void *arg, const struct tg_result *res)
{
	struct tg_download *d = arg;
	d->get_file = NULL;
	if (!res->ok) {
		download_fail(d, false, res->description);
		return;
	}
	json_t *file =
	    (json_t *)res->result; /* jansson's getters take non-const trees but do not change them */
	const char *path = json_string_value(json_object_get(file, "file_path"));
	json_int_t size = json_integer_value(json_object_get(file, "file_size"));
	/* A path that could climb out of the bot's files, or hide another URL, is no path. */
	if (!path || !path[0] || strstr(path, "..") || strpbrk(path, "?#\\ \r\n")) {
		download_fail(d, false, "getFile gave no usable file_path");
		return;
	}
	if (size > 0 && (uint64_t)size > d->max_bytes) {
		download_fail(d, true, "getFile says the file is over the limit");
		return;
	}
	if (!(d->file_path = strdup(path))) {
		download_fail(d, false, "out of memory");
		return;
	}
	struct tg_client *tg = d->tg;
	if (tg->downloading < TG_MAX_DOWNLOADS) {
		give_turn(d);
		return;
	}
	d->is_waiting = true;
	if (tg->downloads_tail)
		tg->downloads_tail->next = d;
	else
		tg->downloads_head = d;
	tg->downloads_tail = d;
}

struct tg_download *tg_download(struct tg_client *tg, const char *file_id, size_t max_bytes, tg_file_cb done,
                                void *arg)
{
	struct tg_download *d = calloc(1, sizeof *d);
	if (!d)
		return NULL;
	*d = (struct tg_download){.tg = tg, .max_bytes = max_bytes, .done = done, .arg = arg};
	json_t *params = json_pack("{ss}", "file_id", file_id);
	char *body = params ? json_dumps(params, JSON_COMPACT) : NULL;
	json_decref(params);
	d->start = event_new(tg->base, -1, 0, on_turn, d);
	if (!body || !d->start) {
		free(body);
		download_free(d);
		return NULL;
	}
	/* body is taken by the call */
	if (!(d->get_file = tg_call(tg, "getFile", body, 0, 0, 30, on_file_path, d))) {
		download_free(d);
		return NULL;
	}
	return d;
}

void tg_download_cancel(struct tg_download *d)
{
	download_free(d);
}
