/*
 * The SQLite store: one database file in WAL mode; see docs/internals/STORE.md.
 * A statement runs at once (local and short: it does not hold up the loop);
 * its outcome is answered through the loop, as store.h promises.
 */
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "store/backend.h"

#define HISTORY_LOAD_MAX 2000 /* turns; far beyond any context window */
/*
 * Bytes of turns loaded, newest first: pictures make turns big (MEDIA.md),
 * and a job holds its history in memory. The S3 store's object has the same bound.
 */
#define HISTORY_LOAD_BYTES (8u << 20)
#define JOURNAL_KEEP_S (7 * 86400)

struct store_sqlite {
	struct store base;
	sqlite3 *db;
	sqlite3_stmt *load, *append, *clear, *claim, *done, *release, *pending, *get, *set, *begin,
		*commit, *rollback, *last, *drop, *scan;
};

/* Each entry moves the schema from version i to i + 1. */
static const char *const migrations[] = {
	"CREATE TABLE messages ("
	"  id INTEGER PRIMARY KEY,"
	"  chat_id INTEGER NOT NULL,"
	"  role TEXT NOT NULL,"
	"  content TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL);"
	"CREATE INDEX messages_by_chat ON messages (chat_id, id);"
	"CREATE TABLE updates ("
	"  update_id INTEGER PRIMARY KEY,"
	"  chat_id INTEGER NOT NULL,"
	"  state TEXT NOT NULL CHECK (state IN ('pending', 'done')),"
	"  body TEXT,"
	"  received_at INTEGER NOT NULL);"
	"CREATE INDEX updates_pending ON updates (state, update_id);"
	"CREATE TABLE settings ("
	"  scope INTEGER NOT NULL,"
	"  key TEXT NOT NULL,"
	"  value TEXT NOT NULL,"
	"  PRIMARY KEY (scope, key));",
	/* A turn whose content is the JSON text of an array of content parts (a photo, a PDF). */
	"ALTER TABLE messages ADD COLUMN is_parts INTEGER NOT NULL DEFAULT 0;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

int store_sqlite_schema_version(void)
{
	return SCHEMA_VERSION;
}

static struct store_sqlite *from(struct store *s)
{
	return (struct store_sqlite *)s;
}

static void log_db_error(struct store_sqlite *s, const char *what)
{
	log_error("store: sqlite: %s: %s", what, sqlite3_errmsg(s->db));
}

/* Runs a prepared statement that returns no rows, and resets it. */
static int run(struct store_sqlite *s, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE) {
		log_db_error(s, what);
		return -1;
	}
	return 0;
}

static void history_load(struct store *base, int64_t chat_id, store_history_cb cb, void *arg)
{
	struct store_sqlite *s = from(base);
	struct history h = HISTORY_INIT;
	int err = 0, rc;
	size_t bytes = 0;
	sqlite3_bind_int64(s->load, 1, chat_id);
	sqlite3_bind_int(s->load, 2, HISTORY_LOAD_MAX);
	while ((rc = sqlite3_step(s->load)) == SQLITE_ROW) {
		enum turn_role role;
		const char *name = (const char *)sqlite3_column_text(s->load, 0);
		const char *content = (const char *)sqlite3_column_text(s->load, 1);
		int len = sqlite3_column_bytes(s->load, 1);
		if (!name || !content || turn_role_parse(name, &role) != 0) {
			log_warn("store: chat=%lld: skipping a stored turn with a bad role", (long long)chat_id);
			continue;
		}
		bytes += (size_t)len;
		if (bytes > HISTORY_LOAD_BYTES && h.len > 0) {
			rc = SQLITE_DONE; /* the older turns are beyond any prompt anyway */
			break;
		}
		bool is_parts = sqlite3_column_int(s->load, 2) != 0;
		if ((is_parts ? history_push_parts(&h, role, content, (size_t)len)
		              : history_push(&h, role, content, (size_t)len)) != 0) {
			err = -1;
			break;
		}
	}
	if (rc != SQLITE_DONE && !err) {
		log_db_error(s, "reading history");
		err = -1;
	}
	/* Read newest first (the index's order, no sort of the contents): put them back in order. */
	for (size_t i = 0; i < h.len / 2; i++) {
		struct turn t = h.turns[i];
		h.turns[i] = h.turns[h.len - 1 - i];
		h.turns[h.len - 1 - i] = t;
	}
	sqlite3_reset(s->load);
	sqlite3_clear_bindings(s->load);
	if (err)
		history_free(&h);
	store_answer_history(base, cb, arg, err, &h);
}

