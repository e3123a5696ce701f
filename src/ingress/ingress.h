/*
 * ingress: the ways updates reach the bot.
 *
 *  - poll: getUpdates long polling (ingress_poll.c);
 *  - serve: a webhook HTTP(S) server (ingress_serve.c);
 *  - handle / lambda: serverless, one event at a time (ingress_handle.c).
 *
 * The long-running modes share struct daemon: it runs the loop, and on
 * SIGINT/SIGTERM tells the mode to stop taking updates, lets running jobs
 * finish (at most DAEMON_DRAIN_S seconds; what is left resumes at the next
 * start from the store's journal), and stops.
 */
#ifndef TGLLM_INGRESS_H
#define TGLLM_INGRESS_H

#include <event2/event.h>
#include <stdbool.h>

#include "gate/bot.h"

#define DAEMON_DRAIN_S 10

struct daemon {
	struct bot *bot;
	struct event *sigint, *sigterm, *drain_timer;
	bool is_stopping;
	int exit_status;
	void (*stop_taking)(void *arg); /* stop accepting updates */
	void *arg;
};

/* -1 when the loop cannot be set up (logged). */
int daemon_init(struct daemon *d, struct bot *b, void (*stop_taking)(void *arg), void *arg);
/* Runs the loop until stopped; returns the exit status. */
int daemon_run(struct daemon *d);
/* Stops the loop now with status (a fatal error, already logged). */
void daemon_fail(struct daemon *d, int status);
void daemon_free(struct daemon *d);

/*
 * Learns the bot's identity, resumes unfinished updates, then long polls
 * until SIGINT or SIGTERM. Returns 0, or 1 when Telegram rejects the token.
 * Refuses to start (exit 1) while a webhook is set, unless delete_webhook.
 */
int ingress_poll_run(struct bot *b, bool delete_webhook);

/* The webhook server, until SIGINT or SIGTERM. Returns 0, or 1 on a fatal error. */
int ingress_serve_run(struct bot *b);

/*
 * Serverless: reads one event (a Yandex Cloud Functions or AWS HTTP event,
 * or a bare Update) on stdin, handles it completely within HANDLE_DEADLINE,
 * and writes the HTTP response object on stdout. Returns 0 even for bad
 * input (the response says 4xx); 1 only when nothing can be answered.
 */
int ingress_handle_run(struct bot *b);

/* The AWS Lambda custom runtime: events from AWS_LAMBDA_RUNTIME_API, one at a time, forever. */
int ingress_lambda_run(struct bot *b);

#endif
