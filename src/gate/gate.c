#include "gate/gate.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/settings.h"
#include "chat/text.h"
#include "chat/usage.h"
#include "gate/route.h"
#include "lib/backoff.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "telegram/send.h"

#define IDENTITY_KEY    "bot_identity" /* setting of scope 0: "<id> <username>" */
#define TOLD_MAX        64 /* updates whose user was told the journal failed, remembered so as to tell once */
#define GETME_TIMEOUT_S 15

static const struct backoff identify_backoff = {1000, 32000, false};

struct identify;

struct gate {
	struct gate_env env;
	int64_t self_id;           /* from getMe */
	char *self_username;       /* from getMe, without '@' */
	struct identify *identify; /* a getMe in progress */
	struct receipt *receipts, *last; /* updates not yet settled, oldest first (doubly linked) */
	void (*on_settled)(void *arg);
	void *settled_arg;
	int64_t told[TOLD_MAX]; /* a ring of update ids */
	size_t n_told;
	size_t n_releasing; /* gate_abandon's releases in flight */
	void (*abandoned)(void *arg);
	void *abandoned_arg;
	struct event *sweep; /* a shared store: takes over what stopped instances left, twice a lease */
};

/* ---- routing a journaled update ---- */

/* An update received, until it is settled: queued for its chat, or marked done. */
struct receipt {
	struct receipt *prev, *next;
	struct gate *gate;
	struct tg_update update;
	int64_t update_id;
	gate_accepted_cb accepted; /* NULL for an update resumed from the journal */
	void *arg;
	/* Journaled before the bot knew who it is (a cold start): the claim's outcome, kept for then. */
	bool is_waiting_identity;
	bool is_claiming;   /* its claim is out */
	bool is_claim_back; /* its claim's outcome is in, held until the earlier updates of its chat go on */
	bool is_abandoned;  /* out of time before its claim came back: released when new */
	bool is_read_ahead; /* the store was told its chat's history is wanted */
	int claim_err;
	bool is_new;
};

static void receipt_free(struct receipt *r)
{
	struct gate *g = r->gate;
	if (r->prev)
		r->prev->next = r->next;
	else
		g->receipts = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		g->last = r->prev;
	update_clear(&r->update);
	free(r);
}

static void settle(struct receipt *r, bool is_journaled)
{
	gate_accepted_cb accepted = r->accepted;
	void *arg = r->arg;
	int64_t id = r->update_id;
	struct gate *g = r->gate;
	receipt_free(r);
	if (accepted)
		accepted(arg, id, is_journaled);
	if (!g->receipts && g->on_settled)
		g->on_settled(g->settled_arg);
}

static void on_done_marked(void *arg, int err)
{
	(void)err; /* the store logged it; the update may be seen again after a restart, and skipped then */
	settle(arg, true);
}

static bool route(const struct gate *g, const struct tg_update *u, enum chat_job *job, const char **why)
{
	struct route_self self = {g->self_id, g->self_username};
	return route_update(u, g->env.allow, g->env.admins, &self, job, why);
}

static void on_stop_answered(void *arg, const struct tg_result *res)
{
	(void)arg;
	if (!res->ok)
		log_debug("bot: answerCallbackQuery for a Stop: %ld %s", res->error_code, res->description);
}

/*
 * A Stop goes to the answer it stops at once: queued, it would wait for
 * that very answer to end. A button's press is answered (the person waits
 * on a spinner); a draft's stop control needs no answer.
 */
