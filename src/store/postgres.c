/*
 * The PostgreSQL store: the SQLite store's tables in a PostgreSQL database
 * (docs/internals/STORE.md), through libpq without blocking the loop.
 *
 * A small pool of connections (POOL) takes operations from one queue, oldest
 * first. Each operation is one statement, or a transaction of a few, sent
 * with PQsendQueryParams (every value a parameter: no SQL is built from
 * what users write); a connection's socket is watched by an event that
 * drives PQconnectPoll while connecting, PQflush while a query is being
 * written and PQconsumeInput/PQgetResult while its answer is read. When a
 * connection drops (the server restarted), its operation fails (err -1,
 * logged) and the pool connects again with backoff; operations waiting for a
 * connection wait up to OP_WAIT_S, then fail.
 *
 * Open is blocking, on purpose: it runs before the loop serves anything, and
 * a wrong password or a schema from a newer tgllm must stop the start with
 * one clear line, as SQLite's open does; a server that cannot be reached is
 * told apart (STORE_UNREACHABLE), so that the long-running commands wait
 * for it (main.c) while serverless ones fail. It
 * connects, creates or migrates the schema under an advisory lock (two
 * instances starting at once take turns), and keeps that connection as the
 * pool's first.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lib/backoff.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/utf8.h"
#include "store/backend.h"
#include "store/postgres_lead.h"

#define POOL               4
#define CONNECT_TIMEOUT_S  10
#define QUERY_TIMEOUT_S    30 /* no byte from the server for that long: the connection is given up */
#define OP_WAIT_S          5  /* an operation waits that long for a connection while the server is away */
#define HISTORY_LOAD_MAX   2000
#define HISTORY_LOAD_BYTES (8u << 20) /* as sqlite.c */
#define JOURNAL_KEEP_S     (7 * 86400)
#define LEASE_MS           10000 /* LEASE_SECONDS' default */
#define STATEMENT_TIMEOUT  "-c statement_timeout=15000"
/* pg_advisory_xact_lock(int, int) keys of the migration ('tgll', 14): a lock space apart from the chats'. */
#define MIGRATION_LOCK "SELECT pg_advisory_xact_lock(1952935020, 14)"

static const struct backoff reconnect_backoff = {.first_ms = 50, .max_ms = 2000, .has_jitter = true};

/* Each entry moves the schema from version i to i + 1. */
static const char *const migrations[] = {
    "CREATE TABLE tgllm_messages ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  chat_id BIGINT NOT NULL,"
    "  role TEXT NOT NULL,"
    "  content TEXT NOT NULL,"
    "  is_parts BOOLEAN NOT NULL DEFAULT false,"
    "  created_at BIGINT NOT NULL);"
    "CREATE INDEX tgllm_messages_by_chat ON tgllm_messages (chat_id, id);"
    "CREATE TABLE tgllm_updates ("
    "  update_id BIGINT PRIMARY KEY,"
    "  chat_id BIGINT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('pending', 'done')),"
    "  body TEXT,"
    "  received_at BIGINT NOT NULL);"
    "CREATE INDEX tgllm_updates_pending ON tgllm_updates (update_id) WHERE state = 'pending';"
    "CREATE TABLE tgllm_settings ("
    "  scope BIGINT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (scope, key));",
    /*
     * Several instances: a pending update belongs to the instance that
     * claimed it (or took it over) while its lease lasts; started marks the
     * one of its chat being handled, so the chat's later updates wait.
     */
    "ALTER TABLE tgllm_updates"
    "  ADD COLUMN owner TEXT,"
    "  ADD COLUMN lease_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity',"
    "  ADD COLUMN started BOOLEAN NOT NULL DEFAULT false;"
    "CREATE INDEX tgllm_updates_pending_by_chat ON tgllm_updates (chat_id, update_id) WHERE state = 'pending';",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

enum kind {
	K_LOAD,
	K_APPEND,
	K_CLEAR,
	K_CLAIM,
	K_DONE,
	K_RELEASE,
	K_PENDING,
	K_GET,
	K_SET,
	K_CHANGE,
	K_SCAN,
	K_BEGIN,
	K_END,
	K_RENEW
};

static const enum metrics_store_op kind_metric[] = {
    [K_LOAD] = METRICS_HISTORY_LOAD,      [K_APPEND] = METRICS_HISTORY_APPEND,
    [K_CLEAR] = METRICS_HISTORY_CLEAR,    [K_CLAIM] = METRICS_UPDATE_CLAIM,
    [K_DONE] = METRICS_UPDATE_DONE,       [K_RELEASE] = METRICS_UPDATE_RELEASE,
    [K_PENDING] = METRICS_UPDATE_PENDING, [K_GET] = METRICS_SETTING_GET,
    [K_SET] = METRICS_SETTING_SET,        [K_CHANGE] = METRICS_SETTING_CHANGE,
    [K_SCAN] = METRICS_SETTING_SCAN,       [K_BEGIN] = METRICS_UPDATE_BEGIN,
    [K_END] = METRICS_UPDATE_BEGIN,        [K_RENEW] = METRICS_UPDATE_BEGIN,
};

/* The steps of the transactions (history_append, setting_change); one statement's ops use P_ONE. */
enum phase { P_ONE, P_ALL, P_BEGIN, P_LOCK, P_LAST, P_DROP, P_INSERT, P_MARK, P_MARKED, P_GET, P_PUT, P_COMMIT };

struct pg_op {
	struct pg_op *next;  /* waiting for a connection */
	struct pg_op *later; /* the next op started: answers are given in the order started */
	bool is_over;        /* its outcome is below, to be answered once every earlier op is */
	int err;
	bool is_new;      /* claim */
	bool is_gone;     /* append: the update is not this process's; rolled back */
	enum store_turn turn; /* begin */
	struct history h; /* load */
	char *result;     /* get (NULL: not set) */
	char **rows;      /* pending, scan: values */
	int64_t *scopes;  /* scan */
	size_t n_rows;
	enum kind kind;
	enum phase phase;
	double started; /* metrics_clock() */
	int64_t id;     /* chat, update or scope */
	int64_t update_id;
	char *key, *value; /* key; value, or an update's raw text (valid UTF-8) */
	struct history old, turns;
	size_t i;    /* the turn being inserted */
	int retries; /* started again on a new connection after a lost one */
	store_change_fn change;
	void *change_arg;
	union store_cb cb;
	void *arg;
};

enum conn_state { C_DOWN, C_CONNECTING, C_READY, C_BUSY };

struct pg_conn {
	struct store_pg *s;
	int index;
	PGconn *pc;
	enum conn_state state;
	struct event *ev; /* the socket's, re-armed for what is awaited */
	struct pg_op *op; /* running; NULL while rolling back */
	bool is_flushing; /* the query is not all written yet */
	PGresult *result; /* the query's last result */
	char *error;      /* its first error, as the server said it */
	const char *what; /* what the query does, for the log */
};

struct store_pg {
	struct store base;
	struct event_base *evb;
	char *conninfo; /* borrowed from open's caller until the end: copied */
	struct pg_conn conns[POOL];
	struct pg_op *head, *tail;  /* waiting for a connection, oldest first */
	struct pg_op *first, *last; /* every op not yet answered, in the order started */
	bool is_dispatching, is_dispatch_due;
	struct event *retry; /* connects again after a failure, with backoff */
	int failures;        /* connections failed in a row */
	/* Who this process is in the journal's owner column: host, pid and a random part (a restart is new). */
	char owner[128];
	char lease[24];      /* the lease, in ms, as a query parameter */
	struct event *renew; /* renews the leases of held[], three times a lease */
	/*
	 * The updates this process holds: claimed or taken over, until their
	 * job is over (update_end), or they are released or found gone. Only
	 * these are renewed: a taken-over update whose answer was lost with its
	 * connection runs out and is taken over again.
	 */
	int64_t *held;
	size_t n_held, cap_held;
	struct pg_lead *lead; /* store_lead's lock, on a connection of its own */
};

static struct store_pg *from(struct store *s)
{
	return (struct store_pg *)s;
}

/* ---- the updates this process holds ---- */

static void hold(struct store_pg *s, int64_t update_id)
{
	if (s->n_held == s->cap_held) {
		size_t cap = s->cap_held ? s->cap_held * 2 : 64;
		int64_t *p = realloc(s->held, cap * sizeof *p);
		if (!p) { /* its lease then runs out, and another process (or this one) takes it over */
			log_error("store: postgres: out of memory: update=%lld's lease is not renewed",
			          (long long)update_id);
			return;
		}
		s->held = p;
		s->cap_held = cap;
	}
	s->held[s->n_held++] = update_id;
}

static void unhold(struct store_pg *s, int64_t update_id)
{
	for (size_t i = 0; i < s->n_held; i++)
		if (s->held[i] == update_id) {
			s->held[i] = s->held[--s->n_held];
			return;
		}
}

/* ---- values ---- */

/*
 * A copy of len bytes that PostgreSQL takes as text: valid UTF-8, no NUL
 * (each invalid byte and each NUL becomes U+FFFD), NUL-terminated.
 */
static char *text_copy(const char *p, size_t len)
{
	char *out = malloc(len * 3 + 1), *w = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len;) {
		size_t n = p[i] ? utf8_seq_len((const unsigned char *)p + i, len - i) : 0;
		if (n == 0) {
			memcpy(w, "\xEF\xBF\xBD", 3);
			w += 3;
			i++;
		} else {
			memcpy(w, p + i, n);
			w += n;
			i += n;
		}
	}
	*w = '\0';
	return out;
}

