/*
 * The benchmark's fake S3: objects in memory, path-style
 * /<bucket>/<key>, what the S3 store (src/store/s3.c) sends: GET, HEAD, PUT
 * (with If-Match / If-None-Match: * enforced as S3 does, x-amz-meta-tgllm-writes
 * kept, CopyObject), DELETE and ListObjectsV2 (one page). Signatures are not
 * checked: the figure measures the bot, and tests/e2e/s3_server.py checks them.
 *
 * Conditional writes as documented for S3 PutObject
 * (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html):
 * If-None-Match: * on an existing key and If-Match on another ETag answer
 * 412 PreconditionFailed; If-Match on a missing key 404 NoSuchKey.
 *
 * For bench/run: POST /_bench/snapshot keeps the objects as they are,
 * POST /_bench/restore puts them back (each timed run starts from the same
 * seeded bucket), and every request the fakes answer is counted per run
 * (fake_note).
 */
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"

struct object {
	char *key;
	char *body;
	size_t len;
	char etag[24];
	char *write_ids; /* x-amz-meta-tgllm-writes, or NULL */
};

struct bucket {
	struct object *v;
	size_t n, cap;
};

static struct bucket live, saved;
static unsigned long next_etag = 1;

static char *dup_bytes(const char *p, size_t n)
{
	char *s = malloc(n + 1);
	if (!s) {
		fprintf(stderr, "bench_fake: out of memory\n");
		exit(1);
	}
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static struct object *find(struct bucket *b, const char *key)
{
	for (size_t i = 0; i < b->n; i++)
		if (strcmp(b->v[i].key, key) == 0)
			return &b->v[i];
	return NULL;
}

static void object_clear(struct object *o)
{
	free(o->key);
	free(o->body);
	free(o->write_ids);
}

static struct object *add(struct bucket *b, const char *key)
{
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 64;
		b->v = realloc(b->v, b->cap * sizeof *b->v);
		if (!b->v) {
			fprintf(stderr, "bench_fake: out of memory\n");
			exit(1);
		}
	}
	struct object *o = &b->v[b->n++];
	memset(o, 0, sizeof *o);
	o->key = dup_bytes(key, strlen(key));
	return o;
}

static void remove_object(struct bucket *b, struct object *o)
{
	object_clear(o);
	*o = b->v[--b->n];
}

static void bucket_copy(struct bucket *to, const struct bucket *from)
{
	while (to->n)
		remove_object(to, &to->v[to->n - 1]);
	for (size_t i = 0; i < from->n; i++) {
		const struct object *f = &from->v[i];
		struct object *o = add(to, f->key);
		o->body = dup_bytes(f->body, f->len);
		o->len = f->len;
		memcpy(o->etag, f->etag, sizeof o->etag);
		o->write_ids = f->write_ids ? dup_bytes(f->write_ids, strlen(f->write_ids)) : NULL;
	}
}

static void reply(struct evhttp_request *req, int status, const char *reason, const char *code)
{
	struct evbuffer *out = evbuffer_new();
	if (code) {
		evbuffer_add_printf(out,
		                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code>"
		                    "<Message>%s</Message></Error>",
		                    code, reason);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/xml");
	}
	evhttp_send_reply(req, status, reason, out);
	evbuffer_free(out);
}

static void reply_object(struct evhttp_request *req, const struct object *o, bool has_body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *out = evbuffer_new();
	evhttp_add_header(h, "ETag", o->etag);
	if (o->write_ids)
		evhttp_add_header(h, "x-amz-meta-tgllm-writes", o->write_ids);
	if (has_body)
		evbuffer_add(out, o->body, o->len);
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

/* ListObjectsV2, one page: the handle path never lists, the daemons' resume does. */
static void reply_list(struct evhttp_request *req, const char *prefix)
{
	struct evbuffer *out = evbuffer_new();
	evbuffer_add_printf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult>"
	                         "<IsTruncated>false</IsTruncated>");
	for (size_t i = 0; i < live.n; i++)
		if (strncmp(live.v[i].key, prefix, strlen(prefix)) == 0)
			evbuffer_add_printf(out,
			                    "<Contents><Key>%s</Key><LastModified>2026-12-01T00:00:00.000Z"
			                    "</LastModified></Contents>",
			                    live.v[i].key);
	evbuffer_add_printf(out, "</ListBucketResult>");
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/xml");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static const char *method_name(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_POST:
		return "POST";
	default:
		return "OTHER";
	}
}