static void stop(struct receipt *r)
{
	struct gate *g = r->gate;
	const struct tg_update *u = &r->update;
	const struct tg_message *m = &u->message;
	bool is_button = u->kind == TG_UPDATE_CALLBACK;
	/* A draft's stop comes from the one private chat it was shown in: its user asked. */
	int64_t draft_id = is_button ? strtoll(u->callback_data + 2, NULL, 10) : u->draft_id;
	int64_t user_id = is_button ? m->from.id : m->chat_id;
	bool is_admin =
	    is_button && g->env.admins && access_allows(g->env.admins, m->from.id, m->from.username, 0);
	enum chats_stop result = chats_stop(g->env.chats, m->chat_id, draft_id, user_id, is_admin);
	if (result != CHATS_STOPPED)
		log_info("bot: update=%lld chat=%lld: a Stop for draft %lld: %s", (long long)u->update_id,
		         (long long)m->chat_id, (long long)draft_id,
		         result == CHATS_NOTHING ? "nothing streams" : "not the asker's");
	metrics_update(u->kind_name, result == CHATS_STOPPED ? METRICS_ANSWERED : METRICS_REFUSED);
	if (is_button) {
		const char *lang = m->from.language_code;
		const char *text = result == CHATS_STOPPED   ? NULL
		                   : result == CHATS_NOTHING ? text_get(TEXT_STOP_NOTHING, lang)
		                                             : text_get(TEXT_STOP_NOT_YOURS, lang);
		if (!tg_answer_callback(g->env.tg, u->callback_id, text, on_stop_answered, NULL))
			log_warn("bot: update=%lld: cannot answer the Stop button", (long long)u->update_id);
	}
	store_update_done(g->env.store, u->update_id, on_done_marked, r);
}

/* Routes a journaled update and queues its job, or marks it done when it is not for the bot. */
static void dispatch(struct receipt *r)
{
	struct gate *g = r->gate;
	struct tg_update *u = &r->update;
	const char *why;
	enum chat_job job;
	if (!route(g, u, &job, &why)) {
		log_info("bot: update=%lld: skipped (%s%s%s)", (long long)u->update_id, why,
		         u->kind == TG_UPDATE_OTHER ? ": " : "",
		         u->kind == TG_UPDATE_OTHER ? u->kind_name : "");
		metrics_update(u->kind_name, METRICS_IGNORED);
		store_update_done(g->env.store, u->update_id, on_done_marked, r);
		return;
	}
	if (job == CHAT_STOP) {
		stop(r);
		return;
	}
	if (job == CHAT_REFUSE)
		log_info("bot: update=%lld chat=%lld: user %lld (@%s) is not on the allowlist",
		         (long long)u->update_id, (long long)u->message.chat_id,
		         (long long)u->message.from.id,
		         u->message.from.username ? u->message.from.username : "-");
	int64_t chat_id = u->message.chat_id;
	char kind[sizeof u->kind_name];
	memcpy(kind, u->kind_name, sizeof kind); /* u is cleared by the submission */
	int rc = chats_submit(g->env.chats, u, job);
	if (rc == CHATS_CHAT_FULL) {
		log_warn("bot: update=%lld chat=%lld: skipped, the chat has %d updates waiting already",
		         (long long)r->update_id, (long long)chat_id, CHAT_QUEUE_MAX);
		metrics_update(kind, METRICS_REFUSED);
		store_update_done(g->env.store, r->update_id, on_done_marked, r);
		return;
	}
	if (rc != 0)
		log_error("bot: update=%lld: out of memory, left for a restart", (long long)r->update_id);
	settle(r, true);
}

static struct receipt *receipt_new(struct gate *g, struct tg_update *u, gate_accepted_cb accepted, void *arg)
{
	struct receipt *r = malloc(sizeof *r);
	if (!r) {
		log_error("bot: update=%lld: out of memory; not taken", (long long)u->update_id);
		update_clear(u);
		return NULL;
	}
	*r = (struct receipt){
	    .gate = g, .update = *u, .update_id = u->update_id, .accepted = accepted, .arg = arg};
	memset(u, 0, sizeof *u);
	r->prev = g->last;
	if (g->last)
		g->last->next = r;
	else
		g->receipts = r;
	g->last = r;
	return r;
}

/* Whether the user was told about this update already; remembers it when not. */
static bool was_told(struct gate *g, int64_t update_id)
{
	size_t n = g->n_told < TOLD_MAX ? g->n_told : TOLD_MAX;
	for (size_t i = 0; i < n; i++)
		if (g->told[i] == update_id)
			return true;
	g->told[g->n_told++ % TOLD_MAX] = update_id;
	return false;
}

/*
 * The journal failed: the update is not taken (Telegram delivers it again
 * until the journal works), but a person waiting is told why there is no
 * answer, once however often it comes.
 */
