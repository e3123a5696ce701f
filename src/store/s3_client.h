/*
 * s3_client: requests to one bucket of an S3-compatible server (Yandex
 * Object Storage, AWS S3, MinIO), on the loop through lib/http.h. What the
 * S3 protocol asks, and libcurl 7.88 (Debian 12) leaves to us, is done here
 * (docs/internals/STORE.md, "Requests"):
 *
 *  - path-style URLs, <endpoint>/<bucket>/<key>, keys percent-encoded as
 *    SigV4 wants them (libcurl signs the path and query as they are sent);
 *  - AWS Signature V4 by libcurl (CURLOPT_AWS_SIGV4), with the body's
 *    SHA-256 in x-amz-content-sha256, which libcurl does not add;
 *  - throttling (429, 503 SlowDown), other passing 5xx and broken
 *    connections retried with jittered backoff, or after Retry-After;
 *  - a server that cannot do conditional writes (501) gets plain ones from
 *    then on, and the owner is told once (the hook below, else a warning);
 *  - S3's XML answers read for what the store needs (error codes, listings).
 *
 * What a status means for an operation is the caller's business (store/s3.c).
 */
#ifndef TGLLM_S3_CLIENT_H
#define TGLLM_S3_CLIENT_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"
#include "lib/http.h"

struct s3_client_options {
	const char *endpoint; /* scheme://host[:port][/path] */
	const char *region;
	const char *bucket;
	const char *key_id;
	const char *secret;        /* only ever handed to libcurl as the password */
	const char *session_token; /* temporary credentials, else NULL */
	/*
	 * Called once, from the first 501 to a conditional write (condition is
	 * its header), instead of the client's own warning; NULL for the warning.
	 */
	void (*on_no_conditions)(void *arg, const char *condition);
	void *arg;
};

struct s3_client;
struct s3_call;

/* NULL with a reason in err. */
struct s3_client *s3_client_new(struct event_base *base, struct http_client *http,
                                const struct s3_client_options *o, char *err, size_t errlen);
/* Cancels the calls still running (no callbacks). NULL is a no-op. */
void s3_client_free(struct s3_client *c);
/* False once the server has answered 501 to a conditional write, or s3_drop_conditions. */
bool s3_has_conditions(const struct s3_client *c);
/* Writes without conditions from now on, quietly: the server is known not to support them. */
void s3_drop_conditions(struct s3_client *c);

struct s3_request {
	const char *what;   /* what the request is for, in log lines: "reading history" */
	const char *method; /* "GET", "PUT", "DELETE" */
	const char *key;    /* the object's key (copied); NULL for the bucket (a listing) */
	const char *query;  /* canonical: sorted and encoded (copied); NULL for none */
	char *body;         /* taken (freed by the call); NULL for none */
	size_t body_len;
	const char *content_type; /* NULL for none */
	const char *condition;    /* "If-Match: …" or "If-None-Match: *"; NULL for none */
	/* The object's x-amz-meta-tgllm-writes (user metadata: store/s3.c's write ids); NULL for none. */
	const char *write_ids;
	/* A PUT that copies this object of the bucket (CopyObject), with no body; NULL for none. */
	const char *copy_from;
	size_t max_body; /* the largest answer accepted */
};

/* The final response, after the retries here; borrowed for the callback. */
typedef void (*s3_done_cb)(void *arg, const struct http_response *resp);
/* The response's ETag header (quotes kept), "" when absent. */
const char *s3_etag(const struct http_response *resp);
/* The response's x-amz-meta-tgllm-writes header, "" when absent. */
const char *s3_write_ids(const struct http_response *resp);
/* The response's Content-Length (the whole object's size, even when too big to read), -1 when absent. */
long long s3_content_length(const struct http_response *resp);

/*
 * Sends req; done runs once, from the loop (a request that cannot even be
 * set up is answered as a transport error), unless the call is cancelled.
 * NULL only when out of memory (req->body is freed, done does not run).
 */
struct s3_call *s3_send(struct s3_client *c, const struct s3_request *req, s3_done_cb done, void *arg);
/* Stops a call; its callback never runs. NULL is a no-op. Not from its own callback. */
void s3_cancel(struct s3_call *call);

/* The address of key for log lines (never a secret): s3://bucket/key. */
void s3_where(const struct s3_client *c, const char *key, char *out, size_t n);
/* One clear error line: what failed, the object, the status and S3's error Code and Message, with a hint. */
void s3_log_failure(const struct s3_client *c, const char *what, const char *key,
                    const struct http_response *resp);

/* RFC 3986 percent-encoding (unreserved characters kept, and '/' too when is_path). BUF_OK or a buf_error. */
int s3_append_encoded(struct buf *b, const char *s, bool is_path);
/*
 * The text of the first <tag>...</tag> in [*from, end), XML character and
 * entity references decoded (a new string; NULL when absent or out of
 * memory); *from moves past it. S3's answers are flat enough for this (no
 * CDATA, no attributes on the tags read).
 */
char *s3_xml_take(const char **from, const char *end, const char *tag);

#endif
