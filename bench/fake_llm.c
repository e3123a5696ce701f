/*
 * The fake OpenAI-compatible model: POST /v1/chat/completions answered as
 * text/event-stream (https://platform.openai.com/docs/api-reference/chat/streaming),
 * at once (FAKE_INSTANT), one token per tick (FAKE_SLOW) or first token then
 * the rest (FAKE_LATENCY, noting when the first token left).
 */
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"

struct stream {
	struct fake *f;
	struct evhttp_request *req;
	struct stream *prev, *next;
	struct event *timer; /* FAKE_LATENCY */
	long chat;           /* index, or -1 */
	int sent;            /* tokens written */
	double due;          /* FAKE_LATENCY: when the first-token timer should fire */
	bool is_first_sent;
};

static struct stream *streams; /* FAKE_SLOW: every open stream, ticked together */
static struct event *ticker;

void fake_answer_token(int i, char *md, size_t mdlen)
{
	if (i == 0)
		snprintf(md, mdlen, "Answer");
	else if (i % 10 == 3)
		snprintf(md, mdlen, " **bold%d**", i);
	else if (i % 10 == 7)
		snprintf(md, mdlen, " `code%d`", i);
	else
		snprintf(md, mdlen, " word%d", i);
}

size_t fake_answer_plain(int n_tokens, char *out, size_t len)
{
	size_t at = 0;
	for (int i = 0; i < n_tokens; i++) {
		int n = i == 0 ? snprintf(out + at, len - at, "Answer") : snprintf(out + at, len - at, " %s%d",
			i % 10 == 3 ? "bold" : i % 10 == 7 ? "code" : "word", i);
		if (n < 0 || (size_t)n >= len - at)
			break;
		at += (size_t)n;
	}
	return at;
}

static void add_token(struct evbuffer *out, int i)
{
	char md[64];
	fake_answer_token(i, md, sizeof md);
	evbuffer_add_printf(out, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"}}]}\n\n", md);
}

static void add_end(struct evbuffer *out, int n_tokens)
{
	evbuffer_add_printf(out,
			    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":500,\"completion_tokens\":%d}}\n\n"
			    "data: [DONE]\n\n",
			    n_tokens);
}

/* The conversation whose update text ("[c=<id>]") is the last in the request. */
static long chat_of(struct fake *f, struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *body = (const char *)evbuffer_pullup(in, -1);
	const char *last = NULL;
	for (const char *p = body; p && (p = memmem(p, len - (size_t)(p - body), "[c=", 3)); p += 3)
		last = p;
	if (!last)
		return -1;
	long id = strtol(last + 3, NULL, 10) - FAKE_CHAT_BASE;
	return id >= 0 && id < f->n_chats ? id : -1;
}

/* Whether the request asks for a stream ("stream":true), as tgllm does; the original bot does not. */
static bool is_streamed(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *body = (const char *)evbuffer_pullup(in, -1);
	return body && (memmem(body, len, "\"stream\":true", 13) || memmem(body, len, "\"stream\": true", 14));
}

static void stream_free(struct stream *s)
{
	struct fake *f = s->f;
	if (s->prev)
		s->prev->next = s->next;
	else if (streams == s)
		streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (s->timer)
		event_free(s->timer);
	f->llm_streams_open--;
	free(s);
}

static void on_client_gone(struct evhttp_connection *conn, void *arg)
{
	(void)conn;
	stream_free(arg);
}

static void stream_end(struct stream *s)
{
	struct evbuffer *out = evbuffer_new();
	add_end(out, s->f->n_tokens);
	evhttp_send_reply_chunk(s->req, out);
	evbuffer_free(out);
	evhttp_connection_set_closecb(evhttp_request_get_connection(s->req), NULL, NULL);
	evhttp_send_reply_end(s->req);
	stream_free(s);
}

