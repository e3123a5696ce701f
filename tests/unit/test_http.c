/*
 * Unit tests for src/lib/http.c: requests on the event loop through curl
 * multi, against a fake HTTP server on the same loop (support/fake_http.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake_http.h"
#include "lib/buf.h"
#include "lib/http.h"
#include "loop.h"

#include "expect.h"

struct fixture {
	struct test_loop loop;
	struct fake_server *server;
	struct http_client *http;
	bool is_in_start; /* http_start is running */
};

/* What on_done and on_data saw, copied: the response is borrowed for the callback only. */
struct outcome {
	struct fixture *f;
	int n_done;
	bool was_in_start;
	long status;
	bool is_transport_error, is_timeout, is_too_big, is_aborted, has_sent_request;
	char *error;
	char *body;
	size_t body_len;
	long retry_after;
	char *kept[HTTP_MAX_KEPT];
	struct buf data; /* what on_data got */
	int n_data;
	int stop_at_data;      /* on_data asks to stop at this call (1 for the first); 0: never */
	size_t pieces_at_done; /* the server's pieces sent when on_done ran */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	if (!f || test_loop_init(&f->loop, TEST_LOOP_BUDGET_S) != 0)
		return -1;
	f->server = fake_server_new(&f->loop, 0);
	f->http = http_client_new(f->loop.base);
	if (!f->server || !f->http)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	http_client_free(f->http);
	fake_server_free(f->server);
	test_loop_free(&f->loop);
	free(f);
	return 0;
}

static void outcome_init(struct outcome *o, struct fixture *f)
{
	*o = (struct outcome){.f = f, .retry_after = -2};
	buf_init(&o->data, 1 << 20);
}

static void outcome_free(struct outcome *o)
{
	free(o->error);
	free(o->body);
	for (size_t i = 0; i < HTTP_MAX_KEPT; i++)
		free(o->kept[i]);
	buf_free(&o->data);
}

static char *dup_bytes(const char *s, size_t len)
{
	char *c = malloc(len + 1);
	assert_non_null(c);
	memcpy(c, s, len);
	c[len] = '\0';
	return c;
}

static void on_done(void *arg, const struct http_response *resp)
{
	struct outcome *o = arg;
	o->n_done++;
	o->was_in_start |= o->f->is_in_start;
	o->status = resp->status;
	o->is_transport_error = resp->is_transport_error;
	o->is_timeout = resp->is_timeout;
	o->is_too_big = resp->is_too_big;
	o->is_aborted = resp->is_aborted;
	o->has_sent_request = resp->has_sent_request;
	free(o->error);
	o->error = resp->error ? dup_bytes(resp->error, strlen(resp->error)) : NULL;
	free(o->body);
	o->body = resp->body ? dup_bytes(resp->body, resp->body_len) : NULL;
	o->body_len = resp->body_len;
	o->retry_after = resp->retry_after;
	for (size_t i = 0; i < HTTP_MAX_KEPT && resp->headers; i++) {
		free(o->kept[i]);
		o->kept[i] = resp->headers[i] ? dup_bytes(resp->headers[i], strlen(resp->headers[i])) : NULL;
	}
	const struct fake_request *r = fake_server_request(o->f->server, 0);
	o->pieces_at_done = r ? r->pieces_sent : 0;
}

static int on_data(void *arg, const char *data, size_t n)
{
	struct outcome *o = arg;
	o->n_data++;
	if (buf_append(&o->data, data, n) != BUF_OK)
		fail_msg("on_data: more data than the test expects");
	return o->stop_at_data && o->n_data >= o->stop_at_data;
}

/* Starts a request whose callbacks go to o; fails the test when http_start refuses. */
static struct http_call *start(struct fixture *f, struct http_request req, struct outcome *o)
{
	req.on_done = on_done;
	req.arg = o;
	if (!req.max_body)
		req.max_body = 1 << 20;
	f->is_in_start = true;
	struct http_call *call = http_start(f->http, &req);
	f->is_in_start = false;
	if (!call)
		fail_msg("http_start refused a request to %s", req.url);
	return call;
}

static char *url_of(struct fixture *f, const char *path)
{
	static char url[256];
	snprintf(url, sizeof url, "%s%s", fake_server_url(f->server), path);
	return url;
}

