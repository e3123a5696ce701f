/*
 * The S3 store: histories, the update journal and settings as objects in a
 * bucket of any S3-compatible service, in the original bot's layout. The
 * protocol (URLs, signing, retries, XML) is store/s3_client.c's; this file
 * is what the objects mean. Object layout, conditional writes and what a
 * server must support: docs/internals/STORE.md, "The S3 store".
 *
 * Every operation is a small state machine (struct s3_op): each step sends
 * one request and names the step that takes its response.
 */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/jsonr.h"
#include "lib/jsonw.h"
#include "lib/log.h"
#include "store/backend.h"
#include "store/history_json.h"
#include "store/s3_client.h"

#define S3_HISTORY_MAX      (8u << 20)  /* bytes of one history object */
#define S3_SMALL_MAX        (1u << 20)  /* journal records, settings, error bodies */
#define S3_LIST_MAX         (8u << 20)  /* one ListObjectsV2 page (1000 keys) */
#define S3_CONFLICTS        6           /* re-reads of a history after losing a race to another writer */
#define S3_WRITE_IDS        8           /* write ids kept in a history object's metadata, newest first */
#define S3_ID_LEN           16          /* hex digits of a write id or a claim nonce */
#define S3_PENDING_PARALLEL 8           /* journal records read at once by update_pending */
#define S3_PENDING_MAX      100000      /* journal records considered by update_pending */
#define JOURNAL_KEEP_S      (7 * 86400) /* done records older than this are deleted */

#define JOURNAL_DIR  "tgllm/updates/"
#define SETTINGS_DIR "tgllm/settings/"
/* A setting of scope 0: "unsupported" once the server has answered 501 to a conditional write. */
#define CONDITIONS_SETTING "s3_conditional_writes"

/* A scope-0 object the first process writes twice with If-None-Match: * to learn the above. */
#define CONDITIONS_PROBE "s3_conditional_probe"
#define S3_CACHED_MAX    32           /* histories kept from a load for the append that follows */
#define S3_CACHED_BYTES  (256u << 10) /* the largest history kept so */
/* A history read ahead (history_prefetch) answers a load that starts within this many ms. */
#define S3_PREFETCH_FRESH_MS 2000

/*
 * What the bucket says of conditional writes (CONDITIONS_SETTING), read once
 * a process. Only a server known to enforce them gets the one-request paths
 * (a claim that is a single conditional PUT, an append on the ETag of the
 * load before it): on one that ignores them, those would overwrite.
 */
enum conditions_known {
	CONDITIONS_READING,     /* the setting is being read */
	CONDITIONS_PROBING,     /* not said: this process is finding out */
	CONDITIONS_UNKNOWN,     /* not said, and not found out: conditions are tried, reads go first */
	CONDITIONS_IGNORED,     /* said: sent, but the server does not hold them: reads go first */
	CONDITIONS_ENFORCED,    /* said: the server refuses a write whose condition fails */
	CONDITIONS_UNSUPPORTED, /* said: plain writes from the start, no warning */
};

/* A setting read ahead (store_setting_prefetch), for the setting_get that follows. */
struct read_setting {
	struct read_setting *next;
	char *key;   /* the object's */
	char *value; /* NULL: not set */
	long long read_at;
	char etag[160]; /* for a change that writes on it */
	char write_ids[S3_WRITE_IDS * (S3_ID_LEN + 1)];
};

/*
 * A history as the last load read it (body, ETag, write ids), for the
 * append that follows it in the same chat: that append writes on this
 * ETag instead of reading the object again. If someone wrote meanwhile, the
 * If-Match fails and the append reads again, as after any lost race.
 */
struct cached_history {
	int64_t chat_id;
	long status; /* 200, or 404: no object */
	json_t *arr; /* the history as the load parsed it (the append need not parse it again), or NULL */
	char *body;  /* else the body as read (a read ahead, not parsed yet) */
	size_t body_len;
	char etag[160];
	char write_ids[S3_WRITE_IDS * (S3_ID_LEN + 1)];
	bool is_prefetched; /* read ahead, not yet handed to a load */
	long long read_at;  /* ms (CLOCK_MONOTONIC) when its read was sent */
};

struct store_s3 {
	struct store base;
	struct s3_client *client;
	char *bucket;
	char *prefix;      /* "" or ending in '/' */
	struct s3_op *ops; /* in flight (doubly linked), freed by store_s3_free */
	unsigned seed;     /* for claim nonces when getrandom fails */
	enum conditions_known conditions;
	char *refused_condition;  /* a 501 that came while the setting was being read, to report then */
	struct s3_op *waiting;    /* claims waiting for the conditions to be known (via next_waiting) */
	struct s3_op *prefetches; /* histories and settings being read ahead (via next_waiting) */
	struct read_setting *read_settings; /* settings read ahead, not yet asked for */
	struct cached_history cached[S3_CACHED_MAX];
	size_t n_cached; /* the oldest first */
};

struct s3_op;
/* Takes the response to the op's request. */
typedef void (*s3_step)(struct s3_op *op, const struct http_response *resp);

struct pending_entry {
	int64_t update_id; /* a scan's: the scope */
	char *key;
	time_t modified; /* LastModified from the listing, 0 when unknown */
	char *raw;       /* the journaled update when the record is pending; a scan's: the value */
};

/*
 * update_pending's state: the listing, then the records read a few at a
 * time. setting_scan goes the same way through the settings' folder.
 */
struct pending {
	char *name; /* a scan's: the setting's key, which the objects' names end with */
	struct pending_entry *v;
	size_t n, cap;
	size_t next;    /* the next entry to read */
	size_t running; /* reads in flight */
	int err;
};

struct s3_op {
	struct s3_op *prev, *next;
	struct store_s3 *s;
	const char *what; /* for log lines: "reading history" */
	char *key;        /* with the prefix */
	struct s3_call *call;
	s3_step step;

	/* the caller's */
	union store_cb cb;
	void *arg;

	/* the operation's */
	int64_t chat_id, update_id;
	json_t *turns;                /* append: the new turns, in the stored layout */
	json_t *old;                  /* append: the turns they replace, or NULL */
	store_change_fn change;       /* setting_change's, and its argument: */
	void *change_arg;
	char write_id[S3_ID_LEN + 1]; /* append: names this exchange in the object's metadata */
	bool has_put;                 /* append: a PUT was sent, so a conflict may be our own write */
	size_t conflicts;             /* append: re-reads after a lost race */
	char *record;                 /* claim: the journal record to create */
	json_t *read;                 /* append: the history as read, from the cache */
	char *aside;                  /* load: where an unreadable history is kept */
	char *cause;                  /* load: why it is unreadable, for the log */
	char etag[160];               /* load: the unreadable version's ETag */
	char nonce[S3_ID_LEN + 1];    /* claim: tells our record from another instance's */
	struct pending *pending;
	struct s3_op *parent;       /* a read on behalf of update_pending */
	size_t index;               /* its entry */
	struct s3_op *next_waiting; /* claim: in s->waiting; prefetch: in s->prefetches */
	struct s3_op *waiter;       /* prefetch: the load its read will answer */
	bool is_stale;              /* prefetch: this process writes the history meanwhile */
	bool is_write;              /* an append or clear of chat_id's history, a set of key's setting */
	long long read_at;          /* prefetch: ms (CLOCK_MONOTONIC) when sent */
};

/* A new string, or NULL (asprintf leaves its pointer undefined on failure). */
static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...)
{
	char *out;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&out, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : out;
}

static struct store_s3 *from(struct store *s)
{
	return (struct store_s3 *)s;
}

static bool is_ok(const struct http_response *resp)
{
	return resp->status >= 200 && resp->status < 300;
}

/* ---- operations: life and death ---- */

static struct s3_op *op_new(struct store_s3 *s, const char *what, char *key)
{
	struct s3_op *op = key ? calloc(1, sizeof *op) : NULL;
	if (!op) {
		log_error("store: s3: out of memory %s", what);
		free(key);
		return NULL;
	}
	op->s = s;
	op->what = what;
	op->key = key;
	op->next = s->ops;
	if (s->ops)
		s->ops->prev = op;
	s->ops = op;
	return op;
}

static void pending_free(struct pending *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++) {
		free(p->v[i].key);
		free(p->v[i].raw);
	}
	free(p->v);
	free(p->name);
	free(p);
}

/* Frees an op without calling anyone back. */
static void op_free(struct s3_op *op)
{
	struct store_s3 *s = op->s;
	if (op->prev)
		op->prev->next = op->next;
	else
		s->ops = op->next;
	if (op->next)
		op->next->prev = op->prev;
	s3_cancel(op->call);
	free(op->key);
	json_decref(op->turns);
	json_decref(op->old);
	json_decref(op->read);
	free(op->record);
	free(op->aside);
	free(op->cause);
	pending_free(op->pending);
	free(op);
}

static void on_response(void *arg, const struct http_response *resp)
{
	struct s3_op *op = arg;
	op->call = NULL; /* it ends when this returns */
	op->step(op, resp);
}

/*
 * Sends req (on the op's key unless it names one; req.body is taken);
 * step takes its response, from the loop. -1 when out of memory: no step runs.
 */
static int op_send(struct s3_op *op, struct s3_request req, s3_step step)
{
	req.what = op->what;
	if (!req.key)
		req.key = op->key;
	op->step = step;
	op->call = s3_send(op->s->client, &req, on_response, op);
	return op->call ? 0 : -1;
}

static int op_request(struct s3_op *op, const char *method, char *body, size_t body_len,
                      const char *content_type, const char *condition, size_t max_body, s3_step step)
{
	struct s3_request req = {
	    .method = method,
	    .body = body,
	    .body_len = body_len,
	    .content_type = content_type,
	    .condition = condition,
	    .max_body = max_body,
	};
	return op_send(op, req, step);
}

