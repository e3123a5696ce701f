/*
 * Unit tests for src/telegram/deliver.c: an answer streamed to a chat and
 * finished, through the real tg.c and http.c, against a fake Telegram on
 * the test's event loop (support/fake_http.h). Pacing is tiny, so the waits
 * are deliver.c's own (0.25 s between frames, 1 s before a group's first).
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
#include "lib/buf.h"
#include "lib/http.h"
#include "loop.h"
#include "telegram/deliver.h"
#include "telegram/tg.h"

#include "expect.h"

#define TOKEN            "123456:TEST-token"
#define PRIVATE_CHAT     42
#define GROUP_CHAT       (-1001234567890LL)
#define USER_MESSAGE     7   /* the message answered */
#define FIRST_MESSAGE_ID 500 /* the fake Telegram numbers the messages it sends from here */

/* An answer of the fake Telegram that replaces success for the nth call of a method. */
struct override {
	const char *method;
	int nth; /* 1 for the first call */
	struct fake_reply reply;
};

struct fixture {
	struct test_loop loop;
	struct fake_server *server;
	struct http_client *http;
	struct tg_client *tg;
	struct buf text; /* the answer as the model writes it */
	struct delivery *d;
	int64_t next_message_id;
	char answer[256];
	struct override overrides[4];
	size_t n_overrides;
	/* what the delivery's callbacks saw */
	int n_visible;
	int n_done;
	bool is_delivered;
};

static const char *method_of(const struct fake_request *r)
{
	const char *slash = strrchr(r->uri, '/');
	return slash ? slash + 1 : r->uri;
}

static json_t *body_of(const struct fake_request *r)
{
	json_error_t err;
	json_t *root = json_loadb(r->body, r->body_len, 0, &err);
	if (!json_is_object(root))
		fail_msg("the body of %s: expected a JSON object, got \"%s\" (%s)", method_of(r), r->body,
		         err.text);
	return root;
}

/* Telegram: success for every method (a new message_id for each message sent), unless overridden. */
static void on_telegram(void *arg, const struct fake_request *req, struct fake_reply *reply)
{
	struct fixture *f = arg;
	const char *method = method_of(req);
	int nth = 0;
	for (size_t i = 0; i < fake_server_count(f->server); i++)
		nth += strcmp(method_of(fake_server_request(f->server, i)), method) == 0;
	for (size_t i = 0; i < f->n_overrides; i++) {
		if (strcmp(f->overrides[i].method, method) == 0 && f->overrides[i].nth == nth) {
			*reply = f->overrides[i].reply;
			return;
		}
	}
	if (strcmp(method, "sendMessage") == 0) {
		snprintf(
		    f->answer, sizeof f->answer,
		    "{\"ok\":true,\"result\":{\"message_id\":%lld,\"chat\":{\"id\":1},\"text\":\"...\"}}",
		    (long long)f->next_message_id++);
	} else if (strcmp(method, "editMessageText") == 0) {
		json_t *body = json_loadb(req->body, req->body_len, 0, NULL);
		snprintf(f->answer, sizeof f->answer, "{\"ok\":true,\"result\":{\"message_id\":%lld}}",
		         (long long)json_integer_value(json_object_get(body, "message_id")));
		json_decref(body);
	} else {
		snprintf(f->answer, sizeof f->answer, "{\"ok\":true,\"result\":true}");
	}
	reply->body = f->answer;
}

static void override(struct fixture *f, const char *method, int nth, struct fake_reply reply)
{
	assert_true(f->n_overrides < sizeof f->overrides / sizeof f->overrides[0]);
	f->overrides[f->n_overrides++] = (struct override){method, nth, reply};
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
	f->next_message_id = FIRST_MESSAGE_ID;
	fake_server_set_handler(f->server, on_telegram, f);
	struct tg_pacing tiny = {0.01, 0.01, 0.001};
	f->tg = tg_client_new(f->loop.base, f->http, fake_server_url(f->server), TOKEN, &tiny);
	buf_init(&f->text, 1 << 20);
	*state = f;
	return f->tg ? 0 : -1;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	delivery_free(f->d);
	buf_free(&f->text);
	tg_client_free(f->tg);
	http_client_free(f->http);
	fake_server_free(f->server);
	test_loop_free(&f->loop);
	free(f);
	return 0;
}

