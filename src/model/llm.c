#include "model/llm.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/backoff.h"
#include "lib/buf.h"
#include "lib/jsonr.h"
#include "lib/jsonw.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "model/chunk.h"
#include "model/sse.h"
#include "model/tokens.h"

#define LLM_MAX_ATTEMPTS 3
#define LLM_MAX_RETRY_AFTER 30     /* seconds; a longer wait is not worth a person's time */
#define LLM_MAX_ANSWER (512u << 10) /* bytes of answer text */
#define LLM_MAX_EVENT (1u << 20)    /* one SSE event */
#define LLM_MAX_BODY (4u << 20)     /* a non-streamed answer or an error body */
#define LLM_STALL_S 60 /* seconds of silence once the answer has begun; the first byte has the whole timeout */
#define LLM_MAX_DETAIL 1024

#define COMPLETIONS_PATH "/chat/completions"

struct llm_client {
	struct event_base *base;
	struct http_client *http;
	char *url;
	char *auth;
	char *model;
	long timeout_s;
	double token_scale;
	char *transcribe_model;
	char *image_model;
	char *image_size;
};

static const struct backoff retry_backoff = {500, 8000, false};

enum body_kind { BODY_UNKNOWN, BODY_SSE, BODY_JSON };

struct llm_call {
	struct llm_client *llm;
	char *body; /* the request; freed once the answer's text has begun */
	size_t estimated_tokens; /* the prompt's, unscaled (model/tokens.h) */
	struct http_call *http;
	struct event *retry_timer;
	int attempts;
	double started, first_text; /* metrics_clock(); first_text 0 until the answer begins */

	/* the current attempt */
	enum body_kind kind;
	struct sse_parser *sse;
	struct buf json;
	struct buf *text;   /* the caller's */
	struct buf delta;   /* one chunk's content, read by chunk_read */
	struct jsonr_carry carry; /* a surrogate half an event ended with, for the next to join */
	bool is_finished; /* [DONE] or a finish_reason arrived */
	bool has_stream_error;
	bool is_answer_too_big;
	size_t max_answer; /* bytes of answer text: LLM_MAX_ANSWER, or less (llm_limit) */
	long prompt_tokens;
	long completion_tokens;
	struct buf detail; /* the operator's account of a failure; empty (unallocated) when none */

	llm_progress_cb progress;
	llm_done_cb done;
	void *arg;
};

const char *llm_status_name(enum llm_status status)
{
	static const char *const names[] = {"ok",       "context", "quota", "auth",    "busy",
					    "down",     "rejected", "cut",  "empty",   "no_model"};
	return (unsigned)status < sizeof names / sizeof names[0] ? names[status] : "?";
}