static int op_get(struct s3_op *op, size_t max_body, s3_step step)
{
	return op_request(op, "GET", NULL, 0, NULL, NULL, max_body, step);
}

static void log_failure(const struct s3_op *op, const struct http_response *resp)
{
	s3_log_failure(op->s->client, op->what, op->key, resp);
}

static void op_done(struct s3_op *op, int err)
{
	store_answer_done(&op->s->base, op->cb.done, op->arg, err);
	op_free(op);
}

/* 64 random bits in hex: a claim's nonce, a history write's id. */
static void make_id(struct store_s3 *s, char out[S3_ID_LEN + 1])
{
	unsigned char r[S3_ID_LEN / 2];
	if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
		for (size_t i = 0; i < sizeof r; i++)
			r[i] = (unsigned char)rand_r(&s->seed);
	for (size_t i = 0; i < sizeof r; i++)
		snprintf(out + 2 * i, 3, "%02x", r[i]);
}

/* ---- keys ---- */

static char *history_key(const struct store_s3 *s, int64_t chat_id)
{
	return str_printf("%s%lld.json", s->prefix, (long long)chat_id);
}

static char *journal_key(const struct store_s3 *s, int64_t update_id)
{
	return str_printf("%s" JOURNAL_DIR "%lld.json", s->prefix, (long long)update_id);
}

static char *setting_key(const struct store_s3 *s, int64_t scope, const char *name)
{
	return str_printf("%s" SETTINGS_DIR "%lld/%s", s->prefix, (long long)scope, name);
}

/* ---- histories kept from a load for the append after it ---- */

static void cached_drop(struct store_s3 *s, size_t i, bool is_body_freed)
{
	if (is_body_freed) {
		free(s->cached[i].body);
		json_decref(s->cached[i].arr);
	}
	memmove(&s->cached[i], &s->cached[i + 1], (s->n_cached - i - 1) * sizeof s->cached[0]);
	s->n_cached--;
}

static struct cached_history *cached_find(struct store_s3 *s, int64_t chat_id)
{
	for (size_t i = 0; i < s->n_cached; i++)
		if (s->cached[i].chat_id == chat_id)
			return &s->cached[i];
	return NULL;
}

static void cached_forget(struct store_s3 *s, int64_t chat_id)
{
	struct cached_history *c = cached_find(s, chat_id);
	if (c)
		cached_drop(s, (size_t)(c - s->cached), true);
}

/*
 * Keeps what a load read (a readable history, or none: 404) for the append
 * that follows: the array parsed when there is one (arr, a new reference is
 * taken), else the body. Only a cache: when it cannot be kept (too big, no
 * ETag, no memory), the append reads the object again.
 */
static void cached_keep(struct store_s3 *s, int64_t chat_id, const struct http_response *resp, json_t *arr)
{
	cached_forget(s, chat_id);
	if (s->conditions == CONDITIONS_IGNORED || s->conditions == CONDITIONS_UNSUPPORTED)
		return;
	bool is_missing = resp->status == 404;
	const char *etag = is_missing ? "" : s3_etag(resp), *ids = is_missing ? "" : s3_write_ids(resp);
	if (resp->body_len > S3_CACHED_BYTES)
		return;
	size_t len = is_missing || arr ? 0 : resp->body_len;
	struct cached_history c = {.chat_id = chat_id, .status = is_missing ? 404 : 200, .body_len = len};
	if ((!is_missing && !etag[0]) || strlen(etag) >= sizeof c.etag || strlen(ids) >= sizeof c.write_ids ||
	    !(c.body = malloc(len + 1)))
		return;
	memcpy(c.body, len ? resp->body : "", len);
	c.body[len] = '\0';
	c.arr = is_missing ? NULL : json_incref(arr);
	memcpy(c.etag, etag, strlen(etag) + 1);
	memcpy(c.write_ids, ids, strlen(ids) + 1);
	if (s->n_cached == S3_CACHED_MAX)
		cached_drop(s, 0, true);
	s->cached[s->n_cached++] = c;
}

/* ms on CLOCK_MONOTONIC; -1 when the clock cannot be read. */
static long long now_ms(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return -1;
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether a read sent at read_at may still answer a load (never when the clock fails). */
static bool is_fresh(long long read_at)
{
	long long now = now_ms();
	return now >= 0 && read_at >= 0 && now - read_at < S3_PREFETCH_FRESH_MS;
}

/* ---- history ---- */

static void load_got(struct s3_op *op, const struct http_response *resp);

/* Hands a read kept in the cache to got as the response it was, then frees its body. */
static void replay(struct s3_op *op, struct cached_history *c,
                   void (*got)(struct s3_op *op, const struct http_response *resp))
{
	const char *headers[] = {c->etag, "", c->write_ids};
	struct http_response resp = {
	    .status = c->status,
	    .error = "",
	    .body = c->body,
	    .body_len = c->body_len,
	    .retry_after = -1,
	    .headers = headers,
	};
	got(op, &resp);
	free(c->body);
}

/*
 * Reading ahead (store_history_prefetch): the GET goes beside the journal
 * write, and the load that follows takes its answer (waiting for it when it
 * is still out) instead of sending its own. A read ahead is only as good as
 * a read then: it answers a load that starts within S3_PREFETCH_FRESH_MS,
 * and never one after this process has written the chat's history since
 * (the load would miss that exchange).
 */
static void prefetch_got(struct s3_op *op, const struct http_response *resp);

static struct s3_op *prefetch_find(struct store_s3 *s, int64_t chat_id)
{
	for (struct s3_op *p = s->prefetches; p; p = p->next_waiting)
		if (p->step == prefetch_got && p->chat_id == chat_id && !p->is_stale)
			return p;
	return NULL;
}

static void prefetch_unlink(struct s3_op *op)
{
	struct s3_op **at = &op->s->prefetches;
	while (*at && *at != op)
		at = &(*at)->next_waiting;
	if (*at)
		*at = op->next_waiting;
	op->next_waiting = NULL;
}

/* This process is about to write the chat's history: what was read ahead is old. */
static void prefetch_forget(struct store_s3 *s, int64_t chat_id)
{
	for (struct s3_op *p = s->prefetches; p; p = p->next_waiting)
		if (p->step == prefetch_got && p->chat_id == chat_id && !p->waiter)
			p->is_stale = true;
	struct cached_history *c = cached_find(s, chat_id);
	if (c && c->is_prefetched)
		cached_drop(s, (size_t)(c - s->cached), true);
}

/*
 * Whether this process is writing the object (key), or chat_id's history
 * when key is NULL: a read sent now could come back older than the write.
 */
static bool is_being_written(const struct store_s3 *s, int64_t chat_id, const char *key)
{
	for (const struct s3_op *op = s->ops; op; op = op->next)
		if (op->is_write && (key ? strcmp(op->key, key) == 0 : op->chat_id == chat_id))
			return true;
	return false;
}

/* Whether a job's load of the chat is kept for its append (see history_prefetch). */
static bool is_loaded(struct store_s3 *s, int64_t chat_id)
{
	struct cached_history *c = cached_find(s, chat_id);
	return c && !c->is_prefetched;
}

static void history_prefetch(struct store *base, int64_t chat_id)
{
	struct store_s3 *s = from(base);
	struct cached_history *c = cached_find(s, chat_id);
	/*
	 * A load's own read kept (not read ahead) means a job of this chat is
	 * under way here: the next load comes after its write, so a read now
	 * would be old by then.
	 */
	if (s->conditions == CONDITIONS_IGNORED || s->conditions == CONDITIONS_UNSUPPORTED ||
	    prefetch_find(s, chat_id) || (c && !c->is_prefetched) || is_being_written(s, chat_id, NULL) ||
	    (c && is_fresh(c->read_at)))
		return;
	struct s3_op *op = op_new(s, "reading history", history_key(s, chat_id));
	if (!op)
		return; /* only a hint: the load reads it */
	op->chat_id = chat_id;
	op->read_at = now_ms();
	if (op_get(op, S3_HISTORY_MAX, prefetch_got) != 0) {
		op_free(op);
		return;
	}
	op->next_waiting = s->prefetches;
	s->prefetches = op;
}

static void prefetch_got(struct s3_op *op, const struct http_response *resp)
{
	struct store_s3 *s = op->s;
	struct s3_op *waiter = op->waiter;
	prefetch_unlink(op);
	if (waiter) {
		load_got(waiter, resp); /* resp is the call's until this returns, op's freeing aside */
	} else if (!op->is_stale && (resp->status == 404 || is_ok(resp)) && !is_loaded(s, op->chat_id)) {
		cached_keep(s, op->chat_id, resp, NULL);
		struct cached_history *c = cached_find(s, op->chat_id);
		if (c) {
			c->is_prefetched = true;
			c->read_at = op->read_at;
		}
	}
	op_free(op);
}

/* Answers the load from a read ahead, when there is a fresh one; false when it must read. */
static bool load_from_prefetch(struct s3_op *op)
{
	struct store_s3 *s = op->s;
	struct s3_op *p = prefetch_find(s, op->chat_id);
	if (p && !p->waiter && is_fresh(p->read_at)) {
		p->waiter = op;
		return true;
	}
	struct cached_history *found = cached_find(s, op->chat_id);
	if (!found || !found->is_prefetched || !is_fresh(found->read_at))
		return false;
	struct cached_history c = *found;
	cached_drop(s, (size_t)(found - s->cached), false); /* its body is c's now; load_got keeps it again */
	replay(op, &c, load_got);
	json_decref(c.arr); /* NULL: read ahead, not parsed */
	return true;
}

static void history_load(struct store *base, int64_t chat_id, store_history_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "reading history", history_key(s, chat_id));
	if (op) {
		op->chat_id = chat_id;
		op->cb.history = cb;
		op->arg = arg;
		if (load_from_prefetch(op) || op_get(op, S3_HISTORY_MAX, load_got) == 0)
			return;
		op_free(op);
	}
	struct history h = HISTORY_INIT;
	store_answer_history(base, cb, arg, -1, &h);
}