/* Returns the status answered. */
static int put(struct evhttp_request *req, const char *key)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *if_match = evhttp_find_header(in, "If-Match");
	const char *if_none = evhttp_find_header(in, "If-None-Match");
	const char *ids = evhttp_find_header(in, "x-amz-meta-tgllm-writes");
	const char *copy = evhttp_find_header(in, "x-amz-copy-source");
	struct object *o = find(&live, key);
	if (if_none && strcmp(if_none, "*") == 0 && o) {
		reply(req, 412, "At least one of the pre-conditions you specified did not hold",
		      "PreconditionFailed");
		return 412;
	}
	if (if_match && !o) {
		reply(req, 404, "The specified key does not exist.", "NoSuchKey");
		return 404;
	}
	if (if_match && strcmp(if_match, o->etag) != 0) {
		reply(req, 412, "At least one of the pre-conditions you specified did not hold",
		      "PreconditionFailed");
		return 412;
	}
	const char *body;
	size_t len;
	struct object *from = NULL;
	if (copy) {
		/* "/bucket/key": the store copies within its bucket. */
		const char *k = strchr(copy + 1, '/');
		if (!k || !(from = find(&live, k + 1))) {
			reply(req, 404, "The specified key does not exist.", "NoSuchKey");
			return 404;
		}
		body = from->body;
		len = from->len;
	} else {
		struct evbuffer *b = evhttp_request_get_input_buffer(req);
		len = evbuffer_get_length(b);
		body = (const char *)evbuffer_pullup(b, -1);
	}
	char *copy_body = dup_bytes(body ? body : "", len);
	if (!o)
		o = add(&live, key);
	free(o->body);
	free(o->write_ids);
	o->body = copy_body;
	o->len = len;
	o->write_ids = ids ? dup_bytes(ids, strlen(ids)) : NULL;
	snprintf(o->etag, sizeof o->etag, "\"%lu\"", next_etag++);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "ETag", o->etag);
	if (copy) {
		struct evbuffer *out = evbuffer_new();
		evbuffer_add_printf(out, "<CopyObjectResult><ETag>%s</ETag></CopyObjectResult>", o->etag);
		evhttp_send_reply(req, 200, "OK", out);
		evbuffer_free(out);
	} else {
		evhttp_send_reply(req, 200, "OK", NULL);
	}
	return 200;
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct fake *f = arg;
	enum evhttp_cmd_type type = evhttp_request_get_command(req);
	const char *uri = evhttp_request_get_uri(req);
	if (type == EVHTTP_REQ_POST && strcmp(uri, "/_bench/snapshot") == 0) {
		bucket_copy(&saved, &live);
		reply(req, 200, "OK", NULL);
		return;
	}
	if (type == EVHTTP_REQ_POST && strcmp(uri, "/_bench/restore") == 0) {
		bucket_copy(&live, &saved);
		fake_next_run(f);
		reply(req, 200, "OK", NULL);
		return;
	}
	/* /<bucket>/<key>[?query] */
	const char *slash = strchr(uri + 1, '/');
	const char *query = strchr(uri, '?');
	char *path = dup_bytes(uri, query ? (size_t)(query - uri) : strlen(uri));
	char *key = slash && (!query || slash < query) ? evhttp_uridecode(slash + 1, 0, NULL) : NULL;
	if (slash && (!query || slash < query))
		path[slash - uri] = '\0';
	int status;
	if (!key && type == EVHTTP_REQ_GET && query) {
		struct evkeyvalq q;
		const char *prefix = NULL;
		if (evhttp_parse_query_str(query + 1, &q) == 0)
			prefix = evhttp_find_header(&q, "prefix");
		reply_list(req, prefix ? prefix : "");
		evhttp_clear_headers(&q);
		status = 200;
	} else if (!key) {
		reply(req, 400, "Not a key of a bucket", "InvalidRequest");
		status = 400;
	} else if (type == EVHTTP_REQ_GET || type == EVHTTP_REQ_HEAD) {
		struct object *o = find(&live, key);
		if (o) {
			reply_object(req, o, type == EVHTTP_REQ_GET);
			status = 200;
		} else {
			reply(req, 404, "The specified key does not exist.", "NoSuchKey");
			status = 404;
		}
	} else if (type == EVHTTP_REQ_PUT) {
		status = put(req, key);
	} else if (type == EVHTTP_REQ_DELETE) {
		struct object *o = find(&live, key);
		if (o)
			remove_object(&live, o);
		reply(req, 204, "No Content", NULL);
		status = 204;
	} else {
		reply(req, 405, "Method not allowed", "MethodNotAllowed");
		status = 405;
	}
	fake_note(f, "s3", method_name(type), key ? key : path, status);
	free(key);
	free(path);
}

int fake_s3_start(struct fake *f, int *port)
{
	struct evhttp *http = evhttp_new(f->base);
	if (!http)
		return -1;
	evhttp_set_timeout(http, 600);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
	                                     EVHTTP_REQ_DELETE | EVHTTP_REQ_POST);
	evhttp_set_gencb(http, on_request, f);
	return fake_listen(f, http, port);
}
