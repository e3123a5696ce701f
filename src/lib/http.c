#include "lib/http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "lib/backoff.h"
#include "lib/buf.h"
#include "lib/log.h"

#define HTTP_IDLE_HANDLES 16

struct http_client {
	struct event_base *base;
	CURLM *multi;
	/*
	 * Holds the TLS session cache for all transfers. Without it each easy
	 * handle allocates its own (~0.9 KB, even for plain HTTP), and a new
	 * connection could not resume a session another transfer negotiated.
	 */
	CURLSH *share;
	struct event *timer;
	struct event *stall_watch; /* four times a second while a call has a stall limit */
	struct http_call *calls;   /* doubly linked, for cancelling at shutdown */
	char *ca_bundle;
	bool has_ca_dir;    /* libcurl's default CA directory exists: no need for its bundle file */
	bool is_ca_dir;     /* ca_bundle names a hashed directory (openssl rehash), not a PEM file */
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
	struct curl_slist *headers; /* into header_nodes, or NULL */
	curl_mime *form;            /* a multipart body, or NULL */
	struct buf body;     /* the response's, when buffered */
	size_t request_len; /* the request body's */
	long retry_after;
	long stall_s;            /* the request's */
	double last_byte;        /* when the response last brought bytes (monotonic s); 0 before its first */
	const char *const *keep_headers;
	char **kept; /* their values (HTTP_MAX_KEPT); NULL until a response carries one: most calls keep none */
	char error[CURL_ERROR_SIZE];
	bool is_too_big;
	bool is_aborted;
	bool is_at_most_once;   /* the request's */
	bool is_resend_stopped; /* libcurl was about to send it again after it went out */
	http_data_cb on_data;
	http_done_cb on_done;
	void *arg;
	/*
	 * The request's header list and the copies of its lines, in the call's
	 * own allocation: a list of curl_slist_append costs two allocations
	 * per line, for every request.
	 */
	struct curl_slist header_nodes[];
};

static void check_finished(struct http_client *c);

static void forget_kept(struct http_call *call)
{
	for (size_t i = 0; call->kept && i < HTTP_MAX_KEPT; i++)
		free(call->kept[i]);
	free(call->kept);
	call->kept = NULL;
}

/* curl_easy_reset keeps the share: only new handles need it set. */
static CURL *get_easy(struct http_client *c)
{
	if (c->n_idle)
		return c->idle[--c->n_idle];
	CURL *easy = curl_easy_init();
	if (easy && curl_easy_setopt(easy, CURLOPT_SHARE, c->share) != CURLE_OK) {
		curl_easy_cleanup(easy);
		return NULL;
	}
	return easy;
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
	curl_mime_free(call->form);
	buf_free(&call->body);
	forget_kept(call);
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
	struct event *ev = socketp;

	if (what == CURL_POLL_REMOVE) {
		if (ev) {
			event_del(ev);
			free(ev);
			curl_multi_assign(c->multi, s, NULL);
		}
		return 0;
	}
	if (!ev) {
		ev = malloc(event_get_struct_event_size());
		if (!ev)
			return -1;
		curl_multi_assign(c->multi, s, ev);
	} else {
		event_del(ev);
	}
	short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
	if (event_assign(ev, c->base, s, kind, on_socket_event, c) != 0 || event_add(ev, NULL) != 0) {
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

/* The call's outcome to its caller, then the call is freed. */
static void finish(struct http_call *call, CURLcode code)
{
	struct http_response resp = {0};
	if (call->is_resend_stopped) {
		/* curl's own words for the first failure, when it had any ("Recv failure: ..."). */
		const char *cause = call->error[0] && !strstr(call->error, "pre-request")
		                        ? call->error
		                        : "connection closed without an answer";
		char text[CURL_ERROR_SIZE];
		snprintf(text, sizeof text, "%.160s on a reused connection", cause);
		memcpy(call->error, text, sizeof text);
	}
	curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &resp.status);
	resp.is_too_big = call->is_too_big;
	resp.is_aborted = call->is_aborted;
	resp.is_transport_error = code != CURLE_OK && !call->is_too_big && !call->is_aborted;
	resp.is_timeout = code == CURLE_OPERATION_TIMEDOUT;
	long request_size = 0;
	resp.has_sent_request = curl_easy_getinfo(call->easy, CURLINFO_REQUEST_SIZE, &request_size) == CURLE_OK &&
				request_size > 0;
	if (code != CURLE_OK && !call->error[0])
		snprintf(call->error, sizeof call->error, "%s", curl_easy_strerror(code));
	resp.error = call->error;
	resp.body = buf_str(&call->body);
	resp.body_len = call->body.len;
	resp.retry_after = call->retry_after;
	const char *kept[HTTP_MAX_KEPT];
	for (size_t i = 0; i < HTTP_MAX_KEPT; i++)
		kept[i] = call->kept && call->kept[i] ? call->kept[i] : "";
	resp.headers = kept;

	call->on_done(call->arg, &resp);
	call_free(call);
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
		finish(call, msg->data.result);
	}
}