static const char *json_kind(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	default:
		return "null";
	}
}

/*
 * The answer to a GET of a history (2xx) as the JSON array it must be (new
 * reference), or NULL with why not in a new string in *cause (NULL when out
 * of memory).
 */
static json_t *parse_history(const struct http_response *resp, char **cause)
{
	json_error_t e;
	*cause = NULL;
	if (resp->is_too_big) {
		long long size = s3_content_length(resp);
		if (size >= 0)
			*cause = str_printf("is %lld bytes, over the %u bytes a history may have", size,
			                    S3_HISTORY_MAX);
		else
			*cause = str_printf("is over the %u bytes a history may have", S3_HISTORY_MAX);
		return NULL;
	}
	if (resp->body_len == 0) {
		*cause = str_printf("is empty (0 bytes)");
		return NULL;
	}
	json_t *arr = json_loadb(resp->body, resp->body_len, JSON_ALLOW_NUL, &e);
	if (json_is_array(arr))
		return arr;
	if (arr)
		*cause = str_printf("is not a JSON array but %s", json_kind(arr));
	else
		*cause = str_printf("is not valid JSON (line %d: %s)", e.line, e.text);
	json_decref(arr);
	return NULL;
}

static void set_aside(struct s3_op *op, const struct http_response *resp, char *cause);

/*
 * A history the text reader leaves to jansson (content parts, entries to
 * skip), read into h; one that cannot be read at all goes aside and is
 * answered from there. 0 when read, -1 when out of memory, 1 when aside.
 */
static int load_tree(struct s3_op *op, const struct http_response *resp, struct history *h)
{
	char *cause;
	json_t *arr = parse_history(resp, &cause);
	if (!arr && cause) {
		set_aside(op, resp, cause);
		return 1;
	}
	int skipped = arr ? history_append_json(h, arr) : -1;
	if (skipped >= 0)
		cached_keep(op->s, op->chat_id, resp, arr);
	if (skipped > 0)
		log_warn("store: s3: chat=%lld: skipped %d history entries that are not {\"role\",\"content\"} turns",
		         (long long)op->chat_id, skipped);
	json_decref(arr);
	return skipped < 0 ? -1 : 0;
}

static void load_got(struct s3_op *op, const struct http_response *resp)
{
	struct history h = HISTORY_INIT;
	int err = 0;
	if (resp->status == 404) {
		/* No conversation yet. */
		cached_keep(op->s, op->chat_id, resp, NULL);
	} else if (is_ok(resp)) {
		/* The common history, text turns only, is read without a tree and kept as its text. */
		int rc = resp->is_too_big ? 0 : history_read_text_turns(&h, resp->body, resp->body_len);
		if (rc > 0)
			cached_keep(op->s, op->chat_id, resp, NULL);
		else if (rc == 0 && (rc = load_tree(op, resp, &h)) > 0)
			return; /* gone aside, answered from there */
		if (rc < 0)
			log_error("store: s3: out of memory reading the history of chat %lld", (long long)op->chat_id);
		err = rc < 0 ? -1 : 0;
	} else {
		log_failure(op, resp);
		err = -1;
	}
	if (err)
		history_free(&h);
	store_answer_history(&op->s->base, op->cb.history, op->arg, err, &h);
	op_free(op);
}

/*
 * An unreadable history (not JSON, not an array, empty, too big) is kept
 * aside: copied (CopyObject, the server does it, so size is no matter) to
 * <key>.broken-<unix time>, then replaced by an empty array on the ETag read,
 * so a writer that got there first is not overwritten. The chat then works
 * again from an empty history, and the user is told (STORE_HISTORY_SET_ASIDE).
 */
static void aside_copied(struct s3_op *op, const struct http_response *resp);
static void aside_replaced(struct s3_op *op, const struct http_response *resp);

static void load_finish(struct s3_op *op, int err)
{
	struct history h = HISTORY_INIT;
	store_answer_history(&op->s->base, op->cb.history, op->arg, err, &h);
	op_free(op);
}

static void set_aside(struct s3_op *op, const struct http_response *resp, char *cause)
{
	op->what = "keeping an unreadable history aside";
	op->cause = cause;
	snprintf(op->etag, sizeof op->etag, "%s", s3_etag(resp));
	free(op->aside);
	op->aside = str_printf("%s.broken-%lld", op->key, (long long)time(NULL));
	struct s3_request copy = {
	    .method = "PUT", .key = op->aside, .copy_from = op->key, .max_body = S3_SMALL_MAX};
	if (!op->aside || op_send(op, copy, aside_copied) != 0) {
		log_error("store: s3: chat=%lld: out of memory keeping an unreadable history aside",
		          (long long)op->chat_id);
		load_finish(op, -1);
	}
}

static void aside_copied(struct s3_op *op, const struct http_response *resp)
{
	char where[512];
	s3_where(op->s->client, op->key, where, sizeof where);
	/* CopyObject may answer 200 and fail all the same, with an <Error> body (AWS documents it). */
	if (!is_ok(resp) || memmem(resp->body, resp->body_len, "<Error>", 7)) {
		log_failure(op, resp);
		log_error("store: s3: chat=%lld: the history %s %s, and could not be kept aside; "
		          "leaving it as it is",
		          (long long)op->chat_id, where, op->cause);
		load_finish(op, -1);
		return;
	}
	char condition[192] = "";
	if (op->etag[0])
		snprintf(condition, sizeof condition, "If-Match: %.160s", op->etag);
	char *empty = strdup("[]");
	struct s3_request put = {
	    .method = "PUT",
	    .body = empty,
	    .body_len = 2,
	    .content_type = "application/json",
	    .condition = condition[0] ? condition : NULL,
	    .max_body = S3_SMALL_MAX,
	};
	if (!empty || op_send(op, put, aside_replaced) != 0)
		load_finish(op, -1);
}

static void aside_replaced(struct s3_op *op, const struct http_response *resp)
{
	if ((resp->status == 412 || resp->status == 409 || resp->status == 404) &&
	    s3_has_conditions(op->s->client) && ++op->conflicts < S3_CONFLICTS) {
		/* Changed meanwhile (another instance kept it aside, or /new): read what is there now. */
		log_info("store: s3: chat=%lld: the unreadable history changed while it was replaced (%ld); "
		         "reading it again",
		         (long long)op->chat_id, resp->status);
		free(op->cause);
		op->cause = NULL;
		op->what = "reading history";
		if (op_get(op, S3_HISTORY_MAX, load_got) != 0)
			load_finish(op, -1);
		return;
	}
	if (!is_ok(resp)) {
		log_failure(op, resp);
		load_finish(op, -1);
		return;
	}
	char where[512], aside[512];
	s3_where(op->s->client, op->key, where, sizeof where);
	s3_where(op->s->client, op->aside, aside, sizeof aside);
	log_error("store: s3: chat=%lld: the history %s %s; kept it as %s and started the chat over",
	          (long long)op->chat_id, where, op->cause, aside);
	load_finish(op, STORE_HISTORY_SET_ASIDE);
}

static void append_read(struct s3_op *op);
static bool append_from_cache(struct s3_op *op);
static void append_got(struct s3_op *op, const struct http_response *resp);
static void append_put(struct s3_op *op, const struct http_response *resp);
static void append_marked(struct s3_op *op, const struct http_response *resp);

static void history_append(struct store *base, int64_t chat_id, const struct turn *old, size_t n_old,
                           const struct turn *turns, size_t n, int64_t update_id, store_done_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "writing history", history_key(s, chat_id));
	/* history_to_json turns invalid UTF-8 into U+FFFD: JSON cannot carry it. */
	struct history h = {(struct turn *)turns, n, n}, replaced = {(struct turn *)old, n_old, n_old};
	if (!op || !(op->turns = history_to_json(&h, 0)) || (n_old && !(op->old = history_to_json(&replaced, 0)))) {
		if (op)
			op_free(op);
		store_answer_done(base, cb, arg, -1);
		return;
	}
	op->chat_id = chat_id;
	op->update_id = update_id;
	op->cb.done = cb;
	op->arg = arg;
	op->is_write = true;
	make_id(s, op->write_id);
	prefetch_forget(s, chat_id);
	if (!append_from_cache(op)) {
		cached_forget(s, chat_id);
		append_read(op);
	}
}

/*
 * The object as the chat's last load read it stands for the read: the PUT
 * goes on its ETag at once. Only where the server is known to refuse a PUT
 * whose If-Match fails: the cached version may be old, and only the
 * condition stops it from overwriting what came since.
 */
static bool append_from_cache(struct s3_op *op)
{
	struct store_s3 *s = op->s;
	struct cached_history *found = cached_find(s, op->chat_id);
	if (!found || s->conditions != CONDITIONS_ENFORCED)
		return false;
	struct cached_history c = *found;
	cached_drop(s, (size_t)(found - s->cached), false); /* its body and array are c's now */
	op->read = c.arr;                                   /* taken */
	replay(op, &c, append_got);
	return true;
}

/* Read, append, write back on the ETag read: a lost race starts here again. */
static void append_read(struct s3_op *op)
{
	if (op_get(op, S3_HISTORY_MAX, append_got) != 0)
		op_done(op, -1);
}

