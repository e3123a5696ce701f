/*
 * httpd: the small HTTP/1.1 server under `serve` (the webhook and /healthz).
 *
 * Its own rather than libevent's evhttp because a server open to the
 * internet has to bound what a client can hold, which evhttp cannot:
 *  - a whole-request deadline: from the accept (or the end of the previous
 *    reply) a client has deadline_s seconds to send a complete request,
 *    however it trickles the bytes; the TLS handshake counts;
 *  - a cap on connections below the process's file limit: at the cap the
 *    connection that has waited longest for its request is closed for the
 *    new one (one waiting on the handler never is; when all are, the
 *    listener pauses until one ends);
 *  - accept errors (no file descriptors left…) pause the listener for a
 *    moment with one log line, instead of a retry at every loop turn.
 *
 * One request at a time per connection (keep-alive, no pipelining beyond
 * reading the next request after the reply); bodies need Content-Length
 * (411 otherwise), within max_body (413); the head within max_head (431).
 */
#ifndef TGLLM_HTTPD_H
#define TGLLM_HTTPD_H

#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "ingress/http_head.h"

struct httpd;
struct httpd_request;

struct httpd_options {
	const char *host; /* an address or host name of this machine */
	int port;
	SSL_CTX *tls; /* borrowed; NULL: plain HTTP */
	size_t max_head;
	size_t max_body;
	double deadline_s;
	size_t max_connections;
};

/*
 * A complete request, the handler's until it calls httpd_reply (then or
 * later, from the loop). Should the client go away meanwhile, the reply
 * only frees the request.
 */
typedef void (*httpd_handler)(void *arg, struct httpd_request *req);

/* Listens at once; NULL when it cannot (errno says why; nothing logged). */
struct httpd *httpd_new(struct event_base *base, const struct httpd_options *o, httpd_handler handler,
                        void *arg);
/* Stops accepting connections; the open ones are served on. */
void httpd_stop_listening(struct httpd *h);
/*
 * Turns the loop until the replies already made are written out (at most
 * timeout_s): after the loop has stopped, before the process exits.
 */
void httpd_flush(struct httpd *h, double timeout_s);
/* Closes every connection; requests still with the handler are freed too. */
void httpd_free(struct httpd *h);
/*
 * The port listened on (the one asked for, or the kernel's choice for 0);
 * *is_loopback (unless NULL): only this machine can connect.
 */
int httpd_port(const struct httpd *h, bool *is_loopback);

/* "GET", "POST"… as sent. */
const char *httpd_method(const struct httpd_request *r);
/* The path of the request target, without the query. */
const char *httpd_path(const struct httpd_request *r);
/* The first header named name (case-insensitive), or NULL. */
const char *httpd_header(const struct httpd_request *r, const char *name);
/* The body, NUL terminated after len bytes; "" when there is none. */
const char *httpd_body(const struct httpd_request *r, size_t *len);

/*
 * Sends the response (text/plain, body plus a newline; none for HEAD) and
 * frees the request. allow: an Allow header's value, or NULL.
 */
void httpd_reply(struct httpd_request *r, int status, const char *body, const char *allow);
/* Sends len bytes of body, as they are, with their Content-Type, and frees the request. */
void httpd_reply_as(struct httpd_request *r, int status, const char *type, const char *body, size_t len);

#endif
