/*
 * Long polling. An update is journaled in the store before the next
 * getUpdates confirms it to Telegram (a higher offset confirms every update
 * below it: https://core.telegram.org/bots/api#getupdates), so a crash
 * between the two loses nothing; the journal also remembers handled ids, so
 * updates Telegram hands over again are not answered twice.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "ingress.h"
#include "log.h"
#include "tg.h"

#define POLL_TIMEOUT_S 30
#define POLL_MARGIN_S 15    /* on top of the long-poll timeout, for the network */
#define DRAIN_TIMEOUT_S 10  /* how long running replies may finish at shutdown */
#define MAX_BACKOFF_S 30

struct poller {
	struct bot *bot;
	struct tg_call *call;
	struct event *retry_timer;
	struct event *drain_timer;
	struct event *sigint, *sigterm;
	int64_t offset;
	size_t unaccepted; /* updates of the last batch not yet journaled */
	int failures;
	bool is_stopping;
	int exit_status;
};

static void poll_next(struct poller *p);

static void stop_loop(struct poller *p)
{
	event_base_loopbreak(p->bot->base);
}

/* True (and the loop told to stop) when Telegram says the token is wrong. */
static bool is_token_rejected(struct poller *p, const struct tg_result *res)
{
	if (res->error_code != 401 && res->error_code != 404)
		return false;
	log_error("poll: Telegram rejects the bot token (%ld %s): check TG_BOT_TOKEN", res->error_code,
		  res->description);
	p->exit_status = 1;
	stop_loop(p);
	return true;
}

static void retry_in(struct poller *p, long seconds)
{
	struct timeval tv = {seconds, 0};
	if (evtimer_add(p->retry_timer, &tv) != 0) {
		log_error("poll: cannot schedule the next poll");
		p->exit_status = 1;
		stop_loop(p);
	}
}

static long backoff(struct poller *p)
{
	long s = 1L << (p->failures < 5 ? p->failures : 5);
	p->failures++;
	return s < MAX_BACKOFF_S ? s : MAX_BACKOFF_S;
}

static void on_accepted(void *arg)
{
	struct poller *p = arg;
	if (--p->unaccepted == 0 && !p->is_stopping)
		poll_next(p);
}

static void on_updates(void *arg, const struct tg_result *res)
{
	struct poller *p = arg;
	p->call = NULL;
	if (!res->ok) {
		if (is_token_rejected(p, res))
			return;
		long wait = backoff(p);
		if (res->error_code == 409)
			log_error("poll: getUpdates conflicts with a webhook or another running instance "
				  "(%s); retrying in %ld s", res->description, wait);
		else
			log_warn("poll: getUpdates failed (%ld %s); retrying in %ld s", res->error_code,
				 res->description, wait);
		retry_in(p, wait);
		return;
	}
	if (!json_is_array(res->result)) {
		log_warn("poll: getUpdates answered something that is not a list of updates");
		retry_in(p, backoff(p));
		return;
	}
	p->failures = 0;
	size_t n = json_array_size(res->result);
	if (n == 0) {
		poll_next(p);
		return;
	}
	/* All ids first: the offset must move past even the updates that fail to decode. */
	for (size_t i = 0; i < n; i++) {
		json_t *id = json_object_get(json_array_get(res->result, i), "update_id");
		if (json_is_integer(id) && json_integer_value(id) >= p->offset)
			p->offset = json_integer_value(id) + 1;
	}
	p->unaccepted = n;
	for (size_t i = 0; i < n; i++)
		bot_receive(p->bot, json_array_get(res->result, i), on_accepted, p);
}

static void poll_next(struct poller *p)
{
	json_t *params = json_pack("{s:I, s:i, s:[s]}", "offset", (json_int_t)p->offset, "timeout",
				   POLL_TIMEOUT_S, "allowed_updates", "message");
	p->call = tg_call(p->bot->tg, "getUpdates", params, 0, 0, POLL_TIMEOUT_S + POLL_MARGIN_S, on_updates, p);
	if (!p->call)
		retry_in(p, backoff(p));
}

