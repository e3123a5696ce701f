/* Unit tests for src/history.c: turns, token estimate, trimming, JSON layout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib/history.h"

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

/* Parses text into a history appended to h; returns what history_append_json returned. */
static int append_text(struct history *h, const char *text)
{
	json_error_t jerr;
	json_t *arr = json_loads(text, 0, &jerr);
	if (!arr)
		fail_msg("test JSON does not parse: %s: %s", jerr.text, text);
	int rc = history_append_json(h, arr);
	json_decref(arr);
	return rc;
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

static void test_estimate_is_four_plus_a_third_of_the_bytes(void **state)
{
	(void)state;
	expect_int("empty", 4, history_estimate_tokens("", 0));
	expect_int("1 byte", 5, history_estimate_tokens("a", 1));
	expect_int("3 bytes", 5, history_estimate_tokens("abc", 3));
	expect_int("4 bytes", 6, history_estimate_tokens("abcd", 4));
	/* 12 bytes of Cyrillic: 6 letters, about 3-6 real tokens. */
	expect_int("\"Привет\"", 8, history_estimate_tokens("Привет", strlen("Привет")));
	expect_int("SIZE_MAX bytes", 4 + SIZE_MAX / 3, history_estimate_tokens("", SIZE_MAX));
}

/* U A U A U, each turn 6 bytes, so each costs 4 + 2 = 6 estimated tokens. */
static void make_five_turns(struct history *h)
{
	push(h, TURN_USER, "u1----");
	push(h, TURN_ASSISTANT, "a1----");
	push(h, TURN_USER, "u2----");
	push(h, TURN_ASSISTANT, "a2----");
	push(h, TURN_USER, "u3----");
}

static void test_fit_keeps_newest_turns_within_budget(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	make_five_turns(&h);
	static const struct {
		size_t budget;
		size_t first;
	} cases[] = {
	    {1000, 0}, {30, 0}, /* everything fits, exactly at 30 */
	    {29, 2},            /* 4 turns fit, but they would start with a1 */
	    {24, 2},   {18, 2}, /* u2 a2 u3 */
	    {17, 4},   {12, 4}, /* a2 u3 fit; a2 is dropped */
	    {6, 4},             /* u3 alone */
	    {5, 5},    {0, 5},  /* not even the last turn */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t got = history_fit(&h, cases[i].budget, 1.0);
		if (got != cases[i].first)
			fail_msg("history_fit(budget %zu): expected first turn %zu, got %zu", cases[i].budget,
			         cases[i].first, got);
	}
	history_free(&h);
}

static void test_fit_scales_each_turn_cost(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	make_five_turns(&h);
	expect_int("scale 2, budget 24: two turns, a2 dropped", 4, history_fit(&h, 24, 2.0));
	expect_int("scale 2, budget 36: three turns", 2, history_fit(&h, 36, 2.0));
	expect_int("scale 0.5, budget 15: all five", 0, history_fit(&h, 15, 0.5));
	expect_int("scale 1.5, budget 8: nothing", 5, history_fit(&h, 8, 1.5));
	expect_int("scale NaN counts as 1", 2, history_fit(&h, 18, NAN));
	expect_int("scale 0 counts as 1", 2, history_fit(&h, 18, 0.0));
	expect_int("scale -1 counts as 1", 2, history_fit(&h, 18, -1.0));
	expect_int("scale infinity counts as 1", 2, history_fit(&h, 18, INFINITY));
	history_free(&h);
}

static void test_fit_never_starts_with_an_assistant_turn(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	push(&h, TURN_ASSISTANT, "a");
	push(&h, TURN_ASSISTANT, "b");
	push(&h, TURN_USER, "c");
	expect_int("two leading assistant turns are skipped", 2, history_fit(&h, 1000, 1.0));
	push(&h, TURN_ASSISTANT, "d");
	expect_int("a history of only a trailing assistant turn sends nothing", 4, history_fit(&h, 5, 1.0));
	history_free(&h);

	struct history empty = HISTORY_INIT;
	expect_int("empty history", 0, history_fit(&empty, 100, 1.0));
}

static void test_fit_on_huge_turn_returns_len(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	push(&h, TURN_USER, "short");
	size_t n = 100000;
	char *big = malloc(n + 1);
	if (!big)
		fail_msg("out of memory in the test");
	memset(big, 'x', n);
	big[n] = '\0';
	push(&h, TURN_USER, big);
	free(big);
	expect_int("a 100000-byte message with budget 1000", 2, history_fit(&h, 1000, 1.0));
	history_free(&h);
}

static void test_json_layout_is_role_and_content(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	push(&h, TURN_SYSTEM, "Be brief.");
	push(&h, TURN_USER, "Привет 👋");
	push(&h, TURN_ASSISTANT, "Hi \"there\"\n");
	json_t *arr = history_to_json(&h, 0);
	if (!arr)
		fail_msg("history_to_json: expected an array, got NULL");
	char *text = json_dumps(arr, JSON_COMPACT);
	expect_str("JSON of the history",
	           "[{\"role\":\"system\",\"content\":\"Be brief.\"},"
	           "{\"role\":\"user\",\"content\":\"Привет 👋\"},"
	           "{\"role\":\"assistant\",\"content\":\"Hi \\\"there\\\"\\n\"}]",
	           text);
	free(text);
	json_decref(arr);

	arr = history_to_json(&h, 2);
	expect_int("turns from index 2", 1, json_array_size(arr));
	json_decref(arr);
	arr = history_to_json(&h, 3);
	expect_int("turns from len", 0, json_array_size(arr));
	json_decref(arr);
	history_free(&h);
}

static void test_json_round_trip_keeps_cyrillic_and_emoji(void **state)
{
	(void)state;
	static const char *const texts[] = {
	    "Привет! Как дела?",
	    "Хорошо 😀👍🏽, а у тебя?",
	    "🇷🇺 флаг и 家族 и ё",
	    "",
	    "line\nbreaks\tand \"quotes\" \\ \x01",
	};
	struct history h = HISTORY_INIT;
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
		push(&h, i % 2 ? TURN_ASSISTANT : TURN_USER, texts[i]);
	json_t *arr = history_to_json(&h, 0);
	char *dumped = json_dumps(arr, JSON_ENSURE_ASCII); /* as Python's json.dumps writes */
	json_decref(arr);
	if (!dumped)
		fail_msg("json_dumps failed");

	struct history back = HISTORY_INIT;
	expect_int("entries skipped", 0, append_text(&back, dumped));
	free(dumped);
	expect_int("turns read back", h.len, back.len);
	for (size_t i = 0; i < h.len; i++)
		expect_turn(&back, i, h.turns[i].role, h.turns[i].content);
	history_free(&back);
	history_free(&h);
}

static void test_original_bot_file_with_escapes_loads(void **state)
{
	(void)state;
	/* json.dumps(history) in the Python bot escapes non-ASCII, emoji as surrogate pairs. */
	struct history h = HISTORY_INIT;
	int rc = append_text(&h, "[{\"role\": \"user\", \"content\": \"\\u041f\\u0440\\u0438"
	                         "\\u0432\\u0435\\u0442 \\ud83d\\udc4b\"}, "
	                         "{\"role\": \"assistant\", \"content\": \"Hello!\"}]");
	expect_int("entries skipped", 0, rc);
	expect_turn(&h, 0, TURN_USER, "Привет 👋");
	expect_turn(&h, 1, TURN_ASSISTANT, "Hello!");
	history_free(&h);
}

static void test_content_parts_are_concatenated(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	int rc = append_text(&h, "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Что на \"},"
	                         "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.png\"}},"
	                         "{\"type\":\"text\",\"text\":\"картинке?\"},{\"type\":\"text\"},7]},"
	                         "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"\"}]}]");
	expect_int("entries skipped", 0, rc);
	expect_turn(&h, 0, TURN_USER, "Что на картинке?");
	expect_turn(&h, 1, TURN_ASSISTANT, "");
	history_free(&h);
}

static void test_bad_entries_are_skipped_and_counted(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	push(&h, TURN_SYSTEM, "already here");
	int rc = append_text(&h, "[42, \"user\", null, [],"
	                         "{\"role\":\"user\"},"
	                         "{\"role\":\"user\",\"content\":\"first\"},"
	                         "{\"role\":\"tool\",\"content\":\"x\"},"
	                         "{\"role\":1,\"content\":\"x\"},"
	                         "{\"content\":\"x\"},"
	                         "{\"role\":\"assistant\",\"content\":null},"
	                         "{\"role\":\"assistant\",\"content\":{\"text\":\"x\"}},"
	                         "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]},"
	                         "{\"role\":\"assistant\",\"content\":\"second\"}]");
	expect_int("entries skipped", 11, rc);
	expect_int("turns after append", 3, h.len);
	expect_turn(&h, 0, TURN_SYSTEM, "already here");
	expect_turn(&h, 1, TURN_USER, "first");
	expect_turn(&h, 2, TURN_ASSISTANT, "second");
	history_free(&h);
}

static void test_append_json_of_non_array_is_an_error(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	json_t *obj = json_pack("{s:s, s:s}", "role", "user", "content", "hi");
	expect_int("history_append_json of an object", -1, history_append_json(&h, obj));
	expect_int("history_append_json of NULL", -1, history_append_json(&h, NULL));
	expect_int("turns after failed appends", 0, h.len);
	json_decref(obj);
	history_free(&h);
}

static void test_invalid_utf8_is_saved_as_replacement_chars(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	/* A stray byte, a cut 3-byte sequence, an encoded surrogate, then valid text. */
	push(&h, TURN_USER,
	     "a\xff"
	     "b\xe2\x82"
	     "c\xed\xa0\x80"
	     "d ok ё");
	json_t *arr = history_to_json(&h, 0);
	if (!arr)
		fail_msg("history_to_json: expected an array despite invalid UTF-8, got NULL");
	const char *content = json_string_value(json_object_get(json_array_get(arr, 0), "content"));
	expect_str("repaired content",
	           "a\xEF\xBF\xBD"
	           "b\xEF\xBF\xBD\xEF\xBF\xBD"
	           "c\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
	           "d ok ё",
	           content);
	json_decref(arr);
	history_free(&h);
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
	    cmocka_unit_test(test_write_json_finds_special_bytes_at_every_offset),
	    cmocka_unit_test(test_push_copies_and_drop_front_removes_oldest),
	    cmocka_unit_test(test_estimate_is_four_plus_a_third_of_the_bytes),
	    cmocka_unit_test(test_fit_keeps_newest_turns_within_budget),
	    cmocka_unit_test(test_fit_scales_each_turn_cost),
	    cmocka_unit_test(test_fit_never_starts_with_an_assistant_turn),
	    cmocka_unit_test(test_fit_on_huge_turn_returns_len),
	    cmocka_unit_test(test_json_layout_is_role_and_content),
	    cmocka_unit_test(test_json_round_trip_keeps_cyrillic_and_emoji),
	    cmocka_unit_test(test_original_bot_file_with_escapes_loads),
	    cmocka_unit_test(test_content_parts_are_concatenated),
	    cmocka_unit_test(test_bad_entries_are_skipped_and_counted),
	    cmocka_unit_test(test_append_json_of_non_array_is_an_error),
	    cmocka_unit_test(test_invalid_utf8_is_saved_as_replacement_chars),
	    cmocka_unit_test(test_write_json_matches_jansson),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
