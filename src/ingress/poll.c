/*
 * Long polling. A higher offset in getUpdates confirms every update below it
 * to Telegram (https://core.telegram.org/bots/api#getupdates), so the next
 * getUpdates goes out only once every update of the batch is journaled by
 * the gate; an update the journal did not take is asked for again (the
 * offset stays at it), after a pause. The journal also remembers handled
 * ids, so updates Telegram hands over again are not answered twice.
 *
 * Telegram serves one getUpdates consumer per bot (a second one ends the
 * first with 409), so of several instances on one store only the one that
 * leads polls (store_lead); the others stand by until it stops or dies.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingress/ingress.h"
#include "lib/backoff.h"
#include "lib/log.h"
#include "lib/metrics.h"

#define POLL_TIMEOUT_S 30
#define POLL_MARGIN_S  15 /* on top of the long-poll timeout, for the network */
#define FULL_WAIT_MS   1000

static const struct backoff poll_backoff = {1000, 30000, false};

struct poller {
	const struct ingress *in;
	struct daemon daemon;
	struct tg_call *call;
	struct event *retry_timer;
	int64_t offset;
	size_t waiting;        /* updates of the batch the gate has not answered for */
	int64_t not_journaled; /* the lowest update id of the batch the journal did not take; 0: none */
	int failures;
	bool may_delete_webhook;
	bool is_full;       /* chats_are_full() at the last poll */
	bool is_leading;    /* store_lead's last word: only then does it poll */
	bool is_resume_due; /* the journal's unfinished updates are to be queued when it leads */
};

static void poll_next(struct poller *p);

static void retry_in(struct poller *p, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if (evtimer_add(p->retry_timer, &tv) != 0) {
		log_error("poll: cannot schedule the next poll");
		daemon_fail(&p->daemon, 1);
	}
}

static long backoff(struct poller *p)
{
	return backoff_ms(&poll_backoff, ++p->failures);
}

/* The batch is journaled, or what of it is not will be asked for again. */
static void batch_done(struct poller *p)
{
	if (p->daemon.is_stopping)
		return;
	if (!p->not_journaled) {
		poll_next(p);
		return;
	}
	long ms = backoff(p);
	log_warn("poll: update=%lld and later were not journaled; asking for them again in %ld ms",
	         (long long)p->not_journaled, ms);
	p->offset = p->not_journaled;
	p->not_journaled = 0;
	retry_in(p, ms);
}

static void on_accepted(void *arg, int64_t update_id, bool is_journaled)
{
	struct poller *p = arg;
	if (!is_journaled && (!p->not_journaled || update_id < p->not_journaled))
		p->not_journaled = update_id;
	if (--p->waiting == 0)
		batch_done(p);
}

struct received {
	struct tg_update update;
	char *text;
};

/*
 * Reads the batch (every update of it, first: the count of answers to wait
 * for is known before any is handed over), moves the offset past every
 * update with an id, even one that cannot be decoded, and hands the rest to
 * the gate.
 */
static void receive_batch(struct poller *p, const json_t *list)
{
	size_t n = json_array_size(list), k = 0;
	struct received *batch = calloc(n + 1, sizeof *batch);
	if (!batch) {
		log_error("poll: out of memory reading updates; asking for them again");
		retry_in(p, backoff(p));
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *item = json_array_get(list, i);
		char err[160];
		struct tg_update *u = &batch[k].update;
		int rc = update_decode(item, u, err, sizeof err);
		if (u->update_id >= p->offset) /* past it; the last id there is stays the offset */
			p->offset = u->update_id < INT64_MAX ? u->update_id + 1 : INT64_MAX;
		if (rc != 0) {
			if (u->update_id)
				log_warn("bot: update=%lld: skipped, it cannot be decoded: %s",
				         (long long)u->update_id, err);
			else
				log_warn("poll: getUpdates listed something that is not an Update (%s)", err);
			metrics_update("other", METRICS_FAILED);
			update_clear(u);
			continue;
		}
		/* The journal keeps the update's text. */
		if (!(batch[k].text = json_dumps(item, JSON_COMPACT))) {
			log_error("bot: update=%lld: out of memory; asking for it again",
			          (long long)u->update_id);
			if (!p->not_journaled || u->update_id < p->not_journaled)
				p->not_journaled = u->update_id;
			update_clear(u);
			continue;
		}
		k++;
	}
	p->waiting = k;
	for (size_t i = 0; i < k; i++) {
		int64_t id = batch[i].update.update_id;
		if (gate_receive(p->in->gate, &batch[i].update, batch[i].text, strlen(batch[i].text),
		                 on_accepted, p) != 0)
			on_accepted(p, id, false);
		free(batch[i].text);
	}
	free(batch);
	if (k == 0)
		batch_done(p);
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
		long ms = backoff(p);
		if (res->error_code == 409)
			log_error("poll: getUpdates conflicts with a webhook or another running instance "
			          "(%s); retrying in %ld ms",
			          res->description, ms);
		else
			log_warn("poll: getUpdates failed (%ld %s); retrying in %ld ms", res->error_code,
			         res->description, ms);
		retry_in(p, ms);
		return;
	}
	if (!json_is_array(res->result)) {
		log_warn("poll: getUpdates answered something that is not a list of updates");
		retry_in(p, backoff(p));
		return;
	}
	p->failures = 0;
	receive_batch(p, res->result);
}

