/* Unit tests for tg_answer_decode (src/telegram/tg.c): reading the Bot API's answers. */
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

#include "telegram/tg.h"

#include "expect.h"

/* Telegram's answer to sendMessage, as it writes it (the message echoed whole). */
static const char sent[] =
    "{\"ok\":true,\"result\":{\"message_id\":4217,\"from\":{\"id\":7000000001,\"is_bot\":true,"
    "\"first_name\":\"Bot \\\"q\\\" {x}\",\"username\":\"tgllm_bot\"},\"chat\":{\"id\":100000,"
    "\"first_name\":\"User\",\"type\":\"private\"},\"date\":1767225600,\"reply_to_message\":{\"message_id\":"
    "4216,\"text\":\"]}\"},\"text\":\"Answer bold3 code7\",\"entities\":[{\"offset\":7,\"length\":5,"
    "\"type\":\"bold\"},{\"offset\":13,\"length\":5,\"type\":\"code\"}]}}";

/* What jansson reads in body: whether it is a success, and the result's message_id. */
static bool reference(const char *body, size_t len, int64_t *message_id)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	bool ok = json_is_true(json_object_get(root, "ok"));
	json_t *id = json_object_get(json_object_get(root, "result"), "message_id");
	*message_id = ok && json_is_integer(id) ? json_integer_value(id) : 0;
	json_decref(root);
	return ok;
}

static void expect_decoded(const char *body, bool ok, int64_t message_id, bool has_tree)
{
	struct tg_answer a;
	tg_answer_decode(&a, body, strlen(body), 200);
	char what[160];
	snprintf(what, sizeof what, "ok of %.100s", body);
	expect_int(what, ok, a.result.ok);
	snprintf(what, sizeof what, "message_id of %.100s", body);
	expect_int(what, message_id, a.result.message_id);
	snprintf(what, sizeof what, "a result tree for %.100s", body);
	expect_int(what, has_tree, a.result.result != NULL);
	tg_answer_free(&a);
}

static void test_plain_successes_need_no_tree(void **state)
{
	(void)state;
	expect_decoded("{\"ok\":true,\"result\":true}", true, 0, false);
	expect_decoded("{\"ok\":true,\"result\":true}\n", true, 0, false);
	expect_decoded(sent, true, 4217, false);
	expect_decoded("{\"ok\":true,\"result\":{\"message_id\":5}}", true, 5, false);
	expect_decoded("{\"ok\":true,\"result\":{\"chat\":{\"id\":1},\"message_id\":7}}", true, 7, false);
}

static void test_other_shapes_go_to_jansson(void **state)
{
	(void)state;
	/* Other spacing or order: the tree, and message_id still read. */
	expect_decoded("{\"ok\": true, \"result\": {\"message_id\": 42}}", true, 42, true);
	expect_decoded("{\"result\":true,\"ok\":true}", true, 0, true);
	/* Results the callers read whole; a list only when it is well formed and all of the result. */
	expect_decoded("{\"ok\": true, \"result\": [{\"update_id\":1}]}", true, 0, true);
	expect_decoded("{\"ok\":true,\"result\":[{\"update_id\":1}],\"more\":[2]}", true, 0, true);
	expect_decoded("{\"ok\":true,\"result\":[{\"update_id\":1,\"x\":1e5}]}", true, 0, true);
	expect_decoded("{\"ok\":true,\"result\":{\"id\":1,\"is_bot\":true,\"username\":\"b\"}}", true, 0, true);
	/* A message_id the scanner does not take: zero, given twice (jansson keeps the last), or too many digits. */
	expect_decoded("{\"ok\":true,\"result\":{\"message_id\":1,\"message_id\":2}}", true, 2, true);
	expect_decoded("{\"ok\":true,\"result\":{\"message_id\":0}}", true, 0, true);
	expect_decoded("{\"ok\":true,\"result\":{\"message_id\":1234567890123456789}}", true, 1234567890123456789,
		       true);
}

static const char updates[] =
    "{\"ok\":true,\"result\":[{\"update_id\":5,\"message\":{\"message_id\":1,\"chat\":{\"id\":1,"
    "\"type\":\"private\"},\"text\":\"]} ,[\"}} ,\n {\"update_id\":6,\"edited_message\":{}}] }\n";

static void test_a_list_is_read_as_a_tree(void **state)
{
	(void)state;
	struct tg_answer a;
	tg_answer_decode(&a, updates, strlen(updates), 200);
	expect_int("ok of a list", true, a.result.ok);
	expect_int("a list of two updates", 2, (long long)json_array_size(a.result.result));
	tg_answer_free(&a);
	expect_decoded("{\"ok\":true,\"result\":[]}", true, 0, true);
}

static void test_failures_and_broken_bodies(void **state)
{
	(void)state;
	const char flood[] = "{\"ok\":false,\"error_code\":429,\"description\":\"Too Many Requests: retry after 5\","
			     "\"parameters\":{\"retry_after\":5}}";
	struct tg_answer a;
	tg_answer_decode(&a, flood, sizeof flood - 1, 429);
	expect_int("ok of a 429", false, a.result.ok);
	expect_int("error_code of a 429", 429, a.result.error_code);
	expect_int("retry_after of a 429", 5, a.retry_after);
	tg_answer_free(&a);

	tg_answer_decode(&a, "<html>Bad Gateway</html>", 24, 502);
	expect_int("ok of an HTML page", false, a.result.ok);
	expect_int("error_code of an HTML page", 502, a.result.error_code);
	tg_answer_free(&a);

	/* Cut short, or with brackets that close too early: never a success. */
	expect_decoded("{\"ok\":true,\"result\":{\"message_id\":42", false, 0, false);
	expect_decoded("{\"ok\":true,\"result\":{\"message_id\":42,\"chat\":{\"id\":1}}", false, 0, false);
	expect_decoded("{\"ok\":true,\"result\":{\"message_id\":42}}}", false, 0, false);
	expect_decoded("{\"ok\":true,\"result\":{\"message_id\":42,\"t\":\"}}", false, 0, false);
	expect_decoded("{\"ok\":true,\"result\":tru", false, 0, false);
	expect_decoded("", false, 0, false);
}

/* Every prefix of real answers: the scanner never says more than jansson reads. */
static void test_every_prefix_reads_as_jansson_reads(void **state)
{
	(void)state;
	const char *const bodies[] = {sent, updates, "{\"ok\":true,\"result\":true}",
				      "{\"ok\":true,\"result\":{\"message_id\":31,\"text\":\"a\\\\\\\"}{[\"}}"};
	for (size_t k = 0; k < sizeof bodies / sizeof bodies[0]; k++) {
		size_t n = strlen(bodies[k]);
		for (size_t len = 0; len <= n; len++) {
			int64_t want_id;
			bool want_ok = reference(bodies[k], len, &want_id);
			struct tg_answer a;
			tg_answer_decode(&a, bodies[k], len, 200);
			if (a.result.ok != want_ok || a.result.message_id != want_id)
				fail_msg("%zu bytes of answer %zu: read ok=%d id=%lld, jansson ok=%d id=%lld", len, k,
					 a.result.ok, (long long)a.result.message_id, want_ok, (long long)want_id);
			tg_answer_free(&a);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_successes_need_no_tree),
	    cmocka_unit_test(test_other_shapes_go_to_jansson),
	    cmocka_unit_test(test_a_list_is_read_as_a_tree),
	    cmocka_unit_test(test_failures_and_broken_bodies),
	    cmocka_unit_test(test_every_prefix_reads_as_jansson_reads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
