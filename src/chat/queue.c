/*
 * The chats: one FIFO queue of conversations per chat, only the head
 * running, so one chat's history is never read and written by two jobs at
 * once; the chats themselves run side by side on the loop. On a store
 * shared by several instances (store_lease_ms), the head also waits for
 * its chat's turn across them (store_update_begin).
 */
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "chat/conversation.h"
#include "chat/text.h"
#include "lib/backoff.h"
#include "lib/log.h"
#include "telegram/send.h"

#define CHAT_BUCKETS 1024

/* How often a head asks again for its chat's turn while another instance has it. */
static const struct backoff turn_backoff = {.first_ms = 10, .max_ms = 500, .has_jitter = true};

struct job {
	struct job *next;
	struct chat *chat;
	struct conversation conversation;
};

struct chat;

/* A question for the store about the head's turn; outlives the chat when the chats are stopped meanwhile. */
struct turn_ask {
	struct chat *chat; /* NULL: stopped, nobody waits for the answer */
};

struct chat {
	struct chat *next_in_bucket;
	struct chats *chats;
	int64_t id;
	struct job *head, *tail; /* head is running, or waiting for its turn */
	size_t n_jobs;
	bool is_told_busy;
	struct turn_ask *asking; /* the store is being asked whether the head may start */
	bool has_turn;           /* the store said the head may: it says when it is over */
	struct event *wait;      /* asks again, with backoff */
	int waits;
};

struct chats {
	struct chat_env env;
	struct chat *buckets[CHAT_BUCKETS];
	size_t n_chats; /* with a job: each runs its head */
	size_t n_jobs;
	void (*on_idle)(void *arg);
	void *idle_arg;
};

static struct chat **bucket_of(struct chats *cs, int64_t id)
{
	uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15u;
	return &cs->buckets[h >> 54]; /* 10 bits: CHAT_BUCKETS */
}

static struct chat *chat_get(struct chats *cs, int64_t id)
{
	struct chat **b = bucket_of(cs, id);
	for (struct chat *c = *b; c; c = c->next_in_bucket)
		if (c->id == id)
			return c;
	struct chat *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->chats = cs;
	c->id = id;
	c->next_in_bucket = *b;
	*b = c;
	cs->n_chats++;
	return c;
}

static void chat_free(struct chat *c)
{
	if (c->asking)
		c->asking->chat = NULL;
	if (c->wait)
		event_free(c->wait);
	free(c);
}

static void chat_remove(struct chats *cs, struct chat *c)
{
	for (struct chat **p = bucket_of(cs, c->id); *p; p = &(*p)->next_in_bucket) {
		if (*p == c) {
			*p = c->next_in_bucket;
			cs->n_chats--;
			chat_free(c);
			return;
		}
	}
}

static void job_free(struct job *job)
{
	conversation_clear(&job->conversation);
	free(job);
}

static void run_head(struct chat *c);

/* The head's conversation is over: free it and start the chat's next one. */
static void on_ended(void *arg)
{
	struct job *job = arg;
	struct chat *c = job->chat;
	struct chats *cs = c->chats;
	if (c->has_turn) {
		c->has_turn = false;
		store_update_end(cs->env.store, conversation_update_id(&job->conversation), c->id);
	}
	c->head = job->next;
	if (!c->head)
		c->tail = NULL;
	job_free(job);
	cs->n_jobs--;
	c->n_jobs--;
	if (c->head) {
		run_head(c);
		return;
	}
	chat_remove(cs, c);
	if (cs->n_jobs == 0 && cs->on_idle)
		cs->on_idle(cs->idle_arg);
}

static void on_wait_over(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	run_head(arg);
}

/*
 * Moves the queued job with the lowest update id to the head when it is
 * lower than the head's (which has not started): an update taken over from
 * a stopped instance may come after later ones of its chat.
 */