static void on_visible(void *arg)
{
	struct fixture *f = arg;
	f->n_visible++;
}

static void on_delivered(void *arg, bool is_delivered)
{
	struct fixture *f = arg;
	f->n_done++;
	f->is_delivered = is_delivered;
}

static void start(struct fixture *f, int64_t chat_id, bool is_private)
{
	struct tg_target t = {.chat_id = chat_id, .reply_to = USER_MESSAGE, .is_private = is_private};
	f->d = delivery_new(f->tg, f->loop.base, RENDER_THINK_HIDE, &t, &f->text, on_visible, f);
	assert_non_null(f->d);
}

/* The model wrote more. */
static void grow(struct fixture *f, const char *more)
{
	assert_int_equal(buf_append_str(&f->text, more), BUF_OK);
	delivery_progress(f->d);
}

static void finish(struct fixture *f, const char *text)
{
	delivery_finish(f->d, text, strlen(text), on_delivered);
}

static const struct fake_request *wait_request(struct fixture *f, size_t i)
{
	WAIT_FOR(&f->loop, fake_server_count(f->server) > i, "request %zu at Telegram (got %zu)", i + 1,
	         fake_server_count(f->server));
	return fake_server_request(f->server, i);
}

/* Request i is a call of method with this text; its body, for more checks (the caller frees it). */
static json_t *expect_call(struct fixture *f, size_t i, const char *method, const char *text)
{
	const struct fake_request *r = wait_request(f, i);
	char what[96];
	snprintf(what, sizeof what, "the method of request %zu", i + 1);
	expect_str(what, method, method_of(r));
	json_t *body = body_of(r);
	snprintf(what, sizeof what, "the text of request %zu (%s)", i + 1, method);
	expect_str(what, text, json_string_value(json_object_get(body, "text")));
	return body;
}

