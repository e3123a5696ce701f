/*
 * Unit tests for src/model/llm.c: chat completions streamed as Server-Sent
 * Events, retries and the classification of failures, and the token
 * calibration, against a fake model API on the test's event loop
 * (support/fake_http.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_http.h"
#include "lib/buf.h"
#include "lib/history.h"
#include "lib/http.h"
#include "loop.h"
#include "model/llm.h"
#include "model/tokens.h"

#include "expect.h"

#define KEY   "sk-test-0123456789"
#define MODEL "test-model"

/* The stream's events, as the OpenAI API writes them. */
#define CHUNK(text)                                                                                          \
	"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":"     \
	"{\"content\":\"" text "\"},\"finish_reason\":null}]}\n\n"
#define ROLE_CHUNK                                                                                           \
	"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":"     \
	"{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
#define STOP_CHUNK                                                                                           \
	"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},"  \
	"\"finish_reason\":\"stop\"}]}\n\n"
#define USAGE_CHUNK(prompt, completion)                                                                      \
	"data: "                                                                                             \
	"{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_"            \
	"tokens\":" prompt ",\"completion_tokens\":" completion ",\"total_tokens\":0}}\n\n"
#define DONE "data: [DONE]\n\n"

#define SSE_HEADERS                                                                                          \
	{                                                                                                    \
		"Content-Type: text/event-stream"                                                            \
	}
#define JSON_HEADERS                                                                                         \
	{                                                                                                    \
		"Content-Type: application/json"                                                             \
	}

/* A whole streamed answer, "Hi!". */
#define HI_STREAM                                                                                            \
	((struct fake_reply){.headers = SSE_HEADERS, .pieces = {ROLE_CHUNK, CHUNK("Hi!"), STOP_CHUNK, DONE}})

struct fixture {
	struct test_loop loop;
	struct fake_server *server;
	struct http_client *http;
	struct llm_client *llm;
	struct buf answer; /* the caller's buffer */
	/* what the callbacks saw */
	int n_done;
	struct llm_result res;
	char detail[1024];
	char *text_at_done;
	int n_progress;
	char *snapshots[16]; /* the answer at each progress call */
};

static char system_text[] = "You are terse.";
static char user_text[] = "Say \"hello\"\nin Russian: привет?";
static const struct turn turns[] = {
    {TURN_SYSTEM, system_text, sizeof system_text - 1, false},
    {TURN_USER, user_text, sizeof user_text - 1, false},
};
#define N_TURNS 2

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	if (!f || test_loop_init(&f->loop, TEST_LOOP_BUDGET_S) != 0)
		return -1;
	f->server = fake_server_new(&f->loop, 0);
	f->http = http_client_new(f->loop.base);
	if (!f->server || !f->http)
		return -1;
	char base[96];
	snprintf(base, sizeof base, "%s/v1", fake_server_url(f->server));
	struct llm_options o = {.base_url = base, .key = KEY, .model = MODEL, .timeout_s = 10};
	f->llm = llm_client_new(f->loop.base, f->http, &o);
	buf_init(&f->answer, 0);
	*state = f;
	return f->llm ? 0 : -1;
}

static void forget_outcome(struct fixture *f)
{
	free(f->text_at_done);
	f->text_at_done = NULL;
	for (int i = 0; i < f->n_progress && i < 16; i++)
		free(f->snapshots[i]);
	f->n_progress = 0;
	f->n_done = 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	forget_outcome(f);
	buf_free(&f->answer);
	llm_client_free(f->llm);
	http_client_free(f->http);
	fake_server_free(f->server);
	test_loop_free(&f->loop);
	free(f);
	return 0;
}

static void on_progress(void *arg)
{
	struct fixture *f = arg;
	if (f->n_progress < 16)
		f->snapshots[f->n_progress] = strdup(buf_str(&f->answer));
	f->n_progress++;
}

static void on_done(void *arg, const struct llm_result *res)
{
	struct fixture *f = arg;
	f->n_done++;
	f->res = *res;
	snprintf(f->detail, sizeof f->detail, "%s", res->detail ? res->detail : "(null)");
	f->res.detail = f->detail;
	free(f->text_at_done);
	f->text_at_done = strdup(buf_str(&f->answer));
}

static struct llm_call *ask(struct fixture *f)
{
	forget_outcome(f);
	struct llm_call *call = llm_complete(f->llm, NULL, turns, N_TURNS, &f->answer, on_progress, on_done, f);
	if (!call)
		fail_msg("llm_complete refused to start");
	return call;
}

/* Asks, waits for the answer, and checks its status. */
static void ask_expecting(struct fixture *f, enum llm_status status)
{
	ask(f);
	WAIT_FOR(&f->loop, f->n_done > 0, "the completion to finish (requests: %zu)",
	         fake_server_count(f->server));
	if (f->res.status != status)
		fail_msg("the status: expected %s, got %s (%s)", llm_status_name(status),
		         llm_status_name(f->res.status), f->detail);
	expect_int("done callbacks", 1, f->n_done);
}

static void expect_requests(struct fixture *f, size_t n)
{
	fake_server_sync(f->server);
	expect_int("requests to the model", (long long)n, (long long)fake_server_count(f->server));
}

/* An error answer as the API writes it. */
static void queue_error(struct fixture *f, int status, const char *body)
{
	fake_server_queue(f->server,
	                  &(struct fake_reply){.status = status, .headers = JSON_HEADERS, .body = body});
}

/* ---- the request ---- */

static void test_the_request_carries_model_messages_stream_and_key(void **state)
{
	struct fixture *f = *state;
	fake_server_queue(f->server, &HI_STREAM);
	ask_expecting(f, LLM_OK);
	const struct fake_request *r = fake_server_request(f->server, 0);
	expect_str("the method", "POST", r->method);
	expect_str("the path", "/v1/chat/completions", r->uri);
	expect_str("the Authorization header", "Bearer " KEY, fake_request_header(r, "Authorization"));
	expect_str("the Content-Type", "application/json", fake_request_header(r, "Content-Type"));

	json_error_t err;
	json_t *body = json_loadb(r->body, r->body_len, 0, &err);
	if (!json_is_object(body))
		fail_msg("the request body: expected a JSON object, got \"%s\" (%s)", r->body, err.text);
	expect_str("model", MODEL, json_string_value(json_object_get(body, "model")));
	char *messages = json_dumps(json_object_get(body, "messages"), JSON_COMPACT);
	expect_str(
	    "messages",
	    "[{\"role\":\"system\",\"content\":\"You are terse.\"},{\"role\":\"user\",\"content\":\"Say "
	    "\\\"hello\\\"\\nin Russian: привет?\"}]",
	    messages);
	free(messages);
	expect_int("stream", true, json_is_true(json_object_get(body, "stream")));
	expect_int("stream_options.include_usage", true,
	           json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage")));
	json_decref(body);
}

/* ---- answers ---- */

static void test_an_sse_stream_gives_the_whole_text_and_progress_as_it_grows(void **state)
{
	struct fixture *f = *state;
	fake_server_queue(
	    f->server, &(struct fake_reply){.headers = SSE_HEADERS,
	                                    .pieces = {ROLE_CHUNK CHUNK("Hel"), CHUNK("lo, "), CHUNK("world"),
	                                               STOP_CHUNK USAGE_CHUNK("31", "3") DONE},
	                                    .piece_gap_ms = -1});
	ask(f);
	WAIT_FOR(&f->loop, f->n_progress == 1, "progress after the first piece (got %d calls)",
	         f->n_progress);
	expect_str("the answer at the first progress", "Hel", f->snapshots[0]);
	fake_server_step(f->server, 0);
	WAIT_FOR(&f->loop, f->n_progress == 2, "progress after the second piece (got %d calls)",
	         f->n_progress);
	expect_str("the answer at the second progress", "Hello, ", f->snapshots[1]);
	fake_server_step(f->server, 0);
	WAIT_FOR(&f->loop, f->n_progress == 3, "progress after the third piece (got %d calls)",
	         f->n_progress);
	expect_str("the answer at the third progress", "Hello, world", f->snapshots[2]);
	expect_int("done while the stream is open", 0, f->n_done);
	fake_server_step(f->server, 0);
	WAIT_FOR(&f->loop, f->n_done == 1, "the end of the stream");
	if (f->res.status != LLM_OK)
		fail_msg("the status: expected ok, got %s (%s)", llm_status_name(f->res.status), f->detail);
	expect_str("the answer in the caller's buffer", "Hello, world", f->text_at_done);
	expect_int("prompt_tokens", 31, f->res.prompt_tokens);
	expect_int("completion_tokens", 3, f->res.completion_tokens);
	expect_int("progress calls", 3, f->n_progress);
}

static void test_a_json_completion_instead_of_a_stream_is_read(void **state)
{
	struct fixture *f = *state;
	fake_server_queue(
	    f->server, &(struct fake_reply){
	                   .headers = JSON_HEADERS,
	                   .body = "{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
	                           "\"message\":{\"role\":\"assistant\",\"content\":\"Hi there, "
	                           "\\\"you\\\"\"},\"finish_reason\":\"stop\"}],\"usage\":{"
	                           "\"prompt_tokens\":12,\"completion_tokens\":4}}"});
	ask_expecting(f, LLM_OK);
	expect_str("the answer", "Hi there, \"you\"", f->text_at_done);
	expect_int("prompt_tokens", 12, f->res.prompt_tokens);
	expect_int("completion_tokens", 4, f->res.completion_tokens);
}

static void test_an_empty_answer_is_empty(void **state)
{
	struct fixture *f = *state;
	fake_server_queue(f->server, &(struct fake_reply){.headers = SSE_HEADERS,
	                                                  .pieces = {ROLE_CHUNK, STOP_CHUNK, DONE}});
	ask_expecting(f, LLM_EMPTY);
	expect_str("the answer", "", f->text_at_done);
	expect_requests(f, 1);
}

/* ---- calibration ---- */

static void expect_scale(const char *what, double expected, double got)
{
	if (fabs(expected - got) > 1e-9)
		fail_msg("%s: expected %.6f, got %.6f", what, expected, got);
}

static void test_reported_usage_moves_the_token_scale(void **state)
{
	struct fixture *f = *state;
	size_t estimate = tokens_estimate_turns(turns, N_TURNS);
	char triple[32];
	snprintf(triple, sizeof triple, "%zu", 3 * estimate);
	expect_scale("the scale before any answer", 1.0, llm_token_scale(f->llm));

	/* The API counts 3 tokens for each estimated one: the scale moves towards 3 by a fifth each time. */
	static const double expected[] = {1.4, 1.72, 1.976};
	double scale = 1.0;
	for (int i = 0; i < 3; i++) {
		char usage[256];
		snprintf(
		    usage, sizeof usage,
		    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":%s,\"completion_tokens\":2}}\n\n",
		    triple);
		fake_server_queue(f->server,
		                  &(struct fake_reply){.headers = SSE_HEADERS,
		                                       .pieces = {CHUNK("ok"), STOP_CHUNK, usage, DONE}});
		ask_expecting(f, LLM_OK);
		scale = tokens_calibrate(scale, estimate, (long)(3 * estimate));
		char what[64];
		snprintf(what, sizeof what, "the scale after answer %d reported 3x the estimate", i + 1);
		expect_scale(what, expected[i], llm_token_scale(f->llm));
		expect_scale(what, scale, llm_token_scale(f->llm));
	}

	/* An answer without usage, and a failure, leave it. */
	fake_server_queue(f->server, &HI_STREAM);
	ask_expecting(f, LLM_OK);
	expect_scale("the scale after an answer without usage", expected[2], llm_token_scale(f->llm));
	fake_server_queue(f->server, &(struct fake_reply){.headers = SSE_HEADERS,
	                                                  .pieces = {CHUNK("cut"), USAGE_CHUNK("999", "1")},
	                                                  .is_cut = true});
	ask_expecting(f, LLM_CUT);
	expect_scale("the scale after a cut answer", expected[2], llm_token_scale(f->llm));
}

/* ---- failures ---- */

static void test_a_rejected_key_is_auth(void **state)
{
	struct fixture *f = *state;
	queue_error(f, 401,
	            "{\"error\":{\"message\":\"Incorrect API key provided\",\"type\":"
	            "\"invalid_request_error\",\"code\":\"invalid_api_key\"}}");
	ask_expecting(f, LLM_AUTH);
	if (!strstr(f->detail, "Incorrect API key provided"))
		fail_msg("the detail: expected the API's message, got \"%s\"", f->detail);
	if (strstr(f->detail, KEY))
		fail_msg("the detail quotes the key: \"%s\"", f->detail);
	expect_requests(f, 1);
}

static void test_no_credit_is_quota(void **state)
{
	struct fixture *f = *state;
	queue_error(f, 402,
	            "{\"error\":{\"message\":\"Payment "
	            "Required\"}}");
	ask_expecting(f, LLM_QUOTA);
	/* OpenAI says it with a 429, which must not be retried as a rate limit. */
	fake_server_queue(f->server,
	                  &(struct fake_reply){
	                      .status = 429,
	                      .headers = {"Content-Type: application/json", "Retry-After: 0"},
	                      .body = "{\"error\":{\"message\":\"You exceeded your current quota\",\"type\":"
	                              "\"insufficient_quota\",\"code\":\"insufficient_quota\"}}"});
	ask_expecting(f, LLM_QUOTA);
	expect_requests(f, 2);
}

static void test_a_prompt_too_long_is_context(void **state)
{
	struct fixture *f = *state;
	queue_error(f, 400,
	            "{\"error\":{\"message\":\"This model's maximum context length is 8192 tokens. "
	            "However, your messages resulted in 9000 tokens.\",\"type\":\"invalid_request_error\","
	            "\"code\":\"context_length_exceeded\"}}");
	ask_expecting(f, LLM_CONTEXT);
	/* Other servers say it in words only. */
	queue_error(f, 400,
	            "{\"error\":{\"message\":\"Input is longer than the model's context length "
	            "(32768)\",\"type\":\"BadRequestError\"}}");
	ask_expecting(f, LLM_CONTEXT);
	queue_error(f, 400,
	            "{\"error\":{\"message\":\"Invalid value for 'temperature'\",\"type\":"
	            "\"invalid_request_error\"}}");
	ask_expecting(f, LLM_REJECTED);
	expect_requests(f, 3);
}

static void queue_rate_limited(struct fixture *f, const char *retry_after)
{
	fake_server_queue(f->server, &(struct fake_reply){
	                                 .status = 429,
	                                 .headers = {"Content-Type: application/json", retry_after},
	                                 .body = "{\"error\":{\"message\":\"Rate limit reached\","
	                                         "\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}"});
}

static void test_a_429_is_retried_then_busy(void **state)
{
	struct fixture *f = *state;
	for (int i = 0; i < 3; i++)
		queue_rate_limited(f, "Retry-After: 0");
	fake_server_queue(f->server, &HI_STREAM);
	ask_expecting(f, LLM_BUSY);
	expect_requests(f, 3);
	if (!strstr(f->detail, "Rate limit reached"))
		fail_msg("the detail: expected the API's message, got \"%s\"", f->detail);
}

static void test_a_429_waits_for_retry_after_then_succeeds(void **state)
{
	struct fixture *f = *state;
	queue_rate_limited(f, "Retry-After: 1");
	fake_server_queue(f->server, &HI_STREAM);
	ask_expecting(f, LLM_OK);
	expect_str("the answer", "Hi!", f->text_at_done);
	expect_requests(f, 2);
	double gap = fake_server_request(f->server, 1)->at - fake_server_request(f->server, 0)->at;
	if (gap < 0.995)
		fail_msg("the retry after \"Retry-After: 1\": expected 1 s later, came %.3f s later", gap);
}

static void test_a_5xx_is_retried(void **state)
{
	struct fixture *f = *state;
	fake_server_queue(f->server, &(struct fake_reply){.status = 503,
	                                                  .headers = {"Retry-After: 0"},
	                                                  .body = "upstream connect error"});
	fake_server_queue(f->server, &HI_STREAM);
	ask_expecting(f, LLM_OK);
	expect_str("the answer after a 503", "Hi!", f->text_at_done);
	expect_requests(f, 2);

	for (int i = 0; i < 3; i++)
		fake_server_queue(f->server,
		                  &(struct fake_reply){.status = 500,
		                                       .headers = {"Retry-After: 0"},
		                                       .body = "{\"error\":{\"message\":\"boom\"}}"});
	ask_expecting(f, LLM_DOWN);
	expect_requests(f, 5);
}

static void test_a_stream_cut_after_text_is_cut_with_the_part_kept(void **state)
{
	struct fixture *f = *state;
	fake_server_queue(f->server,
	                  &(struct fake_reply){.headers = SSE_HEADERS,
	                                       .pieces = {ROLE_CHUNK CHUNK("Partial "), CHUNK("answer")},
	                                       .is_cut = true});
	fake_server_queue(f->server, &HI_STREAM);
	ask_expecting(f, LLM_CUT);
	expect_str("the part kept", "Partial answer", f->text_at_done);
	expect_requests(f, 1);
}

static void test_a_stream_ended_before_done_is_cut(void **state)
{
	struct fixture *f = *state;
	/* A complete HTTP body without [DONE] or a finish_reason. */
	fake_server_queue(f->server,
	                  &(struct fake_reply){.headers = SSE_HEADERS, .pieces = {CHUNK("Half a")}});
	fake_server_queue(f->server, &HI_STREAM);
	ask_expecting(f, LLM_CUT);
	expect_str("the part kept", "Half a", f->text_at_done);
	expect_requests(f, 1);
}

static void test_a_stream_cut_before_any_text_is_retried(void **state)
{
	struct fixture *f = *state;
	fake_server_queue(
	    f->server, &(struct fake_reply){.headers = SSE_HEADERS, .pieces = {ROLE_CHUNK}, .is_cut = true});
	fake_server_queue(f->server, &HI_STREAM);
	ask_expecting(f, LLM_OK);
	expect_str("the answer of the second attempt", "Hi!", f->text_at_done);
	expect_requests(f, 2);
}

static void test_an_error_inside_the_stream_is_rejected(void **state)
{
	struct fixture *f = *state;
	fake_server_queue(f->server, &(struct fake_reply){
	                                 .headers = SSE_HEADERS,
	                                 .pieces = {CHUNK("Hel"), "data: {\"error\":{\"message\":\"The model "
	                                                          "produced invalid content\",\"type\":"
	                                                          "\"model_error\"}}\n\n"}});
	fake_server_queue(f->server, &HI_STREAM);
	ask_expecting(f, LLM_REJECTED);
	if (!strstr(f->detail, "The model produced invalid content"))
		fail_msg("the detail: expected the error's message, got \"%s\"", f->detail);
	expect_requests(f, 1);
}

/* ---- cancelling ---- */

static void test_a_cancelled_call_never_calls_back(void **state)
{
	struct fixture *f = *state;
	fake_server_queue(
	    f->server,
	    &(struct fake_reply){.is_held = true, .headers = SSE_HEADERS, .pieces = {CHUNK("late"), DONE}});
	struct llm_call *call = ask(f);
	WAIT_FOR(&f->loop, fake_server_count(f->server) == 1, "the request at the model");
	llm_cancel(call);
	WAIT_FOR(&f->loop, fake_server_request(f->server, 0)->is_abandoned,
	         "the cancelled call's connection to close");

	/* Cancelled while its stream is under way. */
	fake_server_queue(f->server, &(struct fake_reply){.headers = SSE_HEADERS,
	                                                  .pieces = {CHUNK("Hel"), CHUNK("lo"), DONE},
	                                                  .piece_gap_ms = -1});
	call = ask(f);
	WAIT_FOR(&f->loop, f->n_progress == 1, "the first piece of the second call");
	llm_cancel(call);
	WAIT_FOR(&f->loop, fake_server_request(f->server, 1)->is_abandoned,
	         "the cancelled stream's connection to close");
	fake_server_sync(f->server);
	expect_int("done callbacks of cancelled calls", 0, f->n_done);
	expect_int("progress calls after the cancel", 1, f->n_progress);
	expect_requests(f, 2);
}

int main(void)
{
	test_net_init();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_the_request_carries_model_messages_stream_and_key),
	    T(test_an_sse_stream_gives_the_whole_text_and_progress_as_it_grows),
	    T(test_a_json_completion_instead_of_a_stream_is_read),
	    T(test_an_empty_answer_is_empty),
	    T(test_reported_usage_moves_the_token_scale),
	    T(test_a_rejected_key_is_auth),
	    T(test_no_credit_is_quota),
	    T(test_a_prompt_too_long_is_context),
	    T(test_a_429_is_retried_then_busy),
	    T(test_a_429_waits_for_retry_after_then_succeeds),
	    T(test_a_5xx_is_retried),
	    T(test_a_stream_cut_after_text_is_cut_with_the_part_kept),
	    T(test_a_stream_ended_before_done_is_cut),
	    T(test_a_stream_cut_before_any_text_is_retried),
	    T(test_an_error_inside_the_stream_is_rejected),
	    T(test_a_cancelled_call_never_calls_back),
	};
#undef T
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_net_cleanup();
	return failed;
}
