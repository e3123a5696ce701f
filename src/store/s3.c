/*
 * The S3 store: histories, the update journal and settings as objects in a
 * bucket of any S3-compatible service (Yandex Object Storage, AWS S3, MinIO),
 * spoken to on the bot's loop through src/http.h, signed by libcurl's
 * AWS SigV4 (CURLOPT_AWS_SIGV4). Object layout, conditional writes and what a
 * server must support: docs/internals/STORE.md, "The S3 store".
 *
 * Every operation is a small state machine (struct s3_op): each step sends
 * one request and names the step that takes its response. Throttling
 * (429/503 SlowDown), other 5xx and broken connections are retried here with
 * backoff; what a status means for the operation is the step's business.
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "config.h"
#include "lib/jsonw.h"
#include "lib/log.h"
#include "store/store.h"

#define S3_TIMEOUT_MS       60000 /* one request, an 8 MB history included */
#define S3_STALL_S          20
#define S3_HISTORY_MAX      (8u << 20) /* bytes of one history object */
#define S3_SMALL_MAX        (1u << 20) /* journal records, settings, error bodies */
#define S3_LIST_MAX         (8u << 20) /* one ListObjectsV2 page (1000 keys) */
#define S3_URL_MAX          8192
#define S3_TRIES            6 /* sends of one request: throttling, 5xx, broken connections */
#define S3_CONFLICTS        6 /* re-reads of a history after losing a race to another writer */
#define S3_BACKOFF_MS       200
#define S3_BACKOFF_MAX_MS   10000
#define S3_PENDING_PARALLEL 8           /* journal records read at once by update_pending */
#define S3_PENDING_MAX      100000      /* journal records considered by update_pending */
#define JOURNAL_KEEP_S      (7 * 86400) /* done records older than this are deleted */

#define JOURNAL_DIR  "tgllm/updates/"
#define SETTINGS_DIR "tgllm/settings/"

struct store_s3 {
	struct store base;
	struct event_base *ev;
	struct http_client *http;
	char *endpoint; /* scheme://host[:port][/path], no trailing '/' */
	char *bucket;
	char *prefix; /* "" or ending in '/' */
	char *sigv4;  /* "aws:amz:<region>:s3" for CURLOPT_AWS_SIGV4 */
	char *key_id;
	char *secret;           /* only ever handed to curl as the password */
	char *token_header;     /* "x-amz-security-token: ..." with temporary credentials, else NULL */
	bool has_no_conditions; /* the server answered 501 to a conditional write */
	struct s3_op *ops;      /* in flight (doubly linked), freed by store_s3_free */
	unsigned seed;          /* for backoff jitter */
};

struct s3_op;
/* Takes the final response of the op's request (after the retries here). */
typedef void (*s3_step)(struct s3_op *op, const struct http_response *resp);

struct pending_entry {
	int64_t update_id;
	char *key;
	time_t modified; /* LastModified from the listing, 0 when unknown */
	char *raw;       /* the journaled update when the record is pending */
};

/* update_pending's state: the listing, then the records read a few at a time. */
struct pending {
	struct pending_entry *v;
	size_t n, cap;
	size_t next;      /* the next entry to read */
	size_t running;   /* reads in flight */
	bool is_starting; /* in pending_read_next: a read that fails at once must not recurse */
	int err;
};

union s3_cb {
	store_done_cb done;
	store_history_cb history;
	store_claim_cb claim;
	store_value_cb value;
	store_pending_cb pending;
};

struct s3_op {
	struct s3_op *prev, *next;
	struct store_s3 *s;

	/* the request, kept as it is for retries */
	const char *what; /* for log lines: "reading history" */
	const char *method;
	char *key;   /* with the prefix; NULL for a listing */
	char *query; /* the canonical (sorted, encoded) query string, or NULL */
	char *body;
	size_t body_len;
	const char *content_type;
	char condition[192]; /* "If-Match: ..." / "If-None-Match: *", or "" */
	size_t max_body;
	int tries;
	struct http_call *call;
	struct event *timer;
	s3_step step;

	/* the caller's */
	union s3_cb cb;
	void *arg;

