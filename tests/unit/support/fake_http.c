#include "fake_http.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* What the server still has to do for one request. */
struct fake_exchange {
	struct fake_server *s;
	struct fake_request *r;
	struct fake_reply reply;        /* a deep copy */
	struct evhttp_request *req;     /* until the reply is complete; the server's to answer or free */
	struct evhttp_connection *conn; /* NULL once closed */
	struct event *timer;            /* the delay, the next piece, or the close */
	/*
	 * evhttp reads nothing while a request waits for its answer, so it
	 * would see a client go only when writing to it: this watches for it.
	 */
	struct event *watch;
	enum { X_HELD, X_DELAYED, X_STREAMING, X_CLOSING, X_DONE } state;
	char **names, **values; /* the request's headers */
	size_t n_headers;
};

struct fake_server {
	struct test_loop *loop;
	struct evhttp *http;
	int port;
	char url[64];
	struct fake_reply *queue;
	size_t n_queue, queue_head;
	fake_handler handler;
	void *handler_arg;
	struct fake_request **requests;
	size_t n_requests;
	size_t max_pending;
	bool is_freeing;
};

static char *copy_bytes(const char *s, size_t len)
{
	char *c = malloc(len + 1);
	if (!c)
		abort();
	if (len)
		memcpy(c, s, len);
	c[len] = '\0';
	return c;
}

static char *copy_str(const char *s)
{
	return s ? copy_bytes(s, strlen(s)) : NULL;
}

static void reply_copy(struct fake_reply *dst, const struct fake_reply *src)
{
	*dst = *src;
	for (size_t i = 0; i < FAKE_MAX_HEADERS && src->headers[i]; i++)
		dst->headers[i] = copy_str(src->headers[i]);
	if (src->body) {
		dst->body_len = src->body_len ? src->body_len : strlen(src->body);
		dst->body = copy_bytes(src->body, dst->body_len);
	}
	for (size_t i = 0; i < FAKE_MAX_PIECES && src->pieces[i]; i++)
		dst->pieces[i] = copy_str(src->pieces[i]);
}

static void reply_free(struct fake_reply *r)
{
	for (size_t i = 0; i < FAKE_MAX_HEADERS; i++)
		free((char *)r->headers[i]);
	free((char *)r->body);
	for (size_t i = 0; i < FAKE_MAX_PIECES; i++)
		free((char *)r->pieces[i]);
	*r = (struct fake_reply){0};
}

static void exchange_done(struct fake_exchange *x)
{
	if (x->watch)
		event_del(x->watch);
	x->state = X_DONE;
	x->req = NULL;
	x->r->is_answered = true;
}

/* Closing from inside evhttp's callbacks is not allowed: the close comes from the loop. */
static void close_soon(struct fake_exchange *x)
{
	struct timeval now = {0, 0};
	x->state = X_CLOSING;
	evtimer_add(x->timer, &now);
}

static void on_piece_written(struct evhttp_connection *conn, void *arg)
{
	(void)conn;
	close_soon(arg);
}

static void send_piece(struct fake_exchange *x)
{
	const char *piece = x->reply.pieces[x->r->pieces_sent];
	if (!piece) {
		evhttp_send_reply_end(x->req);
		exchange_done(x);
		return;
	}
	struct evbuffer *b = evbuffer_new();
	if (!b)
		abort();
	evbuffer_add(b, piece, strlen(piece));
	x->r->pieces_sent++;
	bool is_last = x->reply.pieces[x->r->pieces_sent] == NULL;
	if (is_last && x->reply.is_cut) {
		/* The piece must be on the wire before the connection goes. */
		evhttp_send_reply_chunk_with_cb(x->req, b, on_piece_written, x);
	} else {
		evhttp_send_reply_chunk(x->req, b);
		if (is_last) {
			evhttp_send_reply_end(x->req);
			exchange_done(x);
		} else if (x->reply.piece_gap_ms >= 0) {
			struct timeval tv = {x->reply.piece_gap_ms / 1000,
			                     (x->reply.piece_gap_ms % 1000) * 1000};
			evtimer_add(x->timer, &tv);
		}
	}
	evbuffer_free(b);
}

