/*
 * Unit tests for update_read, the reader of Updates without a tree
 * (src/update.c over src/jsonr.c). What it reads must decode exactly as
 * update_decode decodes jansson's tree of the same text, which is the judge
 * here. It may refuse a text it is not sure about (update_parse then uses
 * jansson), but it must read the Updates Telegram actually sends.
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

#include "telegram/update.h"

#include "expect.h"
#include "update_difference.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Updates as Telegram writes them; the reader must read every one. */
static const char *const real[] = {
    "{\"update_id\":10001,\"message\":{\"message_id\":1001,\"from\":{\"id\":111001,\"is_bot\":false,"
    "\"first_name\":\"Alice\",\"username\":\"alice\",\"language_code\":\"ru\"},\"chat\":{\"id\":111001,"
    "\"first_name\":\"Alice\",\"username\":\"alice\",\"type\":\"private\"},\"date\":1767225600,"
    "\"text\":\"\\u041f\\u0440\\u0438\\u0432\\u0435\\u0442! /start \\\"q\\\" \\ud83d\\udc4b\\n\","
    "\"entities\":[{\"offset\":8,\"length\":6,\"type\":\"bot_command\"}]}}",
    "{\"update_id\":10002,\"message\":{\"message_id\":55,\"message_thread_id\":7,\"is_topic_message\":true,"
    "\"from\":{\"id\":222,\"is_bot\":false,\"first_name\":\"Bob\"},\"sender_chat\":null,"
    "\"chat\":{\"id\":-1001234567890,\"title\":\"Team\",\"type\":\"supergroup\",\"is_forum\":true},"
    "\"date\":1767225601,\"reply_to_message\":{\"message_id\":54,\"from\":{\"id\":7000000001,"
    "\"is_bot\":true,\"first_name\":\"Bot\",\"username\":\"tgllm_bot\"},\"chat\":{\"id\":-1001234567890,"
    "\"type\":\"supergroup\"},\"date\":1767225500,\"text\":\"earlier answer\"},"
    "\"text\":\"@tgllm_bot and then?\",\"entities\":[{\"offset\":0,\"length\":10,\"type\":\"mention\"},"
    "{\"offset\":11,\"length\":3,\"type\":\"text_mention\",\"user\":{\"id\":42,\"is_bot\":false,"
    "\"first_name\":\"Z\"}}]}}",
    "{\"update_id\":10004,\"message\":{\"message_id\":9,\"from\":{\"id\":5,\"is_bot\":false,"
    "\"first_name\":\"Ann\"},\"chat\":{\"id\":5,\"type\":\"private\"},\"date\":1767225602,"
    "\"photo\":[{\"file_id\":\"a\",\"file_unique_id\":\"b\",\"width\":90,\"height\":90}],"
    "\"caption\":\"what is on it?\",\"entities\":[{\"offset\":0,\"length\":4,\"type\":\"bold\"}]}}",
    "{\"update_id\":10003,\"edited_message\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":\"private\"},"
    "\"date\":1,\"edit_date\":2,\"text\":\"x\"}}",
    "{\"update_id\":10005,\"message\":{\"message_id\":3,\"sender_chat\":{\"id\":-100777,\"type\":\"channel\"},"
    "\"chat\":{\"id\":-100777,\"type\":\"channel\"},\"date\":1,\"text\":\"no sender\"}}",
    "{\"update_id\":10006,\"my_chat_member\":{\"chat\":{\"id\":1,\"type\":\"private\"}}}",
    "{\"update_id\":10007}",
    " {\n  \"update_id\" : 10008 ,\n  \"message\" : {\"message_id\":2,\"chat\":{\"type\":\"group\",\"id\":-5},"
    "\"from\":{\"id\":6,\"first_name\":\"\",\"is_bot\":false},\"text\":\"\"}\t}\r\n",
};