static long long member_int(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

/* The message a request replies to; -1 when it is no reply. */
static long long reply_to(const json_t *body)
{
	return member_int(json_object_get(body, "reply_parameters"), "message_id");
}

static void wait_done(struct fixture *f)
{
	WAIT_FOR(&f->loop, f->n_done > 0, "the delivery to be done (requests: %zu)",
	         fake_server_count(f->server));
	expect_int("done callbacks", 1, f->n_done);
}

/* ---- streaming ---- */

static void test_a_private_chat_streams_drafts_then_sends_the_final_reply(void **state)
{
	struct fixture *f = *state;
	start(f, PRIVATE_CHAT, true);
	grow(f, "Hello");
	json_t *b = expect_call(f, 0, "sendMessageDraft", "Hello");
	expect_int("the draft's chat_id", PRIVATE_CHAT, member_int(b, "chat_id"));
	expect_int("the draft's draft_id", USER_MESSAGE, member_int(b, "draft_id"));
	json_decref(b);
	WAIT_FOR(&f->loop, f->n_visible == 1, "the first draft to be shown");

	grow(f, " world");
	json_decref(expect_call(f, 1, "sendMessageDraft", "Hello world"));

	finish(f, "Hello world");
	wait_done(f);
	expect_int("is_delivered", true, f->is_delivered);
	b = expect_call(f, 2, "sendMessage", "Hello world");
	expect_int("the final message's chat_id", PRIVATE_CHAT, member_int(b, "chat_id"));
	expect_int("the message the final one replies to", USER_MESSAGE, reply_to(b));
	json_decref(b);
	expect_int("requests", 3, (long long)fake_server_count(f->server));
}

static void test_a_group_streams_by_sending_then_editing_and_finishes_by_an_edit(void **state)
{
	struct fixture *f = *state;
	start(f, GROUP_CHAT, false);
	grow(f, "Hello");
	json_t *b = expect_call(f, 0, "sendMessage", "Hello");
	expect_int("the first frame's chat_id", GROUP_CHAT, member_int(b, "chat_id"));
	expect_int("the message the first frame replies to", USER_MESSAGE, reply_to(b));
	json_decref(b);
	WAIT_FOR(&f->loop, f->n_visible == 1, "the first frame to be shown");

	grow(f, " world");
	b = expect_call(f, 1, "editMessageText", "Hello world");
	expect_int("the edited message", FIRST_MESSAGE_ID, member_int(b, "message_id"));
	expect_int("the edit's chat_id", GROUP_CHAT, member_int(b, "chat_id"));
	json_decref(b);

	finish(f, "Hello world!");
	wait_done(f);
	expect_int("is_delivered", true, f->is_delivered);
	b = expect_call(f, 2, "editMessageText", "Hello world!");
	expect_int("the message the final edit changes", FIRST_MESSAGE_ID, member_int(b, "message_id"));
	json_decref(b);
	expect_int("requests", 3, (long long)fake_server_count(f->server));
}

static void test_a_quick_answer_in_a_group_arrives_whole(void **state)
{
	struct fixture *f = *state;
	start(f, GROUP_CHAT, false);
	grow(f, "Hel");
	/* Finished within the first second: no stub, no edit. */
	finish(f, "Hello");
	wait_done(f);
	json_t *b = expect_call(f, 0, "sendMessage", "Hello");
	expect_int("the message it replies to", USER_MESSAGE, reply_to(b));
	json_decref(b);
	fake_server_sync(f->server);
	expect_int("requests", 1, (long long)fake_server_count(f->server));
}

/* ---- parts ---- */

/* UTF-16 code units of UTF-8 text: what Telegram counts. */
static size_t utf16_units(const char *s)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		n += (*p & 0xC0) != 0x80 ? ((*p & 0xF8) == 0xF0 ? 2 : 1) : 0;
	return n;
}

static void test_a_long_answer_goes_in_parts_in_order_the_first_as_the_reply(void **state)
{
	struct fixture *f = *state;
	/* 1200 numbered Cyrillic words: about 11,000 UTF-16 units, 17,000 bytes: three parts. */
	struct buf answer;
	buf_init(&answer, 1 << 20);
	for (int i = 1; i <= 1200; i++) {
		char word[32];
		snprintf(word, sizeof word, "%sчисло%d", i > 1 ? " " : "", i);
		assert_int_equal(buf_append_str(&answer, word), BUF_OK);
	}
	start(f, PRIVATE_CHAT, true);
	finish(f, buf_str(&answer));
	wait_done(f);
	expect_int("is_delivered", true, f->is_delivered);
	expect_int("parts sent", 3, (long long)fake_server_count(f->server));

	struct buf joined;
	buf_init(&joined, 1 << 20);
	for (size_t i = 0; i < 3; i++) {
		const struct fake_request *r = fake_server_request(f->server, i);
		expect_str("the method of a part", "sendMessage", method_of(r));
		json_t *b = body_of(r);
		const char *text = json_string_value(json_object_get(b, "text"));
		assert_non_null(text);
		if (utf16_units(text) > 4096)
			fail_msg("part %zu: expected at most 4096 UTF-16 units, got %zu", i + 1,
			         utf16_units(text));
		expect_int(i == 0 ? "the reply of part 1" : "the reply of a later part",
		           i == 0 ? USER_MESSAGE : -1, reply_to(b));
		if (i > 0)
			buf_append_str(&joined, " ");
		buf_append_str(&joined, text);
		json_decref(b);
	}
	if (strcmp(buf_str(&joined), buf_str(&answer)) != 0)
		fail_msg("the parts in the order they came: expected the answer (%zu bytes) cut at spaces, "
		         "got %zu "
		         "bytes starting \"%.40s\"",
		         answer.len, joined.len, buf_str(&joined));
	buf_free(&joined);
	buf_free(&answer);
}

