/*
 * The benchmark's fake Telegram Bot API (fake_tg.c), fake model
 * (fake_llm.c) and fake S3 (fake_s3.c): one process, one libevent loop,
 * three ports on 127.0.0.1, so
 * the time a token leaves the model and the time the text reaches Telegram
 * are read from the same CLOCK_MONOTONIC.
 *
 * Conversations are numbered 0..n_chats-1; chat k has Telegram id
 * FAKE_CHAT_BASE + k and each update's text carries "[c=<id>]", which the
 * model finds in the request to know whose answer it streams.
 */
#ifndef BENCH_FAKE_H
#define BENCH_FAKE_H

#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FAKE_CHAT_BASE 100000

enum fake_mode {
	FAKE_INSTANT, /* whole answer at once (figures 1, 2) */
	FAKE_SLOW,    /* one token every token_ms for n_tokens (figure 3) */
	FAKE_LATENCY, /* first token after first_ms, the rest rest_ms later (figure 4) */
};

enum fake_feed {
	FAKE_FEED_NONE,  /* handle mode: no getUpdates traffic */
	FAKE_FEED_BURST, /* every update at once, on SIGUSR1 */
	FAKE_FEED_RATE,  /* rate per second from SIGUSR1 on */
	FAKE_FEED_SEQ,   /* the next update once the previous answer is in, plus gap_ms */
};

struct fake_chat {
	double t_token;   /* the model wrote the first token (0: not yet) */
	double t_visible; /* the first draft or message with text arrived */
	double timer_late; /* FAKE_LATENCY: how late the first-token timer fired (the machine's noise) */
	long answers;
	long bad_answers; /* a final text that is not the answer the model streamed */
};

struct fake {
	struct event_base *base;
	enum fake_mode mode;
	enum fake_feed feed;
	long n_updates, n_chats;
	double rate;
	int token_ms, n_tokens, first_ms, rest_ms, gap_ms;
	const char *stats_path;
	FILE *log; /* --log: one line per request answered, "run ms service method target status" */
	long run;  /* runs of figure 1 (fake_s3's restore), for the log */
	double t_run;

	long released; /* updates 1..released may be handed out */
	long answered; /* sendMessage calls carrying a final answer */
	double t_go, t_done;
	long calls_get_updates, calls_draft, calls_send, calls_edit, calls_action, calls_other;
	long llm_requests, llm_streams_open, llm_streams_peak;
	struct fake_chat *chats;
};

double fake_now(void);
int fake_listen(struct fake *f, struct evhttp *http, int *port);

/* The model's answer for a conversation: Markdown as streamed, and the plain text Telegram shows. */
void fake_answer_token(int i, char *md, size_t mdlen);
size_t fake_answer_plain(int n_tokens, char *out, size_t len);

int fake_llm_start(struct fake *f, int *port);
int fake_s3_start(struct fake *f, int *port);

/* A request answered, for --log; target is a key, a Bot API method or a path. */
void fake_note(struct fake *f, const char *service, const char *method, const char *target, int status);
/* A new run of figure 1 begins (its requests are numbered apart in the log). */
void fake_next_run(struct fake *f);

#endif
