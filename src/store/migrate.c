/*
 * tgllm migrate: a SQLite store copied into a PostgreSQL one (migrate.h).
 * Blocking libpq and the sqlite3 API directly: a command run once, with no
 * event loop to keep free.
 */
#include "store/migrate.h"

#include <errno.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/log.h"
#include "store/backend.h"

/* One table's rows: every column of select is $1..$n of insert, as text (PostgreSQL casts it). */
struct copy {
	const char *what;
	const char *select;
	const char *insert;
	int n;
};

/* ORDER BY id: the target's BIGSERIAL numbers each chat's turns in the order they were stored. */
static const struct copy turns_v2 = {
    "history",
    "SELECT chat_id, role, content, is_parts, created_at FROM messages ORDER BY id",
    "INSERT INTO tgllm_messages (chat_id, role, content, is_parts, created_at) VALUES ($1, $2, $3, $4, $5)",
    5,
};
/* Schema version 1 had no is_parts: every turn was text. */
static const struct copy turns_v1 = {
    "history",
    "SELECT chat_id, role, content, 0, created_at FROM messages ORDER BY id",
    "INSERT INTO tgllm_messages (chat_id, role, content, is_parts, created_at) VALUES ($1, $2, $3, $4, $5)",
    5,
};
/* The SQLite store is the one being moved: its value of a setting wins over one the target has. */
static const struct copy settings = {
    "settings",
    "SELECT scope, key, value FROM settings",
    "INSERT INTO tgllm_settings (scope, key, value) VALUES ($1, $2, $3) "
    "ON CONFLICT (scope, key) DO UPDATE SET value = EXCLUDED.value",
    3,
};
/* Pending updates are replayed by the bot at its next start, from the target. */
static const struct copy pending = {
    "pending updates",
    "SELECT update_id, chat_id, body, received_at FROM updates WHERE state = 'pending' ORDER BY update_id",
    "INSERT INTO tgllm_updates (update_id, chat_id, state, body, received_at) "
    "VALUES ($1, $2, 'pending', $3, $4) ON CONFLICT (update_id) DO NOTHING",
    4,
};
/*
 * Done ones too (bodiless, as the journal keeps them): Telegram may deliver
 * the last updates the SQLite bot answered once more (their offset not yet
 * confirmed when it stopped), and the journal says they were answered.
 */
static const struct copy done = {
    "done updates",
    "SELECT update_id, chat_id, received_at FROM updates WHERE state = 'done'",
    "INSERT INTO tgllm_updates (update_id, chat_id, state, body, received_at) "
    "VALUES ($1, $2, 'done', NULL, $3) ON CONFLICT (update_id) DO NOTHING",
    3,
};

/* err = "what: the first line of msg". */
static void set_error(char *err, size_t errlen, const char *what, const char *msg)
{
	if (!msg || !*msg)
		msg = "unknown error";
	snprintf(err, errlen, "%s: %.*s", what, (int)strcspn(msg, "\n"), msg);
}

/* Runs sql on the target; -1 with err set. *out (when asked for) is the caller's to PQclear. */
static int pg_run(PGconn *pc, const char *sql, PGresult **out, char *err, size_t errlen)
{
	PGresult *r = PQexecParams(pc, sql, 0, NULL, NULL, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		set_error(err, errlen, "PostgreSQL", r ? PQresultErrorMessage(r) : PQerrorMessage(pc));
		PQclear(r);
		return -1;
	}
	if (out)
		*out = r;
	else
		PQclear(r);
	return 0;
}

/* Copies one table's rows; *count is what the target took (a conflict left out is not counted). */
static int copy_rows(sqlite3 *db, PGconn *pc, const struct copy *c, long long *count, char *err,
                     size_t errlen)
{
	sqlite3_stmt *st = NULL;
	char *values[5] = {0};
	int result = -1, rc;
	PGresult *prep = PQprepare(pc, "", c->insert, c->n, NULL);
	if (PQresultStatus(prep) != PGRES_COMMAND_OK) {
		set_error(err, errlen, "PostgreSQL", prep ? PQresultErrorMessage(prep) : PQerrorMessage(pc));
		goto out;
	}
	if (sqlite3_prepare_v2(db, c->select, -1, &st, NULL) != SQLITE_OK) {
		set_error(err, errlen, "reading the SQLite store", sqlite3_errmsg(db));
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (int i = 0; i < c->n; i++) {
			if (sqlite3_column_type(st, i) == SQLITE_NULL)
				continue;
			const char *text = (const char *)sqlite3_column_text(st, i);
			/* Text PostgreSQL refuses (invalid UTF-8, a NUL) is stored as the store's own writes
			 * are. */
			if (!text ||
			    !(values[i] = store_postgres_text(text, (size_t)sqlite3_column_bytes(st, i)))) {
				snprintf(err, errlen, "out of memory");
				goto out;
			}
		}
		PGresult *r = PQexecPrepared(pc, "", c->n, (const char *const *)values, NULL, NULL, 0);
		for (int i = 0; i < c->n; i++) {
			free(values[i]);
			values[i] = NULL;
		}
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			char what[64];
			snprintf(what, sizeof what, "copying %s", c->what);
			set_error(err, errlen, what, r ? PQresultErrorMessage(r) : PQerrorMessage(pc));
			PQclear(r);
			goto out;
		}
		*count += atoll(PQcmdTuples(r));
		PQclear(r);
	}
	if (rc != SQLITE_DONE) {
		set_error(err, errlen, "reading the SQLite store", sqlite3_errmsg(db));
		goto out;
	}
	result = 0;
