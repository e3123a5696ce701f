#include "store/s3_client.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/backoff.h"
#include "lib/log.h"
#include "lib/utf8.h"
#include "store/sigv4.h"

#define S3_TIMEOUT_MS 60000 /* one request, an 8 MB history included */
#define S3_STALL_S    20
#define S3_URL_MAX    8192
#define S3_TRIES      6 /* sends of one request: throttling, 5xx, broken connections */

/* Jitter: writers that collided must not keep colliding. */
static const struct backoff retry_backoff = {200, 10000, true};

struct s3_client {
	struct event_base *base;
	struct http_client *http;
	char *endpoint; /* no trailing '/' */
	char *host_header;   /* "Host: <the endpoint's host[:port]>": what is signed is what is sent */
	const char *prefix;  /* the endpoint's path, in endpoint: "" or "/…" */
	char *bucket;
	char *region;
	char *key_id;
	char *secret;
	struct sigv4_signer signer; /* the day's key */
	char *token_header;     /* "x-amz-security-token: ..." with temporary credentials, else NULL */
	bool has_no_conditions; /* the server answered 501 to a conditional write */
	void (*on_no_conditions)(void *arg, const char *condition);
	void *arg;
	struct s3_call *calls; /* in flight (doubly linked), cancelled by s3_client_free */
};

struct s3_call {
	struct s3_call *prev, *next;
	struct s3_client *client;
	const char *what;
	const char *method;
	char *key;
	char *query;
	char *body;
	size_t body_len;
	const char *content_type;
	char condition[192];
	char *write_ids_header; /* "x-amz-meta-tgllm-writes: …", or NULL */
	char *copy_header;      /* "x-amz-copy-source: /bucket/key", or NULL */
	size_t max_body;
	int tries;
	bool has_failed_to_start;
	struct http_call *http;
	struct event *timer; /* the next try */
	s3_done_cb done;
	void *arg;
};

static void call_free(struct s3_call *call)
{
	struct s3_client *c = call->client;
	if (call->prev)
		call->prev->next = call->next;
	else
		c->calls = call->next;
	if (call->next)
		call->next->prev = call->prev;
	http_cancel(call->http);
	if (call->timer)
		event_free(call->timer);
	free(call->key);
	free(call->query);
	free(call->body);
	free(call->write_ids_header);
	free(call->copy_header);
	free(call);
}

void s3_cancel(struct s3_call *call)
{
	if (call)
		call_free(call);
}

/* The response headers every call keeps, in the order s3_etag and the others read them. */
static const char *const kept_headers[] = {"ETag", "Content-Length", "x-amz-meta-tgllm-writes", NULL};

const char *s3_etag(const struct http_response *resp)
{
	return resp->headers ? resp->headers[0] : "";
}

long long s3_content_length(const struct http_response *resp)
{
	const char *v = resp->headers ? resp->headers[1] : "";
	char *end;
	long long n = strtoll(v, &end, 10);
	return v[0] && *end == '\0' && n >= 0 ? n : -1;
}

const char *s3_write_ids(const struct http_response *resp)
{
	return resp->headers ? resp->headers[2] : "";
}

bool s3_has_conditions(const struct s3_client *c)
{
	return !c->has_no_conditions;
}

void s3_drop_conditions(struct s3_client *c)
{
	c->has_no_conditions = true;
}

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '.' || c == '_' || c == '~';
}

int s3_append_encoded(struct buf *b, const char *s, bool is_path)
{
	static const char hex[] = "0123456789ABCDEF";
	int rc = BUF_OK;
	for (const unsigned char *p = (const unsigned char *)s; *p && rc == BUF_OK; p++) {
		if (is_unreserved(*p) || (is_path && *p == '/')) {
			rc = buf_append(b, p, 1);
		} else {
			char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			rc = buf_append(b, esc, 3);
		}
	}
	return rc;
}

/* Path-style: <endpoint>/<bucket>/<key>, or <endpoint>/<bucket>?<query> for a listing. */
/* The request's path (from the endpoint's own path on) and, after "?", its query; *path_len the path's length. */
static char *call_target(const struct s3_call *call, size_t *path_len)
{
	const struct s3_client *c = call->client;
	struct buf b;
	buf_init(&b, S3_URL_MAX);
	int rc = buf_append_str(&b, c->prefix);
	if (rc == BUF_OK)
		rc = buf_append_str(&b, "/");
	if (rc == BUF_OK)
		rc = s3_append_encoded(&b, c->bucket, false);
	if (rc == BUF_OK && call->key) {
		rc = buf_append_str(&b, "/");
		if (rc == BUF_OK)
			rc = s3_append_encoded(&b, call->key, true);
	}
	*path_len = b.len;
	if (rc == BUF_OK && call->query) {
		rc = buf_append_str(&b, "?");
		if (rc == BUF_OK)
			rc = buf_append_str(&b, call->query);
	}
	if (rc != BUF_OK) {
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b);
}