static int copy_turns(struct history *h, const struct turn *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char *c = text_copy(t[i].content, t[i].len);
		int rc = !c ? -1
		            : (t[i].is_parts ? history_push_parts(h, t[i].role, c, strlen(c))
		                             : history_push(h, t[i].role, c, strlen(c)));
		free(c);
		if (rc != 0)
			return -1;
	}
	return 0;
}

static void op_free(struct pg_op *op)
{
	if (!op)
		return;
	free(op->key);
	free(op->value);
	history_free(&op->old);
	history_free(&op->turns);
	history_free(&op->h);
	free(op->result);
	for (size_t i = 0; i < op->n_rows; i++)
		free(op->rows[i]);
	free(op->rows);
	free(op->scopes);
	free(op);
}

/* Hands the op's outcome to the loop (its results move into the answer) and frees it. */
static void deliver(struct store_pg *s, struct pg_op *op)
{
	switch (op->kind) {
	case K_LOAD:
		store_answer_history(&s->base, op->cb.history, op->arg, op->err, &op->h);
		break;
	case K_CLAIM:
		store_answer_claim(&s->base, op->cb.claim, op->arg, op->err, op->is_new);
		break;
	case K_BEGIN:
		store_answer_turn(&s->base, op->cb.turn, op->arg, op->err, op->err ? STORE_TURN_WAIT : op->turn);
		break;
	case K_END:
	case K_RENEW:
		break;
	case K_GET:
		store_answer_value(&s->base, op->cb.value, op->arg, op->err, op->result);
		break;
	case K_PENDING:
		store_answer_pending(&s->base, op->cb.pending, op->arg, op->err, op->rows, op->n_rows);
		op->rows = NULL;
		op->n_rows = 0;
		break;
	case K_SCAN:
		store_answer_scan(&s->base, op->cb.scan, op->arg, op->err, op->scopes, op->rows, op->n_rows);
		op->rows = NULL;
		op->scopes = NULL;
		op->n_rows = 0;
		break;
	default:
		store_answer_done(&s->base, op->cb.done, op->arg, op->err);
	}
	op_free(op);
}

/*
 * The op is over (err 0 or -1; on failure its results are dropped). Answers
 * go out in the order the ops were started, as SQLite's do: a later op that
 * ended first (on another connection) waits for the earlier ones.
 */
static void op_over(struct store_pg *s, struct pg_op *op, int err)
{
	metrics_store_op(kind_metric[op->kind], metrics_clock() - op->started);
	op->is_over = true;
	op->err = err;
	if (err) {
		history_free(&op->h);
		free(op->result);
		op->result = NULL;
		for (size_t i = 0; i < op->n_rows; i++)
			free(op->rows[i]);
		op->n_rows = 0;
	}
	while (s->first && s->first->is_over) {
		struct pg_op *done = s->first;
		s->first = done->later;
		if (!s->first)
			s->last = NULL;
		deliver(s, done);
	}
}

/* The first line of a libpq message, without its "ERROR:  " and newline. */
static void first_line(const char *msg, char *out, size_t n)
{
	if (!msg || !*msg)
		msg = "unknown error";
	size_t len = strcspn(msg, "\n");
	snprintf(out, n, "%.*s", (int)len, msg);
}

/* ---- the connections ---- */

static void dispatch(struct store_pg *s);
static void on_socket(evutil_socket_t fd, short what, void *arg);
static void advance(struct pg_conn *c, PGresult *res);

static void notice_ignored(void *arg, const char *message)
{
	(void)arg;
	char line[256];
	first_line(message, line, sizeof line);
	log_debug("store: postgres: %s", line);
}

static void wait_for(struct pg_conn *c, short what, int timeout_s)
{
	event_del(c->ev);
	event_assign(c->ev, c->s->evb, PQsocket(c->pc), what, on_socket, c);
	struct timeval tv = {timeout_s, 0};
	event_add(c->ev, timeout_s ? &tv : NULL);
}

static int live_count(const struct store_pg *s)
{
	int n = 0;
	for (int i = 0; i < POOL; i++)
		n += s->conns[i].state != C_DOWN;
	return n;
}

/* Fails the operations waiting longer than OP_WAIT_S (all of them with all_of_them). */
static void fail_waiting(struct store_pg *s, bool all_of_them)
{
	double now = metrics_clock();
	struct pg_op **p = &s->head;
	s->tail = NULL;
	while (*p) {
		struct pg_op *op = *p;
		if (all_of_them || now - op->started >= OP_WAIT_S) {
			*p = op->next;
			log_error("store: postgres: no connection to the database: an operation fails");
			op_over(s, op, -1);
		} else {
			s->tail = op;
			p = &op->next;
		}
	}
}

static void schedule_retry(struct store_pg *s)
{
	if (evtimer_pending(s->retry, NULL))
		return;
	long ms = backoff_ms(&reconnect_backoff, s->failures > 0 ? s->failures : 1);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(s->retry, &tv);
}

static void conn_close(struct pg_conn *c)
{
	event_del(c->ev);
	PQclear(c->result);
	c->result = NULL;
	free(c->error);
	c->error = NULL;
	PQfinish(c->pc);
	c->pc = NULL;
	c->state = C_DOWN;
	c->is_flushing = false;
}

/*
 * Whether op may run again from the start after its connection was lost
 * mid-way: it reads, or writes what writing twice leaves the same, or its
 * transaction had not asked to COMMIT (so the server rolled it back). A
 * claim may not: once sent, it may have been journaled, and the second one
 * would say "not new".
 */
static bool may_run_again(const struct pg_op *op)
{
	if (op->retries >= 2 || op->kind == K_CLAIM)
		return false;
	if (op->phase == P_ALL) /* one statement: its done mark makes it the same done twice */
		return op->update_id != 0;
	if (op->kind == K_APPEND || op->kind == K_CHANGE || op->kind == K_BEGIN)
		return op->phase != P_COMMIT;
	return true;
}

static void run_again(struct store_pg *s, struct pg_op *op)
{
	op->retries++;
	op->phase = P_ONE;
	op->i = 0;
	if (op->kind == K_CHANGE) { /* its new value is computed again */
		free(op->value);
		op->value = NULL;
	}
	op->next = s->head; /* the oldest waiting */
	s->head = op;
	if (!s->tail)
		s->tail = op;
}

/* The connection is gone (dropped, timed out, or never made): its operation runs again or fails. */
static void conn_lost(struct pg_conn *c, const char *why)
{
	struct store_pg *s = c->s;
	char line[256];
	first_line(why, line, sizeof line);
	bool was_connecting = c->state == C_CONNECTING;
	struct pg_op *op = c->op;
	c->op = NULL;
	conn_close(c);
	s->failures++;
	/* A server away for long is said once, then every 30 attempts (a minute at the longest backoff). */
	if (was_connecting && (s->failures == 1 || s->failures % 30 == 0))
		log_error("store: postgres: cannot connect: %s", line);
	else if (was_connecting)
		log_debug("store: postgres: cannot connect: %s", line);
	else
		log_error("store: postgres: connection %d lost%s: %s", c->index,
		          op ? " during an operation" : "", line);
	if (op && may_run_again(op)) {
		log_info("store: postgres: the operation runs again on a new connection");
		run_again(s, op);
	} else if (op) {
		op_over(s, op, -1);
	}
	if (live_count(s) == 0) {
		fail_waiting(s, false);
		schedule_retry(s);
	}
	dispatch(s);
}

/*
 * Before the string's own (which win): a statement blocked longer than 15 s
 * (a lock held elsewhere, a server stuck on a full disk) is cancelled by the
 * server, and its operation fails cleanly instead of giving the connection up.
 */
static const char *const conn_keys[] = {"connect_timeout", "application_name", "client_encoding", "options", "dbname",
                                        NULL};