static void start_reply(struct fake_exchange *x)
{
	if (x->reply.is_closed || x->reply.is_reset) {
		close_soon(x);
		return;
	}
	struct evkeyvalq *out = evhttp_request_get_output_headers(x->req);
	for (size_t i = 0; i < FAKE_MAX_HEADERS && x->reply.headers[i]; i++) {
		const char *line = x->reply.headers[i];
		const char *colon = strchr(line, ':');
		if (!colon)
			continue;
		char *name = copy_bytes(line, (size_t)(colon - line));
		const char *value = colon + 1;
		while (*value == ' ')
			value++;
		evhttp_add_header(out, name, value);
		free(name);
	}
	int status = x->reply.status ? x->reply.status : 200;
	if (x->reply.pieces[0]) {
		x->state = X_STREAMING;
		evhttp_send_reply_start(x->req, status, "Fake");
		send_piece(x);
		return;
	}
	struct evbuffer *b = evbuffer_new();
	if (!b)
		abort();
	if (x->reply.body)
		evbuffer_add(b, x->reply.body, x->reply.body_len);
	evhttp_send_reply(x->req, status, "Fake", b);
	evbuffer_free(b);
	exchange_done(x);
}

static void close_now(struct fake_exchange *x)
{
	struct evhttp_connection *conn = x->conn;
	if (conn && x->reply.is_reset) {
		/*
		 * A zero linger time makes close() send RST instead of FIN; evhttp
		 * would shut the socket down (a FIN) before closing it, so the
		 * socket is taken from it and closed here.
		 */
		struct linger now = {1, 0};
		struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
		evutil_socket_t fd = bufferevent_getfd(bev);
		if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &now, sizeof now) != 0 ||
		    bufferevent_setfd(bev, -1) != 0)
			abort();
		evutil_closesocket(fd);
	}
	/* The connection frees the request still on it. */
	exchange_done(x);
	if (conn)
		evhttp_connection_free(conn);
}

static void on_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct fake_exchange *x = arg;
	switch (x->state) {
	case X_DELAYED:
		start_reply(x);
		break;
	case X_STREAMING:
		send_piece(x);
		break;
	case X_CLOSING:
		close_now(x);
		break;
	case X_HELD:
	case X_DONE:
		break;
	}
}

/* The connection of the latest exchange on it closed. */
static void on_close(struct evhttp_connection *conn, void *arg)
{
	(void)conn;
	struct fake_exchange *x = arg;
	if (x->s->is_freeing)
		return;
	x->conn = NULL;
	if (x->watch)
		event_del(x->watch);
	if (x->req) {
		/* Closed by the client before the reply was complete: evhttp hands the request back. */
		evhttp_request_free(x->req);
		x->req = NULL;
		x->r->is_abandoned = true;
		x->state = X_DONE;
		evtimer_del(x->timer);
	}
}

/* The client's end of a waiting exchange became readable: it closed, or it sent more than asked. */
static void on_readable(evutil_socket_t fd, short kind, void *arg)
{
	(void)kind;
	struct fake_exchange *x = arg;
	char byte;
	ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0) {
		event_del(x->watch); /* a pipelined request: evhttp reads it after this answer */
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	struct evhttp_connection *conn = x->conn;
	exchange_done(x);
	x->r->is_answered = false;
	x->r->is_abandoned = true;
	evtimer_del(x->timer);
	evhttp_connection_free(conn); /* with the request on it */
}

static void record_headers(struct fake_exchange *x, struct evhttp_request *req)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	struct evkeyval *kv;
	size_t n = 0;
	for (kv = in->tqh_first; kv; kv = kv->next.tqe_next)
		n++;
	x->names = calloc(n + 1, sizeof *x->names);
	x->values = calloc(n + 1, sizeof *x->values);
	if (!x->names || !x->values)
		abort();
	for (kv = in->tqh_first; kv; kv = kv->next.tqe_next) {
		x->names[x->n_headers] = copy_str(kv->key);
		x->values[x->n_headers] = copy_str(kv->value);
		x->n_headers++;
	}
}