/* Texts the reader may refuse, read here only to compare. */
static const char *const unusual[] = {
    "{\"update_id\":1,\"update_id\":2}",
    "{\"update_id\":1,\"message\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":\"private\"},"
    "\"text\":\"a\",\"text\":\"b\"}}",
    "{\"update_id\":1,\"message\":{\"message_id\":0,\"chat\":{\"id\":0,\"type\":\"private\"}}}",
    "{\"update_id\":1,\"message\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":\"private\"},"
    "\"from\":{\"first_name\":\"x\"},\"text\":\"t\",\"entities\":[{\"type\":\"bold\",\"offset\":-1,"
    "\"length\":1},{\"type\":\"bold\",\"offset\":0},7,{\"type\":\"bold\",\"offset\":0,\"length\":1,"
    "\"user\":{\"id\":1.5}}]}}",
    "{\"update_id\":1,\"message\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":\"private\"},"
    "\"message_thread_id\":\"7\",\"is_topic_message\":1,\"text\":5,\"reply_to_message\":[]}}",
    "{\"update_id\":1,\"message\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":\"private\"},"
    "\"from\":{\"id\":2,\"is_bot\":\"yes\",\"first_name\":7,\"username\":null}}}",
    "{\"update_id\":1,\"message\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":\"private\"},"
    "\"reply_to_message\":{\"message_id\":\"x\",\"from\":5}}}",
    "{\"update_id\":1,\"message\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":\"private\"},"
    "\"text\":\"t\",\"entities\":[{\"type\":\"bold\",\"offset\":-1,\"length\":1}]}}",
    "{\"update_id\":1,\"message\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":\"private\"},"
    "\"text\":\"t\",\"entities\":[{\"type\":\"bold\",\"offset\":0,\"length\":-2}]}}",
    "{\"update_id\":1,\"edited_message\":{},\"channel_post\":{}}",
    "{\"update_id\":1,\"\":{},\"channel_post\":{}}",
    "{\"update_id\":1e3}",
    "{\"update_id\":1,\"message\":null}",
    "{\"update_id\":1,\"m\\u0065ssage\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":\"private\"}}}",
    "{\"update_id\":1,\"a_kind_whose_name_is_longer_than_thirty_one_bytes\":{}}",
    "{\"update_id\":1,\"message\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":\"private\"},"
    "\"text\":\"a\\u0000b\"}}",
    "[{\"update_id\":1}]",
    "{\"update_id\":123456789012345678901}",
};

/* Reads text both ways; returns whether the reader read it. */
static bool compare(const char *json, size_t len)
{
	struct tg_update got;
	if (!update_read(json, len, &got)) {
		if (got.message.text || got.message.entities || got.message.from.first_name || got.update_id)
			fail_msg("a refusal left the update uncleared for %.*s", (int)len, json);
		return false;
	}
	struct tg_update want;
	char err[160] = "";
	json_t *tree = json_loadb(json, len, 0, NULL);
	if (!tree || update_decode(tree, &want, err, sizeof err) != 0)
		fail_msg("the reader read what jansson refuses (%s): %.*s", tree ? err : "malformed",
			 (int)len, json);
	const char *field = update_difference(&want, &got);
	if (field)
		fail_msg("%s: the reader read otherwise than jansson for %.*s", field, (int)len, json);
	update_clear(&want);
	update_clear(&got);
	json_decref(tree);
	return true;
}

static void test_telegrams_updates_are_read_as_jansson_reads_them(void **state)
{
	(void)state;
	for (size_t i = 0; i < COUNT(real); i++)
		if (!compare(real[i], strlen(real[i])))
			fail_msg("the reader refused an ordinary update: %s", real[i]);
}

static void test_unusual_texts_are_refused_or_read_the_same(void **state)
{
	(void)state;
	for (size_t i = 0; i < COUNT(unusual); i++)
		compare(unusual[i], strlen(unusual[i]));
}

/* Every prefix, every byte left out, and every byte replaced by one that changes the grammar. */
static void test_damaged_updates_are_refused_or_read_the_same(void **state)
{
	(void)state;
	static const char swaps[] = "\"\\{}[],: 0-.exn\x01\x80\xc3\xff";
	const char *all[COUNT(real) + COUNT(unusual)];
	memcpy(all, real, sizeof real);
	memcpy(all + COUNT(real), unusual, sizeof unusual);
	for (size_t i = 0; i < COUNT(all); i++) {
		size_t n = strlen(all[i]);
		char *v = malloc(n + 1);
		assert_non_null(v);
		for (size_t at = 0; at < n; at++) {
			compare(all[i], at);
			memcpy(v, all[i], at);
			memcpy(v + at, all[i] + at + 1, n - at - 1);
			compare(v, n - 1);
			memcpy(v, all[i], n);
			for (size_t s = 0; s < sizeof swaps - 1; s++) {
				v[at] = swaps[s];
				compare(v, n);
			}
		}
		free(v);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_telegrams_updates_are_read_as_jansson_reads_them),
	    cmocka_unit_test(test_unusual_texts_are_refused_or_read_the_same),
	    cmocka_unit_test(test_damaged_updates_are_refused_or_read_the_same),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