/* Adds to the failure's account (a piece is cut at 512 bytes; the whole at LLM_MAX_DETAIL). */
__attribute__((format(printf, 2, 3))) static void add_detail(struct llm_call *call, const char *fmt, ...)
{
	char piece[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(piece, sizeof piece, fmt, ap);
	va_end(ap);
	(void)buf_append_str(&call->detail, piece);
}

static void reset_attempt(struct llm_call *call)
{
	sse_free(call->sse);
	call->sse = NULL;
	buf_free(&call->json);
	buf_free(&call->delta);
	call->kind = BODY_UNKNOWN;
	call->is_finished = false;
	call->has_stream_error = false;
	call->is_answer_too_big = false;
	call->carry = (struct jsonr_carry){0};
	call->prompt_tokens = -1;
	call->completion_tokens = -1;
	buf_free(&call->detail);
}

static void call_free(struct llm_call *call)
{
	if (!call)
		return;
	http_cancel(call->http);
	if (call->retry_timer)
		event_free(call->retry_timer);
	reset_attempt(call);
	free(call->body);
	free(call);
}

static void read_usage(struct llm_call *call, const json_t *obj)
{
	const json_t *usage = json_object_get(obj, "usage");
	if (!json_is_object(usage))
		return;
	const json_t *p = json_object_get(usage, "prompt_tokens");
	const json_t *c = json_object_get(usage, "completion_tokens");
	if (json_is_integer(p))
		call->prompt_tokens = (long)json_integer_value(p);
	if (json_is_integer(c))
		call->completion_tokens = (long)json_integer_value(c);
}

/* An {"error": {...}} object, in an error body or in the stream. */
static bool read_error(struct llm_call *call, const json_t *obj, const char **code, const char **type)
{
	const json_t *err = json_object_get(obj, "error");
	if (!err)
		return false;
	const char *msg = json_is_string(err) ? json_string_value(err)
					      : json_string_value(json_object_get(err, "message"));
	*code = json_string_value(json_object_get(err, "code"));
	*type = json_string_value(json_object_get(err, "type"));
	add_detail(call, "%s%s", call->detail.len ? ": " : "", msg ? msg : "(no message)");
	return true;
}

/* 0 to go on; 1 when the answer outgrew its limit. */
static int append_text(struct llm_call *call, const char *s, size_t n)
{
	if (n == 0)
		return 0;
	if (buf_append(call->text, s, n) != BUF_OK) {
		call->is_answer_too_big = true;
		return 1;
	}
	if (!call->first_text)
		call->first_text = metrics_clock();
	/*
	 * With text in hand no attempt follows (a cut stream is delivered as
	 * cut), so the request, the whole history, need not wait the answer
	 * out: thousands of answers stream at once.
	 */
	if (call->body && call->http && http_is_body_sent(call->http)) {
		free(call->body);
		call->body = NULL;
	}
	if (call->progress)
		call->progress(call->arg);
	return 0;
}

/* A surrogate half carried from the last event that this one did not join is not lost: U+FFFD. */
static int drop_carry(struct llm_call *call)
{
	if (!call->carry.high)
		return 0;
	call->carry.high = 0;
	return append_text(call, "\xEF\xBF\xBD", 3);
}

static int on_event(void *arg, const char *event, const char *data, size_t len)
{
	(void)event;
	struct llm_call *call = arg;
	if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
		call->is_finished = true;
		return drop_carry(call);
	}
	struct chunk c;
	buf_reset(&call->delta);
	switch (chunk_read(data, len, &c, &call->delta)) {
	case CHUNK_READ:
		if (c.prompt_tokens >= 0)
			call->prompt_tokens = c.prompt_tokens;
		if (c.completion_tokens >= 0)
			call->completion_tokens = c.completion_tokens;
		call->is_finished |= c.is_finished;
		return drop_carry(call) || append_text(call, call->delta.data, call->delta.len);
	case CHUNK_NO_MEMORY:
		call->is_answer_too_big = true;
		return 1;
	case CHUNK_OTHER:
		break; /* errors and unusual shapes: jansson */
	}
	json_error_t jerr;
	json_t *chunk = json_loadb(data, len, 0, &jerr);
	unsigned high = call->carry.high;
	call->carry.was_joined = false;
	if (!chunk) {
		/*
		 * Text jansson refuses in a string: invalid bytes, \u0000, lone
		 * surrogates (some servers split an emoji's pair across events).
		 */
		size_t mended_len;
		char *mended = jsonr_mend(data, len, &mended_len, &call->carry);
		if (mended)
			chunk = json_loadb(mended, mended_len, 0, &jerr);
		free(mended);
	} else {
		call->carry.high = 0;
	}
	if (high && !call->carry.was_joined && append_text(call, "\xEF\xBF\xBD", 3) != 0) {
		json_decref(chunk);
		return 1;
	}
	if (!json_is_object(chunk)) {
		log_warn("llm: skipping a stream event that is not a JSON object: %s", jerr.text);
		json_decref(chunk);
		return 0;
	}
	const char *code, *type;
	if (read_error(call, chunk, &code, &type)) {
		call->has_stream_error = true;
		json_decref(chunk);
		return 1;
	}
	read_usage(call, chunk);
	/* The usage chunk has "choices": []; other servers omit choices there. */
	const json_t *choice = json_array_get(json_object_get(chunk, "choices"), 0);
	const json_t *content = json_object_get(json_object_get(choice, "delta"), "content");
	int rc = 0;
	if (json_is_string(content))
		rc = append_text(call, json_string_value(content), json_string_length(content));
	const json_t *finish = json_object_get(choice, "finish_reason");
	if (json_is_string(finish))
		call->is_finished = true;
	json_decref(chunk);
	return rc;
}

