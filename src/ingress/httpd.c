#include "ingress/httpd.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ingress/http_head.h"
#include "lib/log.h"

#define LISTEN_BACKLOG     128
#define ACCEPT_PAUSE_S     0.5
#define ACCEPT_ERROR_LOG_S 60 /* at most one line about failing accepts per this */

enum conn_state {
	READING_HEAD,
	READING_BODY,
	WITH_HANDLER,
	WRITING_LAST, /* the reply that ends the connection */
};

struct httpd_request {
	struct conn *conn;
	struct http_head head;
	char *head_text;
	char *body;
	size_t body_len;
};

struct conn {
	struct httpd *h;
	struct bufferevent *bev; /* NULL once the client is gone while the handler has the request */
	struct event *deadline;
	struct conn *prev, *next; /* h's list, the longest waiting for a request first */
	enum conn_state state;
	struct httpd_request req;
};

struct httpd {
	struct event_base *base;
	struct httpd_options o;
	httpd_handler handler;
	void *arg;
	struct evconnlistener *listener;
	struct event *resume; /* the end of a pause after an accept error */
	bool is_listening;    /* the listener is enabled */
	bool is_paused;
	bool is_flushing; /* httpd_flush is turning the loop */
	struct conn *head, *tail;
	size_t n_open; /* connections holding a socket */
	size_t n_busy; /* of which with the handler */
	time_t last_error_log;
	unsigned long n_errors_unlogged;
};

static const char *reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 411:
		return "Length Required";
	case 413:
		return "Content Too Large";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

/* --- connections --------------------------------------------------------- */

static void update_listener(struct httpd *h)
{
	if (!h->listener)
		return;
	/* At the cap, a new connection takes the place of one still waiting for its request. */
	bool should = !h->is_paused && (h->n_open < h->o.max_connections || h->n_open > h->n_busy);
	if (should == h->is_listening)
		return;
	if ((should ? evconnlistener_enable(h->listener) : evconnlistener_disable(h->listener)) == 0)
		h->is_listening = should;
}

static void list_remove(struct httpd *h, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		h->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		h->tail = c->prev;
	c->prev = c->next = NULL;
}

static void list_append(struct httpd *h, struct conn *c)
{
	c->prev = h->tail;
	c->next = NULL;
	if (h->tail)
		h->tail->next = c;
	else
		h->head = c;
	h->tail = c;
}

static void request_clear(struct httpd_request *r)
{
	free(r->head_text);
	free(r->body);
	*r = (struct httpd_request){.conn = r->conn};
}

static void drop_socket(struct conn *c)
{
	if (!c->bev)
		return;
	bufferevent_free(c->bev);
	c->bev = NULL;
	c->h->n_open--;
	if (c->state == WITH_HANDLER)
		c->h->n_busy--;
	event_del(c->deadline);
}

static void conn_free(struct conn *c)
{
	struct httpd *h = c->h;
	drop_socket(c);
	list_remove(h, c);
	event_free(c->deadline);
	request_clear(&c->req);
	free(c);
	update_listener(h);
}