static const char *method_name(enum evhttp_cmd_type type)
{
	switch (type) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	default:
		return "OTHER";
	}
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct fake_server *s = arg;
	const char *uri = evhttp_request_get_uri(req);
	if (strcmp(uri, "/__sync") == 0) {
		evhttp_send_reply(req, 200, "OK", NULL);
		return;
	}

	struct fake_request *r = calloc(1, sizeof *r);
	struct fake_exchange *x = calloc(1, sizeof *x);
	struct fake_request **grown = realloc(s->requests, (s->n_requests + 1) * sizeof *grown);
	if (!r || !x || !grown)
		abort();
	s->requests = grown;
	s->requests[s->n_requests++] = r;
	r->x = x;
	x->s = s;
	x->r = r;
	x->req = req;
	x->conn = evhttp_request_get_connection(req);
	x->timer = evtimer_new(s->loop->base, on_timer, x);
	if (!x->timer)
		abort();
	r->method = copy_str(method_name(evhttp_request_get_command(req)));
	r->uri = copy_str(uri);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	r->body_len = evbuffer_get_length(in);
	r->body = copy_bytes((const char *)evbuffer_pullup(in, -1), r->body_len);
	r->at = test_now();
	char *peer_address;
	ev_uint16_t peer_port;
	evhttp_connection_get_peer(x->conn, &peer_address, &peer_port);
	r->client_port = peer_port;
	record_headers(x, req);
	evhttp_connection_set_closecb(x->conn, on_close, x);
	x->watch = event_new(s->loop->base, bufferevent_getfd(evhttp_connection_get_bufferevent(x->conn)),
	                     EV_READ | EV_PERSIST, on_readable, x);
	if (!x->watch || event_add(x->watch, NULL) != 0)
		abort();
	size_t pending = fake_server_pending(s);
	if (pending > s->max_pending)
		s->max_pending = pending;

	if (s->queue_head < s->n_queue) {
		x->reply = s->queue[s->queue_head++]; /* a copy already: it moves */
	} else {
		struct fake_reply reply = {.status = 200};
		if (s->handler)
			s->handler(s->handler_arg, r, &reply);
		reply_copy(&x->reply, &reply);
	}

	if (x->reply.is_held) {
		x->state = X_HELD;
	} else if (x->reply.delay_ms > 0) {
		x->state = X_DELAYED;
		struct timeval tv = {x->reply.delay_ms / 1000, (x->reply.delay_ms % 1000) * 1000};
		evtimer_add(x->timer, &tv);
	} else {
		start_reply(x);
	}
}

struct fake_server *fake_server_new(struct test_loop *loop, int port)
{
	struct fake_server *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->loop = loop;
	s->http = evhttp_new(loop->base);
	struct evhttp_bound_socket *bound =
	    s->http ? evhttp_bind_socket_with_handle(s->http, "127.0.0.1", (ev_uint16_t)port) : NULL;
	if (!bound) {
		fake_server_free(s);
		return NULL;
	}
	struct sockaddr_storage addr;
	socklen_t len = sizeof addr;
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&addr, &len) != 0) {
		fake_server_free(s);
		return NULL;
	}
	s->port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
	snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
	                                        EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(s->http, on_request, s);
	return s;
}

void fake_server_free(struct fake_server *s)
{
	if (!s)
		return;
	s->is_freeing = true;
	for (size_t i = 0; i < s->n_requests; i++) {
		struct fake_exchange *x = s->requests[i]->x;
		if (x->watch)
			event_free(x->watch); /* before evhttp closes the socket it watches */
		x->watch = NULL;
	}
	/* Requests still on a connection go with it; those the clients abandoned were freed on close. */
	if (s->http)
		evhttp_free(s->http);
	for (size_t i = 0; i < s->n_requests; i++) {
		struct fake_request *r = s->requests[i];
		struct fake_exchange *x = r->x;
		event_free(x->timer);
		reply_free(&x->reply);
		for (size_t k = 0; k < x->n_headers; k++) {
			free(x->names[k]);
			free(x->values[k]);
		}
		free(x->names);
		free(x->values);
		free(x);
		free(r->method);
		free(r->uri);
		free(r->body);
		free(r);
	}
	free(s->requests);
	for (size_t i = s->queue_head; i < s->n_queue; i++)
		reply_free(&s->queue[i]);
	free(s->queue);
	free(s);
}

int fake_server_port(const struct fake_server *s)
{
	return s->port;
}

const char *fake_server_url(const struct fake_server *s)
{
	return s->url;
}

void fake_server_queue(struct fake_server *s, const struct fake_reply *r)
{
	struct fake_reply *grown = realloc(s->queue, (s->n_queue + 1) * sizeof *grown);
	if (!grown)
		abort();
	s->queue = grown;
	reply_copy(&s->queue[s->n_queue++], r);
}

void fake_server_set_handler(struct fake_server *s, fake_handler fn, void *arg)
{
	s->handler = fn;
	s->handler_arg = arg;
}

size_t fake_server_count(const struct fake_server *s)
{
	return s->n_requests;
}

const struct fake_request *fake_server_request(const struct fake_server *s, size_t i)
{
	return i < s->n_requests ? s->requests[i] : NULL;
}

size_t fake_server_pending(const struct fake_server *s)
{
	size_t n = 0;
	for (size_t i = 0; i < s->n_requests; i++)
		n += !s->requests[i]->is_answered && !s->requests[i]->is_abandoned;
	return n;
}

size_t fake_server_max_pending(const struct fake_server *s)
{
	return s->max_pending;
}