static void on_http_done(void *arg, const struct http_response *resp);

static void on_timer(evutil_socket_t fd, short kind, void *arg);

/* Runs the try after ms, from the loop. */
static void try_later(struct s3_call *call, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if (evtimer_add(call->timer, &tv) == 0)
		return;
	/* Not even a timer: the loop is broken; say so without a callback from inside. */
	log_error("store: s3: cannot schedule a request");
	call->has_failed_to_start = true;
	event_active(call->timer, EV_TIMEOUT, 0);
}

static void answer_failed_start(struct s3_call *call)
{
	struct http_response resp = {
	    .is_transport_error = true,
	    .error = "the request could not be set up (out of memory?)",
	    .body = "",
	    .retry_after = -1,
	};
	s3_done_cb done = call->done;
	void *arg = call->arg;
	call_free(call);
	done(arg, &resp);
}

/* Sends the call's request, signed; its response goes to on_http_done. */
static void send_try(struct s3_call *call)
{
	struct s3_client *c = call->client;
	char sha[65], sha_header[96], type_header[128], date[SIGV4_DATE_LEN], date_header[40];
	char authorization[1024];
	const char *headers[11];
	size_t n = 0, path_len = 0;
	char *target = call_target(call, &path_len), *url = NULL;
	if (!target || sigv4_sha256_hex(&c->signer, call->body, call->body_len, sha) != 0 ||
	    asprintf(&url, "%.*s%s", (int)(strlen(c->endpoint) - strlen(c->prefix)), c->endpoint, target) < 0) {
		free(target);
		answer_failed_start(call);
		return;
	}
	sigv4_date((long long)time(NULL), date);
	snprintf(date_header, sizeof date_header, "x-amz-date: %s", date);
	snprintf(sha_header, sizeof sha_header, "x-amz-content-sha256: %s", sha);
	headers[n++] = c->host_header;
	headers[n++] = date_header;
	headers[n++] = sha_header;
	if (call->content_type) {
		snprintf(type_header, sizeof type_header, "Content-Type: %s", call->content_type);
		headers[n++] = type_header;
	}
	if (call->condition[0])
		headers[n++] = call->condition;
	if (call->write_ids_header)
		headers[n++] = call->write_ids_header;
	if (call->copy_header)
		headers[n++] = call->copy_header;
	if (c->token_header)
		headers[n++] = c->token_header;
	target[path_len] = '\0'; /* the path alone; the query is call->query */
	struct sigv4_request sign = {
	    .method = call->method,
	    .path = target,
	    .query = call->query ? call->query : "",
	    .headers = headers,
	    .n_headers = n,
	    .payload_sha256 = sha,
	    .amz_date = date,
	};
	if (sigv4_key_for(&c->signer, c->secret, c->region, date) != 0 ||
	    sigv4_authorization(&sign, &c->signer, c->key_id, c->region, authorization, sizeof authorization) != 0) {
		log_error("s3: cannot sign a request");
		free(target);
		free(url);
		answer_failed_start(call);
		return;
	}
	free(target);
	headers[n++] = authorization;
	headers[n] = NULL;
	struct http_request req = {
	    .keep_headers = kept_headers,
	    .method = call->method,
	    .url = url,
	    .headers = headers,
	    .body = call->body,
	    .body_len = call->body_len,
	    .timeout_ms = S3_TIMEOUT_MS,
	    .stall_s = S3_STALL_S,
	    .max_body = call->max_body,
	    .on_done = on_http_done,
	    .arg = call,
	};
	call->tries++;
	call->http = http_start(c->http, &req);
	free(url);
	if (!call->http)
		answer_failed_start(call);
}

static void on_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct s3_call *call = arg;
	if (call->has_failed_to_start)
		answer_failed_start(call);
	else
		send_try(call);
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