static int mark_done(struct store_sqlite *s, int64_t update_id)
{
	sqlite3_bind_int64(s->done, 1, update_id);
	return run(s, s->done, "marking an update done");
}

/*
 * Deletes the chat's last n_old turns when they are old[0..n_old); leaves
 * them when they are not (another process appended since they were read).
 */
static int drop_replaced(struct store_sqlite *s, int64_t chat_id, const struct turn *old, size_t n_old)
{
	sqlite3_bind_int64(s->last, 1, chat_id);
	sqlite3_bind_int64(s->last, 2, (sqlite3_int64)n_old);
	size_t seen = 0;
	bool is_same = true;
	sqlite3_int64 first = 0;
	int rc;
	while ((rc = sqlite3_step(s->last)) == SQLITE_ROW) { /* newest first */
		const struct turn *t = &old[n_old - 1 - seen++];
		const char *role = (const char *)sqlite3_column_text(s->last, 1);
		const char *content = (const char *)sqlite3_column_blob(s->last, 2);
		size_t len = (size_t)sqlite3_column_bytes(s->last, 2);
		first = sqlite3_column_int64(s->last, 0);
		if (!role || strcmp(role, turn_role_name(t->role)) != 0 || len != t->len ||
		    (len && memcmp(content, t->content, len) != 0))
			is_same = false;
	}
	sqlite3_reset(s->last);
	sqlite3_clear_bindings(s->last);
	if (rc != SQLITE_DONE) {
		log_db_error(s, "reading the last turns");
		return -1;
	}
	if (seen != n_old || !is_same) {
		log_info("store: chat=%lld: the turns to replace are no longer the last; appending",
		         (long long)chat_id);
		return 0;
	}
	sqlite3_bind_int64(s->drop, 1, chat_id);
	sqlite3_bind_int64(s->drop, 2, first);
	return run(s, s->drop, "deleting the replaced turns");
}

static void history_append(struct store *base, int64_t chat_id, const struct turn *old, size_t n_old,
			   const struct turn *turns, size_t n, int64_t update_id, store_done_cb cb, void *arg)
{
	struct store_sqlite *s = from(base);
	int err = run(s, s->begin, "BEGIN");
	if (!err && n_old)
		err = drop_replaced(s, chat_id, old, n_old);
	for (size_t i = 0; i < n && !err; i++) {
		sqlite3_bind_int64(s->append, 1, chat_id);
		sqlite3_bind_text(s->append, 2, turn_role_name(turns[i].role), -1, SQLITE_STATIC);
		sqlite3_bind_text(s->append, 3, turns[i].content, (int)turns[i].len, SQLITE_STATIC);
		sqlite3_bind_int64(s->append, 4, (sqlite3_int64)time(NULL));
		sqlite3_bind_int(s->append, 5, turns[i].is_parts);
		err = run(s, s->append, "appending a turn");
	}
	if (!err && update_id)
		err = mark_done(s, update_id);
	if (!err)
		err = run(s, s->commit, "COMMIT");
	if (err && run(s, s->rollback, "ROLLBACK") != 0)
		log_error("store: sqlite: the transaction could not be rolled back");
	store_answer_done(base, cb, arg, err);
}

static void history_clear(struct store *base, int64_t chat_id, store_done_cb cb, void *arg)
{
	struct store_sqlite *s = from(base);
	sqlite3_bind_int64(s->clear, 1, chat_id);
	store_answer_done(base, cb, arg, run(s, s->clear, "clearing history"));
}

static void update_claim(struct store *base, int64_t update_id, int64_t chat_id, const char *raw,
			 size_t raw_len, store_claim_cb cb, void *arg)
{
	struct store_sqlite *s = from(base);
	sqlite3_bind_int64(s->claim, 1, update_id);
	sqlite3_bind_int64(s->claim, 2, chat_id);
	sqlite3_bind_text64(s->claim, 3, raw, raw_len, SQLITE_STATIC, SQLITE_UTF8);
	sqlite3_bind_int64(s->claim, 4, (sqlite3_int64)time(NULL));
	int err = run(s, s->claim, "journaling an update");
	store_answer_claim(base, cb, arg, err, !err && sqlite3_changes(s->db) > 0);
}

