/*
 * The lead lock of the PostgreSQL store (store/postgres_lead.h): one
 * connection, driven by its socket's events as the pool's are
 * (PQconnectPoll, then PQsendQuery and PQconsumeInput), that asks
 * pg_try_advisory_lock until it holds it, then keeps quiet and watches the
 * socket: the server closing it (a restart, pg_terminate_backend) or
 * keepalives failing ends the lead, and it connects again to try again.
 *
 * The key is a pair of int4, ('tgll', 'poll'): pg_advisory_lock(bigint)
 * takes its keys from another space, the one postgres.c locks chats (their
 * ids) and settings (a hash) in, where a fixed key could be some chat's
 * id and hold its /retry up for as long as this process leads.
 */
#include "store/postgres_lead.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/backoff.h"
#include "lib/log.h"

#define LEAD_LOCK "SELECT pg_try_advisory_lock(1952935020, 1886350444)"
/*
 * The server's side of the keepalives (per session, any user may set them):
 * a leader whose host vanished is noticed in about 10 s, not the hours the
 * OS's defaults take, and its lock released. On a unix socket they do nothing.
 */
#define SESSION_SETUP                                                                                        \
	"SET tcp_keepalives_idle = 4; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3; "
#define CONNECT_TIMEOUT_S 10
#define QUERY_TIMEOUT_S   10

/* A standby asks again every 0.7 to 1.05 s: the jitter keeps standbys from asking in step. */
static const struct backoff try_backoff = {.first_ms = 700, .max_ms = 700, .has_jitter = true};
/* After a lost connection: no sooner than a standby asks again, so a flaky leader tends to yield. */
static const struct backoff reconnect_backoff = {.first_ms = 1000, .max_ms = 4000, .has_jitter = true};

/*
 * The connection's parameters: the store's string (dbname, expanded), with
 * the pool's connect_timeout before it (the string's own wins), and after
 * it, so that they win, the client's keepalives (a vanished server is
 * noticed in about 10 s: a lead must not hang on a dead peer) and a name
 * of its own for operators (pg_stat_activity.application_name).
 */
static const char *const keys[] = {"connect_timeout",     "dbname",           "application_name",
                                   "client_encoding",     "keepalives",       "keepalives_idle",
                                   "keepalives_interval", "keepalives_count", NULL};

enum lead_state {
	L_IDLE,        /* not asked, or given up */
	L_DOWN,        /* no connection: the timer connects again */
	L_CONNECTING,  /* PQconnectPoll on socket events */
	L_ASKING,      /* the lock asked for, the answer awaited */
	L_STANDING_BY, /* another session holds it: the timer asks again */
	L_LEADING,     /* held: the socket is watched for the connection's end */
};

enum told { TOLD_NOTHING, TOLD_LEADING, TOLD_NOT_LEADING };

struct pg_lead {
	struct event_base *evb;
	char *conninfo;
	PGconn *pc;
	enum lead_state state;
	struct event *sock;  /* the socket's, re-armed for what is awaited */
	struct event *timer; /* asks again, or connects again */
	int failures;        /* connections lost or failed in a row */
	bool is_set_up;      /* SESSION_SETUP went with a lock asked on this connection */
	bool is_flushing;    /* the query is not all written yet */
	bool is_held;        /* the answer so far: the lock is ours */
	char *error;         /* the query's first error, as the server said it */
	enum told told;
	void (*cb)(void *arg, bool is_leading);
	void *arg;
};

static void on_socket(evutil_socket_t fd, short what, void *arg);

static void notice_ignored(void *arg, const char *message)
{
	(void)arg;
	log_debug("store: postgres: lead: %.*s", (int)strcspn(message, "\n"), message);
}

/*
 * Tells cb what changed. Always the last thing a handler does: cb may give
 * the lead up, or free the store.
 */
static void tell(struct pg_lead *l, bool is_leading)
{
	enum told now = is_leading ? TOLD_LEADING : TOLD_NOT_LEADING;
	if (l->told == now || !l->cb)
		return;
	l->told = now;
	l->cb(l->arg, is_leading);
}

