#include "http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "buf.h"
#include "log.h"

#define HTTP_IDLE_HANDLES 16

struct http_client {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	struct http_call *calls; /* doubly linked, for cancelling at shutdown */
	char *ca_bundle;
	bool has_ca_dir; /* libcurl's default CA directory exists: no need for its bundle file */
	int running;
	/*
	 * Easy handles of finished calls, reset, for the next ones: a new handle
	 * costs a 5 KB and a 16 KB allocation and its setup on every request.
	 */
	CURL *idle[HTTP_IDLE_HANDLES];
	size_t n_idle;
};

struct http_call {
	struct http_client *client;
	struct http_call *prev, *next;
	CURL *easy;
	struct curl_slist *headers;
	struct buf body;
	long retry_after;
	char etag[128];
	char error[CURL_ERROR_SIZE];
	bool is_too_big;
	bool is_aborted;
	http_data_cb on_data;
	http_done_cb on_done;
	void *arg;
};

/* Per-socket state handed to curl_multi_assign. */
struct http_socket {
	struct event *ev;
};

static void check_finished(struct http_client *c);

static CURL *get_easy(struct http_client *c)
{
	return c->n_idle ? c->idle[--c->n_idle] : curl_easy_init();
}

static void put_easy(struct http_client *c, CURL *easy)
{
	if (c->n_idle < HTTP_IDLE_HANDLES) {
		curl_easy_reset(easy);
		c->idle[c->n_idle++] = easy;
	} else {
		curl_easy_cleanup(easy);
	}
}

static void call_free(struct http_call *call)
{
	struct http_client *c = call->client;
	if (call->prev)
		call->prev->next = call->next;
	else
		c->calls = call->next;
	if (call->next)
		call->next->prev = call->prev;
	curl_multi_remove_handle(c->multi, call->easy);
	put_easy(c, call->easy);
	curl_slist_free_all(call->headers);
	buf_free(&call->body);
	free(call);
}

