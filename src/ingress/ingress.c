/* What the ingresses share: reading an update, and for the long-running ones signals and a bounded drain. */
#include "ingress/ingress.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "chat/text.h"
#include "lib/buf.h"
#include "lib/jsonr.h"
#include "lib/log.h"
#include "lib/metrics.h"

#define METRICS_MAX_TEXT (1u << 20) /* the exposition is some 10 kB */

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
	metrics_update("other", METRICS_FAILED);
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

bool daemon_answer_probe(struct daemon *d, struct httpd_request *req, bool with_metrics)
{
	const char *path = httpd_path(req), *method = httpd_method(req);
	bool is_metrics = with_metrics && strcmp(path, "/metrics") == 0;
	if (!is_metrics && strcmp(path, "/healthz") != 0)
		return false;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		httpd_reply(req, 405, "use GET", "GET, HEAD");
		return true;
	}
	if (!is_metrics) {
		httpd_reply(req, 200, d->is_stopping ? "stopping" : "ok", NULL);
		return true;
	}
	size_t running = chats_running(d->in->chats);
	struct metrics_gauges g = {running, chats_busy(d->in->chats) - running};
	struct buf text;
	buf_init(&text, METRICS_MAX_TEXT);
	if (metrics_render(&text, &g) == 0)
		httpd_reply_as(req, 200, "text/plain; version=0.0.4; charset=utf-8", text.data, text.len);
	else
		httpd_reply(req, 500, "out of memory", NULL);
	buf_free(&text);
	return true;
}

static void on_probe(void *arg, struct httpd_request *req)
{
	if (!daemon_answer_probe(arg, req, true))
		httpd_reply(req, 404, "not found: /metrics and /healthz are here", NULL);
}

static int listen_for_probes(struct daemon *d)
{
	const struct config *cfg = d->in->cfg;
	struct httpd_options o = {
	    .host = cfg->metrics_host ? cfg->metrics_host : "0.0.0.0",
	    .port = cfg->metrics_port,
	    .max_head = 8u << 10,
	    .deadline_s = 5,
	    .max_connections = 16, /* a scraper or two, and a health checker */
	};
	if (!(d->probes = httpd_new(d->in->base, &o, on_probe, d))) {
		log_error("cannot listen on METRICS_LISTEN %s:%d (is the port taken, or the address not this "
		          "host's?)",
		          o.host, o.port);
		return -1;
	}
	log_info("metrics: http://%s:%d/metrics and /healthz", o.host, httpd_port(d->probes, NULL));
	return 0;
}

static void on_menu_synced(void *arg, bool ok)
{
	struct ingress_menu_slot *slot = arg;
	struct ingress_menu *m = slot->menu;
	(void)ok; /* logged by telegram/commands.c: a stale menu is no reason to stop */
	slot->sync = NULL;
	if (--m->pending == 0 && m->done)
		m->done(m->arg);
}

void ingress_menu_start(struct ingress_menu *m, struct tg_client *tg, void (*done)(void *arg), void *arg)
{
	*m = (struct ingress_menu){.done = done, .arg = arg};
	static const char *const languages[2] = {"", "ru"};
	for (int i = 0; i < 2; i++) {
		size_t n;
		const struct tg_command *commands = text_commands(i == 1, &n);
		m->slots[i].menu = m;
		m->slots[i].sync = tg_menu_sync(tg, languages[i], commands, n, on_menu_synced, &m->slots[i]);
		m->pending += m->slots[i].sync != NULL;
	}
	if (m->pending == 0 && done)
		done(arg);
}

void ingress_menu_cancel(struct ingress_menu *m)
{
	for (int i = 0; i < 2; i++) {
		tg_menu_cancel(m->slots[i].sync);
		m->slots[i].sync = NULL;
	}
	m->pending = 0;
}

void daemon_identified(struct daemon *d)
{
	ingress_menu_start(&d->menu, d->in->tg, NULL, NULL);
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
	if (in->cfg->metrics_port && listen_for_probes(d) != 0) {
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
	httpd_free(d->probes);
	ingress_menu_cancel(&d->menu);
	*d = (struct daemon){0};
}
