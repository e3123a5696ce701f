/*
 * fake_http: an HTTP server inside the test process, for the clients that
 * talk HTTP (http.c, tg.c, llm.c and what is built on them).
 *
 * It is libevent's evhttp, bound to 127.0.0.1 on an ephemeral port, on the
 * test's own event_base: the client under test and the server take turns on
 * one loop, so a test drives both and never waits on a thread. Every request
 * is recorded (method, path, headers, body, arrival time) and answered from
 * the test's script: a queue of replies taken in order, then a handler the
 * test may set, then "200" with an empty body. A reply can be a plain body,
 * a body in chunked pieces (each after a delay, or when the test steps it),
 * late, held until released, or no answer at all (the connection closed or
 * reset), and a stream can be cut mid-body.
 *
 * The server owns its records; pointers to them stay valid until
 * fake_server_free. A reply's strings are copied when queued or returned.
 */
#ifndef TGLLM_TEST_FAKE_HTTP_H
#define TGLLM_TEST_FAKE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "loop.h"

#define FAKE_MAX_HEADERS 8
#define FAKE_MAX_PIECES  16

struct fake_reply {
	int status;                                /* 0 for 200 */
	const char *headers[FAKE_MAX_HEADERS + 1]; /* "Name: value" lines, NULL-terminated */
	const char *body;                          /* NULL: empty */
	size_t body_len;                           /* 0: strlen(body) */
	/* A chunked body instead: the pieces in order, NULL-terminated. */
	const char *pieces[FAKE_MAX_PIECES + 1];
	long piece_gap_ms; /* before each piece after the first; -1: each waits for fake_server_step */
	long delay_ms;     /* before the answer starts */
	bool is_held;      /* no answer until fake_server_release */
	bool is_closed;    /* close the connection without an answer */
	bool is_reset;     /* reset it instead (TCP RST): the client reads "connection reset" */
	bool is_cut;       /* after the last piece, close the connection instead of ending the body */
};

struct fake_request {
	char *method;
	char *uri;  /* path and query, as sent */
	char *body; /* NUL-terminated copy */
	size_t body_len;
	double at;         /* test_now() when the request was whole */
	int client_port;   /* the client's end of the connection: the same for requests on one connection */
	bool is_answered;  /* the reply is complete, or the connection closed as scripted */
	bool is_abandoned; /* the client closed the connection before the reply was complete */
	size_t pieces_sent;
	/* The server's state of the exchange. */
	struct fake_exchange *x;
};

struct fake_server;

/* Called for each request without a queued reply; *reply holds the default ("200", empty) to change. */
typedef void (*fake_handler)(void *arg, const struct fake_request *req, struct fake_reply *reply);

/* A server on 127.0.0.1: an ephemeral port when port is 0. NULL when it cannot listen. */
struct fake_server *fake_server_new(struct test_loop *loop, int port);
void fake_server_free(struct fake_server *s);
int fake_server_port(const struct fake_server *s);
/* "http://127.0.0.1:<port>" (owned by the server). */
const char *fake_server_url(const struct fake_server *s);

/* Adds a reply for the next request that has none yet. */
void fake_server_queue(struct fake_server *s, const struct fake_reply *r);
void fake_server_set_handler(struct fake_server *s, fake_handler fn, void *arg);

size_t fake_server_count(const struct fake_server *s);
/* The i-th request, oldest first; NULL when there is none. */
const struct fake_request *fake_server_request(const struct fake_server *s, size_t i);
/* Requests that arrived and are not answered (held, delayed, streaming); and the most there ever were. */
size_t fake_server_pending(const struct fake_server *s);
size_t fake_server_max_pending(const struct fake_server *s);

/* Starts the answer of a held request (a no-op for any other). */
void fake_server_release(struct fake_server *s, size_t i);
void fake_server_release_all(struct fake_server *s);
/* Sends the next piece of a stream whose pieces wait for the test (piece_gap_ms -1). */
void fake_server_step(struct fake_server *s, size_t i);

/*
 * Two round trips to the server on a connection of its own, not recorded:
 * for checking that something did NOT happen. Server and client share one
 * loop, so what the client under test had already put on the wire is read
 * before the second round trip's answer comes back. Fails the test when the
 * watchdog fires.
 */
void fake_server_sync(struct fake_server *s);

/* The value of a request header (case-insensitive), or NULL. */
const char *fake_request_header(const struct fake_request *r, const char *name);

/*
 * A field of a multipart/form-data body (RFC 7578): its bytes (into the
 * request's body), its filename and Content-Type ("" when the part has
 * none). False when the request has no such field or is no multipart request.
 */
struct fake_form_field {
	const char *data;
	size_t len;
	char filename[128];
	char type[64];
};
bool fake_request_form_field(const struct fake_request *r, const char *name, struct fake_form_field *out);

#endif
