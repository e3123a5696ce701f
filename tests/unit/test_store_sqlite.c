/*
 * Unit tests for src/store/sqlite.c through store.h: a database file in a
 * fresh temporary directory per test, driven on an event loop until the
 * callbacks come (bounded by a watchdog). Every operation is checked against
 * store.h's contract: its callback runs once, from the loop, never inside
 * the call that started it.
 *
 * The same cases run against the PostgreSQL store (src/store/postgres.c)
 * when TGLLM_TEST_PG names a database (CTest's unit/test_store_postgres:
 * tests/e2e/pg_server.py makes a throwaway cluster and sets it): each test
 * starts from empty tables; the cases about SQLite's file are skipped there.
 * And against the S3 store when TGLLM_TEST_S3 names an S3 endpoint
 * (unit/test_store_s3_cases: tests/e2e/with_s3.py runs the emulator): each
 * test under a prefix of its own; the cases whose semantics are SQLite's
 * tables' (not the S3 store's objects) are skipped there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <event2/event.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "lib/history.h"
#include "lib/http.h"
#include "store/store.h"

#include "expect.h"

#ifdef TGLLM_POSTGRES
#include <libpq-fe.h>
#endif

/* The PostgreSQL database the cases run against, or NULL: SQLite. */
static const char *pg_url;
/* The S3 endpoint the cases run against (with the key pair in TGLLM_TEST_S3_KEY_ID/_SECRET), or NULL. */
static const char *s3_endpoint;

#define SQLITE_ONLY()                                                                                      \
	do {                                                                                                \
		if (pg_url || s3_endpoint)                                                                  \
			skip();                                                                             \
	} while (0)
/*
 * Cases the S3 store does not keep as the tables do (found by running them
 * there): its operations run in parallel and answer as they end, not in the
 * order started (so a claim and a done mark started together race, and a
 * get may miss the set started before it); a load reads the whole history
 * object (no 2000-turn cap; the 8 MB bound counts the object's JSON, not
 * the contents); no trigger can fail one step of an append.
 */
#define TABLES_ONLY()                                                                                      \
	do {                                                                                                \
		if (s3_endpoint)                                                                            \
			skip();                                                                             \
	} while (0)

#ifdef TGLLM_POSTGRES
/* Runs sql (several statements allowed) on the test's database; the first row's first column into out. */
static void pg_sql(const char *sql, char *out, size_t n)
{
	PGconn *pc = PQconnectdb(pg_url);
	if (PQstatus(pc) != CONNECTION_OK) {
		char copy[512];
		snprintf(copy, sizeof copy, "%s", PQerrorMessage(pc));
		PQfinish(pc);
		fail_msg("connecting to the test's PostgreSQL: %s", copy);
	}
	PQsetNoticeProcessor(pc, NULL, NULL);
	PGresult *r = PQexec(pc, sql);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		char copy[512];
		snprintf(copy, sizeof copy, "%s", PQresultErrorMessage(r));
		PQclear(r);
		PQfinish(pc);
		fail_msg("%s: %s", sql, copy);
	}
	if (out && n)
		snprintf(out, n, "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
	PQfinish(pc);
}
#else
static void pg_sql(const char *sql, char *out, size_t n)
{
	(void)sql;
	(void)out;
	(void)n;
	fail_msg("this build has no PostgreSQL store");
}
#endif

#define WATCHDOG_MS 5000
/* sqlite.c's HISTORY_LOAD_MAX: history_load reads at most this many turns, the newest. */
#define LOAD_MAX 2000

struct fixture {
	char dir[64];
	char path[128];
	char spec[512];
	struct event_base *base;
	struct event *watchdog;
	bool has_timed_out;
	struct store *store;
	struct http_client *http; /* the S3 store's */
};

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct fixture *f = arg;
	f->has_timed_out = true;
	event_base_loopbreak(f->base);
}

static int fixture_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	snprintf(f->dir, sizeof f->dir, "/tmp/tgllm-store-XXXXXX");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof f->path, "%s/tgllm.db", f->dir);
	snprintf(f->spec, sizeof f->spec, "sqlite:%s", f->path);
	if (s3_endpoint) {
		static int tests;
		snprintf(f->spec, sizeof f->spec, "s3://bucket/t%d-%d/", (int)getpid(), ++tests);
	}
	if (pg_url) {
		snprintf(f->spec, sizeof f->spec, "%s", pg_url);
		pg_sql("DROP TABLE IF EXISTS tgllm_messages, tgllm_updates, tgllm_settings, tgllm_schema;"
		       "DROP FUNCTION IF EXISTS test_refuse CASCADE",
		       NULL, 0);
	}
	f->base = event_base_new();
	f->watchdog = f->base ? evtimer_new(f->base, on_watchdog, f) : NULL;
	if (f->base && s3_endpoint)
		f->http = http_client_new(f->base);
	*state = f;
	return f->watchdog && (f->http || !s3_endpoint) ? 0 : -1;
}