/*
 * The write ids of a history object (x-amz-meta-tgllm-writes): the ids of
 * its last S3_WRITE_IDS writes by tgllm, newest first, comma-separated. An
 * id names one exchange (one history_append, whatever its retries), so a
 * writer that lost the answer to its PUT recognises its own write, and only
 * its own: two identical exchanges have different ids.
 */
static bool is_write_id(const char *s, size_t len)
{
	if (len != S3_ID_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static bool has_write_id(const char *ids, const char *id)
{
	for (const char *p = ids; *p;) {
		size_t len = strcspn(p, ",");
		if (len == S3_ID_LEN && strncmp(p, id, len) == 0)
			return true;
		p += len + (p[len] == ',');
	}
	return false;
}

/* id, then the newest of the ids read (well-formed ones only), S3_WRITE_IDS in all. */
static void next_write_ids(const char *id, const char *read, char out[S3_WRITE_IDS * (S3_ID_LEN + 1)])
{
	size_t n = 1, at = S3_ID_LEN;
	memcpy(out, id, S3_ID_LEN);
	for (const char *p = read; *p && n < S3_WRITE_IDS;) {
		size_t len = strcspn(p, ",");
		if (is_write_id(p, len) && strncmp(p, id, len) != 0) {
			out[at++] = ',';
			memcpy(out + at, p, len);
			at += len;
			n++;
		}
		p += len + (p[len] == ',');
	}
	out[at] = '\0';
}

/*
 * The array as compact UTF-8 JSON within S3_HISTORY_MAX, dropping the oldest
 * entries (never the keep newest) when it is over. NULL when even those do
 * not fit or memory ran out.
 */
static char *dump_bounded(const struct s3_op *op, json_t *arr, size_t keep)
{
	size_t dropped = 0;
	for (;;) {
		char *text = json_dumps(arr, JSON_COMPACT);
		if (!text || strlen(text) <= S3_HISTORY_MAX) {
			if (text && dropped)
				log_warn("store: s3: chat=%lld: the history object reached %u bytes; dropped "
				         "its %zu oldest entries",
				         (long long)op->chat_id, S3_HISTORY_MAX, dropped);
			return text;
		}
		free(text);
		size_t n = json_array_size(arr);
		if (n <= keep)
			return NULL;
		size_t cut = (n - keep) / 8 + 1; /* a few rounds at most, not one per entry */
		for (size_t i = 0; i < cut; i++)
			json_array_remove(arr, 0);
		dropped += cut;
	}
}

/*
 * /retry: the turns the exchange replaces go when the history still ends
 * with them; when it does not (another writer appended since the load), the
 * exchange is appended after what is there.
 */
static void drop_replaced(const struct s3_op *op, json_t *arr)
{
	size_t n = json_array_size(arr), n_old = json_array_size(op->old);
	bool is_same = n >= n_old;
	for (size_t i = 0; is_same && i < n_old; i++)
		is_same = json_equal(json_array_get(arr, n - n_old + i), json_array_get(op->old, i));
	if (!is_same) {
		log_info("store: s3: chat=%lld: the turns to replace are no longer the last; appending",
		         (long long)op->chat_id);
		return;
	}
	for (size_t i = 0; i < n_old; i++)
		json_array_remove(arr, n - 1 - i);
}

/*
 * PUTs body (taken) on the version read: If-Match its ETag (etag NULL: there
 * was no object, If-None-Match: *), so that another writer's change is never
 * written over; the op's write id goes first in the object's write ids.
 */
static void put_on_version(struct s3_op *op, char *body, const char *type, const char *etag, const char *ids,
                           s3_step step)
{
	char write_ids[S3_WRITE_IDS * (S3_ID_LEN + 1)];
	next_write_ids(op->write_id, ids, write_ids);
	char condition[192] = "";
	if (!etag)
		snprintf(condition, sizeof condition, "If-None-Match: *");
	else if (etag[0])
		snprintf(condition, sizeof condition, "If-Match: %.160s", etag);
	else if (s3_has_conditions(op->s->client))
		log_warn("store: s3: the server sent no ETag with %s; writing it unconditionally", op->key);
	struct s3_request put = {
	    .method = "PUT",
	    .body = body,
	    .body_len = strlen(body),
	    .content_type = type,
	    .condition = condition[0] ? condition : NULL,
	    .write_ids = write_ids,
	    .max_body = S3_SMALL_MAX,
	};
	op->has_put = true;
	if (op_send(op, put, step) != 0)
		op_done(op, -1);
}

/*
 * The history read with the new turns added in its text: what it held stays
 * as it was written, and neither it nor the new body is a tree (parsing and
 * dumping the whole array were a fifth of a cold handle's instructions).
 * NULL when the text is not a JSON array jsonr accepts, the result would
 * pass S3_HISTORY_MAX, or memory ran out: jansson's way then.
 */
static char *append_spliced(const struct s3_op *op, const char *body, size_t len)
{
	struct jsonr r;
	jsonr_init(&r, body, len);
	if (json_array_size(op->turns) == 0 || !jsonr_at(&r, '[') || !jsonr_skip(&r, 1) || !jsonr_is_end(&r))
		return NULL;
	size_t close = len;
	while (body[--close] != ']')
		;
	size_t before = close;
	while (before > 0 && (body[before - 1] == ' ' || body[before - 1] == '\t' || body[before - 1] == '\r' ||
	                      body[before - 1] == '\n'))
		before--;
	bool is_empty = body[before - 1] == '[';
	char *turns = json_dumps(op->turns, JSON_COMPACT); /* [{...},...] */
	struct buf out;
	buf_init(&out, S3_HISTORY_MAX);
	int rc = turns ? buf_append(&out, body, close) : BUF_NO_MEMORY;
	if (rc == BUF_OK && !is_empty)
		rc = buf_append(&out, ",", 1);
	if (rc == BUF_OK)
		rc = buf_append(&out, turns + 1, strlen(turns) - 1);
	free(turns);
	if (rc != BUF_OK) {
		buf_free(&out);
		return NULL;
	}
	return buf_take(&out);
}

/*
 * The history read (parsed by the load when it is in op->read), with the
 * new turns appended and those it replaces gone, as jansson writes it. NULL
 * when it cannot be built (logged).
 */
static char *append_tree(struct s3_op *op, const struct http_response *resp)
{
	json_t *arr;
	if (op->read) { /* parsed by the load (append_from_cache) */
		arr = op->read;
		op->read = NULL;
	} else if (resp->status == 404) {
		arr = json_array();
	} else {
		char *cause;
		arr = parse_history(resp, &cause);
		if (!arr) {
			/* Read moments ago, kept aside if unreadable: broken by someone else since. */
			char where[512];
			s3_where(op->s->client, op->key, where, sizeof where);
			log_error("store: s3: chat=%lld: the history %s %s; not appending to it",
			          (long long)op->chat_id, where,
			          cause ? cause : "cannot be read (out of memory)");
			free(cause);
			return NULL;
		}
	}
	if (arr && op->old)
		drop_replaced(op, arr);
	char *text = NULL;
	if (!arr || json_array_extend(arr, op->turns) != 0 ||
	    !(text = dump_bounded(op, arr, json_array_size(op->turns))))
		log_error("store: s3: chat=%lld: cannot build the history object (out of memory, or a "
		          "single exchange over %u bytes)",
		          (long long)op->chat_id, S3_HISTORY_MAX);
	json_decref(arr);
	return text;
}

static void append_got(struct s3_op *op, const struct http_response *resp)
{
	if (!op->read && resp->status != 404 && !is_ok(resp)) {
		log_failure(op, resp);
		op_done(op, -1);
		return;
	}
	/*
	 * A conflict may be our own write: when a connection breaks before the
	 * answer, the write may be done all the same, and libcurl itself resends a
	 * request once when a reused connection closes before answering. If the
	 * object carries our write id, our write landed. (Not its content: another
	 * writer's identical turns would pass for ours, and one exchange be lost.)
	 */
	const char *ids = resp->status == 404 ? "" : s3_write_ids(resp);
	if (op->has_put && has_write_id(ids, op->write_id)) {
		log_info("store: s3: chat=%lld: the history write whose answer was lost did land",
		         (long long)op->chat_id);
		append_put(
		    op, &(struct http_response){.status = 200, .body = "", .error = "", .retry_after = -1});
		return;
	}
	char *text = NULL;
	if (!op->read && resp->status != 404 && !op->old && !resp->is_too_big)
		text = append_spliced(op, resp->body, resp->body_len);
	if (!text && !(text = append_tree(op, resp))) {
		op_done(op, -1);
		return;
	}
	put_on_version(op, text, "application/json", resp->status == 404 ? NULL : s3_etag(resp), ids, append_put);
}

static void mark_done_send(struct s3_op *op, s3_step step);

static void append_put(struct s3_op *op, const struct http_response *resp)
{
	if (is_ok(resp)) {
		if (!op->update_id) {
			op_done(op, 0);
			return;
		}
		mark_done_send(op, append_marked);
		return;
	}
	/*
	 * 412: someone wrote since we read; 409: a concurrent conditional write
	 * (AWS ConditionalRequestConflict); 404: If-Match on an object deleted
	 * meanwhile (/new). Read again and append to what is there now.
	 */
	if ((resp->status == 412 || resp->status == 409 || resp->status == 404) &&
	    s3_has_conditions(op->s->client)) {
		if (++op->conflicts < S3_CONFLICTS) {
			log_info("store: s3: chat=%lld: the history changed while it was written (%ld); "
			         "reading it again",
			         (long long)op->chat_id, resp->status);
			append_read(op);
			return;
		}
		log_error("store: s3: chat=%lld: gave up writing the history after %zu conflicting writes",
		          (long long)op->chat_id, op->conflicts);
		op_done(op, -1);
		return;
	}
	log_failure(op, resp);
	op_done(op, -1);
}

static void append_marked(struct s3_op *op, const struct http_response *resp)
{
	/* The exchange is stored; only the journal lags, which costs at most a repeat after a restart. */
	if (!is_ok(resp)) {
		log_failure(op, resp);
		log_warn("store: s3: update=%lld stays pending in the journal: it may be answered again "
		         "after a restart",
		         (long long)op->update_id);
	}
	op_done(op, 0);
}

static void clear_done(struct s3_op *op, const struct http_response *resp)
{
	/* DELETE is idempotent: 204 whether or not the object was there. */
	if (is_ok(resp) || resp->status == 404) {
		op_done(op, 0);
		return;
	}
	log_failure(op, resp);
	op_done(op, -1);
}

/*
 * /new deletes the history object: a later append starts a new one with
 * If-None-Match: *, and an append that read the old one gets 412 or 404 and
 * reads again. The original bot reads a missing object as an empty history too.
 */
static void history_clear(struct store *base, int64_t chat_id, store_done_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	prefetch_forget(s, chat_id);
	cached_forget(s, chat_id);
	struct s3_op *op = op_new(s, "clearing history", history_key(s, chat_id));
	if (op) {
		op->chat_id = chat_id;
		op->is_write = true;
		op->cb.done = cb;
		op->arg = arg;
		if (op_request(op, "DELETE", NULL, 0, NULL, NULL, S3_SMALL_MAX, clear_done) == 0)
			return;
		op_free(op);
	}
	store_answer_done(base, cb, arg, -1);
}

/* ---- the update journal ---- */

/* Puts {"state":"done"} in the update's record; step takes the response. */
static void mark_done_send(struct s3_op *op, s3_step step)
{
	static const char record[] = "{\"state\":\"done\"}";
	char *body = strdup(record);
	char *key = journal_key(op->s, op->update_id);
	free(op->key);
	op->key = key;
	op->what = "marking an update done";
	if (!key || !body) {
		free(body);
	} else if (op_request(op, "PUT", body, sizeof record - 1, "application/json", NULL, S3_SMALL_MAX,
	                      step) == 0) {
		return;
	}
	log_error("store: s3: update=%lld: out of memory marking it done", (long long)op->update_id);
	op_done(op, -1);
}

static void write_done(struct s3_op *op, const struct http_response *resp)
{
	if (!is_ok(resp)) {
		log_failure(op, resp);
		op_done(op, -1);
		return;
	}
	op_done(op, 0);
}

static void update_done(struct store *base, int64_t update_id, store_done_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "marking an update done", journal_key(s, update_id));
	if (!op) {
		store_answer_done(base, cb, arg, -1);
		return;
	}
	op->update_id = update_id;
	op->cb.done = cb;
	op->arg = arg;
	mark_done_send(op, write_done);
}

static void release_got(struct s3_op *op, const struct http_response *resp)
{
	if (resp->status == 404) {
		op_done(op, 0);
		return;
	}
	if (!is_ok(resp)) {
		log_failure(op, resp);
		op_done(op, -1);
		return;
	}
	json_t *record = json_loadb(resp->body, resp->body_len, JSON_ALLOW_NUL, NULL);
	const char *state = json_string_value(json_object_get(record, "state"));
	bool is_pending = state && strcmp(state, "pending") == 0;
	json_decref(record);
	if (!is_pending) {
		op_done(op, 0); /* done meanwhile: nothing to forget */
		return;
	}
	op->what = "releasing an update";
	if (op_request(op, "DELETE", NULL, 0, NULL, NULL, S3_SMALL_MAX, clear_done) != 0)
		op_done(op, -1);
}

/*
 * Deletes the record if it is still pending. Between the GET and the DELETE
 * another instance could mark it done; the cost is at most one answer twice.
 */
static void update_release(struct store *base, int64_t update_id, store_done_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "reading the update journal", journal_key(s, update_id));
	if (op) {
		op->update_id = update_id;
		op->cb.done = cb;
		op->arg = arg;
		if (op_get(op, S3_SMALL_MAX, release_got) == 0)
			return;
		op_free(op);
	}
	store_answer_done(base, cb, arg, -1);
}

