/*
 * Unit tests for jsonr_mend (src/lib/jsonr.c): what jansson refuses in the
 * strings of otherwise valid JSON becomes U+FFFD, and a surrogate pair split
 * across two texts is joined. Each mended text must then be read by jansson.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jsonr.h"

#include "expect.h"

/* Mends in, expects out, and jansson to read out as an object whose "s" is want. */
static void expect_mended(const char *in, const char *out, const char *want, struct jsonr_carry *carry)
{
	size_t len = 0;
	char *got = jsonr_mend(in, strlen(in), &len, carry);
	if (!got)
		fail_msg("jsonr_mend(%s): expected \"%s\", got NULL", in, out);
	expect_str(in, out, got);
	expect_int("the mended length", (long long)strlen(out), (long long)len);
	json_error_t err;
	json_t *root = json_loadb(got, len, 0, &err);
	if (!root)
		fail_msg("jansson refuses the mended %s: %s", got, err.text);
	expect_str("the string jansson reads", want, json_string_value(json_object_get(root, "s")));
	json_decref(root);
	free(got);
}

static void test_what_jansson_refuses_becomes_a_replacement_character(void **state)
{
	(void)state;
	expect_mended("{\"s\":\"a\\u0000b\"}", "{\"s\":\"a\\ufffdb\"}",
	              "a\xEF\xBF\xBD"
	              "b",
	              NULL);
	expect_mended("{\"s\":\"a\\ud83d b\"}", "{\"s\":\"a\\ufffd b\"}", "a\xEF\xBF\xBD b", NULL);
	expect_mended("{\"s\":\"a\\uDE00\"}", "{\"s\":\"a\\ufffd\"}", "a\xEF\xBF\xBD", NULL);
	expect_mended("{\"s\":\"a\\ud83d\\u0041\"}", "{\"s\":\"a\\ufffd\\u0041\"}",
	              "a\xEF\xBF\xBD"
	              "A",
	              NULL);
	expect_mended("{\"s\":\"a\xFF\xC0\x80z\"}", "{\"s\":\"a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz\"}",
	              "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz", NULL);
	/* A UTF-8 sequence cut at the end of the string. */
	expect_mended("{\"s\":\"\xF0\x9F\x98\"}", "{\"s\":\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"}",
	              "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", NULL);
}

static void test_what_is_valid_is_kept_as_it_is(void **state)
{
	(void)state;
	/* A pair, an escaped backslash before "u0000", text in other strings and keys. */
	expect_mended("{\"k\\u00e9\":\"\\ud83d\\ude00\",\"s\":\"\\\\u0000 \xD0\xB6\\u0000\"}",
	              "{\"k\\u00e9\":\"\\ud83d\\ude00\",\"s\":\"\\\\u0000 \xD0\xB6\\ufffd\"}",
	              "\\u0000 \xD0\xB6\xEF\xBF\xBD", NULL);
}

static void test_nothing_to_mend_is_null(void **state)
{
	(void)state;
	static const char *const texts[] = {"{\"s\":\"\\ud83d\\ude00 \xF0\x9F\x98\x80\"}", "{\"s\":1",
	                                    "[1,2,\"x\"]", ""};
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		size_t len = 0;
		char *got = jsonr_mend(texts[i], strlen(texts[i]), &len, NULL);
		if (got)
			fail_msg("jsonr_mend(%s): expected NULL (nothing to mend), got %s", texts[i], got);
	}
}

static void test_a_pair_split_across_two_texts_is_joined(void **state)
{
	(void)state;
	struct jsonr_carry carry = {0};
	expect_mended("{\"s\":\"smile \\ud83d\"}", "{\"s\":\"smile \"}", "smile ", &carry);
	expect_int("the half carried", 0xD83D, carry.high);
	expect_mended("{\"s\":\"\\ude00 end\"}", "{\"s\":\"\xF0\x9F\x98\x80 end\"}", "\xF0\x9F\x98\x80 end",
	              &carry);
	expect_int("joined", 1, carry.was_joined);
	expect_int("nothing carried after the join", 0, carry.high);
}

static void test_a_carried_half_not_joined_is_reported(void **state)
{
	(void)state;
	struct jsonr_carry carry = {.high = 0xD83D};
	/* The low half is not at the start of a string: not the other half of the pair. */
	expect_mended("{\"s\":\"x\\ude00\"}", "{\"s\":\"x\\ufffd\"}", "x\xEF\xBF\xBD", &carry);
	expect_int("joined", 0, carry.was_joined);
	expect_int("carried", 0, carry.high);
	/* Without a carry, a high half at a string's end is a replacement character. */
	expect_mended("{\"s\":\"x\\ud83d\"}", "{\"s\":\"x\\ufffd\"}", "x\xEF\xBF\xBD", NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_what_jansson_refuses_becomes_a_replacement_character),
	    cmocka_unit_test(test_what_is_valid_is_kept_as_it_is),
	    cmocka_unit_test(test_nothing_to_mend_is_null),
	    cmocka_unit_test(test_a_pair_split_across_two_texts_is_joined),
	    cmocka_unit_test(test_a_carried_half_not_joined_is_reported),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
