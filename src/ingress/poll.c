/*
 * Long polling. An update is journaled in the store before the next
 * getUpdates confirms it to Telegram (a higher offset confirms every update
 * below it: https://core.telegram.org/bots/api#getupdates), so a crash
 * between the two loses nothing; the journal also remembers handled ids, so
 * updates Telegram hands over again are not answered twice.
 */
#include <stdlib.h>
#include <string.h>

#include "ingress/ingress.h"
#include "lib/jsonr.h"
#include "lib/log.h"
#include "telegram/tg.h"

#define POLL_TIMEOUT_S 30
#define POLL_MARGIN_S 15 /* on top of the long-poll timeout, for the network */
#define MAX_BACKOFF_S 30

struct poller {
	struct bot *bot;
	struct daemon daemon;
	struct tg_call *call;
	struct event *retry_timer;
	int64_t offset;
	size_t unaccepted; /* updates of the last batch not yet journaled */
	int failures;
	bool may_delete_webhook;
};

static void poll_next(struct poller *p);

static void retry_in(struct poller *p, long seconds)
{
	struct timeval tv = {seconds, 0};
	if (evtimer_add(p->retry_timer, &tv) != 0) {
		log_error("poll: cannot schedule the next poll");
		daemon_fail(&p->daemon, 1);
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
	if (--p->unaccepted == 0 && !p->daemon.is_stopping)
		poll_next(p);
}

/* The offset moves past every update with an id, even one that fails to decode. */
static void receive(struct poller *p, const char *update, size_t len)
{
	p->unaccepted++;
	int64_t id = bot_receive(p->bot, update, len, on_accepted, p);
	if (id >= p->offset)
		p->offset = id + 1;
}

static void on_updates(void *arg, const struct tg_result *res)
{
	struct poller *p = arg;
	p->call = NULL;
	if (!res->ok) {
		if (tg_is_token_rejected(res)) {
			daemon_fail(&p->daemon, 1);
			return;
		}
		long wait = backoff(p);
		if (res->error_code == 409)
			log_error("poll: getUpdates conflicts with a webhook or another running instance "
				  "(%s); retrying in %ld s",
				  res->description, wait);
		else
			log_warn("poll: getUpdates failed (%ld %s); retrying in %ld s", res->error_code,
				 res->description, wait);
		retry_in(p, wait);
		return;
	}
	if (!res->list && !json_is_array(res->result)) {
		log_warn("poll: getUpdates answered something that is not a list of updates");
		retry_in(p, backoff(p));
		return;
	}
	p->failures = 0;
	/* One more than handed over: the next poll waits until the offset has passed them all. */
	p->unaccepted = 1;
	if (res->list) {
		struct jsonr r;
		const char *update;
		size_t len;
		jsonr_init(&r, res->list, res->list_len);
		if (jsonr_take(&r, '[') && !jsonr_take(&r, ']'))
			do {
				if (!jsonr_span(&r, 1, &update, &len))
					break; /* not met: tg checked the list */
				receive(p, update, len);
			} while (jsonr_take(&r, ','));
	} else {
		for (size_t i = 0; i < json_array_size(res->result); i++) {
			char *update = json_dumps(json_array_get(res->result, i), JSON_COMPACT | JSON_ENCODE_ANY);
			if (!update) {
				log_error("poll: out of memory reading an update; it comes again after a restart");
				continue;
			}
			receive(p, update, strlen(update));
			free(update);
		}
	}
	on_accepted(p);
}

static void poll_next(struct poller *p)
{
	char *params;
	p->call = NULL;
	if (asprintf(&params, "{\"offset\":%lld,\"timeout\":%d,\"allowed_updates\":[\"message\"]}",
		     (long long)p->offset, POLL_TIMEOUT_S) >= 0)
		p->call = tg_call(p->bot->tg, "getUpdates", params, 0, 0, POLL_TIMEOUT_S + POLL_MARGIN_S,
				  on_updates, p);
	if (!p->call)
		retry_in(p, backoff(p));
}

static void on_retry_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	poll_next(arg);
}

static void stop_taking(void *arg)
{
	struct poller *p = arg;
	tg_call_cancel(p->call);
	p->call = NULL;
	evtimer_del(p->retry_timer);
}

static void start_polling(struct poller *p)
{
	bot_resume(p->bot);
	poll_next(p);
}

static void on_webhook_deleted(void *arg, const struct tg_result *res)
{
	struct poller *p = arg;
	p->call = NULL;
	if (!res->ok) {
		log_error("poll: deleteWebhook failed (%ld %s)", res->error_code, res->description);
		daemon_fail(&p->daemon, 1);
		return;
	}
	log_info("poll: the webhook is deleted");
	start_polling(p);
}

/* getUpdates does not work while a webhook is set; a silent switch would surprise whoever set it. */
static void on_webhook_info(void *arg, const struct tg_result *res)
{
	struct poller *p = arg;
	p->call = NULL;
	const char *url = json_string_value(json_object_get(res->result, "url"));
	if (!res->ok || !url || !*url) {
		if (!res->ok)
			log_warn("poll: getWebhookInfo failed (%ld %s); polling anyway", res->error_code,
				 res->description);
		start_polling(p);
		return;
	}
	if (!p->may_delete_webhook) {
		log_error("poll: a webhook is set (%s), so long polling cannot work: run 'tgllm "
			  "delete-webhook' or start with 'tgllm poll --delete-webhook'",
			  url);
		daemon_fail(&p->daemon, 1);
		return;
	}
	p->call = tg_call(p->bot->tg, "deleteWebhook", NULL, 0, 0, POLL_MARGIN_S, on_webhook_deleted, p);
	if (!p->call)
		daemon_fail(&p->daemon, 1);
}

static void on_identified(void *arg, int status)
{
	struct poller *p = arg;
	if (status != 0) {
		daemon_fail(&p->daemon, 1);
		return;
	}
	p->call = tg_call(p->bot->tg, "getWebhookInfo", NULL, 0, 0, POLL_MARGIN_S, on_webhook_info, p);
	if (!p->call)
		daemon_fail(&p->daemon, 1);
}

int ingress_poll_run(struct bot *b, bool delete_webhook)
{
	struct poller p = {.bot = b, .may_delete_webhook = delete_webhook};
	p.retry_timer = evtimer_new(b->base, on_retry_timer, &p);
	if (!p.retry_timer || daemon_init(&p.daemon, b, stop_taking, &p) != 0) {
		if (p.retry_timer)
			event_free(p.retry_timer);
		return 1;
	}
	bot_identify(b, false, on_identified, &p);
	int status = daemon_run(&p.daemon);
	stop_taking(&p);
	daemon_free(&p.daemon);
	event_free(p.retry_timer);
	return status;
}