static void test_a_part_refused_for_its_entities_goes_again_as_plain_text(void **state)
{
	struct fixture *f = *state;
	override(f, "sendMessage", 1,
	         (struct fake_reply){
	             .status = 400,
	             .body = "{\"ok\":false,\"error_code\":400,\"description\":\"Bad Request: can't "
	                     "parse entities: Unsupported start tag\"}"});
	start(f, PRIVATE_CHAT, true);
	finish(f, "**Hello** world");
	wait_done(f);
	expect_int("is_delivered", true, f->is_delivered);

	json_t *b = expect_call(f, 0, "sendMessage", "Hello world");
	const json_t *entities = json_object_get(b, "entities");
	char *dumped = json_dumps(entities, JSON_COMPACT);
	expect_str("the first try's entities", "[{\"type\":\"bold\",\"offset\":0,\"length\":5}]", dumped);
	free(dumped);
	json_decref(b);
	b = expect_call(f, 1, "sendMessage", "Hello world");
	if (json_object_get(b, "entities"))
		fail_msg("the second try: expected no entities, got %s",
		         fake_server_request(f->server, 1)->body);
	expect_int("the message the plain retry replies to", USER_MESSAGE, reply_to(b));
	json_decref(b);
	expect_int("requests", 2, (long long)fake_server_count(f->server));
}

#define BLOCKED                                                                                              \
	((struct fake_reply){.status = 403,                                                                  \
	                     .body =                                                                         \
	                         "{\"ok\":false,\"error_code\":403,\"description\":\"Forbidden: bot was "    \
	                         "blocked by the user\"}"})

static void test_a_403_on_a_part_stops_the_rest(void **state)
{
	struct fixture *f = *state;
	override(f, "sendMessage", 1, BLOCKED);
	struct buf answer;
	buf_init(&answer, 1 << 20);
	for (int i = 0; i < 3; i++) {
		char para[4000];
		memset(para, 'a' + i, sizeof para - 1);
		para[sizeof para - 1] = '\0';
		buf_append_str(&answer, i ? "\n\n" : "");
		buf_append_str(&answer, para);
	}
	start(f, PRIVATE_CHAT, true);
	finish(f, buf_str(&answer));
	buf_free(&answer);
	wait_done(f);
	expect_int("is_delivered after a 403", false, f->is_delivered);
	fake_server_sync(f->server);
	expect_int("requests after a 403 on the first of three parts", 1,
	           (long long)fake_server_count(f->server));
	expect_int("visible callbacks", 0, f->n_visible);
}

static void test_a_403_on_a_draft_stops_the_stream(void **state)
{
	struct fixture *f = *state;
	override(f, "sendMessageDraft", 1, BLOCKED);
	start(f, PRIVATE_CHAT, true);
	grow(f, "Hello");
	json_decref(expect_call(f, 0, "sendMessageDraft", "Hello"));
	WAIT_FOR(&f->loop, fake_server_request(f->server, 0)->is_answered, "the 403 to go out");
	fake_server_sync(f->server);
	grow(f, " world");
	finish(f, "Hello world");
	wait_done(f);
	expect_int("is_delivered after a 403", false, f->is_delivered);
	fake_server_sync(f->server);
	expect_int("requests after a 403 on the first draft", 1, (long long)fake_server_count(f->server));
	expect_int("tg_has_drafts after a 403 (the chat refused, not the method)", true,
	           tg_has_drafts(f->tg));
}