static void tell_not_journaled(struct receipt *r)
{
	struct gate *g = r->gate;
	const char *why;
	enum chat_job job;
	metrics_update(r->update.kind_name, METRICS_FAILED);
	if (!was_told(g, r->update_id) && route(g, &r->update, &job, &why) && job != CHAT_REFUSE &&
	    chats_submit(g->env.chats, &r->update, CHAT_NOT_JOURNALED) != 0)
		log_error("bot: update=%lld: out of memory", (long long)r->update_id);
	settle(r, false);
}

static void on_released(void *arg, int err)
{
	struct receipt *r = arg;
	if (err)
		log_error("bot: update=%lld stays journaled though it was not handled: Telegram's next "
		          "delivery of it will be skipped",
		          (long long)r->update_id);
	settle(r, false);
}

/*
 * The bot could not learn who it is, so an update journaled meanwhile cannot
 * be routed: it is forgotten again, for Telegram to deliver it once the bot
 * works (a journaled update would be skipped as a repeat).
 */
static void refuse_unidentified(struct receipt *r, int err, bool is_new)
{
	log_error("bot: update=%lld: not taken, the bot does not know who it is", (long long)r->update_id);
	if (!err && is_new)
		store_update_release(r->gate->env.store, r->update_id, on_released, r);
	else
		settle(r, !err && !is_new);
}

/* The update's claim is back (r->claim_err, r->is_new): it goes on. */
static void claimed(struct receipt *r)
{
	struct gate *g = r->gate;
	int err = r->claim_err;
	bool is_new = r->is_new;
	if (r->is_abandoned) {
		if (!err && is_new)
			store_update_release(g->env.store, r->update_id, on_released, r);
		else
			settle(r, false);
		return;
	}
	if (!g->self_username) {
		if (g->identify) { /* routing needs the identity, which is on its way */
			r->is_waiting_identity = true;
			return;
		}
		refuse_unidentified(r, err, is_new);
		return;
	}
	if (err) {
		log_error("bot: update=%lld could not be journaled; not taken, for Telegram to deliver again",
		          (long long)r->update_id);
		tell_not_journaled(r);
	} else if (is_new) {
		dispatch(r);
	} else {
		log_info("bot: update=%lld: already handled, skipped", (long long)r->update_id);
		metrics_update(r->update.kind_name, METRICS_DUPLICATE);
		settle(r, true);
	}
}

/* Whether an earlier update of r's chat is still being journaled. */
static bool is_held(const struct receipt *r)
{
	for (const struct receipt *e = r->gate->receipts; e != r; e = e->next)
		if (e->is_claiming && e->update.message.chat_id == r->update.message.chat_id)
			return true;
	return false;
}

/*
 * Claims end in any order (S3 requests end when they end), but a chat's
 * updates go on in the order they came: one whose claim is back waits for
 * the earlier ones of its chat.
 */
static void on_claimed(void *arg, int err, bool is_new)
{
	struct receipt *r = arg;
	struct gate *g = r->gate;
	r->is_claiming = false;
	r->is_claim_back = true;
	r->claim_err = err;
	r->is_new = is_new;
	for (;;) { /* each goes on (and may be freed) before the next is looked for */
		struct receipt *next = g->receipts;
		while (next && !(next->is_claim_back && !is_held(next)))
			next = next->next;
		if (!next)
			return;
		next->is_claim_back = false;
		claimed(next);
	}
}

/*
 * An update that asks the model will have its chat's history loaded as soon
 * as it is journaled: the store may read it beside the claim (one round trip
 * less on a cold start). Routing needs the identity, so this waits for it.
 */
static void read_ahead(struct gate *g, struct receipt *r)
{
	const char *why;
	enum chat_job job;
	if (r->is_read_ahead || !g->self_username)
		return;
	r->is_read_ahead = true;
	if (route(g, &r->update, &job, &why) && (job == CHAT_REPLY || job == CHAT_RETRY || job == CHAT_MEDIA)) {
		/* An answer reads both (chat/conversation.c, begin_answer), then counts what it spent. */
		const struct tg_message *m = &r->update.message;
		char usage[USAGE_KEY_LEN];
		usage_key(time(NULL), usage);
		store_history_prefetch(g->env.store, m->chat_id);
		store_setting_prefetch(g->env.store, m->chat_id, CHAT_SETTINGS_KEY);
		store_setting_prefetch(g->env.store, m->from.id, usage);
	}
}