static void update_done(struct store *base, int64_t update_id, store_done_cb cb, void *arg)
{
	store_answer_done(base, cb, arg, mark_done(from(base), update_id));
}

static void update_release(struct store *base, int64_t update_id, store_done_cb cb, void *arg)
{
	struct store_sqlite *s = from(base);
	sqlite3_bind_int64(s->release, 1, update_id);
	store_answer_done(base, cb, arg, run(s, s->release, "releasing an update"));
}

static void update_pending(struct store *base, store_pending_cb cb, void *arg)
{
	struct store_sqlite *s = from(base);
	char **raws = NULL;
	size_t n = 0, cap = 0;
	int rc, err = 0;
	while ((rc = sqlite3_step(s->pending)) == SQLITE_ROW) {
		const char *raw = (const char *)sqlite3_column_text(s->pending, 0);
		if (!raw)
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char **p = realloc(raws, ncap * sizeof *p);
			if (!p)
				break;
			raws = p;
			cap = ncap;
		}
		if (!(raws[n] = strdup(raw)))
			break;
		n++;
	}
	if (rc != SQLITE_DONE) {
		log_error("store: sqlite: reading the update journal: %s",
			  rc == SQLITE_ROW ? "out of memory" : sqlite3_errmsg(s->db));
		err = -1;
	}
	sqlite3_reset(s->pending);
	store_answer_pending(base, cb, arg, err, raws, n);
}

static void setting_get(struct store *base, int64_t scope, const char *key, store_value_cb cb, void *arg)
{
	struct store_sqlite *s = from(base);
	int err = 0;
	sqlite3_bind_int64(s->get, 1, scope);
	sqlite3_bind_text(s->get, 2, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s->get);
	const char *value = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s->get, 0) : NULL;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		log_db_error(s, "reading a setting");
		err = -1;
	}
	/* Copied before the statement is reset, which frees the row. */
	store_answer_value(base, cb, arg, err, value);
	sqlite3_reset(s->get);
	sqlite3_clear_bindings(s->get);
}

static void setting_set(struct store *base, int64_t scope, const char *key, const char *value,
			store_done_cb cb, void *arg)
{
	struct store_sqlite *s = from(base);
	sqlite3_bind_int64(s->set, 1, scope);
	sqlite3_bind_text(s->set, 2, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(s->set, 3, value, -1, SQLITE_STATIC);
	store_answer_done(base, cb, arg, run(s, s->set, "writing a setting"));
}

static void setting_change(struct store *base, int64_t scope, const char *key, store_change_fn change,
			   void *change_arg, store_done_cb cb, void *arg)
{
	struct store_sqlite *s = from(base);
	int err = run(s, s->begin, "BEGIN");
	if (!err) {
		sqlite3_bind_int64(s->get, 1, scope);
		sqlite3_bind_text(s->get, 2, key, -1, SQLITE_STATIC);
		int rc = sqlite3_step(s->get);
		char *value = change(change_arg, rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s->get, 0)
		                                                  : NULL);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
			log_db_error(s, "reading a setting");
			err = -1;
		}
		sqlite3_reset(s->get);
		sqlite3_clear_bindings(s->get);
		if (!err && value) {
			sqlite3_bind_int64(s->set, 1, scope);
			sqlite3_bind_text(s->set, 2, key, -1, SQLITE_STATIC);
			sqlite3_bind_text(s->set, 3, value, -1, SQLITE_STATIC);
			err = run(s, s->set, "writing a setting");
		}
		free(value);
	}
	if (!err)
		err = run(s, s->commit, "COMMIT");
	if (err && run(s, s->rollback, "ROLLBACK") != 0)
		log_error("store: sqlite: the transaction could not be rolled back");
	store_answer_done(base, cb, arg, err);
}