static void claim_got(struct s3_op *op, const struct http_response *resp);
static void claim_put(struct s3_op *op, const struct http_response *resp);
static void claim_checked(struct s3_op *op, const struct http_response *resp);

static void claim_finish(struct s3_op *op, int err, bool is_new)
{
	store_answer_claim(&op->s->base, op->cb.claim, op->arg, err, is_new);
	op_free(op);
}

/*
 * Where the server is known to enforce conditions, one PUT with
 * If-None-Match: * both tells a known update (412) and claims a new one, so
 * two instances claiming one update cannot both win. Elsewhere a GET goes
 * first: s3rver and others ignore If-None-Match, and a known update must be
 * told apart there too.
 */
static void claim_start(struct s3_op *op)
{
	int rc;
	if (op->s->conditions == CONDITIONS_ENFORCED) {
		char *body = strdup(op->record);
		rc = body ? op_request(op, "PUT", body, strlen(body), "application/json", "If-None-Match: *",
		                       S3_SMALL_MAX, claim_put)
		          : -1;
	} else {
		rc = op_get(op, S3_SMALL_MAX, claim_got);
	}
	if (rc != 0) {
		log_error("store: s3: update=%lld: out of memory journaling it", (long long)op->update_id);
		claim_finish(op, -1, false);
	}
}

static void update_claim(struct store *base, int64_t update_id, int64_t chat_id, const char *raw,
                         size_t raw_len, store_claim_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "journaling an update", journal_key(s, update_id));
	if (!op) {
		store_answer_claim(base, cb, arg, -1, false);
		return;
	}
	op->update_id = update_id;
	op->chat_id = chat_id;
	op->cb.claim = cb;
	op->arg = arg;
	make_id(s, op->nonce);

	/* raw is an Update the bot has decoded, so valid JSON: embedded as it is. */
	struct buf record;
	buf_init(&record, SIZE_MAX - 1);
	int rc = buf_append_str(&record, "{\"state\":\"pending\"");
	if (rc == BUF_OK)
		rc = jsonw_member_int(&record, "chat_id", chat_id);
	if (rc == BUF_OK)
		rc = jsonw_member(&record, "body");
	if (rc == BUF_OK)
		rc = buf_append(&record, raw, raw_len);
	if (rc == BUF_OK)
		rc = jsonw_member_string(&record, "claim", op->nonce, strlen(op->nonce));
	op->record = jsonw_finish_object(&record, rc);
	if (!op->record) {
		log_error("store: s3: update=%lld: out of memory journaling it", (long long)update_id);
		claim_finish(op, -1, false);
		return;
	}
	if (s->conditions == CONDITIONS_READING || s->conditions == CONDITIONS_PROBING) {
		/* Which claim is right depends on the server: it is being found out (conditions_settle). */
		struct s3_op **tail = &s->waiting;
		while (*tail)
			tail = &(*tail)->next_waiting;
		*tail = op;
		return;
	}
	claim_start(op);
}

static void claim_got(struct s3_op *op, const struct http_response *resp)
{
	if (is_ok(resp)) {
		claim_finish(op, 0, false);
		return;
	}
	if (resp->status != 404) {
		log_failure(op, resp);
		claim_finish(op, -1, false);
		return;
	}
	char *body = strdup(op->record);
	if (!body || op_request(op, "PUT", body, strlen(body), "application/json", "If-None-Match: *",
	                        S3_SMALL_MAX, claim_put) != 0)
		claim_finish(op, -1, false);
}

static void claim_put(struct s3_op *op, const struct http_response *resp)
{
	if (is_ok(resp)) {
		claim_finish(op, 0, true);
		return;
	}
	if (resp->status == 412 || resp->status == 409) {
		/*
		 * Known: by another instance, or by us, when our PUT was done but its
		 * answer lost (libcurl resends once on a reused connection that closed
		 * without answering). The record's nonce tells.
		 */
		if (op_get(op, S3_SMALL_MAX, claim_checked) != 0)
			claim_finish(op, -1, false);
		return;
	}
	log_failure(op, resp);
	claim_finish(op, -1, false);
}

static void claim_checked(struct s3_op *op, const struct http_response *resp)
{
	if (!is_ok(resp)) {
		log_failure(op, resp);
		claim_finish(op, -1, false);
		return;
	}
	json_t *record = json_loadb(resp->body, resp->body_len, 0, NULL);
	const char *nonce = json_string_value(json_object_get(record, "claim"));
	bool is_ours = nonce && strcmp(nonce, op->nonce) == 0;
	json_decref(record);
	claim_finish(op, 0, is_ours);
}

/* ---- update_pending: list the journal, read each record, replay the pending ---- */

static void pending_listed(struct s3_op *op, const struct http_response *resp);
static void pending_read_next(struct s3_op *parent);

/* Asks for a page of the listing of the journal's folder (the op's key); -1 when out of memory. */
static int pending_list_page(struct s3_op *op, const char *token)
{
	struct buf q;
	buf_init(&q, SIZE_MAX - 1);
	int rc = BUF_OK;
	/* Sorted by name and RFC 3986-encoded: libcurl signs the query as it is sent. */
	if (token) {
		rc = buf_append_str(&q, "continuation-token=");
		if (rc == BUF_OK)
			rc = s3_append_encoded(&q, token, false);
		if (rc == BUF_OK)
			rc = buf_append_str(&q, "&");
	}
	if (rc == BUF_OK)
		rc = buf_append_str(&q, "list-type=2&prefix=");
	if (rc == BUF_OK)
		rc = s3_append_encoded(&q, op->key, false);
	if (rc != BUF_OK) {
		buf_free(&q);
		return -1;
	}
	struct s3_request req = {
	    .what = op->what,
	    .method = "GET",
	    .query = buf_str(&q),
	    .max_body = S3_LIST_MAX,
	};
	op->step = pending_listed;
	op->call = s3_send(op->s->client, &req, on_response, op);
	buf_free(&q);
	return op->call ? 0 : -1;
}