static void on_socket_event(evutil_socket_t fd, short kind, void *arg)
{
	struct http_client *c = arg;
	int action = ((kind & EV_READ) ? CURL_CSELECT_IN : 0) | ((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	CURLMcode rc = curl_multi_socket_action(c->multi, fd, action, &c->running);
	if (rc != CURLM_OK)
		log_error("http: curl_multi_socket_action: %s", curl_multi_strerror(rc));
	check_finished(c);
}

static void on_timeout(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct http_client *c = arg;
	CURLMcode rc = curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &c->running);
	if (rc != CURLM_OK)
		log_error("http: curl_multi_socket_action: %s", curl_multi_strerror(rc));
	check_finished(c);
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	(void)easy;
	struct http_client *c = userp;
	struct http_socket *hs = socketp;

	if (what == CURL_POLL_REMOVE) {
		if (hs) {
			event_free(hs->ev);
			free(hs);
			curl_multi_assign(c->multi, s, NULL);
		}
		return 0;
	}
	if (!hs) {
		hs = calloc(1, sizeof *hs);
		if (!hs)
			return -1;
		curl_multi_assign(c->multi, s, hs);
	} else {
		event_free(hs->ev);
	}
	short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
	hs->ev = event_new(c->base, s, kind, on_socket_event, c);
	if (!hs->ev || event_add(hs->ev, NULL) != 0) {
		log_error("http: cannot watch a socket");
		return -1;
	}
	return 0;
}

/* curl asks for one timer; a zero timeout means "call me soon", from the loop. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	(void)multi;
	struct http_client *c = userp;
	if (timeout_ms < 0) {
		evtimer_del(c->timer);
		return 0;
	}
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	return evtimer_add(c->timer, &tv) == 0 ? 0 : -1;
}

static void check_finished(struct http_client *c)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		struct http_call *call = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
		CURLcode code = msg->data.result;

		struct http_response resp = {0};
		curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &resp.status);
		resp.is_too_big = call->is_too_big;
		resp.is_aborted = call->is_aborted;
		resp.is_transport_error = code != CURLE_OK && !call->is_too_big && !call->is_aborted;
		resp.is_timeout = code == CURLE_OPERATION_TIMEDOUT;
		if (code != CURLE_OK && !call->error[0])
			snprintf(call->error, sizeof call->error, "%s", curl_easy_strerror(code));
		resp.error = call->error;
		resp.body = buf_str(&call->body);
		resp.body_len = call->body.len;
		resp.retry_after = call->retry_after;
		resp.etag = call->etag;

		call->on_done(call->arg, &resp);
		call_free(call);
	}
}

static bool is_streaming(struct http_call *call)
{
	if (!call->on_data)
		return false;
	long status = 0;
	curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
	return status >= 200 && status < 300;
}

static size_t on_body(char *data, size_t size, size_t n, void *userp)
{
	struct http_call *call = userp;
	size_t len = size * n;
	if (is_streaming(call)) {
		if (call->on_data(call->arg, data, len) != 0) {
			call->is_aborted = true;
			return 0;
		}
		return len;
	}
	if (buf_append(&call->body, data, len) != BUF_OK) {
		call->is_too_big = true;
		return 0;
	}
	return len;
}

static void trim_copy(char *dst, size_t cap, const char *src, size_t len)
{
	while (len && (*src == ' ' || *src == '\t')) {
		src++;
		len--;
	}
	while (len && (src[len - 1] == '\r' || src[len - 1] == '\n' || src[len - 1] == ' '))
		len--;
	if (len >= cap)
		len = cap - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

static size_t on_header(char *data, size_t size, size_t n, void *userp)
{
	struct http_call *call = userp;
	size_t len = size * n;
	char value[128];

	if (len > 5 && strncmp(data, "HTTP/", 5) == 0) {
		/* A new response (after a 100 Continue or a redirect) starts afresh. */
		call->retry_after = -1;
		call->etag[0] = '\0';
	} else if (len > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
		trim_copy(value, sizeof value, data + 12, len - 12);
		char *end;
		long secs = strtol(value, &end, 10);
		if (end != value && *end == '\0' && secs >= 0) {
			call->retry_after = secs;
		} else {
			time_t when = curl_getdate(value, NULL);
			time_t now = time(NULL);
			if (when > 0)
				call->retry_after = when > now ? (long)(when - now) : 0;
		}
	} else if (len > 5 && strncasecmp(data, "ETag:", 5) == 0) {
		trim_copy(call->etag, sizeof call->etag, data + 5, len - 5);
	}
	return len;
}

static bool has_default_ca_dir(void)
{
	CURL *e = curl_easy_init();
	char *dir = NULL;
	struct stat st;
	bool has = e && curl_easy_getinfo(e, CURLINFO_CAPATH, &dir) == CURLE_OK && dir &&
		   stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
	curl_easy_cleanup(e);
	return has;
}

struct http_client *http_client_new(struct event_base *base)
{
	struct http_client *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->base = base;
	c->multi = curl_multi_init();
	c->timer = evtimer_new(base, on_timeout, c);
	if (!c->multi || !c->timer) {
		http_client_free(c);
		return NULL;
	}
	c->has_ca_dir = has_default_ca_dir();
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	return c;
}

int http_client_set_ca_bundle(struct http_client *c, const char *path)
{
	char *copy = path ? strdup(path) : NULL;
	if (path && !copy)
		return -1;
	free(c->ca_bundle);
	c->ca_bundle = copy;
	return 0;
}

void http_client_free(struct http_client *c)
{
	if (!c)
		return;
	free(c->ca_bundle);
	while (c->calls)
		call_free(c->calls);
	while (c->n_idle)
		curl_easy_cleanup(c->idle[--c->n_idle]);
	if (c->multi)
		curl_multi_cleanup(c->multi);
	if (c->timer)
		event_free(c->timer);
	free(c);
}

