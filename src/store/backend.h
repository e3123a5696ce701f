/*
 * backend: what a store backend implements (the table of store_ops) and
 * the means to keep store.h's contract: a backend finishes an operation by
 * handing its outcome to a store_answer_*() function, which calls back from
 * the loop. A backend's own struct begins with struct store.
 */
#ifndef TGLLM_STORE_BACKEND_H
#define TGLLM_STORE_BACKEND_H

#include "store/store.h"

struct store_ops {
	const char *name;
	bool answers_at_once; /* each operation is over when its function returns: store.c times it */
	void (*history_load)(struct store *s, int64_t chat_id, store_history_cb cb, void *arg);
	void (*history_prefetch)(struct store *s, int64_t chat_id); /* NULL: the hint is ignored */
	/* store_history_replace; store_history_append with n_old 0 */
	void (*history_append)(struct store *s, int64_t chat_id, const struct turn *old, size_t n_old,
	                       const struct turn *turns, size_t n, int64_t update_id, store_done_cb cb, void *arg);
	void (*history_clear)(struct store *s, int64_t chat_id, store_done_cb cb, void *arg);
	void (*update_claim)(struct store *s, int64_t update_id, int64_t chat_id, const char *raw,
	                     size_t raw_len, store_claim_cb cb, void *arg);
	void (*update_done)(struct store *s, int64_t update_id, store_done_cb cb, void *arg);
	void (*update_release)(struct store *s, int64_t update_id, store_done_cb cb, void *arg);
	void (*update_pending)(struct store *s, store_pending_cb cb, void *arg);
	/* NULL: one process uses the store at a time (store_lease_ms() is 0) */
	void (*update_begin)(struct store *s, int64_t update_id, int64_t chat_id, store_turn_cb cb, void *arg);
	void (*update_end)(struct store *s, int64_t update_id, int64_t chat_id);
	void (*setting_get)(struct store *s, int64_t scope, const char *key, store_value_cb cb, void *arg);
	void (*setting_prefetch)(struct store *s, int64_t scope, const char *key); /* NULL: ignored */
	void (*setting_set)(struct store *s, int64_t scope, const char *key, const char *value,
	                    store_done_cb cb, void *arg);
	void (*setting_change)(struct store *s, int64_t scope, const char *key, store_change_fn change,
	                       void *change_arg, store_done_cb cb, void *arg);
	void (*setting_scan)(struct store *s, const char *key, store_scan_cb cb, void *arg);
	void (*free)(struct store *s);
	/* store_lead; NULL: this store serves one process, which leads (store.c says so through the loop) */
	void (*lead)(struct store *s, void (*cb)(void *arg, bool is_leading), void *arg);
};

/* One operation's callback, whichever kind it is: what backends keep until they answer. */
union store_cb {
	store_done_cb done;
	store_history_cb history;
	store_claim_cb claim;
	store_value_cb value;
	store_pending_cb pending;
	store_scan_cb scan;
	store_turn_cb turn;
};

struct store_answer;

struct store {
	const struct store_ops *ops;
	unsigned lease_ms; /* store_lease_ms() */
	struct event *kick;               /* runs the answers waiting below */
	struct store_answer *head, *tail; /* answers for the loop, oldest first */
	void (*lead_cb)(void *arg, bool is_leading); /* store_lead's, where the backend has no lead op */
	void *lead_arg;
	int lead_step; /* store.c's: not asked, true due, told */
};

/* Sets up the common part; -1 when out of memory. */
int store_init(struct store *s, const struct store_ops *ops, struct event_base *base);
/* Drops the answers not yet given (no callbacks) and frees the common part. */
void store_clear(struct store *s);

/* The outcomes of operations, called back from the loop in the order given. */
void store_answer_done(struct store *s, store_done_cb cb, void *arg, int err);
/* h's contents move into the answer; *h is left empty. */
void store_answer_history(struct store *s, store_history_cb cb, void *arg, int err, struct history *h);
void store_answer_claim(struct store *s, store_claim_cb cb, void *arg, int err, bool is_new);
/* value (NULL: not set) is copied. */
void store_answer_value(struct store *s, store_value_cb cb, void *arg, int err, const char *value);
void store_answer_turn(struct store *s, store_turn_cb cb, void *arg, int err, enum store_turn turn);
/* The pending updates' texts (raws[0..n), each malloc'd, and the array) move into the answer. */
void store_answer_pending(struct store *s, store_pending_cb cb, void *arg, int err, char **raws, size_t n);
/* The scopes and values (values[0..n), each malloc'd, and both arrays) move into the answer. */
void store_answer_scan(struct store *s, store_scan_cb cb, void *arg, int err, int64_t *scopes, char **values,
                       size_t n);

int store_sqlite_open(const char *path, struct event_base *base, struct store **out, char *err,
                      size_t errlen);
int store_s3_open(const struct store_options *o, struct event_base *base, struct http_client *http,
                  struct store **out, char *err, size_t errlen);
/*
 * store/postgres.c: spec is a libpq connection string (a URI or keywords).
 * STORE_UNREACHABLE when the server could not be reached (or is starting up,
 * or has no connection to spare): a later try may succeed.
 */
int store_postgres_open(const char *spec, unsigned lease_ms, struct event_base *base, struct store **out,
                        char *err, size_t errlen);
#ifdef TGLLM_POSTGRES
#include <libpq-fe.h>
/*
 * What `tgllm migrate` (store/migrate.c) shares with open: connects to spec
 * (blocking, bounded) and creates or upgrades the schema exactly as open
 * does; *out is then the caller's (PQfinish). -1 or STORE_UNREACHABLE with
 * a one-line reason in err, the password out of it and in the log's secrets.
 */
int store_postgres_connect(const char *spec, PGconn **out, char *err, size_t errlen);
/* A malloc'd copy of len bytes PostgreSQL takes as text (each invalid byte and NUL becomes U+FFFD). */
char *store_postgres_text(const char *p, size_t len);
#endif
/* store/sqlite.c: the schema version this tgllm writes (PRAGMA user_version). */
int store_sqlite_schema_version(void);

#endif
