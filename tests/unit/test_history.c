/* Unit tests for src/lib/history.c: turns, and a history written as the request's JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "lib/history.h"
#include "store/history_json.h"

#include "expect.h"

static void push(struct history *h, enum turn_role role, const char *content)
{
	if (history_push(h, role, content, strlen(content)) != 0)
		fail_msg("history_push(\"%s\"): expected 0", content);
}

static void expect_turn(const struct history *h, size_t i, enum turn_role role, const char *content)
{
	if (i >= h->len)
		fail_msg("expected turn %zu \"%s\", history has %zu turns", i, content, h->len);
	if (h->turns[i].role != role)
		fail_msg("turn %zu: expected role %s, got %s", i, turn_role_name(role),
		         turn_role_name(h->turns[i].role));
	expect_str("turn content", content, h->turns[i].content);
	expect_int("turn len", strlen(content), h->turns[i].len);
}

static void test_role_names_round_trip(void **state)
{
	(void)state;
	static const enum turn_role roles[] = {TURN_SYSTEM, TURN_USER, TURN_ASSISTANT};
	static const char *const names[] = {"system", "user", "assistant"};
	for (size_t i = 0; i < 3; i++) {
		expect_str("turn_role_name", names[i], turn_role_name(roles[i]));
		enum turn_role r;
		expect_int("turn_role_parse of a known name", 0, turn_role_parse(names[i], &r));
		expect_int("parsed role", roles[i], r);
	}
	enum turn_role r;
	expect_int("turn_role_parse(\"tool\")", -1, turn_role_parse("tool", &r));
	expect_int("turn_role_parse(\"User\")", -1, turn_role_parse("User", &r));
	expect_int("turn_role_parse(\"\")", -1, turn_role_parse("", &r));
}

static void test_push_copies_and_drop_front_removes_oldest(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	char text[] = "question";
	for (int i = 0; i < 40; i++)
		push(&h, i % 2 ? TURN_ASSISTANT : TURN_USER, text);
	text[0] = 'Q'; /* the history keeps its own copy */
	expect_turn(&h, 0, TURN_USER, "question");
	expect_int("len after 40 pushes", 40, h.len);
	history_drop_front(&h, 39);
	expect_int("len after dropping 39", 1, h.len);
	expect_turn(&h, 0, TURN_ASSISTANT, "question");
	history_drop_front(&h, 5);
	expect_int("len after dropping more than there is", 0, h.len);
	if (history_push(&h, TURN_USER, NULL, 0) != 0)
		fail_msg("history_push of empty content: expected 0");
	expect_turn(&h, 0, TURN_USER, "");
	history_free(&h);
	expect_int("len after history_free", 0, h.len);
	if (h.turns)
		fail_msg("expected turns NULL after history_free");
	history_free(&h); /* twice is harmless */
}

/* history_write_json writes exactly what jansson's compact dump of history_to_json gives. */
static void expect_written_as_jansson_dumps(const struct history *h)
{
	json_t *tree = history_to_json(h, 0);
	char *want = tree ? json_dumps(tree, JSON_COMPACT) : NULL;
	if (!want)
		fail_msg("jansson could not dump the reference");
	struct buf got;
	buf_init(&got, SIZE_MAX - 1);
	expect_int("history_write_json", BUF_OK, history_write_json(&got, h->turns, h->len));
	expect_str("written JSON", want, buf_str(&got));
	buf_free(&got);
	free(want);
	json_decref(tree);
}

static void test_write_json_matches_jansson(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	expect_written_as_jansson_dumps(&h);
	push(&h, TURN_SYSTEM, "You are helpful.");
	push(&h, TURN_USER, "Привет! \"quoted\" back\\slash a/b \t tab\nnew line\r\b\f \x01\x1f\x7f 😀");
	push(&h, TURN_ASSISTANT, "");
	const char bad[] = "bad \xff\xfe utf-8 \xe2\x82 cut \xed\xa0\x80 surrogate \xc0\xaf overlong end\xf0";
	if (history_push(&h, TURN_USER, bad, sizeof bad - 1) != 0)
		fail_msg("history_push failed");
	const char nul[] = "a\0b";
	if (history_push(&h, TURN_ASSISTANT, nul, sizeof nul - 1) != 0)
		fail_msg("history_push failed");
	expect_written_as_jansson_dumps(&h);

	/* Every single byte value, alone and between text, and pseudo-random byte strings. */
	struct history bytes = HISTORY_INIT;
	for (int c = 0; c < 256; c++) {
		char one[3] = {'x', (char)c, 'y'};
		if (history_push(&bytes, TURN_USER, one + 1, 1) != 0 ||
		    history_push(&bytes, TURN_USER, one, 3) != 0)
			fail_msg("history_push failed");
	}
	uint32_t seed = 12345;
	for (int i = 0; i < 500; i++) {
		char s[40];
		size_t n = (size_t)(i % 40);
		for (size_t k = 0; k < n; k++) {
			seed = seed * 1103515245u + 12345u;
			/* Mostly UTF-8 lead and continuation bytes, so that valid sequences occur too. */
			s[k] = (char)(seed >> 16 & 1 ? 0x80 | (seed >> 8 & 0x7f) : seed >> 8);
		}
		if (history_push(&bytes, TURN_ASSISTANT, s, n) != 0)
			fail_msg("history_push failed");
	}
	expect_written_as_jansson_dumps(&bytes);
	history_free(&bytes);
	history_free(&h);
}

/*
 * Long plain text is passed over a word (8 bytes) at a time: a byte that
 * needs a look must be found at every offset of a word, also next to another.
 */

static void test_write_json_finds_special_bytes_at_every_offset(void **state)
{
	(void)state;
	static const char *const specials[] = {"\x01", "\x1f", "\"", "\\", "\x7f", " ", "\x80",
					       "\xc3\xa9", "\xe2\x82\xac", "\xff", "\n", "\"\\"};
	struct history h = HISTORY_INIT;
	for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++) {
		for (size_t at = 0; at <= 24; at++) {
			char s[64];
			memset(s, 'a' + (int)(at % 26), sizeof s);
			size_t n = strlen(specials[k]);
			memcpy(s + at, specials[k], n);
			if (history_push(&h, TURN_USER, s, at + n + 17) != 0)
				fail_msg("history_push failed");
		}
	}
	expect_written_as_jansson_dumps(&h);
	history_free(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_role_names_round_trip),
		cmocka_unit_test(test_push_copies_and_drop_front_removes_oldest),
		cmocka_unit_test(test_write_json_matches_jansson),
		cmocka_unit_test(test_write_json_finds_special_bytes_at_every_offset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