static void conn_close(struct pg_lead *l)
{
	(void)event_del(l->sock); /* fails only for an event never set up: nothing to stop then */
	PQfinish(l->pc);
	l->pc = NULL;
	free(l->error);
	l->error = NULL;
	l->is_flushing = false;
	l->is_held = false;
}

static void timer_in(struct pg_lead *l, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if (evtimer_add(l->timer, &tv) != 0)
		log_error(
		    "store: postgres: lead: cannot schedule the next try: this instance stands by for good");
}

/* The connection is gone, or never came: connect again with backoff. */
static void conn_lost(struct pg_lead *l, const char *why)
{
	char line[256];
	snprintf(line, sizeof line, "%.*s", (int)strcspn(why, "\n"), why);
	bool was_leading = l->state == L_LEADING, was_connecting = l->state == L_CONNECTING;
	conn_close(l);
	l->state = L_DOWN;
	l->failures++;
	long ms = backoff_ms(&reconnect_backoff, l->failures);
	if (was_leading)
		log_error("store: postgres: the lead lock's connection is lost (%s): this instance no longer "
		          "leads; trying again in %ld ms",
		          line, ms);
	else if (was_connecting && l->failures > 1 && l->failures % 30 != 0)
		log_debug("store: postgres: lead: cannot connect: %s", line);
	else
		log_error("store: postgres: lead: %s: %s; trying again in %ld ms",
		          was_connecting ? "cannot connect" : "connection lost", line, ms);
	timer_in(l, ms);
	if (was_leading)
		tell(l, false);
}

static void watch(struct pg_lead *l, short what, int timeout_s)
{
	struct timeval tv = {timeout_s, 0};
	if (event_del(l->sock) != 0 ||
	    event_assign(l->sock, l->evb, PQsocket(l->pc), what, on_socket, l) != 0 ||
	    event_add(l->sock, timeout_s ? &tv : NULL) != 0)
		conn_lost(l, "cannot watch the connection");
}

static void conn_start(struct pg_lead *l)
{
	const char *vals[] = {"10", l->conninfo, "tgllm-lead", "UTF8", "1", "4", "2", "3", NULL};
	l->pc = PQconnectStartParams(keys, vals, 1);
	l->state = L_CONNECTING;
	l->is_set_up = false;
	if (!l->pc || PQstatus(l->pc) == CONNECTION_BAD) {
		conn_lost(l, l->pc ? PQerrorMessage(l->pc) : "out of memory");
		return;
	}
	PQsetNoticeProcessor(l->pc, notice_ignored, NULL);
	watch(l, EV_WRITE, CONNECT_TIMEOUT_S);
}

static void ask(struct pg_lead *l)
{
	const char *sql = l->is_set_up ? LEAD_LOCK : SESSION_SETUP LEAD_LOCK;
	l->is_set_up = true;
	l->is_held = false;
	/* PQsendQuery, not ...Params: the set-up is several statements, and no value comes from outside. */
	if (!PQsendQuery(l->pc, sql)) {
		conn_lost(l, PQerrorMessage(l->pc));
		return;
	}
	int rc = PQflush(l->pc);
	if (rc < 0) {
		conn_lost(l, PQerrorMessage(l->pc));
		return;
	}
	l->is_flushing = rc == 1;
	l->state = L_ASKING;
	watch(l, EV_READ | (l->is_flushing ? EV_WRITE : 0), QUERY_TIMEOUT_S);
}

static void connect_poll(struct pg_lead *l)
{
	switch (PQconnectPoll(l->pc)) {
	case PGRES_POLLING_READING:
		watch(l, EV_READ, CONNECT_TIMEOUT_S);
		return;
	case PGRES_POLLING_WRITING:
		watch(l, EV_WRITE, CONNECT_TIMEOUT_S);
		return;
	case PGRES_POLLING_OK:
		if (PQsetnonblocking(l->pc, 1) != 0) {
			conn_lost(l, PQerrorMessage(l->pc));
			return;
		}
		ask(l);
		return;
	default:
		conn_lost(l, PQerrorMessage(l->pc));
	}
}