static int set_headers(struct http_call *call, const char *const *headers, bool is_signed)
{
	/*
	 * Without "Expect:" curl waits up to a second for "100 Continue" on larger
	 * bodies. But libcurl 7.88's SigV4 signs it as an empty "expect" header
	 * the server never sees, and the signature fails: signed requests keep
	 * curl's default (S3 answers 100 Continue at once).
	 */
	struct curl_slist *list = NULL;
	if (!is_signed && !(list = curl_slist_append(NULL, "Expect:")))
		return -1;
	for (size_t i = 0; headers && headers[i]; i++) {
		struct curl_slist *next = curl_slist_append(list, headers[i]);
		if (!next) {
			curl_slist_free_all(list);
			return -1;
		}
		list = next;
	}
	call->headers = list;
	return 0;
}

struct http_call *http_start(struct http_client *c, const struct http_request *req)
{
	struct http_call *call = calloc(1, sizeof *call);
	if (!call)
		return NULL;
	call->client = c;
	call->retry_after = -1;
	call->on_data = req->on_data;
	call->on_done = req->on_done;
	call->arg = req->arg;
	buf_init(&call->body, req->max_body);
	call->easy = get_easy(c);
	if (!call->easy || set_headers(call, req->headers, req->aws_sigv4 != NULL) != 0)
		goto fail;

	CURL *e = call->easy;
	CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                               \
	do {                                                                                        \
		if (rc == CURLE_OK)                                                                 \
			rc = curl_easy_setopt(e, opt, val);                                         \
	} while (0)
	SET(CURLOPT_URL, req->url);
	SET(CURLOPT_PRIVATE, call);
	SET(CURLOPT_HTTPHEADER, call->headers);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, call);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	SET(CURLOPT_HEADERDATA, call);
	SET(CURLOPT_ERRORBUFFER, call->error);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	/*
	 * OpenSSL parses a whole bundle file (~150 certificates, 20-35 ms) at the
	 * first HTTPS connection of every process; a hashed directory costs a
	 * few ms (docs/lean-build.md). Cold serverless starts pay it each time.
	 */
	if (c->ca_bundle)
		SET(CURLOPT_CAINFO, c->ca_bundle);
	else if (c->has_ca_dir)
		SET(CURLOPT_CAINFO, NULL);
	if (req->timeout_ms > 0)
		SET(CURLOPT_TIMEOUT_MS, req->timeout_ms);
	/*
	 * The receive buffer (curl's default is 16 KB per transfer) is most of
	 * the memory of a waiting conversation, thousands at once. A stream (a
	 * model answer) trickles in events of a hundred bytes for a long time:
	 * curl's smallest buffer will do.
	 */
	if (req->on_data)
		SET(CURLOPT_BUFFERSIZE, 1024L);
	if (req->stall_s > 0) {
		SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
		SET(CURLOPT_LOW_SPEED_TIME, req->stall_s);
	}
	if (req->body) {
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		SET(CURLOPT_POSTFIELDS, req->body);
	}
	if (req->aws_sigv4) {
		SET(CURLOPT_AWS_SIGV4, req->aws_sigv4);
		SET(CURLOPT_USERNAME, req->username ? req->username : "");
		SET(CURLOPT_PASSWORD, req->password ? req->password : "");
	}
	if (req->method && strcmp(req->method, req->body ? "POST" : "GET") != 0)
		SET(CURLOPT_CUSTOMREQUEST, req->method);
#undef SET
	if (rc != CURLE_OK) {
		log_error("http: cannot set up a request: %s", curl_easy_strerror(rc));
		goto fail;
	}
	CURLMcode mrc = curl_multi_add_handle(c->multi, e);
	if (mrc != CURLM_OK) {
		log_error("http: cannot start a request: %s", curl_multi_strerror(mrc));
		goto fail;
	}
	call->next = c->calls;
	if (c->calls)
		c->calls->prev = call;
	c->calls = call;
	return call;
fail:
	if (call->easy)
		put_easy(c, call->easy);
	curl_slist_free_all(call->headers);
	buf_free(&call->body);
	free(call);
	return NULL;
}

void http_cancel(struct http_call *call)
{
	if (call)
		call_free(call);
}