static void conn_start(struct pg_conn *c)
{
	struct store_pg *s = c->s;
	const char *vals[] = {"10", "tgllm", "UTF8", STATEMENT_TIMEOUT, s->conninfo, NULL};
	c->pc = PQconnectStartParams(conn_keys, vals, 1);
	c->state = C_CONNECTING;
	if (!c->pc || PQstatus(c->pc) == CONNECTION_BAD) {
		conn_lost(c, c->pc ? PQerrorMessage(c->pc) : "out of memory");
		return;
	}
	PQsetNoticeProcessor(c->pc, notice_ignored, NULL);
	wait_for(c, EV_WRITE, CONNECT_TIMEOUT_S);
}

static void conn_ready(struct pg_conn *c)
{
	c->state = C_READY;
	/* Watched while idle too: a server going away is noticed before the next query is sent. */
	wait_for(c, EV_READ, 0);
}

static void connect_poll(struct pg_conn *c)
{
	switch (PQconnectPoll(c->pc)) {
	case PGRES_POLLING_READING:
		wait_for(c, EV_READ, CONNECT_TIMEOUT_S);
		return;
	case PGRES_POLLING_WRITING:
		wait_for(c, EV_WRITE, CONNECT_TIMEOUT_S);
		return;
	case PGRES_POLLING_OK:
		if (PQsetnonblocking(c->pc, 1) != 0) {
			conn_lost(c, PQerrorMessage(c->pc));
			return;
		}
		if (c->s->failures > 0)
			log_info("store: postgres: connected again");
		c->s->failures = 0;
		conn_ready(c);
		dispatch(c->s);
		return;
	default:
		conn_lost(c, PQerrorMessage(c->pc));
	}
}

/* Sends one statement with its parameters (text, NUL-terminated). */
static void send_query(struct pg_conn *c, const char *what, const char *sql, int n, const char *const *values)
{
	c->what = what;
	if (!PQsendQueryParams(c->pc, sql, n, NULL, values, NULL, NULL, 0)) {
		conn_lost(c, PQerrorMessage(c->pc));
		return;
	}
	int rc = PQflush(c->pc);
	if (rc < 0) {
		conn_lost(c, PQerrorMessage(c->pc));
		return;
	}
	c->is_flushing = rc == 1;
	wait_for(c, EV_READ | (c->is_flushing ? EV_WRITE : 0), QUERY_TIMEOUT_S);
}

/* The query is over (every result read): hands its outcome on. */
static void query_over(struct pg_conn *c)
{
	PGresult *res = c->result;
	c->result = NULL;
	if (PQstatus(c->pc) == CONNECTION_BAD) {
		PQclear(res);
		conn_lost(c, c->error ? c->error : PQerrorMessage(c->pc));
		return;
	}
	if (!c->op) { /* a ROLLBACK after a failed transaction */
		PQclear(res);
		free(c->error);
		c->error = NULL;
		conn_ready(c);
		dispatch(c->s);
		return;
	}
	if (c->error || !res) {
		char line[256];
		first_line(c->error, line, sizeof line);
		log_error("store: postgres: %s: %s", c->what, line);
		free(c->error);
		c->error = NULL;
		PQclear(res);
		struct pg_op *op = c->op;
		c->op = NULL;
		op_over(c->s, op, -1);
		if (PQtransactionStatus(c->pc) != PQTRANS_IDLE) {
			c->state = C_BUSY;
			send_query(c, "rolling back", "ROLLBACK", 0, NULL);
			return;
		}
		conn_ready(c);
		dispatch(c->s);
		return;
	}
	advance(c, res);
	PQclear(res);
}

static void conn_io(struct pg_conn *c, short what)
{
	if (what & EV_TIMEOUT) {
		conn_lost(c, "no answer from the server in time");
		return;
	}
	if (c->is_flushing && (what & EV_WRITE)) {
		int rc = PQflush(c->pc);
		if (rc < 0) {
			conn_lost(c, PQerrorMessage(c->pc));
			return;
		}
		c->is_flushing = rc == 1;
	}
	if (what & EV_READ) {
		if (!PQconsumeInput(c->pc)) {
			conn_lost(c, PQerrorMessage(c->pc));
			return;
		}
		if (c->is_flushing) {
			int rc = PQflush(c->pc);
			if (rc < 0) {
				conn_lost(c, PQerrorMessage(c->pc));
				return;
			}
			c->is_flushing = rc == 1;
		}
	}
	while (!c->is_flushing && !PQisBusy(c->pc)) {
		PGresult *r = PQgetResult(c->pc);
		if (!r) {
			query_over(c);
			return;
		}
		ExecStatusType st = PQresultStatus(r);
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !c->error) {
			const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
			c->error = strdup(m ? m : PQresultErrorMessage(r));
		}
		PQclear(c->result);
		c->result = r;
	}
	wait_for(c, EV_READ | (c->is_flushing ? EV_WRITE : 0), QUERY_TIMEOUT_S);
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	struct pg_conn *c = arg;
	switch (c->state) {
	case C_CONNECTING:
		if (what & EV_TIMEOUT)
			conn_lost(c, "timed out");
		else
			connect_poll(c);
		return;
	case C_READY: /* idle: the server said something (it is going away) */
		if (!PQconsumeInput(c->pc) || PQstatus(c->pc) == CONNECTION_BAD) {
			conn_lost(c, PQerrorMessage(c->pc));
			return;
		}
		PGnotify *n;
		while ((n = PQnotifies(c->pc)))
			PQfreemem(n);
		wait_for(c, EV_READ, 0);
		return;
	case C_BUSY:
		conn_io(c, what);
		return;
	case C_DOWN:
		return;
	}
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct store_pg *s = arg;
	fail_waiting(s, false);
	if (live_count(s) == 0)
		conn_start(&s->conns[0]);
}

/*
 * Whether b, started after a, must wait until a is over: they touch the same
 * chat's history, the same update in the journal (or all of it), or the
 * same setting (or every scope's). What one op wrote, the next one sees, as
 * with SQLite, though they may run on different connections.
 */
static bool conflicts(const struct pg_op *a, const struct pg_op *b)
{
	/* A chat's turn: a job's end is seen by the next begin of its chat. */
	bool a_turn = a->kind == K_BEGIN || a->kind == K_END, b_turn = b->kind == K_BEGIN || b->kind == K_END;
	if (a_turn && b_turn && a->id == b->id)
		return true;
	bool a_history = a->kind == K_LOAD || a->kind == K_APPEND || a->kind == K_CLEAR;
	bool b_history = b->kind == K_LOAD || b->kind == K_APPEND || b->kind == K_CLEAR;
	if (a_history && b_history && a->id == b->id)
		return true;
	/* The update an op journals or marks (0: none), or -1 for all of them. */
	int64_t ua = a->kind == K_PENDING                          ? -1
	             : (a->kind == K_DONE || a->kind == K_RELEASE) ? a->id
	                                                           : a->update_id;
	int64_t ub = b->kind == K_PENDING                          ? -1
	             : (b->kind == K_DONE || b->kind == K_RELEASE) ? b->id
	                                                           : b->update_id;
	if (ua && ub && (ua == ub || ua == -1 || ub == -1))
		return true;
	bool a_setting = a->kind == K_GET || a->kind == K_SET || a->kind == K_CHANGE || a->kind == K_SCAN;
	bool b_setting = b->kind == K_GET || b->kind == K_SET || b->kind == K_CHANGE || b->kind == K_SCAN;
	return a_setting && b_setting && strcmp(a->key, b->key) == 0 &&
	       (a->id == b->id || a->kind == K_SCAN || b->kind == K_SCAN);
}

/* Whether op may start now: no op started before it that it must wait for is running or waiting. */
static bool may_start(const struct store_pg *s, const struct pg_op *op)
{
	for (int i = 0; i < POOL; i++)
		if (s->conns[i].op && conflicts(s->conns[i].op, op))
			return false;
	for (const struct pg_op *q = s->head; q != op; q = q->next)
		if (conflicts(q, op))
			return false;
	return true;
}

static struct pg_conn *find_conn(struct store_pg *s, enum conn_state state)
{
	for (int i = 0; i < POOL; i++)
		if (s->conns[i].state == state)
			return &s->conns[i];
	return NULL;
}

/*
 * Gives the waiting operations that may start to ready connections, oldest
 * first, and connects one more while some wait and the pool is not full.
 * Starting an op may end it (a lost connection) and so come back here:
 * that call only asks this one to go round again.
 */
