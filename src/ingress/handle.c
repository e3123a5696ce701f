/*
 * Serverless: one event, handled completely, then the response. The platform
 * freezes or ends the process once the response is out, so the answer is
 * produced first; a little before HANDLE_DEADLINE whatever the model has
 * said is delivered with a notice (and stored), so a slow model costs the
 * user the rest of an answer, never the conversation.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "ingress/ingress.h"
#include "ingress/invocation.h"
#include "lib/log.h"
#include "telegram/update.h"
#include "telegram/webhook.h"

#define MAX_EVENT (8u << 20)
#define HURRY_MARGIN_S 5 /* seconds before the deadline to cut answers short */

typedef void (*handled_cb)(void *arg, int status, const char *text);

struct handling {
	struct bot *bot;
	struct invocation inv;
	struct event *hurry_timer;
	struct event *deadline_timer;
	handled_cb done;
	void *arg;
};

static void handling_free(struct handling *h)
{
	if (h->hurry_timer)
		event_free(h->hurry_timer);
	if (h->deadline_timer)
		event_free(h->deadline_timer);
	invocation_clear(&h->inv);
	free(h);
}

static void finish(struct handling *h, int status, const char *text)
{
	bot_on_idle(h->bot, NULL, NULL);
	handled_cb done = h->done;
	void *arg = h->arg;
	handling_free(h);
	done(arg, status, text);
}

static void on_idle(void *arg)
{
	finish(arg, 200, "ok");
}

static void on_accepted(void *arg)
{
	struct handling *h = arg;
	if (bot_busy(h->bot) == 0)
		finish(h, 200, "ok"); /* a repeat, or nothing for the bot to do */
}

static void on_hurry(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct handling *h = arg;
	bot_hurry(h->bot);
}

static void on_abandoned(void *arg)
{
	/* Not 200: Telegram then delivers the update again, to an invocation with more luck. */
	finish(arg, 503, "out of time");
}

static void on_deadline(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct handling *h = arg;
	log_error("handle: the deadline passed with %zu updates unfinished", bot_busy(h->bot));
	bot_on_idle(h->bot, NULL, NULL);
	bot_abandon(h->bot, on_abandoned, h);
}

static void on_identified(void *arg, int status)
{
	struct handling *h = arg;
	if (status != 0) {
		finish(h, 500, "the bot cannot identify itself");
		return;
	}
	bot_on_idle(h->bot, on_idle, h);
	bot_receive(h->bot, h->inv.body, h->inv.body_len, on_accepted, h);
}

static int arm(struct handling *h, struct event **ev, event_callback_fn cb, double seconds)
{
	long us = seconds > 0 ? (long)(seconds * 1e6) : 0;
	struct timeval tv = {us / 1000000, us % 1000000};
	*ev = evtimer_new(h->bot->base, cb, h);
	return *ev && evtimer_add(*ev, &tv) == 0 ? 0 : -1;
}

/* Handles one event; done gets the HTTP status and body for the response. */
static void handle_event(struct bot *b, const char *input, size_t len, double deadline_s, handled_cb done,
			 void *arg)
{
	char err[160];
	struct handling *h = calloc(1, sizeof *h);
	if (!h) {
		done(arg, 500, "out of memory");
		return;
	}
	h->bot = b;
	h->done = done;
	h->arg = arg;
	if (invocation_parse(input, len, &h->inv, err, sizeof err) != 0) {
		log_warn("handle: %s", err);
		finish(h, 400, "not a Telegram update");
		return;
	}
	if (h->inv.method && strcmp(h->inv.method, "POST") != 0) {
		finish(h, 405, "use POST");
		return;
	}
	if (!webhook_secret_matches(b->cfg->webhook_secret, h->inv.secret)) {
		log_warn("handle: a request without the right secret token was refused");
		finish(h, 401, "unauthorized");
		return;
	}
	/* Checked before the bot identifies itself, which may cost a call to Telegram. */
	struct tg_update u;
	bool is_update = update_parse(h->inv.body, h->inv.body_len, &u, err, sizeof err) == 0 || u.update_id;
	update_clear(&u);
	if (!is_update) {
		log_warn("handle: the body is not a Telegram Update (%s)", err);
		finish(h, 400, "not a Telegram update");
		return;
	}
	double hurry_s = deadline_s > 2 * HURRY_MARGIN_S ? deadline_s - HURRY_MARGIN_S : deadline_s * 0.7;
	if (arm(h, &h->hurry_timer, on_hurry, hurry_s) != 0 ||
	    arm(h, &h->deadline_timer, on_deadline, deadline_s) != 0) {
		finish(h, 500, "cannot set up timers");
		return;
	}
	bot_identify(b, true, on_identified, h);
}

struct stdin_run {
	struct event_base *base;
	char *response;
	bool is_done;
};

static void on_handled(void *arg, int status, const char *text)
{
	struct stdin_run *r = arg;
	r->response = invocation_response(status, text);
	r->is_done = true;
	event_base_loopbreak(r->base);
}

static int read_all(int fd, struct buf *b)
{
	char chunk[65536];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof chunk);
		if (n == 0)
			return 0;
		if (n < 0)
			return -1;
		if (buf_append(b, chunk, (size_t)n) != BUF_OK)
			return -1;
	}
}