static int fixture_teardown(void **state)
{
	struct fixture *f = *state;
	if (!f)
		return 0;
	store_free(f->store);
	http_client_free(f->http);
	if (f->watchdog)
		event_free(f->watchdog);
	if (f->base)
		event_base_free(f->base);
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
		char p[160];
		snprintf(p, sizeof p, "%s%s", f->path, suffixes[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

static struct store *open_store_leased(struct fixture *f, unsigned lease_ms)
{
	struct store_options o = {.spec = f->spec, .lease_ms = lease_ms};
	if (s3_endpoint) {
		o.s3_endpoint = s3_endpoint;
		o.s3_region = "us-east-1";
		o.s3_key_id = getenv("TGLLM_TEST_S3_KEY_ID");
		o.s3_secret = getenv("TGLLM_TEST_S3_SECRET");
	}
	struct store *s = NULL;
	char err[512] = "";
	if (store_open(&o, f->base, f->http, &s, err, sizeof err) != 0)
		fail_msg("store_open(%s): expected success, got -1: %s", f->spec, err);
	if (!s)
		fail_msg("store_open(%s): expected a store, got NULL", f->spec);
	return s;
}

static struct store *open_store(struct fixture *f)
{
	return open_store_leased(f, 0);
}

static void reopen(struct fixture *f)
{
	store_free(f->store);
	f->store = open_store(f);
}

/* ---- one operation: started, then answered from the loop ---- */

struct op {
	const char *what;
	bool has_returned; /* the call that started the operation has returned */
	bool came_inside;  /* a callback ran before that */
	int calls;         /* final callbacks */
	int err;
	bool is_new;
	bool has_value;
	char *value;
	struct history h;
	char **raws;
	size_t n_raws;
	bool came_after_end; /* a pending raw after the final NULL */
	enum store_turn turn;
	bool is_leading;     /* store_lead's last word */
};

static void noted(struct op *o)
{
	if (!o->has_returned)
		o->came_inside = true;
}

static void on_done(void *arg, int err)
{
	struct op *o = arg;
	noted(o);
	o->calls++;
	o->err = err;
}

static void on_history(void *arg, int err, struct history *h)
{
	struct op *o = arg;
	noted(o);
	o->calls++;
	o->err = err;
	history_free(&o->h);
	o->h = *h; /* moved out: the store frees the empty shell */
	*h = (struct history)HISTORY_INIT;
}

static void on_claim(void *arg, int err, bool is_new)
{
	struct op *o = arg;
	noted(o);
	o->calls++;
	o->err = err;
	o->is_new = is_new;
}

static void on_turn(void *arg, int err, enum store_turn turn)
{
	struct op *o = arg;
	noted(o);
	o->calls++;
	o->err = err;
	o->turn = turn;
}

static void on_value(void *arg, int err, const char *value)
{
	struct op *o = arg;
	noted(o);
	o->calls++;
	o->err = err;
	o->has_value = value != NULL;
	free(o->value);
	o->value = value ? strdup(value) : NULL;
}

static void on_pending(void *arg, int err, const char *raw)
{
	struct op *o = arg;
	noted(o);
	if (o->calls)
		o->came_after_end = true;
	if (!raw) {
		o->calls++;
		o->err = err;
		return;
	}
	char **p = realloc(o->raws, (o->n_raws + 1) * sizeof *p);
	if (!p)
		return;
	o->raws = p;
	o->raws[o->n_raws++] = strdup(raw);
}

static void op_free(struct op *o)
{
	history_free(&o->h);
	free(o->value);
	for (size_t i = 0; i < o->n_raws; i++)
		free(o->raws[i]);
	free(o->raws);
	memset(o, 0, sizeof *o);
}

/* Runs the loop until every op in ops[0..n) has been answered, bounded by the watchdog. */
static void run_until_answered(struct fixture *f, struct op **ops, size_t n)
{
	struct timeval tv = {WATCHDOG_MS / 1000, (WATCHDOG_MS % 1000) * 1000};
	f->has_timed_out = false;
	evtimer_add(f->watchdog, &tv);
	for (;;) {
		size_t answered = 0;
		for (size_t i = 0; i < n; i++)
			answered += ops[i]->calls > 0;
		if (answered == n || f->has_timed_out)
			break;
		if (event_base_loop(f->base, EVLOOP_ONCE) < 0)
			break;
	}
	evtimer_del(f->watchdog);
	/* One more turn of the loop: an answer given twice would come now. */
	event_base_loop(f->base, EVLOOP_NONBLOCK);
	for (size_t i = 0; i < n; i++) {
		struct op *o = ops[i];
		if (o->calls == 0)
			fail_msg("%s: expected a callback within %d ms, got none", o->what, WATCHDOG_MS);
		if (o->came_inside)
			fail_msg("%s: expected the callback from the loop, got it inside the call", o->what);
		if (o->calls != 1)
			fail_msg("%s: expected one callback, got %d", o->what, o->calls);
		if (o->came_after_end)
			fail_msg("%s: expected no update after the final NULL, got one", o->what);
	}
}

/* Called right after the call that starts o returns: nothing may have come yet. */
static void started(struct op *o)
{
	if (o->calls || o->n_raws || o->came_inside)
		fail_msg("%s: expected no callback inside the call, got one", o->what);
	o->has_returned = true;
}

static void answered(struct fixture *f, struct op *o)
{
	run_until_answered(f, &o, 1);
}

static void expect_ok(const struct op *o)
{
	if (o->err != 0)
		fail_msg("%s: expected err 0, got %d", o->what, o->err);
}

static void do_append(struct fixture *f, struct store *s, int64_t chat, const struct turn *turns, size_t n,
                      int64_t update_id)
{
	struct op o = {.what = "store_history_append"};
	store_history_append(s, chat, turns, n, update_id, on_done, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	op_free(&o);
}

static struct history do_load(struct fixture *f, struct store *s, int64_t chat)
{
	struct op o = {.what = "store_history_load"};
	store_history_load(s, chat, on_history, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	struct history h = o.h;
	o.h = (struct history)HISTORY_INIT;
	op_free(&o);
	return h;
}

static void do_clear(struct fixture *f, struct store *s, int64_t chat)
{
	struct op o = {.what = "store_history_clear"};
	store_history_clear(s, chat, on_done, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	op_free(&o);
}

static bool do_claim(struct fixture *f, struct store *s, int64_t update_id, int64_t chat, const char *raw)
{
	struct op o = {.what = "store_update_claim"};
	store_update_claim(s, update_id, chat, raw, strlen(raw), on_claim, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	bool is_new = o.is_new;
	op_free(&o);
	return is_new;
}

static void do_update_done(struct fixture *f, struct store *s, int64_t update_id)
{
	struct op o = {.what = "store_update_done"};
	store_update_done(s, update_id, on_done, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	op_free(&o);
}

static void do_release(struct fixture *f, struct store *s, int64_t update_id)
{
	struct op o = {.what = "store_update_release"};
	store_update_release(s, update_id, on_done, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	op_free(&o);
}

/*
 * The pending updates' texts joined with '|' (e.g. "a|b"), into out. On
 * PostgreSQL, pending gives only updates whose holder stopped: the cases
 * that expect SQLite's "every update not done" first make every claim as
 * if its process had stopped (another owner, the lease run out).
 */
static void do_pending(struct fixture *f, struct store *s, char *out, size_t n)
{
	if (pg_url)
		pg_sql("UPDATE tgllm_updates SET owner = 'stopped', lease_until = '-infinity'", NULL, 0);
	struct op o = {.what = "store_update_pending"};
	store_update_pending(s, on_pending, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	size_t used = 0;
	out[0] = '\0';
	for (size_t i = 0; i < o.n_raws && used < n; i++)
		used += (size_t)snprintf(out + used, n - used, "%s%s", i ? "|" : "", o.raws[i]);
	op_free(&o);
}

/* The setting's value (malloc'd) or NULL when not set. */
static char *do_get(struct fixture *f, struct store *s, int64_t scope, const char *key)
{
	struct op o = {.what = "store_setting_get"};
	store_setting_get(s, scope, key, on_value, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	if (o.has_value && !o.value)
		fail_msg("store_setting_get: out of memory");
	char *v = o.value;
	o.value = NULL;
	op_free(&o);
	return v;
}

static void do_set(struct fixture *f, struct store *s, int64_t scope, const char *key, const char *value)
{
	struct op o = {.what = "store_setting_set"};
	store_setting_set(s, scope, key, value, on_done, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	op_free(&o);
}

static struct turn turn(enum turn_role role, const char *content)
{
	return (struct turn){role, (char *)content, strlen(content), false};
}

static void expect_history(const char *what, const struct turn *expected, size_t n, const struct history *h)
{
	if (h->len != n)
		fail_msg("%s: expected %zu turns, got %zu", what, n, h->len);
	for (size_t i = 0; i < n; i++) {
		if (h->turns[i].role != expected[i].role)
			fail_msg("%s: turn %zu: expected role %s, got %s", what, i,
			         turn_role_name(expected[i].role), turn_role_name(h->turns[i].role));
		if (h->turns[i].len != expected[i].len ||
		    memcmp(h->turns[i].content, expected[i].content, expected[i].len))
			fail_msg("%s: turn %zu: expected \"%s\", got \"%s\"", what, i, expected[i].content,
			         h->turns[i].content);
	}
}

static void expect_setting(struct fixture *f, struct store *s, int64_t scope, const char *key,
                           const char *expected)
{
	char what[128];
	snprintf(what, sizeof what, "setting %lld/%s", (long long)scope, key);
	char *v = do_get(f, s, scope, key);
	char copy[256];
	snprintf(copy, sizeof copy, "%s", v ? v : "");
	bool is_null = v == NULL;
	free(v);
	if (!expected) {
		if (!is_null)
			fail_msg("%s: expected NULL (not set), got \"%s\"", what, copy);
		return;
	}
	if (is_null)
		fail_msg("%s: expected \"%s\", got NULL", what, expected);
	expect_str(what, expected, copy);
}

static void expect_pending(struct fixture *f, struct store *s, const char *expected, const char *what)
{
	char got[1024];
	do_pending(f, s, got, sizeof got);
	expect_str(what, expected, got);
}

/* ---- direct SQL on the file, for what store.h cannot show ---- */

static void sql_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	char *msg = NULL;
	if (sqlite3_open(path, &db) != SQLITE_OK || sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		char copy[256];
		snprintf(copy, sizeof copy, "%s", msg ? msg : (db ? sqlite3_errmsg(db) : "out of memory"));
		sqlite3_free(msg);
		sqlite3_close(db);
		fail_msg("SQL \"%s\" on %s: %s", sql, path, copy);
	}
	sqlite3_close(db);
}

/* The first column of the first row as text, into out. */
static void sql_text(const char *path, const char *sql, char *out, size_t n)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	out[0] = '\0';
	if (sqlite3_open(path, &db) != SQLITE_OK || sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		char copy[256];
		snprintf(copy, sizeof copy, "%s", db ? sqlite3_errmsg(db) : "out of memory");
		sqlite3_close(db);
		fail_msg("SQL \"%s\" on %s: %s", sql, path, copy);
	}
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* ---- the tests ---- */

static void test_every_operation_answers_from_the_loop_not_inside_the_call(void **state)
{
	TABLES_ONLY();
	struct fixture *f = *state;
	f->store = open_store(f);
	struct turn t = turn(TURN_USER, "hi");
	struct op ops[9] = {
	    {.what = "store_update_claim"},  {.what = "store_history_append"},
	    {.what = "store_history_load"},  {.what = "store_update_pending"},
	    {.what = "store_update_done"},   {.what = "store_update_release"},
	    {.what = "store_setting_set"},   {.what = "store_setting_get"},
	    {.what = "store_history_clear"},
	};
	/* All started before the loop runs once: none may answer inside its call, all must answer after. */
	store_update_claim(f->store, 1, 10, "{}", 2, on_claim, &ops[0]);
	started(&ops[0]);
	store_history_append(f->store, 10, &t, 1, 0, on_done, &ops[1]);
	started(&ops[1]);
	store_history_load(f->store, 10, on_history, &ops[2]);
	started(&ops[2]);
	store_update_pending(f->store, on_pending, &ops[3]);
	started(&ops[3]);
	store_update_done(f->store, 1, on_done, &ops[4]);
	started(&ops[4]);
	store_update_release(f->store, 2, on_done, &ops[5]);
	started(&ops[5]);
	store_setting_set(f->store, 10, "k", "v", on_done, &ops[6]);
	started(&ops[6]);
	store_setting_get(f->store, 10, "k", on_value, &ops[7]);
	started(&ops[7]);
	store_history_clear(f->store, 10, on_done, &ops[8]);
	started(&ops[8]);
	struct op *all[9];
	for (size_t i = 0; i < 9; i++)
		all[i] = &ops[i];
	run_until_answered(f, all, 9);
	for (size_t i = 0; i < 9; i++)
		expect_ok(&ops[i]);
	/* Each saw the store as the operations before it left it. */
	expect_int("claim of a new update: is_new", 1, ops[0].is_new);
	expect_int("history loaded after one append: turns", 1, ops[2].h.len);
	/* On PostgreSQL the claim is this process's, its lease running: not one to take over. */
	expect_int("pending after the claim: updates", pg_url ? 0 : 1, ops[3].n_raws);
	expect_str("setting read after it was set", "v", ops[7].value ? ops[7].value : "(null)");
	for (size_t i = 0; i < 9; i++)
		op_free(&ops[i]);
}

/* Answers come in the order the operations were started. */
static int order[16];
static size_t n_order;

static void on_done_in_order(void *arg, int err)
{
	(void)err;
	if (n_order < 16)
		order[n_order++] = (int)(intptr_t)arg;
}

static void on_value_in_order(void *arg, int err, const char *value)
{
	(void)value;
	on_done_in_order(arg, err);
}

static void test_answers_come_in_the_order_started(void **state)
{
	TABLES_ONLY();
	struct fixture *f = *state;
	f->store = open_store(f);
	n_order = 0;
	store_setting_set(f->store, 1, "a", "1", on_done_in_order, (void *)1);
	store_setting_get(f->store, 1, "a", on_value_in_order, (void *)2);
	store_history_clear(f->store, 1, on_done_in_order, (void *)3);
	store_update_done(f->store, 5, on_done_in_order, (void *)4);
	struct timeval tv = {WATCHDOG_MS / 1000, 0};
	f->has_timed_out = false;
	evtimer_add(f->watchdog, &tv);
	while (n_order < 4 && !f->has_timed_out)
		event_base_loop(f->base, EVLOOP_ONCE);
	evtimer_del(f->watchdog);
	expect_int("answers", 4, n_order);
	for (int i = 0; i < 4; i++) {
		char what[32];
		snprintf(what, sizeof what, "answer %d", i + 1);
		expect_int(what, i + 1, order[i]);
	}
}

/* ---- many operations at once: answered in the order started, each read seeing the writes before it ---- */

#define BURST 40

struct burst {
	int answered[3 * BURST]; /* the order answers came in */
	int n;
	int bad_reads, errors, not_new;
	char got[BURST][16];
};

struct burst_op {
	struct burst *b;
	int index;
};

static struct burst_op burst_ops[3 * BURST];

static void burst_note(struct burst_op *o, int err)
{
	if (err)
		o->b->errors++;
	if (o->b->n < 3 * BURST)
		o->b->answered[o->b->n++] = o->index;
}

static void on_burst_done(void *arg, int err)
{
	burst_note(arg, err);
}

static void on_burst_value(void *arg, int err, const char *value)
{
	struct burst_op *o = arg;
	int i = o->index / 3;
	snprintf(o->b->got[i], sizeof o->b->got[i], "%s", value ? value : "(unset)");
	char want[16];
	snprintf(want, sizeof want, "%d", i);
	o->b->bad_reads += !value || strcmp(value, want) != 0;
	burst_note(o, err);
}

static void on_burst_claim(void *arg, int err, bool is_new)
{
	struct burst_op *o = arg;
	o->b->not_new += !is_new;
	burst_note(o, err);
}

/*
 * The gate claims updates as they come and hands them on in the order the
 * claims are answered: a backend with several connections (PostgreSQL) must
 * still answer in the order started, and a read must see the write started
 * before it.
 */
static void test_a_burst_is_answered_in_order_and_reads_its_writes(void **state)
{
	TABLES_ONLY();
	struct fixture *f = *state;
	f->store = open_store(f);
	static struct burst b;
	memset(&b, 0, sizeof b);
	for (int i = 0; i < BURST; i++) {
		char v[16];
		snprintf(v, sizeof v, "%d", i);
		for (int k = 0; k < 3; k++)
			burst_ops[3 * i + k] = (struct burst_op){&b, 3 * i + k};
		store_setting_set(f->store, i % 3, "burst", v, on_burst_done, &burst_ops[3 * i]);
		store_setting_get(f->store, i % 3, "burst", on_burst_value, &burst_ops[3 * i + 1]);
		store_update_claim(f->store, 1000 + i, i % 3, "{}", 2, on_burst_claim, &burst_ops[3 * i + 2]);
	}
	expect_int("answers inside the calls", 0, b.n);
	struct timeval tv = {WATCHDOG_MS / 1000, 0};
	f->has_timed_out = false;
	evtimer_add(f->watchdog, &tv);
	while (b.n < 3 * BURST && !f->has_timed_out)
		event_base_loop(f->base, EVLOOP_ONCE);
	evtimer_del(f->watchdog);
	expect_int("answers", 3 * BURST, b.n);
	expect_int("errors", 0, b.errors);
	for (int i = 0; i < 3 * BURST; i++)
		if (b.answered[i] != i)
			fail_msg("answer %d: expected operation %d's, got operation %d's", i, i, b.answered[i]);
	for (int i = 0; i < BURST; i++) {
		char want[16];
		snprintf(want, sizeof want, "%d", i);
		expect_str("a get after its set", want, b.got[i]);
	}
	expect_int("claims not new", 0, b.not_new);
}

/* A callback may start the next operation: it is answered on a later turn of the loop, not inside. */
struct chain {
	struct fixture *f;
	struct op load;
	bool did_start_load;
};

static void on_claim_then_load(void *arg, int err, bool is_new)
{
	(void)err;
	(void)is_new;
	struct chain *c = arg;
	c->load.what = "store_history_load started from a claim's callback";
	store_history_load(c->f->store, 1, on_history, &c->load);
	started(&c->load);
	c->did_start_load = true;
}

static void test_callback_may_start_another_operation(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	struct chain c = {.f = f};
	store_update_claim(f->store, 1, 1, "{}", 2, on_claim_then_load, &c);
	struct timeval tv = {WATCHDOG_MS / 1000, 0};
	f->has_timed_out = false;
	evtimer_add(f->watchdog, &tv);
	while (!c.did_start_load && !f->has_timed_out)
		event_base_loop(f->base, EVLOOP_ONCE);
	evtimer_del(f->watchdog);
	if (!c.did_start_load)
		fail_msg("claim: expected its callback within %d ms, got none", WATCHDOG_MS);
	answered(f, &c.load);
	expect_ok(&c.load);
	op_free(&c.load);
}

static void test_history_comes_back_in_order_per_chat_with_roles(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	const struct turn first[] = {
	    turn(TURN_SYSTEM, "Be brief."), turn(TURN_USER, "Привет 👋"),
	    turn(TURN_ASSISTANT, "Hi \"there\"\nline two"),
	    turn(TURN_USER, ""), /* an empty turn is kept, not taken for a bad row */
	};
	const struct turn other[] = {turn(TURN_USER, "another chat")};
	const struct turn second[] = {turn(TURN_USER, "and then?"), turn(TURN_ASSISTANT, "then this.")};
	do_append(f, f->store, 100, first, 4, 0);
	do_append(f, f->store, -100200, other, 1, 0);
	do_append(f, f->store, 100, second, 2, 0);

	const struct turn all[] = {first[0], first[1], first[2], first[3], second[0], second[1]};
	struct history h = do_load(f, f->store, 100);
	expect_history("chat 100 after two appends", all, 6, &h);
	history_free(&h);
	h = do_load(f, f->store, -100200);
	expect_history("chat -100200", other, 1, &h);
	history_free(&h);
	h = do_load(f, f->store, 7);
	expect_history("a chat never written", NULL, 0, &h);
	history_free(&h);
}

static void test_clear_forgets_only_that_chat(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	const struct turn a[] = {turn(TURN_USER, "a1"), turn(TURN_ASSISTANT, "a2")};
	const struct turn b[] = {turn(TURN_USER, "b1")};
	do_append(f, f->store, 1, a, 2, 0);
	do_append(f, f->store, 2, b, 1, 0);
	do_clear(f, f->store, 1);
	struct history h = do_load(f, f->store, 1);
	expect_history("chat 1 after /new", NULL, 0, &h);
	history_free(&h);
	h = do_load(f, f->store, 2);
	expect_history("chat 2 after chat 1's /new", b, 1, &h);
	history_free(&h);
	/* A conversation starts afresh after the clear. */
	const struct turn again[] = {turn(TURN_USER, "fresh")};
	do_append(f, f->store, 1, again, 1, 0);
	h = do_load(f, f->store, 1);
	expect_history("chat 1 after /new and one turn", again, 1, &h);
	history_free(&h);
	do_clear(f, f->store, 999); /* clearing nothing is no error */
}

static void test_claim_is_new_only_the_first_time(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	expect_int("first claim of update 500: is_new", 1,
	           do_claim(f, f->store, 500, 1, "{\"update_id\":500}"));
	expect_int("second claim of update 500: is_new", 0,
	           do_claim(f, f->store, 500, 1, "{\"update_id\":500}"));
	expect_int("claim of update 501: is_new", 1, do_claim(f, f->store, 501, 1, "{\"update_id\":501}"));
	do_update_done(f, f->store, 500);
	expect_int("claim of update 500 once done: is_new", 0, do_claim(f, f->store, 500, 1, "{}"));
}

static void test_pending_gives_claimed_updates_oldest_first_until_done(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	expect_pending(f, f->store, "", "pending in a new store");
	do_claim(f, f->store, 30, 1, "{\"update_id\":30}");
	do_claim(f, f->store, 10, 2, "{\"update_id\":10,\"text\":\"Привет\"}");
	do_claim(f, f->store, 20, 1, "{\"update_id\":20}");
	expect_pending(f, f->store,
	               "{\"update_id\":10,\"text\":\"Привет\"}|{\"update_id\":20}|{\"update_id\":30}",
	               "pending after claims of 30, 10, 20");
	/* A second claim keeps the first text. */
	do_claim(f, f->store, 20, 1, "{\"update_id\":20,\"again\":true}");
	do_update_done(f, f->store, 10);
	expect_pending(f, f->store, "{\"update_id\":20}|{\"update_id\":30}", "pending after 10 is done");
	do_update_done(f, f->store, 20);
	do_update_done(f, f->store, 30);
	expect_pending(f, f->store, "", "pending after all are done");
}

static void test_append_with_update_id_marks_that_update_done(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	do_claim(f, f->store, 77, 5, "{\"update_id\":77}");
	do_claim(f, f->store, 78, 5, "{\"update_id\":78}");
	const struct turn exchange[] = {turn(TURN_USER, "q"), turn(TURN_ASSISTANT, "a")};
	do_append(f, f->store, 5, exchange, 2, 77);
	expect_pending(f, f->store, "{\"update_id\":78}", "pending after the append for update 77");
	expect_int("claim of update 77 after its append: is_new", 0, do_claim(f, f->store, 77, 5, "{}"));
	/* Without an update id, nothing in the journal changes. */
	do_append(f, f->store, 5, exchange, 2, 0);
	expect_pending(f, f->store, "{\"update_id\":78}", "pending after an append without update id");
	struct history h = do_load(f, f->store, 5);
	expect_int("turns after two appends", 4, h.len);
	history_free(&h);
}

/* The turns and the update's done mark are one transaction: when either fails, neither is kept. */
static void test_append_is_all_or_nothing_with_the_done_mark(void **state)
{
	TABLES_ONLY();
	struct fixture *f = *state;
	f->store = open_store(f);
	do_claim(f, f->store, 666, 3, "{\"update_id\":666}");
	do_claim(f, f->store, 667, 3, "{\"update_id\":667}");
	/* Triggers written by another connection make one step of each transaction fail. */
	if (pg_url)
		pg_sql("CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
		       "$$BEGIN RAISE EXCEPTION 'test: refused'; END$$;"
		       "CREATE TRIGGER refuse_done BEFORE UPDATE ON tgllm_updates FOR EACH ROW "
		       "WHEN (NEW.update_id = 666 AND NEW.state = 'done') EXECUTE FUNCTION test_refuse();"
		       "CREATE TRIGGER refuse_poison BEFORE INSERT ON tgllm_messages FOR EACH ROW "
		       "WHEN (NEW.content = 'poison') EXECUTE FUNCTION test_refuse()",
		       NULL, 0);
	else
		sql_exec(f->path,
	         "CREATE TRIGGER refuse_done BEFORE UPDATE ON updates WHEN NEW.update_id = 666 "
	         "BEGIN SELECT RAISE(ABORT, 'test: marking 666 done refused'); END;"
	         "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages WHEN NEW.content = 'poison' "
	         "BEGIN SELECT RAISE(ABORT, 'test: poison refused'); END;");

	const struct turn exchange[] = {turn(TURN_USER, "q666"), turn(TURN_ASSISTANT, "a666")};
	struct op o = {.what = "store_history_append whose done mark fails"};
	store_history_append(f->store, 3, exchange, 2, 666, on_done, &o);
	started(&o);
	answered(f, &o);
	if (o.err == 0)
		fail_msg("%s: expected err -1, got 0", o.what);
	op_free(&o);
	struct history h = do_load(f, f->store, 3);
	expect_history("chat 3 after the append whose done mark failed", NULL, 0, &h);
	history_free(&h);

	const struct turn poisoned[] = {turn(TURN_USER, "q667"), turn(TURN_ASSISTANT, "poison")};
	o = (struct op){.what = "store_history_append whose second turn fails"};
	store_history_append(f->store, 3, poisoned, 2, 667, on_done, &o);
	started(&o);
	answered(f, &o);
	if (o.err == 0)
		fail_msg("%s: expected err -1, got 0", o.what);
	op_free(&o);
	h = do_load(f, f->store, 3);
	expect_history("chat 3 after the append whose second turn failed", NULL, 0, &h);
	history_free(&h);
	expect_pending(f, f->store, "{\"update_id\":666}|{\"update_id\":667}",
	               "pending after both failed appends");

	/* Rolled back cleanly: the store goes on working. */
	const struct turn fine[] = {turn(TURN_USER, "q667"), turn(TURN_ASSISTANT, "a667")};
	do_append(f, f->store, 3, fine, 2, 667);
	h = do_load(f, f->store, 3);
	expect_history("chat 3 after a good append", fine, 2, &h);
	history_free(&h);
	expect_pending(f, f->store, "{\"update_id\":666}", "pending after the good append for 667");
}

static void test_release_forgets_a_pending_update_but_not_a_done_one(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	do_claim(f, f->store, 5, 1, "{\"update_id\":5}");
	do_release(f, f->store, 5);
	expect_pending(f, f->store, "", "pending after releasing update 5");
	expect_int("claim of update 5 after its release: is_new", 1,
	           do_claim(f, f->store, 5, 1, "{\"update_id\":5}"));
	expect_pending(f, f->store, "{\"update_id\":5}", "pending after claiming update 5 again");

	do_claim(f, f->store, 6, 1, "{\"update_id\":6}");
	do_update_done(f, f->store, 6);
	do_release(f, f->store, 6);
	expect_int("claim of update 6 released after done: is_new", 0, do_claim(f, f->store, 6, 1, "{}"));
	do_release(f, f->store, 12345); /* an update never claimed: no error */
}

static void test_settings_are_per_scope_and_key(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	expect_setting(f, f->store, 1, "refused_at", NULL);
	do_set(f, f->store, 1, "refused_at", "1700000000");
	do_set(f, f->store, 2, "refused_at", "1700000001");
	do_set(f, f->store, 1, "lang", "ru");
	do_set(f, f->store, -1001234567890, "lang", "");
	expect_setting(f, f->store, 1, "refused_at", "1700000000");
	expect_setting(f, f->store, 2, "refused_at", "1700000001");
	expect_setting(f, f->store, 1, "lang", "ru");
	expect_setting(f, f->store, -1001234567890, "lang", ""); /* empty, not unset */
	expect_setting(f, f->store, 2, "lang", NULL);
	expect_setting(f, f->store, 3, "refused_at", NULL);
	do_set(f, f->store, 1, "refused_at", "1800000000");
	expect_setting(f, f->store, 1, "refused_at", "1800000000");
	expect_setting(f, f->store, 2, "refused_at", "1700000001");
}

static void test_everything_survives_reopening(void **state)
{
	struct fixture *f = *state;
	bool has_version = !s3_endpoint; /* the S3 store has no schema version */
	f->store = open_store(f);
	const struct turn t[] = {turn(TURN_USER, "remember me"), turn(TURN_ASSISTANT, "I will")};
	do_append(f, f->store, 42, t, 2, 0);
	do_claim(f, f->store, 900, 42, "{\"update_id\":900}");
	do_claim(f, f->store, 901, 42, "{\"update_id\":901}");
	do_update_done(f, f->store, 901);
	do_set(f, f->store, 42, "refused_at", "123");

	reopen(f);
	struct history h = do_load(f, f->store, 42);
	expect_history("chat 42 after reopening", t, 2, &h);
	history_free(&h);
	expect_pending(f, f->store, "{\"update_id\":900}", "pending after reopening");
	expect_int("claim of done update 901 after reopening: is_new", 0,
	           do_claim(f, f->store, 901, 42, "{}"));
	expect_setting(f, f->store, 42, "refused_at", "123");

	if (!has_version)
		return;
	char version[32];
	if (pg_url)
		pg_sql("SELECT version FROM tgllm_schema", version, sizeof version);
	else
		sql_text(f->path, "PRAGMA user_version", version, sizeof version);
	if (strcmp(version, "0") == 0 || version[0] == '\0')
		fail_msg("the schema version after opening: expected the schema's version, got \"%s\"",
		         version);
}

static void expect_private(const char *path, const char *what)
{
	struct stat st;
	if (stat(path, &st) != 0)
		fail_msg("%s: expected the file %s to exist", what, path);
	if ((st.st_mode & 0777) != 0600)
		fail_msg("%s: expected mode 0600 (the bot's user only), got 0%o", what, st.st_mode & 0777);
}

static void test_files_it_creates_are_private_whatever_the_umask(void **state)
{
	SQLITE_ONLY();
	struct fixture *f = *state;
	mode_t old = umask(022);
	f->store = open_store(f);
	const struct turn t[] = {turn(TURN_USER, "a secret"), turn(TURN_ASSISTANT, "kept")};
	do_append(f, f->store, 42, t, 2, 0);
	umask(old);
	char p[160];
	expect_private(f->path, "the database");
	snprintf(p, sizeof p, "%s-wal", f->path);
	expect_private(p, "the write-ahead log");
	snprintf(p, sizeof p, "%s-shm", f->path);
	expect_private(p, "the shared-memory index");
}

/* A picture's turn keeps its content-parts flag; one of text stays text, whatever it looks like. */
static void test_a_turn_of_parts_comes_back_as_parts(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	static const char parts[] =
	    "[{\"type\":\"text\",\"text\":\"what is it?\"},"
	    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/jpeg;base64,/9j/\"}}]";
	struct turn t[] = {turn(TURN_USER, parts), turn(TURN_ASSISTANT, "A cat."), turn(TURN_USER, parts)};
	t[0].is_parts = true;
	do_append(f, f->store, 42, t, 3, 0);
	reopen(f);
	struct history h = do_load(f, f->store, 42);
	expect_history("a picture, an answer, text that looks like parts", t, 3, &h);
	expect_int("the picture's turn is parts", 1, h.turns[0].is_parts);
	expect_int("the answer is text", 0, h.turns[1].is_parts);
	expect_int("typed text is text", 0, h.turns[2].is_parts);
	history_free(&h);
}

/* Pictures make turns big: a load reads the newest 8 MB of turns, never fewer than one. */
static void test_a_load_reads_the_newest_8_mb_of_turns(void **state)
{
	TABLES_ONLY();
	struct fixture *f = *state;
	f->store = open_store(f);
	size_t mb = 1u << 20;
	char *big = malloc(mb + 1);
	memset(big, 'x', mb);
	big[mb] = '\0';
	for (int i = 0; i < 9; i++) {
		big[0] = (char)('0' + i);
		const struct turn t[] = {turn(i % 2 ? TURN_ASSISTANT : TURN_USER, big)};
		do_append(f, f->store, 42, t, 1, 0);
	}
	struct history h = do_load(f, f->store, 42);
	expect_int("turns within 8 MB", 8, h.len);
	expect_int("the oldest kept is the second written", '1', h.turns[0].content[0]);
	expect_int("the newest is last", '8', h.turns[7].content[0]);
	history_free(&h);
	big[0] = 'y';
	char *huge = realloc(big, 9 * mb + 1);
	memset(huge, 'z', 9 * mb);
	huge[9 * mb] = '\0';
	const struct turn t[] = {turn(TURN_USER, huge)};
	do_append(f, f->store, 43, t, 1, 0);
	h = do_load(f, f->store, 43);
	expect_int("one turn over 8 MB alone is still read", 1, h.len);
	history_free(&h);
	free(huge);
}

/* A database of the schema before pictures (version 1): its turns are text, and new ones may be parts. */
static void test_a_database_before_pictures_is_upgraded(void **state)
{
	SQLITE_ONLY();
	struct fixture *f = *state;
	sql_exec(
	    f->path,
	    "CREATE TABLE messages (id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, role TEXT NOT NULL,"
	    " content TEXT NOT NULL, created_at INTEGER NOT NULL);"
	    "CREATE INDEX messages_by_chat ON messages (chat_id, id);"
	    "CREATE TABLE updates (update_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL,"
	    " state TEXT NOT NULL CHECK (state IN ('pending', 'done')), body TEXT,"
	    " received_at INTEGER NOT NULL);"
	    "CREATE INDEX updates_pending ON updates (state, update_id);"
	    "CREATE TABLE settings (scope INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
	    " PRIMARY KEY (scope, key));"
	    "INSERT INTO messages (chat_id, role, content, created_at) VALUES (42, 'user', 'old', 1);"
	    "PRAGMA user_version = 1");
	f->store = open_store(f);
	struct turn t[] = {turn(TURN_USER, "[{\"type\":\"text\",\"text\":\"new\"}]")};
	t[0].is_parts = true;
	do_append(f, f->store, 42, t, 1, 0);
	struct history h = do_load(f, f->store, 42);
	const struct turn all[] = {turn(TURN_USER, "old"), t[0]};
	expect_history("the old turn and the new", all, 2, &h);
	expect_int("the old turn is text", 0, h.turns[0].is_parts);
	expect_int("the new one is parts", 1, h.turns[1].is_parts);
	history_free(&h);
}

static void test_database_from_a_newer_tgllm_is_refused(void **state)
{
	SQLITE_ONLY();
	struct fixture *f = *state;
	sql_exec(f->path, "CREATE TABLE future (x); PRAGMA user_version = 1000");
	struct store_options o = {.spec = f->spec};
	struct store *s = NULL;
	char err[512] = "";
	int rc = store_open(&o, f->base, NULL, &s, err, sizeof err);
	if (rc == 0) {
		store_free(s);
		fail_msg("store_open of a database with user_version 1000: expected -1, got success");
	}
	if (!strstr(err, "newer") || !strstr(err, "1000"))
		fail_msg(
		    "store_open of a database with user_version 1000: expected a reason saying it is newer, "
		    "got \"%s\"",
		    err);
	char version[32];
	sql_text(f->path, "PRAGMA user_version", version, sizeof version);
	expect_str("user_version after the refusal", "1000", version);
}

static void test_unopenable_path_and_unknown_spec_are_refused(void **state)
{
	SQLITE_ONLY();
	struct fixture *f = *state;
	struct store *s = NULL;
	char err[512] = "";
	struct store_options o = {.spec = "sqlite:/nonexistent-tgllm-dir/sub/tgllm.db"};
	if (store_open(&o, f->base, NULL, &s, err, sizeof err) == 0) {
		store_free(s);
		fail_msg("store_open in a missing directory: expected -1, got success");
	}
	if (!strstr(err, "/nonexistent-tgllm-dir/sub/tgllm.db"))
		fail_msg("store_open in a missing directory: expected the path in the reason, got \"%s\"",
		         err);
	struct store_options unknown = {.spec = "redis://localhost"};
	err[0] = '\0';
	if (store_open(&unknown, f->base, NULL, &s, err, sizeof err) == 0) {
		store_free(s);
		fail_msg("store_open(redis://localhost): expected -1, got success");
	}
	if (!strstr(err, "redis://localhost"))
		fail_msg("store_open(redis://localhost): expected the spec in the reason, got \"%s\"", err);
}

static void test_two_connections_share_one_file_in_wal_mode(void **state)
{
	SQLITE_ONLY();
	struct fixture *f = *state;
	f->store = open_store(f);
	struct store *other = open_store(f);
	char mode[16];
	sql_text(f->path, "PRAGMA journal_mode", mode, sizeof mode);
	const struct turn t[] = {turn(TURN_USER, "written by one")};
	do_append(f, f->store, 1, t, 1, 0);
	struct history h = do_load(f, other, 1);
	bool seen = h.len == 1;
	history_free(&h);
	bool is_new_there = do_claim(f, other, 3, 1, "{\"update_id\":3}");
	bool is_new_here = do_claim(f, f->store, 3, 1, "{\"update_id\":3}");
	do_set(f, f->store, 1, "k", "v");
	char *v = do_get(f, other, 1, "k");
	bool has_v = v && strcmp(v, "v") == 0;
	free(v);
	store_free(other);
	expect_str("PRAGMA journal_mode of the file", "wal", mode);
	if (!seen)
		fail_msg("history written through one connection: expected it read through the other");
	expect_int("claim through the second connection: is_new", 1, is_new_there);
	expect_int("the same claim through the first: is_new", 0, is_new_here);
	if (!has_v)
		fail_msg("setting written through one connection: expected \"v\" read through the other");
}

static void test_long_history_loads_the_newest_turns(void **state)
{
	TABLES_ONLY();
	struct fixture *f = *state;
	f->store = open_store(f);
	enum { N = LOAD_MAX + 100 };
	struct turn *turns = calloc(N, sizeof *turns);
	char(*texts)[16] = calloc(N, sizeof *texts);
	if (!turns || !texts)
		fail_msg("out of memory");
	for (int i = 0; i < N; i++) {
		snprintf(texts[i], sizeof texts[i], "turn %d", i);
		turns[i] = turn(i % 2 ? TURN_ASSISTANT : TURN_USER, texts[i]);
	}
	do_append(f, f->store, 9, turns, N, 0);
	struct history h = do_load(f, f->store, 9);
	free(turns);
	free(texts);
	size_t len = h.len;
	char first[32] = "", last[32] = "";
	bool in_order = true;
	for (size_t i = 0; i < h.len; i++) {
		char want[16];
		snprintf(want, sizeof want, "turn %zu", N - h.len + i);
		in_order = in_order && strcmp(h.turns[i].content, want) == 0 &&
		           h.turns[i].role == ((N - h.len + i) % 2 ? TURN_ASSISTANT : TURN_USER);
	}
	if (h.len) {
		snprintf(first, sizeof first, "%s", h.turns[0].content);
		snprintf(last, sizeof last, "%s", h.turns[h.len - 1].content);
	}
	history_free(&h);
	expect_int("turns loaded of a history of LOAD_MAX + 100", LOAD_MAX, len);
	expect_str("oldest turn loaded", "turn 100", first);
	expect_str("newest turn loaded", "turn 2099", last);
	if (!in_order)
		fail_msg("turns loaded: expected turn 100 to turn 2099 in order with their roles");
}

/* A row whose role tgllm does not know (written by hand, or by a later version) is left out. */
static void test_turn_with_unknown_role_is_skipped(void **state)
{
	SQLITE_ONLY();
	struct fixture *f = *state;
	f->store = open_store(f);
	const struct turn t[] = {turn(TURN_USER, "before")};
	do_append(f, f->store, 4, t, 1, 0);
	sql_exec(f->path,
	         "INSERT INTO messages (chat_id, role, content, created_at) VALUES (4, 'robot', 'beep', 0)");
	do_append(f, f->store, 4, (const struct turn[]){turn(TURN_ASSISTANT, "after")}, 1, 0);
	struct history h = do_load(f, f->store, 4);
	const struct turn expected[] = {turn(TURN_USER, "before"), turn(TURN_ASSISTANT, "after")};
	expect_history("chat 4 with a 'robot' row between", expected, 2, &h);
	history_free(&h);
}

/* STORE.md: done journal entries are pruned after 7 days (at open); pending ones are kept. */
static void test_open_prunes_done_updates_older_than_a_week(void **state)
{
	SQLITE_ONLY();
	struct fixture *f = *state;
	f->store = open_store(f);
	do_claim(f, f->store, 1, 1, "{\"update_id\":1}");
	do_claim(f, f->store, 2, 1, "{\"update_id\":2}");
	do_claim(f, f->store, 3, 1, "{\"update_id\":3}");
	do_update_done(f, f->store, 1);
	do_update_done(f, f->store, 3);
	store_free(f->store);
	f->store = NULL;
	char sql[256];
	long long old = (long long)time(NULL) - 8 * 86400;
	snprintf(sql, sizeof sql, "UPDATE updates SET received_at = %lld WHERE update_id IN (1, 2)", old);
	sql_exec(f->path, sql);
	f->store = open_store(f);
	expect_int("claim of done update 1, 8 days old, after reopening: is_new", 1,
	           do_claim(f, f->store, 1, 1, "{\"update_id\":1}"));
	expect_int("claim of done update 3, recent: is_new", 0, do_claim(f, f->store, 3, 1, "{}"));
	expect_pending(f, f->store, "{\"update_id\":1}|{\"update_id\":2}",
	               "pending: the 8-day-old update 2 kept");
}

static int callbacks_after_free;

static void count_done(void *arg, int err)
{
	(void)arg;
	(void)err;
	callbacks_after_free++;
}
static void count_history(void *arg, int err, struct history *h)
{
	(void)h;
	count_done(arg, err);
}
static void count_claim(void *arg, int err, bool is_new)
{
	(void)is_new;
	count_done(arg, err);
}
static void count_value(void *arg, int err, const char *value)
{
	(void)value;
	count_done(arg, err);
}
static void count_pending(void *arg, int err, const char *raw)
{
	(void)raw;
	count_done(arg, err);
}

/* Freeing the store drops the answers still queued: no callback, and (ASan) nothing leaked. */
static void test_free_drops_queued_answers_without_calling_back(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	const struct turn t[] = {turn(TURN_USER, "queued history")};
	do_append(f, f->store, 1, t, 1, 0);
	do_claim(f, f->store, 8, 1, "{\"update_id\":8, \"queued\":\"raw text\"}");
	do_set(f, f->store, 1, "k", "a queued value");

	callbacks_after_free = 0;
	/* Answers holding memory of their own: a history, a value, pending texts. */
	store_history_load(f->store, 1, count_history, NULL);
	store_setting_get(f->store, 1, "k", count_value, NULL);
	store_update_pending(f->store, count_pending, NULL);
	store_update_claim(f->store, 9, 1, "{}", 2, count_claim, NULL);
	store_history_append(f->store, 1, t, 1, 9, count_done, NULL);
	int inside = callbacks_after_free;
	store_free(f->store);
	f->store = NULL;
	/* The answers were due on the next turn of the loop: give it a few. */
	for (int i = 0; i < 3; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	expect_int("callbacks inside the calls", 0, inside);
	expect_int("callbacks after store_free", 0, callbacks_after_free);
}

static void do_replace(struct fixture *f, int64_t chat, const struct turn *old, size_t n_old, const struct turn *turns,
                       size_t n)
{
	struct op o = {.what = "store_history_replace"};
	store_history_replace(f->store, chat, old, n_old, turns, n, 0, on_done, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	op_free(&o);
}

static void test_replace_takes_the_place_of_the_last_turns_only_while_they_are_last(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	struct turn first[] = {turn(TURN_USER, "q1"), turn(TURN_ASSISTANT, "a1"), turn(TURN_USER, "q2"),
	                       turn(TURN_ASSISTANT, "a2")};
	do_append(f, f->store, 5, first, 4, 0);
	struct turn again[] = {turn(TURN_USER, "q2"), turn(TURN_ASSISTANT, "a2, again")};
	do_replace(f, 5, first + 2, 2, again, 2);
	struct history h = do_load(f, f->store, 5);
	struct turn want[] = {first[0], first[1], again[0], again[1]};
	expect_history("the last exchange replaced", want, 4, &h);
	history_free(&h);

	/* Replacing what is no longer last (another writer appended since the load) appends instead. */
	struct turn third[] = {turn(TURN_USER, "q3"), turn(TURN_ASSISTANT, "a3")};
	do_append(f, f->store, 5, third, 2, 0);
	struct turn late[] = {turn(TURN_USER, "q2"), turn(TURN_ASSISTANT, "a2, late")};
	do_replace(f, 5, again, 2, late, 2);
	h = do_load(f, f->store, 5);
	struct turn kept[] = {first[0], first[1], again[0], again[1], third[0], third[1], late[0], late[1]};
	expect_history("nothing lost when the turns are no longer last", kept, 8, &h);
	history_free(&h);
}

struct counter {
	int calls;
	const char *seen; /* what the last call was given */
	char seen_copy[64];
	bool is_unchanged; /* answer NULL: leave the setting */
};

static char *add_one(void *arg, const char *value)
{
	struct counter *c = arg;
	c->calls++;
	snprintf(c->seen_copy, sizeof c->seen_copy, "%s", value ? value : "(unset)");
	if (c->is_unchanged)
		return NULL;
	char *out = malloc(24);
	if (out)
		snprintf(out, 24, "%d", (value ? atoi(value) : 0) + 1);
	return out;
}

static void do_change(struct fixture *f, int64_t scope, const char *key, struct counter *c)
{
	struct op o = {.what = "store_setting_change"};
	store_setting_change(f->store, scope, key, add_one, c, on_done, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	op_free(&o);
}

static void test_change_reads_and_writes_a_setting_in_one_step(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	struct counter c = {0};
	do_change(f, 7, "n", &c);
	expect_str("first given", "(unset)", c.seen_copy);
	do_change(f, 7, "n", &c);
	do_change(f, 7, "n", &c);
	expect_str("then given what it wrote", "2", c.seen_copy);
	expect_setting(f, f->store, 7, "n", "3");
	expect_setting(f, f->store, 8, "n", NULL);
	c.is_unchanged = true;
	do_change(f, 7, "n", &c);
	expect_setting(f, f->store, 7, "n", "3");
	expect_int("one call a change", 4, c.calls);
}

struct scan {
	int64_t scopes[8];
	char values[8][16];
	size_t n;
	bool is_over;
	int err;
};

static void on_scan(void *arg, int err, int64_t scope, const char *value)
{
	struct scan *sc = arg;
	if (!value) {
		sc->is_over = true;
		sc->err = err;
		return;
	}
	if (sc->n < 8) {
		sc->scopes[sc->n] = scope;
		snprintf(sc->values[sc->n++], 16, "%s", value);
	}
}

static void test_scan_gives_every_scopes_value_of_a_key(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	do_set(f, f->store, 1, "usage-2026-12", "a");
	do_set(f, f->store, 2, "usage-2026-12", "b");
	do_set(f, f->store, 2, "usage-2026-11", "old");
	do_set(f, f->store, 3, "chat", "other");
	struct scan sc = {0};
	store_setting_scan(f->store, "usage-2026-12", on_scan, &sc);
	expect_int("nothing inside the call", 0, sc.is_over || sc.n);
	for (int i = 0; i < 100 && !sc.is_over; i++)
		event_base_loop(f->base, EVLOOP_ONCE);
	expect_int("ended", 1, sc.is_over);
	expect_int("err", 0, sc.err);
	expect_int("scopes with the key", 2, (long long)sc.n);
	bool is_a_first = sc.scopes[0] == 1;
	expect_str("scope 1's", "a", sc.values[is_a_first ? 0 : 1]);
	expect_str("scope 2's", "b", sc.values[is_a_first ? 1 : 0]);
}

/* ---- PostgreSQL shared by several instances: leases, takeover, a chat's turn ---- */

#define PG_ONLY()                                                                                          \
	do {                                                                                                \
		if (!pg_url)                                                                                \
			skip();                                                                             \
	} while (0)

static enum store_turn do_begin(struct fixture *f, struct store *s, int64_t update_id, int64_t chat)
{
	struct op o = {.what = "store_update_begin"};
	store_update_begin(s, update_id, chat, on_turn, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	enum store_turn turn = o.turn;
	op_free(&o);
	return turn;
}

/* store_update_end has no callback: a read started after it on the same store is answered after it. */
static void end_turn(struct fixture *f, struct store *s, int64_t update_id, int64_t chat)
{
	store_update_end(s, update_id, chat);
	free(do_get(f, s, 0, "anything"));
}

/* Pending as another instance asks for it: without making anyone's claim run out first. */
static void expect_taken_over(struct fixture *f, struct store *s, const char *expected, const char *what)
{
	struct op o = {.what = "store_update_pending"};
	store_update_pending(s, on_pending, &o);
	started(&o);
	answered(f, &o);
	expect_ok(&o);
	char got[256] = "";
	size_t used = 0;
	for (size_t i = 0; i < o.n_raws && used < sizeof got; i++)
		used += (size_t)snprintf(got + used, sizeof got - used, "%s%s", i ? "|" : "", o.raws[i]);
	op_free(&o);
	expect_str(what, expected, got);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Runs the loop (the stores' timers: lease renewals) for ms. */
static void run_for(struct fixture *f, int ms)
{
	struct event *tick = evtimer_new(f->base, on_tick, NULL);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if (!tick || evtimer_add(tick, &tv) != 0)
		fail_msg("cannot run the loop for %d ms", ms);
	while (evtimer_pending(tick, NULL))
		event_base_loop(f->base, EVLOOP_ONCE);
	event_free(tick);
}

static void test_pg_a_live_instance_keeps_its_updates_and_a_stopped_ones_are_taken_over(void **state)
{
	PG_ONLY();
	struct fixture *f = *state;
	struct store *a = open_store_leased(f, 600);
	f->store = open_store_leased(f, 600);
	expect_int("claimed by a: is_new", 1, do_claim(f, a, 40, 1, "{\"update_id\":40}"));
	expect_int("claimed again by b while a lives: is_new", 0, do_claim(f, f->store, 40, 1, "{}"));
	/* Two leases long: a renews its claim, so nobody takes it over. */
	run_for(f, 1200);
	expect_taken_over(f, f->store, "", "pending for b while a renews its lease");
	store_free(a); /* a stops: nobody renews update 40 */
	char got[256] = "";
	for (int i = 0; i < 40 && !*got; i++) {
		run_for(f, 50);
		struct op o = {.what = "store_update_pending"};
		store_update_pending(f->store, on_pending, &o);
		started(&o);
		answered(f, &o);
		if (o.n_raws)
			snprintf(got, sizeof got, "%s", o.raws[0]);
		op_free(&o);
	}
	expect_str("taken over by b once a's lease ran out", "{\"update_id\":40}", got);
	expect_taken_over(f, f->store, "", "pending again: b holds it now");
	expect_int("b's turn for it", STORE_TURN_GO, do_begin(f, f->store, 40, 1));
}

static void test_pg_a_chats_updates_take_turns_across_instances(void **state)
{
	PG_ONLY();
	struct fixture *f = *state;
	struct store *a = open_store(f);
	f->store = open_store(f);
	do_claim(f, a, 1, 5, "{\"update_id\":1}");
	do_claim(f, f->store, 2, 5, "{\"update_id\":2}");
	do_claim(f, f->store, 3, 6, "{\"update_id\":3}");
	expect_int("b, update 2: waits for update 1 (a's)", STORE_TURN_WAIT, do_begin(f, f->store, 2, 5));
	expect_int("b, update 3 of another chat: goes", STORE_TURN_GO, do_begin(f, f->store, 3, 6));
	expect_int("a, update 2: not a's", STORE_TURN_GONE, do_begin(f, a, 2, 5));
	expect_int("a, update 1: goes", STORE_TURN_GO, do_begin(f, a, 1, 5));
	expect_int("b, update 2: still waits", STORE_TURN_WAIT, do_begin(f, f->store, 2, 5));
	struct turn t[] = {turn(TURN_USER, "one"), turn(TURN_ASSISTANT, "1")};
	do_append(f, a, 5, t, 2, 1);
	expect_int("b, update 2, while update 1's answer is being sent", STORE_TURN_WAIT,
	           do_begin(f, f->store, 2, 5));
	end_turn(f, a, 1, 5);
	expect_int("b, update 2, once update 1's job is over", STORE_TURN_GO, do_begin(f, f->store, 2, 5));
	/* A later update that came first and started holds the chat as well. */
	do_claim(f, a, 9, 7, "{\"update_id\":9}");
	expect_int("a, update 9: goes", STORE_TURN_GO, do_begin(f, a, 9, 7));
	do_claim(f, f->store, 8, 7, "{\"update_id\":8}");
	expect_int("b, update 8, while 9 runs in a", STORE_TURN_WAIT, do_begin(f, f->store, 8, 7));
	do_update_done(f, a, 9);
	end_turn(f, a, 9, 7);
	expect_int("b, update 8, once 9's job is over", STORE_TURN_GO, do_begin(f, f->store, 8, 7));
	expect_int("an update done already", STORE_TURN_GONE, do_begin(f, a, 1, 5));
	store_free(a);
}

static void test_pg_an_update_taken_over_is_not_stored_twice(void **state)
{
	PG_ONLY();
	struct fixture *f = *state;
	struct store *a = open_store(f);
	f->store = open_store(f);
	do_claim(f, a, 70, 9, "{\"update_id\":70}");
	expect_int("a starts update 70", STORE_TURN_GO, do_begin(f, a, 70, 9));
	/* a stalls past its lease (as if it had stopped): b takes the update over, by its redelivery. */
	pg_sql("UPDATE tgllm_updates SET lease_until = '-infinity'", NULL, 0);
	expect_int("claimed again by b: taken over, so new", 1, do_claim(f, f->store, 70, 9, "{\"update_id\":70}"));
	expect_int("b's turn: a's start is void", STORE_TURN_GO, do_begin(f, f->store, 70, 9));
	/* a wakes up and writes first: the update is b's now. */
	struct turn ta[] = {turn(TURN_USER, "q"), turn(TURN_ASSISTANT, "a's answer")};
	struct op o = {.what = "store_history_append of an update taken over"};
	store_history_append(a, 9, ta, 2, 70, on_done, &o);
	started(&o);
	answered(f, &o);
	expect_int("a's append: the update is not a's any more", STORE_TAKEN_OVER, o.err);
	op_free(&o);
	struct turn tb[] = {turn(TURN_USER, "q"), turn(TURN_ASSISTANT, "b's answer")};
	do_append(f, f->store, 9, tb, 2, 70);
	o = (struct op){.what = "store_history_append once b stored it"};
	store_history_append(a, 9, ta, 2, 70, on_done, &o);
	started(&o);
	answered(f, &o);
	expect_int("a's append once b stored it: done already", STORE_TAKEN_OVER, o.err);
	op_free(&o);
	struct history h = do_load(f, f->store, 9);
	expect_history("the exchange, once: b's", tb, 2, &h);
	history_free(&h);
	store_free(a);
}

static void on_lead(void *arg, bool is_leading)
{
	struct op *o = arg;
	noted(o);
	o->calls++;
	o->is_leading = is_leading;
}

static void expect_lead(const struct op *o, bool is_leading)
{
	if (o->calls != 1 || o->is_leading != is_leading)
		fail_msg("%s: expected one callback saying %s, got %d, the last saying %s", o->what,
		         is_leading ? "true" : "false", o->calls, o->is_leading ? "true" : "false");
}

/*
 * store_lead is told from the loop, once. A store serving one process
 * (SQLite, S3) leads at once; on PostgreSQL a second store on the database
 * stands by until the first gives the lead up, then takes it.
 */
static void test_lead_is_told_from_the_loop_and_one_store_leads(void **state)
{
	struct fixture *f = *state;
	f->store = open_store(f);
	struct op dropped = {.what = "store_lead given up before its answer"};
	store_lead(f->store, on_lead, &dropped);
	started(&dropped);
	store_lead(f->store, NULL, NULL);
	struct op first = {.what = "store_lead"};
	store_lead(f->store, on_lead, &first);
	started(&first);
	answered(f, &first);
	expect_lead(&first, true);
	expect_int("callbacks of the store_lead given up", 0, dropped.calls);
	if (!pg_url) {
		store_lead(f->store, NULL, NULL);
		struct op again = {.what = "store_lead asked again"};
		store_lead(f->store, on_lead, &again);
		started(&again);
		answered(f, &again);
		expect_lead(&again, true);
		expect_int("callbacks of the first store_lead after it was given up", 1, first.calls);
		return;
	}
	struct store *second = open_store(f);
	struct op other = {.what = "store_lead of a second store on the database"};
	store_lead(second, on_lead, &other);
	started(&other);
	answered(f, &other);
	expect_lead(&other, false);
	other.calls = 0;
	store_lead(f->store, NULL, NULL); /* its connection closes: the second's next try takes the lock */
	answered(f, &other);
	expect_lead(&other, true);
	expect_int("callbacks of the first store_lead after it was given up", 1, first.calls);
	store_free(second); /* while leading: no callback, nothing leaked */
}

#define TEST(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(void)
{
	pg_url = getenv("TGLLM_TEST_PG");
	if (pg_url && !*pg_url)
		pg_url = NULL;
	s3_endpoint = getenv("TGLLM_TEST_S3");
	if (s3_endpoint && !*s3_endpoint)
		s3_endpoint = NULL;
	if (s3_endpoint && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return 1;
	const struct CMUnitTest tests[] = {
	    TEST(test_every_operation_answers_from_the_loop_not_inside_the_call),
	    TEST(test_answers_come_in_the_order_started),
	    TEST(test_a_burst_is_answered_in_order_and_reads_its_writes),
	    TEST(test_callback_may_start_another_operation),
	    TEST(test_history_comes_back_in_order_per_chat_with_roles),
	    TEST(test_clear_forgets_only_that_chat),
	    TEST(test_claim_is_new_only_the_first_time),
	    TEST(test_pending_gives_claimed_updates_oldest_first_until_done),
	    TEST(test_append_with_update_id_marks_that_update_done),
	    TEST(test_append_is_all_or_nothing_with_the_done_mark),
	    TEST(test_release_forgets_a_pending_update_but_not_a_done_one),
	    TEST(test_settings_are_per_scope_and_key),
	    TEST(test_everything_survives_reopening),
	    TEST(test_a_turn_of_parts_comes_back_as_parts),
	    TEST(test_a_database_before_pictures_is_upgraded),
	    TEST(test_a_load_reads_the_newest_8_mb_of_turns),
	    TEST(test_files_it_creates_are_private_whatever_the_umask),
	    TEST(test_database_from_a_newer_tgllm_is_refused),
	    TEST(test_unopenable_path_and_unknown_spec_are_refused),
	    TEST(test_two_connections_share_one_file_in_wal_mode),
	    TEST(test_long_history_loads_the_newest_turns),
	    TEST(test_turn_with_unknown_role_is_skipped),
	    TEST(test_open_prunes_done_updates_older_than_a_week),
	    TEST(test_free_drops_queued_answers_without_calling_back),
	    TEST(test_replace_takes_the_place_of_the_last_turns_only_while_they_are_last),
	    TEST(test_change_reads_and_writes_a_setting_in_one_step),
	    TEST(test_scan_gives_every_scopes_value_of_a_key),
	    TEST(test_pg_a_live_instance_keeps_its_updates_and_a_stopped_ones_are_taken_over),
	    TEST(test_pg_a_chats_updates_take_turns_across_instances),
	    TEST(test_pg_an_update_taken_over_is_not_stored_twice),
	    TEST(test_lead_is_told_from_the_loop_and_one_store_leads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