static void on_tick(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	(void)arg;
	struct evbuffer *out = evbuffer_new();
	for (struct stream *s = streams, *next; s; s = next) {
		next = s->next;
		add_token(out, s->sent++);
		evhttp_send_reply_chunk(s->req, out); /* drains out */
		if (s->sent == s->f->n_tokens)
			stream_end(s);
	}
	evbuffer_free(out);
}

static void on_latency_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct stream *s = arg;
	struct fake *f = s->f;
	struct evbuffer *out = evbuffer_new();
	if (!s->is_first_sent) {
		add_token(out, s->sent++);
		if (s->chat >= 0 && f->chats[s->chat].t_token == 0) {
			f->chats[s->chat].t_token = fake_now();
			f->chats[s->chat].timer_late = f->chats[s->chat].t_token - s->due;
		}
		evhttp_send_reply_chunk(s->req, out);
		evbuffer_free(out);
		s->is_first_sent = true;
		struct timeval tv = {f->rest_ms / 1000, (f->rest_ms % 1000) * 1000};
		evtimer_add(s->timer, &tv);
		return;
	}
	while (s->sent < f->n_tokens)
		add_token(out, s->sent++);
	evhttp_send_reply_chunk(s->req, out);
	evbuffer_free(out);
	stream_end(s);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct fake *f = arg;
	const char *uri = evhttp_request_get_uri(req);
	if (!strstr(uri, "/chat/completions")) {
		evhttp_send_error(req, 404, "not found");
		return;
	}
	f->llm_requests++;
	fake_note(f, "llm", "POST", "chat/completions", 200);
	long chat = chat_of(f, req);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	if (f->mode == FAKE_INSTANT && !is_streamed(req)) {
		/* The original bot's request (bench/original_bot.py): one JSON answer. */
		struct evbuffer *out = evbuffer_new();
		evbuffer_add_printf(out, "{\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
				    "\"message\":{\"role\":\"assistant\",\"content\":\"");
		for (int i = 0; i < f->n_tokens; i++) {
			char md[64];
			fake_answer_token(i, md, sizeof md);
			evbuffer_add(out, md, strlen(md));
		}
		evbuffer_add_printf(out, "\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":500,"
				    "\"completion_tokens\":%d}}", f->n_tokens);
		evhttp_add_header(h, "Content-Type", "application/json");
		evhttp_send_reply(req, 200, "OK", out);
		evbuffer_free(out);
		return;
	}
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	if (f->mode == FAKE_INSTANT) {
		struct evbuffer *out = evbuffer_new();
		for (int i = 0; i < f->n_tokens; i++)
			add_token(out, i);
		add_end(out, f->n_tokens);
		evhttp_send_reply(req, 200, "OK", out);
		evbuffer_free(out);
		return;
	}
	struct stream *s = calloc(1, sizeof *s);
	s->f = f;
	s->req = req;
	s->chat = chat;
	f->llm_streams_open++;
	if (f->llm_streams_open > f->llm_streams_peak)
		f->llm_streams_peak = f->llm_streams_open;
	evhttp_send_reply_start(req, 200, "OK");
	evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_client_gone, s);
	if (f->mode == FAKE_SLOW) {
		s->next = streams;
		if (streams)
			streams->prev = s;
		streams = s;
		return;
	}
	s->timer = evtimer_new(f->base, on_latency_timer, s);
	struct timeval tv = {f->first_ms / 1000, (f->first_ms % 1000) * 1000};
	s->due = fake_now() + f->first_ms / 1000.0;
	evtimer_add(s->timer, &tv);
}

int fake_llm_start(struct fake *f, int *port)
{
	struct evhttp *http = evhttp_new(f->base);
	if (!http)
		return -1;
	evhttp_set_timeout(http, 600);
	evhttp_set_gencb(http, on_request, f);
	if (f->mode == FAKE_SLOW) {
		ticker = event_new(f->base, -1, EV_PERSIST, on_tick, f);
		struct timeval tv = {f->token_ms / 1000, (f->token_ms % 1000) * 1000};
		event_add(ticker, &tv);
	}
	return fake_listen(f, http, port);
}