static void dispatch(struct store_pg *s)
{
	if (s->is_dispatching) {
		s->is_dispatch_due = true;
		return;
	}
	s->is_dispatching = true;
	do {
		s->is_dispatch_due = false;
		struct pg_op *prev = NULL;
		for (struct pg_op *op = s->head; op;) {
			struct pg_conn *ready = find_conn(s, C_READY);
			if (!ready)
				break;
			if (!may_start(s, op)) {
				prev = op;
				op = op->next;
				continue;
			}
			struct pg_op *next = op->next;
			if (prev)
				prev->next = next;
			else
				s->head = next;
			if (s->tail == op)
				s->tail = prev;
			op->next = NULL;
			ready->op = op;
			ready->state = C_BUSY;
			advance(ready, NULL);
			if (s->is_dispatch_due)
				break; /* the queue may have changed under us: round again */
			op = next;
		}
		/* One connection made at a time; none while the retry's backoff runs. */
		struct pg_conn *down = find_conn(s, C_DOWN);
		if (s->head && !find_conn(s, C_READY) && !find_conn(s, C_CONNECTING) && down &&
		    !evtimer_pending(s->retry, NULL))
			conn_start(down);
	} while (s->is_dispatch_due);
	s->is_dispatching = false;
}

static void enqueue(struct store_pg *s, struct pg_op *op)
{
	if (s->tail)
		s->tail->next = op;
	else
		s->head = op;
	s->tail = op;
	dispatch(s);
}

/* ---- the operations: what each sends, and what it makes of the answers ---- */

static void num(char *out, int64_t v)
{
	snprintf(out, 24, "%lld", (long long)v);
}

/* The operation is over: answers 0 (or STORE_TAKEN_OVER) and takes the next. */
static void finish(struct pg_conn *c, struct pg_op *op)
{
	c->op = NULL;
	conn_ready(c);
	op_over(c->s, op, op->is_gone ? STORE_TAKEN_OVER : 0);
	dispatch(c->s);
}

static void fail(struct pg_conn *c, const char *what)
{
	c->error = strdup(what);
	query_over(c); /* as a failed statement: answered -1, rolled back */
}

static void load_rows(struct pg_conn *c, struct pg_op *op, PGresult *res)
{
	struct history h = HISTORY_INIT;
	int rows = PQntuples(res), err = 0;
	for (int i = 0; i < rows && !err; i++) {
		enum turn_role role;
		const char *content = PQgetvalue(res, i, 1);
		if (turn_role_parse(PQgetvalue(res, i, 0), &role) != 0) {
			log_warn("store: chat=%lld: skipping a stored turn with a bad role",
			         (long long)op->id);
			continue;
		}
		size_t len = (size_t)PQgetlength(res, i, 1);
		err = (PQgetvalue(res, i, 2)[0] == 't' ? history_push_parts(&h, role, content, len)
		                                       : history_push(&h, role, content, len));
	}
	c->op = NULL;
	conn_ready(c);
	if (err)
		log_error("store: postgres: reading history: out of memory");
	op->h = h;
	op_over(c->s, op, err ? -1 : 0);
	dispatch(c->s);
}

/* Rows of (text) or (scope, text) as the arrays store_answer_pending/scan take. */
static void list_rows(struct pg_conn *c, struct pg_op *op, PGresult *res)
{
	int rows = PQntuples(res), col = 1;
	char **values = calloc((size_t)rows + 1, sizeof *values);
	int64_t *scopes = calloc((size_t)rows + 1, sizeof *scopes);
	size_t n = 0;
	int err = !values || !scopes;
	for (int i = 0; i < rows && !err; i++) {
		if (!(values[n] = strdup(PQgetvalue(res, i, col))))
			err = -1;
		else
			scopes[n++] = strtoll(PQgetvalue(res, i, 0), NULL, 10);
	}
	if (err)
		log_error("store: postgres: reading %s: out of memory",
		          op->kind == K_SCAN ? "settings" : "the update journal");
	for (size_t i = 0; op->kind == K_PENDING && i < n; i++)
		hold(c->s, scopes[i]);
	c->op = NULL;
	conn_ready(c);
	op->rows = values;
	op->scopes = scopes;
	op->n_rows = n;
	op_over(c->s, op, err ? -1 : 0);
	dispatch(c->s);
}

/* The transaction's last statement; its answer finishes op. */
static void commit(struct pg_conn *c, struct pg_op *op)
{
	op->phase = P_COMMIT;
	send_query(c, "COMMIT", "COMMIT", 0, NULL);
}

/* history_append: the turns [i..) one INSERT each, then COMMIT. */
static void append_next(struct pg_conn *c, struct pg_op *op)
{
	char chat[24], now[24];
	num(chat, op->id);
	num(now, (int64_t)time(NULL));
	if (op->i < op->turns.len) {
		const struct turn *t = &op->turns.turns[op->i++];
		const char *v[] = {chat, turn_role_name(t->role), t->content, t->is_parts ? "true" : "false",
		                   now};
		op->phase = P_INSERT;
		send_query(c, "appending a turn",
		           "INSERT INTO tgllm_messages (chat_id, role, content, is_parts, created_at) "
		           "VALUES ($1, $2, $3, $4, $5)",
		           5, v);
	} else {
		commit(c, op);
	}
}

/* Whether the rows (id, role, content), newest first, are op->old; *first is the oldest row's id. */
static bool is_still_last(const struct pg_op *op, PGresult *res, char *first, size_t n)
{
	int rows = PQntuples(res);
	if (rows != (int)op->old.len)
		return false;
	for (int i = 0; i < rows; i++) {
		const struct turn *t = &op->old.turns[op->old.len - 1 - (size_t)i];
		if (strcmp(PQgetvalue(res, i, 1), turn_role_name(t->role)) != 0 ||
		    (size_t)PQgetlength(res, i, 2) != t->len ||
		    memcmp(PQgetvalue(res, i, 2), t->content, t->len) != 0)
			return false;
	}
	snprintf(first, n, "%s", PQgetvalue(res, rows - 1, 0));
	return true;
}

/* The update is this process's to mark done (or none was given): the turns go in. */
static void append_turns(struct pg_conn *c, struct pg_op *op)
{
	char chat[24];
	num(chat, op->id);
	if (op->old.len) {
		const char *v[] = {chat};
		op->phase = P_LOCK;
		/* Another instance's append to the chat waits: "still last" stays true until COMMIT. */
		send_query(c, "locking the chat", "SELECT pg_advisory_xact_lock($1)", 1, v);
		return;
	}
	append_next(c, op);
}

/* The append's update is not this process's (any more): it answers STORE_TAKEN_OVER. */
static void taken_over(struct pg_op *op)
{
	log_warn("store: chat=%lld update=%lld: done already, or taken over by another instance; its exchange "
	         "is not stored twice",
	         (long long)op->id, (long long)op->update_id);
	op->is_gone = true;
}

/*
 * An append (not a /retry's replace) in one statement, so one round trip:
 * the done mark, and the turns when the update is still this process's
 * (or was never journaled). The SQL is built from the number of turns
 * only; every value is a parameter.
 */
static void append_at_once(struct pg_conn *c, struct pg_op *op)
{
	size_t n = op->turns.len, nv = 4 + 3 * n;
	char *sql = malloc(512 + 48 * n);
	const char **v = calloc(nv, sizeof *v);
	char chat[24], now[24], uid[24];
	if (!sql || !v) {
		free(sql);
		free(v);
		fail(c, "appending turns: out of memory");
		return;
	}
	num(chat, op->id);
	num(now, (int64_t)time(NULL));
	num(uid, op->update_id);
	v[0] = uid;
	v[1] = c->s->owner;
	v[2] = chat;
	v[3] = now;
	size_t len = (size_t)sprintf(sql, "WITH mark AS (UPDATE tgllm_updates SET state = 'done', body = NULL "
	                                  "WHERE update_id = $1 AND state = 'pending' AND (owner IS NULL OR owner = $2) "
	                                  "RETURNING 1) "
	                                  "INSERT INTO tgllm_messages (chat_id, role, content, is_parts, created_at) "
	                                  "SELECT $3::bigint, r, t, p::boolean, $4::bigint FROM (VALUES ");
	for (size_t i = 0; i < n; i++) {
		const struct turn *t = &op->turns.turns[i];
		v[4 + 3 * i] = turn_role_name(t->role);
		v[5 + 3 * i] = t->content;
		v[6 + 3 * i] = t->is_parts ? "true" : "false";
		len += (size_t)sprintf(sql + len, "%s(%zu, $%zu, $%zu, $%zu)", i ? ", " : "", i, 5 + 3 * i, 6 + 3 * i,
		                       7 + 3 * i);
	}
	sprintf(sql + len, ") AS v (o, r, t, p) WHERE $1::bigint = 0 OR EXISTS (SELECT 1 FROM mark) "
	                   "OR NOT EXISTS (SELECT 1 FROM tgllm_updates WHERE update_id = $1) ORDER BY o");
	op->phase = P_ALL;
	send_query(c, "appending turns", sql, (int)nv, v);
	free(sql);
	free(v);
}

