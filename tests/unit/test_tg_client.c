/*
 * Unit tests for the Bot API client of src/telegram/tg.c (its answer
 * decoder has test_tg.c): calls, retries and pacing, against a fake
 * Telegram on the test's event loop (support/fake_http.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_http.h"
#include "lib/http.h"
#include "lib/log.h"
#include "loop.h"
#include "telegram/tg.h"

#include "expect.h"

#define TOKEN     "123456:TEST-token"
#define NO_PACING ((struct tg_pacing){0, 0, 0})

/* Telegram's answers. */
#define SENT(id)    "{\"ok\":true,\"result\":{\"message_id\":" #id ",\"chat\":{\"id\":42,\"type\":\"private\"}}}"
#define TRUE_ANSWER "{\"ok\":true,\"result\":true}"
#define FLOOD_WAIT_1S                                                                                        \
	"{\"ok\":false,\"error_code\":429,\"description\":\"Too Many Requests: retry after 1\","             \
	"\"parameters\":{\"retry_after\":1}}"
/* A proxy in front of the Bot API answers 5xx in HTML. */
#define BAD_GATEWAY "<html><body><h1>502 Bad Gateway</h1></body></html>"

struct fixture {
	struct test_loop loop;
	struct fake_server *server;
	struct http_client *http;
	struct tg_client *tg;
	struct fake_server *late; /* a server that comes up after the first attempt failed */
	int late_port;
	struct event *late_timer;
};

/* What a call's done saw, copied: the result is borrowed for the callback only. */
struct result {
	int n_done;
	bool ok;
	long error_code;
	char description[256];
	int64_t message_id;
	bool is_maybe_delivered;
	char *result_json; /* the result tree, dumped; NULL when there was none */
	double at;
};

static void use_tg(struct fixture *f, const char *api_base, struct tg_pacing pacing)
{
	tg_client_free(f->tg);
	f->tg = tg_client_new(f->loop.base, f->http, api_base, TOKEN, &pacing);
	assert_non_null(f->tg);
}

/* Telegram's answer to what a test did not script. */
static void answer_true(void *arg, const struct fake_request *req, struct fake_reply *reply)
{
	(void)arg;
	(void)req;
	reply->body = TRUE_ANSWER;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	if (!f || test_loop_init(&f->loop, TEST_LOOP_BUDGET_S) != 0)
		return -1;
	f->server = fake_server_new(&f->loop, 0);
	f->http = http_client_new(f->loop.base);
	if (!f->server || !f->http)
		return -1;
	fake_server_set_handler(f->server, answer_true, NULL);
	struct tg_pacing none = NO_PACING;
	f->tg = tg_client_new(f->loop.base, f->http, fake_server_url(f->server), TOKEN, &none);
	*state = f;
	return f->tg ? 0 : -1;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	tg_client_free(f->tg);
	http_client_free(f->http);
	fake_server_free(f->server);
	fake_server_free(f->late);
	if (f->late_timer)
		event_free(f->late_timer);
	test_loop_free(&f->loop);
	free(f);
	return 0;
}

