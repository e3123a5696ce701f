/*
 * http: asynchronous HTTP requests on the event loop.
 *
 * Every outgoing request (Telegram, the model, storage) is a libcurl easy
 * handle in one curl multi handle, driven by libevent through
 * curl_multi_socket_action (curl's "hiperfifo" pattern). Nothing blocks the
 * loop; thousands of requests can wait at once.
 *
 * A call copies everything it is given but the request body, which must
 * stay until on_done has run, the call is cancelled, or http_is_body_sent
 * (a model request carries the whole history; thousands wait at once). Its callbacks run on the loop, never
 * inside another http function, and on_done runs exactly once unless the call
 * is cancelled. Retrying is the caller's business: only the caller knows
 * what is safe to repeat.
 *
 * One thing libcurl repeats on its own: a request on a reused connection
 * that dies before an answer came is sent again on a new one. A request
 * that must not reach the server twice (one that creates something, e.g. a
 * Telegram message) says is_at_most_once: it is then never sent again once
 * some of it went out; it fails as a transport error with has_sent_request
 * (it may have been delivered), like any that failed after going out.
 */
#ifndef TGLLM_HTTP_H
#define TGLLM_HTTP_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#define HTTP_MAX_KEPT 4

struct http_client;
struct http_call;

struct http_response {
	long status;            /* HTTP status; 0 when no response came (transport error) */
	bool is_transport_error; /* no complete response: connect, timeout, broken connection */
	/*
	 * Some of the request went out: after a transport error the server may
	 * have taken it all the same (a connection closed or reset without an
	 * answer, a timeout). False when it failed before (no connection, TLS):
	 * then it surely did not arrive.
	 */
	bool has_sent_request;
	bool is_timeout;
	bool is_too_big;        /* the body passed max_body and the transfer was stopped */
	bool is_aborted;        /* on_data asked to stop */
	const char *error;      /* transport error in words (never contains the URL); "" when none */
	const char *body;       /* the buffered body, NUL-terminated; borrowed for the callback */
	size_t body_len;
	long retry_after;       /* seconds from a Retry-After header, -1 when absent */
	/* The values of the headers the request asked to keep, in its order; "" when absent. */
	const char *const *headers;
};

typedef void (*http_done_cb)(void *arg, const struct http_response *resp);

/* One field of a multipart/form-data body (RFC 7578): a value, or a file to upload. */
struct http_form_field {
	const char *name;
	const char *data;     /* the value (len bytes), or NULL for a file */
	size_t len;
	const char *path;     /* the file to upload when data is NULL */
	const char *filename; /* the file name the server is told; NULL: none for a value, the file's own for a file */
	const char *type;     /* its Content-Type, or NULL */
};
/*
 * Streaming: body bytes of a 2xx response as they arrive (other statuses are
 * buffered for on_done). Return 0 to go on, non-zero to stop the transfer;
 * on_done then reports is_aborted.
 */
typedef int (*http_data_cb)(void *arg, const char *data, size_t n);

struct http_request {
	const char *method;          /* "GET", "POST", "PUT", ...; NULL = GET, or POST with a body */
	const char *url;             /* may contain secrets: it is never logged */
	const char *const *headers;  /* NULL-terminated "Name: value" list, or NULL */
	const char *body;            /* NULL for none; borrowed for the whole call (see above) */
	size_t body_len;
	/* A multipart/form-data body instead (POST), copied by http_start; NULL for none. */
	const struct http_form_field *form;
	size_t n_form;
	long timeout_ms;             /* the whole transfer; 0 = none */
	long stall_s;                /* give up when nothing arrives for this long; 0 = none */
	bool is_at_most_once;        /* never sent a second time once some of it went out (see above) */
	size_t max_body;             /* largest buffered body accepted */
	http_data_cb on_data;        /* NULL: buffer the body */
	/*
	 * Names of response headers whose values to keep (at most
	 * HTTP_MAX_KEPT, NULL-terminated, case-insensitive), or NULL; borrowed
	 * for the whole call.
	 */
	const char *const *keep_headers;
	http_done_cb on_done;
	void *arg;
};

struct http_client *http_client_new(struct event_base *base);
/*
 * Certificate authorities to trust for HTTPS (copied): a PEM bundle, or a
 * directory of certificates named by subject hash (openssl rehash), which
 * OpenSSL reads one issuer at a time instead of parsing a whole bundle at
 * the first connection; NULL for the system's. Packages for serverless
 * platforms bring their own.
 */
int http_client_set_ca_bundle(struct http_client *c, const char *path);
/* Cancels every call still running (no callbacks). NULL is a no-op. */
void http_client_free(struct http_client *c);
/* Starts a request; NULL when it could not be set up (then no callback runs). */
struct http_call *http_start(struct http_client *c, const struct http_request *req);
/* Stops a call; its callbacks never run. Not to be called from its own callbacks. */
void http_cancel(struct http_call *call);
/*
 * True when the request body has all gone out and the response has begun:
 * libcurl reads the body no more (it resends a request only when no response
 * came, and redirects are not followed), so the caller may free it.
 */
bool http_is_body_sent(struct http_call *call);

#endif