static int on_data(void *arg, const char *data, size_t n)
{
	struct llm_call *call = arg;
	if (call->kind == BODY_UNKNOWN) {
		size_t i = 0;
		while (i < n && (data[i] == ' ' || data[i] == '\n' || data[i] == '\r' || data[i] == '\t'))
			i++;
		if (i == n)
			return 0;
		call->kind = data[i] == '{' ? BODY_JSON : BODY_SSE;
		if (call->kind == BODY_SSE && !(call->sse = sse_new(LLM_MAX_EVENT, on_event, call)))
			return 1;
	}
	if (call->kind == BODY_JSON)
		return buf_append(&call->json, data, n) == BUF_OK ? 0 : 1;
	return sse_feed(call->sse, data, n) == SSE_OK ? 0 : 1;
}

static int start_attempt(struct llm_call *call);

static void count(const struct llm_call *call, const char *outcome)
{
	double now = metrics_clock();
	metrics_model_call(outcome, call->first_text ? call->first_text - call->started : -1, now - call->started,
	                   call->prompt_tokens, call->completion_tokens);
}

static void on_retry_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct llm_call *call = arg;
	if (start_attempt(call) != 0) {
		struct llm_result res = {.status = LLM_DOWN, .prompt_tokens = -1, .completion_tokens = -1, .detail = "cannot start the request"};
		count(call, llm_status_name(LLM_DOWN));
		call->done(call->arg, &res);
		call_free(call);
	}
}

static void finish(struct llm_call *call, enum llm_status status)
{
	call->http = NULL;
	if (status == LLM_OK)
		call->llm->token_scale =
			tokens_calibrate(call->llm->token_scale, call->estimated_tokens, call->prompt_tokens);
	struct llm_result res = {
		.status = status,
		.prompt_tokens = call->prompt_tokens,
		.completion_tokens = call->completion_tokens,
		.is_at_limit = status == LLM_CUT && call->is_answer_too_big,
		.detail = buf_str(&call->detail),
	};
	count(call, llm_status_name(status));
	call->done(call->arg, &res);
	call_free(call);
}

/* Retries when attempts remain (status is what the user gets otherwise). */
static void retry_or_finish(struct llm_call *call, enum llm_status status, long retry_after)
{
	long delay_ms = backoff_ms(&retry_backoff, call->attempts);
	if (retry_after >= 0)
		delay_ms = retry_after * 1000;
	if (call->attempts >= LLM_MAX_ATTEMPTS || retry_after > LLM_MAX_RETRY_AFTER) {
		finish(call, status);
		return;
	}
	log_warn("llm: attempt %d failed (%s), retrying in %ld ms", call->attempts,
		 buf_str(&call->detail), delay_ms);
	call->http = NULL;
	if (!call->retry_timer)
		call->retry_timer = evtimer_new(call->llm->base, on_retry_timer, call);
	struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
	if (!call->retry_timer || evtimer_add(call->retry_timer, &tv) != 0)
		finish(call, status);
}

static bool mentions_context(const char *detail)
{
	return strstr(detail, "context length") || strstr(detail, "context_length") ||
	       strstr(detail, "maximum context") || strstr(detail, "context window");
}

static void on_error_status(struct llm_call *call, const struct http_response *resp)
{
	const char *code = NULL, *type = NULL;
	json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
	buf_reset(&call->detail);
	add_detail(call, "HTTP %ld", resp->status);
	if (!read_error(call, root, &code, &type) && resp->body_len)
		add_detail(call, ": %.200s", resp->body);
	bool is_quota = (code && strcmp(code, "insufficient_quota") == 0) ||
			(type && strcmp(type, "insufficient_quota") == 0) || resp->status == 402;
	bool is_no_model = (code && strcmp(code, "model_not_found") == 0) || resp->status == 404;
	bool is_context = (code && strcmp(code, "context_length_exceeded") == 0) ||
			  ((resp->status == 400 || resp->status == 413) &&
			   mentions_context(buf_str(&call->detail)));
	json_decref(root);

	if (is_quota)
		finish(call, LLM_QUOTA);
	else if (is_context)
		finish(call, LLM_CONTEXT);
	else if (is_no_model)
		finish(call, LLM_NO_MODEL);
	else if (resp->status == 401 || resp->status == 403)
		finish(call, LLM_AUTH);
	else if (resp->status == 429)
		retry_or_finish(call, LLM_BUSY, resp->retry_after);
	else if (resp->status >= 500 || resp->status == 408)
		retry_or_finish(call, LLM_DOWN, resp->retry_after);
	else
		finish(call, LLM_REJECTED);
}

