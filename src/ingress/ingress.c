/* What the ingresses share: reading an update, and for the long-running ones signals and a bounded drain. */
#include "ingress/ingress.h"

#include <signal.h>
#include <stdlib.h>

#include "lib/jsonr.h"
#include "lib/log.h"

enum ingress_read ingress_read(const char *text, size_t len, struct tg_update *u, char **mended)
{
	char err[160];
	*mended = NULL;
	if (update_parse(text, len, u, err, sizeof err) == 0)
		return INGRESS_UPDATE;
	size_t mended_len;
	char *m = jsonr_mend(text, len, &mended_len, NULL);
	char ignored[160];
	if (m && update_parse(m, mended_len, u, ignored, sizeof ignored) == 0) {
		log_warn(
		    "bot: update=%lld: text that is not UTF-8, \\u0000 or a lone surrogate read as U+FFFD",
		    (long long)u->update_id);
		*mended = m;
		return INGRESS_UPDATE;
	}
	free(m);
	int64_t id = u->update_id;
	update_clear(u);
	if (!id)
		return INGRESS_NOT_UPDATE;
	log_warn("bot: update=%lld: skipped, it cannot be decoded: %s", (long long)id, err);
	return INGRESS_BROKEN;
}

/* Nothing left to finish: no job running, no update still being journaled. */
static bool is_idle(const struct daemon *d)
{
	return chats_busy(d->in->chats) == 0 && gate_is_settled(d->in->gate);
}

static void on_idle(void *arg)
{
	struct daemon *d = arg;
	if (d->is_stopping && is_idle(d))
		event_base_loopbreak(d->in->base);
}

static void on_drain_timeout(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct daemon *d = arg;
	log_warn("%zu updates still in progress after %d s; they resume at the next start",
	         chats_busy(d->in->chats), DAEMON_DRAIN_S);
	event_base_loopbreak(d->in->base);
}

static void on_signal(evutil_socket_t sig, short kind, void *arg)
{
	(void)kind;
	struct daemon *d = arg;
	if (d->is_stopping) {
		log_warn("second signal, stopping now");
		event_base_loopbreak(d->in->base);
		return;
	}
	d->is_stopping = true;
	log_info("%s received, stopping (%zu updates in progress)", sig == SIGINT ? "SIGINT" : "SIGTERM",
	         chats_busy(d->in->chats));
	d->stop_taking(d->arg);
	if (is_idle(d)) {
		event_base_loopbreak(d->in->base);
		return;
	}
	struct timeval tv = {DAEMON_DRAIN_S, 0};
	if (evtimer_add(d->drain_timer, &tv) != 0)
		event_base_loopbreak(d->in->base);
}

int daemon_init(struct daemon *d, const struct ingress *in, void (*stop_taking)(void *arg), void *arg)
{
	*d = (struct daemon){.in = in, .stop_taking = stop_taking, .arg = arg};
	struct event_base *base = in->base;
	d->drain_timer = evtimer_new(base, on_drain_timeout, d);
	d->sigint = evsignal_new(base, SIGINT, on_signal, d);
	d->sigterm = evsignal_new(base, SIGTERM, on_signal, d);
	if (!d->drain_timer || !d->sigint || !d->sigterm || evsignal_add(d->sigint, NULL) != 0 ||
	    evsignal_add(d->sigterm, NULL) != 0) {
		log_error("cannot set up the event loop");
		daemon_free(d);
		return -1;
	}
	chats_on_idle(in->chats, on_idle, d);
	gate_on_settled(in->gate, on_idle, d);
	return 0;
}

int daemon_run(struct daemon *d)
{
	if (event_base_dispatch(d->in->base) < 0) {
		log_error("the event loop failed");
		d->exit_status = 1;
	}
	log_info("stopped");
	return d->exit_status;
}

void daemon_fail(struct daemon *d, int status)
{
	d->exit_status = status;
	event_base_loopbreak(d->in->base);
}

void daemon_free(struct daemon *d)
{
	if (d->in) {
		chats_on_idle(d->in->chats, NULL, NULL);
		gate_on_settled(d->in->gate, NULL, NULL);
	}
	if (d->drain_timer)
		event_free(d->drain_timer);
	if (d->sigint)
		event_free(d->sigint);
	if (d->sigterm)
		event_free(d->sigterm);
	*d = (struct daemon){0};
}