static struct timeval seconds(double s)
{
	return (struct timeval){(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
}

static void arm_deadline(struct conn *c)
{
	struct timeval tv = seconds(c->h->o.deadline_s);
	evtimer_add(c->deadline, &tv);
}

static int write_head(struct conn *c, int status, const char *type, size_t len, const char *allow, bool is_last)
{
	return evbuffer_add_printf(bufferevent_get_output(c->bev),
	                           "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
	                           "Content-Length: %zu\r\n%s%s%s%s\r\n",
	                           status, reason(status), type, len, allow ? "Allow: " : "", allow ? allow : "",
	                           allow ? "\r\n" : "", is_last ? "Connection: close\r\n" : "");
}

/* body: one line of text, or NULL for none. */
static void write_response(struct conn *c, int status, const char *body, bool is_head, const char *allow,
                           bool is_last)
{
	int rc = write_head(c, status, "text/plain; charset=utf-8", body ? strlen(body) + 1 : 0, allow, is_last);
	if (rc >= 0 && body && !is_head)
		rc = evbuffer_add_printf(bufferevent_get_output(c->bev), "%s\n", body);
	if (rc < 0)
		log_warn("serve: cannot write a response (out of memory)");
}

/* A reply that ends the connection once it is written. */
static void refuse(struct conn *c, int status, const char *body)
{
	c->state = WRITING_LAST;
	bufferevent_disable(c->bev, EV_READ);
	write_response(c, status, body, false, NULL, true);
}

static bool is_writing(const struct httpd *h)
{
	for (const struct conn *c = h->head; c; c = c->next)
		if (c->bev && evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
			return true;
	return false;
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct httpd *h = c->h;
	if (c->state == WRITING_LAST && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(c);
	if (h->is_flushing && !is_writing(h))
		event_base_loopbreak(h->base);
}

static void dispatch(struct conn *c)
{
	struct httpd *h = c->h;
	c->state = WITH_HANDLER;
	h->n_busy++;
	event_del(c->deadline);
	bufferevent_disable(c->bev, EV_READ);
	update_listener(h);
	h->handler(h->arg, &c->req); /* may reply at once: c must not be touched after */
}

static void read_input(struct conn *c)
{
	struct httpd *h = c->h;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct httpd_request *r = &c->req;
	if (c->state == READING_HEAD) {
		/* Stray line ends between requests are allowed (RFC 9112, 2.2). */
		while (evbuffer_get_length(in) >= 2) {
			unsigned char two[2];
			if (evbuffer_copyout(in, two, 2) != 2 || two[0] != '\r' || two[1] != '\n')
				break;
			evbuffer_drain(in, 2);
		}
		struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
		size_t head_len = end.pos < 0 ? evbuffer_get_length(in) : (size_t)end.pos;
		if (head_len > h->o.max_head) {
			refuse(c, 431, "request head too large");
			return;
		}
		if (end.pos < 0)
			return;
		r->head_text = malloc(head_len + 1);
		if (!r->head_text) {
			refuse(c, 500, "out of memory");
			return;
		}
		evbuffer_remove(in, r->head_text, head_len);
		evbuffer_drain(in, 4);
		r->head_text[head_len] = '\0';
		int status = http_head_parse(r->head_text, head_len, &r->head);
		if (!status && r->head.has_transfer_encoding)
			status = 411;
		if (!status && r->head.content_length > (long long)h->o.max_body)
			status = 413;
		if (status) {
			refuse(c, status, status == 411 ? "Content-Length required" : "bad request");
			return;
		}
		if (r->head.expects_continue && r->head.content_length > 0)
			evbuffer_add_printf(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n");
		c->state = READING_BODY;
	}
	size_t need = r->head.content_length > 0 ? (size_t)r->head.content_length : 0;
	if (evbuffer_get_length(in) < need)
		return;
	r->body = malloc(need + 1);
	if (!r->body) {
		refuse(c, 500, "out of memory");
		return;
	}
	evbuffer_remove(in, r->body, need);
	r->body[need] = '\0';
	r->body_len = need;
	dispatch(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	(void)bev;
	read_input(arg);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct conn *c = arg;
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
		return;
	if (c->state == WITH_HANDLER) {
		drop_socket(c); /* the reply will only free the request */
		update_listener(c->h);
		return;
	}
	conn_free(c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct conn *c = arg;
	log_debug("serve: a connection closed: no complete request within %.0f s", c->h->o.deadline_s);
	conn_free(c);
}

static void evict_oldest_waiting(struct httpd *h)
{
	for (struct conn *c = h->head; c; c = c->next) {
		if (c->bev && c->state != WITH_HANDLER) {
			log_debug("serve: %zu connections: the one waiting longest closed for a new one",
			          h->n_open);
			conn_free(c);
			return;
		}
	}
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
	(void)lev;
	(void)sa;
	(void)len;
	struct httpd *h = arg;
	if (h->n_open >= h->o.max_connections)
		evict_oldest_waiting(h);
	struct conn *c = calloc(1, sizeof *c);
	SSL *ssl = NULL;
	if (c) {
		c->h = h;
		c->req.conn = c;
		c->deadline = evtimer_new(h->base, on_deadline, c);
		if (h->o.tls && (ssl = SSL_new(h->o.tls)) != NULL)
			c->bev = bufferevent_openssl_socket_new(h->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
			                                        BEV_OPT_CLOSE_ON_FREE);
		else if (!h->o.tls)
			c->bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
	}
	if (!c || !c->deadline || !c->bev) { /* the socket is made last: it was not */
		log_warn("serve: a connection refused: out of memory");
		if (c && c->deadline)
			event_free(c->deadline);
		if (ssl)
			SSL_free(ssl);
		evutil_closesocket(fd);
		free(c);
		return;
	}
	if (h->o.tls)
		bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	h->n_open++;
	list_append(h, c);
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	arm_deadline(c);
	update_listener(h);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct httpd *h = arg;
	h->is_paused = false;
	update_listener(h);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
	(void)lev;
	struct httpd *h = arg;
	int err = EVUTIL_SOCKET_ERROR();
	time_t now = time(NULL);
	h->n_errors_unlogged++;
	if (now - h->last_error_log >= ACCEPT_ERROR_LOG_S) {
		log_warn("serve: cannot accept connections (%s, %lu times since the last line about it); "
		         "%zu open; pausing for %.1f s each time",
		         strerror(err), h->n_errors_unlogged, h->n_open, ACCEPT_PAUSE_S);
		h->last_error_log = now;
		h->n_errors_unlogged = 0;
	}
	h->is_paused = true;
	update_listener(h);
	struct timeval tv = seconds(ACCEPT_PAUSE_S);
	if (evtimer_add(h->resume, &tv) != 0)
		on_resume(-1, 0, h);
}

/* --- the API ------------------------------------------------------------- */

struct httpd *httpd_new(struct event_base *base, const struct httpd_options *o, httpd_handler handler,
                        void *arg)
{
	char port[16];
	snprintf(port, sizeof port, "%d", o->port);
	struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC,
	                                .ai_socktype = SOCK_STREAM,
	                                .ai_protocol = IPPROTO_TCP,
	                                .ai_flags = EVUTIL_AI_PASSIVE};
	struct evutil_addrinfo *addr = NULL;
	if (evutil_getaddrinfo(o->host, port, &hints, &addr) != 0 || !addr) {
		errno = EADDRNOTAVAIL;
		return NULL;
	}
	struct httpd *h = calloc(1, sizeof *h);
	if (h) {
		*h = (struct httpd){.base = base, .o = *o, .handler = handler, .arg = arg};
		h->resume = evtimer_new(base, on_resume, h);
		h->listener = evconnlistener_new_bind(
		    base, on_accept, h, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
		    LISTEN_BACKLOG, addr->ai_addr, (int)addr->ai_addrlen);
	}
	int err = errno;
	evutil_freeaddrinfo(addr);
	if (!h || !h->resume || !h->listener) {
		httpd_free(h);
		errno = err;
		return NULL;
	}
	h->is_listening = true;
	evconnlistener_set_error_cb(h->listener, on_accept_error);
	return h;
}

int httpd_port(const struct httpd *h, bool *is_loopback)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	if (!h->listener ||
	    getsockname(evconnlistener_get_fd(h->listener), (struct sockaddr *)&ss, &len) != 0)
		return -1;
	if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
		if (is_loopback)
			*is_loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
		return ntohs(a->sin6_port);
	}
	const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
	if (is_loopback)
		*is_loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
	return ntohs(a->sin_port);
}

void httpd_stop_listening(struct httpd *h)
{
	if (h->listener) {
		evconnlistener_free(h->listener);
		h->listener = NULL;
	}
}

static void on_flush_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(((struct httpd *)arg)->base);
}

void httpd_flush(struct httpd *h, double timeout_s)
{
	if (!h || !is_writing(h))
		return;
	struct event *timer = evtimer_new(h->base, on_flush_timeout, h);
	struct timeval tv = seconds(timeout_s);
	if (!timer || evtimer_add(timer, &tv) != 0) {
		if (timer)
			event_free(timer);
		return;
	}
	h->is_flushing = true;
	event_base_loop(h->base, 0);
	h->is_flushing = false;
	event_free(timer);
}

void httpd_free(struct httpd *h)
{
	if (!h)
		return;
	httpd_stop_listening(h);
	while (h->head)
		conn_free(h->head);
	if (h->resume)
		event_free(h->resume);
	free(h);
}

const char *httpd_method(const struct httpd_request *r)
{
	return r->head.method;
}

const char *httpd_path(const struct httpd_request *r)
{
	return r->head.path;
}

const char *httpd_header(const struct httpd_request *r, const char *name)
{
	for (size_t i = 0; i < r->head.n_fields; i++)
		if (strcasecmp(r->head.fields[i].name, name) == 0)
			return r->head.fields[i].value;
	return NULL;
}

const char *httpd_body(const struct httpd_request *r, size_t *len)
{
	*len = r->body_len;
	return r->body ? r->body : "";
}

/* The response is written (or the client is gone): on to the next request, or the end. */
static void replied(struct httpd_request *r, bool is_last)
{
	struct conn *c = r->conn;
	struct httpd *h = c->h;
	h->n_busy--;
	request_clear(r);
	list_remove(h, c);
	list_append(h, c);
	arm_deadline(c); /* for the reply to be read, and the next request to come */
	if (is_last) {
		c->state = WRITING_LAST;
		update_listener(h);
		return;
	}
	c->state = READING_HEAD;
	bufferevent_enable(c->bev, EV_READ);
	update_listener(h);
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
		bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
}

static bool is_last_request(const struct httpd_request *r)
{
	return r->head.wants_close || !r->conn->h->listener;
}

void httpd_reply(struct httpd_request *r, int status, const char *body, const char *allow)
{
	struct conn *c = r->conn;
	if (!c->bev) {
		conn_free(c);
		return;
	}
	bool is_last = is_last_request(r);
	write_response(c, status, body, strcmp(r->head.method, "HEAD") == 0, allow, is_last);
	replied(r, is_last);
}

void httpd_reply_as(struct httpd_request *r, int status, const char *type, const char *body, size_t len)
{
	struct conn *c = r->conn;
	if (!c->bev) {
		conn_free(c);
		return;
	}
	bool is_last = is_last_request(r);
	int rc = write_head(c, status, type, len, NULL, is_last);
	if (rc >= 0 && strcmp(r->head.method, "HEAD") != 0)
		rc = evbuffer_add(bufferevent_get_output(c->bev), body, len);
	if (rc < 0)
		log_warn("serve: cannot write a response (out of memory)");
	replied(r, is_last);
}
