/*
 * store: where conversations, the update journal and settings live.
 *
 * One interface, several backends behind a table of functions
 * (store/backend.h, as curl's vtls): SQLite is the default (store/sqlite.c),
 * S3-compatible object storage the shared one (store/s3.c); PostgreSQL plugs
 * in the same way.
 *
 * The contract: every operation is asynchronous and its callback runs once,
 * from the event loop, never inside the call that started it, whatever the
 * backend (SQLite does its work at once but answers through the loop too).
 * Only when not even the few bytes to schedule it can be had does a callback
 * run at once, with an error. Freeing the store drops the callbacks of
 * operations still running.
 *
 * What is kept:
 *  - history: per chat, an append-only list of turns since the last /new;
 *  - the update journal: every update received is recorded ("claimed")
 *    before Telegram is told it arrived, and marked done once handled, so a
 *    crash loses nothing and a redelivered update is not answered twice;
 *  - settings: small key/value strings per scope (a chat or a user id),
 *    e.g. when a stranger was last refused.
 * docs/internals/STORE.md describes the SQLite schema and the S3 objects.
 */
#ifndef TGLLM_STORE_H
#define TGLLM_STORE_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/history.h"
#include "lib/http.h"

struct store;

struct store_options {
	/* "sqlite:PATH", "s3://BUCKET[/PREFIX]", or PostgreSQL's "postgres://..." (or libpq's "host=... dbname=...") */
	const char *spec;
	/* The S3 store's server and key pair (the secret and token are never logged). */
	const char *s3_endpoint; /* scheme://host[:port][/path] */
	const char *s3_region;
	const char *s3_key_id;
	const char *s3_secret;
	const char *s3_session_token; /* with temporary credentials, else NULL */
	/*
	 * PostgreSQL, shared by several instances: how long an instance's claim
	 * on an update lasts unless it renews it (LEASE_SECONDS); 0: the default.
	 */
	unsigned lease_ms;
};

/*
 * Opens the store o->spec names; -1 with a one-line reason in err. http is for
 * network stores. STORE_UNREACHABLE instead of -1 when the store's server
 * could not be reached (PostgreSQL down, starting up, out of connections):
 * the same call may succeed later.
 */
#define STORE_UNREACHABLE (-2)
int store_open(const struct store_options *o, struct event_base *base, struct http_client *http,
               struct store **out, char *err, size_t errlen);
/* Whether spec names a PostgreSQL database (a postgres:// or postgresql:// URI, or libpq's keyword form). */
bool store_is_postgres_spec(const char *spec);
/* spec as it may be shown (doctor's lines): a PostgreSQL password replaced by "***". */
void store_spec_shown(const char *spec, char *out, size_t n);
/* NULL is a no-op. Operations still running end without their callbacks. */
void store_free(struct store *s);

/*
 * err is 0 on success, -1 on failure (already logged by the backend); for
 * an append or replace given an update id, also STORE_TAKEN_OVER: the
 * update is no longer this process's (done already, or taken over by
 * another instance after this one's lease ran out), so nothing was stored:
 * the job must not answer it either.
 */
typedef void (*store_done_cb)(void *arg, int err);
#define STORE_TAKEN_OVER 2
/*
 * h is the callee's to keep (move its contents out) or to history_free.
 * err may also be STORE_HISTORY_SET_ASIDE: the stored history could not be
 * read; the backend kept it aside (its log says why and where) and h is
 * empty: the chat starts over.
 */
typedef void (*store_history_cb)(void *arg, int err, struct history *h);
#define STORE_HISTORY_SET_ASIDE 1
/* is_new is false when the update id was seen before. */
typedef void (*store_claim_cb)(void *arg, int err, bool is_new);
/* value is NULL when the key is not set; borrowed for the call. */
typedef void (*store_value_cb)(void *arg, int err, const char *value);
/* Called once per journaled update not yet done, oldest first, then once with raw NULL. */
typedef void (*store_pending_cb)(void *arg, int err, const char *raw);
/*
 * What a setting becomes (store_setting_change): given its value (NULL: not
 * set), the new value (malloc'd; the store frees it), or NULL to leave it as
 * it is. It may be called more than once (another writer changed the
 * setting meanwhile: again, on what that one wrote), so it only computes;
 * its last call is what the store kept once the change's callback says 0.
 */
typedef char *(*store_change_fn)(void *arg, const char *value);
/* Called once per scope that has the key (in no particular order), then once with value NULL. */
typedef void (*store_scan_cb)(void *arg, int err, int64_t scope, const char *value);
/* What store_update_begin found. */
enum store_turn {
	STORE_TURN_GO,   /* the update is this process's to handle now */
	STORE_TURN_WAIT, /* an earlier update of its chat is not done yet, in another process: ask again later */
	STORE_TURN_GONE, /* done already, or taken over by another process (this one's lease ran out): drop it */
};
typedef void (*store_turn_cb)(void *arg, int err, enum store_turn turn);

