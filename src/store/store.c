#include "store/store.h"

#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/metrics.h"
#include "store/backend.h"

/* ---- the wrappers: every caller goes through these, never through the table ---- */

/* A backend that answers within the call (SQLite) is timed here; the others time themselves. */
static void time_at_once(const struct store *s, enum metrics_store_op op, double started)
{
	if (s->ops->answers_at_once)
		metrics_store_op(op, metrics_clock() - started);
}

void store_history_load(struct store *s, int64_t chat_id, store_history_cb cb, void *arg)
{
	double started = metrics_clock();
	s->ops->history_load(s, chat_id, cb, arg);
	time_at_once(s, METRICS_HISTORY_LOAD, started);
}

void store_setting_prefetch(struct store *s, int64_t scope, const char *key)
{
	if (s->ops->setting_prefetch)
		s->ops->setting_prefetch(s, scope, key);
}

void store_history_prefetch(struct store *s, int64_t chat_id)
{
	if (s->ops->history_prefetch)
		s->ops->history_prefetch(s, chat_id);
}

void store_history_append(struct store *s, int64_t chat_id, const struct turn *turns, size_t n,
                          int64_t update_id, store_done_cb cb, void *arg)
{
	double started = metrics_clock();
	s->ops->history_append(s, chat_id, NULL, 0, turns, n, update_id, cb, arg);
	time_at_once(s, METRICS_HISTORY_APPEND, started);
}

void store_history_replace(struct store *s, int64_t chat_id, const struct turn *old, size_t n_old,
                           const struct turn *turns, size_t n, int64_t update_id, store_done_cb cb, void *arg)
{
	double started = metrics_clock();
	s->ops->history_append(s, chat_id, old, n_old, turns, n, update_id, cb, arg);
	time_at_once(s, METRICS_HISTORY_APPEND, started);
}

void store_history_clear(struct store *s, int64_t chat_id, store_done_cb cb, void *arg)
{
	double started = metrics_clock();
	s->ops->history_clear(s, chat_id, cb, arg);
	time_at_once(s, METRICS_HISTORY_CLEAR, started);
}

void store_update_claim(struct store *s, int64_t update_id, int64_t chat_id, const char *raw, size_t raw_len,
                        store_claim_cb cb, void *arg)
{
	double started = metrics_clock();
	s->ops->update_claim(s, update_id, chat_id, raw, raw_len, cb, arg);
	time_at_once(s, METRICS_UPDATE_CLAIM, started);
}

void store_update_done(struct store *s, int64_t update_id, store_done_cb cb, void *arg)
{
	double started = metrics_clock();
	s->ops->update_done(s, update_id, cb, arg);
	time_at_once(s, METRICS_UPDATE_DONE, started);
}

void store_update_release(struct store *s, int64_t update_id, store_done_cb cb, void *arg)
{
	double started = metrics_clock();
	s->ops->update_release(s, update_id, cb, arg);
	time_at_once(s, METRICS_UPDATE_RELEASE, started);
}

void store_update_pending(struct store *s, store_pending_cb cb, void *arg)
{
	double started = metrics_clock();
	s->ops->update_pending(s, cb, arg);
	time_at_once(s, METRICS_UPDATE_PENDING, started);
}

unsigned store_lease_ms(const struct store *s)
{
	return s->lease_ms;
}

void store_update_begin(struct store *s, int64_t update_id, int64_t chat_id, store_turn_cb cb, void *arg)
{
	if (s->ops->update_begin)
		s->ops->update_begin(s, update_id, chat_id, cb, arg);
	else
		store_answer_turn(s, cb, arg, 0, STORE_TURN_GO);
}

void store_update_end(struct store *s, int64_t update_id, int64_t chat_id)
{
	if (s->ops->update_end)
		s->ops->update_end(s, update_id, chat_id);
}

void store_setting_get(struct store *s, int64_t scope, const char *key, store_value_cb cb, void *arg)
{
	double started = metrics_clock();
	s->ops->setting_get(s, scope, key, cb, arg);
	time_at_once(s, METRICS_SETTING_GET, started);
}

void store_setting_set(struct store *s, int64_t scope, const char *key, const char *value, store_done_cb cb,
                       void *arg)
{
	double started = metrics_clock();
	s->ops->setting_set(s, scope, key, value, cb, arg);
	time_at_once(s, METRICS_SETTING_SET, started);
}