/*
 * A stall is silence after the response has begun. libcurl's low-speed
 * limit counts from the request, so a server that takes long to start (a
 * local model loading its weights) would be given up as stalled: the time
 * to the first byte is the whole transfer's timeout's to bound.
 */
static const struct timeval stall_tick = {0, 250000};

static double monotonic_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_stall_watch(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct http_client *c = arg;
	double now = monotonic_s();
	bool is_watching;
	do { /* from the start after each: a caller's callback may start or cancel calls */
		struct http_call *stalled = NULL;
		is_watching = false;
		for (struct http_call *call = c->calls; call && !stalled; call = call->next) {
			if (call->stall_s && call->last_byte > 0 && now - call->last_byte >= (double)call->stall_s)
				stalled = call;
			is_watching |= call->stall_s > 0;
		}
		if (!stalled)
			break;
		snprintf(stalled->error, sizeof stalled->error, "no data for %ld s", stalled->stall_s);
		finish(stalled, CURLE_OPERATION_TIMEDOUT);
	} while (true);
	if (is_watching)
		evtimer_add(c->stall_watch, &stall_tick);
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
	call->last_byte = monotonic_s();
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

/* The value of a header line: without the blanks and the line end around it. */
static const char *header_value(const char *s, size_t len, size_t *value_len)
{
	while (len && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	while (len && (s[len - 1] == '\r' || s[len - 1] == '\n' || s[len - 1] == ' '))
		len--;
	*value_len = len;
	return s;
}

/* Keeps the value of a header the request named; false when out of memory. */
static bool keep_header(struct http_call *call, const char *line, size_t len)
{
	for (size_t i = 0; call->keep_headers && i < HTTP_MAX_KEPT && call->keep_headers[i]; i++) {
		size_t name_len = strlen(call->keep_headers[i]);
		if (len <= name_len || line[name_len] != ':' || strncasecmp(line, call->keep_headers[i], name_len) != 0)
			continue;
		size_t value_len;
		const char *value = header_value(line + name_len + 1, len - name_len - 1, &value_len);
		if (!call->kept && !(call->kept = calloc(HTTP_MAX_KEPT, sizeof *call->kept)))
			return false;
		free(call->kept[i]);
		call->kept[i] = strndup(value, value_len);
		return call->kept[i] != NULL;
	}
	return true;
}

static size_t on_header(char *data, size_t size, size_t n, void *userp)
{
	struct http_call *call = userp;
	size_t len = size * n;
	size_t value_len;
	const char *value;
	call->last_byte = monotonic_s();

	if (len > 5 && strncmp(data, "HTTP/", 5) == 0) {
		/* A new response (after a 100 Continue or a redirect) starts afresh. */
		call->retry_after = -1;
		forget_kept(call);
	} else if (len > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
		char text[64];
		value = header_value(data + 12, len - 12, &value_len);
		if (value_len >= sizeof text)
			return len;
		memcpy(text, value, value_len);
		text[value_len] = '\0';
		char *end;
		long long secs = strtoll(text, &end, 10);
		if (end != text && *end == '\0' && secs >= 0) {
			call->retry_after = backoff_asked_s(secs);
		} else {
			time_t when = curl_getdate(text, NULL);
			if (when > 0)
				call->retry_after = backoff_asked_s((long long)when - (long long)time(NULL));
		}
		if (!keep_header(call, data, len))
			return 0;
	} else if (!keep_header(call, data, len)) {
		return 0; /* curl stops the transfer: an answer without a header asked for would mislead */
	}
	return len;
}

/*
 * libcurl sends a request again on a new connection when a reused one dies
 * before any answer came (Curl_retry_request: "Connection died, retrying a
 * fresh connect"), also when the server had read the whole request. This
 * runs each time the request is about to go out (after connecting, TLS
 * included: https://curl.se/libcurl/c/CURLOPT_PREREQFUNCTION.html); a
 * request that must not be sent twice is stopped there once some of it went
 * out (CURLINFO_REQUEST_SIZE sums the bytes sent by every attempt). One
 * whose first attempt sent nothing (the write itself failed) may go again.
 */
static int on_prereq(void *clientp, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
	(void)primary_ip;
	(void)local_ip;
	(void)primary_port;
	(void)local_port;
	struct http_call *call = clientp;
	long sent = 0;
	if (!call->is_at_most_once ||
	    curl_easy_getinfo(call->easy, CURLINFO_REQUEST_SIZE, &sent) != CURLE_OK || sent == 0)
		return CURL_PREREQFUNC_OK;
	call->is_resend_stopped = true;
	return CURL_PREREQFUNC_ABORT;
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
	c->share = curl_share_init();
	c->timer = evtimer_new(base, on_timeout, c);
	c->stall_watch = evtimer_new(base, on_stall_watch, c);
	if (!c->multi || !c->share || !c->timer || !c->stall_watch ||
	    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
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
	struct stat st;
	c->is_ca_dir = path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
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
	if (c->share)
		curl_share_cleanup(c->share); /* after the handles: it refuses while in use */
	if (c->timer)
		event_free(c->timer);
	if (c->stall_watch)
		event_free(c->stall_watch);
	free(c);
}

/*
 * Without "Expect:" curl waits up to a second for "100 Continue" on larger
 * bodies. But libcurl 7.88's SigV4 signs it as an empty "expect" header the
 * server never sees, and the signature fails: signed requests keep curl's
 * default (S3 answers 100 Continue at once).
 */
static const char no_expect[] = "Expect:";

/* The form's fields as a curl_mime, data copied; NULL when out of memory or a file cannot be read. */
static curl_mime *make_form(CURL *easy, const struct http_form_field *fields, size_t n)
{
	curl_mime *mime = curl_mime_init(easy);
	CURLcode rc = mime ? CURLE_OK : CURLE_OUT_OF_MEMORY;
	for (size_t i = 0; i < n && rc == CURLE_OK; i++) {
		const struct http_form_field *f = &fields[i];
		curl_mimepart *part = curl_mime_addpart(mime);
		rc = part ? curl_mime_name(part, f->name) : CURLE_OUT_OF_MEMORY;
		if (rc == CURLE_OK)
			rc = f->data ? curl_mime_data(part, f->data, f->len) : curl_mime_filedata(part, f->path);
		if (rc == CURLE_OK && f->filename)
			rc = curl_mime_filename(part, f->filename);
		if (rc == CURLE_OK && f->type)
			rc = curl_mime_type(part, f->type);
	}
	if (rc != CURLE_OK) {
		log_error("http: cannot build a form: %s", curl_easy_strerror(rc));
		curl_mime_free(mime);
		return NULL;
	}
	return mime;
}

/* A call with room for its header list: the lines' copies follow the nodes. */
static struct http_call *call_new(const struct http_request *req)
{
	size_t n = 1, text = 0;
	for (size_t i = 0; req->headers && req->headers[i]; i++, n++)
		text += strlen(req->headers[i]) + 1;
	struct http_call *call = calloc(1, sizeof *call + n * sizeof call->header_nodes[0] + text);
	if (!call)
		return NULL;
	char *copy = (char *)&call->header_nodes[n];
	size_t k = 0;
	call->header_nodes[k++].data = (char *)no_expect; /* curl only reads the lines */
	for (size_t i = 0; req->headers && req->headers[i]; i++) {
		size_t len = strlen(req->headers[i]) + 1;
		memcpy(copy, req->headers[i], len);
		call->header_nodes[k++].data = copy;
		copy += len;
	}
	for (size_t i = 0; i + 1 < n; i++)
		call->header_nodes[i].next = &call->header_nodes[i + 1];
	call->headers = n ? call->header_nodes : NULL;
	return call;
}

struct http_call *http_start(struct http_client *c, const struct http_request *req)
{
	struct http_call *call = call_new(req);
	if (!call)
		return NULL;
	call->client = c;
	call->retry_after = -1;
	call->on_data = req->on_data;
	call->is_at_most_once = req->is_at_most_once;
	call->keep_headers = req->keep_headers;
	call->on_done = req->on_done;
	call->arg = req->arg;
	call->request_len = req->body ? req->body_len : 0;
	buf_init(&call->body, req->max_body);
	call->easy = get_easy(c);
	if (!call->easy)
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
	if (req->is_at_most_once) {
		SET(CURLOPT_PREREQFUNCTION, on_prereq);
		SET(CURLOPT_PREREQDATA, call);
	}
	/*
	 * OpenSSL parses a whole bundle file (~150 certificates, 20-35 ms) at the
	 * first HTTPS connection of every process; a hashed directory costs a
	 * few ms (docs/lean-build.md). Cold serverless starts pay it each time.
	 */
	if (c->ca_bundle && c->is_ca_dir) {
		SET(CURLOPT_CAPATH, c->ca_bundle);
		SET(CURLOPT_CAINFO, NULL);
	} else if (c->ca_bundle) {
		SET(CURLOPT_CAINFO, c->ca_bundle);
	} else if (c->has_ca_dir) {
		SET(CURLOPT_CAINFO, NULL);
	}
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
	call->stall_s = req->stall_s > 0 ? req->stall_s : 0;
	if (call->stall_s && !evtimer_pending(c->stall_watch, NULL))
		evtimer_add(c->stall_watch, &stall_tick);
	if (req->body) {
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		SET(CURLOPT_POSTFIELDS, req->body);
	} else if (req->form) {
		if (!(call->form = make_form(e, req->form, req->n_form)))
			goto fail;
		SET(CURLOPT_MIMEPOST, call->form);
	}
	if (req->method && strcmp(req->method, req->body || req->form ? "POST" : "GET") != 0)
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
	curl_mime_free(call->form);
	buf_free(&call->body);
	free(call);
	return NULL;
}

void http_cancel(struct http_call *call)
{
	if (call)
		call_free(call);
}

bool http_is_body_sent(struct http_call *call)
{
	curl_off_t sent = -1;
	long status = 0;
	return curl_easy_getinfo(call->easy, CURLINFO_SIZE_UPLOAD_T, &sent) == CURLE_OK &&
	       sent == (curl_off_t)call->request_len &&
	       curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status != 0;
}
