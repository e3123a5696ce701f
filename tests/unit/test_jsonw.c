/* Unit tests for src/lib/jsonw.c: JSON written straight into a buffer, as jansson would write it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jsonw.h"

#include "expect.h"

static void test_integers_are_written_as_printf_writes_them(void **state)
{
	(void)state;
	const long long values[] = {
	    0, 1, -1, 9, 10, -10, 4096, 1234567890123LL, -1001234567890LL, LLONG_MAX, LLONG_MIN};
	for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
		struct buf b;
		buf_init(&b, 64);
		if (jsonw_int(&b, values[i]) != BUF_OK)
			fail_msg("jsonw_int(%lld): expected BUF_OK", values[i]);
		char want[32];
		snprintf(want, sizeof want, "%lld", values[i]);
		expect_str("an integer", want, buf_str(&b));
		buf_free(&b);
	}
}

static void test_an_object_of_members_is_valid_json(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, SIZE_MAX - 1);
	int rc = buf_append_str(&b, "{");
	if (rc == BUF_OK)
		rc = jsonw_member_int(&b, "chat_id", -1001234567890LL);
	if (rc == BUF_OK)
		rc =
		    jsonw_member_string(&b, "text", "Привет \"мир\"\n\x01/", strlen("Привет \"мир\"\n\x01/"));
	char *text = jsonw_finish_object(&b, rc);
	if (!text)
		fail_msg("expected an object");
	expect_str("the object", "{\"chat_id\":-1001234567890,\"text\":\"Привет \\\"мир\\\"\\n\\u0001/\"}",
	           text);
	json_t *parsed = json_loads(text, 0, NULL);
	if (!parsed)
		fail_msg("expected valid JSON, got %s", text);
	expect_int("chat_id read back", -1001234567890LL,
	           json_integer_value(json_object_get(parsed, "chat_id")));
	json_decref(parsed);
	free(text);
}

static void test_a_failed_write_hands_over_nothing(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 8); /* too small for the member */
	int rc = buf_append_str(&b, "{");
	if (rc == BUF_OK)
		rc = jsonw_member_int(&b, "a_long_key", 1);
	expect_int("the member does not fit", BUF_TOO_BIG, rc);
	if (jsonw_finish_object(&b, rc))
		fail_msg("expected NULL after a failed write");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_integers_are_written_as_printf_writes_them),
	    cmocka_unit_test(test_an_object_of_members_is_valid_json),
	    cmocka_unit_test(test_a_failed_write_hands_over_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