static void on_json_answer(struct llm_call *call)
{
	json_t *root = json_loadb(call->json.data, call->json.len, 0, NULL);
	const char *code, *type;
	if (read_error(call, root, &code, &type)) {
		json_decref(root);
		finish(call, LLM_REJECTED);
		return;
	}
	read_usage(call, root);
	const json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
	const json_t *content = json_object_get(json_object_get(choice, "message"), "content");
	if (!json_is_object(root) || !choice) {
		buf_reset(&call->detail);
		add_detail(call, "the answer is not a chat completion");
		json_decref(root);
		retry_or_finish(call, LLM_DOWN, -1);
		return;
	}
	/* An oversize answer is flagged in the call and reported as cut. */
	if (json_is_string(content))
		(void)append_text(call, json_string_value(content), json_string_length(content));
	json_decref(root);
	finish(call, call->is_answer_too_big ? LLM_CUT : call->text->len ? LLM_OK : LLM_EMPTY);
}

static void on_http_done(void *arg, const struct http_response *resp)
{
	struct llm_call *call = arg;
	call->http = NULL;
	call->attempts++;

	if (!resp->is_transport_error && !resp->is_aborted && (resp->status < 200 || resp->status > 299)) {
		on_error_status(call, resp);
		return;
	}
	if (call->has_stream_error) {
		finish(call, LLM_REJECTED);
		return;
	}
	if (call->is_answer_too_big) {
		log_warn("llm: the answer passed %zu bytes and was cut there", call->max_answer);
		finish(call, LLM_CUT);
		return;
	}
	if (call->kind == BODY_JSON && !resp->is_transport_error && !resp->is_aborted) {
		on_json_answer(call);
		return;
	}
	bool is_cut = resp->is_transport_error || resp->is_aborted ||
		      (call->sse && sse_finish(call->sse)) || !call->is_finished;
	(void)drop_carry(call); /* a half that ended the stream; a full answer is flagged by append_text */
	if (!is_cut) {
		finish(call, call->text->len ? LLM_OK : LLM_EMPTY);
		return;
	}
	buf_reset(&call->detail);
	add_detail(call, "%s",
		 resp->is_transport_error ? resp->error
		 : resp->is_aborted	 ? "a stream event was too big or malformed"
					 : "the stream ended before [DONE]");
	if (call->text->len) {
		finish(call, LLM_CUT);
		return;
	}
	retry_or_finish(call, LLM_DOWN, -1);
}

static int start_attempt(struct llm_call *call)
{
	struct llm_client *llm = call->llm;
	const char *headers[] = {"Content-Type: application/json", "Accept: text/event-stream",
				 llm->auth, NULL};
	reset_attempt(call);
	buf_init(&call->json, LLM_MAX_BODY);
	buf_free(call->text);
	buf_init(call->text, call->max_answer);
	buf_init(&call->delta, LLM_MAX_ANSWER);
	struct http_request req = {
		.method = "POST",
		.url = llm->url,
		.headers = headers,
		.body = call->body,
		.body_len = strlen(call->body),
		.timeout_ms = llm->timeout_s * 1000,
		.stall_s = llm->timeout_s < LLM_STALL_S ? llm->timeout_s : LLM_STALL_S,
		.max_body = LLM_MAX_BODY,
		.on_data = on_data,
		.on_done = on_http_done,
		.arg = call,
	};
	call->http = http_start(llm->http, &req);
	return call->http ? 0 : -1;
}