static void advance_append(struct pg_conn *c, struct pg_op *op, PGresult *res)
{
	char chat[24], count[24], uid[24];
	num(chat, op->id);
	num(uid, op->update_id);
	switch (op->phase) {
	case P_ONE:
		if (!op->old.len && op->turns.len) {
			append_at_once(c, op);
			return;
		}
		op->phase = P_BEGIN;
		send_query(c, "BEGIN", "BEGIN", 0, NULL);
		return;
	case P_ALL:
		if (atoi(PQcmdTuples(res)) == 0) {
			if (op->retries) /* the first, whose answer the lost connection took, was stored */
				log_info("store: chat=%lld update=%lld: stored by the try the lost connection cut",
				         (long long)op->id, (long long)op->update_id);
			else
				taken_over(op);
		}
		finish(c, op);
		return;
	case P_BEGIN: {
		if (!op->update_id) {
			append_turns(c, op);
			return;
		}
		/*
		 * The done mark first: it holds the update's row until COMMIT, and when the update is no
		 * longer this process's (its lease ran out and another instance took it over, or it is
		 * done), the turns are not stored a second time.
		 */
		const char *v[] = {uid, c->s->owner};
		op->phase = P_MARK;
		send_query(c, "marking an update done",
		           "UPDATE tgllm_updates SET state = 'done', body = NULL "
		           "WHERE update_id = $1 AND state = 'pending' AND (owner IS NULL OR owner = $2)",
		           2, v);
		return;
	}
	case P_MARK: {
		if (atoi(PQcmdTuples(res)) > 0) {
			append_turns(c, op);
			return;
		}
		const char *v[] = {uid};
		op->phase = P_MARKED;
		send_query(c, "reading an update", "SELECT 1 FROM tgllm_updates WHERE update_id = $1", 1, v);
		return;
	}
	case P_MARKED:
		if (PQntuples(res) == 0) { /* never journaled: nothing to mark */
			append_turns(c, op);
			return;
		}
		taken_over(op);
		op->phase = P_COMMIT;
		send_query(c, "ROLLBACK", "ROLLBACK", 0, NULL);
		return;
	case P_LOCK: {
		num(count, (int64_t)op->old.len);
		const char *v[] = {chat, count};
		op->phase = P_LAST;
		send_query(c, "reading the last turns",
		           "SELECT id, role, content FROM tgllm_messages WHERE chat_id = $1 ORDER BY id DESC "
		           "LIMIT $2",
		           2, v);
		return;
	}
	case P_LAST: {
		char first[24];
		if (!is_still_last(op, res, first, sizeof first)) {
			log_info("store: chat=%lld: the turns to replace are no longer the last; appending",
			         (long long)op->id);
			append_next(c, op);
			return;
		}
		const char *v[] = {chat, first};
		op->phase = P_DROP;
		send_query(c, "deleting the replaced turns",
		           "DELETE FROM tgllm_messages WHERE chat_id = $1 AND id >= $2", 2, v);
		return;
	}
	case P_DROP:
	case P_INSERT:
		append_next(c, op);
		return;
	default: /* P_COMMIT */
		finish(c, op);
	}
}

static void advance_change(struct pg_conn *c, struct pg_op *op, PGresult *res)
{
	char scope[24];
	num(scope, op->id);
	const char *v[] = {scope, op->key, op->value};
	switch (op->phase) {
	case P_ONE:
		op->phase = P_BEGIN;
		send_query(c, "BEGIN", "BEGIN", 0, NULL);
		return;
	case P_BEGIN:
		op->phase = P_LOCK;
		/* Changes of one setting take turns (an upsert alone cannot read-modify-write a missing row).
		 */
		send_query(c, "locking a setting", "SELECT pg_advisory_xact_lock(hashtextextended($2, $1))",
		           2, v);
		return;
	case P_LOCK:
		op->phase = P_GET;
		send_query(c, "reading a setting",
		           "SELECT value FROM tgllm_settings WHERE scope = $1 AND key = $2", 2, v);
		return;
	case P_GET: {
		char *value = op->change(op->change_arg, PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : NULL);
		if (!value) { /* nothing to write */
			commit(c, op);
			return;
		}
		{
			op->value = text_copy(value, strlen(value));
			free(value);
			if (!op->value) {
				fail(c, "writing a setting: out of memory");
				return;
			}
			const char *w[] = {scope, op->key, op->value};
			op->phase = P_PUT;
			send_query(c, "writing a setting",
			           "INSERT INTO tgllm_settings (scope, key, value) VALUES ($1, $2, $3) "
			           "ON CONFLICT (scope, key) DO UPDATE SET value = EXCLUDED.value",
			           3, w);
			return;
		}
	}
	case P_PUT:
		commit(c, op);
		return;
	default:
		finish(c, op);
	}
}

/*
 * update_begin: under the chat's lock (begins of one chat take turns across
 * instances, so two cannot both see the other's update as not started),
 * the chat's pending updates up to this one, and those started.
 */
static void advance_begin(struct pg_conn *c, struct pg_op *op, PGresult *res)
{
	char chat[24], uid[24];
	num(chat, op->id);
	num(uid, op->update_id);
	switch (op->phase) {
	case P_ONE:
		op->phase = P_BEGIN;
		send_query(c, "BEGIN", "BEGIN", 0, NULL);
		return;
	case P_BEGIN: {
		const char *v[] = {chat};
		op->phase = P_LOCK;
		send_query(c, "locking the chat", "SELECT pg_advisory_xact_lock($1)", 1, v);
		return;
	}
	case P_LOCK: {
		const char *v[] = {chat, uid, c->s->owner};
		op->phase = P_GET;
		/*
		 * A started update holds the chat until its job ends (store_update_end), done or not: a
		 * server's answer is stored before it is sent. Its lease bounds that: a process killed
		 * meanwhile holds the chat no longer than the lease.
		 */
		send_query(c, "reading the chat's updates",
		           "SELECT update_id, state = 'pending' AND owner IS NOT DISTINCT FROM $3, "
		           "state = 'pending', started AND lease_until > now() FROM tgllm_updates "
		           "WHERE chat_id = $1 AND (update_id = $2 OR (state = 'pending' AND update_id < $2) OR "
		           "(started AND lease_until > now()))",
		           3, v);
		return;
	}
	case P_GET: {
		bool is_mine = false, is_behind = false;
		for (int i = 0; i < PQntuples(res); i++) {
			int64_t id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
			if (id == op->update_id)
				is_mine = PQgetvalue(res, i, 1)[0] == 't';
			else if ((id < op->update_id && PQgetvalue(res, i, 2)[0] == 't') || PQgetvalue(res, i, 3)[0] == 't')
				is_behind = true; /* an earlier one, or one being handled */
		}
		op->turn = !is_mine ? STORE_TURN_GONE : is_behind ? STORE_TURN_WAIT : STORE_TURN_GO;
		if (op->turn == STORE_TURN_GONE)
			unhold(c->s, op->update_id);
		if (op->turn != STORE_TURN_GO) {
			commit(c, op);
			return;
		}
		const char *v[] = {uid, c->s->lease};
		op->phase = P_PUT;
		send_query(c, "starting an update",
		           "UPDATE tgllm_updates SET started = true, "
		           "lease_until = now() + interval '1 millisecond' * $2::float8 WHERE update_id = $1",
		           2, v);
		return;
	}
	case P_PUT:
		commit(c, op);
		return;
	default:
		finish(c, op);
	}
}