int gate_receive(struct gate *g, struct tg_update *u, const char *text, size_t len, gate_accepted_cb accepted,
                 void *arg)
{
	struct receipt *r = receipt_new(g, u, accepted, arg);
	if (!r)
		return -1;
	r->is_claiming = true;
	store_update_claim(g->env.store, r->update_id, r->update.message.chat_id, text, len, on_claimed, r);
	read_ahead(g, r);
	return 0;
}

static void on_pending(void *arg, int err, const char *raw)
{
	struct gate *g = arg;
	if (!raw) {
		if (err)
			log_error("bot: the journal of unfinished updates could not be read");
		return;
	}
	struct tg_update u;
	char why[160];
	if (update_parse(raw, strlen(raw), &u, why, sizeof why) != 0) {
		log_warn("bot: a journaled update cannot be decoded (%s)", why);
		return;
	}
	log_info("bot: update=%lld: resuming, left unfinished by an earlier run or a stopped instance",
	         (long long)u.update_id);
	struct receipt *r = receipt_new(g, &u, NULL, NULL);
	if (r)
		dispatch(r);
}

static void on_abandon_released(void *arg, int err)
{
	struct receipt *r = arg;
	struct gate *g = r->gate;
	on_released(r, err);
	if (--g->n_releasing == 0 && g->abandoned)
		g->abandoned(g->abandoned_arg);
}

bool gate_abandon(struct gate *g, void (*done)(void *arg), void *arg)
{
	g->abandoned = done;
	g->abandoned_arg = arg;
	g->n_releasing = 1; /* held until every release below has started */
	struct receipt *next;
	for (struct receipt *r = g->receipts; r; r = next) {
		next = r->next;
		r->accepted = NULL;
		if (r->is_claiming) {
			r->is_abandoned = true; /* its claim is still out */
			continue;
		}
		if (!r->is_waiting_identity && !r->is_claim_back)
			continue; /* going on already (a job being submitted, a done mark being written) */
		r->is_waiting_identity = r->is_claim_back = false;
		if (!r->claim_err && r->is_new) {
			g->n_releasing++;
			store_update_release(g->env.store, r->update_id, on_abandon_released, r);
		} else {
			settle(r, false);
		}
	}
	g->n_releasing--;
	if (g->n_releasing == 0)
		g->abandoned = NULL;
	return g->n_releasing > 0;
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	gate_resume(arg);
}

void gate_resume(struct gate *g)
{
	store_update_pending(g->env.store, on_pending, g);
	unsigned lease = store_lease_ms(g->env.store);
	if (!lease)
		return;
	struct timeval tv = {lease / 2000, (lease / 2 % 1000) * 1000};
	if ((g->sweep || (g->sweep = evtimer_new(g->env.base, on_sweep, g))) && evtimer_add(g->sweep, &tv) == 0)
		return;
	log_error("bot: cannot schedule taking over updates that stopped instances left; they wait for a restart");
}

/* ---- who the bot is ---- */

struct identify {
	struct gate *gate;
	struct tg_call *call;
	struct event *timer;
	int failures;
	void (*done)(void *arg, int status);
	void *arg;
};

static void identify_free(struct identify *id)
{
	tg_call_cancel(id->call);
	event_free(id->timer);
	free(id);
}

/* The updates journaled while the bot learned who it is go on. */
static void resume_waiting(struct gate *g)
{
	for (;;) {
		/* Each settles (freeing its receipt) before the next is looked for. */
		struct receipt *r = g->receipts;
		while (r && !r->is_waiting_identity)
			r = r->next;
		if (!r)
			return;
		r->is_waiting_identity = false;
		claimed(r);
	}
}

static void identify_end(struct identify *id, int status)
{
	struct gate *g = id->gate;
	void (*done)(void *arg, int status) = id->done;
	void *arg = id->arg;
	g->identify = NULL;
	identify_free(id);
	if (status == 0)
		log_info("bot: @%s (id %lld)", g->self_username, (long long)g->self_id);
	if (status == 0)
		for (struct receipt *r = g->receipts; r; r = r->next)
			read_ahead(g, r);
	if (done)
		done(arg, status);
	resume_waiting(g);
}