	/* the operation's */
	int64_t chat_id, update_id;
	json_t *turns;    /* append: the new turns, in the stored layout */
	json_t *written;  /* append: the whole history as last sent in a PUT */
	size_t conflicts; /* append: re-reads after a lost race */
	char *record;     /* claim: the journal record to create */
	char nonce[17];   /* claim: tells our record from another instance's */
	struct pending *pending;
	struct s3_op *parent; /* a read on behalf of update_pending */
	size_t index;         /* its entry */
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

/* ---- operations: life and death ---- */

static struct s3_op *op_new(struct store_s3 *s, const char *what)
{
	struct s3_op *op = calloc(1, sizeof *op);
	if (!op) {
		log_error("store: s3: out of memory %s", what);
		return NULL;
	}
	op->s = s;
	op->what = what;
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
	http_cancel(op->call);
	if (op->timer)
		event_free(op->timer);
	free(op->key);
	free(op->query);
	free(op->body);
	json_decref(op->turns);
	json_decref(op->written);
	free(op->record);
	pending_free(op->pending);
	free(op);
}

/* The request to send next, on the op's key: method, body and step are replaced, the condition cleared. */
static int op_set_request(struct s3_op *op, const char *method, const char *body, size_t body_len,
                          const char *content_type, size_t max_body, s3_step step)
{
	free(op->body);
	op->body = NULL;
	op->body_len = 0;
	if (body && !(op->body = malloc(body_len + 1)))
		return -1;
	if (body) {
		memcpy(op->body, body, body_len);
		op->body[body_len] = '\0';
		op->body_len = body_len;
	}
	op->method = method;
	op->content_type = content_type;
	op->condition[0] = '\0';
	op->max_body = max_body;
	op->tries = 0;
	op->step = step;
	return 0;
}

/* ---- requests ---- */

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '.' || c == '_' || c == '~';
}

/*
 * RFC 3986 percent-encoding, as SigV4 wants it: libcurl signs the path and
 * the query exactly as they are sent, so they must already be canonical.
 */
static int append_encoded(struct buf *b, const char *s, bool is_path)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (is_unreserved(*p) || (is_path && *p == '/')) {
			if (buf_append(b, p, 1) != BUF_OK)
				return -1;
		} else {
			char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			if (buf_append(b, esc, 3) != BUF_OK)
				return -1;
		}
	}
	return 0;
}

/* Path-style: <endpoint>/<bucket>/<key>, or <endpoint>/<bucket>?<query> for a listing. */
static char *op_url(const struct s3_op *op)
{
	struct buf b;
	buf_init(&b, S3_URL_MAX);
	if (buf_append_str(&b, op->s->endpoint) != BUF_OK || buf_append_str(&b, "/") != BUF_OK ||
	    append_encoded(&b, op->s->bucket, false) != 0 ||
	    (op->key && (buf_append_str(&b, "/") != BUF_OK || append_encoded(&b, op->key, true) != 0)) ||
	    (op->query && (buf_append_str(&b, "?") != BUF_OK || buf_append_str(&b, op->query) != BUF_OK))) {
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b);
}

