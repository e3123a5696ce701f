#include "tg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define TG_MAX_ATTEMPTS 4       /* for 5xx and connection failures */
#define TG_MAX_429_WAITS 10     /* a flood-wait loop must end some day */
#define TG_MAX_RETRY_AFTER 3600 /* seconds; beyond that, give up */
#define TG_MAX_RESPONSE (16u << 20)

struct tg_client {
	struct event_base *base;
	struct http_client *http;
	char *api_base;
	char *token;
};

struct tg_call {
	struct tg_client *tg;
	char method[64];
	char *url;
	char *body;
	long timeout_s;
	int attempts;
	int waits_429;
	struct http_call *http;
	struct event *retry_timer;
	tg_done_cb done;
	void *arg;
};

static void call_free(struct tg_call *call)
{
	if (!call)
		return;
	http_cancel(call->http);
	if (call->retry_timer)
		event_free(call->retry_timer);
	free(call->url);
	free(call->body);
	free(call);
}

static void finish(struct tg_call *call, const struct tg_result *res)
{
	call->http = NULL; /* it ended: http frees its own call after this callback */
	call->done(call->arg, res);
	call_free(call);
}

static void finish_error(struct tg_call *call, long code, const char *description)
{
	struct tg_result res = {false, code, description, NULL};
	finish(call, &res);
}

static int send_attempt(struct tg_call *call);

static void on_retry_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct tg_call *call = arg;
	if (send_attempt(call) != 0)
		finish_error(call, 0, "cannot start the request");
}

static void retry_later(struct tg_call *call, long seconds)
{
	call->http = NULL;
	struct timeval tv = {seconds, 0};
	if (!call->retry_timer)
		call->retry_timer = evtimer_new(call->tg->base, on_retry_timer, call);
	if (!call->retry_timer || evtimer_add(call->retry_timer, &tv) != 0)
		finish_error(call, 0, "cannot schedule a retry");
}

static void on_http_done(void *arg, const struct http_response *resp)
{
	struct tg_call *call = arg;
	call->attempts++;

	if (resp->is_transport_error) {
		/* A timeout may hide a delivered message: only failures to connect are repeated. */
		bool is_safe = resp->status == 0 && !resp->is_timeout && resp->body_len == 0;
		if (is_safe && call->attempts < TG_MAX_ATTEMPTS) {
			log_warn("tg: %s failed (%s), retrying", call->method, resp->error);
			retry_later(call, 1L << (call->attempts - 1));
			return;
		}
		finish_error(call, 0, resp->error);
		return;
	}

	json_error_t jerr;
	json_t *root = json_loadb(resp->body, resp->body_len, 0, &jerr);
	json_t *ok = json_object_get(root, "ok");
	if (!json_is_boolean(ok)) {
		char what[96];
		snprintf(what, sizeof what, "HTTP %ld with a body that is not a Bot API answer", resp->status);
		json_decref(root);
		if (resp->status >= 500 && call->attempts < TG_MAX_ATTEMPTS) {
			log_warn("tg: %s: %s, retrying", call->method, what);
			retry_later(call, 1L << (call->attempts - 1));
			return;
		}
		finish_error(call, resp->status, what);
		return;
	}
	if (json_is_true(ok)) {
		struct tg_result res = {true, 0, "", json_object_get(root, "result")};
		finish(call, &res);
		json_decref(root);
		return;
	}

	json_int_t code = json_integer_value(json_object_get(root, "error_code"));
	const char *desc = json_string_value(json_object_get(root, "description"));
	json_int_t retry_after =
		json_integer_value(json_object_get(json_object_get(root, "parameters"), "retry_after"));
	if (code == 0)
		code = resp->status;
	if (!desc)
		desc = "no description";

	if (code == 429 && call->waits_429 < TG_MAX_429_WAITS && retry_after <= TG_MAX_RETRY_AFTER) {
		if (retry_after < 1)
			retry_after = 1;
		call->waits_429++;
		call->attempts--; /* waiting as told is not a failed attempt */
		log_warn("tg: %s: flood limit, retrying in %lld s", call->method, (long long)retry_after);
		json_decref(root);
		retry_later(call, (long)retry_after);
		return;
	}
	if (code >= 500 && call->attempts < TG_MAX_ATTEMPTS) {
		log_warn("tg: %s: %lld %s, retrying", call->method, (long long)code, desc);
		json_decref(root);
		retry_later(call, 1L << (call->attempts - 1));
		return;
	}
	finish_error(call, (long)code, desc);
	json_decref(root);
}

static int send_attempt(struct tg_call *call)
{
	static const char *const headers[] = {"Content-Type: application/json", NULL};
	struct http_request req = {
		.method = "POST",
		.url = call->url,
		.headers = headers,
		.body = call->body,
		.body_len = strlen(call->body),
		.timeout_ms = call->timeout_s * 1000,
		.max_body = TG_MAX_RESPONSE,
		.on_done = on_http_done,
		.arg = call,
	};
	call->http = http_start(call->tg->http, &req);
	return call->http ? 0 : -1;
}

struct tg_client *tg_client_new(struct event_base *base, struct http_client *http,
				const char *api_base, const char *token)
{
	struct tg_client *tg = calloc(1, sizeof *tg);
	if (!tg)
		return NULL;
	tg->base = base;
	tg->http = http;
	tg->api_base = strdup(api_base);
	tg->token = strdup(token);
	if (!tg->api_base || !tg->token) {
		tg_client_free(tg);
		return NULL;
	}
	return tg;
}

void tg_client_free(struct tg_client *tg)
{
	if (!tg)
		return;
	free(tg->api_base);
	free(tg->token);
	free(tg);
}

struct tg_call *tg_call(struct tg_client *tg, const char *method, json_t *params, long timeout_s,
			tg_done_cb done, void *arg)
{
	struct tg_call *call = calloc(1, sizeof *call);
	if (!call)
		goto fail;
	call->tg = tg;
	snprintf(call->method, sizeof call->method, "%s", method);
	call->timeout_s = timeout_s;
	call->done = done;
	call->arg = arg;
	if (asprintf(&call->url, "%s/bot%s/%s", tg->api_base, tg->token, method) < 0) {
		call->url = NULL;
		goto fail;
	}
	call->body = params ? json_dumps(params, JSON_COMPACT) : strdup("{}");
	if (!call->body || send_attempt(call) != 0)
		goto fail;
	json_decref(params);
	return call;
fail:
	log_error("tg: cannot start %s", method);
	json_decref(params);
	call_free(call);
	return NULL;
}

void tg_call_cancel(struct tg_call *call)
{
	call_free(call);
}