static void setting_scan(struct store *base, const char *key, store_scan_cb cb, void *arg)
{
	struct store_sqlite *s = from(base);
	int64_t *scopes = NULL;
	char **values = NULL;
	size_t n = 0, cap = 0;
	int err = 0, rc;
	sqlite3_bind_text(s->scan, 1, key, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(s->scan)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			int64_t *sc = realloc(scopes, cap * sizeof *sc);
			if (sc)
				scopes = sc;
			char **v = realloc(values, cap * sizeof *v);
			if (v)
				values = v;
			if (!sc || !v) {
				err = -1;
				break;
			}
		}
		const char *value = (const char *)sqlite3_column_text(s->scan, 1);
		if (!value)
			continue;
		if (!(values[n] = strdup(value))) {
			err = -1;
			break;
		}
		scopes[n++] = sqlite3_column_int64(s->scan, 0);
	}
	if (!err && rc != SQLITE_DONE) {
		log_db_error(s, "reading settings");
		err = -1;
	}
	sqlite3_reset(s->scan);
	sqlite3_clear_bindings(s->scan);
	store_answer_scan(base, cb, arg, err, scopes, values, n);
}

static void store_sqlite_free(struct store *base)
{
	struct store_sqlite *s = from(base);
	sqlite3_stmt *all[] = {s->load,  s->append, s->clear,  s->claim,    s->done, s->release,
			       s->pending, s->get, s->set,    s->begin, s->commit, s->rollback,
			       s->last,    s->drop, s->scan};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		sqlite3_finalize(all[i]);
	sqlite3_close(s->db);
	store_clear(&s->base);
	free(s);
}

static const struct store_ops sqlite_ops = {
	.name = "sqlite",
	.answers_at_once = true,
	.history_load = history_load,
	.history_append = history_append,
	.history_clear = history_clear,
	.update_claim = update_claim,
	.update_done = update_done,
	.update_release = update_release,
	.update_pending = update_pending,
	.setting_get = setting_get,
	.setting_set = setting_set,
	.setting_change = setting_change,
	.setting_scan = setting_scan,
	.free = store_sqlite_free,
};

static int read_version(struct store_sqlite *s)
{
	sqlite3_stmt *st;
	int version = -1;
	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return version;
}

/*
 * Brings the schema up to date in one write transaction. Several processes
 * may open a new database at once (parallel serverless invocations): the
 * version is read inside the transaction, so only one of them migrates.
 */
static int migrate(struct store_sqlite *s, char *err, size_t errlen)
{
	char *msg = NULL;
	/* Up to date: no write lock needed (a writer holding it must not stop every start). */
	if (read_version(s) == SCHEMA_VERSION)
		return 0;
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "cannot lock the database: %s", msg ? msg : sqlite3_errmsg(s->db));
		sqlite3_free(msg);
		return -1;
	}
	int version = read_version(s);
	if (version < 0 || version > SCHEMA_VERSION) {
		if (version < 0)
			snprintf(err, errlen, "cannot read the schema version: %s", sqlite3_errmsg(s->db));
		else
			snprintf(err, errlen, "the database has schema version %d, newer than this tgllm (%d)",
				 version, SCHEMA_VERSION);
		goto fail;
	}
	for (; version < SCHEMA_VERSION; version++) {
		char sql[64];
		snprintf(sql, sizeof sql, "PRAGMA user_version = %d", version + 1);
		if (sqlite3_exec(s->db, migrations[version], NULL, NULL, &msg) != SQLITE_OK ||
		    sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
			snprintf(err, errlen, "cannot upgrade the schema to version %d: %s", version + 1,
				 msg ? msg : "unknown error");
			sqlite3_free(msg);
			goto fail;
		}
	}
	if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "cannot commit the schema: %s", msg ? msg : "unknown error");
		sqlite3_free(msg);
		goto fail;
	}
	return 0;
fail:
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

static int prepare(struct store_sqlite *s, sqlite3_stmt **st, const char *sql, char *err, size_t errlen)
{
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) == SQLITE_OK)
		return 0;
	snprintf(err, errlen, "cannot prepare a statement: %s", sqlite3_errmsg(s->db));
	return -1;
}

/*
 * Switching a new database to WAL needs it to itself, and SQLite answers
 * "locked" at once rather than through the busy handler while another
 * process (a parallel cold start) is doing the same: so wait here, bounded.
 */