/* Sends op's next statement, given the answer to the one before (NULL to begin); or answers op. */
static void advance(struct pg_conn *c, PGresult *res)
{
	struct pg_op *op = c->op;
	char a[24], b[24], d[24];
	num(a, op->id);
	if (op->kind == K_APPEND) {
		advance_append(c, op, res);
		return;
	}
	if (op->kind == K_CHANGE) {
		advance_change(c, op, res);
		return;
	}
	if (op->kind == K_BEGIN) {
		advance_begin(c, op, res);
		return;
	}
	if (res) { /* the one statement's answer */
		switch (op->kind) {
		case K_LOAD:
			load_rows(c, op, res);
			return;
		case K_PENDING:
		case K_SCAN:
			list_rows(c, op, res);
			return;
		case K_CLAIM: {
			op->is_new = atoi(PQcmdTuples(res)) > 0;
			if (op->is_new)
				hold(c->s, op->update_id);
			finish(c, op);
			return;
		}
		case K_GET: {
			if (PQntuples(res) > 0 && !(op->result = strdup(PQgetvalue(res, 0, 0)))) {
				fail(c, "reading a setting: out of memory");
				return;
			}
			finish(c, op);
			return;
		}
		default:
			finish(c, op);
			return;
		}
	}
	switch (op->kind) {
	case K_LOAD: {
		num(b, HISTORY_LOAD_MAX);
		num(d, HISTORY_LOAD_BYTES);
		const char *v[] = {a, b, d};
		/* The newest turns up to HISTORY_LOAD_BYTES (the newest one whatever its size), oldest first.
		 */
		send_query(c, "reading history",
		           "SELECT role, content, is_parts FROM ("
		           "  SELECT id, role, content, is_parts,"
		           "    sum(octet_length(content)) OVER (ORDER BY id DESC) AS total"
		           "  FROM tgllm_messages WHERE chat_id = $1 ORDER BY id DESC LIMIT $2) AS newest "
		           "WHERE total <= $3 OR total = octet_length(content) ORDER BY id",
		           3, v);
		return;
	}
	case K_CLEAR: {
		const char *v[] = {a};
		send_query(c, "clearing history", "DELETE FROM tgllm_messages WHERE chat_id = $1", 1, v);
		return;
	}
	case K_CLAIM: {
		num(b, op->update_id);
		num(d, (int64_t)time(NULL));
		const char *v[] = {b, a, op->value, d, c->s->owner, c->s->lease};
		/* A repeat is new again when its owner stopped renewing it (died): it is taken over. */
		send_query(c, "journaling an update",
		           "INSERT INTO tgllm_updates AS u "
		           "(update_id, chat_id, state, body, received_at, owner, lease_until) "
		           "VALUES ($1, $2, 'pending', $3, $4, $5, now() + interval '1 millisecond' * $6::float8) "
		           "ON CONFLICT (update_id) DO UPDATE SET owner = EXCLUDED.owner, "
		           "lease_until = EXCLUDED.lease_until, started = false "
		           "WHERE u.state = 'pending' AND u.lease_until < now()",
		           6, v);
		return;
	}
	case K_DONE: {
		const char *v[] = {a};
		send_query(c, "marking an update done",
		           "UPDATE tgllm_updates SET state = 'done', body = NULL WHERE update_id = $1", 1, v);
		return;
	}
	case K_RELEASE: {
		const char *v[] = {a};
		send_query(c, "releasing an update",
		           "DELETE FROM tgllm_updates WHERE update_id = $1 AND state = 'pending'", 1, v);
		return;
	}
	case K_PENDING: {
		/* The updates no live instance holds (their leases ran out) become this one's. */
		const char *v[] = {c->s->owner, c->s->lease};
		send_query(c, "taking over unfinished updates",
		           "WITH t AS (UPDATE tgllm_updates SET owner = $1, started = false, "
		           "lease_until = now() + interval '1 millisecond' * $2::float8 "
		           "WHERE state = 'pending' AND lease_until < now() AND body IS NOT NULL "
		           "RETURNING update_id, body) "
		           "SELECT update_id, body FROM t ORDER BY update_id",
		           2, v);
		return;
	}
	case K_END: {
		num(b, op->update_id);
		const char *v[] = {b, c->s->owner};
		send_query(c, "ending an update's turn",
		           "UPDATE tgllm_updates SET started = false WHERE update_id = $1 AND owner = $2 AND started", 2,
		           v);
		return;
	}
	case K_RENEW: {
		const char *v[] = {c->s->owner, c->s->lease, op->value};
		send_query(c, "renewing leases",
		           "UPDATE tgllm_updates SET lease_until = now() + interval '1 millisecond' * $2::float8 "
		           "WHERE owner = $1 AND update_id = ANY($3::bigint[])",
		           3, v);
		return;
	}
	case K_GET: {
		const char *v[] = {a, op->key};
		send_query(c, "reading a setting",
		           "SELECT value FROM tgllm_settings WHERE scope = $1 AND key = $2", 2, v);
		return;
	}
	case K_SET: {
		const char *v[] = {a, op->key, op->value};
		send_query(c, "writing a setting",
		           "INSERT INTO tgllm_settings (scope, key, value) VALUES ($1, $2, $3) "
		           "ON CONFLICT (scope, key) DO UPDATE SET value = EXCLUDED.value",
		           3, v);
		return;
	}
	case K_SCAN: {
		const char *v[] = {op->key};
		send_query(c, "reading settings", "SELECT scope, value FROM tgllm_settings WHERE key = $1", 1,
		           v);
		return;
	}
	default:
		return;
	}
}

/* ---- store_ops ---- */

static struct pg_op *op_new(enum kind kind, int64_t id, void *arg)
{
	struct pg_op *op = calloc(1, sizeof *op);
	if (op) {
		op->kind = kind;
		op->id = id;
		op->arg = arg;
		op->started = metrics_clock();
	}
	return op;
}

/* Queues op, or (out of memory) answers -1 through the loop. */
static void start(struct store *base, struct pg_op *op, bool is_complete)
{
	struct store_pg *s = from(base);
	if (s->last)
		s->last->later = op;
	else
		s->first = op;
	s->last = op;
	if (!is_complete) {
		log_error("store: postgres: out of memory");
		op_over(from(base), op, -1);
		return;
	}
	enqueue(from(base), op);
}

/* Only when not even the op could be had: answered at once (store.h allows it). */
#define OOM_AT_ONCE(call)                                                                                    \
	do {                                                                                                 \
		log_error("store: postgres: out of memory");                                                 \
		call;                                                                                        \
		return;                                                                                      \
	} while (0)

static void pg_history_load(struct store *base, int64_t chat_id, store_history_cb cb, void *arg)
{
	struct pg_op *op = op_new(K_LOAD, chat_id, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1, &(struct history)HISTORY_INIT));
	op->cb.history = cb;
	start(base, op, true);
}

static void pg_history_append(struct store *base, int64_t chat_id, const struct turn *old, size_t n_old,
                              const struct turn *turns, size_t n, int64_t update_id, store_done_cb cb,
                              void *arg)
{
	struct pg_op *op = op_new(K_APPEND, chat_id, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1));
	op->cb.done = cb;
	op->update_id = update_id;
	start(base, op, copy_turns(&op->old, old, n_old) == 0 && copy_turns(&op->turns, turns, n) == 0);
}

static void pg_history_clear(struct store *base, int64_t chat_id, store_done_cb cb, void *arg)
{
	struct pg_op *op = op_new(K_CLEAR, chat_id, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1));
	op->cb.done = cb;
	start(base, op, true);
}

static void pg_update_claim(struct store *base, int64_t update_id, int64_t chat_id, const char *raw,
                            size_t raw_len, store_claim_cb cb, void *arg)
{
	struct pg_op *op = op_new(K_CLAIM, chat_id, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1, false));
	op->cb.claim = cb;
	op->update_id = update_id;
	start(base, op, (op->value = text_copy(raw, raw_len)) != NULL);
}

static void pg_update_done(struct store *base, int64_t update_id, store_done_cb cb, void *arg)
{
	struct pg_op *op = op_new(K_DONE, update_id, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1));
	op->cb.done = cb;
	unhold(from(base), update_id);
	start(base, op, true);
}

static void pg_update_release(struct store *base, int64_t update_id, store_done_cb cb, void *arg)
{
	struct pg_op *op = op_new(K_RELEASE, update_id, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1));
	op->cb.done = cb;
	unhold(from(base), update_id);
	start(base, op, true);
}

static void pg_update_begin(struct store *base, int64_t update_id, int64_t chat_id, store_turn_cb cb,
                            void *arg)
{
	struct pg_op *op = op_new(K_BEGIN, chat_id, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1, STORE_TURN_WAIT));
	op->cb.turn = cb;
	op->update_id = update_id;
	start(base, op, true);
}

static void pg_update_end(struct store *base, int64_t update_id, int64_t chat_id)
{
	unhold(from(base), update_id);
	struct pg_op *op = op_new(K_END, chat_id, NULL);
	if (!op) { /* its lease runs out instead */
		log_error("store: postgres: out of memory ending update=%lld's turn", (long long)update_id);
		return;
	}
	op->update_id = update_id;
	start(base, op, true);
}

/* Renews the leases of the updates held, as "{id,id,...}" (one statement whatever their number). */
static void on_renew(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct store_pg *s = arg;
	struct timeval tv = {0, 0};
	unsigned ms = s->base.lease_ms / 3;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(s->renew, &tv);
	if (s->n_held == 0)
		return;
	struct pg_op *op = op_new(K_RENEW, 0, NULL);
	char *ids = op ? malloc(s->n_held * 21 + 3) : NULL;
	if (!ids) {
		free(op);
		log_error("store: postgres: out of memory renewing leases");
		return;
	}
	size_t n = 0;
	ids[n++] = '{';
	for (size_t i = 0; i < s->n_held; i++)
		n += (size_t)snprintf(ids + n, 22, "%s%lld", i ? "," : "", (long long)s->held[i]);
	ids[n++] = '}';
	ids[n] = '\0';
	op->value = ids;
	start(&s->base, op, true);
}