static void poll_next(struct poller *p)
{
	char *params;
	p->call = NULL;
	if (!p->is_leading)
		return; /* on_lead polls once this instance leads again */
	if (chats_are_full(p->in->chats)) {
		/* Telegram keeps what is not fetched: ask again once some jobs are done. */
		if (!p->is_full)
			log_warn("poll: %d updates in progress, the most taken at once; waiting before the next",
			         CHATS_MAX_BUSY);
		p->is_full = true;
		retry_in(p, FULL_WAIT_MS);
		return;
	}
	p->is_full = false;
	if (asprintf(&params, "{\"offset\":%lld,\"timeout\":%d,\"allowed_updates\":" INGRESS_ALLOWED_UPDATES "}",
	             (long long)p->offset, POLL_TIMEOUT_S) >= 0)
		p->call = tg_call(p->in->tg, "getUpdates", params, 0, 0, POLL_TIMEOUT_S + POLL_MARGIN_S,
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

static void stop_polling(struct poller *p)
{
	tg_call_cancel(p->call);
	p->call = NULL;
	evtimer_del(p->retry_timer);
}

static void stop_taking(void *arg)
{
	struct poller *p = arg;
	stop_polling(p);
	/* A leader that stops hands over at once: a standby's next try takes the lead. */
	store_lead(p->in->store, NULL, NULL);
}

static void on_lead(void *arg, bool is_leading)
{
	struct poller *p = arg;
	if (!is_leading) {
		if (p->is_leading)
			log_warn("poll: no longer leading (the lead lock's connection was lost): polling stops "
			         "until this instance leads again");
		else
			log_info("poll: standing by: another instance is polling");
		p->is_leading = false;
		p->is_resume_due = false;
		/*
		 * A long poll running on is cancelled, its answer unread: whoever leads next asks from its
		 * own offset, and an update it gets again is journaled already (not answered twice).
		 */
		stop_polling(p);
		return;
	}
	log_info("poll: leading: this instance polls");
	p->is_leading = true;
	/*
	 * A store one process uses (SQLite, S3): only an instance that leads from its start resumes the
	 * journal, the unfinished updates being those of a run over (one that took over could find the
	 * old leader's still being answered). A shared store resumes by leases instead, from the start
	 * (start_polling), whoever leads.
	 */
	if (p->is_resume_due) {
		p->is_resume_due = false;
		gate_resume(p->in->gate);
	}
	/* Else a poll is on its way: once the batch being journaled settles (batch_done), or the timer. */
	if (p->waiting == 0 && !p->call && !evtimer_pending(p->retry_timer, NULL))
		poll_next(p);
}

static void start_polling(struct poller *p)
{
	if (store_lease_ms(p->in->store) > 0) { /* only updates whose holder stopped: standing by too */
		p->is_resume_due = false;
		gate_resume(p->in->gate);
	}
	store_lead(p->in->store, on_lead, p);
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
	p->call = tg_call(p->in->tg, "deleteWebhook", NULL, 0, 0, POLL_MARGIN_S, on_webhook_deleted, p);
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
	p->call = tg_call(p->in->tg, "getWebhookInfo", NULL, 0, 0, POLL_MARGIN_S, on_webhook_info, p);
	if (!p->call)
		daemon_fail(&p->daemon, 1);
	else
		daemon_identified(&p->daemon);
}

int ingress_poll_run(const struct ingress *in, bool delete_webhook)
{
	struct poller p = {.in = in, .may_delete_webhook = delete_webhook, .is_resume_due = true};
	p.retry_timer = evtimer_new(in->base, on_retry_timer, &p);
	if (!p.retry_timer || daemon_init(&p.daemon, in, stop_taking, &p) != 0) {
		if (p.retry_timer)
			event_free(p.retry_timer);
		return 1;
	}
	int status = 1;
	if (gate_identify(in->gate, false, on_identified, &p) == 0)
		status = daemon_run(&p.daemon);
	stop_taking(&p);
	daemon_free(&p.daemon);
	event_free(p.retry_timer);
	return status;
}