static int set_wal(struct store_sqlite *s)
{
	int rc = SQLITE_BUSY;
	for (int i = 0; i < 200 && (rc == SQLITE_BUSY || rc == SQLITE_LOCKED); i++) {
		if (i > 0) {
			struct timespec pause = {0, 25 * 1000 * 1000};
			nanosleep(&pause, NULL);
		}
		rc = sqlite3_exec(s->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
	}
	return rc;
}

/*
 * The database holds people's conversations and their pending messages: it is
 * created readable by the bot's user only, whatever the umask (SQLite gives
 * its WAL and shared-memory files the database file's mode). A file that
 * exists keeps the mode its owner gave it. When this open fails, SQLite's
 * own open says why.
 */
static void create_private(const char *path)
{
	if (strcmp(path, ":memory:") == 0 || path[0] == '\0')
		return;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
}

int store_sqlite_open(const char *path, struct event_base *base, struct store **out, char *err, size_t errlen)
{
	struct store_sqlite *s = calloc(1, sizeof *s);
	if (!s || store_init(&s->base, &sqlite_ops, base) != 0) {
		free(s);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	create_private(path);
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		snprintf(err, errlen, "cannot open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
		goto fail;
	}
	char *msg = NULL;
	/* WAL: readers never wait for the writer; NORMAL sync is durable across crashes of the process. */
	if (sqlite3_busy_timeout(s->db, 5000) != SQLITE_OK || set_wal(s) != SQLITE_OK ||
	    sqlite3_exec(s->db, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON", NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "cannot set up %s: %s", path, msg ? msg : sqlite3_errmsg(s->db));
		sqlite3_free(msg);
		goto fail;
	}
	if (migrate(s, err, errlen) != 0)
		goto fail;
	if (prepare(s, &s->load,
		    "SELECT role, content, is_parts FROM messages WHERE chat_id = ?1 ORDER BY id DESC LIMIT ?2",
		    err, errlen) ||
	    prepare(s, &s->append,
		    "INSERT INTO messages (chat_id, role, content, created_at, is_parts) VALUES (?1, ?2, ?3, ?4, ?5)", err,
		    errlen) ||
	    prepare(s, &s->clear, "DELETE FROM messages WHERE chat_id = ?1", err, errlen) ||
	    prepare(s, &s->claim,
		    "INSERT OR IGNORE INTO updates (update_id, chat_id, state, body, received_at) "
		    "VALUES (?1, ?2, 'pending', ?3, ?4)",
		    err, errlen) ||
	    prepare(s, &s->done, "UPDATE updates SET state = 'done', body = NULL WHERE update_id = ?1", err,
		    errlen) ||
	    prepare(s, &s->release, "DELETE FROM updates WHERE update_id = ?1 AND state = 'pending'", err,
		    errlen) ||
	    prepare(s, &s->pending, "SELECT body FROM updates WHERE state = 'pending' ORDER BY update_id",
		    err, errlen) ||
	    prepare(s, &s->get, "SELECT value FROM settings WHERE scope = ?1 AND key = ?2", err, errlen) ||
	    prepare(s, &s->set, "INSERT OR REPLACE INTO settings (scope, key, value) VALUES (?1, ?2, ?3)",
		    err, errlen) ||
	    prepare(s, &s->last,
		    "SELECT id, role, content FROM messages WHERE chat_id = ?1 ORDER BY id DESC LIMIT ?2", err,
		    errlen) ||
	    prepare(s, &s->drop, "DELETE FROM messages WHERE chat_id = ?1 AND id >= ?2", err, errlen) ||
	    prepare(s, &s->scan, "SELECT scope, value FROM settings WHERE key = ?1", err, errlen) ||
	    prepare(s, &s->begin, "BEGIN IMMEDIATE", err, errlen) ||
	    prepare(s, &s->commit, "COMMIT", err, errlen) || prepare(s, &s->rollback, "ROLLBACK", err, errlen))
		goto fail;

	char prune[128];
	snprintf(prune, sizeof prune, "DELETE FROM updates WHERE state = 'done' AND received_at < %lld",
		 (long long)time(NULL) - JOURNAL_KEEP_S);
	if (sqlite3_exec(s->db, prune, NULL, NULL, &msg) != SQLITE_OK) {
		log_warn("store: sqlite: cannot prune the update journal: %s", msg ? msg : "?");
		sqlite3_free(msg);
	}
	*out = &s->base;
	return 0;
fail:
	store_sqlite_free(&s->base);
	return -1;
}