void store_setting_change(struct store *s, int64_t scope, const char *key, store_change_fn change,
                          void *change_arg, store_done_cb cb, void *arg)
{
	double started = metrics_clock();
	s->ops->setting_change(s, scope, key, change, change_arg, cb, arg);
	time_at_once(s, METRICS_SETTING_CHANGE, started);
}

void store_setting_scan(struct store *s, const char *key, store_scan_cb cb, void *arg)
{
	double started = metrics_clock();
	s->ops->setting_scan(s, key, cb, arg);
	time_at_once(s, METRICS_SETTING_SCAN, started);
}

/* ---- answers through the loop ---- */

enum answer_kind { ANSWER_DONE, ANSWER_HISTORY, ANSWER_CLAIM, ANSWER_VALUE, ANSWER_PENDING, ANSWER_SCAN, ANSWER_TURN };

struct store_answer {
	struct store_answer *next;
	enum answer_kind kind;
	union store_cb cb;
	void *arg;
	int err;
	bool is_new;
	enum store_turn turn;
	struct history history;
	char *value;
	char **raws; /* pending updates, or a scan's values */
	int64_t *scopes; /* a scan's */
	size_t n_raws;
};

static void answer_free(struct store_answer *a)
{
	history_free(&a->history);
	free(a->value);
	for (size_t i = 0; i < a->n_raws; i++)
		free(a->raws[i]);
	free(a->raws);
	free(a->scopes);
	free(a);
}

/* Gives one answer; the callback may start new operations (they queue behind). */
static void answer_give(struct store_answer *a)
{
	switch (a->kind) {
	case ANSWER_DONE:
		a->cb.done(a->arg, a->err);
		break;
	case ANSWER_HISTORY:
		a->cb.history(a->arg, a->err, &a->history);
		break;
	case ANSWER_CLAIM:
		a->cb.claim(a->arg, a->err, a->is_new);
		break;
	case ANSWER_VALUE:
		a->cb.value(a->arg, a->err, a->value);
		break;
	case ANSWER_TURN:
		a->cb.turn(a->arg, a->err, a->turn);
		break;
	case ANSWER_PENDING:
		for (size_t i = 0; i < a->n_raws; i++)
			a->cb.pending(a->arg, 0, a->raws[i]);
		a->cb.pending(a->arg, a->err, NULL);
		break;
	case ANSWER_SCAN:
		for (size_t i = 0; i < a->n_raws; i++)
			a->cb.scan(a->arg, 0, a->scopes[i], a->raws[i]);
		a->cb.scan(a->arg, a->err, 0, NULL);
		break;
	}
	answer_free(a);
}

static void on_kick(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct store *s = arg;
	/* Only the answers waiting now: those their callbacks queue wait for the next turn of the loop. */
	struct store_answer *a = s->head;
	s->head = s->tail = NULL;
	while (a) {
		struct store_answer *next = a->next;
		answer_give(a);
		a = next;
	}
}

static void answer_queue(struct store *s, struct store_answer *a)
{
	if (s->tail)
		s->tail->next = a;
	else
		s->head = a;
	s->tail = a;
	event_active(s->kick, 0, 0);
}

/* A new answer, or NULL when out of memory (then the callback runs at once, with an error). */
static struct store_answer *answer_new(enum answer_kind kind, void *arg, int err)
{
	struct store_answer *a = calloc(1, sizeof *a);
	if (!a) {
		log_error("store: out of memory: an operation is answered at once, as failed");
		return NULL;
	}
	a->kind = kind;
	a->arg = arg;
	a->err = err;
	return a;
}

void store_answer_done(struct store *s, store_done_cb cb, void *arg, int err)
{
	struct store_answer *a = answer_new(ANSWER_DONE, arg, err);
	if (!a) {
		cb(arg, -1);
		return;
	}
	a->cb.done = cb;
	answer_queue(s, a);
}

void store_answer_history(struct store *s, store_history_cb cb, void *arg, int err, struct history *h)
{
	struct store_answer *a = answer_new(ANSWER_HISTORY, arg, err);
	if (!a) {
		history_free(h);
		cb(arg, -1, h);
		return;
	}
	a->cb.history = cb;
	a->history = *h;
	*h = (struct history)HISTORY_INIT;
	answer_queue(s, a);
}