static void ask_me(struct poller *p);

/* The next step after a wait: learn who the bot is, then poll. */
static void on_retry_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct poller *p = arg;
	if (p->bot->self_username)
		poll_next(p);
	else
		ask_me(p);
}

static void on_idle(void *arg)
{
	struct poller *p = arg;
	if (p->is_stopping)
		stop_loop(p);
}

static void on_drain_timeout(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct poller *p = arg;
	log_warn("poll: %zu updates still in progress after %d s; they resume at the next start",
		 bot_busy(p->bot), DRAIN_TIMEOUT_S);
	stop_loop(p);
}

static void on_signal(evutil_socket_t sig, short kind, void *arg)
{
	(void)kind;
	struct poller *p = arg;
	if (p->is_stopping) {
		log_warn("poll: second signal, stopping now");
		stop_loop(p);
		return;
	}
	p->is_stopping = true;
	log_info("poll: %s received, stopping (%zu updates in progress)", sig == SIGINT ? "SIGINT" : "SIGTERM",
		 bot_busy(p->bot));
	tg_call_cancel(p->call);
	p->call = NULL;
	evtimer_del(p->retry_timer);
	if (bot_busy(p->bot) == 0) {
		stop_loop(p);
		return;
	}
	struct timeval tv = {DRAIN_TIMEOUT_S, 0};
	if (evtimer_add(p->drain_timer, &tv) != 0)
		stop_loop(p);
}

static void on_me(void *arg, const struct tg_result *res)
{
	struct poller *p = arg;
	p->call = NULL;
	if (!res->ok) {
		if (is_token_rejected(p, res))
			return;
		long wait = backoff(p);
		log_warn("poll: getMe failed (%ld %s); retrying in %ld s", res->error_code, res->description,
			 wait);
		retry_in(p, wait);
		return;
	}
	json_t *id = json_object_get(res->result, "id");
	const char *username = json_string_value(json_object_get(res->result, "username"));
	if (!json_is_integer(id) || !username || !(p->bot->self_username = strdup(username))) {
		log_error("poll: getMe did not say who the bot is");
		p->exit_status = 1;
		stop_loop(p);
		return;
	}
	p->bot->self_id = json_integer_value(id);
	p->failures = 0;
	log_info("poll: running as @%s (id %lld)", username, (long long)p->bot->self_id);
	bot_resume(p->bot);
	poll_next(p);
}

static void ask_me(struct poller *p)
{
	p->call = tg_call(p->bot->tg, "getMe", NULL, 0, 0, POLL_MARGIN_S, on_me, p);
	if (!p->call)
		retry_in(p, backoff(p));
}

int ingress_poll_run(struct bot *b)
{
	struct poller p = {.bot = b};
	struct event_base *base = b->base;
	p.retry_timer = evtimer_new(base, on_retry_timer, &p);
	p.drain_timer = evtimer_new(base, on_drain_timeout, &p);
	p.sigint = evsignal_new(base, SIGINT, on_signal, &p);
	p.sigterm = evsignal_new(base, SIGTERM, on_signal, &p);
	if (!p.retry_timer || !p.drain_timer || !p.sigint || !p.sigterm || evsignal_add(p.sigint, NULL) ||
	    evsignal_add(p.sigterm, NULL)) {
		log_error("poll: cannot set up the event loop");
		p.exit_status = 1;
		goto out;
	}
	bot_on_idle(b, on_idle, &p);
	ask_me(&p);
	if (event_base_dispatch(base) < 0) {
		log_error("poll: the event loop failed");
		p.exit_status = 1;
	}
	log_info("poll: stopped");
out:
	tg_call_cancel(p.call);
	bot_on_idle(b, NULL, NULL);
	if (p.retry_timer)
		event_free(p.retry_timer);
	if (p.drain_timer)
		event_free(p.drain_timer);
	if (p.sigint)
		event_free(p.sigint);
	if (p.sigterm)
		event_free(p.sigterm);
	return p.exit_status;
}