static int set_identity(struct gate *g, int64_t id, const char *username)
{
	char *copy = strdup(username);
	if (!copy)
		return -1;
	free(g->self_username);
	g->self_username = copy;
	g->self_id = id;
	return 0;
}

static void ask_me(struct identify *id);

static void on_identify_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	ask_me(arg);
}

static void retry_identify(struct identify *id, const char *why)
{
	long ms = backoff_ms(&identify_backoff, ++id->failures);
	log_warn("bot: getMe failed (%s); retrying in %ld s", why, ms / 1000);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if (evtimer_add(id->timer, &tv) != 0)
		identify_end(id, -1);
}

static void on_identity_saved(void *arg, int err)
{
	(void)err; /* only a cache: the next cold start asks Telegram again */
	identify_end(arg, 0);
}

static void on_me(void *arg, const struct tg_result *res)
{
	struct identify *id = arg;
	struct gate *g = id->gate;
	id->call = NULL;
	if (!res->ok) {
		if (tg_is_token_rejected(res)) {
			identify_end(id, -1);
			return;
		}
		retry_identify(id, res->description);
		return;
	}
	const json_t *user_id = json_object_get(res->result, "id");
	const char *username = json_string_value(json_object_get(res->result, "username"));
	if (!json_is_integer(user_id) || !username) {
		log_error("bot: getMe did not say who the bot is");
		identify_end(id, -1);
		return;
	}
	if (set_identity(g, json_integer_value(user_id), username) != 0) {
		identify_end(id, -1);
		return;
	}
	char value[128];
	snprintf(value, sizeof value, "%lld %s", (long long)g->self_id, g->self_username);
	store_setting_set(g->env.store, 0, IDENTITY_KEY, value, on_identity_saved, id);
}

static void ask_me(struct identify *id)
{
	id->call = tg_call(id->gate->env.tg, "getMe", NULL, 0, 0, GETME_TIMEOUT_S, on_me, id);
	if (!id->call)
		retry_identify(id, "cannot start the request");
}

static void on_cached_identity(void *arg, int err, const char *value)
{
	struct identify *id = arg;
	long long cached_id;
	char name[65];
	if (!err && value && sscanf(value, "%lld %64s", &cached_id, name) == 2 &&
	    cached_id == id->gate->env.bot_id && set_identity(id->gate, cached_id, name) == 0) {
		identify_end(id, 0);
		return;
	}
	ask_me(id);
}

int gate_identify(struct gate *g, bool may_use_cache, void (*done)(void *arg, int status), void *arg)
{
	struct identify *id = calloc(1, sizeof *id);
	if (!id || !(id->timer = evtimer_new(g->env.base, on_identify_timer, id))) {
		free(id);
		log_error("bot: out of memory");
		return -1;
	}
	id->gate = g;
	id->done = done;
	id->arg = arg;
	g->identify = id;
	if (may_use_cache)
		store_setting_get(g->env.store, 0, IDENTITY_KEY, on_cached_identity, id);
	else
		ask_me(id);
	return 0;
}

/* ---- life ---- */

struct gate *gate_new(const struct gate_env *env)
{
	struct gate *g = calloc(1, sizeof *g);
	if (g)
		g->env = *env;
	return g;
}

void gate_forget(struct gate *g, void *arg)
{
	for (struct receipt *r = g->receipts; r; r = r->next)
		if (r->arg == arg)
			r->accepted = NULL;
	if (g->identify && g->identify->arg == arg)
		g->identify->done = NULL;
}

bool gate_is_settled(const struct gate *g)
{
	return !g->receipts;
}

void gate_on_settled(struct gate *g, void (*cb)(void *arg), void *arg)
{
	g->on_settled = cb;
	g->settled_arg = arg;
}

void gate_free(struct gate *g)
{
	if (!g)
		return;
	if (g->identify)
		identify_free(g->identify);
	/* Their store operations are dropped with the store: nothing will settle them. */
	while (g->receipts)
		receipt_free(g->receipts);
	if (g->sweep)
		event_free(g->sweep);
	free(g->self_username);
	free(g);
}