struct llm_client *llm_client_new(struct event_base *base, struct http_client *http,
				  const struct llm_options *o)
{
	struct llm_client *llm = calloc(1, sizeof *llm);
	if (!llm)
		return NULL;
	llm->base = base;
	llm->http = http;
	llm->timeout_s = o->timeout_s;
	llm->token_scale = 1.0;
	llm->model = strdup(o->model);
	llm->transcribe_model = strdup(o->transcribe_model ? o->transcribe_model : "whisper-1");
	llm->image_model = strdup(o->image_model ? o->image_model : "gpt-image-1");
	llm->image_size = strdup(o->image_size ? o->image_size : "1024x1024");
	if (asprintf(&llm->url, "%s" COMPLETIONS_PATH, o->base_url) < 0)
		llm->url = NULL;
	if (asprintf(&llm->auth, "Authorization: Bearer %s", o->key) < 0)
		llm->auth = NULL;
	if (!llm->model || !llm->transcribe_model || !llm->image_model || !llm->image_size || !llm->url ||
	    !llm->auth) {
		llm_client_free(llm);
		return NULL;
	}
	return llm;
}

const char *llm_model(const struct llm_client *llm)
{
	return llm->model;
}

double llm_token_scale(const struct llm_client *llm)
{
	return llm->token_scale;
}

void llm_client_free(struct llm_client *llm)
{
	if (!llm)
		return;
	free(llm->url);
	free(llm->auth);
	free(llm->model);
	free(llm->transcribe_model);
	free(llm->image_model);
	free(llm->image_size);
	free(llm);
}

char *llm_endpoint(const struct llm_client *llm, const char *path)
{
	/* url is <base_url>/chat/completions */
	char *url = NULL;
	int base_len = (int)(strlen(llm->url) - strlen(COMPLETIONS_PATH));
	if (asprintf(&url, "%.*s/%s", base_len, llm->url, path) < 0)
		return NULL;
	return url;
}

const char *llm_auth_header(const struct llm_client *llm)
{
	return llm->auth;
}

struct http_client *llm_http(const struct llm_client *llm)
{
	return llm->http;
}

const char *llm_transcribe_model(const struct llm_client *llm)
{
	return llm->transcribe_model;
}

const char *llm_image_model(const struct llm_client *llm)
{
	return llm->image_model;
}

const char *llm_image_size(const struct llm_client *llm)
{
	return llm->image_size;
}

/* The request body: the model, the turns, streaming with usage in the last chunk. */
static char *request_body(const char *model, const struct turn *turns, size_t n)
{
	struct buf b;
	buf_init(&b, SIZE_MAX - 1);
	int rc = buf_append_str(&b, "{\"model\":");
	if (rc == BUF_OK)
		rc = jsonw_string(&b, model, strlen(model));
	if (rc == BUF_OK)
		rc = buf_append_str(&b, ",\"messages\":");
	if (rc == BUF_OK)
		rc = history_write_json(&b, turns, n);
	if (rc == BUF_OK)
		rc = buf_append_str(&b, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
	if (rc != BUF_OK) {
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b);
}

struct llm_call *llm_complete(struct llm_client *llm, const char *model, const struct turn *turns, size_t n,
			      struct buf *answer, llm_progress_cb progress, llm_done_cb done,
			      void *arg)
{
	struct llm_call *call = calloc(1, sizeof *call);
	if (!call)
		goto fail;
	call->llm = llm;
	call->text = answer;
	call->max_answer = LLM_MAX_ANSWER;
	buf_init(&call->detail, LLM_MAX_DETAIL);
	call->progress = progress;
	call->done = done;
	call->arg = arg;
	call->estimated_tokens = tokens_estimate_turns(turns, n);
	call->started = metrics_clock();
	call->body = request_body(model ? model : llm->model, turns, n);
	if (!call->body || start_attempt(call) != 0)
		goto fail;
	return call;
fail:
	log_error("llm: cannot start a request");
	call_free(call);
	return NULL;
}

void llm_limit(struct llm_call *call, size_t max)
{
	if (max < call->max_answer)
		call->max_answer = call->text->max = max;
}

void llm_cancel(struct llm_call *call)
{
	if (call)
		count(call, "cancelled");
	call_free(call);
}
