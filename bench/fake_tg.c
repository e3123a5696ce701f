/*
 * bench_fake: the fake Telegram Bot API (this file) and the fake model
 * (fake_llm.c) in one process. Prints "TG_PORT LLM_PORT" on stdout once both
 * listen; updates are handed out from SIGUSR1 on; once every update has its
 * answer, statistics are written as JSON to --stats. See bench/README.md.
 *
 * Bot API semantics followed: https://core.telegram.org/bots/api#getupdates
 * (offset confirms, timeout holds the request), sendMessage answers a
 * Message, sendMessageDraft / sendChatAction answer true.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "fake.h"

#define MAX_BATCH 100

static struct evhttp_request *held; /* the getUpdates waiting for updates */
static long held_offset, held_limit;
static struct event *held_timer, *feed_timer;
static char expected[65536];
static size_t expected_len;
static long next_message_id = 1;

double fake_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int fake_listen(struct fake *f, struct evhttp *http, int *port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	/* A deep backlog: thousands of connections arrive at once in figure 3. */
	struct evconnlistener *l = evconnlistener_new_bind(f->base, NULL, NULL,
		LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 16384, (struct sockaddr *)&sin, sizeof sin);
	if (!l || !evhttp_bind_listener(http, l))
		return -1;
	socklen_t len = sizeof sin;
	if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &len) != 0)
		return -1;
	*port = ntohs(sin.sin_port);
	return 0;
}

void fake_note(struct fake *f, const char *service, const char *method, const char *target, int status)
{
	if (!f->log)
		return;
	fprintf(f->log, "%ld %.3f %s %s %s %d\n", f->run, (fake_now() - f->t_run) * 1e3, service, method, target,
		status);
	fflush(f->log);
}

void fake_next_run(struct fake *f)
{
	f->run++;
	f->t_run = fake_now();
}