static void on_http_done(void *arg, const struct http_response *resp)
{
	struct s3_call *call = arg;
	struct s3_client *c = call->client;
	char where[512];
	call->http = NULL; /* it ended: http frees it after this callback */
	s3_where(c, call->key, where, sizeof where);
	log_debug("store: s3: %s %s: %ld%s%s", call->method, where, resp->status,
	          resp->is_transport_error ? " " : "", resp->is_transport_error ? resp->error : "");

	if (is_transient(resp) && call->tries < S3_TRIES) {
		long ms = resp->retry_after >= 0 ? resp->retry_after * 1000
		                                 : backoff_ms(&retry_backoff, call->tries);
		if (ms > retry_backoff.max_ms)
			ms = retry_backoff.max_ms;
		if (resp->is_transport_error) {
			log_warn("store: s3: %s %s: %s; retrying in %ld ms", call->what, where, resp->error,
			         ms);
		} else {
			const char *from = resp->body;
			char *code = s3_xml_take(&from, resp->body + resp->body_len, "Code");
			log_warn("store: s3: %s %s: HTTP %ld %s; retrying in %ld ms", call->what, where,
			         resp->status, code ? code : "", ms);
			free(code);
		}
		try_later(call, ms);
		return;
	}
	/* OpenStack Swift's s3api, for one, cannot do conditional writes (501 Not Implemented). */
	if (resp->status == 501 && call->condition[0]) {
		bool is_news = !c->has_no_conditions;
		c->has_no_conditions = true;
		if (is_news && c->on_no_conditions)
			c->on_no_conditions(c->arg, call->condition);
		else if (is_news)
			log_warn("store: s3: the server does not support conditional writes (501 to %s); "
			         "writing unconditionally from now on: two bot instances sharing a chat may "
			         "overwrite each other's turns",
			         call->condition);
		call->condition[0] = '\0';
		call->tries = 0;
		try_later(call, 0);
		return;
	}
	s3_done_cb done = call->done;
	void *done_arg = call->arg;
	/* The response is the http call's until this returns: the call is freed after the callback. */
	done(done_arg, resp);
	call_free(call);
}

static char *write_ids_header(const char *ids)
{
	struct buf b;
	buf_init(&b, S3_URL_MAX);
	int rc = buf_append_str(&b, "x-amz-meta-tgllm-writes: ");
	if (rc == BUF_OK)
		rc = buf_append_str(&b, ids);
	if (rc != BUF_OK) {
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b);
}

/* CopyObject's source, URL-encoded as S3 wants it: /<bucket>/<key>. */
static char *copy_source_header(const struct s3_client *c, const char *key)
{
	struct buf b;
	buf_init(&b, S3_URL_MAX);
	int rc = buf_append_str(&b, "x-amz-copy-source: /");
	if (rc == BUF_OK)
		rc = s3_append_encoded(&b, c->bucket, false);
	if (rc == BUF_OK)
		rc = buf_append_str(&b, "/");
	if (rc == BUF_OK)
		rc = s3_append_encoded(&b, key, true);
	if (rc != BUF_OK) {
		buf_free(&b);
		return NULL;
	}
	return buf_take(&b);
}

struct s3_call *s3_send(struct s3_client *c, const struct s3_request *req, s3_done_cb done, void *arg)
{
	struct s3_call *call = calloc(1, sizeof *call);
	if (!call)
		goto fail;
	call->client = c;
	call->what = req->what;
	call->method = req->method;
	call->body = req->body;
	call->body_len = req->body ? req->body_len : 0;
	call->content_type = req->content_type;
	call->max_body = req->max_body;
	call->done = done;
	call->arg = arg;
	call->next = c->calls;
	if (c->calls)
		c->calls->prev = call;
	c->calls = call;
	if ((req->key && !(call->key = strdup(req->key))) ||
	    (req->query && !(call->query = strdup(req->query))) ||
	    (req->write_ids && !(call->write_ids_header = write_ids_header(req->write_ids))) ||
	    (req->copy_from && !(call->copy_header = copy_source_header(c, req->copy_from))) ||
	    !(call->timer = evtimer_new(c->base, on_timer, call))) {
		call_free(call);
		return NULL;
	}
	/* Only a server that honours conditions gets them; the rest learned to do without (see above). */
	if (req->condition && !c->has_no_conditions)
		snprintf(call->condition, sizeof call->condition, "%s", req->condition);
	/* From the loop: the caller's callback never runs inside this call. */
	try_later(call, 0);
	return call;
fail:
	free(req->body);
	return NULL;
}