static bool take_earliest(struct chat *c)
{
	struct job *prev_min = NULL, *min = NULL;
	int64_t lowest = conversation_update_id(&c->head->conversation);
	for (struct job *prev = c->head, *j = c->head->next; j; prev = j, j = j->next) {
		int64_t id = conversation_update_id(&j->conversation);
		if (id < lowest) {
			lowest = id;
			min = j;
			prev_min = prev;
		}
	}
	if (!min)
		return false;
	prev_min->next = min->next;
	if (c->tail == min)
		c->tail = prev_min;
	min->next = c->head;
	c->head = min;
	c->waits = 0;
	return true;
}

static void on_turn(void *arg, int err, enum store_turn turn)
{
	struct turn_ask *a = arg;
	struct chat *c = a->chat;
	free(a);
	if (!c)
		return;
	c->asking = NULL;
	struct job *job = c->head;
	int64_t update_id = conversation_update_id(&job->conversation);
	if (!err && turn == STORE_TURN_GO) {
		c->waits = 0;
		c->has_turn = true;
		conversation_start(&job->conversation);
		return;
	}
	if (!err && turn == STORE_TURN_GONE) {
		/* Not counted here: whoever answered it (or answers it) counts it. */
		log_info("chat=%lld update=%lld: done already, or taken over by another instance; dropped",
		         (long long)c->id, (long long)update_id);
		on_ended(job);
		return;
	}
	if (!err && take_earliest(c)) { /* the update it waits for is queued here, behind it */
		run_head(c);
		return;
	}
	if (c->waits == 0)
		log_debug("chat=%lld update=%lld: waiting for the chat's earlier update in another instance",
		          (long long)c->id, (long long)update_id);
	long ms = backoff_ms(&turn_backoff, ++c->waits);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if ((c->wait || (c->wait = evtimer_new(c->chats->env.base, on_wait_over, c))) && evtimer_add(c->wait, &tv) == 0)
		return;
	/* Without a timer the update would wait for ever: it stays pending, for a takeover. */
	log_error("chat=%lld update=%lld: cannot wait for the chat's turn; left to another instance",
	          (long long)c->id, (long long)update_id);
	on_ended(job);
}

/*
 * Starts the head's conversation, on a shared store once it is the chat's
 * turn across instances (an update the journal did not take has no turn to
 * wait for: it only tells the user).
 */
static void run_head(struct chat *c)
{
	struct conversation *conv = &c->head->conversation;
	struct store *store = c->chats->env.store;
	if (store_lease_ms(store) == 0 || conv->job == CHAT_NOT_JOURNALED) {
		conversation_start(conv);
		return;
	}
	struct turn_ask *a = malloc(sizeof *a);
	if (!a) {
		log_error("chat=%lld: out of memory asking for the chat's turn; the update is left to another "
		          "instance",
		          (long long)c->id);
		on_ended(c->head);
		return;
	}
	a->chat = c;
	c->asking = a;
	store_update_begin(store, conversation_update_id(conv), c->id, on_turn, a);
}

static void on_told_busy(void *arg, const struct tg_result *res)
{
	int64_t *chat_id = arg;
	if (!res->ok)
		log_warn("chat=%lld: could not say the chat is busy: %s", (long long)*chat_id,
		         res->description);
	free(chat_id);
}

static void tell_busy(struct chats *cs, struct chat *c, const struct tg_update *u)
{
	if (c->is_told_busy)
		return;
	c->is_told_busy = true;
	const struct tg_target t = tg_target_of(&u->message);
	const char *text = text_get(TEXT_CHAT_BUSY, u->message.from.language_code);
	int64_t *arg = malloc(sizeof *arg);
	if (!arg)
		return;
	*arg = c->id;
	if (!tg_send_text(cs->env.tg, &t, text, strlen(text), on_told_busy, arg))
		free(arg);
}

