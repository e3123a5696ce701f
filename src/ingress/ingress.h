/*
 * ingress: the ways updates reach the bot, the first stage of the pipeline.
 * Each hands the updates it gets to the gate (gate/gate.h) and tells
 * Telegram an update arrived (the 200, the next offset, the serverless
 * response) only once the gate says it is journaled.
 *
 *  - poll: getUpdates long polling (ingress/poll.c);
 *  - serve: a webhook HTTP(S) server (ingress/serve.c);
 *  - handle / lambda: serverless, one event at a time (ingress/handle.c,
 *    ingress/lambda.c).
 *
 * The long-running modes share struct daemon: it runs the loop, and on
 * SIGINT/SIGTERM tells the mode to stop taking updates, lets the updates
 * still being journaled settle (their senders get their answer) and running jobs
 * finish (at most DAEMON_DRAIN_S seconds; what is left resumes at the next
 * start from the store's journal), and stops. With METRICS_LISTEN it also
 * serves /healthz and /metrics there.
 */
#ifndef TGLLM_INGRESS_H
#define TGLLM_INGRESS_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "chat/chat.h"
#include "config.h"
#include "gate/gate.h"
#include "ingress/httpd.h"
#include "lib/http.h"
#include "telegram/tg.h"
#include "telegram/update.h"

#define DAEMON_DRAIN_S 10

/* The kinds of update the bot asks Telegram for (getUpdates, setWebhook): an explicit list, so none is missed. */
#define INGRESS_ALLOWED_UPDATES "[\"message\",\"callback_query\",\"stopped_message_generation\"]"

/* What an ingress works with; all borrowed. */
struct ingress {
	struct event_base *base;
	const struct config *cfg;
	struct gate *gate;
	struct chats *chats;
	struct tg_client *tg;     /* poll: getUpdates */
	struct store *store;      /* poll: which instance leads (store_lead) */
	struct http_client *http; /* lambda: the runtime API */
};

enum ingress_read {
	INGRESS_UPDATE,     /* decoded: for gate_receive */
	INGRESS_BROKEN,     /* an Update (it has an update_id) that cannot be decoded: skipped, logged */
	INGRESS_NOT_UPDATE, /* not an Update at all */
};

/*
 * Decodes the JSON text of an Update into u (cleared unless INGRESS_UPDATE),
 * logging what it skips. Text that holds bytes that are not UTF-8, \u0000 or
 * lone surrogates is read mended (U+FFFD): then *mended is that text, NUL
 * terminated, for the journal to keep (the caller frees it), else NULL.
 */
enum ingress_read ingress_read(const char *text, size_t len, struct tg_update *u, char **mended);

/* The command menu in both languages (telegram/commands.h), kept in step with the bot's commands. */
struct ingress_menu_slot {
	struct ingress_menu *menu;
	struct tg_menu_sync *sync; /* NULL once over */
};

struct ingress_menu {
	struct ingress_menu_slot slots[2]; /* the default (English), Russian */
	int pending;
	void (*done)(void *arg); /* once both are over, however they went; may be NULL */
	void *arg;
};

/* Starts both syncs; done runs once both are over (at once when neither can start). */
void ingress_menu_start(struct ingress_menu *m, struct tg_client *tg, void (*done)(void *arg), void *arg);
/* Stops what is still running; done does not run. */
void ingress_menu_cancel(struct ingress_menu *m);

struct daemon {
	const struct ingress *in;
	struct event *sigint, *sigterm, *drain_timer;
	struct httpd *probes; /* METRICS_LISTEN's server, or NULL */
	struct ingress_menu menu;
	bool is_stopping;
	int exit_status;
	void (*stop_taking)(void *arg); /* stop accepting updates */
	void *arg;
};

/* -1 when the loop cannot be set up (logged). */
int daemon_init(struct daemon *d, const struct ingress *in, void (*stop_taking)(void *arg), void *arg);
/*
 * GET (or HEAD) /healthz, and /metrics when with_metrics: answers them and
 * returns true; false for any other path (the request is still the
 * caller's). No secret is asked for: put them on METRICS_LISTEN, an
 * address the public cannot reach, when they must not be public.
 */
bool daemon_answer_probe(struct daemon *d, struct httpd_request *req, bool with_metrics);
/* Runs the loop until stopped; returns the exit status. */
int daemon_run(struct daemon *d);
/* The bot knows who it is: the command menu is brought up to date (in the background). */
void daemon_identified(struct daemon *d);
/* Stops the loop now with status (a fatal error, already logged). */
void daemon_fail(struct daemon *d, int status);
void daemon_free(struct daemon *d);

/*
 * Learns the bot's identity, then waits to lead (store_lead: of several
 * instances on one PostgreSQL store one polls, the others stand by, still
 * serving METRICS_LISTEN), resumes unfinished updates, and long polls while
 * it leads, until SIGINT or SIGTERM. Returns 0, or 1 when Telegram rejects
 * the token. Refuses to start (exit 1) while a webhook is set, unless
 * delete_webhook.
 */
int ingress_poll_run(const struct ingress *in, bool delete_webhook);

/*
 * The webhook server, until SIGINT or SIGTERM. An update is answered 200
 * once it is journaled (5xx when it cannot be: Telegram tries again).
 * Returns 0, or 1 on a fatal error.
 */
int ingress_serve_run(const struct ingress *in);

/*
 * Serverless: reads one event (a Yandex Cloud Functions or AWS HTTP event,
 * or a bare Update) on stdin, handles it completely within HANDLE_DEADLINE,
 * and writes the HTTP response object on stdout. Returns 0 even for bad
 * input (the response says 4xx); 1 only when nothing can be answered.
 */
int ingress_handle_run(const struct ingress *in);

/* The largest serverless event read. */
#define INGRESS_MAX_EVENT (8u << 20)

/* The HTTP status and body of a serverless response. */
typedef void (*ingress_handled_cb)(void *arg, int status, const char *text);
/*
 * handle's and lambda's work: one event (input, borrowed for the call),
 * handled within deadline_s seconds; done gets the response, at once for
 * bad input, else from the loop.
 */
void ingress_handle_event(const struct ingress *in, const char *input, size_t len, double deadline_s,
                          ingress_handled_cb done, void *arg);

/* The AWS Lambda custom runtime: events from AWS_LAMBDA_RUNTIME_API, one at a time, forever. */
int ingress_lambda_run(const struct ingress *in);

#endif