static void test_a_draft_refused_for_its_chat_switches_that_answer_to_edits(void **state)
{
	struct fixture *f = *state;
	override(f, "sendMessageDraft", 1,
	         (struct fake_reply){.status = 400,
	                             .body =
	                                 "{\"ok\":false,\"error_code\":400,\"description\":\"Bad Request: "
	                                 "method is not available for this chat\"}"});
	start(f, PRIVATE_CHAT, true);
	grow(f, "Hello");
	json_decref(expect_call(f, 0, "sendMessageDraft", "Hello"));
	WAIT_FOR(&f->loop, fake_server_count(f->server) == 1, "the draft");
	fake_server_sync(f->server); /* its 400 is answered and read */

	grow(f, " world");
	json_t *b = expect_call(f, 1, "sendMessage", "Hello world");
	expect_int("the message the first real frame replies to", USER_MESSAGE, reply_to(b));
	json_decref(b);
	WAIT_FOR(&f->loop, f->n_visible == 1, "the frame to be shown");
	grow(f, ", again");
	b = expect_call(f, 2, "editMessageText", "Hello world, again");
	expect_int("the edited message", FIRST_MESSAGE_ID, member_int(b, "message_id"));
	json_decref(b);
	/* The final text is the one shown: it costs no call. */
	finish(f, "Hello world, again");
	wait_done(f);
	expect_int("is_delivered", true, f->is_delivered);
	fake_server_sync(f->server);
	expect_int("requests when the final text is already shown", 3,
	           (long long)fake_server_count(f->server));
	/* A refusal for one chat says nothing of the others. */
	expect_int("tg_has_drafts after a 400 for one chat", true, tg_has_drafts(f->tg));
}

static void test_a_server_without_drafts_switches_to_edits_for_good(void **state)
{
	struct fixture *f = *state;
	override(
	    f, "sendMessageDraft", 1,
	    (struct fake_reply){.status = 404,
	                        .body = "{\"ok\":false,\"error_code\":404,\"description\":\"Not Found\"}"});
	start(f, PRIVATE_CHAT, true);
	grow(f, "Hello");
	json_decref(expect_call(f, 0, "sendMessageDraft", "Hello"));
	WAIT_FOR(&f->loop, !tg_has_drafts(f->tg), "tg_has_drafts to turn false after the draft's 404");

	grow(f, " world");
	json_t *b = expect_call(f, 1, "sendMessage", "Hello world");
	expect_int("the message the first real frame replies to", USER_MESSAGE, reply_to(b));
	json_decref(b);
	WAIT_FOR(&f->loop, f->n_visible == 1, "the frame to be shown");
	grow(f, ", again");
	b = expect_call(f, 2, "editMessageText", "Hello world, again");
	expect_int("the edited message", FIRST_MESSAGE_ID, member_int(b, "message_id"));
	json_decref(b);
	/* The final text is the one shown: it costs no call. */
	finish(f, "Hello world, again");
	wait_done(f);
	expect_int("is_delivered", true, f->is_delivered);
	fake_server_sync(f->server);
	expect_int("requests when the final text is already shown", 3,
	           (long long)fake_server_count(f->server));
}

static void test_a_part_that_fills_while_streaming_is_sent_once(void **state)
{
	struct fixture *f = *state;
	/* Two paragraphs of 3600 and 1000 characters: 4602 in all, two parts. */
	char a[3601], b[1001];
	for (size_t i = 0; i < 3600; i++)
		a[i] = i % 6 == 5 ? ' ' : "alpha"[i % 6];
	a[3599] = '.';
	a[3600] = '\0';
	for (size_t i = 0; i < 1000; i++)
		b[i] = i % 5 == 4 ? ' ' : "beta"[i % 5];
	b[999] = '.';
	b[1000] = '\0';
	start(f, PRIVATE_CHAT, true);
	grow(f, a);
	json_decref(expect_call(f, 0, "sendMessageDraft", a));
	grow(f, "\n\n");
	grow(f, b);
	/* The first part will not change any more: it becomes a message, the reply, at once. */
	json_t *body = expect_call(f, 1, "sendMessage", a);
	expect_int("the message the first part replies to", USER_MESSAGE, reply_to(body));
	json_decref(body);
	grow(f, " Done");
	char b_done[1100];
	snprintf(b_done, sizeof b_done, "%s Done", b);
	json_decref(expect_call(f, 2, "sendMessageDraft", b_done));

	finish(f, buf_str(&f->text));
	wait_done(f);
	expect_int("is_delivered", true, f->is_delivered);
	body = expect_call(f, 3, "sendMessage", b_done);
	expect_int("the reply of the second part", -1, reply_to(body));
	json_decref(body);
	fake_server_sync(f->server);
	expect_int("requests (the first part, already shown as it ends, is not sent again)", 4,
	           (long long)fake_server_count(f->server));
}