static void scan_finish(struct s3_op *op, int err)
{
	struct pending *p = op->pending;
	size_t n = 0;
	int64_t *scopes = calloc(p->n + 1, sizeof *scopes);
	char **values = calloc(p->n + 1, sizeof *values);
	if (!scopes || !values)
		err = -1;
	for (size_t i = 0; scopes && values && i < p->n; i++) {
		if (p->v[i].raw) {
			scopes[n] = p->v[i].update_id;
			values[n++] = p->v[i].raw;
			p->v[i].raw = NULL;
		}
	}
	store_answer_scan(&op->s->base, op->cb.scan, op->arg, err, scopes, values, n);
	op_free(op);
}

static void pending_finish(struct s3_op *op, int err)
{
	struct pending *p = op->pending;
	if (p->name) {
		scan_finish(op, err);
		return;
	}
	size_t n = 0;
	char **raws = calloc(p->n + 1, sizeof *raws);
	if (!raws)
		err = -1;
	for (size_t i = 0; raws && i < p->n; i++) {
		if (p->v[i].raw) {
			raws[n++] = p->v[i].raw;
			p->v[i].raw = NULL;
		}
	}
	store_answer_pending(&op->s->base, op->cb.pending, op->arg, err, raws, n);
	op_free(op);
}

static void update_pending(struct store *base, store_pending_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "listing the update journal", str_printf("%s" JOURNAL_DIR, s->prefix));
	if (op) {
		op->cb.pending = cb;
		op->arg = arg;
		if ((op->pending = calloc(1, sizeof *op->pending)) && pending_list_page(op, NULL) == 0)
			return;
		op_free(op);
	}
	store_answer_pending(base, cb, arg, -1, NULL, 0);
}

static time_t parse_time(const char *iso)
{
	struct tm tm = {0};
	if (!iso || !strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm))
		return 0;
	return timegm(&tm);
}

static int pending_add(struct pending *p, const char *key, size_t dir_len, const char *modified)
{
	const char *name = key + dir_len;
	char *end;
	errno = 0;
	long long id = strtoll(name, &end, 10);
	if (errno || end == name ||
	    (p->name ? *end != '/' || strcmp(end + 1, p->name) != 0 : strcmp(end, ".json") != 0))
		return 0; /* not a record of ours, or another setting */
	if (p->n == S3_PENDING_MAX)
		return 0;
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		struct pending_entry *v = realloc(p->v, cap * sizeof *v);
		if (!v)
			return -1;
		p->v = v;
		p->cap = cap;
	}
	struct pending_entry *e = &p->v[p->n];
	memset(e, 0, sizeof *e);
	if (!(e->key = strdup(key)))
		return -1;
	e->update_id = id;
	e->modified = parse_time(modified);
	p->n++;
	return 0;
}

static int by_update_id(const void *a, const void *b)
{
	const struct pending_entry *x = a, *y = b;
	return (x->update_id > y->update_id) - (x->update_id < y->update_id);
}

static void pending_listed(struct s3_op *op, const struct http_response *resp)
{
	struct pending *p = op->pending;
	if (!is_ok(resp)) {
		log_failure(op, resp);
		pending_finish(op, -1);
		return;
	}
	size_t dir_len = strlen(op->key);
	const char *at = resp->body, *end = resp->body + resp->body_len;
	for (;;) {
		const char *c = memmem(at, (size_t)(end - at), "<Contents>", 10);
		const char *c_end = c ? memmem(c, (size_t)(end - c), "</Contents>", 11) : NULL;
		if (!c_end)
			break;
		const char *f = c;
		char *key = s3_xml_take(&f, c_end, "Key");
		f = c;
		char *modified = s3_xml_take(&f, c_end, "LastModified");
		int rc = key && strlen(key) > dir_len ? pending_add(p, key, dir_len, modified) : 0;
		free(key);
		free(modified);
		if (rc != 0) {
			log_error("store: s3: out of memory listing the update journal");
			pending_finish(op, -1);
			return;
		}
		at = c_end + 11;
	}
	const char *f = resp->body;
	char *truncated = s3_xml_take(&f, end, "IsTruncated");
	f = resp->body;
	char *token = s3_xml_take(&f, end, "NextContinuationToken");
	bool is_more = truncated && strcmp(truncated, "true") == 0 && token && p->n < S3_PENDING_MAX;
	free(truncated);
	if (is_more) {
		int rc = pending_list_page(op, token);
		free(token);
		if (rc != 0)
			pending_finish(op, -1);
		return;
	}
	free(token);
	log_debug("store: s3: %s: %zu objects", op->what, p->n);
	if (p->n)
		qsort(p->v, p->n, sizeof *p->v, by_update_id);
	pending_read_next(op);
}

static void pending_got(struct s3_op *op, const struct http_response *resp);
static void pruned(struct s3_op *op, const struct http_response *resp);

/* Starts reads until S3_PENDING_PARALLEL run; finishes when all are read. */
static void pending_read_next(struct s3_op *parent)
{
	struct pending *p = parent->pending;
	while (p->running < S3_PENDING_PARALLEL && p->next < p->n) {
		size_t i = p->next++;
		struct s3_op *op = op_new(parent->s, p->name ? "reading a setting" : "reading the update journal",
		                          strdup(p->v[i].key));
		if (!op) {
			p->err = -1;
			continue;
		}
		op->parent = parent;
		op->index = i;
		if (op_get(op, S3_SMALL_MAX, pending_got) != 0) {
			op_free(op);
			p->err = -1;
			continue;
		}
		p->running++;
	}
	if (p->running == 0 && p->next == p->n)
		pending_finish(parent, p->err);
}

/* Done records are kept JOURNAL_KEEP_S (a redelivered update is still known), then deleted. */
static void prune(struct store_s3 *s, const char *key)
{
	struct s3_op *op = op_new(s, "pruning the update journal", strdup(key));
	if (op && op_request(op, "DELETE", NULL, 0, NULL, NULL, S3_SMALL_MAX, pruned) != 0)
		op_free(op);
}

static void pruned(struct s3_op *op, const struct http_response *resp)
{
	if (!is_ok(resp) && resp->status != 404)
		log_failure(op, resp);
	op_free(op);
}

static void pending_got(struct s3_op *op, const struct http_response *resp)
{
	struct s3_op *parent = op->parent;
	struct pending *p = parent->pending;
	struct pending_entry *e = &p->v[op->index];
	if (p->name && is_ok(resp)) {
		if (!(e->raw = strndup(resp->body, resp->body_len)))
			p->err = -1;
	} else if (is_ok(resp)) {
		json_t *record = json_loadb(resp->body, resp->body_len, JSON_ALLOW_NUL, NULL);
		const char *state = json_string_value(json_object_get(record, "state"));
		json_t *body = json_object_get(record, "body");
		if (state && strcmp(state, "pending") == 0 && body) {
			e->raw = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
			if (!e->raw)
				p->err = -1;
		} else if (state && strcmp(state, "done") == 0) {
			if (e->modified && time(NULL) - e->modified > JOURNAL_KEEP_S)
				prune(op->s, e->key);
		} else {
			char where[512];
			s3_where(op->s->client, op->key, where, sizeof where);
			log_warn("store: s3: %s is not a journal record of tgllm; skipping it", where);
		}
		json_decref(record);
	} else if (resp->status != 404) { /* 404: pruned by another instance meanwhile */
		log_failure(op, resp);
		p->err = -1;
	}
	op_free(op);
	p->running--;
	pending_read_next(parent);
}

/* ---- settings: one small object per scope and key ---- */

static void setting_prefetch_got(struct s3_op *op, const struct http_response *resp);

static void setting_got(struct s3_op *op, const struct http_response *resp)
{
	char *value = NULL;
	int err = 0;
	if (is_ok(resp)) {
		if (!(value = strndup(resp->body, resp->body_len)))
			err = -1;
	} else if (resp->status != 404) {
		log_failure(op, resp);
		err = -1;
	}
	store_answer_value(&op->s->base, op->cb.value, op->arg, err, value);
	free(value);
	op_free(op);
}

/*
 * Settings are read ahead as histories are (history_prefetch): the GET goes
 * beside the claim, and the setting_get that follows within
 * S3_PREFETCH_FRESH_MS takes its answer, once. This process's own
 * setting_set of the key makes a read ahead old.
 */
static struct s3_op *setting_prefetch_find(struct store_s3 *s, const char *key)
{
	for (struct s3_op *p = s->prefetches; p; p = p->next_waiting)
		if (p->step == setting_prefetch_got && !p->is_stale && strcmp(p->key, key) == 0)
			return p;
	return NULL;
}

static struct read_setting **read_setting_find(struct store_s3 *s, const char *key)
{
	struct read_setting **at = &s->read_settings;
	while (*at && strcmp((*at)->key, key) != 0)
		at = &(*at)->next;
	return at;
}

static void read_setting_free(struct read_setting *r)
{
	free(r->key);
	free(r->value);
	free(r);
}

static void read_setting_drop(struct read_setting **at)
{
	struct read_setting *r = *at;
	*at = r->next;
	read_setting_free(r);
}

static void setting_prefetch_forget(struct store_s3 *s, const char *key)
{
	for (struct s3_op *p = s->prefetches; p; p = p->next_waiting)
		if (p->step == setting_prefetch_got && !p->waiter && strcmp(p->key, key) == 0)
			p->is_stale = true;
	struct read_setting **at = read_setting_find(s, key);
	if (*at)
		read_setting_drop(at);
}