int ingress_handle_run(struct bot *b)
{
	struct buf input;
	buf_init(&input, MAX_EVENT);
	struct stdin_run run = {.base = b->base};
	if (read_all(STDIN_FILENO, &input) != 0) {
		log_error("handle: cannot read the event from stdin (or it is over %u bytes)", MAX_EVENT);
		run.response = invocation_response(413, "the event is too large");
	} else {
		handle_event(b, buf_str(&input), input.len, (double)b->cfg->handle_deadline_s, on_handled, &run);
		if (!run.is_done && event_base_dispatch(b->base) < 0)
			log_error("handle: the event loop failed");
	}
	buf_free(&input);
	if (!run.response) {
		log_error("handle: no response could be made");
		return 1;
	}
	puts(run.response);
	fflush(stdout);
	free(run.response);
	return 0;
}

/*
 * The AWS Lambda custom runtime (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html):
 * GET .../invocation/next blocks until an event comes; its response is POSTed
 * to .../invocation/<request id>/response. Between events the process has
 * nothing else to do (Lambda freezes it), so these two calls block; the event
 * itself runs on the loop like any other.
 */
struct lambda_event {
	struct buf body;
	char request_id[128];
	long long deadline_ms; /* epoch milliseconds; 0 when not given */
};

static size_t on_lambda_body(char *data, size_t size, size_t n, void *arg)
{
	return buf_append(arg, data, size * n) == BUF_OK ? size * n : 0;
}

static size_t on_lambda_header(char *data, size_t size, size_t n, void *arg)
{
	struct lambda_event *ev = arg;
	size_t len = size * n;
	static const char id[] = "Lambda-Runtime-Aws-Request-Id:";
	static const char deadline[] = "Lambda-Runtime-Deadline-Ms:";
	char value[128];
	size_t skip = 0;
	if (len > sizeof id - 1 && strncasecmp(data, id, sizeof id - 1) == 0)
		skip = sizeof id - 1;
	else if (len > sizeof deadline - 1 && strncasecmp(data, deadline, sizeof deadline - 1) == 0)
		skip = sizeof deadline - 1;
	if (!skip)
		return len;
	size_t vlen = len - skip;
	const char *v = data + skip;
	while (vlen && (*v == ' ' || *v == '\t')) {
		v++;
		vlen--;
	}
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
	if (vlen >= sizeof value)
		vlen = sizeof value - 1;
	memcpy(value, v, vlen);
	value[vlen] = '\0';
	if (skip == sizeof id - 1)
		snprintf(ev->request_id, sizeof ev->request_id, "%s", value);
	else
		ev->deadline_ms = strtoll(value, NULL, 10);
	return len;
}

/* One blocking call to the runtime API; the HTTP status, or -1 when it cannot be reached. */
static long lambda_call(const char *url, const char *post, struct lambda_event *ev)
{
	CURL *easy = curl_easy_init();
	if (!easy)
		return -1;
	struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	if (post) {
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, post);
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	}
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_lambda_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &ev->body);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_lambda_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, ev);
	CURLcode rc = curl_easy_perform(easy);
	long status = -1;
	if (rc == CURLE_OK)
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	else
		log_error("lambda: the runtime API: %s", curl_easy_strerror(rc));
	curl_slist_free_all(headers);
	curl_easy_cleanup(easy);
	return status;
}

static double seconds_until(long long deadline_ms)
{
	struct timeval now;
	gettimeofday(&now, NULL);
	long long now_ms = (long long)now.tv_sec * 1000 + now.tv_usec / 1000;
	return (double)(deadline_ms - now_ms) / 1000.0;
}

int ingress_lambda_run(struct bot *b)
{
	const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
	if (!api || !*api) {
		log_error("lambda: AWS_LAMBDA_RUNTIME_API is not set: 'tgllm lambda' runs inside AWS Lambda "
			  "(provided.al2023); elsewhere use 'tgllm handle' or 'tgllm serve'");
		return 2;
	}
	char url[512];
	for (;;) {
		struct lambda_event ev = {0};
		buf_init(&ev.body, MAX_EVENT);
		snprintf(url, sizeof url, "http://%s/2018-06-01/runtime/invocation/next", api);
		long status = lambda_call(url, NULL, &ev);
		if (status != 200 || !ev.request_id[0]) {
			buf_free(&ev.body);
			log_error("lambda: no event from the runtime API (status %ld); stopping", status);
			return 1;
		}
		double deadline = (double)b->cfg->handle_deadline_s;
		if (ev.deadline_ms > 0 && seconds_until(ev.deadline_ms) - 1 < deadline)
			deadline = seconds_until(ev.deadline_ms) - 1;
		struct stdin_run run = {.base = b->base};
		handle_event(b, buf_str(&ev.body), ev.body.len, deadline, on_handled, &run);
		if (!run.is_done && event_base_dispatch(b->base) < 0)
			log_error("lambda: the event loop failed");
		struct lambda_event reply = {0};
		buf_init(&reply.body, 1u << 16);
		snprintf(url, sizeof url, "http://%s/2018-06-01/runtime/invocation/%s/%s", api, ev.request_id,
			 run.response ? "response" : "error");
		status = lambda_call(url,
				     run.response ? run.response
						  : "{\"errorMessage\":\"no response\",\"errorType\":\"Runtime.Failure\"}",
				     &reply);
		if (status != 202)
			log_warn("lambda: the runtime API took the response with status %ld", status);
		free(run.response);
		buf_free(&reply.body);
		buf_free(&ev.body);
	}
}