static void test_a_frame_hit_by_429_is_dropped_and_the_next_carries_newer_text(void **state)
{
	struct fixture *f = *state;
	override(f, "sendMessageDraft", 1,
	         (struct fake_reply){
	             .status = 429,
	             .body = "{\"ok\":false,\"error_code\":429,\"description\":\"Too Many Requests: "
	                     "retry after 1\",\"parameters\":{\"retry_after\":1}}"});
	start(f, PRIVATE_CHAT, true);
	grow(f, "One");
	json_decref(expect_call(f, 0, "sendMessageDraft", "One"));
	WAIT_FOR(&f->loop, fake_server_request(f->server, 0)->is_answered, "the 429 to go out");
	grow(f, " two");
	grow(f, " three");
	json_decref(expect_call(f, 1, "sendMessageDraft", "One two three"));
	const struct fake_request *first = fake_server_request(f->server, 0),
	                          *next = fake_server_request(f->server, 1);
	if (next->at - first->at < 0.9) /* arrivals at the fake: a busy machine delays them unevenly */
		fail_msg("the frame after a 429 with retry_after 1: expected 1 s after it, came after %.3f s",
		         next->at - first->at);
	finish(f, "One two three");
	wait_done(f);
	fake_server_sync(f->server);
	expect_int("requests (the dropped frame is not repeated)", 3,
	           (long long)fake_server_count(f->server));
}

/* ---- a quick answer is not held back by its draft (issue 13, item 14) ---- */

/* Telegram's own pacing: one message a second to a private chat. */
static void use_telegram_pacing(struct fixture *f)
{
	tg_client_free(f->tg);
	f->tg = tg_client_new(f->loop.base, f->http, fake_server_url(f->server), TOKEN, &TG_PACING_DEFAULT);
	assert_non_null(f->tg);
}

/* An answer that streamed for a moment: one draft, then the final message at once, not a second later. */
static void test_a_quick_answer_follows_its_draft_at_once(void **state)
{
	struct fixture *f = *state;
	use_telegram_pacing(f);
	start(f, PRIVATE_CHAT, true);
	grow(f, "Hello");
	json_decref(expect_call(f, 0, "sendMessageDraft", "Hello"));
	WAIT_FOR(&f->loop, f->n_visible == 1, "the draft to be shown");
	grow(f, " world");
	finish(f, "Hello world");
	wait_done(f);
	json_decref(expect_call(f, 1, "sendMessage", "Hello world"));
	expect_int("requests", 2, (long long)fake_server_count(f->server));
	const struct fake_request *draft = fake_server_request(f->server, 0),
	                          *final = fake_server_request(f->server, 1);
	if (final->at - draft->at >= 0.3)
		fail_msg(
		    "the final message after the answer's only draft: expected within 0.3 s, came %.3f s "
		    "later",
		    final->at - draft->at);
}