/* x-amz-content-sha256: libcurl 7.88 signs the header when given one, but never adds it. */
static int sha256_hex(const char *data, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	if (EVP_Digest(data ? data : "", len, md, &n, EVP_sha256(), NULL) != 1 || n != 32)
		return -1;
	for (unsigned int i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

static void on_http_done(void *arg, const struct http_response *resp);
static char *xml_take(const char **from, const char *end, const char *tag);

/* The object's address for log lines: never carries a secret. */
static void op_where(const struct s3_op *op, char *out, size_t n)
{
	snprintf(out, n, "s3://%s/%s", op->s->bucket, op->key ? op->key : op->s->prefix);
}

static void fail_to_start(struct s3_op *op)
{
	struct http_response resp = {0};
	resp.is_transport_error = true;
	resp.error = "the request could not be set up (out of memory?)";
	resp.body = "";
	resp.etag = "";
	resp.retry_after = -1;
	op->step(op, &resp);
}

/* Sends the op's request; its response goes to on_http_done, then to op->step. */
static void op_send(struct s3_op *op)
{
	char sha[65], sha_header[96], type_header[128];
	const char *headers[6];
	size_t n = 0;
	char *url = op_url(op);
	if (!url || sha256_hex(op->body, op->body_len, sha) != 0) {
		free(url);
		fail_to_start(op);
		return;
	}
	snprintf(sha_header, sizeof sha_header, "x-amz-content-sha256: %s", sha);
	headers[n++] = sha_header;
	if (op->content_type) {
		snprintf(type_header, sizeof type_header, "Content-Type: %s", op->content_type);
		headers[n++] = type_header;
	}
	if (op->condition[0])
		headers[n++] = op->condition;
	if (op->s->token_header)
		headers[n++] = op->s->token_header;
	headers[n] = NULL;

	struct http_request req = {
	    .method = op->method,
	    .url = url,
	    .headers = headers,
	    .body = op->body,
	    .body_len = op->body_len,
	    .timeout_ms = S3_TIMEOUT_MS,
	    .stall_s = S3_STALL_S,
	    .max_body = op->max_body,
	    .on_done = on_http_done,
	    .arg = op,
	    .aws_sigv4 = op->s->sigv4,
	    .username = op->s->key_id,
	    .password = op->s->secret,
	};
	/* A PUT always carries a body (JSON or a setting); DELETE and GET none. */
	op->tries++;
	op->call = http_start(op->s->http, &req);
	free(url);
	if (!op->call)
		fail_to_start(op);
}

static void on_retry_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	op_send(arg);
}

/* Throttling (429, 503 SlowDown), other passing server trouble, a lost connection. */
static bool is_transient(const struct http_response *resp)
{
	if (resp->is_too_big)
		return false;
	if (resp->is_transport_error)
		return true;
	return resp->status == 429 || resp->status == 500 || resp->status == 502 || resp->status == 503 ||
	       resp->status == 504;
}

static long backoff_ms(struct s3_op *op, const struct http_response *resp)
{
	long ms;
	if (resp->retry_after >= 0) {
		ms = resp->retry_after * 1000;
	} else {
		ms = S3_BACKOFF_MS << (op->tries - 1 < 6 ? op->tries - 1 : 6);
		ms += (long)(rand_r(&op->s->seed) %
		             (unsigned)(ms / 2 + 1)); /* jitter: writers must not keep colliding */
	}
	return ms > S3_BACKOFF_MAX_MS ? S3_BACKOFF_MAX_MS : ms;
}

static void op_send_later(struct s3_op *op, long ms)
{
	if (!op->timer)
		op->timer = evtimer_new(op->s->ev, on_retry_timer, op);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if (!op->timer || evtimer_add(op->timer, &tv) != 0)
		fail_to_start(op);
}

static void on_http_done(void *arg, const struct http_response *resp)
{
	struct s3_op *op = arg;
	struct store_s3 *s = op->s;
	char where[512];
	op->call = NULL; /* it ended: http frees it after this callback */
	op_where(op, where, sizeof where);
	log_debug("store: s3: %s %s: %ld%s%s", op->method, where, resp->status,
	          resp->is_transport_error ? " " : "", resp->is_transport_error ? resp->error : "");

	if (is_transient(resp) && op->tries < S3_TRIES) {
		long ms = backoff_ms(op, resp);
		if (resp->is_transport_error) {
			log_warn("store: s3: %s %s: %s; retrying in %ld ms", op->what, where, resp->error,
			         ms);
		} else {
			const char *from = resp->body;
			char *code = xml_take(&from, resp->body + resp->body_len, "Code");
			log_warn("store: s3: %s %s: HTTP %ld %s; retrying in %ld ms", op->what, where,
			         resp->status, code ? code : "", ms);
			free(code);
		}
		op_send_later(op, ms);
		return;
	}
	/* OpenStack Swift's s3api, for one, cannot do conditional writes (501 Not Implemented). */
	if (resp->status == 501 && op->condition[0]) {
		if (!s->has_no_conditions)
			log_warn("store: s3: the server does not support conditional writes (501 to %s); "
			         "writing unconditionally from now on: two bot instances sharing a chat may "
			         "overwrite each other's turns",
			         op->condition);
		s->has_no_conditions = true;
		op->condition[0] = '\0';
		op->tries = 0;
		op_send(op);
		return;
	}
	op->step(op, resp);
}

/* ---- responses ---- */

static bool is_ok(const struct http_response *resp)
{
	return resp->status >= 200 && resp->status < 300;
}

/*
 * The text of the first <tag>...</tag> in [*from, end), XML entities decoded
 * (new string; NULL when absent or out of memory); *from moves past it.
 * S3's answers are flat enough for this (no CDATA, no attributes on these).
 */
static char *xml_take(const char **from, const char *end, const char *tag)
{
	char open[64], close[64];
	snprintf(open, sizeof open, "<%s>", tag);
	snprintf(close, sizeof close, "</%s>", tag);
	const char *a = memmem(*from, (size_t)(end - *from), open, strlen(open));
	if (!a)
		return NULL;
	a += strlen(open);
	const char *z = memmem(a, (size_t)(end - a), close, strlen(close));
	if (!z)
		return NULL;
	*from = z + strlen(close);

	char *out = malloc((size_t)(z - a) + 1), *o = out;
	if (!out)
		return NULL;
	for (const char *p = a; p < z;) {
		if (*p != '&') {
			*o++ = *p++;
			continue;
		}
		const char *semi = memchr(p, ';', (size_t)(z - p));
		size_t n = semi ? (size_t)(semi - p) + 1 : 0;
		unsigned long cp = 0;
		if (n == 4 && strncmp(p, "&lt;", 4) == 0)
			cp = '<';
		else if (n == 4 && strncmp(p, "&gt;", 4) == 0)
			cp = '>';
		else if (n == 5 && strncmp(p, "&amp;", 5) == 0)
			cp = '&';
		else if (n == 6 && strncmp(p, "&quot;", 6) == 0)
			cp = '"';
		else if (n == 6 && strncmp(p, "&apos;", 6) == 0)
			cp = '\'';
		else if (n > 3 && p[1] == '#')
			cp = p[2] == 'x' ? strtoul(p + 3, NULL, 16) : strtoul(p + 2, NULL, 10);
		if (cp == 0 || cp > 0x10FFFF) { /* not an entity we know: keep it as it is */
			*o++ = *p++;
			continue;
		}
		/* UTF-8; never longer than the entity it replaces (at least 4 bytes for 3+ byte forms). */
		if (cp < 0x80) {
			*o++ = (char)cp;
		} else if (cp < 0x800) {
			*o++ = (char)(0xC0 | (cp >> 6));
			*o++ = (char)(0x80 | (cp & 0x3F));
		} else if (cp < 0x10000) {
			*o++ = (char)(0xE0 | (cp >> 12));
			*o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
			*o++ = (char)(0x80 | (cp & 0x3F));
		} else {
			*o++ = (char)(0xF0 | (cp >> 18));
			*o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
			*o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
			*o++ = (char)(0x80 | (cp & 0x3F));
		}
		p += n;
	}
	*o = '\0';
	return out;
}

static const char *auth_hint(const char *code)
{
	if (strcmp(code, "SignatureDoesNotMatch") == 0 || strcmp(code, "InvalidAccessKeyId") == 0 ||
	    strcmp(code, "AccessDenied") == 0 || strcmp(code, "AuthorizationHeaderMalformed") == 0)
		return " (check the key pair: YANDEX_KEY_ID/YANDEX_KEY_SECRET or "
		       "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, and S3_REGION)";
	if (strcmp(code, "NoSuchBucket") == 0)
		return " (check the bucket in STORE / YANDEX_BUCKET)";
	return "";
}

/* One clear line: the operation, the object, the status and S3's error Code and Message. */
static void log_failure(const struct s3_op *op, const struct http_response *resp)
{
	char where[512];
	op_where(op, where, sizeof where);
	if (resp->is_transport_error) {
		log_error("store: s3: %s %s: no answer from %s: %s", op->what, where, op->s->endpoint,
		          resp->error);
		return;
	}
	if (resp->is_too_big) {
		log_error("store: s3: %s %s: the object is larger than the %zu bytes accepted", op->what,
		          where, op->max_body);
		return;
	}
	const char *from = resp->body, *end = resp->body + resp->body_len;
	char *code = xml_take(&from, end, "Code");
	from = resp->body;
	char *message = xml_take(&from, end, "Message");
	log_error("store: s3: %s %s: HTTP %ld %s%s%.200s%s", op->what, where, resp->status,
	          code ? code : "(no S3 error code)", message ? ": " : "", message ? message : "",
	          auth_hint(code ? code : ""));
	free(code);
	free(message);
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

/* ---- history ---- */

static void load_got(struct s3_op *op, const struct http_response *resp);

static void history_load(struct store *base, int64_t chat_id, store_history_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "reading history");
	if (!op || !(op->key = history_key(s, chat_id)) ||
	    op_set_request(op, "GET", NULL, 0, NULL, S3_HISTORY_MAX, load_got) != 0) {
		struct history h = HISTORY_INIT;
		if (op)
			op_free(op);
		cb(arg, -1, &h);
		return;
	}
	op->chat_id = chat_id;
	op->cb.history = cb;
	op->arg = arg;
	op_send(op);
}

/* The object as the JSON array it must be (new reference), or NULL with a log line. */
static json_t *parse_history(const struct s3_op *op, const struct http_response *resp)
{
	char where[512];
	json_error_t e;
	json_t *arr = json_loadb(resp->body, resp->body_len, JSON_ALLOW_NUL, &e);
	if (json_is_array(arr))
		return arr;
	op_where(op, where, sizeof where);
	if (arr)
		log_error("store: s3: %s: %s is not a JSON array; leaving it as it is", op->what, where);
	else
		log_error("store: s3: %s: %s is not valid JSON (line %d: %s); leaving it as it is", op->what,
		          where, e.line, e.text);
	json_decref(arr);
	return NULL;
}

static void load_got(struct s3_op *op, const struct http_response *resp)
{
	struct history h = HISTORY_INIT;
	int err = 0;
	if (resp->status == 404) {
		/* No conversation yet. */
	} else if (is_ok(resp)) {
		json_t *arr = parse_history(op, resp);
		int skipped = arr ? history_append_json(&h, arr) : -1;
		if (arr && skipped < 0)
			log_error("store: s3: out of memory reading the history of chat %lld",
			          (long long)op->chat_id);
		else if (skipped > 0)
			log_warn("store: s3: chat=%lld: skipped %d history entries that are not "
			         "{\"role\",\"content\"} turns",
			         (long long)op->chat_id, skipped);
		json_decref(arr);
		err = skipped < 0 ? -1 : 0;
	} else {
		log_failure(op, resp);
		err = -1;
	}
	if (err)
		history_free(&h);
	store_history_cb cb = op->cb.history;
	void *arg = op->arg;
	op_free(op);
	cb(arg, err, &h);
}

static void append_read(struct s3_op *op);
static void append_got(struct s3_op *op, const struct http_response *resp);
static void append_put(struct s3_op *op, const struct http_response *resp);
static void append_marked(struct s3_op *op, const struct http_response *resp);

static void op_done(struct s3_op *op, int err)
{
	store_done_cb cb = op->cb.done;
	void *arg = op->arg;
	op_free(op);
	if (cb)
		cb(arg, err);
}

static void history_append(struct store *base, int64_t chat_id, const struct turn *turns, size_t n,
                           int64_t update_id, store_done_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "writing history");
	/* history_to_json turns invalid UTF-8 into U+FFFD: JSON cannot carry it. */
	struct history h = {(struct turn *)turns, n, n};
	if (!op || !(op->key = history_key(s, chat_id)) || !(op->turns = history_to_json(&h, 0))) {
		if (op)
			op_free(op);
		cb(arg, -1);
		return;
	}
	op->chat_id = chat_id;
	op->update_id = update_id;
	op->cb.done = cb;
	op->arg = arg;
	append_read(op);
}

