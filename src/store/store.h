/*
 * store: where conversations and the update journal live.
 *
 * One interface, several backends (a table of function pointers, as curl's
 * vtls does): SQLite is the default; S3 and PostgreSQL plug in behind the
 * same table. Operations are asynchronous — a backend that talks to a server
 * answers later, on the loop; SQLite answers before the call returns. Callers
 * must accept both.
 *
 * What is kept:
 *  - history: per chat, an append-only list of turns since the last /new;
 *  - the update journal: every update received is recorded before Telegram is
 *    told it arrived ("claimed"), and marked done once handled, so a crash
 *    loses nothing and a redelivered update is not answered twice;
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

/* err is 0 on success, -1 on failure (already logged by the backend). */
typedef void (*store_done_cb)(void *arg, int err);
/* h is the caller's to keep (move its contents out) or to history_free. */
typedef void (*store_history_cb)(void *arg, int err, struct history *h);
/* is_new is false when the update id was seen before. */
typedef void (*store_claim_cb)(void *arg, int err, bool is_new);
/* value is NULL when the key is not set; borrowed for the call. */
typedef void (*store_value_cb)(void *arg, int err, const char *value);
/* Called once per journaled update not yet done, oldest first, then once with raw NULL. */
typedef void (*store_pending_cb)(void *arg, int err, const char *raw);

struct store_ops {
	const char *name;
	void (*history_load)(struct store *s, int64_t chat_id, store_history_cb cb, void *arg);
	/* Appends turns and, when update_id is not 0, marks that update done, atomically. */
	void (*history_append)(struct store *s, int64_t chat_id, const struct turn *turns, size_t n,
			       int64_t update_id, store_done_cb cb, void *arg);
	void (*history_clear)(struct store *s, int64_t chat_id, store_done_cb cb, void *arg);
	/* Journals an update (raw is its JSON text, borrowed for the call) unless its id is known. */
	void (*update_claim)(struct store *s, int64_t update_id, int64_t chat_id, const char *raw,
			     size_t raw_len, store_claim_cb cb, void *arg);
	void (*update_done)(struct store *s, int64_t update_id, store_done_cb cb, void *arg);
	/* Forgets a pending update, so that when Telegram delivers it again it counts as new. */
	void (*update_release)(struct store *s, int64_t update_id, store_done_cb cb, void *arg);
	void (*update_pending)(struct store *s, store_pending_cb cb, void *arg);
	void (*setting_get)(struct store *s, int64_t scope, const char *key, store_value_cb cb, void *arg);
	void (*setting_set)(struct store *s, int64_t scope, const char *key, const char *value,
			    store_done_cb cb, void *arg);
	void (*free)(struct store *s);
};

struct store {
	const struct store_ops *ops;
};

/*
 * Opens the store named by spec ("sqlite:PATH", "s3://BUCKET[/PREFIX]"). On failure returns -1 with
 * a one-line reason in err.
 */
int store_open(const char *spec, struct event_base *base, struct http_client *http,
	       struct store **out, char *err, size_t errlen);
/* NULL is a no-op. */
void store_free(struct store *s);

int store_sqlite_open(const char *path, struct store **out, char *err, size_t errlen);
/* spec is "s3://BUCKET[/PREFIX]"; endpoint, region and keys as config_s3_load() reads them. */
int store_s3_open(const char *spec, struct event_base *base, struct http_client *http,
		  struct store **out, char *err, size_t errlen);

#endif