void fake_server_release(struct fake_server *s, size_t i)
{
	if (i < s->n_requests && s->requests[i]->x->state == X_HELD && s->requests[i]->x->req)
		start_reply(s->requests[i]->x);
}

void fake_server_release_all(struct fake_server *s)
{
	for (size_t i = 0; i < s->n_requests; i++)
		fake_server_release(s, i);
}

void fake_server_step(struct fake_server *s, size_t i)
{
	if (i < s->n_requests && s->requests[i]->x->state == X_STREAMING && s->requests[i]->x->req)
		send_piece(s->requests[i]->x);
}

static void on_sync_reply(struct evhttp_request *req, void *arg)
{
	(void)req;
	*(bool *)arg = true;
}

void fake_server_sync(struct fake_server *s)
{
	/* Twice: the first round trip may overtake bytes that were still in the kernel's buffers. */
	for (int round = 0; round < 2; round++) {
		bool is_back = false;
		struct evhttp_connection *conn =
		    evhttp_connection_base_new(s->loop->base, NULL, "127.0.0.1", (ev_uint16_t)s->port);
		struct evhttp_request *req = conn ? evhttp_request_new(on_sync_reply, &is_back) : NULL;
		if (!req || evhttp_make_request(conn, req, EVHTTP_REQ_GET, "/__sync") != 0)
			fail_msg("cannot make the sync request to the fake server");
		WAIT_FOR(s->loop, is_back, "a round trip to the fake server");
		evhttp_connection_free(conn);
	}
}

const char *fake_request_header(const struct fake_request *r, const char *name)
{
	for (size_t i = 0; i < r->x->n_headers; i++)
		if (strcasecmp(r->x->names[i], name) == 0)
			return r->x->values[i];
	return NULL;
}

/* The value of attr="..." in a header line, into out; false when absent. */
static bool header_attr(const char *line, size_t len, const char *attr, char *out, size_t size)
{
	char key[64];
	snprintf(key, sizeof key, "; %s=\"", attr);
	const char *p = memmem(line, len, key, strlen(key));
	if (!p)
		return false;
	p += strlen(key);
	const char *end = memchr(p, '"', len - (size_t)(p - line));
	if (!end || (size_t)(end - p) >= size)
		return false;
	memcpy(out, p, (size_t)(end - p));
	out[end - p] = '\0';
	return true;
}

bool fake_request_form_field(const struct fake_request *r, const char *name, struct fake_form_field *out)
{
	const char *type = fake_request_header(r, "Content-Type");
	const char *b = type ? strstr(type, "boundary=") : NULL;
	if (!type || strncmp(type, "multipart/form-data", 19) != 0 || !b)
		return false;
	char delim[128];
	int dlen = snprintf(delim, sizeof delim, "\r\n--%s", b + 9);
	if (dlen < 0 || (size_t)dlen >= sizeof delim)
		return false;
	const char *end = r->body + r->body_len;
	/* The first delimiter starts the body, without the line break before it. */
	const char *p = r->body_len >= (size_t)dlen - 2 && memcmp(r->body, delim + 2, (size_t)dlen - 2) == 0
	                    ? r->body + dlen - 2
	                    : NULL;
	while (p && end - p >= 2 && memcmp(p, "--", 2) != 0) {
		p += 2; /* the CRLF after the delimiter */
		const char *head_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
		if (!head_end)
			return false;
		const char *data = head_end + 4;
		const char *next = memmem(data, (size_t)(end - data), delim, (size_t)dlen);
		if (!next)
			return false;
		char part_name[128] = "";
		*out = (struct fake_form_field){.data = data, .len = (size_t)(next - data)};
		for (const char *line = p; line < head_end;) {
			const char *eol = memmem(line, (size_t)(head_end + 2 - line), "\r\n", 2);
			size_t n = (size_t)(eol - line);
			if (n > 20 && strncasecmp(line, "Content-Disposition:", 20) == 0) {
				if (!header_attr(line, n, "name", part_name, sizeof part_name))
					part_name[0] = '\0';
				if (!header_attr(line, n, "filename", out->filename, sizeof out->filename))
					out->filename[0] = '\0';
			} else if (n > 13 && strncasecmp(line, "Content-Type:", 13) == 0) {
				const char *v = line + 13;
				while (*v == ' ')
					v++;
				snprintf(out->type, sizeof out->type, "%.*s", (int)(eol - v), v);
			}
			line = eol + 2;
		}
		if (strcmp(part_name, name) == 0)
			return true;
		p = next + dlen;
	}
	return false;
}
