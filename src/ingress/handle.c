/*
 * Serverless: one event, handled completely, then the response. The platform
 * freezes or ends the process once the response is out, so the answer is
 * produced first; a little before HANDLE_DEADLINE whatever the model has
 * said is delivered with a notice (and stored), so a slow model costs the
 * user the rest of an answer, never the conversation. An update the journal
 * cannot take is answered 500, for Telegram to deliver it again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ingress/ingress.h"
#include "ingress/invocation.h"
#include "ingress/webhook.h"
#include "lib/buf.h"
#include "lib/log.h"

#define HURRY_MARGIN_S 5 /* seconds before the deadline to cut answers short */

struct handling {
	const struct ingress *in;
	struct invocation inv;
	struct tg_update update;
	struct event *hurry_timer;
	struct event *deadline_timer;
	int status; /* the response's, once the update is accepted */
	bool is_unidentified;
	ingress_handled_cb done;
	void *arg;
};

static void handling_free(struct handling *h)
{
	if (h->hurry_timer)
		event_free(h->hurry_timer);
	if (h->deadline_timer)
		event_free(h->deadline_timer);
	invocation_clear(&h->inv);
	update_clear(&h->update);
	free(h);
}

static void finish(struct handling *h, int status, const char *text)
{
	chats_on_idle(h->in->chats, NULL, NULL);
	/* Out of time, the gate may still be at work for h: under lambda, the loop goes on after this. */
	gate_forget(h->in->gate, h);
	ingress_handled_cb done = h->done;
	void *arg = h->arg;
	handling_free(h);
	done(arg, status, text);
}

static void finish_accepted(struct handling *h)
{
	if (h->status == 200)
		finish(h, 200, "ok");
	else if (h->is_unidentified)
		finish(h, 500, "the bot cannot identify itself");
	else
		finish(h, 500, "the update could not be journaled");
}

static void on_idle(void *arg)
{
	finish_accepted(arg);
}

static void on_accepted(void *arg, int64_t update_id, bool is_journaled)
{
	struct handling *h = arg;
	(void)update_id;
	/* Not 200 when it is not journaled: Telegram delivers it again, once the journal may work. */
	h->status = is_journaled ? 200 : 500;
	if (chats_busy(h->in->chats) == 0)
		finish_accepted(h); /* a repeat, or nothing for the bot to do */
}

static void on_hurry(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct handling *h = arg;
	chats_hurry(h->in->chats);
}

static void on_abandoned(void *arg)
{
	/* Not 200: Telegram then delivers the update again, to an invocation with more luck. */
	finish(arg, 503, "out of time");
}

static void on_gate_abandoned(void *arg)
{
	struct handling *h = arg;
	chats_abandon(h->in->chats, on_abandoned, h);
}

static void on_deadline(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct handling *h = arg;
	log_error("handle: the deadline passed with %zu updates unfinished", chats_busy(h->in->chats));
	chats_on_idle(h->in->chats, NULL, NULL);
	/* The update may still wait for the bot's identity in the gate (a hanging getMe): released first. */
	if (!gate_abandon(h->in->gate, on_gate_abandoned, h))
		chats_abandon(h->in->chats, on_abandoned, h);
}

static void on_identified(void *arg, int status)
{
	struct handling *h = arg;
	/* The gate refuses the update too (on_accepted); this only names why. */
	h->is_unidentified = status != 0;
}

static int arm(struct handling *h, struct event **ev, event_callback_fn cb, double seconds)
{
	long us = seconds > 0 ? (long)(seconds * 1e6) : 0;
	struct timeval tv = {us / 1000000, us % 1000000};
	*ev = evtimer_new(h->in->base, cb, h);
	return *ev && evtimer_add(*ev, &tv) == 0 ? 0 : -1;
}

void ingress_handle_event(const struct ingress *in, const char *input, size_t len, double deadline_s,
                          ingress_handled_cb done, void *arg)
{
	char err[160];
	struct handling *h = calloc(1, sizeof *h);
	if (!h) {
		done(arg, 500, "out of memory");
		return;
	}
	h->in = in;
	h->status = 200;
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
	if (!webhook_secret_matches(in->cfg->webhook_secret, h->inv.secret)) {
		log_warn("handle: a request without the right secret token was refused");
		finish(h, 401, "unauthorized");
		return;
	}
	/* Read before the bot identifies itself, which may cost a call to Telegram. */
	char *mended;
	switch (ingress_read(h->inv.body, h->inv.body_len, &h->update, &mended)) {
	case INGRESS_NOT_UPDATE:
		log_warn("handle: the body is not a Telegram Update");
		finish(h, 400, "not a Telegram update");
		return;
	case INGRESS_BROKEN:
		finish(h, 200, "skipped");
		return;
	case INGRESS_UPDATE:
		break;
	}
	if (mended) { /* what the journal keeps */
		free(h->inv.body);
		h->inv.body = mended;
		h->inv.body_len = strlen(mended);
	}
	double hurry_s = deadline_s > 2 * HURRY_MARGIN_S ? deadline_s - HURRY_MARGIN_S : deadline_s * 0.7;
	if (arm(h, &h->hurry_timer, on_hurry, hurry_s) != 0 ||
	    arm(h, &h->deadline_timer, on_deadline, deadline_s) != 0 ||
	    gate_identify(in->gate, true, on_identified, h) != 0) {
		finish(h, 500, "cannot set up the invocation");
		return;
	}
	/*
	 * Journaled at once, beside the identity's round trips: a cold start
	 * pays for the longer of the two, not both. The gate routes it once
	 * the bot knows who it is.
	 */
	chats_on_idle(in->chats, on_idle, h);
	if (gate_receive(in->gate, &h->update, h->inv.body, h->inv.body_len, on_accepted, h) != 0)
		finish(h, 500, "out of memory");
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

int ingress_handle_run(const struct ingress *in)
{
	struct buf input;
	buf_init(&input, INGRESS_MAX_EVENT);
	struct stdin_run run = {.base = in->base};
	if (read_all(STDIN_FILENO, &input) != 0) {
		log_error("handle: cannot read the event from stdin (or it is over %u bytes)",
		          INGRESS_MAX_EVENT);
		run.response = invocation_response(413, "the event is too large");
	} else {
		ingress_handle_event(in, buf_str(&input), input.len, (double)in->cfg->handle_deadline_s,
		                     on_handled, &run);
		if (!run.is_done && event_base_dispatch(in->base) < 0)
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
