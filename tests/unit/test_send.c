/*
 * Unit tests for src/telegram/send.c: a notice (tg_send_text) and the
 * typing indicator, through the real tg.c and http.c against a fake
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

#include "fake_http.h"
#include "lib/http.h"
#include "loop.h"
#include "telegram/send.h"
#include "telegram/tg.h"

#include "expect.h"

#define TOKEN "123456:TEST-token"

struct fixture {
	struct test_loop loop;
	struct fake_server *server;
	struct http_client *http;
	struct tg_client *tg;
	struct tg_typing typing;
};

struct result {
	int n_done;
	bool ok;
	int64_t message_id;
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
	struct tg_pacing none = {0, 0, 0};
	f->tg = tg_client_new(f->loop.base, f->http, fake_server_url(f->server), TOKEN, &none);
	*state = f;
	return f->tg ? 0 : -1;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	tg_typing_stop(&f->typing);
	tg_client_free(f->tg);
	http_client_free(f->http);
	fake_server_free(f->server);
	test_loop_free(&f->loop);
	free(f);
	return 0;
}

static void on_done(void *arg, const struct tg_result *res)
{
	struct result *r = arg;
	r->n_done++;
	r->ok = res->ok;
	r->message_id = res->message_id;
}

/* Request i's body, after checking its method (the caller frees it). */
static json_t *expect_call(struct fixture *f, size_t i, const char *method)
{
	WAIT_FOR(&f->loop, fake_server_count(f->server) > i, "request %zu at Telegram (got %zu)", i + 1,
	         fake_server_count(f->server));
	const struct fake_request *r = fake_server_request(f->server, i);
	char path[128];
	snprintf(path, sizeof path, "/bot%s/%s", TOKEN, method);
	expect_str("the request's path", path, r->uri);
	json_t *body = json_loadb(r->body, r->body_len, 0, NULL);
	if (!json_is_object(body))
		fail_msg("the body of %s: expected a JSON object, got \"%s\"", method, r->body);
	return body;
}

/* The body's members, sorted, as one line: what it carries and nothing else. */
static char *members(const json_t *body)
{
	return json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
}

static void expect_body(const char *what, const char *expected, const json_t *body)
{
	char *got = members(body);
	expect_str(what, expected, got);
	free(got);
}

static void test_send_text_writes_the_chat_and_the_text_only(void **state)
{
	struct fixture *f = *state;
	struct result r = {0};
	static const char text[] = "He said \"hi\"\nthen left \xc3\xa9\xf0\x9f\x98\x80 and more unsent";
	fake_server_queue(f->server,
	                  &(struct fake_reply){.body = "{\"ok\":true,\"result\":{\"message_id\":99}}"});
	struct tg_target t = {.chat_id = 42, .is_private = true};
	assert_non_null(
	    tg_send_text(f->tg, &t, text, strlen(text) - strlen(" and more unsent"), on_done, &r));
	json_t *body = expect_call(f, 0, "sendMessage");
	expect_body("a notice to a chat",
	            "{\"chat_id\":42,\"text\":\"He said \\\"hi\\\"\\nthen left \xc3\xa9\xf0\x9f\x98\x80\"}",
	            body);
	json_decref(body);
	WAIT_FOR(&f->loop, r.n_done == 1, "the notice's callback");
	expect_int("ok", true, r.ok);
	expect_int("message_id", 99, r.message_id);
}

static void test_send_text_adds_the_thread_and_the_reply_when_set(void **state)
{
	struct fixture *f = *state;
	struct result in_thread = {0}, reply = {0}, both = {0};
	struct tg_target thread_only = {.chat_id = -1001, .thread_id = 9};
	struct tg_target reply_only = {.chat_id = -1001, .reply_to = 7};
	struct tg_target thread_and_reply = {.chat_id = -1001, .thread_id = 9, .reply_to = 7};
	assert_non_null(tg_send_text(f->tg, &thread_only, "a", 1, on_done, &in_thread));
	json_t *body = expect_call(f, 0, "sendMessage");
	expect_body("a notice into a topic", "{\"chat_id\":-1001,\"message_thread_id\":9,\"text\":\"a\"}",
	            body);
	json_decref(body);

	assert_non_null(tg_send_text(f->tg, &reply_only, "b", 1, on_done, &reply));
	body = expect_call(f, 1, "sendMessage");
	expect_body(
	    "a notice that replies",
	    "{\"chat_id\":-1001,\"reply_parameters\":{\"allow_sending_without_reply\":true,\"message_id\":7},"
	    "\"text\":\"b\"}",
	    body);
	json_decref(body);

	assert_non_null(tg_send_text(f->tg, &thread_and_reply, "c", 1, on_done, &both));
	body = expect_call(f, 2, "sendMessage");
	expect_body("a notice that replies in a topic",
	            "{\"chat_id\":-1001,\"message_thread_id\":9,\"reply_parameters\":{\"allow_sending_"
	            "without_reply\":"
	            "true,\"message_id\":7},\"text\":\"c\"}",
	            body);
	json_decref(body);
	WAIT_FOR(&f->loop, in_thread.n_done && reply.n_done && both.n_done, "the three callbacks");
}

static void test_typing_is_sent_at_once_to_the_chat_and_thread(void **state)
{
	struct fixture *f = *state;
	fake_server_queue(f->server, &(struct fake_reply){.body = "{\"ok\":true,\"result\":true}"});
	struct tg_target t = {.chat_id = -1001, .thread_id = 9, .reply_to = 7};
	tg_typing_start(&f->typing, f->tg, f->loop.base, &t);
	assert_non_null(f->typing.timer);
	json_t *body = expect_call(f, 0, "sendChatAction");
	expect_body("the typing indicator",
	            "{\"action\":\"typing\",\"chat_id\":-1001,\"message_thread_id\":9}", body);
	json_decref(body);
	WAIT_FOR(&f->loop, fake_server_request(f->server, 0)->is_answered, "the answer to go out");
	fake_server_sync(f->server);
	expect_int("requests (the next comes after 4 s)", 1, (long long)fake_server_count(f->server));
}

static void test_typing_stop_cancels_the_call_in_flight(void **state)
{
	struct fixture *f = *state;
	fake_server_queue(f->server,
	                  &(struct fake_reply){.is_held = true, .body = "{\"ok\":true,\"result\":true}"});
	struct tg_target t = {.chat_id = 42};
	tg_typing_start(&f->typing, f->tg, f->loop.base, &t);
	assert_non_null(f->typing.timer);
	json_decref(expect_call(f, 0, "sendChatAction"));
	tg_typing_stop(&f->typing);
	assert_null(f->typing.timer);
	assert_null(f->typing.call);
	WAIT_FOR(&f->loop, fake_server_request(f->server, 0)->is_abandoned,
	         "the stopped indicator's call to be dropped");
	fake_server_sync(f->server);
	expect_int("requests after tg_typing_stop", 1, (long long)fake_server_count(f->server));
	tg_typing_stop(&f->typing); /* stopping it again is a no-op */
}

int main(void)
{
	test_net_init();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_send_text_writes_the_chat_and_the_text_only),
	    T(test_send_text_adds_the_thread_and_the_reply_when_set),
	    T(test_typing_is_sent_at_once_to_the_chat_and_thread),
	    T(test_typing_stop_cancels_the_call_in_flight),
	};
#undef T
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_net_cleanup();
	return failed;
}
