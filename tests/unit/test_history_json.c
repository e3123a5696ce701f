/* Unit tests for src/store/history_json.c: the original bot's history layout, read and written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "store/history_json.h"

#include "lib/buf.h"

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

/* A picture stays in its turn (the Python bot's and ours): text, image and file parts, others left out. */
static void test_content_parts_are_kept_as_parts(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	int rc = append_text(&h, "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Что на \"},"
	                         "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.png\"}},"
	                         "{\"type\":\"text\",\"text\":\"картинке?\"},{\"type\":\"text\"},7]},"
	                         "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"\"}]},"
	                         "{\"role\":\"user\",\"content\":[{\"type\":\"audio\"}]}]");
	expect_int("entries skipped (the one without a part we know)", 1, rc);
	expect_turn(&h, 0, TURN_USER,
	            "[{\"type\":\"text\",\"text\":\"Что на \"},{\"type\":\"image_url\",\"image_url\":{\"url\":"
	            "\"https://x/y.png\"}},{\"type\":\"text\",\"text\":\"картинке?\"}]");
	expect_int("a turn of parts", 1, h.turns[0].is_parts);
	expect_turn(&h, 1, TURN_ASSISTANT, "[{\"type\":\"text\",\"text\":\"\"}]");

	/* Written back, the parts are an array again, not a string holding one. */
	json_t *arr = history_to_json(&h, 0);
	char *text = json_dumps(arr, JSON_COMPACT);
	expect_str("JSON of the history",
	           "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Что на \"},"
	           "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.png\"}},"
	           "{\"type\":\"text\",\"text\":\"картинке?\"}]},"
	           "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"\"}]}]",
	           text);
	free(text);
	json_decref(arr);

	/* And the model request carries them as they are. */
	struct buf b;
	buf_init(&b, 1u << 20);
	expect_int("history_write_json", BUF_OK, history_write_json(&b, h.turns, 1));
	expect_str("request messages",
	           "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Что на \"},"
	           "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.png\"}},"
	           "{\"type\":\"text\",\"text\":\"картинке?\"}]}]",
	           buf_str(&b));
	buf_free(&b);
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

/* history_read_text_turns reads what history_append_json reads from jansson's tree, turn for turn. */
static void test_text_turns_read_without_a_tree_as_jansson_reads_them(void **state)
{
	(void)state;
	static const char *const texts[] = {
	    "[]",
	    " [ ] \n",
	    "[{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"\"}]",
	    /* the original bot's json.dumps: spaces, \u escapes, "/" escaped */
	    "[{\"role\": \"system\", \"content\": \"\\u0411\\u0443\\u0434\\u044c \\/ \\ud83d\\udc4b\"}, "
	    "{\"role\": \"user\", \"content\": \"a\\nb\\t\\\"c\\\"\"}]",
	    /* other members are passed over, as the tree's reader ignores them */
	    "[{\"name\":\"x\",\"role\":\"user\",\"extra\":{\"a\":[1,2.5,null,true]},\"content\":\"q\"}]",
	    "[{\"content\":\"answer first\",\"role\":\"assistant\"}]",
	};
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		struct history fast = HISTORY_INIT, tree = HISTORY_INIT;
		push(&fast, TURN_SYSTEM, "kept");
		push(&tree, TURN_SYSTEM, "kept");
		expect_int(texts[i], 1, history_read_text_turns(&fast, texts[i], strlen(texts[i])));
		expect_int(texts[i], 0, append_text(&tree, texts[i]));
		expect_int("turns read", (long long)tree.len, (long long)fast.len);
		for (size_t t = 0; t < tree.len; t++) {
			expect_turn(&fast, t, tree.turns[t].role, tree.turns[t].content);
			expect_int("is_parts", 0, fast.turns[t].is_parts);
		}
		history_free(&fast);
		history_free(&tree);
	}
}

/* Anything else is left to jansson (0), with nothing appended: the reader is only a shortcut. */
static void test_text_turns_refuse_what_jansson_must_read(void **state)
{
	(void)state;
	static const char *const texts[] = {
	    "",
	    "{}",
	    "[{\"role\":\"user\",\"content\":\"ok\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a part\"}]}]",
	    "[{\"role\":\"user\",\"content\":\"ok\"},{\"role\":\"tool\",\"content\":\"an unknown role\"}]",
	    "[{\"role\":\"user\",\"content\":\"ok\"},{\"role\":\"user\"}]",
	    "[{\"role\":\"user\",\"content\":\"ok\"},\"not an object\"]",
	    "[{\"role\":\"user\",\"content\":\"first\",\"content\":\"jansson keeps this one\"}]",
	    "[{\"role\":\"user\",\"content\":7}]",
	    "[{\"role\":\"user\",\"content\":\"a \\u0000 in it\"}]",
	    "[{\"role\":\"user\",\"content\":\"ok\"}] trailing",
	    "[{\"role\":\"user\",\"content\":\"ok\"},]",
	    "[{\"role\":\"user\",\"content\":\"ok\"}",
	    "[{\"role\":\"user\",\"content\":\"\xff not UTF-8\"}]",
	};
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		struct history h = HISTORY_INIT;
		push(&h, TURN_SYSTEM, "kept");
		expect_int(texts[i], 0, history_read_text_turns(&h, texts[i], strlen(texts[i])));
		expect_int("turns after a refusal", 1, (long long)h.len);
		expect_turn(&h, 0, TURN_SYSTEM, "kept");
		history_free(&h);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_layout_is_role_and_content),
		cmocka_unit_test(test_json_round_trip_keeps_cyrillic_and_emoji),
		cmocka_unit_test(test_original_bot_file_with_escapes_loads),
		cmocka_unit_test(test_content_parts_are_kept_as_parts),
		cmocka_unit_test(test_bad_entries_are_skipped_and_counted),
		cmocka_unit_test(test_append_json_of_non_array_is_an_error),
		cmocka_unit_test(test_invalid_utf8_is_saved_as_replacement_chars),
		cmocka_unit_test(test_text_turns_read_without_a_tree_as_jansson_reads_them),
		cmocka_unit_test(test_text_turns_refuse_what_jansson_must_read),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