void store_answer_claim(struct store *s, store_claim_cb cb, void *arg, int err, bool is_new)
{
	struct store_answer *a = answer_new(ANSWER_CLAIM, arg, err);
	if (!a) {
		cb(arg, -1, false);
		return;
	}
	a->cb.claim = cb;
	a->is_new = is_new;
	answer_queue(s, a);
}

void store_answer_turn(struct store *s, store_turn_cb cb, void *arg, int err, enum store_turn turn)
{
	struct store_answer *a = answer_new(ANSWER_TURN, arg, err);
	if (!a) {
		cb(arg, -1, STORE_TURN_WAIT);
		return;
	}
	a->cb.turn = cb;
	a->turn = turn;
	answer_queue(s, a);
}

void store_answer_value(struct store *s, store_value_cb cb, void *arg, int err, const char *value)
{
	struct store_answer *a = answer_new(ANSWER_VALUE, arg, err);
	if (a && value && !(a->value = strdup(value))) {
		free(a);
		a = NULL;
	}
	if (!a) {
		cb(arg, -1, NULL);
		return;
	}
	a->cb.value = cb;
	answer_queue(s, a);
}

void store_answer_pending(struct store *s, store_pending_cb cb, void *arg, int err, char **raws, size_t n)
{
	struct store_answer *a = answer_new(ANSWER_PENDING, arg, err);
	if (!a) {
		for (size_t i = 0; i < n; i++)
			free(raws[i]);
		free(raws);
		cb(arg, -1, NULL);
		return;
	}
	a->cb.pending = cb;
	a->raws = raws;
	a->n_raws = n;
	answer_queue(s, a);
}

void store_answer_scan(struct store *s, store_scan_cb cb, void *arg, int err, int64_t *scopes, char **values,
                       size_t n)
{
	struct store_answer *a = answer_new(ANSWER_SCAN, arg, err);
	if (!a) {
		for (size_t i = 0; i < n; i++)
			free(values[i]);
		free(values);
		free(scopes);
		cb(arg, -1, 0, NULL);
		return;
	}
	a->cb.scan = cb;
	a->raws = values;
	a->scopes = scopes;
	a->n_raws = n;
	answer_queue(s, a);
}

int store_init(struct store *s, const struct store_ops *ops, struct event_base *base)
{
	s->ops = ops;
	s->lease_ms = 0;
	s->head = s->tail = NULL;
	s->lead_cb = NULL;
	s->lead_arg = NULL;
	s->lead_step = 0; /* not asked */
	s->kick = event_new(base, -1, 0, on_kick, s);
	return s->kick ? 0 : -1;
}

void store_clear(struct store *s)
{
	while (s->head) {
		struct store_answer *a = s->head;
		s->head = a->next;
		answer_free(a);
	}
	s->tail = NULL;
	if (s->kick)
		event_free(s->kick);
	s->kick = NULL;
}

/* ---- leading ---- */

/* A store with no lead op: s->lead_step. */
enum { LEAD_NOT_ASKED, LEAD_DUE, LEAD_TOLD };

/* Through the loop, as every answer: the cb of the moment is told (none: given up meanwhile). */
static void on_sole_lead(void *arg, int err)
{
	(void)err; /* always 0: nothing can fail */
	struct store *s = arg;
	s->lead_step = s->lead_cb ? LEAD_TOLD : LEAD_NOT_ASKED;
	if (s->lead_cb)
		s->lead_cb(s->lead_arg, true);
}

void store_lead(struct store *s, void (*cb)(void *arg, bool is_leading), void *arg)
{
	if (s->ops->lead) {
		s->ops->lead(s, cb, arg);
		return;
	}
	s->lead_cb = cb;
	s->lead_arg = arg;
	if (!cb && s->lead_step == LEAD_TOLD)
		s->lead_step = LEAD_NOT_ASKED;
	/* One process on this store: it leads. store_free drops the answer not yet given. */
	if (cb && s->lead_step == LEAD_NOT_ASKED) {
		s->lead_step = LEAD_DUE;
		store_answer_done(s, on_sole_lead, s, 0);
	}
}