/* A port on 127.0.0.1 where nothing listens: one the kernel just gave a server that is gone. */
static int dead_port(struct test_loop *loop)
{
	struct fake_server *s = fake_server_new(loop, 0);
	assert_non_null(s);
	int port = fake_server_port(s);
	fake_server_free(s);
	return port;
}

static void test_a_get_and_a_post_make_a_round_trip(void **state)
{
	struct fixture *f = *state;
	struct outcome get, post;
	outcome_init(&get, f);
	outcome_init(&post, f);

	static const char *const get_headers[] = {"X-Test: one", NULL};
	fake_server_queue(f->server, &(struct fake_reply){.status = 200, .body = "hello back"});
	start(f, (struct http_request){.url = url_of(f, "/hello?x=1"), .headers = get_headers}, &get);
	WAIT_FOR(&f->loop, get.n_done == 1, "the GET to finish");

	const struct fake_request *r = fake_server_request(f->server, 0);
	expect_str("the GET's method", "GET", r->method);
	expect_str("the GET's path", "/hello?x=1", r->uri);
	expect_str("the GET's X-Test header", "one", fake_request_header(r, "X-Test"));
	expect_int("the GET's status", 200, get.status);
	expect_str("the GET's body", "hello back", get.body);
	expect_int("the GET: a transport error", false, get.is_transport_error);
	expect_str("the GET's error text", "", get.error);
	expect_int("the GET's retry_after without Retry-After", -1, get.retry_after);

	static const char *const post_headers[] = {"Content-Type: application/json", NULL};
	static const char body[] = "{\"text\":\"h\\u00e9llo\",\"n\":1}";
	fake_server_queue(f->server, &(struct fake_reply){.status = 201, .body = "{\"ok\":true}"});
	start(f,
	      (struct http_request){
	          .url = url_of(f, "/post"), .headers = post_headers, .body = body, .body_len = strlen(body)},
	      &post);
	WAIT_FOR(&f->loop, post.n_done == 1, "the POST to finish");
	r = fake_server_request(f->server, 1);
	expect_str("the POST's method", "POST", r->method);
	expect_str("the POST's body at the server", body, r->body);
	expect_str("the POST's Content-Type", "application/json", fake_request_header(r, "Content-Type"));
	expect_int("the POST's status", 201, post.status);
	expect_str("the POST's answer", "{\"ok\":true}", post.body);

	outcome_free(&get);
	outcome_free(&post);
}