/* Every result of the question is in. */
static void answered(struct pg_lead *l)
{
	if (PQstatus(l->pc) == CONNECTION_BAD) {
		conn_lost(l, l->error ? l->error : PQerrorMessage(l->pc));
		return;
	}
	if (l->error) {
		/* Nothing here should fail; were it to, asking again on a new connection is all there is. */
		char why[300];
		snprintf(why, sizeof why, "asking for the lock: %s", l->error);
		conn_lost(l, why);
		return;
	}
	l->failures = 0;
	watch(l, EV_READ, 0); /* idle, but a server going away is noticed at once */
	if (l->state == L_DOWN)
		return;
	if (l->is_held) {
		l->state = L_LEADING;
		tell(l, true);
		return;
	}
	l->state = L_STANDING_BY;
	timer_in(l, backoff_ms(&try_backoff, 1));
	tell(l, false);
}

static void read_answer(struct pg_lead *l, short what)
{
	if (what & EV_TIMEOUT) {
		conn_lost(l, "no answer from the server in time");
		return;
	}
	if (what & EV_READ && !PQconsumeInput(l->pc)) {
		conn_lost(l, PQerrorMessage(l->pc));
		return;
	}
	if (l->is_flushing) {
		int rc = PQflush(l->pc);
		if (rc < 0) {
			conn_lost(l, PQerrorMessage(l->pc));
			return;
		}
		l->is_flushing = rc == 1;
	}
	while (!l->is_flushing && !PQisBusy(l->pc)) {
		PGresult *r = PQgetResult(l->pc);
		if (!r) {
			answered(l);
			return;
		}
		ExecStatusType st = PQresultStatus(r);
		if (st == PGRES_TUPLES_OK && PQntuples(r) == 1)
			l->is_held = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
		else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !l->error) {
			const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
			l->error = strdup(m ? m : "the server failed the query");
		}
		PQclear(r);
	}
	watch(l, EV_READ | (l->is_flushing ? EV_WRITE : 0), QUERY_TIMEOUT_S);
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	struct pg_lead *l = arg;
	switch (l->state) {
	case L_CONNECTING:
		if (what & EV_TIMEOUT)
			conn_lost(l, "timed out");
		else
			connect_poll(l);
		return;
	case L_ASKING:
		read_answer(l, what);
		return;
	case L_STANDING_BY:
	case L_LEADING: /* idle: the server said something (it is going away), or the socket ended */
		if (!PQconsumeInput(l->pc) || PQstatus(l->pc) == CONNECTION_BAD) {
			conn_lost(l, PQerrorMessage(l->pc));
			return;
		}
		PGnotify *n;
		while ((n = PQnotifies(l->pc)))
			PQfreemem(n);
		watch(l, EV_READ, 0);
		return;
	case L_IDLE:
	case L_DOWN:
		return;
	}
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct pg_lead *l = arg;
	if (l->state == L_DOWN)
		conn_start(l);
	else if (l->state == L_STANDING_BY)
		ask(l);
}

struct pg_lead *pg_lead_new(struct event_base *base, const char *conninfo)
{
	struct pg_lead *l = calloc(1, sizeof *l);
	if (!l)
		return NULL;
	l->evb = base;
	if (!(l->conninfo = strdup(conninfo)) || !(l->sock = event_new(base, -1, 0, on_socket, l)) ||
	    !(l->timer = evtimer_new(base, on_timer, l))) {
		pg_lead_free(l);
		return NULL;
	}
	return l;
}

void pg_lead_ask(struct pg_lead *l, void (*cb)(void *arg, bool is_leading), void *arg)
{
	l->cb = cb;
	l->arg = arg;
	if (!cb) {
		if (l->state == L_LEADING)
			log_info("store: postgres: the lead is given up");
		conn_close(l);
		(void)evtimer_del(l->timer); /* as event_del in conn_close */
		l->state = L_IDLE;
		l->told = TOLD_NOTHING;
		return;
	}
	if (l->state != L_IDLE)
		return; /* asked already: the new cb is told what changes from now */
	l->failures = 0;
	conn_start(l); /* whatever it meets, cb hears of it from the loop */
}

void pg_lead_free(struct pg_lead *l)
{
	if (!l)
		return;
	if (l->sock) {
		conn_close(l);
		event_free(l->sock);
	}
	if (l->timer)
		event_free(l->timer);
	free(l->conninfo);
	free(l);
}