static void pg_update_pending(struct store *base, store_pending_cb cb, void *arg)
{
	struct pg_op *op = op_new(K_PENDING, 0, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1, NULL));
	op->cb.pending = cb;
	start(base, op, true);
}

static void pg_setting_get(struct store *base, int64_t scope, const char *key, store_value_cb cb, void *arg)
{
	struct pg_op *op = op_new(K_GET, scope, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1, NULL));
	op->cb.value = cb;
	start(base, op, (op->key = text_copy(key, strlen(key))) != NULL);
}

static void pg_setting_set(struct store *base, int64_t scope, const char *key, const char *value,
                           store_done_cb cb, void *arg)
{
	struct pg_op *op = op_new(K_SET, scope, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1));
	op->cb.done = cb;
	op->key = text_copy(key, strlen(key));
	op->value = text_copy(value, strlen(value));
	start(base, op, op->key && op->value);
}

static void pg_setting_change(struct store *base, int64_t scope, const char *key, store_change_fn change,
                              void *change_arg, store_done_cb cb, void *arg)
{
	struct pg_op *op = op_new(K_CHANGE, scope, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1));
	op->cb.done = cb;
	op->change = change;
	op->change_arg = change_arg;
	start(base, op, (op->key = text_copy(key, strlen(key))) != NULL);
}

static void pg_setting_scan(struct store *base, const char *key, store_scan_cb cb, void *arg)
{
	struct pg_op *op = op_new(K_SCAN, 0, arg);
	if (!op)
		OOM_AT_ONCE(cb(arg, -1, 0, NULL));
	op->cb.scan = cb;
	start(base, op, (op->key = text_copy(key, strlen(key))) != NULL);
}

static void pg_lead(struct store *base, void (*cb)(void *arg, bool is_leading), void *arg)
{
	pg_lead_ask(from(base)->lead, cb, arg);
}

static void pg_free(struct store *base)
{
	struct store_pg *s = from(base);
	pg_lead_free(s->lead);
	for (int i = 0; i < POOL; i++) {
		struct pg_conn *c = &s->conns[i];
		if (c->ev) {
			conn_close(c);
			event_free(c->ev);
		}
	}
	while (s->first) { /* running, waiting, or over and waiting for an earlier one */
		struct pg_op *op = s->first;
		s->first = op->later;
		op_free(op);
	}
	if (s->retry)
		event_free(s->retry);
	if (s->renew)
		event_free(s->renew);
	free(s->held);
	free(s->conninfo);
	store_clear(&s->base);
	free(s);
}

static const struct store_ops postgres_ops = {
    .name = "postgres",
    .history_load = pg_history_load,
    .history_append = pg_history_append,
    .history_clear = pg_history_clear,
    .update_claim = pg_update_claim,
    .update_done = pg_update_done,
    .update_release = pg_update_release,
    .update_pending = pg_update_pending,
    .update_begin = pg_update_begin,
    .update_end = pg_update_end,
    .setting_get = pg_setting_get,
    .setting_set = pg_setting_set,
    .setting_change = pg_setting_change,
    .setting_scan = pg_setting_scan,
    .free = pg_free,
    .lead = pg_lead,
};

/* ---- open ---- */

/*
 * Replaces every occurrence of secret in msg by "***" (libpq's messages do not
 * quote the password; this is for a malformed URI's). As the log's secrets, a
 * password shorter than 4 bytes is left: "p" would take words apart.
 */
static void redact(char *msg, const char *secret)
{
	size_t n = secret ? strlen(secret) : 0;
	if (n < 4)
		return;
	char *p;
	while ((p = strstr(msg, secret))) {
		memmove(p + 3, p + n, strlen(p + n) + 1);
		memcpy(p, "***", 3);
	}
}

/*
 * The password, as written in a URI (percent-encoded) and as libpq reads it,
 * goes to the log's secrets, and out of err.
 */
struct secrets {
	char raw[256];
	char *decoded;
};

static void find_secrets(const char *spec, struct secrets *sec)
{
	sec->raw[0] = '\0';
	sec->decoded = NULL;
	const char *scheme = strstr(spec, "://");
	if (scheme) {
		const char *auth = scheme + 3, *end = auth + strcspn(auth, "/?");
		const char *at = NULL;
		for (const char *p = auth; p < end; p++)
			if (*p == '@')
				at = p;
		const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
		if (colon && at - colon - 1 > 0)
			snprintf(sec->raw, sizeof sec->raw, "%.*s", (int)(at - colon - 1), colon + 1);
	}
	PQconninfoOption *opts = PQconninfoParse(spec, NULL);
	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val && *o->val)
			sec->decoded = strdup(o->val);
	PQconninfoFree(opts);
	log_add_secret(sec->raw);
	log_add_secret(sec->decoded);
}

/* err = "what: the first line of msg", without the password. */
static void set_error(char *err, size_t errlen, const struct secrets *sec, const char *what, const char *msg)
{
	char line[256];
	first_line(msg, line, sizeof line);
	snprintf(err, errlen, "%s: %s", what, line);
	redact(err, sec->decoded);
	redact(err, sec->raw);
}

/* Runs a statement at open (blocking); -1 with err set. */
static int exec_open(PGconn *pc, const char *sql, int n, const char *const *values, PGresult **out,
                     const char *what, const struct secrets *sec, char *err, size_t errlen)
{
	PGresult *r = PQexecParams(pc, sql, n, NULL, values, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		char cannot[96];
		snprintf(cannot, sizeof cannot, "cannot %s", what);
		set_error(err, errlen, sec, cannot, r ? PQresultErrorMessage(r) : PQerrorMessage(pc));
		PQclear(r);
		return -1;
	}
	if (out)
		*out = r;
	else
		PQclear(r);
	return 0;
}

/* Creates or upgrades the schema in one transaction, under an advisory lock. */
static int migrate(PGconn *pc, const struct secrets *sec, char *err, size_t errlen)
{
	PGresult *r = NULL;
	if (exec_open(pc, "BEGIN", 0, NULL, NULL, "begin", sec, err, errlen) ||
	    exec_open(pc, MIGRATION_LOCK, 0, NULL, NULL, "lock the schema", sec, err, errlen) ||
	    exec_open(pc, "CREATE TABLE IF NOT EXISTS tgllm_schema (version INTEGER NOT NULL)", 0, NULL, NULL,
	              "create the schema's version table", sec, err, errlen) ||
	    exec_open(pc, "SELECT version FROM tgllm_schema", 0, NULL, &r, "read the schema version", sec,
	              err, errlen))
		goto fail;
	int version = PQntuples(r) > 0 ? atoi(PQgetvalue(r, 0, 0)) : -1;
	PQclear(r);
	if (version < 0) {
		if (exec_open(pc, "INSERT INTO tgllm_schema (version) VALUES (0)", 0, NULL, NULL,
		              "write the schema version", sec, err, errlen))
			goto fail;
		version = 0;
	}
	if (version > SCHEMA_VERSION) {
		snprintf(err, errlen, "the database has schema version %d, newer than this tgllm (%d)",
		         version, SCHEMA_VERSION);
		goto fail;
	}
	for (; version < SCHEMA_VERSION; version++) {
		char what[64], v[24];
		snprintf(what, sizeof what, "upgrade the schema to version %d", version + 1);
		char cannot[96];
		snprintf(cannot, sizeof cannot, "cannot %s", what);
		num(v, version + 1);
		const char *values[] = {v};
		/* PQexec: a migration may hold several statements. */
		PGresult *m = PQexec(pc, migrations[version]);
		if (PQresultStatus(m) != PGRES_COMMAND_OK) {
			set_error(err, errlen, sec, cannot, m ? PQresultErrorMessage(m) : PQerrorMessage(pc));
			PQclear(m);
			goto fail;
		}
		PQclear(m);
		if (exec_open(pc, "UPDATE tgllm_schema SET version = $1", 1, values, NULL, what, sec, err,
		              errlen))
			goto fail;
	}
	if (exec_open(pc, "COMMIT", 0, NULL, NULL, "commit the schema", sec, err, errlen))
		goto fail;
	return 0;
fail:
	PQclear(PQexec(pc, "ROLLBACK"));
	return -1;
}