static void reply_json(struct evhttp_request *req, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_json(struct evhttp_request *req, const char *fmt, ...)
{
	struct evbuffer *out = evbuffer_new();
	va_list ap;
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static void add_update(struct evbuffer *out, struct fake *f, long id)
{
	long k = (id - 1) % f->n_chats;
	long chat = FAKE_CHAT_BASE + k;
	evbuffer_add_printf(out,
		"{\"update_id\":%ld,\"message\":{\"message_id\":%ld,\"from\":{\"id\":%ld,\"is_bot\":false,"
		"\"first_name\":\"User\",\"username\":\"user%ld\",\"language_code\":\"en\"},"
		"\"chat\":{\"id\":%ld,\"first_name\":\"User\",\"username\":\"user%ld\",\"type\":\"private\"},"
		"\"date\":1767225600,\"text\":\"Question %ld [c=%ld]: how does an event loop serve thousands "
		"of connections with one thread, and what does it cost per connection?\"}}",
		id, 1000 + id, chat, chat, chat, chat, id, chat);
}

static void answer_updates(struct fake *f, struct evhttp_request *req, long offset, long limit)
{
	struct evbuffer *out = evbuffer_new();
	evbuffer_add_printf(out, "{\"ok\":true,\"result\":[");
	long from = offset > 1 ? offset : 1;
	for (long id = from; id <= f->released && id < from + limit; id++) {
		if (id > from)
			evbuffer_add(out, ",", 1);
		add_update(out, f, id);
	}
	evbuffer_add_printf(out, "]}");
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static void release_held(struct fake *f, bool is_timeout)
{
	if (!held || (!is_timeout && f->released < held_offset))
		return;
	struct evhttp_request *req = held;
	held = NULL;
	evtimer_del(held_timer);
	evhttp_connection_set_closecb(evhttp_request_get_connection(req), NULL, NULL);
	answer_updates(f, req, held_offset, held_limit);
}

static void write_stats(struct fake *f);

/* SIGUSR2: the statistics so far (handle mode has no end of its own). */
static void on_dump(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct fake *f = arg;
	if (!f->t_done)
		f->t_done = fake_now();
	write_stats(f);
}

static void on_held_timeout(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	release_held(arg, true);
}

static void on_held_gone(struct evhttp_connection *conn, void *arg)
{
	(void)conn;
	(void)arg;
	held = NULL;
	evtimer_del(held_timer);
}

static void release(struct fake *f, long upto)
{
	if (upto > f->n_updates)
		upto = f->n_updates;
	if (upto > f->released) {
		f->released = upto;
		release_held(f, false);
	}
}

static void on_feed(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct fake *f = arg;
	if (f->feed == FAKE_FEED_RATE) {
		release(f, (long)((fake_now() - f->t_go) * f->rate) + 1);
		if (f->released < f->n_updates) {
			struct timeval tv = {0, 10000};
			evtimer_add(feed_timer, &tv);
		}
	} else { /* FAKE_FEED_SEQ */
		release(f, f->released + 1);
	}
}

static void on_go(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct fake *f = arg;
	if (f->t_go)
		return;
	f->t_go = fake_now();
	if (f->feed == FAKE_FEED_BURST)
		release(f, f->n_updates);
	else
		on_feed(-1, 0, f);
}

static void sort(double *v, size_t n)
{
	for (size_t i = 1; i < n; i++) /* insertion sort: at most a few thousand */
		for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
}

static void write_stats(struct fake *f)
{
	if (!f->stats_path)
		return;
	double *lat = calloc((size_t)f->n_chats + 1, sizeof *lat), *late = calloc((size_t)f->n_chats + 1, sizeof *late);
	size_t n_lat = 0;
	long bad = 0, short_chats = 0, per_chat = f->n_updates / f->n_chats, all_answers = 0;
	for (long k = 0; k < f->n_chats; k++) {
		struct fake_chat *c = &f->chats[k];
		bad += c->bad_answers;
		all_answers += c->answers;
		if (c->answers < per_chat)
			short_chats++;
		if (c->t_token > 0 && c->t_visible >= c->t_token) {
			late[n_lat] = c->timer_late * 1e6;
			lat[n_lat++] = (c->t_visible - c->t_token) * 1e6;
		}
	}
	sort(lat, n_lat);
	sort(late, n_lat);
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", f->stats_path);
	FILE *out = fopen(tmp, "w");
	if (!out) {
		perror(tmp);
		exit(1);
	}
	fprintf(out,
		"{\"updates\":%ld,\"answered\":%ld,\"answers_all_chats\":%ld,\"bad_answers\":%ld,\"chats_missing_answers\":%ld,"
		"\"seconds\":%.3f,\"calls\":{\"getUpdates\":%ld,\"sendMessageDraft\":%ld,\"sendMessage\":%ld,"
		"\"editMessageText\":%ld,\"sendChatAction\":%ld,\"other\":%ld},\"llm_requests\":%ld,"
		"\"llm_streams_peak\":%ld,\"latency_n\":%zu,\"latency_p50_us\":%.0f,\"latency_p99_us\":%.0f,"
		"\"latency_max_us\":%.0f,\"fake_timer_late_p50_us\":%.0f,\"fake_timer_late_p99_us\":%.0f}\n",
		f->n_updates, f->answered, all_answers, bad, short_chats, f->t_done - f->t_go, f->calls_get_updates,
		f->calls_draft, f->calls_send, f->calls_edit, f->calls_action, f->calls_other, f->llm_requests,
		f->llm_streams_peak, n_lat, n_lat ? lat[(n_lat - 1) / 2] : 0,
		n_lat ? lat[(size_t)((double)(n_lat - 1) * 0.99 + 0.5)] : 0, n_lat ? lat[n_lat - 1] : 0,
		n_lat ? late[(n_lat - 1) / 2] : 0, n_lat ? late[(size_t)((double)(n_lat - 1) * 0.99 + 0.5)] : 0);
	fclose(out);
	free(lat);
	free(late);
	if (rename(tmp, f->stats_path) != 0)
		perror(f->stats_path);
}

/* The chat index of a call's chat_id, or -1. */
static long chat_index(struct fake *f, json_t *params)
{
	long id = (long)json_integer_value(json_object_get(params, "chat_id")) - FAKE_CHAT_BASE;
	return id >= 0 && id < f->n_chats ? id : -1;
}

static void note_visible(struct fake *f, long k, json_t *params)
{
	const char *text = json_string_value(json_object_get(params, "text"));
	if (k >= 0 && text && *text && f->chats[k].t_visible == 0)
		f->chats[k].t_visible = fake_now();
}

static void on_final(struct fake *f, long k, json_t *params)
{
	size_t len = 0;
	const char *text = json_string_value(json_object_get(params, "text"));
	if (text)
		len = json_string_length(json_object_get(params, "text"));
	if (k >= 0) {
		f->chats[k].answers++;
		if (!text || len != expected_len || memcmp(text, expected, len) != 0)
			f->chats[k].bad_answers++;
	}
	if (f->feed == FAKE_FEED_NONE || k < 0)
		return;
	f->answered++;
	if (f->answered == f->n_updates) {
		f->t_done = fake_now();
		write_stats(f);
	} else if (f->feed == FAKE_FEED_SEQ) {
		struct timeval tv = {f->gap_ms / 1000, (f->gap_ms % 1000) * 1000};
		evtimer_add(feed_timer, &tv);
	}
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct fake *f = arg;
	const char *uri = evhttp_request_get_uri(req);
	const char *method = strrchr(uri, '/');
	if (strncmp(uri, "/bot", 4) != 0 || !method) {
		evhttp_send_error(req, 404, "not found");
		return;
	}
	method++;
	fake_note(f, "tg", "POST", method, 200);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	json_t *params = len ? json_loadb((const char *)evbuffer_pullup(in, -1), len, 0, NULL) : json_object();
	if (!params)
		params = json_object();
	long k = chat_index(f, params);

	if (strcmp(method, "getUpdates") == 0) {
		f->calls_get_updates++;
		long offset = (long)json_integer_value(json_object_get(params, "offset"));
		long timeout = (long)json_integer_value(json_object_get(params, "timeout"));
		long limit = json_is_integer(json_object_get(params, "limit"))
				     ? (long)json_integer_value(json_object_get(params, "limit")) : MAX_BATCH;
		if (limit <= 0 || limit > MAX_BATCH)
			limit = MAX_BATCH;
		if (f->released >= (offset > 1 ? offset : 1) || timeout <= 0 || held) {
			answer_updates(f, req, offset, limit);
		} else {
			held = req;
			held_offset = offset > 1 ? offset : 1;
			held_limit = limit;
			evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_held_gone, f);
			struct timeval tv = {timeout, 0};
			evtimer_add(held_timer, &tv);
		}
	} else if (strcmp(method, "getMe") == 0) {
		/* A bot's id is the number before ':' in its token. */
		reply_json(req, "{\"ok\":true,\"result\":{\"id\":%ld,\"is_bot\":true,\"first_name\":\"B\","
				"\"username\":\"bench_bot\"}}", strtol(uri + 4, NULL, 10));
	} else if (strcmp(method, "getWebhookInfo") == 0) {
		reply_json(req, "{\"ok\":true,\"result\":{\"url\":\"\",\"pending_update_count\":0}}");
	} else if (strcmp(method, "sendMessage") == 0) {
		f->calls_send++;
		note_visible(f, k, params);
		reply_json(req, "{\"ok\":true,\"result\":{\"message_id\":%ld,\"date\":1767225600,"
				"\"chat\":{\"id\":%lld,\"type\":\"private\"},\"text\":\"\"}}",
			   next_message_id++, (long long)json_integer_value(json_object_get(params, "chat_id")));
		on_final(f, k, params);
	} else if (strcmp(method, "editMessageText") == 0) {
		f->calls_edit++;
		note_visible(f, k, params);
		reply_json(req, "{\"ok\":true,\"result\":{\"message_id\":%lld,\"date\":1767225600,"
				"\"chat\":{\"id\":%lld,\"type\":\"private\"},\"text\":\"\"}}",
			   (long long)json_integer_value(json_object_get(params, "message_id")),
			   (long long)json_integer_value(json_object_get(params, "chat_id")));
	} else {
		if (strcmp(method, "sendMessageDraft") == 0) {
			f->calls_draft++;
			note_visible(f, k, params);
		} else if (strcmp(method, "sendChatAction") == 0) {
			f->calls_action++;
		} else {
			f->calls_other++;
		}
		reply_json(req, "{\"ok\":true,\"result\":true}");
	}
	json_decref(params);
}

static int usage(void)
{
	fprintf(stderr,
		"usage: bench_fake --mode instant|slow|latency [--feed none|burst|rate|seq] [--updates N]\n"
		"       [--chats N] [--rate R] [--tokens N] [--token-ms MS] [--first-ms MS] [--rest-ms MS]\n"
		"       [--gap-ms MS] [--stats FILE] [--log FILE]\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct fake f = {.mode = FAKE_INSTANT, .feed = FAKE_FEED_NONE, .n_updates = 1, .n_chats = 1,
			 .rate = 10, .token_ms = 200, .n_tokens = 60, .first_ms = 50, .rest_ms = 20, .gap_ms = 50};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			return usage();
		i++;
		if (strcmp(a, "--mode") == 0)
			f.mode = strcmp(v, "slow") == 0 ? FAKE_SLOW : strcmp(v, "latency") == 0 ? FAKE_LATENCY
											: FAKE_INSTANT;
		else if (strcmp(a, "--feed") == 0)
			f.feed = strcmp(v, "burst") == 0 ? FAKE_FEED_BURST : strcmp(v, "rate") == 0 ? FAKE_FEED_RATE
					: strcmp(v, "seq") == 0 ? FAKE_FEED_SEQ : FAKE_FEED_NONE;
		else if (strcmp(a, "--updates") == 0)
			f.n_updates = atol(v);
		else if (strcmp(a, "--chats") == 0)
			f.n_chats = atol(v);
		else if (strcmp(a, "--rate") == 0)
			f.rate = atof(v);
		else if (strcmp(a, "--tokens") == 0)
			f.n_tokens = atoi(v);
		else if (strcmp(a, "--token-ms") == 0)
			f.token_ms = atoi(v);
		else if (strcmp(a, "--first-ms") == 0)
			f.first_ms = atoi(v);
		else if (strcmp(a, "--rest-ms") == 0)
			f.rest_ms = atoi(v);
		else if (strcmp(a, "--gap-ms") == 0)
			f.gap_ms = atoi(v);
		else if (strcmp(a, "--stats") == 0)
			f.stats_path = v;
		else if (strcmp(a, "--log") == 0) {
			if (!(f.log = fopen(v, "w"))) {
				perror(v);
				return 1;
			}
		}
		else
			return usage();
	}
	if (f.n_updates < 1 || f.n_chats < 1 || f.n_tokens < 1 || f.token_ms < 1)
		return usage();
	signal(SIGPIPE, SIG_IGN);
	f.chats = calloc((size_t)f.n_chats, sizeof *f.chats);
	/* Precise timers (timerfd): the first-token timer's lateness then measures the machine, not libevent's ms rounding. */
	struct event_config *ec = event_config_new();
	if (ec)
		event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
	f.base = ec ? event_base_new_with_config(ec) : NULL;
	if (ec)
		event_config_free(ec);
	expected_len = fake_answer_plain(f.n_tokens, expected, sizeof expected);
	held_timer = evtimer_new(f.base, on_held_timeout, &f);
	feed_timer = evtimer_new(f.base, on_feed, &f);
	struct event *go = evsignal_new(f.base, SIGUSR1, on_go, &f);
	struct event *dump = evsignal_new(f.base, SIGUSR2, on_dump, &f);
	struct evhttp *tg = evhttp_new(f.base);
	int tg_port, llm_port, s3_port;
	if (!f.chats || !f.base || !go || event_add(go, NULL) != 0 || !dump || event_add(dump, NULL) != 0 || !tg) {
		fprintf(stderr, "bench_fake: cannot set up the event loop\n");
		return 1;
	}
	evhttp_set_timeout(tg, 600);
	evhttp_set_gencb(tg, on_request, &f);
	f.t_run = fake_now();
	if (fake_listen(&f, tg, &tg_port) != 0 || fake_llm_start(&f, &llm_port) != 0 ||
	    fake_s3_start(&f, &s3_port) != 0) {
		fprintf(stderr, "bench_fake: cannot listen on 127.0.0.1: %s\n", strerror(errno));
		return 1;
	}
	printf("%d %d %d\n", tg_port, llm_port, s3_port);
	fflush(stdout);
	event_base_dispatch(f.base);
	return 0;
}