static void test_the_method_is_sent_as_given(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	static const char body[] = "object bytes";
	start(f,
	      (struct http_request){
	          .method = "PUT", .url = url_of(f, "/bucket/key"), .body = body, .body_len = strlen(body)},
	      &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the PUT to finish");
	const struct fake_request *r = fake_server_request(f->server, 0);
	expect_str("the method", "PUT", r->method);
	expect_str("the body", body, r->body);
	outcome_free(&o);
}

static void test_a_body_over_max_body_is_too_big(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	char big[3001];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	fake_server_queue(f->server, &(struct fake_reply){.body = big});
	start(f, (struct http_request){.url = url_of(f, "/big"), .max_body = 1000}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the call to finish");
	expect_int("is_too_big for a 3000-byte body and max_body 1000", true, o.is_too_big);
	expect_int("is_transport_error beside is_too_big", false, o.is_transport_error);
	if (o.body_len > 1000)
		fail_msg("the buffered body: expected at most 1000 bytes, got %zu", o.body_len);
	outcome_free(&o);
}

static void test_a_body_over_max_body_stops_the_transfer(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	char piece[601];
	memset(piece, 'y', sizeof piece - 1);
	piece[sizeof piece - 1] = '\0';
	/* Five pieces of 600 bytes, each when the test says: the client must stop at the second. */
	fake_server_queue(f->server, &(struct fake_reply){.pieces = {piece, piece, piece, piece, piece},
	                                                  .piece_gap_ms = -1});
	start(f, (struct http_request){.url = url_of(f, "/stream"), .max_body = 1000}, &o);
	WAIT_FOR(&f->loop, fake_server_count(f->server) == 1, "the request at the server");
	fake_server_sync(f->server);
	expect_int("on_done before the body passed max_body", 0, o.n_done);
	fake_server_step(f->server, 0);
	WAIT_FOR(&f->loop, o.n_done == 1, "the call to stop after 1200 of 3000 bytes");
	expect_int("is_too_big", true, o.is_too_big);
	expect_int("pieces the server had sent when on_done ran", 2, (long long)o.pieces_at_done);
	WAIT_FOR(&f->loop, fake_server_request(f->server, 0)->is_abandoned,
	         "the client to close the connection after the second piece");
	expect_int("pieces the server sent in all", 2,
	           (long long)fake_server_request(f->server, 0)->pieces_sent);
	outcome_free(&o);
}

static void test_a_2xx_body_streams_to_on_data_in_pieces(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	fake_server_queue(f->server,
	                  &(struct fake_reply){.pieces = {"alpha ", "beta ", "gamma"}, .piece_gap_ms = -1});
	start(f, (struct http_request){.url = url_of(f, "/stream"), .on_data = on_data}, &o);
	WAIT_FOR(&f->loop, strcmp(buf_str(&o.data), "alpha ") == 0, "the first piece in on_data (got \"%s\")",
	         buf_str(&o.data));
	expect_int("on_done while the body still streams", 0, o.n_done);
	fake_server_step(f->server, 0);
	WAIT_FOR(&f->loop, strcmp(buf_str(&o.data), "alpha beta ") == 0,
	         "the second piece in on_data (got \"%s\")", buf_str(&o.data));
	fake_server_step(f->server, 0);
	WAIT_FOR(&f->loop, o.n_done == 1, "the end of the stream");
	expect_str("everything on_data got", "alpha beta gamma", buf_str(&o.data));
	if (o.n_data < 3)
		fail_msg("on_data calls: expected one per piece (3), got %d", o.n_data);
	expect_int("status", 200, o.status);
	expect_int("bytes buffered for on_done of a streamed body", 0, (long long)o.body_len);
	expect_int("is_transport_error", false, o.is_transport_error);
	outcome_free(&o);
}

static void test_a_non_2xx_body_is_buffered_for_on_done(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	fake_server_queue(f->server,
	                  &(struct fake_reply){.status = 503, .body = "{\"error\":\"overloaded\"}"});
	start(f, (struct http_request){.url = url_of(f, "/stream"), .on_data = on_data}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the call to finish");
	expect_int("on_data calls for a 503", 0, o.n_data);
	expect_int("status", 503, o.status);
	expect_str("the 503's body in on_done", "{\"error\":\"overloaded\"}", o.body);
	outcome_free(&o);
}

static void test_on_data_returning_non_zero_aborts(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	o.stop_at_data = 1;
	fake_server_queue(f->server,
	                  &(struct fake_reply){.pieces = {"one", "two", "three"}, .piece_gap_ms = -1});
	start(f, (struct http_request){.url = url_of(f, "/stream"), .on_data = on_data}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the call to stop after on_data asked");
	expect_int("is_aborted", true, o.is_aborted);
	expect_int("is_transport_error beside is_aborted", false, o.is_transport_error);
	expect_int("is_too_big beside is_aborted", false, o.is_too_big);
	expect_int("on_data calls after asking to stop", 1, o.n_data);
	expect_int("pieces the server had sent", 1, (long long)o.pieces_at_done);
	outcome_free(&o);
}

static void test_kept_headers_come_back_in_the_order_asked(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	static const char *const keep[] = {"X-Second", "x-first", "X-Absent", NULL};
	fake_server_queue(f->server, &(struct fake_reply){
	                                 .headers = {"X-First: one", "X-SECOND:   two  ", "X-Other: three"}});
	start(f, (struct http_request){.url = url_of(f, "/h"), .keep_headers = keep}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the call to finish");
	expect_str("kept header 0 (X-Second)", "two", o.kept[0]);
	expect_str("kept header 1 (x-first)", "one", o.kept[1]);
	expect_str("kept header 2 (X-Absent)", "", o.kept[2]);
	outcome_free(&o);
}

/* A Retry-After line is read for retry_after and kept as well, when asked for. */
static void test_a_kept_retry_after_comes_back_too(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	static const char *const keep[] = {"Retry-After", NULL};
	fake_server_queue(f->server, &(struct fake_reply){.status = 503, .headers = {"Retry-After: 7"}});
	start(f, (struct http_request){.url = url_of(f, "/h"), .keep_headers = keep}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the call to finish");
	expect_int("retry_after", 7, o.retry_after);
	expect_str("the kept Retry-After", "7", o.kept[0]);
	outcome_free(&o);
}

static void test_retry_after_in_seconds_is_read(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	fake_server_queue(f->server, &(struct fake_reply){.status = 429, .headers = {"Retry-After: 120"}});
	start(f, (struct http_request){.url = url_of(f, "/limited")}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the call to finish");
	expect_int("status", 429, o.status);
	expect_int("retry_after from \"Retry-After: 120\"", 120, o.retry_after);
	outcome_free(&o);
}

/* Absurd numbers are clamped where they are read: a wait computed from them must not overflow. */
static void test_an_absurd_retry_after_is_clamped_to_a_day(void **state)
{
	struct fixture *f = *state;
	static const char *const absurd[] = {"Retry-After: 9223372036854775807",
	                                     "Retry-After: 99999999999999999999999", "Retry-After: -7"};
	static const long expected[] = {86400, 86400, -1};
	for (size_t i = 0; i < sizeof absurd / sizeof absurd[0]; i++) {
		struct outcome o;
		outcome_init(&o, f);
		fake_server_queue(f->server, &(struct fake_reply){.status = 503, .headers = {absurd[i]}});
		start(f, (struct http_request){.url = url_of(f, "/absurd")}, &o);
		WAIT_FOR(&f->loop, o.n_done == 1, "the call to finish");
		char what[96];
		snprintf(what, sizeof what, "retry_after from \"%s\"", absurd[i]);
		expect_int(what, expected[i], o.retry_after);
		outcome_free(&o);
	}
}

static void http_date(char *out, size_t size, time_t when)
{
	struct tm tm;
	gmtime_r(&when, &tm);
	strftime(out, size, "Retry-After: %a, %d %b %Y %H:%M:%S GMT", &tm);
}

static void test_retry_after_as_an_http_date_is_seconds_from_now(void **state)
{
	struct fixture *f = *state;
	struct outcome later, past;
	outcome_init(&later, f);
	outcome_init(&past, f);
	char in_100_s[80], an_hour_ago[80];
	http_date(in_100_s, sizeof in_100_s, time(NULL) + 100);
	http_date(an_hour_ago, sizeof an_hour_ago, time(NULL) - 3600);
	fake_server_queue(f->server, &(struct fake_reply){.status = 503, .headers = {in_100_s}});
	fake_server_queue(f->server, &(struct fake_reply){.status = 503, .headers = {an_hour_ago}});
	start(f, (struct http_request){.url = url_of(f, "/a")}, &later);
	WAIT_FOR(&f->loop, later.n_done == 1, "the first call to finish");
	start(f, (struct http_request){.url = url_of(f, "/b")}, &past);
	WAIT_FOR(&f->loop, past.n_done == 1, "the second call to finish");
	if (later.retry_after < 98 || later.retry_after > 100)
		fail_msg("retry_after from \"%s\": expected 98..100 s, got %ld", in_100_s, later.retry_after);
	expect_int("retry_after from a date an hour ago", 0, past.retry_after);
	outcome_free(&later);
	outcome_free(&past);
}

static void test_a_refused_connection_is_a_transport_error_without_the_url(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/bot123456:SECRET-TOKEN/getMe", dead_port(&f->loop));
	start(f, (struct http_request){.url = url}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the refused call to finish");
	expect_int("is_transport_error", true, o.is_transport_error);
	expect_int("is_timeout", false, o.is_timeout);
	expect_int("status without a response", 0, o.status);
	if (!o.error || !o.error[0])
		fail_msg("the error text: expected words, got \"%s\"", o.error ? o.error : "(null)");
	if (strstr(o.error, "SECRET-TOKEN") || strstr(o.error, "/bot"))
		fail_msg("the error text quotes the URL: \"%s\"", o.error);
	outcome_free(&o);
}

static void test_a_call_past_its_timeout_is_a_timeout(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	fake_server_queue(f->server, &(struct fake_reply){.is_held = true});
	double t0 = test_now();
	start(f, (struct http_request){.url = url_of(f, "/slow"), .timeout_ms = 200}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the call to time out after 200 ms");
	double took = test_now() - t0;
	expect_int("is_timeout", true, o.is_timeout);
	expect_int("is_transport_error of a timeout", true, o.is_transport_error);
	expect_int("status", 0, o.status);
	if (took < 0.19 || took > 2.0)
		fail_msg("a 200 ms timeout: expected on_done after about 0.2 s, came after %.3f s", took);
	outcome_free(&o);
}

/* A server slow to start (a local model loading its weights) is waited for: the stall limit counts from its
 * first byte. */
static void test_a_slow_first_byte_is_not_a_stall(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	fake_server_queue(f->server, &(struct fake_reply){.delay_ms = 2500,
	                                                  .pieces = {"data: a\n\n", "data: b\n\n"},
	                                                  .piece_gap_ms = 300});
	start(f, (struct http_request){.url = url_of(f, "/loading"), .stall_s = 1, .on_data = on_data}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the call to finish after its late start");
	expect_int("is_timeout of a late but steady answer", false, o.is_timeout);
	expect_int("status", 200, o.status);
	expect_str("the streamed body", "data: a\n\ndata: b\n\n", buf_str(&o.data));
	outcome_free(&o);
}

/* Silence after the answer has begun is a stall: the call ends as a timeout, with what came before delivered.
 */
static void test_silence_after_the_first_byte_is_a_stall(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	fake_server_queue(f->server, &(struct fake_reply){.pieces = {"data: a\n\n", "data: never\n\n"},
	                                                  .piece_gap_ms = 30000});
	double t0 = test_now();
	start(f, (struct http_request){.url = url_of(f, "/stalls"), .stall_s = 1, .on_data = on_data}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the stalled call to end");
	double took = test_now() - t0;
	expect_int("is_timeout of a stall", true, o.is_timeout);
	expect_str("what came before the stall", "data: a\n\n", buf_str(&o.data));
	if (strstr(o.error, "no data for 1 s") == NULL)
		fail_msg("expected the error to say \"no data for 1 s\", got \"%s\"", o.error);
	if (took < 0.9 || took > 3.5)
		fail_msg("a 1 s stall limit: expected the end after 1-3 s, came after %.3f s", took);
	outcome_free(&o);
}

static void test_a_form_carries_values_and_a_file(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	static const char file_bytes[] = "line one\r\n--not a boundary\0\xff\xfe end";
	char path[] = "/tmp/tgllm-test-form-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, file_bytes, sizeof file_bytes - 1), (ssize_t)(sizeof file_bytes - 1));
	close(fd);
	const struct http_form_field form[] = {
	    {.name = "chat_id", .data = "42", .len = 2},
	    {.name = "caption", .data = "a \"caption\"\nwith lines", .len = 22},
	    {.name = "document", .path = path, .filename = "notes.txt", .type = "text/plain"},
	};
	start(f, (struct http_request){.url = url_of(f, "/upload"), .form = form, .n_form = 3}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the upload to finish");
	unlink(path);

	const struct fake_request *r = fake_server_request(f->server, 0);
	expect_str("the form's method", "POST", r->method);
	struct fake_form_field field;
	if (!fake_request_form_field(r, "chat_id", &field))
		fail_msg("the field chat_id: expected in the form, got none (Content-Type %s)",
		         fake_request_header(r, "Content-Type"));
	char *chat_id = dup_bytes(field.data, field.len);
	expect_str("chat_id", "42", chat_id);
	free(chat_id);
	expect_str("chat_id's filename", "", field.filename);
	if (!fake_request_form_field(r, "caption", &field))
		fail_msg("the field caption: expected in the form, got none");
	char *caption = dup_bytes(field.data, field.len);
	expect_str("caption", "a \"caption\"\nwith lines", caption);
	free(caption);
	if (!fake_request_form_field(r, "document", &field))
		fail_msg("the file document: expected in the form, got none");
	expect_str("the file's name", "notes.txt", field.filename);
	expect_str("the file's type", "text/plain", field.type);
	expect_int("the file's length", sizeof file_bytes - 1, field.len);
	if (memcmp(field.data, file_bytes, field.len) != 0)
		fail_msg("the file's bytes at the server differ from the file's");
	outcome_free(&o);
}

static void test_callbacks_never_run_inside_http_start(void **state)
{
	struct fixture *f = *state;
	struct outcome refused, served;
	outcome_init(&refused, f);
	outcome_init(&served, f);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/", dead_port(&f->loop));
	start(f, (struct http_request){.url = url}, &refused);
	start(f, (struct http_request){.url = url_of(f, "/now")}, &served);
	expect_int("calls finished inside http_start", 0, refused.n_done + served.n_done);
	WAIT_FOR(&f->loop, refused.n_done == 1 && served.n_done == 1, "both calls to finish");
	expect_int("the refused call's callback ran inside http_start", false, refused.was_in_start);
	expect_int("the served call's callback ran inside http_start", false, served.was_in_start);

	/* A scheme curl may not use fails on the loop too, or not at all. */
	struct outcome ftp;
	outcome_init(&ftp, f);
	f->is_in_start = true;
	struct http_call *call = http_start(
	    f->http, &(struct http_request){
	                 .url = "ftp://127.0.0.1:1/x", .max_body = 100, .on_done = on_done, .arg = &ftp});
	f->is_in_start = false;
	expect_int("calls finished inside http_start (ftp://)", 0, ftp.n_done);
	if (call) {
		WAIT_FOR(&f->loop, ftp.n_done == 1, "the ftp:// call to fail");
		expect_int("the ftp:// call's callback ran inside http_start", false, ftp.was_in_start);
		expect_int("an ftp:// URL is a transport error", true, ftp.is_transport_error);
	}
	outcome_free(&refused);
	outcome_free(&served);
	outcome_free(&ftp);
}

static void test_a_cancelled_call_never_calls_back(void **state)
{
	struct fixture *f = *state;
	struct outcome held, at_once;
	outcome_init(&held, f);
	outcome_init(&at_once, f);
	fake_server_queue(f->server, &(struct fake_reply){.is_held = true, .body = "too late"});
	struct http_call *call = start(f, (struct http_request){.url = url_of(f, "/held")}, &held);
	WAIT_FOR(&f->loop, fake_server_count(f->server) == 1, "the request at the server");
	http_cancel(call);
	WAIT_FOR(&f->loop, fake_server_request(f->server, 0)->is_abandoned,
	         "the cancelled call's connection to close (it stayed open: the call goes on)");
	fake_server_release_all(f->server);

	/* Cancelled before it even went out. */
	http_cancel(start(f, (struct http_request){.url = url_of(f, "/never")}, &at_once));
	fake_server_sync(f->server);
	expect_int("callbacks of the call cancelled at the server", 0, held.n_done);
	expect_int("callbacks of the call cancelled at once", 0, at_once.n_done);
	expect_int("requests at the server", 1, (long long)fake_server_count(f->server));
	outcome_free(&held);
	outcome_free(&at_once);
}

/* ---- a request sent at most once ---- */

/*
 * A POST on a connection the server keeps open after a first exchange, then
 * the server's reply to it (closed or reset without an answer, from the
 * queue), then whatever comes next; the second request has gone when this
 * returns.
 */
static void post_on_a_reused_connection(struct fixture *f, const struct fake_reply *broken,
                                        bool is_at_most_once, struct outcome *o)
{
	struct outcome first;
	outcome_init(&first, f);
	fake_server_queue(f->server, &(struct fake_reply){.body = "first"});
	start(f, (struct http_request){.url = url_of(f, "/first"), .body = "1", .body_len = 1}, &first);
	WAIT_FOR(&f->loop, first.n_done == 1, "the first exchange");
	expect_int("the first exchange's status", 200, first.status);
	outcome_free(&first);
	fake_server_queue(f->server, broken);
	fake_server_queue(f->server, &(struct fake_reply){.body = "second"});
	start(
	    f,
	    (struct http_request){
	        .url = url_of(f, "/create"), .body = "2", .body_len = 1, .is_at_most_once = is_at_most_once},
	    o);
	WAIT_FOR(&f->loop, o->n_done == 1, "the request on the reused connection to finish");
	fake_server_sync(f->server);
	const struct fake_request *r0 = fake_server_request(f->server, 0),
	                          *r1 = fake_server_request(f->server, 1);
	if (!r1 || r0->client_port != r1->client_port)
		fail_msg(
		    "the second request: expected on the first one's connection (port %d), came on port %d",
		    r0->client_port, r1 ? r1->client_port : -1);
}

/* Why the flag exists: libcurl itself sends a request again when a reused connection dies unanswered. */
static void test_libcurl_resends_a_request_whose_reused_connection_died(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	post_on_a_reused_connection(f, &(struct fake_reply){.is_closed = true}, false, &o);
	expect_int("requests at the server (the first, the dropped one, libcurl's resend)", 3,
	           (long long)fake_server_count(f->server));
	expect_int("status of the resent request", 200, o.status);
	outcome_free(&o);
}

static void expect_not_sent_again(struct fixture *f, const struct outcome *o, const char *how)
{
	if (fake_server_count(f->server) != 2)
		fail_msg(
		    "an is_at_most_once request %s on a reused connection: expected it to reach the server "
		    "once (2 requests in all), got %zu requests (status %ld)",
		    how, fake_server_count(f->server), o->status);
	expect_int("is_transport_error", true, o->is_transport_error);
	expect_int("has_sent_request (it may have been delivered)", true, o->has_sent_request);
	expect_int("status", 0, o->status);
	if (!o->error || !o->error[0])
		fail_msg("the error text: expected words, got \"%s\"", o->error ? o->error : "(null)");
}

static void
test_an_at_most_once_request_closed_unanswered_on_a_reused_connection_is_not_sent_again(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	post_on_a_reused_connection(f, &(struct fake_reply){.is_closed = true}, true, &o);
	expect_not_sent_again(f, &o, "closed unanswered");
	outcome_free(&o);
}

static void test_an_at_most_once_request_reset_on_a_reused_connection_is_not_sent_again(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	post_on_a_reused_connection(f, &(struct fake_reply){.is_reset = true}, true, &o);
	expect_not_sent_again(f, &o, "reset unanswered");
	outcome_free(&o);
}

/* Nothing went out: the server surely did not take it. */
static void test_a_refused_connection_has_sent_no_request(void **state)
{
	struct fixture *f = *state;
	struct outcome o;
	outcome_init(&o, f);
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/create", dead_port(&f->loop));
	start(f, (struct http_request){.url = url, .body = "1", .body_len = 1, .is_at_most_once = true}, &o);
	WAIT_FOR(&f->loop, o.n_done == 1, "the refused call to finish");
	expect_int("is_transport_error", true, o.is_transport_error);
	expect_int("has_sent_request of a refused connection", false, o.has_sent_request);
	outcome_free(&o);
}

int main(void)
{
	test_net_init();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_a_get_and_a_post_make_a_round_trip),
	    T(test_the_method_is_sent_as_given),
	    T(test_a_body_over_max_body_is_too_big),
	    T(test_a_body_over_max_body_stops_the_transfer),
	    T(test_a_2xx_body_streams_to_on_data_in_pieces),
	    T(test_a_non_2xx_body_is_buffered_for_on_done),
	    T(test_on_data_returning_non_zero_aborts),
	    T(test_kept_headers_come_back_in_the_order_asked),
	    T(test_a_kept_retry_after_comes_back_too),
	    T(test_retry_after_in_seconds_is_read),
	    T(test_an_absurd_retry_after_is_clamped_to_a_day),
	    T(test_retry_after_as_an_http_date_is_seconds_from_now),
	    T(test_a_refused_connection_is_a_transport_error_without_the_url),
	    T(test_a_call_past_its_timeout_is_a_timeout),
	    T(test_a_slow_first_byte_is_not_a_stall),
	    T(test_silence_after_the_first_byte_is_a_stall),
	    T(test_a_form_carries_values_and_a_file),
	    T(test_callbacks_never_run_inside_http_start),
	    T(test_a_cancelled_call_never_calls_back),
	    T(test_libcurl_resends_a_request_whose_reused_connection_died),
	    T(test_an_at_most_once_request_closed_unanswered_on_a_reused_connection_is_not_sent_again),
	    T(test_an_at_most_once_request_reset_on_a_reused_connection_is_not_sent_again),
	    T(test_a_refused_connection_has_sent_no_request),
	};
#undef T
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_net_cleanup();
	return failed;
}