void s3_where(const struct s3_client *c, const char *key, char *out, size_t n)
{
	snprintf(out, n, "s3://%s/%s", c->bucket, key ? key : "");
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

void s3_log_failure(const struct s3_client *c, const char *what, const char *key,
                    const struct http_response *resp)
{
	char where[512];
	s3_where(c, key, where, sizeof where);
	if (resp->is_transport_error) {
		log_error("store: s3: %s %s: no answer from %s: %s", what, where, c->endpoint, resp->error);
		return;
	}
	if (resp->is_too_big) {
		log_error("store: s3: %s %s: the object is larger than accepted", what, where);
		return;
	}
	const char *from = resp->body, *end = resp->body + resp->body_len;
	char *code = s3_xml_take(&from, end, "Code");
	from = resp->body;
	char *message = s3_xml_take(&from, end, "Message");
	log_error("store: s3: %s %s: HTTP %ld %s%s%.200s%s", what, where, resp->status,
	          code ? code : "(no S3 error code)", message ? ": " : "", message ? message : "",
	          auth_hint(code ? code : ""));
	free(code);
	free(message);
}

/* The code point a reference such as "&amp;" or "&#x41;" (n bytes at p) stands for; 0 when none. */
static unsigned long xml_reference(const char *p, size_t n)
{
	static const struct {
		const char *name;
		char c;
	} named[] = {{"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&quot;", '"'}, {"&apos;", '\''}};
	for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
		if (n == strlen(named[i].name) && strncmp(p, named[i].name, n) == 0)
			return (unsigned char)named[i].c;
	if (n <= 3 || p[1] != '#')
		return 0;
	bool is_hex = p[2] == 'x';
	const char *digits = p + (is_hex ? 3 : 2), *semi = p + n - 1;
	unsigned long cp = 0;
	/* Digits only, up to the ';' (strtoul would take blanks, signs and "0x" too). */
	if (digits == semi)
		return 0;
	for (const char *d = digits; d < semi; d++) {
		int v = *d >= '0' && *d <= '9'             ? *d - '0'
		        : is_hex && *d >= 'a' && *d <= 'f' ? *d - 'a' + 10
		        : is_hex && *d >= 'A' && *d <= 'F' ? *d - 'A' + 10
		                                           : -1;
		if (v < 0 || cp > 0x10FFFF)
			return 0;
		cp = cp * (is_hex ? 16 : 10) + (unsigned long)v;
	}
	/* Only scalar values: a surrogate has no UTF-8 form. */
	if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return cp;
}

char *s3_xml_take(const char **from, const char *end, const char *tag)
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
		const char *semi = *p == '&' ? memchr(p, ';', (size_t)(z - p)) : NULL;
		size_t n = semi ? (size_t)(semi - p) + 1 : 0;
		unsigned long cp = n ? xml_reference(p, n) : 0;
		if (cp == 0) { /* plain text, or not a reference we know: kept as it is */
			*o++ = *p++;
			continue;
		}
		/* Never longer than the reference it replaces: "&#128;" is 6 bytes for 2, and so on. */
		o += utf8_write(cp, (unsigned char *)o);
		p += n;
	}
	*o = '\0';
	return out;
}

struct s3_client *s3_client_new(struct event_base *base, struct http_client *http,
                                const struct s3_client_options *o, char *err, size_t errlen)
{
	struct s3_client *c = calloc(1, sizeof *c);
	if (!c)
		goto oom;
	c->base = base;
	c->http = http;
	c->on_no_conditions = o->on_no_conditions;
	c->arg = o->arg;
	size_t elen = strlen(o->endpoint);
	while (elen > 0 && o->endpoint[elen - 1] == '/')
		elen--;
	if (!(c->endpoint = strndup(o->endpoint, elen)) || !(c->bucket = strdup(o->bucket)) ||
	    !(c->region = strdup(o->region)) || !(c->key_id = strdup(o->key_id)) || !(c->secret = strdup(o->secret)))
		goto oom;
	/* scheme://host[:port][/path] (checked by the store's options) */
	const char *authority = strstr(c->endpoint, "://");
	authority = authority ? authority + 3 : c->endpoint;
	size_t alen = strcspn(authority, "/");
	c->prefix = authority + alen;
	if (asprintf(&c->host_header, "Host: %.*s", (int)alen, authority) < 0) {
		c->host_header = NULL;
		goto oom;
	}
	if (o->session_token) {
		log_add_secret(o->session_token);
		if (asprintf(&c->token_header, "x-amz-security-token: %s", o->session_token) < 0) {
			c->token_header = NULL;
			goto oom;
		}
	}
	return c;
oom:
	snprintf(err, errlen, "out of memory");
	s3_client_free(c);
	return NULL;
}

void s3_client_free(struct s3_client *c)
{
	if (!c)
		return;
	while (c->calls)
		call_free(c->calls);
	free(c->endpoint);
	free(c->bucket);
	free(c->host_header);
	free(c->region);
	free(c->key_id);
	if (c->secret)
		OPENSSL_cleanse(c->secret, strlen(c->secret));
	free(c->secret);
	sigv4_signer_free(&c->signer);
	free(c->token_header);
	free(c);
}