/* host:pid:random, so an operator can tell which instance holds what, and a restart is someone new. */
static void make_owner(char *out, size_t n)
{
	char host[64] = "";
	unsigned char r[8] = {0};
	if (gethostname(host, sizeof host) != 0)
		snprintf(host, sizeof host, "?");
	host[sizeof host - 1] = '\0';
	if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
		unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
		for (size_t i = 0; i < sizeof r; i++)
			r[i] = (unsigned char)rand_r(&seed);
	}
	snprintf(out, n, "%s:%ld:%02x%02x%02x%02x%02x%02x%02x%02x", host, (long)getpid(), r[0], r[1], r[2], r[3],
	         r[4], r[5], r[6], r[7]);
}

/*
 * Whether a failed connection may succeed later, from libpq's message. A
 * refusal by the server carries a SQLSTATE (the verbose form, "FATAL:  28P01:
 * ..."), which unlike the message is never translated: classes 08
 * (connection), 53 (too many connections) and 57P (starting up, shutting
 * down) pass with time; any other (28: a wrong password or no pg_hba.conf
 * entry; 3D000: no such database) is the configuration's, and waiting would
 * not mend it. No SQLSTATE: the server never answered (refused, timed out,
 * a name not resolved). PQconnectionUsedPassword cannot tell these apart:
 * "remaining connection slots are reserved" comes after the password was
 * taken.
 */
static bool may_succeed_later(const char *msg)
{
	for (const char *p = msg; (p = strstr(p, ":  ")) != NULL; p += 3) {
		const char *state = p + 3;
		if (strspn(state, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 5 || state[5] != ':')
			continue;
		if (strncmp(state, "08", 2) != 0 && strncmp(state, "53", 2) != 0 &&
		    strncmp(state, "57P", 3) != 0)
			return false;
	}
	return true;
}

/*
 * The connect_timeout libpq read (the string's own, else CONNECT_TIMEOUT_S),
 * in seconds, 2 at least as libpq has it; 0 (libpq: no bound) keeps ours.
 */
static int connect_timeout_s(PGconn *pc)
{
	int timeout = CONNECT_TIMEOUT_S;
	PQconninfoOption *opts = PQconninfo(pc);
	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && atoi(o->val) > 0)
			timeout = atoi(o->val) < 2 ? 2 : atoi(o->val);
	PQconninfoFree(opts);
	return timeout;
}

/*
 * Connects, blocking up to connect_timeout: PQconnectdbParams's own loop,
 * but with verbose errors while connecting, for may_succeed_later. (libpq
 * leaves connect_timeout to its caller here; it bounds the whole connect,
 * not each host of a list.) 0, -1 or STORE_UNREACHABLE with err set.
 */
static int connect_blocking(const char *spec, const struct secrets *sec, PGconn **out, char *err,
                            size_t errlen)
{
	/* A malformed string: no later try can mend it. */
	char *why = NULL;
	PQconninfoOption *opts = PQconninfoParse(spec, &why);
	if (!opts) {
		set_error(err, errlen, sec, "cannot connect to PostgreSQL", why ? why : "out of memory");
		PQfreemem(why);
		return -1;
	}
	PQconninfoFree(opts);
	const char *vals[] = {"10", "tgllm", "UTF8", STATEMENT_TIMEOUT, spec, NULL};
	PGconn *pc = *out = PQconnectStartParams(conn_keys, vals, 1);
	if (!pc) {
		set_error(err, errlen, sec, "cannot connect to PostgreSQL", "out of memory");
		return -1;
	}
	PQsetErrorVerbosity(pc, PQERRORS_VERBOSE);
	struct timespec now, end;
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += connect_timeout_s(pc);
	/* As libpq's docs start the loop (asked to write); bad at once: the first connect() failed. */
	bool is_bad_at_once = PQstatus(pc) == CONNECTION_BAD;
	PostgresPollingStatusType st = is_bad_at_once ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
	while (st == PGRES_POLLING_READING || st == PGRES_POLLING_WRITING) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		long long ms = (end.tv_sec - now.tv_sec) * 1000LL + (end.tv_nsec - now.tv_nsec) / 1000000;
		if (ms <= 0) {
			set_error(err, errlen, sec, "cannot connect to PostgreSQL", "timeout expired");
			return STORE_UNREACHABLE;
		}
		struct pollfd p = {.fd = PQsocket(pc),
		                   .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
		int n = poll(&p, 1, (int)ms);
		if (n < 0 && errno != EINTR) {
			set_error(err, errlen, sec, "cannot connect to PostgreSQL", strerror(errno));
			return -1;
		}
		if (n > 0)
			st = PQconnectPoll(pc);
	}
	if (st != PGRES_POLLING_OK) {
		const char *msg = PQerrorMessage(pc);
		set_error(err, errlen, sec, "cannot connect to PostgreSQL", msg);
		/*
		 * Bad at once is a unix socket not there yet or a name not
		 * resolved, or an option libpq refuses ("invalid sslmode value"),
		 * which no later try mends: only the first tried a server, and
		 * says so (libpq's messages are English: tgllm never calls
		 * setlocale).
		 */
		bool has_tried = !is_bad_at_once || strstr(msg, "connection to server") ||
		                 strstr(msg, "could not connect to server") ||
		                 strstr(msg, "could not translate host name");
		return has_tried && may_succeed_later(msg) ? STORE_UNREACHABLE : -1;
	}
	PQsetErrorVerbosity(pc, PQERRORS_DEFAULT);
	PQsetNoticeProcessor(pc, notice_ignored, NULL);
	return 0;
}

/* What open and the migrate command share: the connection, the encoding, the schema. */
static int connect_schema(const char *spec, const struct secrets *sec, PGconn **out, char *err, size_t errlen)
{
	int rc = connect_blocking(spec, sec, out, err, errlen);
	if (rc != 0)
		return rc;
	const char *encoding = PQparameterStatus(*out, "server_encoding");
	if (!encoding || (strcmp(encoding, "UTF8") != 0 && strcmp(encoding, "SQL_ASCII") != 0)) {
		snprintf(
		    err, errlen,
		    "the database's encoding is %s; tgllm needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8')",
		    encoding ? encoding : "unknown");
		return -1;
	}
	return migrate(*out, sec, err, errlen);
}

int store_postgres_connect(const char *spec, PGconn **out, char *err, size_t errlen)
{
	struct secrets sec;
	find_secrets(spec, &sec);
	int rc = connect_schema(spec, &sec, out, err, errlen);
	free(sec.decoded);
	if (rc != 0) {
		PQfinish(*out);
		*out = NULL;
	}
	return rc;
}

char *store_postgres_text(const char *p, size_t len)
{
	return text_copy(p, len);
}

int store_postgres_open(const char *spec, unsigned lease_ms, struct event_base *base, struct store **out,
                        char *err, size_t errlen)
{
	struct secrets sec;
	find_secrets(spec, &sec);
	struct store_pg *s = calloc(1, sizeof *s);
	if (!s || store_init(&s->base, &postgres_ops, base) != 0) {
		free(s);
		free(sec.decoded);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int rc = -1;
	PGconn *pc = NULL;
	s->evb = base;
	s->base.lease_ms = lease_ms ? lease_ms : LEASE_MS;
	num(s->lease, s->base.lease_ms);
	make_owner(s->owner, sizeof s->owner);
	bool is_ok = (s->conninfo = strdup(spec)) && (s->retry = evtimer_new(base, on_retry, s)) &&
	             (s->renew = evtimer_new(base, on_renew, s)) && (s->lead = pg_lead_new(base, spec));
	for (int i = 0; i < POOL && is_ok; i++) {
		s->conns[i].s = s;
		s->conns[i].index = i;
		is_ok = (s->conns[i].ev = event_new(base, -1, 0, on_socket, &s->conns[i])) != NULL;
	}
	if (!is_ok) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	rc = connect_schema(spec, &sec, &pc, err, errlen);
	s->conns[0].pc = pc;
	if (rc != 0)
		goto fail;
	rc = -1;
	char before[24];
	num(before, (int64_t)time(NULL) - JOURNAL_KEEP_S);
	const char *v[] = {before};
	char why[256];
	if (exec_open(pc, "DELETE FROM tgllm_updates WHERE state = 'done' AND received_at < $1", 1, v, NULL,
	              "prune the update journal", &sec, why, sizeof why) != 0)
		log_warn("store: postgres: %s", why);
	if (PQsetnonblocking(pc, 1) != 0) {
		set_error(err, errlen, &sec, "cannot set up the connection", PQerrorMessage(pc));
		goto fail;
	}
	conn_ready(&s->conns[0]);
	on_renew(-1, 0, s); /* arms the timer: nothing is held yet */
	free(sec.decoded);
	*out = &s->base;
	return 0;
fail:
	free(sec.decoded);
	pg_free(&s->base);
	return rc;
}