/* Read, append, write back on the ETag read: a lost race starts here again. */
static void append_read(struct s3_op *op)
{
	if (op_set_request(op, "GET", NULL, 0, NULL, S3_HISTORY_MAX, append_got) != 0) {
		op_done(op, -1);
		return;
	}
	op_send(op);
}

/* Whether arr begins with all of prefix. */
static bool starts_with(const json_t *arr, const json_t *prefix)
{
	size_t k = json_array_size(prefix);
	if (k == 0 || json_array_size(arr) < k)
		return false;
	for (size_t i = 0; i < k; i++)
		if (!json_equal(json_array_get(arr, i), json_array_get(prefix, i)))
			return false;
	return true;
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

static void append_got(struct s3_op *op, const struct http_response *resp)
{
	struct store_s3 *s = op->s;
	json_t *arr;
	if (resp->status == 404) {
		arr = json_array();
	} else if (is_ok(resp)) {
		arr = parse_history(op, resp);
		if (!arr) {
			op_done(op, -1);
			return;
		}
	} else {
		log_failure(op, resp);
		op_done(op, -1);
		return;
	}
	/*
	 * A conflict may be our own write: when a connection breaks before the
	 * answer, the write may be done all the same, and libcurl itself resends a
	 * request once when a reused connection closes before answering. If the
	 * history begins with what we wrote, our write landed.
	 */
	if (op->written && starts_with(arr, op->written)) {
		log_info("store: s3: chat=%lld: the history write whose answer was lost did land",
		         (long long)op->chat_id);
		json_decref(arr);
		append_put(op, &(struct http_response){.status = 200,
		                                       .body = "",
		                                       .etag = "",
		                                       .error = "",
		                                       .retry_after = -1});
		return;
	}
	char etag[sizeof op->condition - 16];
	snprintf(etag, sizeof etag, "%s", resp->status == 404 ? "" : resp->etag);
	char *text = NULL;
	if (!arr || json_array_extend(arr, op->turns) != 0 ||
	    !(text = dump_bounded(op, arr, json_array_size(op->turns)))) {
		log_error("store: s3: chat=%lld: cannot build the history object (out of memory, or a "
		          "single exchange over %u bytes)",
		          (long long)op->chat_id, S3_HISTORY_MAX);
		json_decref(arr);
		op_done(op, -1);
		return;
	}
	json_decref(op->written);
	op->written = arr;
	int rc = op_set_request(op, "PUT", text, strlen(text), "application/json", S3_SMALL_MAX, append_put);
	free(text);
	if (rc != 0) {
		op_done(op, -1);
		return;
	}
	/* The write must land on exactly what was read: another writer's turns are never lost. */
	if (s->has_no_conditions)
		op->condition[0] = '\0';
	else if (resp->status == 404)
		snprintf(op->condition, sizeof op->condition, "If-None-Match: *");
	else if (etag[0])
		snprintf(op->condition, sizeof op->condition, "If-Match: %s", etag);
	else
		log_warn("store: s3: chat=%lld: the server sent no ETag with the history; writing it "
		         "unconditionally",
		         (long long)op->chat_id);
	op_send(op);
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
	if ((resp->status == 412 || resp->status == 409 || resp->status == 404) && op->condition[0]) {
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
	struct s3_op *op = op_new(s, "clearing history");
	if (!op || !(op->key = history_key(s, chat_id)) ||
	    op_set_request(op, "DELETE", NULL, 0, NULL, S3_SMALL_MAX, clear_done) != 0) {
		if (op)
			op_free(op);
		cb(arg, -1);
		return;
	}
	op->cb.done = cb;
	op->arg = arg;
	op_send(op);
}

/* ---- the update journal ---- */

static void mark_done_send(struct s3_op *op, s3_step step)
{
	static const char record[] = "{\"state\":\"done\"}";
	free(op->key);
	op->what = "marking an update done";
	if (!(op->key = journal_key(op->s, op->update_id)) ||
	    op_set_request(op, "PUT", record, sizeof record - 1, "application/json", S3_SMALL_MAX, step) !=
	        0) {
		struct http_response resp = {.is_transport_error = true,
		                             .error = "out of memory",
		                             .body = "",
		                             .etag = "",
		                             .retry_after = -1};
		step(op, &resp);
		return;
	}
	op_send(op);
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
	struct s3_op *op = op_new(from(base), "marking an update done");
	if (!op) {
		cb(arg, -1);
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
	if (op_set_request(op, "DELETE", NULL, 0, NULL, S3_SMALL_MAX, clear_done) != 0) {
		op_done(op, -1);
		return;
	}
	op_send(op);
}

/*
 * Deletes the record if it is still pending. Between the GET and the DELETE
 * another instance could mark it done; the cost is at most one answer twice.
 */
static void update_release(struct store *base, int64_t update_id, store_done_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "reading the update journal");
	if (!op || !(op->key = journal_key(s, update_id)) ||
	    op_set_request(op, "GET", NULL, 0, NULL, S3_SMALL_MAX, release_got) != 0) {
		if (op)
			op_free(op);
		cb(arg, -1);
		return;
	}
	op->update_id = update_id;
	op->cb.done = cb;
	op->arg = arg;
	op_send(op);
}

static void claim_got(struct s3_op *op, const struct http_response *resp);
static void claim_put(struct s3_op *op, const struct http_response *resp);
static void claim_checked(struct s3_op *op, const struct http_response *resp);

static void claim_finish(struct s3_op *op, int err, bool is_new)
{
	store_claim_cb cb = op->cb.claim;
	void *arg = op->arg;
	op_free(op);
	cb(arg, err, is_new);
}

static void make_nonce(struct store_s3 *s, char out[17])
{
	unsigned char r[8];
	if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
		for (size_t i = 0; i < sizeof r; i++)
			r[i] = (unsigned char)rand_r(&s->seed);
	for (size_t i = 0; i < sizeof r; i++)
		snprintf(out + 2 * i, 3, "%02x", r[i]);
}

/*
 * A GET first: s3rver and others ignore If-None-Match on PUT, and a known
 * update must be told apart there too. Then the record is created with
 * If-None-Match: *, so two instances claiming one update cannot both win.
 */
static void update_claim(struct store *base, int64_t update_id, int64_t chat_id, const char *raw,
                         size_t raw_len, store_claim_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "journaling an update");
	if (!op || !(op->key = journal_key(s, update_id))) {
		if (op)
			op_free(op);
		cb(arg, -1, true);
		return;
	}
	op->update_id = update_id;
	op->chat_id = chat_id;
	op->cb.claim = cb;
	op->arg = arg;
	make_nonce(s, op->nonce);

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
	char *text = jsonw_finish_object(&record, rc);
	op->record = text;
	if (!text || op_set_request(op, "GET", NULL, 0, NULL, S3_SMALL_MAX, claim_got) != 0) {
		log_error("store: s3: update=%lld: out of memory journaling it", (long long)update_id);
		claim_finish(op, -1, true);
		return;
	}
	op_send(op);
}

static void claim_got(struct s3_op *op, const struct http_response *resp)
{
	if (is_ok(resp)) {
		claim_finish(op, 0, false);
		return;
	}
	if (resp->status != 404) {
		log_failure(op, resp);
		claim_finish(op, -1, true);
		return;
	}
	if (op_set_request(op, "PUT", op->record, strlen(op->record), "application/json", S3_SMALL_MAX,
	                   claim_put) != 0) {
		claim_finish(op, -1, true);
		return;
	}
	if (!op->s->has_no_conditions)
		snprintf(op->condition, sizeof op->condition, "If-None-Match: *");
	op_send(op);
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
		if (op_set_request(op, "GET", NULL, 0, NULL, S3_SMALL_MAX, claim_checked) != 0) {
			claim_finish(op, -1, true);
			return;
		}
		op_send(op);
		return;
	}
	log_failure(op, resp);
	claim_finish(op, -1, true);
}