static void setting_prefetch_got(struct s3_op *op, const struct http_response *resp)
{
	struct store_s3 *s = op->s;
	struct s3_op *waiter = op->waiter;
	prefetch_unlink(op);
	if (waiter) {
		waiter->step(waiter, resp);
	} else if (!op->is_stale && (is_ok(resp) || resp->status == 404) && resp->body_len <= S3_SMALL_MAX) {
		struct read_setting **at = read_setting_find(s, op->key);
		if (*at)
			read_setting_drop(at);
		struct read_setting *r = calloc(1, sizeof *r);
		if (r && (r->key = strdup(op->key)) &&
		    (!is_ok(resp) || (r->value = strndup(resp->body, resp->body_len)))) {
			r->read_at = op->read_at;
			if (is_ok(resp)) {
				snprintf(r->etag, sizeof r->etag, "%s", s3_etag(resp));
				snprintf(r->write_ids, sizeof r->write_ids, "%s", s3_write_ids(resp));
			}
			r->next = s->read_settings;
			s->read_settings = r;
		} else if (r) {
			free(r->key);
			free(r);
		}
	}
	op_free(op);
}

static void setting_prefetch(struct store *base, int64_t scope, const char *key)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "reading a setting", setting_key(s, scope, key));
	if (!op)
		return; /* only a hint */
	struct read_setting **at = read_setting_find(s, op->key);
	if (setting_prefetch_find(s, op->key) || (*at && is_fresh((*at)->read_at)) ||
	    is_being_written(s, 0, op->key)) {
		op_free(op);
		return;
	}
	op->read_at = now_ms();
	if (op_get(op, S3_SMALL_MAX, setting_prefetch_got) != 0) {
		op_free(op);
		return;
	}
	op->next_waiting = s->prefetches;
	s->prefetches = op;
}

/*
 * A fresh read ahead of op's key stands for op's GET: op waits for the one
 * in flight (its step takes the answer; *taken is NULL), or *taken is the
 * one already read (unlinked: the caller's to use and free). False when
 * there is none.
 */
static bool take_read_ahead(struct s3_op *op, struct read_setting **taken)
{
	struct store_s3 *s = op->s;
	*taken = NULL;
	struct s3_op *p = setting_prefetch_find(s, op->key);
	if (p && !p->waiter && is_fresh(p->read_at)) {
		p->waiter = op;
		return true;
	}
	struct read_setting **at = read_setting_find(s, op->key);
	if (!*at || !is_fresh((*at)->read_at))
		return false;
	*taken = *at;
	*at = (*at)->next;
	return true;
}

/* Answers the get from a read ahead, when there is a fresh one; false when it must read. */
static bool setting_from_prefetch(struct s3_op *op)
{
	struct read_setting *r;
	if (!take_read_ahead(op, &r))
		return false;
	if (r) {
		store_answer_value(&op->s->base, op->cb.value, op->arg, 0, r->value);
		read_setting_free(r);
		op_free(op);
	}
	return true;
}

static void setting_get(struct store *base, int64_t scope, const char *key, store_value_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "reading a setting", setting_key(s, scope, key));
	if (op) {
		op->cb.value = cb;
		op->arg = arg;
		op->step = setting_got;
		if (setting_from_prefetch(op))
			return;
		if (op_get(op, S3_SMALL_MAX, setting_got) == 0)
			return;
		op_free(op);
	}
	store_answer_value(base, cb, arg, -1, NULL);
}

static void setting_set(struct store *base, int64_t scope, const char *key, const char *value,
                        store_done_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "writing a setting", setting_key(s, scope, key));
	if (op) {
		op->is_write = true;
		setting_prefetch_forget(s, op->key);
	}
	char *body = strdup(value);
	if (op && body) {
		op->cb.done = cb;
		op->arg = arg;
		if (op_request(op, "PUT", body, strlen(body), "text/plain; charset=utf-8", NULL, S3_SMALL_MAX,
		               write_done) == 0)
			return;
		body = NULL; /* taken */
	}
	free(body);
	if (op)
		op_free(op);
	store_answer_done(base, cb, arg, -1);
}

/*
 * A change is a read, then a write conditional on the ETag read; a lost race
 * reads again. As a history's, the write carries an id in the object's
 * metadata, so that a write whose answer was lost is known for ours when
 * the object is read again, and not done twice (a count added twice).
 */
static void change_got(struct s3_op *op, const struct http_response *resp);
static void change_put(struct s3_op *op, const struct http_response *resp);
static bool change_from_prefetch(struct s3_op *op);

static void setting_change(struct store *base, int64_t scope, const char *key, store_change_fn change,
                           void *change_arg, store_done_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "changing a setting", setting_key(s, scope, key));
	if (!op) {
		store_answer_done(base, cb, arg, -1);
		return;
	}
	op->is_write = true;
	op->change = change;
	op->change_arg = change_arg;
	op->cb.done = cb;
	op->arg = arg;
	make_id(s, op->write_id);
	op->step = change_got;
	if (change_from_prefetch(op))
		return;
	setting_prefetch_forget(s, op->key);
	if (op_get(op, S3_SMALL_MAX, change_got) != 0)
		op_done(op, -1);
}

/* The setting as read (read: NULL when there is none), changed and written on its ETag. */
static void change_apply(struct s3_op *op, const char *read, const char *etag, const char *ids)
{
	if (op->has_put && has_write_id(ids, op->write_id)) {
		op_done(op, 0); /* our write landed, its answer was lost */
		return;
	}
	char *value = op->change(op->change_arg, read);
	if (!value) {
		op_done(op, 0);
		return;
	}
	put_on_version(op, value, "text/plain; charset=utf-8", read ? etag : NULL, ids, change_put);
}

static void change_got(struct s3_op *op, const struct http_response *resp)
{
	if (!is_ok(resp) && resp->status != 404) {
		log_failure(op, resp);
		op_done(op, -1);
		return;
	}
	char *read = is_ok(resp) ? strndup(resp->body, resp->body_len) : NULL;
	if (is_ok(resp) && !read) {
		op_done(op, -1);
		return;
	}
	change_apply(op, read, is_ok(resp) ? s3_etag(resp) : "", is_ok(resp) ? s3_write_ids(resp) : "");
	free(read);
}

/*
 * The setting read ahead beside the claim stands for the change's read,
 * as a history's load does for its append: only where the server is known
 * to refuse a write whose condition fails.
 */
static bool change_from_prefetch(struct s3_op *op)
{
	struct read_setting *r;
	if (op->s->conditions != CONDITIONS_ENFORCED || !take_read_ahead(op, &r))
		return false;
	if (r) {
		change_apply(op, r->value, r->etag, r->write_ids);
		read_setting_free(r);
	}
	return true;
}

static void change_put(struct s3_op *op, const struct http_response *resp)
{
	if (is_ok(resp)) {
		op_done(op, 0);
		return;
	}
	if ((resp->status == 412 || resp->status == 409 || resp->status == 404) &&
	    s3_has_conditions(op->s->client) && ++op->conflicts < S3_CONFLICTS) {
		log_info("store: s3: %s changed while it was written (%ld); reading it again", op->key,
		         resp->status);
		if (op_get(op, S3_SMALL_MAX, change_got) != 0)
			op_done(op, -1);
		return;
	}
	log_failure(op, resp);
	op_done(op, -1);
}

static void setting_scan(struct store *base, const char *key, store_scan_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "listing the settings", str_printf("%s" SETTINGS_DIR, s->prefix));
	if (op) {
		op->cb.scan = cb;
		op->arg = arg;
		if ((op->pending = calloc(1, sizeof *op->pending)) && (op->pending->name = strdup(key)) &&
		    pending_list_page(op, NULL) == 0)
			return;
		op_free(op);
	}
	store_answer_scan(base, cb, arg, -1, NULL, NULL, 0);
}

/*
 * ---- conditional writes: what one process learns, the next knows ----
 *
 * A server without conditional writes answers 501 to them (s3_client falls
 * back to plain writes). Serverless, every invocation is a new process: so
 * the first to meet the 501 warns and keeps the fact as a setting in the
 * bucket; each process reads it at start, beside its first requests, and
 * then writes plainly and quietly. Delete the setting's object to have tgllm
 * try conditional writes again (a server upgraded, say).
 */

static void ignore_answer(struct s3_op *op, const struct http_response *resp)
{
	if (!is_ok(resp))
		log_failure(op, resp);
	op_free(op);
}

static void report_no_conditions(struct store_s3 *s, const char *condition)
{
	struct s3_op *op = op_new(s, "remembering that the server has no conditional writes",
	                          setting_key(s, 0, CONDITIONS_SETTING));
	char where[512] = "";
	if (op)
		s3_where(s->client, op->key, where, sizeof where);
	log_warn("store: s3: the server does not support conditional writes (501 to %s); writing "
	         "unconditionally from now on: two bot instances sharing a chat may overwrite each other's "
	         "turns (remembered in %s)",
	         condition, where[0] ? where : "(out of memory)");
	char *body = strdup("unsupported");
	if (op && body &&
	    op_request(op, "PUT", body, strlen(body), "text/plain; charset=utf-8", NULL, S3_SMALL_MAX,
	               ignore_answer) == 0)
		return;
	if (op && body)
		body = NULL; /* taken */
	free(body);
	if (op)
		op_free(op);
}