out:
	for (int i = 0; i < c->n; i++)
		free(values[i]);
	sqlite3_finalize(st);
	PQclear(prep);
	return result;
}

/* One integer a query gives; -1 with err set. */
static int sqlite_int(sqlite3 *db, const char *sql, long long *out, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	if (rc != SQLITE_ROW)
		set_error(err, errlen, "reading the SQLite store", sqlite3_errmsg(db));
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

/* Opens path read-only and checks it is a tgllm store this tgllm can read; *version its schema. */
static int open_source(const char *path, sqlite3 **db, long long *version, char *err, size_t errlen)
{
	struct stat sb;
	/* SQLite's "unable to open database file" would not say why. */
	if (stat(path, &sb) != 0) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "cannot open %s: %s", path,
		         *db ? sqlite3_errmsg(*db) : "out of memory");
		return -1;
	}
	/* A bot still running on the file writes meanwhile: the copy reads one snapshot, after its write. */
	if (sqlite3_busy_timeout(*db, 5000) != SQLITE_OK ||
	    sqlite_int(*db, "PRAGMA user_version", version, err, errlen) != 0)
		return -1;
	if (*version == 0) {
		snprintf(err, errlen, "%s is not a tgllm store (no schema version)", path);
		return -1;
	}
	if (*version > store_sqlite_schema_version()) {
		snprintf(
		    err, errlen,
		    "%s has schema version %lld, newer than this tgllm (%d): use the tgllm that wrote it",
		    path, *version, store_sqlite_schema_version());
		return -1;
	}
	return 0;
}

static int copy_all(sqlite3 *db, long long version, PGconn *pc, char *summary, size_t n, char *err,
                    size_t errlen)
{
	long long chats = 0, turns = 0, set = 0, waiting = 0, answered = 0;
	PGresult *r = NULL;
	/* One snapshot of the file, whatever a bot still running on it writes meanwhile. */
	if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		set_error(err, errlen, "reading the SQLite store", sqlite3_errmsg(db));
		goto fail;
	}
	if (sqlite_int(db, "SELECT count(DISTINCT chat_id) FROM messages", &chats, err, errlen) != 0)
		goto fail;
	/*
	 * EXCLUSIVE: a second migrate (or a bot) writing history waits for this
	 * transaction, and then finds the history there.
	 */
	if (pg_run(pc, "BEGIN", NULL, err, errlen) ||
	    pg_run(pc, "LOCK TABLE tgllm_messages IN EXCLUSIVE MODE", NULL, err, errlen) ||
	    pg_run(pc, "SELECT count(*) FROM tgllm_messages", &r, err, errlen))
		goto fail;
	long long there = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (there > 0) {
		snprintf(
		    err, errlen,
		    "the PostgreSQL store already holds history (%lld turns): migrate copies into a store "
		    "without any, so that no conversation is doubled; nothing was copied",
		    there);
		goto fail;
	}
	if (copy_rows(db, pc, version >= 2 ? &turns_v2 : &turns_v1, &turns, err, errlen) ||
	    copy_rows(db, pc, &settings, &set, err, errlen) ||
	    copy_rows(db, pc, &pending, &waiting, err, errlen) ||
	    copy_rows(db, pc, &done, &answered, err, errlen) || pg_run(pc, "COMMIT", NULL, err, errlen))
		goto fail;
	snprintf(summary, n, "%lld chats (%lld turns), %lld settings, %lld pending updates (and %lld done)",
	         chats, turns, set, waiting, answered);
	return 0;
fail:
	PQclear(PQexec(pc, "ROLLBACK"));
	return -1;
}

int migrate_run(const char *from, const char *to)
{
	if (strncmp(from, "sqlite:", 7) != 0 || !from[7]) {
		fprintf(stderr, "tgllm: migrate: --from takes sqlite:PATH (the bot's STORE), not '%s'\n",
		        from);
		return 2;
	}
	if (!store_is_postgres_spec(to)) {
		fprintf(
		    stderr,
		    "tgllm: migrate: --to takes a PostgreSQL store: postgres://USER:PASSWORD@HOST:PORT/DB, "
		    "postgresql://... or libpq's host=... dbname=...\n");
		return 2;
	}
	const char *path = from + 7;
	char err[512], summary[256], shown[512];
	sqlite3 *db = NULL;
	PGconn *pc = NULL;
	long long version = 0;
	int status = 1;
	if (open_source(path, &db, &version, err, sizeof err) != 0) {
		log_print(stderr, "tgllm: migrate: %s", err);
		goto out;
	}
	/* The store's own open: the schema as the bot makes it, and the password in the log's secrets. */
	if (store_postgres_connect(to, &pc, err, sizeof err) != 0) {
		log_print(stderr, "tgllm: migrate: --to: %s", err);
		goto out;
	}
	if (copy_all(db, version, pc, summary, sizeof summary, err, sizeof err) != 0) {
		log_print(stderr, "tgllm: migrate: %s", err);
		goto out;
	}
	store_spec_shown(to, shown, sizeof shown);
	log_print(stdout, "migrate: copied %s from %s to %s", summary, path, shown);
	status = 0;
out:
	PQfinish(pc);
	sqlite3_close(db);
	return status;
}