static void claim_checked(struct s3_op *op, const struct http_response *resp)
{
	if (!is_ok(resp)) {
		log_failure(op, resp);
		claim_finish(op, -1, true);
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

static int pending_list_page(struct s3_op *op, const char *token)
{
	struct buf q;
	buf_init(&q, S3_URL_MAX);
	char *dir = str_printf("%s" JOURNAL_DIR, op->s->prefix);
	int rc = -1;
	if (!dir)
		goto out;
	/* Sorted by name and RFC 3986-encoded: libcurl signs the query as it is sent. */
	if (token && (buf_append_str(&q, "continuation-token=") != BUF_OK ||
	              append_encoded(&q, token, false) != 0 || buf_append_str(&q, "&") != BUF_OK))
		goto out;
	if (buf_append_str(&q, "list-type=2&prefix=") != BUF_OK || append_encoded(&q, dir, false) != 0)
		goto out;
	free(op->query);
	op->query = buf_take(&q);
	rc = op->query && op_set_request(op, "GET", NULL, 0, NULL, S3_LIST_MAX, pending_listed) == 0 ? 0 : -1;
out:
	buf_free(&q);
	free(dir);
	return rc;
}

static void pending_finish(struct s3_op *op, int err)
{
	store_pending_cb cb = op->cb.pending;
	void *arg = op->arg;
	struct pending *p = op->pending;
	op->pending = NULL;
	op_free(op);
	/* The callbacks may call the store again: nothing of the op is used after this. */
	for (size_t i = 0; p && i < p->n; i++)
		if (p->v[i].raw)
			cb(arg, 0, p->v[i].raw);
	cb(arg, err, NULL);
	pending_free(p);
}

static void update_pending(struct store *base, store_pending_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "listing the update journal");
	if (!op || !(op->pending = calloc(1, sizeof *op->pending)) || pending_list_page(op, NULL) != 0) {
		if (op)
			op_free(op);
		cb(arg, -1, NULL);
		return;
	}
	op->cb.pending = cb;
	op->arg = arg;
	op_send(op);
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
	if (errno || end == name || strcmp(end, ".json") != 0)
		return 0; /* not a record of ours */
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
	size_t dir_len = strlen(op->s->prefix) + strlen(JOURNAL_DIR);
	const char *at = resp->body, *end = resp->body + resp->body_len;
	for (;;) {
		const char *c = memmem(at, (size_t)(end - at), "<Contents>", 10);
		const char *c_end = c ? memmem(c, (size_t)(end - c), "</Contents>", 11) : NULL;
		if (!c_end)
			break;
		const char *f = c;
		char *key = xml_take(&f, c_end, "Key");
		f = c;
		char *modified = xml_take(&f, c_end, "LastModified");
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
	char *truncated = xml_take(&f, end, "IsTruncated");
	f = resp->body;
	char *token = xml_take(&f, end, "NextContinuationToken");
	bool is_more = truncated && strcmp(truncated, "true") == 0 && token && p->n < S3_PENDING_MAX;
	free(truncated);
	if (is_more) {
		int rc = pending_list_page(op, token);
		free(token);
		if (rc != 0) {
			pending_finish(op, -1);
			return;
		}
		op_send(op);
		return;
	}
	free(token);
	log_debug("store: s3: the update journal holds %zu records", p->n);
	if (p->n == 0) {
		pending_finish(op, 0);
		return;
	}
	qsort(p->v, p->n, sizeof *p->v, by_update_id);
	pending_read_next(op);
}

static void pending_got(struct s3_op *op, const struct http_response *resp);
static void pruned(struct s3_op *op, const struct http_response *resp);

/* Starts reads until S3_PENDING_PARALLEL run; finishes when all are read. */
static void pending_read_next(struct s3_op *parent)
{
	struct pending *p = parent->pending;
	if (p->is_starting)
		return;
	p->is_starting = true;
	while (p->running < S3_PENDING_PARALLEL && p->next < p->n) {
		size_t i = p->next++;
		struct s3_op *op = op_new(parent->s, "reading the update journal");
		if (!op || !(op->key = strdup(p->v[i].key)) ||
		    op_set_request(op, "GET", NULL, 0, NULL, S3_SMALL_MAX, pending_got) != 0) {
			if (op)
				op_free(op);
			p->err = -1;
			continue;
		}
		op->parent = parent;
		op->index = i;
		p->running++;
		op_send(op);
	}
	p->is_starting = false;
	if (p->running == 0 && p->next == p->n)
		pending_finish(parent, p->err);
}

/* Done records are kept JOURNAL_KEEP_S (a redelivered update is still known), then deleted. */
static void prune(struct store_s3 *s, const char *key)
{
	struct s3_op *op = op_new(s, "pruning the update journal");
	if (!op || !(op->key = strdup(key)) ||
	    op_set_request(op, "DELETE", NULL, 0, NULL, S3_SMALL_MAX, pruned) != 0) {
		if (op)
			op_free(op);
		return;
	}
	op_send(op);
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
	if (is_ok(resp)) {
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
			op_where(op, where, sizeof where);
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

static void setting_got(struct s3_op *op, const struct http_response *resp)
{
	store_value_cb cb = op->cb.value;
	void *arg = op->arg;
	char *value = NULL;
	int err = 0;
	if (is_ok(resp)) {
		if (!(value = strndup(resp->body, resp->body_len)))
			err = -1;
	} else if (resp->status != 404) {
		log_failure(op, resp);
		err = -1;
	}
	op_free(op);
	cb(arg, err, value);
	free(value);
}

static void setting_get(struct store *base, int64_t scope, const char *key, store_value_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "reading a setting");
	if (!op || !(op->key = setting_key(s, scope, key)) ||
	    op_set_request(op, "GET", NULL, 0, NULL, S3_SMALL_MAX, setting_got) != 0) {
		if (op)
			op_free(op);
		cb(arg, -1, NULL);
		return;
	}
	op->cb.value = cb;
	op->arg = arg;
	op_send(op);
}

static void setting_set(struct store *base, int64_t scope, const char *key, const char *value,
                        store_done_cb cb, void *arg)
{
	struct store_s3 *s = from(base);
	struct s3_op *op = op_new(s, "writing a setting");
	if (!op || !(op->key = setting_key(s, scope, key)) ||
	    op_set_request(op, "PUT", value, strlen(value), "text/plain; charset=utf-8", S3_SMALL_MAX,
	                   write_done) != 0) {
		if (op)
			op_free(op);
		cb(arg, -1);
		return;
	}
	op->cb.done = cb;
	op->arg = arg;
	op_send(op);
}

/* ---- the store ---- */

static void store_s3_free(struct store *base)
{
	struct store_s3 *s = from(base);
	/* Operations still running end here without their callbacks, as the HTTP calls do. */
	while (s->ops)
		op_free(s->ops);
	free(s->endpoint);
	free(s->bucket);
	free(s->prefix);
	free(s->sigv4);
	free(s->key_id);
	free(s->secret);
	free(s->token_header);
	free(s);
}

static const struct store_ops s3_ops = {
    .name = "s3",
    .history_load = history_load,
    .history_append = history_append,
    .history_clear = history_clear,
    .update_claim = update_claim,
    .update_done = update_done,
    .update_release = update_release,
    .update_pending = update_pending,
    .setting_get = setting_get,
    .setting_set = setting_set,
    .free = store_s3_free,
};

int store_s3_open(const char *spec, struct event_base *base, struct http_client *http, struct store **out,
                  char *err, size_t errlen)
{
	struct config_s3 env;
	if (strncmp(spec, "s3://", 5) != 0) {
		snprintf(err, errlen, "'%s' is not s3://BUCKET[/PREFIX]", spec);
		return -1;
	}
	if (config_s3_load(&env, err, errlen) != 0)
		return -1;
	struct store_s3 *s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	s->base.ops = &s3_ops;
	s->ev = base;
	s->http = http;
	s->seed = (unsigned)time(NULL) ^ (unsigned)getpid();

	const char *bucket = spec + 5, *slash = strchr(bucket, '/');
	const char *prefix = slash ? slash + 1 : "";
	size_t plen = strlen(prefix);
	size_t elen = strlen(env.endpoint);
	while (elen > 0 && env.endpoint[elen - 1] == '/')
		elen--;
	/* A prefix names a folder: "s3://b/chats" keeps chats/<chat_id>.json. */
	bool needs_slash = plen > 0 && prefix[plen - 1] != '/';
	if (!(s->bucket = slash ? strndup(bucket, (size_t)(slash - bucket)) : strdup(bucket)) ||
	    !(s->prefix = str_printf("%s%s", prefix, needs_slash ? "/" : "")) ||
	    !(s->endpoint = strndup(env.endpoint, elen)) ||
	    !(s->sigv4 = str_printf("aws:amz:%s:s3", env.region)) || !(s->key_id = strdup(env.key_id)) ||
	    !(s->secret = strdup(env.secret))) {
		snprintf(err, errlen, "out of memory");
		store_s3_free(&s->base);
		return -1;
	}
	if (env.session_token) {
		log_add_secret(env.session_token);
		if (!(s->token_header = str_printf("x-amz-security-token: %s", env.session_token))) {
			snprintf(err, errlen, "out of memory");
			store_s3_free(&s->base);
			return -1;
		}
	}
	if (!s->bucket[0]) {
		snprintf(err, errlen, "'%s' names no bucket: s3://BUCKET[/PREFIX]", spec);
		store_s3_free(&s->base);
		return -1;
	}
	log_info("store: s3: bucket %s, prefix '%s', endpoint %s, region %s", s->bucket, s->prefix,
	         s->endpoint, env.region);
	*out = &s->base;
	return 0;
}