static void on_no_conditions(void *arg, const char *condition)
{
	struct store_s3 *s = arg;
	switch (s->conditions) {
	case CONDITIONS_READING:
		free(s->refused_condition);
		s->refused_condition = strdup(condition);
		if (!s->refused_condition)
			report_no_conditions(s, condition);
		return;
	case CONDITIONS_PROBING:
	case CONDITIONS_UNKNOWN:
	case CONDITIONS_IGNORED:
	case CONDITIONS_ENFORCED:
		report_no_conditions(s, condition);
		return;
	case CONDITIONS_UNSUPPORTED:
		return;
	}
}

static void claim_start(struct s3_op *op);

/* What the server does with conditions is known (or will not be): the claims waiting go. */
static void conditions_settle(struct store_s3 *s, enum conditions_known known)
{
	s->conditions = known;
	struct s3_op *op = s->waiting;
	s->waiting = NULL;
	while (op) {
		struct s3_op *next = op->next_waiting;
		op->next_waiting = NULL;
		claim_start(op);
		op = next;
	}
}

static void remember_conditions(struct store_s3 *s, const char *value)
{
	struct s3_op *op = op_new(s, "remembering whether the server holds conditional writes",
	                          setting_key(s, 0, CONDITIONS_SETTING));
	char *body = strdup(value);
	if (op && body &&
	    op_request(op, "PUT", body, strlen(body), "text/plain; charset=utf-8", NULL, S3_SMALL_MAX,
	               ignore_answer) == 0)
		return;
	if (op && body)
		body = NULL; /* taken */
	free(body);
	if (op)
		op_free(op);
}

/*
 * Whether the server holds conditions is found out once per bucket, by the
 * first process that finds the setting unset: a probe object is created with
 * If-None-Match: *, then written again with it. The second write is refused
 * (412, or 409 for a concurrent one) by a server that enforces conditions
 * and done by one that ignores them (s3rver); a 501 is the client's to learn
 * (on_no_conditions). The answer is kept in the setting for every later process.
 */
static void probe_second(struct s3_op *op, const struct http_response *resp);

static int probe_send(struct s3_op *op, s3_step step)
{
	char *body = strdup("probe");
	return body ? op_request(op, "PUT", body, 5, "text/plain; charset=utf-8", "If-None-Match: *",
	                         S3_SMALL_MAX, step)
	            : -1;
}

static void probe_end(struct s3_op *op, enum conditions_known known)
{
	struct store_s3 *s = op->s;
	op_free(op);
	conditions_settle(s, known);
}

static void probe_first(struct s3_op *op, const struct http_response *resp)
{
	if (!s3_has_conditions(op->s->client)) {
		probe_end(op, CONDITIONS_UNSUPPORTED); /* remembered by report_no_conditions */
		return;
	}
	/* Created, or there from an earlier probe: either way the second write tells. */
	if (!is_ok(resp) && resp->status != 412 && resp->status != 409) {
		log_failure(op, resp);
		probe_end(op, CONDITIONS_UNKNOWN);
		return;
	}
	if (probe_send(op, probe_second) != 0)
		probe_end(op, CONDITIONS_UNKNOWN);
}

static void probe_second(struct s3_op *op, const struct http_response *resp)
{
	struct store_s3 *s = op->s;
	if (!s3_has_conditions(s->client)) {
		probe_end(op, CONDITIONS_UNSUPPORTED);
	} else if (resp->status == 412 || resp->status == 409) {
		log_debug("store: s3: the server enforces conditional writes");
		remember_conditions(s, "enforced");
		probe_end(op, CONDITIONS_ENFORCED);
	} else if (is_ok(resp)) {
		char where[512];
		s3_where(s->client, op->key, where, sizeof where);
		log_warn(
		    "store: s3: the server ignores conditional writes (If-None-Match: * did not stop a "
		    "second write of %s): two bot instances sharing a chat may overwrite each other's turns",
		    where);
		remember_conditions(s, "ignored");
		probe_end(op, CONDITIONS_IGNORED);
	} else {
		log_failure(op, resp);
		probe_end(op, CONDITIONS_UNKNOWN);
	}
}

static void probe_start(struct store_s3 *s)
{
	s->conditions = CONDITIONS_PROBING;
	struct s3_op *op = op_new(s, "finding out whether the server holds conditional writes",
	                          setting_key(s, 0, CONDITIONS_PROBE));
	if (op && probe_send(op, probe_first) == 0)
		return;
	if (op)
		op_free(op);
	conditions_settle(s, CONDITIONS_UNKNOWN);
}

static void conditions_got(struct s3_op *op, const struct http_response *resp)
{
	struct store_s3 *s = op->s;
	char where[512];
	s3_where(s->client, op->key, where, sizeof where);
	bool is_said = is_ok(resp);
	char *refused = s->refused_condition;
	s->refused_condition = NULL;
	op_free(op);
	if (is_said && resp->body_len >= 11 && memcmp(resp->body, "unsupported", 11) == 0) {
		s3_drop_conditions(s->client);
		log_debug("store: s3: %s says the server does not support conditional writes: writing "
		          "unconditionally",
		          where);
		conditions_settle(s, CONDITIONS_UNSUPPORTED);
	} else if (is_said && resp->body_len == 8 && memcmp(resp->body, "enforced", 8) == 0) {
		conditions_settle(s, CONDITIONS_ENFORCED);
	} else if (is_said && resp->body_len == 7 && memcmp(resp->body, "ignored", 7) == 0) {
		conditions_settle(s, CONDITIONS_IGNORED);
	} else if (refused) {
		/* A 501 came while the setting was read: that is the answer, told now. */
		s->conditions = CONDITIONS_UNKNOWN;
		report_no_conditions(s, refused);
		conditions_settle(s, CONDITIONS_UNSUPPORTED);
	} else if (resp->status == 404 && s3_has_conditions(s->client)) {
		probe_start(s);
	} else {
		/* Unreadable: conditions are tried, reads go first, and a 501 is told. */
		if (!is_said)
			log_debug("store: s3: cannot read %s (%ld); trying conditional writes", where,
			          resp->status);
		conditions_settle(s, CONDITIONS_UNKNOWN);
	}
	free(refused);
}

/* Starts reading CONDITIONS_SETTING; without memory for it, conditions are tried. */
static void conditions_read(struct store_s3 *s)
{
	s->conditions = CONDITIONS_READING;
	struct s3_op *op = op_new(s, "reading whether the server has conditional writes",
	                          setting_key(s, 0, CONDITIONS_SETTING));
	if (op && op_get(op, S3_SMALL_MAX, conditions_got) == 0)
		return;
	if (op)
		op_free(op);
	conditions_settle(s, CONDITIONS_UNKNOWN);
}

/* ---- the store ---- */

static void store_s3_free(struct store *base)
{
	struct store_s3 *s = from(base);
	/* Operations still running end here without their callbacks, as the HTTP calls do. */
	s->waiting = NULL;
	s->prefetches = NULL;
	while (s->ops)
		op_free(s->ops);
	while (s->read_settings)
		read_setting_drop(&s->read_settings);
	while (s->n_cached)
		cached_drop(s, s->n_cached - 1, true);
	s3_client_free(s->client);
	free(s->bucket);
	free(s->prefix);
	free(s->refused_condition);
	store_clear(&s->base);
	free(s);
}

static const struct store_ops s3_ops = {
    .name = "s3",
    .history_load = history_load,
    .history_prefetch = history_prefetch,
    .history_append = history_append,
    .history_clear = history_clear,
    .update_claim = update_claim,
    .update_done = update_done,
    .update_release = update_release,
    .update_pending = update_pending,
    .setting_get = setting_get,
    .setting_prefetch = setting_prefetch,
    .setting_set = setting_set,
    .setting_change = setting_change,
    .setting_scan = setting_scan,
    .free = store_s3_free,
};

int store_s3_open(const struct store_options *o, struct event_base *base, struct http_client *http,
                  struct store **out, char *err, size_t errlen)
{
	const char *spec = o->spec;
	if (strncmp(spec, "s3://", 5) != 0) {
		snprintf(err, errlen, "'%s' is not s3://BUCKET[/PREFIX]", spec);
		return -1;
	}
	struct store_s3 *s = calloc(1, sizeof *s);
	if (!s || store_init(&s->base, &s3_ops, base) != 0) {
		free(s);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	s->seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	const char *bucket = spec + 5, *slash = strchr(bucket, '/');
	const char *prefix = slash ? slash + 1 : "";
	size_t plen = strlen(prefix);
	/* A prefix names a folder: "s3://b/chats" keeps chats/<chat_id>.json. */
	bool needs_slash = plen > 0 && prefix[plen - 1] != '/';
	if (!(s->bucket = slash ? strndup(bucket, (size_t)(slash - bucket)) : strdup(bucket)) ||
	    !(s->prefix = str_printf("%s%s", prefix, needs_slash ? "/" : ""))) {
		snprintf(err, errlen, "out of memory");
		store_s3_free(&s->base);
		return -1;
	}
	if (!s->bucket[0]) {
		snprintf(err, errlen, "'%s' names no bucket: s3://BUCKET[/PREFIX]", spec);
		store_s3_free(&s->base);
		return -1;
	}
	struct s3_client_options co = {
	    .endpoint = o->s3_endpoint,
	    .region = o->s3_region,
	    .bucket = s->bucket,
	    .key_id = o->s3_key_id,
	    .secret = o->s3_secret,
	    .session_token = o->s3_session_token,
	    .on_no_conditions = on_no_conditions,
	    .arg = s,
	};
	if (!(s->client = s3_client_new(base, http, &co, err, errlen))) {
		store_s3_free(&s->base);
		return -1;
	}
	conditions_read(s);
	log_info("store: s3: bucket %s, prefix '%s', endpoint %s, region %s", s->bucket, s->prefix,
	         o->s3_endpoint, o->s3_region);
	*out = &s->base;
	return 0;
}