int chats_submit(struct chats *cs, struct tg_update *u, enum chat_job kind)
{
	struct chat *c = chat_get(cs, u->message.chat_id);
	if (c && c->n_jobs >= CHAT_QUEUE_MAX) {
		tell_busy(cs, c, u);
		update_clear(u);
		return CHATS_CHAT_FULL;
	}
	struct job *job = c ? calloc(1, sizeof *job) : NULL;
	if (!job) {
		if (c && !c->head)
			chat_remove(cs, c);
		return -1;
	}
	conversation_init(&job->conversation, &cs->env, u, kind, on_ended, job);
	job->chat = c;
	cs->n_jobs++;
	c->n_jobs++;
	if (c->tail) {
		c->tail->next = job;
		c->tail = job;
		return 0;
	}
	c->head = c->tail = job;
	run_head(c);
	return 0;
}

struct chats *chats_new(const struct chat_env *env)
{
	struct chats *cs = calloc(1, sizeof *cs);
	if (cs)
		cs->env = *env;
	return cs;
}

/* Stops every job at once (no callbacks, nothing marked done); update_ids gets up to max of their ids. */
static size_t stop_all(struct chats *cs, int64_t *update_ids, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < CHAT_BUCKETS; i++) {
		while (cs->buckets[i]) {
			struct chat *c = cs->buckets[i];
			cs->buckets[i] = c->next_in_bucket;
			while (c->head) {
				struct job *job = c->head;
				c->head = job->next;
				if (n < max)
					update_ids[n++] = conversation_update_id(&job->conversation);
				job_free(job);
			}
			chat_free(c);
		}
	}
	cs->n_jobs = 0;
	cs->n_chats = 0;
	return n;
}

void chats_free(struct chats *cs)
{
	if (!cs)
		return;
	stop_all(cs, NULL, 0);
	free(cs);
}

size_t chats_busy(const struct chats *cs)
{
	return cs->n_jobs;
}

size_t chats_running(const struct chats *cs)
{
	return cs->n_chats;
}

bool chats_are_full(const struct chats *cs)
{
	return cs->n_jobs >= CHATS_MAX_BUSY;
}

void chats_on_idle(struct chats *cs, void (*cb)(void *arg), void *arg)
{
	cs->on_idle = cb;
	cs->idle_arg = arg;
}

enum chats_stop chats_stop(struct chats *cs, int64_t chat_id, int64_t draft_id, int64_t user_id, bool is_admin)
{
	for (struct chat *c = *bucket_of(cs, chat_id); c; c = c->next_in_bucket)
		if (c->id == chat_id)
			return conversation_stop(&c->head->conversation, draft_id, user_id, is_admin);
	return CHATS_NOTHING;
}

void chats_hurry(struct chats *cs)
{
	/* Nothing ends inside conversation_hurry (the store and Telegram answer from the loop): the table
	 * holds still. */
	for (size_t i = 0; i < CHAT_BUCKETS; i++)
		for (struct chat *c = cs->buckets[i]; c; c = c->next_in_bucket)
			conversation_hurry(&c->head->conversation);
}

struct abandon {
	size_t left;
	void (*done)(void *arg);
	void *arg;
};

static void on_released(void *arg, int err)
{
	struct abandon *a = arg;
	(void)err; /* logged by the store: that update is then skipped as a repeat */
	if (--a->left > 0)
		return;
	a->done(a->arg);
	free(a);
}

void chats_abandon(struct chats *cs, void (*done)(void *arg), void *arg)
{
	size_t n = cs->n_jobs;
	int64_t *ids = calloc(n + 1, sizeof *ids);
	struct abandon *a = calloc(1, sizeof *a);
	if (!ids || !a) {
		log_error("out of memory abandoning updates; they stay pending in the journal");
		stop_all(cs, NULL, 0);
		free(ids);
		free(a);
		done(arg);
		return;
	}
	n = stop_all(cs, ids, n);
	*a = (struct abandon){.left = n, .done = done, .arg = arg};
	for (size_t i = 0; i < n; i++) {
		log_warn("update=%lld: unfinished; left for Telegram to deliver again", (long long)ids[i]);
		store_update_release(cs->env.store, ids[i], on_released, a);
	}
	free(ids);
	if (n == 0) {
		free(a);
		done(arg);
	}
}