/* The draft Telegram has not answered yet is not waited for; a later answer to it changes nothing. */
static void test_the_final_message_does_not_wait_for_a_draft_in_flight(void **state)
{
	struct fixture *f = *state;
	use_telegram_pacing(f);
	override(f, "sendMessageDraft", 1,
	         (struct fake_reply){.is_held = true, .body = "{\"ok\":true,\"result\":true}"});
	start(f, PRIVATE_CHAT, true);
	grow(f, "Hello");
	wait_request(f, 0);
	finish(f, "Hello world");
	wait_done(f);
	expect_int("is_delivered", true, f->is_delivered);
	json_decref(expect_call(f, 1, "sendMessage", "Hello world"));
	expect_int("the held draft answered before the final message was done", false,
	           fake_server_request(f->server, 0)->is_answered);
	fake_server_release(f->server, 0);
	WAIT_FOR(&f->loop, fake_server_request(f->server, 0)->is_answered, "the late draft's answer");
	fake_server_sync(f->server);
	expect_int("requests", 2, (long long)fake_server_count(f->server));
	expect_int("done callbacks", 1, f->n_done);
}

/* ---- callbacks ---- */

static void test_visible_fires_once_when_the_first_text_is_shown(void **state)
{
	struct fixture *f = *state;
	override(f, "sendMessageDraft", 1,
	         (struct fake_reply){.is_held = true, .body = "{\"ok\":true,\"result\":true}"});
	start(f, PRIVATE_CHAT, true);
	grow(f, "Hello");
	wait_request(f, 0);
	fake_server_sync(f->server);
	expect_int("visible callbacks while Telegram has not answered the first draft", 0, f->n_visible);
	fake_server_release(f->server, 0);
	WAIT_FOR(&f->loop, f->n_visible == 1, "the visible callback once the draft is shown");
	grow(f, " world");
	json_decref(expect_call(f, 1, "sendMessageDraft", "Hello world"));
	finish(f, "Hello world");
	wait_done(f);
	expect_int("visible callbacks after two drafts and the final message", 1, f->n_visible);
}

static void test_delivery_free_stops_without_callbacks(void **state)
{
	struct fixture *f = *state;
	override(f, "sendMessage", 1,
	         (struct fake_reply){.is_held = true, .body = "{\"ok\":true,\"result\":true}"});
	start(f, PRIVATE_CHAT, true);
	finish(f, "First paragraph.");
	wait_request(f, 0);
	delivery_free(f->d);
	f->d = NULL;
	WAIT_FOR(&f->loop, fake_server_request(f->server, 0)->is_abandoned,
	         "the freed delivery's call to be dropped");

	/* Freed with a frame still to come. */
	start(f, PRIVATE_CHAT, true);
	grow(f, "more");
	delivery_free(f->d);
	f->d = NULL;
	fake_server_sync(f->server);
	expect_int("done callbacks after delivery_free", 0, f->n_done);
	expect_int("visible callbacks after delivery_free", 0, f->n_visible);
	expect_int("requests", 1, (long long)fake_server_count(f->server));
}

int main(void)
{
	test_net_init();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_a_private_chat_streams_drafts_then_sends_the_final_reply),
	    T(test_a_group_streams_by_sending_then_editing_and_finishes_by_an_edit),
	    T(test_a_quick_answer_in_a_group_arrives_whole),
	    T(test_a_long_answer_goes_in_parts_in_order_the_first_as_the_reply),
	    T(test_a_part_that_fills_while_streaming_is_sent_once),
	    T(test_a_frame_hit_by_429_is_dropped_and_the_next_carries_newer_text),
	    T(test_a_quick_answer_follows_its_draft_at_once),
	    T(test_the_final_message_does_not_wait_for_a_draft_in_flight),
	    T(test_a_part_refused_for_its_entities_goes_again_as_plain_text),
	    T(test_a_403_on_a_part_stops_the_rest),
	    T(test_a_403_on_a_draft_stops_the_stream),
	    T(test_a_draft_refused_for_its_chat_switches_that_answer_to_edits),
	    T(test_a_server_without_drafts_switches_to_edits_for_good),
	    T(test_visible_fires_once_when_the_first_text_is_shown),
	    T(test_delivery_free_stops_without_callbacks),
	};
#undef T
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_net_cleanup();
	return failed;
}