static void on_done(void *arg, const struct tg_result *res)
{
	struct result *r = arg;
	r->n_done++;
	r->ok = res->ok;
	r->error_code = res->error_code;
	snprintf(r->description, sizeof r->description, "%s", res->description ? res->description : "(null)");
	r->message_id = res->message_id;
	r->is_maybe_delivered = res->is_maybe_delivered;
	free(r->result_json);
	r->result_json = res->result ? json_dumps(res->result, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
	r->at = test_now();
}

static struct tg_call *call(struct fixture *f, const char *method, const char *params, int64_t chat_id,
                            unsigned flags, struct result *r)
{
	struct tg_call *c =
	    tg_call(f->tg, method, params ? strdup(params) : NULL, chat_id, flags, 5, on_done, r);
	if (!c)
		fail_msg("tg_call refused %s", method);
	return c;
}

/* A call that writes to chat_id, its body naming the chat, as the senders' do. */
static struct tg_call *send_to(struct fixture *f, int64_t chat_id, const char *text, unsigned flags,
                               struct result *r)
{
	char params[128];
	snprintf(params, sizeof params, "{\"chat_id\":%lld,\"text\":\"%s\"}", (long long)chat_id, text);
	return call(f, "sendMessage", params, chat_id, flags, r);
}

/* The request whose body carries "text":"<text>"; fails the test when none came. */
static const struct fake_request *request_with_text(struct fake_server *s, const char *text)
{
	char needle[64];
	snprintf(needle, sizeof needle, "\"text\":\"%s\"", text);
	for (size_t i = 0; i < fake_server_count(s); i++)
		if (strstr(fake_server_request(s, i)->body, needle))
			return fake_server_request(s, i);
	fail_msg("a request with the text \"%s\": expected at the server, none came", text);
	return NULL;
}

static size_t requests_with_text(struct fake_server *s, const char *text)
{
	char needle[64];
	size_t n = 0;
	snprintf(needle, sizeof needle, "\"text\":\"%s\"", text);
	for (size_t i = 0; i < fake_server_count(s); i++)
		n += strstr(fake_server_request(s, i)->body, needle) != NULL;
	return n;
}

/* Every call of a list finished well. */
static void expect_ok(const char *what, const struct result *r)
{
	if (r->n_done != 1)
		fail_msg("%s: expected one callback, got %d", what, r->n_done);
	if (!r->ok)
		fail_msg("%s: expected ok, got %ld %s", what, r->error_code, r->description);
}

static void expect_gap_at_least(const char *what, double seconds, const struct fake_request *a,
                                const struct fake_request *b)
{
	/*
	 * The times are the requests' arrivals at the fake, which a busy machine
	 * (ASan, CI) delays unevenly: a new connection's first request can land
	 * 15 ms late. A tenth of the interval of slack still fails a call that
	 * is not spaced at all.
	 */
	if (b->at - a->at < seconds * 0.9)
		fail_msg("%s: expected at least %.3f s between them, came %.3f s apart", what, seconds,
		         b->at - a->at);
}

static void expect_gap_below(const char *what, double seconds, const struct fake_request *a,
                             const struct fake_request *b)
{
	double gap = b->at > a->at ? b->at - a->at : a->at - b->at;
	if (gap >= seconds)
		fail_msg("%s: expected less than %.3f s between them, came %.3f s apart", what, seconds, gap);
}

static int dead_port(struct test_loop *loop)
{
	struct fake_server *s = fake_server_new(loop, 0);
	assert_non_null(s);
	int port = fake_server_port(s);
	fake_server_free(s);
	return port;
}

/* ---- calls and answers ---- */

static void test_a_call_posts_its_json_to_bot_token_method(void **state)
{
	struct fixture *f = *state;
	struct result r = {0}, empty = {0};
	static const char params[] = "{\"chat_id\":42,\"text\":\"h\\u00e9llo \\\"you\\\"\"}";
	fake_server_queue(f->server, &(struct fake_reply){.body = SENT(4217)});
	call(f, "sendMessage", params, 42, 0, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "sendMessage to finish");

	const struct fake_request *q = fake_server_request(f->server, 0);
	expect_str("the method", "POST", q->method);
	expect_str("the URL's path", "/bot" TOKEN "/sendMessage", q->uri);
	expect_str("the Content-Type", "application/json", fake_request_header(q, "Content-Type"));
	expect_str("the body", params, q->body);
	expect_int("ok", true, r.ok);
	expect_int("message_id of the sent message", 4217, r.message_id);
	expect_str("description of a success", "", r.description);

	/* No parameters: an empty object. */
	fake_server_queue(f->server, &(struct fake_reply){.body = TRUE_ANSWER});
	call(f, "deleteWebhook", NULL, 0, 0, &empty);
	WAIT_FOR(&f->loop, empty.n_done == 1, "deleteWebhook to finish");
	expect_str("the body of a call without parameters", "{}", fake_server_request(f->server, 1)->body);
	expect_int("ok of \"result\":true", true, empty.ok);
	expect_null("the result tree of \"result\":true", empty.result_json);
}

static void test_the_result_of_get_me_is_a_tree(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	fake_server_queue(f->server,
	                  &(struct fake_reply){.body = "{\"ok\": true, \"result\": {\"id\": 7000000001, "
	                                               "\"is_bot\": true, \"username\": \"tgllm_bot\"}}"});
	call(f, "getMe", NULL, 0, 0, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "getMe to finish");
	expect_int("ok", true, r.ok);
	expect_str("getMe's result", "{\"id\":7000000001,\"is_bot\":true,\"username\":\"tgllm_bot\"}",
	           r.result_json);
	free(r.result_json);
}

static void test_a_bot_api_error_is_reported_and_not_retried(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	fake_server_queue(f->server,
	                  &(struct fake_reply){.status = 400,
	                                       .body = "{\"ok\":false,\"error_code\":400,"
	                                               "\"description\":\"Bad Request: chat not found\"}"});
	send_to(f, 42, "x", 0, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the call to fail");
	expect_int("ok", false, r.ok);
	expect_int("error_code", 400, r.error_code);
	expect_str("description", "Bad Request: chat not found", r.description);
	fake_server_sync(f->server);
	expect_int("requests for a 400", 1, (long long)fake_server_count(f->server));
}

/* ---- retries ---- */

static void test_a_5xx_is_retried_then_succeeds(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	fake_server_queue(f->server, &(struct fake_reply){.status = 502, .body = BAD_GATEWAY});
	fake_server_queue(f->server, &(struct fake_reply){.body = SENT(7)});
	send_to(f, 42, "again", 0, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the call to succeed on its second attempt (requests: %zu)",
	         fake_server_count(f->server));
	expect_int("requests", 2, (long long)fake_server_count(f->server));
	expect_int("ok after the retry", true, r.ok);
	expect_int("message_id", 7, r.message_id);
	const struct fake_request *first = fake_server_request(f->server, 0),
	                          *second = fake_server_request(f->server, 1);
	expect_str("the repeated body", first->body, second->body);
	expect_gap_at_least("the 502 and its retry (backoff)", 1.0, first, second);
}

static void test_a_429_is_waited_out_and_sent_once_more(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	fake_server_queue(f->server, &(struct fake_reply){.status = 429, .body = FLOOD_WAIT_1S});
	fake_server_queue(f->server, &(struct fake_reply){.body = SENT(8)});
	send_to(f, 42, "flood", 0, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the call to succeed after the flood wait (requests: %zu)",
	         fake_server_count(f->server));
	expect_int("requests", 2, (long long)fake_server_count(f->server));
	expect_int("ok after waiting", true, r.ok);
	expect_int("message_id", 8, r.message_id);
	const struct fake_request *first = fake_server_request(f->server, 0),
	                          *second = fake_server_request(f->server, 1);
	expect_str("the repeated body", first->body, second->body);
	expect_gap_at_least("the 429 and the call sent again (retry_after 1)", 1.0, first, second);
}

/* A frame that meets a 5xx is not tried again: the final message must not wait behind its retries. */
static void test_a_droppable_call_hit_by_a_5xx_fails_at_once(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	fake_server_queue(f->server,
	                  &(struct fake_reply){.status = 500,
	                                       .body = "{\"ok\":false,\"error_code\":500,"
	                                               "\"description\":\"Internal Server Error\"}"});
	fake_server_queue(f->server, &(struct fake_reply){.body = SENT(9)});
	send_to(f, 42, "frame", TG_CALL_DROPPABLE, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the droppable call to finish (requests: %zu)",
	         fake_server_count(f->server));
	expect_int("ok of a droppable call hit by 500", false, r.ok);
	expect_int("error_code", 500, r.error_code);
	fake_server_sync(f->server);
	expect_int("requests", 1, (long long)fake_server_count(f->server));
}

static void test_a_droppable_call_hit_by_429_fails_and_pauses_its_chat(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	fake_server_queue(f->server, &(struct fake_reply){.status = 429, .body = FLOOD_WAIT_1S});
	fake_server_queue(f->server, &(struct fake_reply){.body = SENT(9)});
	send_to(f, 42, "frame", TG_CALL_DROPPABLE, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the droppable call to finish (requests: %zu)",
	         fake_server_count(f->server));
	expect_int("ok of a droppable call hit by 429", false, r.ok);
	expect_int("error_code", 429, r.error_code);
	expect_int("requests", 1, (long long)fake_server_count(f->server));
	double wait = tg_chat_wait(f->tg, 42, "sendMessage");
	if (wait < 0.5 || wait > 1.0)
		fail_msg("tg_chat_wait of the chat a 429 paused for 1 s: expected 0.5..1.0 s, got %.3f s",
		         wait);
	expect_int("tg_chat_wait of another chat (ms)", 0,
	           (long long)(tg_chat_wait(f->tg, 43, "sendMessage") * 1000));
}

/* A retry_after beyond what is worth waiting drops the call, and pauses its chat no longer than that. */
static void test_an_absurd_retry_after_fails_the_call_and_pauses_the_chat_an_hour_at_most(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	fake_server_queue(f->server,
	                  &(struct fake_reply){.status = 429,
	                                       .body = "{\"ok\":false,\"error_code\":429,\"description\":"
	                                               "\"Too Many Requests\",\"parameters\":"
	                                               "{\"retry_after\":9223372036854775807}}"});
	send_to(f, 42, "hello", 0, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the call to finish (requests: %zu)", fake_server_count(f->server));
	expect_int("ok of a call told to wait INT64_MAX s", false, r.ok);
	expect_int("error_code", 429, r.error_code);
	expect_int("requests", 1, (long long)fake_server_count(f->server));
	double wait = tg_chat_wait(f->tg, 42, "sendMessage");
	if (wait < 3590 || wait > 3600)
		fail_msg(
		    "tg_chat_wait of the chat told to wait INT64_MAX s: expected about an hour, got %.0f s",
		    wait);
}

static void test_a_once_call_is_not_retried_after_a_5xx(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	fake_server_queue(
	    f->server,
	    &(struct fake_reply){
	        .status = 500,
	        .body = "{\"ok\":false,\"error_code\":500,\"description\":\"Internal Server Error\"}"});
	fake_server_queue(f->server, &(struct fake_reply){.body = TRUE_ANSWER});
	call(f, "setWebhook", "{\"url\":\"https://example.org/hook\"}", 0, TG_CALL_ONCE, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the call to fail");
	expect_int("ok", false, r.ok);
	expect_int("error_code", 500, r.error_code);
	fake_server_sync(f->server);
	expect_int("requests of a TG_CALL_ONCE call after a 500", 1, (long long)fake_server_count(f->server));
}

static void test_a_once_call_is_not_retried_when_the_connection_fails(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	char base[64];
	snprintf(base, sizeof base, "http://127.0.0.1:%d", dead_port(&f->loop));
	use_tg(f, base, NO_PACING);
	double t0 = test_now();
	call(f, "getMe", NULL, 0, TG_CALL_ONCE, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the refused call to fail");
	expect_int("ok", false, r.ok);
	expect_int("error_code of a transport error", 0, r.error_code);
	if (!r.description[0] || strstr(r.description, TOKEN))
		fail_msg("the description: expected the transport error without the token, got \"%s\"",
		         r.description);
	/* A retry would wait 1 s first. */
	if (r.at - t0 > 0.5)
		fail_msg(
		    "a TG_CALL_ONCE call to a closed port: expected to fail at once, failed after %.3f s",
		    r.at - t0);
}

static void on_late_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct fixture *f = arg;
	f->late = fake_server_new(&f->loop, f->late_port);
	if (f->late)
		fake_server_queue(f->late, &(struct fake_reply){.body = SENT(12)});
}

static void test_a_connection_that_cannot_be_made_is_retried(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	f->late_port = dead_port(&f->loop);
	char base[64];
	snprintf(base, sizeof base, "http://127.0.0.1:%d", f->late_port);
	use_tg(f, base, NO_PACING);
	/*
	 * The first attempt finds nothing listening (it fails within
	 * milliseconds); the server comes up 0.3 s later, well before the
	 * retry that a 1 s backoff puts off.
	 */
	f->late_timer = evtimer_new(f->loop.base, on_late_timer, f);
	struct timeval in_300_ms = {0, 300000};
	evtimer_add(f->late_timer, &in_300_ms);
	double t0 = test_now();
	send_to(f, 42, "late", 0, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the call to reach the late server (server up: %s)",
	         f->late ? "yes" : "no");
	if (!r.ok)
		fail_msg("the call: expected ok once a retry reached the server, got %ld \"%s\" after %.3f s "
		         "(server "
		         "up: %s)",
		         r.error_code, r.description, r.at - t0, f->late ? "yes" : "no");
	if (!f->late)
		fail_msg("the late server could not listen on port %d again", f->late_port);
	expect_int("requests at the late server", 1, (long long)fake_server_count(f->late));
	expect_gap_at_least("the call and its arrival after a failed connection (backoff)", 1.0,
	                    &(struct fake_request){.at = t0}, fake_server_request(f->late, 0));
}

/*
 * tg.h promises that a request that may have reached Telegram and got no
 * answer is not repeated, so a message is never sent twice: a server that
 * read the whole request and closed the connection without answering
 * (curl: "Empty reply from server") may have sent the message.
 */
static void test_a_request_the_server_dropped_unanswered_is_not_repeated(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	fake_server_queue(f->server, &(struct fake_reply){.is_closed = true});
	fake_server_queue(f->server, &(struct fake_reply){.body = SENT(10)});
	send_to(f, 42, "maybe delivered", 0, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the call to finish (requests: %zu)", fake_server_count(f->server));
	expect_int("requests of a sendMessage the server read and dropped", 1,
	           (long long)fake_server_count(f->server));
	expect_int("ok", false, r.ok);
	expect_int("is_maybe_delivered", true, r.is_maybe_delivered);
}

/* ---- a message is sent at most once (issue 13, item 7) ---- */

/* The log's lines while a test runs: stderr into a file. */
struct captured_log {
	FILE *file;
	int saved_stderr;
};

static void capture_log(struct captured_log *c)
{
	fflush(stderr);
	c->file = tmpfile();
	c->saved_stderr = dup(STDERR_FILENO);
	if (!c->file || c->saved_stderr < 0 || dup2(fileno(c->file), STDERR_FILENO) < 0)
		fail_msg("cannot capture the log");
	log_set_level(LOG_LEVEL_WARN);
}

/* What was logged (the caller frees it); stderr is the test's own again. */
static char *captured_text(struct captured_log *c)
{
	fflush(stderr);
	dup2(c->saved_stderr, STDERR_FILENO);
	close(c->saved_stderr);
	log_set_level(LOG_LEVEL_ERROR);
	long len = ftell(c->file);
	char *text = calloc(1, (size_t)(len > 0 ? len : 0) + 1);
	assert_non_null(text);
	rewind(c->file);
	if (len > 0 && fread(text, 1, (size_t)len, c->file) != (size_t)len)
		fail_msg("cannot read the captured log");
	fclose(c->file);
	return text;
}

/*
 * A sendMessage that Telegram read and then lost the connection of, without
 * an answer: exactly one reaches the server, the call fails as maybe
 * delivered, and the log says why it was not sent again. is_reused: on a
 * connection an earlier call left open (libcurl would resend on its own).
 */
static void expect_message_sent_once(struct fixture *f, const struct fake_reply *broken, bool is_reused)
{
	struct result warm = {0}, r = {0};
	if (is_reused) {
		call(f, "getMe", NULL, 0, 0, &warm);
		WAIT_FOR(&f->loop, warm.n_done == 1, "getMe to open the connection");
		expect_ok("getMe", &warm);
	}
	size_t before = fake_server_count(f->server);
	fake_server_queue(f->server, broken);
	fake_server_queue(f->server, &(struct fake_reply){.body = SENT(10)});
	struct captured_log log;
	capture_log(&log);
	send_to(f, 42, "once", 0, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the call to finish (requests: %zu)", fake_server_count(f->server));
	fake_server_sync(f->server);
	char *text = captured_text(&log);
	if (is_reused && fake_server_request(f->server, 0)->client_port !=
	                     fake_server_request(f->server, before)->client_port)
		fail_msg("sendMessage: expected on getMe's connection, came on a new one");
	expect_int("sendMessages at the server", 1, (long long)requests_with_text(f->server, "once"));
	expect_int("ok", false, r.ok);
	expect_int("is_maybe_delivered", true, r.is_maybe_delivered);
	if (!strstr(text, "sendMessage") ||
	    !strstr(text, "may have reached Telegram, so it is not sent again"))
		fail_msg(
		    "the log: expected a line saying the sendMessage may have reached Telegram and is not "
		    "sent again, got:\n%s",
		    text);
	free(text);
}

static void test_a_message_reset_after_telegram_read_it_is_not_sent_again(void **state)
{
	expect_message_sent_once(*state, &(struct fake_reply){.is_reset = true}, false);
}

static void test_a_message_reset_on_a_reused_connection_is_not_sent_again(void **state)
{
	expect_message_sent_once(*state, &(struct fake_reply){.is_reset = true}, true);
}

static void test_a_message_dropped_unanswered_on_a_reused_connection_is_not_sent_again(void **state)
{
	expect_message_sent_once(*state, &(struct fake_reply){.is_closed = true}, true);
}

/* An edit changes nothing when it arrives twice: it is repeated after a reset. */
static void test_an_edit_reset_after_telegram_read_it_is_sent_again(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	fake_server_queue(f->server, &(struct fake_reply){.is_reset = true});
	fake_server_queue(f->server, &(struct fake_reply){.body = SENT(10)});
	call(f, "editMessageText", "{\"chat_id\":42,\"message_id\":10,\"text\":\"again\"}", 42, 0, &r);
	WAIT_FOR(&f->loop, r.n_done == 1, "the edit to finish (requests: %zu)", fake_server_count(f->server));
	expect_ok("an edit reset once", &r);
	expect_int("editMessageText requests", 2, (long long)fake_server_count(f->server));
}

/*
 * A 429 pauses its whole chat for retry_after: also a call that took its
 * chat's slot before the 429 came waits (Telegram lengthens flood waits
 * that are not obeyed).
 */
static void test_a_429_pauses_calls_already_waiting_for_the_chat(void **state)
{
	struct fixture *f = *state;
	struct result frame = {0}, part = {0};
	use_tg(f, fake_server_url(f->server), (struct tg_pacing){.private_s = 0.2});
	fake_server_queue(f->server, &(struct fake_reply){.status = 429, .body = FLOOD_WAIT_1S});
	send_to(f, 42, "frame", TG_CALL_DROPPABLE, &frame);
	send_to(f, 42, "part", 0, &part); /* its slot: 0.2 s after the frame's */
	WAIT_FOR(&f->loop, frame.n_done && part.n_done, "both calls to finish");
	expect_int("the frame's error_code", 429, frame.error_code);
	expect_ok("the call after the frame", &part);
	expect_gap_at_least("the 429 and the next call to its chat (retry_after 1)", 1.0,
	                    request_with_text(f->server, "frame"), request_with_text(f->server, "part"));
}

/* ---- pacing ---- */

static void test_calls_to_one_private_chat_are_spaced_and_other_chats_go_on(void **state)
{
	struct fixture *f = *state;
	struct result a = {0}, b = {0}, c = {0};
	use_tg(f, fake_server_url(f->server), (struct tg_pacing){.private_s = 0.2});
	send_to(f, 1, "a", 0, &a);
	send_to(f, 1, "b", 0, &b);
	send_to(f, 2, "c", 0, &c);
	WAIT_FOR(&f->loop, a.n_done && b.n_done && c.n_done, "the three calls to finish");
	expect_ok("call a", &a);
	expect_ok("call b", &b);
	expect_ok("call c", &c);
	const struct fake_request *ra = request_with_text(f->server, "a"),
	                          *rb = request_with_text(f->server, "b"),
	                          *rc = request_with_text(f->server, "c");
	expect_gap_at_least("two calls to private chat 1 (private_s 0.2)", 0.2, ra, rb);
	expect_gap_below("the first call to chat 1 and a call to chat 2 made after the second", 0.1, ra, rc);
}

static void test_calls_to_a_group_are_spaced_by_group_s(void **state)
{
	struct fixture *f = *state;
	struct result g1 = {0}, g2 = {0}, p1 = {0}, p2 = {0};
	use_tg(f, fake_server_url(f->server), (struct tg_pacing){.private_s = 0.05, .group_s = 0.3});
	send_to(f, -1001234567890, "g1", 0, &g1);
	send_to(f, -1001234567890, "g2", 0, &g2);
	send_to(f, 5, "p1", 0, &p1);
	send_to(f, 5, "p2", 0, &p2);
	WAIT_FOR(&f->loop, g1.n_done && g2.n_done && p1.n_done && p2.n_done, "the four calls to finish");
	expect_ok("call g1", &g1);
	expect_ok("call g2", &g2);
	expect_ok("call p1", &p1);
	expect_ok("call p2", &p2);
	expect_gap_at_least("two calls to a group (group_s 0.3)", 0.3, request_with_text(f->server, "g1"),
	                    request_with_text(f->server, "g2"));
	expect_gap_below("two calls to a private chat (private_s 0.05)", 0.2,
	                 request_with_text(f->server, "p1"), request_with_text(f->server, "p2"));
}

static void test_global_s_spaces_calls_to_different_chats(void **state)
{
	struct fixture *f = *state;
	struct result a = {0}, b = {0};
	use_tg(f, fake_server_url(f->server), (struct tg_pacing){.global_s = 0.2});
	send_to(f, 1, "one", 0, &a);
	send_to(f, 2, "two", 0, &b);
	WAIT_FOR(&f->loop, a.n_done && b.n_done, "both calls to finish");
	expect_ok("call one", &a);
	expect_ok("call two", &b);
	expect_gap_at_least("calls to two chats (global_s 0.2)", 0.2, request_with_text(f->server, "one"),
	                    request_with_text(f->server, "two"));
}

static void test_chat_actions_and_chatless_calls_are_not_paced(void **state)
{
	struct fixture *f = *state;
	struct result t1 = {0}, t2 = {0}, m1 = {0}, m2 = {0};
	use_tg(f, fake_server_url(f->server), (struct tg_pacing){0.5, 0.5, 0.5});
	call(f, "sendChatAction", "{\"chat_id\":1,\"action\":\"typing\",\"text\":\"t1\"}", 1, 0, &t1);
	call(f, "sendChatAction", "{\"chat_id\":1,\"action\":\"typing\",\"text\":\"t2\"}", 1, 0, &t2);
	call(f, "getMe", "{\"text\":\"m1\"}", 0, 0, &m1);
	call(f, "getMe", "{\"text\":\"m2\"}", 0, 0, &m2);
	WAIT_FOR(&f->loop, t1.n_done && t2.n_done && m1.n_done && m2.n_done, "the four calls to finish");
	expect_ok("call t1", &t1);
	expect_ok("call t2", &t2);
	expect_ok("call m1", &m1);
	expect_ok("call m2", &m2);
	expect_gap_below("two sendChatAction to one chat (all pacing 0.5 s)", 0.3,
	                 request_with_text(f->server, "t1"), request_with_text(f->server, "t2"));
	expect_gap_below("two getMe (chat 0)", 0.3, request_with_text(f->server, "m1"),
	                 request_with_text(f->server, "m2"));
	expect_int("tg_chat_wait of chat 1 after chat actions only (ms)", 0,
	           (long long)(tg_chat_wait(f->tg, 1, "sendMessage") * 1000));
}

/*
 * Telegram's one message a second per chat is about messages: a draft takes
 * a slot of its own, so the message that ends an answer never waits for the
 * draft before it; drafts are spaced among themselves, messages too.
 */
static void test_drafts_and_messages_to_a_chat_are_spaced_apart_from_each_other(void **state)
{
	struct fixture *f = *state;
	struct result d1 = {0}, m1 = {0}, d2 = {0}, m2 = {0};
	use_tg(f, fake_server_url(f->server), (struct tg_pacing){.private_s = 0.5});
	call(f, "sendMessageDraft", "{\"chat_id\":42,\"draft_id\":1,\"text\":\"d1\"}", 42, TG_CALL_DROPPABLE,
	     &d1);
	expect_int("tg_chat_wait for a message after a draft (ms)", 0,
	           (long long)(tg_chat_wait(f->tg, 42, "sendMessage") * 1000));
	send_to(f, 42, "m1", 0, &m1);
	if (tg_chat_wait(f->tg, 42, "sendMessageDraft") < 0.4)
		fail_msg(
		    "tg_chat_wait for a draft after a draft (private_s 0.5): expected 0.4..0.5 s, got %.3f s",
		    tg_chat_wait(f->tg, 42, "sendMessageDraft"));
	call(f, "sendMessageDraft", "{\"chat_id\":42,\"draft_id\":1,\"text\":\"d2\"}", 42, TG_CALL_DROPPABLE,
	     &d2);
	send_to(f, 42, "m2", 0, &m2);
	WAIT_FOR(&f->loop, d1.n_done && m1.n_done && d2.n_done && m2.n_done, "the four calls to finish");
	const struct fake_request *rd1 = request_with_text(f->server, "d1"),
	                          *rm1 = request_with_text(f->server, "m1"),
	                          *rd2 = request_with_text(f->server, "d2"),
	                          *rm2 = request_with_text(f->server, "m2");
	expect_gap_below("a draft and the message after it (no wait for the draft's slot)", 0.2, rd1, rm1);
	expect_gap_at_least("two drafts to one private chat", 0.5, rd1, rd2);
	expect_gap_at_least("two messages to one private chat", 0.5, rm1, rm2);
}

static void test_chat_wait_says_how_long_a_new_call_would_wait(void **state)
{
	struct fixture *f = *state;
	struct result a = {0}, b = {0};
	use_tg(f, fake_server_url(f->server), (struct tg_pacing){.private_s = 0.3});
	expect_int("tg_chat_wait before any call (ms)", 0,
	           (long long)(tg_chat_wait(f->tg, 1, "sendMessage") * 1000));
	send_to(f, 1, "a", 0, &a);
	double wait = tg_chat_wait(f->tg, 1, "sendMessage");
	if (wait < 0.2 || wait > 0.3)
		fail_msg("tg_chat_wait after one call (private_s 0.3): expected 0.2..0.3 s, got %.3f s",
		         wait);
	send_to(f, 1, "b", 0, &b);
	wait = tg_chat_wait(f->tg, 1, "sendMessage");
	if (wait < 0.5 || wait > 0.6)
		fail_msg("tg_chat_wait after two calls (private_s 0.3): expected 0.5..0.6 s, got %.3f s",
		         wait);
	expect_int("tg_chat_wait of another chat (ms)", 0,
	           (long long)(tg_chat_wait(f->tg, 2, "sendMessage") * 1000));
	WAIT_FOR(&f->loop, a.n_done && b.n_done, "both calls to finish");
}

/* ---- requests in flight ---- */

#define N_CALLS 40

static int count_done(const struct result *r, int n)
{
	int done = 0;
	for (int i = 0; i < n; i++)
		done += r[i].n_done;
	return done;
}

static void test_no_more_than_32_requests_are_in_flight(void **state)
{
	struct fixture *f = *state;
	struct result r[N_CALLS] = {{0}};
	/* The first 32 requests are held; later ones are answered at once. */
	for (int i = 0; i < 32; i++)
		fake_server_queue(f->server, &(struct fake_reply){.is_held = true, .body = TRUE_ANSWER});
	for (int i = 0; i < N_CALLS; i++)
		call(f, "getMe", NULL, 0, 0, &r[i]);
	WAIT_FOR(&f->loop, fake_server_count(f->server) >= 32, "32 requests at the server (got %zu)",
	         fake_server_count(f->server));
	fake_server_sync(f->server);
	expect_int("requests at the server while 32 are unanswered", 32,
	           (long long)fake_server_count(f->server));
	expect_int("calls finished while their requests are held", 0, count_done(r, N_CALLS));

	/* Each answer frees a slot for a waiting call. */
	fake_server_release_all(f->server);
	WAIT_FOR(&f->loop, count_done(r, N_CALLS) == N_CALLS, "all %d calls to finish (%d did)", N_CALLS,
	         count_done(r, N_CALLS));
	for (int i = 0; i < N_CALLS; i++)
		if (!r[i].ok)
			fail_msg("call %d: expected ok, got %ld %s", i, r[i].error_code, r[i].description);
	expect_int("requests in all", N_CALLS, (long long)fake_server_count(f->server));
	expect_int("the most requests unanswered at once", 32, (long long)fake_server_max_pending(f->server));
}

/* ---- cancelling ---- */

static void test_a_cancelled_call_never_calls_back(void **state)
{
	struct fixture *f = *state;
	struct result held = {0}, waiting = {0}, first = {0}, after = {0};
	use_tg(f, fake_server_url(f->server), (struct tg_pacing){.private_s = 0.2});

	/* In flight: its request is dropped. */
	fake_server_queue(f->server, &(struct fake_reply){.is_held = true, .body = SENT(1)});
	struct tg_call *c = send_to(f, 7, "held", 0, &held);
	WAIT_FOR(&f->loop, fake_server_count(f->server) == 1, "the held request at the server");
	tg_call_cancel(c);
	WAIT_FOR(&f->loop, fake_server_request(f->server, 0)->is_abandoned,
	         "the cancelled call's connection to close");

	/* Waiting for its chat's slot: it never goes. A later call to the chat shows the wait is over. */
	send_to(f, 8, "first", 0, &first);
	tg_call_cancel(send_to(f, 8, "waiting", 0, &waiting));
	send_to(f, 8, "after", 0, &after);
	WAIT_FOR(&f->loop, first.n_done && after.n_done, "the calls around the cancelled one to finish");
	expect_ok("the call before the cancelled one", &first);
	expect_ok("the call after the cancelled one", &after);
	fake_server_sync(f->server);
	expect_int("callbacks of the call cancelled in flight", 0, held.n_done);
	expect_int("callbacks of the call cancelled while waiting", 0, waiting.n_done);
	expect_int("requests of the call cancelled while waiting", 0,
	           (long long)requests_with_text(f->server, "waiting"));
}

/* ---- forms ---- */

static void test_a_form_call_uploads_its_fields(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	static const char file_bytes[] = "%PDF-1.4\n\0\x01\x02 binary";
	char path[] = "/tmp/tgllm-test-doc-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, file_bytes, sizeof file_bytes - 1), (ssize_t)(sizeof file_bytes - 1));
	close(fd);
	/* The caller's fields may go as soon as tg_call_form returns: it copies them. */
	char chat_id[] = "42", caption[] = "the report", name[] = "report.pdf";
	struct http_form_field form[] = {
	    {.name = "chat_id", .data = chat_id, .len = strlen(chat_id)},
	    {.name = "caption", .data = caption, .len = strlen(caption)},
	    {.name = "document", .path = path, .filename = name, .type = "application/pdf"},
	};
	fake_server_queue(f->server, &(struct fake_reply){.body = SENT(11)});
	struct tg_call *c = tg_call_form(f->tg, "sendDocument", form, 3, 42, 0, 5, on_done, &r);
	assert_non_null(c);
	memset(chat_id, 'X', sizeof chat_id - 1);
	memset(caption, 'X', sizeof caption - 1);
	memset(name, 'X', sizeof name - 1);
	WAIT_FOR(&f->loop, r.n_done == 1, "sendDocument to finish");
	unlink(path);

	const struct fake_request *q = fake_server_request(f->server, 0);
	expect_str("the URL's path", "/bot" TOKEN "/sendDocument", q->uri);
	expect_int("ok", true, r.ok);
	expect_int("message_id", 11, r.message_id);
	struct fake_form_field field;
	if (!fake_request_form_field(q, "chat_id", &field) || field.len != 2 ||
	    memcmp(field.data, "42", 2) != 0)
		fail_msg("the field chat_id: expected \"42\"");
	if (!fake_request_form_field(q, "caption", &field) || field.len != 10 ||
	    memcmp(field.data, "the report", 10) != 0)
		fail_msg("the field caption: expected \"the report\"");
	if (!fake_request_form_field(q, "document", &field))
		fail_msg("the file document: expected in the form, none came");
	expect_str("the file's name", "report.pdf", field.filename);
	expect_str("the file's type", "application/pdf", field.type);
	expect_int("the file's length", sizeof file_bytes - 1, field.len);
	if (memcmp(field.data, file_bytes, field.len) != 0)
		fail_msg("the file's bytes at the server differ from the file's");
}

/* ---- drafts ---- */

static void test_drafts_are_on_until_noted_off_for_that_client(void **state)
{
	struct fixture *f = *state;
	expect_int("tg_has_drafts of a new client", true, tg_has_drafts(f->tg));
	tg_note_no_drafts(f->tg);
	expect_int("tg_has_drafts after tg_note_no_drafts", false, tg_has_drafts(f->tg));
	tg_note_no_drafts(f->tg);
	expect_int("tg_has_drafts after a second note", false, tg_has_drafts(f->tg));
	struct tg_pacing none = NO_PACING;
	struct tg_client *other =
	    tg_client_new(f->loop.base, f->http, fake_server_url(f->server), TOKEN, &none);
	assert_non_null(other);
	expect_int("tg_has_drafts of another client", true, tg_has_drafts(other));
	tg_client_free(other);
}

int main(void)
{
	test_net_init();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_a_call_posts_its_json_to_bot_token_method),
	    T(test_the_result_of_get_me_is_a_tree),
	    T(test_a_bot_api_error_is_reported_and_not_retried),
	    T(test_a_5xx_is_retried_then_succeeds),
	    T(test_a_429_is_waited_out_and_sent_once_more),
	    T(test_a_droppable_call_hit_by_429_fails_and_pauses_its_chat),
	    T(test_a_droppable_call_hit_by_a_5xx_fails_at_once),
	    T(test_an_absurd_retry_after_fails_the_call_and_pauses_the_chat_an_hour_at_most),
	    T(test_a_once_call_is_not_retried_after_a_5xx),
	    T(test_a_once_call_is_not_retried_when_the_connection_fails),
	    T(test_a_connection_that_cannot_be_made_is_retried),
	    T(test_a_request_the_server_dropped_unanswered_is_not_repeated),
	    T(test_a_message_reset_after_telegram_read_it_is_not_sent_again),
	    T(test_a_message_reset_on_a_reused_connection_is_not_sent_again),
	    T(test_a_message_dropped_unanswered_on_a_reused_connection_is_not_sent_again),
	    T(test_an_edit_reset_after_telegram_read_it_is_sent_again),
	    T(test_a_429_pauses_calls_already_waiting_for_the_chat),
	    T(test_calls_to_one_private_chat_are_spaced_and_other_chats_go_on),
	    T(test_calls_to_a_group_are_spaced_by_group_s),
	    T(test_global_s_spaces_calls_to_different_chats),
	    T(test_chat_actions_and_chatless_calls_are_not_paced),
	    T(test_chat_wait_says_how_long_a_new_call_would_wait),
	    T(test_drafts_and_messages_to_a_chat_are_spaced_apart_from_each_other),
	    T(test_no_more_than_32_requests_are_in_flight),
	    T(test_a_cancelled_call_never_calls_back),
	    T(test_a_form_call_uploads_its_fields),
	    T(test_drafts_are_on_until_noted_off_for_that_client),
	};
#undef T
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_net_cleanup();
	return failed;
}