void store_history_load(struct store *s, int64_t chat_id, store_history_cb cb, void *arg);
/*
 * A hint, with no callback: the chat's history is about to be loaded (an
 * update for it is being journaled). A network backend may start reading it
 * now, beside the journal write, and answer the load from that read.
 */
void store_history_prefetch(struct store *s, int64_t chat_id);
/* Appends turns and, when update_id is not 0, marks that update done, at once (atomically where the backend
 * can). */
void store_history_append(struct store *s, int64_t chat_id, const struct turn *turns, size_t n,
                          int64_t update_id, store_done_cb cb, void *arg);
/*
 * As store_history_append, but the turns take the place of old[0..n_old),
 * the last turns of the history as it was loaded (/retry), when it still
 * ends with them. When it does not (another writer appended meanwhile), the
 * turns are appended: no one's turns are lost.
 */
void store_history_replace(struct store *s, int64_t chat_id, const struct turn *old, size_t n_old,
                           const struct turn *turns, size_t n, int64_t update_id, store_done_cb cb, void *arg);
void store_history_clear(struct store *s, int64_t chat_id, store_done_cb cb, void *arg);
/* Journals an update (raw is its JSON text, borrowed for the call) unless its id is known. */
void store_update_claim(struct store *s, int64_t update_id, int64_t chat_id, const char *raw, size_t raw_len,
                        store_claim_cb cb, void *arg);
void store_update_done(struct store *s, int64_t update_id, store_done_cb cb, void *arg);
/* Forgets a pending update, so that when Telegram delivers it again it counts as new. */
void store_update_release(struct store *s, int64_t update_id, store_done_cb cb, void *arg);
/*
 * The updates to resume. One process per store (SQLite, S3): every update
 * not yet done, left by an earlier run. A shared store (store_lease_ms > 0):
 * only those whose claim's lease ran out (their process died), which
 * become this process's; it may ask again at any time.
 */
void store_update_pending(struct store *s, store_pending_cb cb, void *arg);
/*
 * A shared store (PostgreSQL, where several instances take updates of the
 * same chats): how long a claim lasts unless renewed, in ms; the store
 * renews this process's claims while it runs, and another process takes
 * over those of a process that stopped renewing (store_update_pending).
 * 0 for a store one process uses at a time: store_update_begin is then
 * not needed.
 */
unsigned store_lease_ms(const struct store *s);
/*
 * On a shared store, before an update's job starts: whether it is this
 * process's turn in its chat, across processes (the chat's earlier updates
 * are done and none of its updates is being handled elsewhere). The store
 * marks the update started, so later ones of the chat wait for it wherever
 * they are.
 */
void store_update_begin(struct store *s, int64_t update_id, int64_t chat_id, store_turn_cb cb, void *arg);
/*
 * After store_update_begin said go: the update's job is over (its answer
 * sent, not only stored), and the chat's next update may start, wherever it
 * is. No callback; a shared store only.
 */
void store_update_end(struct store *s, int64_t update_id, int64_t chat_id);
void store_setting_get(struct store *s, int64_t scope, const char *key, store_value_cb cb, void *arg);
/* A hint, with no callback, as store_history_prefetch: that setting is about to be read. */
void store_setting_prefetch(struct store *s, int64_t scope, const char *key);
void store_setting_set(struct store *s, int64_t scope, const char *key, const char *value, store_done_cb cb,
                       void *arg);
/*
 * Reads and writes a setting as one step (a usage count, a budget's
 * reservation): no concurrent change in between is lost, in this process
 * or another (S3: a conditional write, repeated after a lost race).
 */
void store_setting_change(struct store *s, int64_t scope, const char *key, store_change_fn change,
                          void *change_arg, store_done_cb cb, void *arg);
/* Every scope's value of key (/usage all: every user's count of the month). */
void store_setting_scan(struct store *s, const char *key, store_scan_cb cb, void *arg);

/*
 * Leading: which one of several processes on one store long-polls Telegram
 * (getUpdates takes one consumer per bot). This process wants to be it: cb
 * runs from the loop, never inside this call, with true once it leads, and
 * with false once it learns it does not (another process leads: it stands
 * by and tries again by itself), or no longer does (the lock was lost with
 * its database connection: it tries again by itself, and cb says true when
 * it leads again). cb is told only changes. A store that serves one
 * process (SQLite, S3) says true once. Asked again with another cb, that
 * one takes the first one's place and is told only later changes. cb NULL
 * gives the lead up (another process may take it at once); cb is not called
 * again, nor after store_free. PostgreSQL: a session advisory lock on a
 * connection of its own (docs/internals/STORE.md).
 */
void store_lead(struct store *s, void (*cb)(void *arg, bool is_leading), void *arg);

#endif
