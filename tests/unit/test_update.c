/* Unit tests for src/telegram/update.c: Bot API Update JSON -> struct tg_update. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "telegram/update.h"

#include "expect.h"

static void decode_ok(const char *json, struct tg_update *u)
{
	char err[256] = "";
	if (update_parse(json, strlen(json), u, err, sizeof err) != 0)
		fail_msg("update_parse: expected success, got error \"%s\" for %s", err, json);
}

static void expect_decode_error(const char *json, size_t len, const char *want)
{
	struct tg_update u;
	char err[256] = "";
	if (update_parse(json, len, &u, err, sizeof err) != -1)
		fail_msg("update_parse: expected -1 for %.*s", (int)len, json);
	if (!strstr(err, want))
		fail_msg("update_parse: expected a reason containing \"%s\", got \"%s\"", want, err);
	if (u.message.text || u.message.entities || u.message.from.first_name)
		fail_msg("update_parse: expected a cleared update after an error");
}

static void test_private_text_message_is_decoded(void **state)
{
	(void)state;
	struct tg_update u;
	decode_ok("{\"update_id\":900000001,\"message\":{\"message_id\":17,"
	          "\"from\":{\"id\":123456789,\"is_bot\":false,\"first_name\":\"Анна\","
	          "\"username\":\"anna_k\",\"language_code\":\"ru\"},"
	          "\"chat\":{\"id\":123456789,\"first_name\":\"Анна\",\"type\":\"private\"},"
	          "\"date\":1732566000,\"text\":\"Привет! 👋\"}}",
	          &u);
	expect_int("update_id", 900000001, u.update_id);
	expect_int("kind", TG_UPDATE_MESSAGE, u.kind);
	expect_str("kind_name", "message", u.kind_name);
	expect_int("message_id", 17, u.message.message_id);
	expect_int("chat_id", 123456789, u.message.chat_id);
	expect_int("chat_type", TG_CHAT_PRIVATE, u.message.chat_type);
	expect_int("has_from", 1, u.message.has_from);
	expect_int("from.id", 123456789, u.message.from.id);
	expect_int("from.is_bot", 0, u.message.from.is_bot);
	expect_str("from.first_name", "Анна", u.message.from.first_name);
	expect_str("from.username", "anna_k", u.message.from.username);
	expect_str("from.language_code", "ru", u.message.from.language_code);
	expect_str("text", "Привет! 👋", u.message.text);
	expect_int("n_entities", 0, u.message.n_entities);
	expect_int("thread_id", 0, u.message.thread_id);
	expect_int("reply_to_message_id", 0, u.message.reply_to_message_id);
	update_clear(&u);
}

static void test_group_message_with_mention_entity(void **state)
{
	(void)state;
	struct tg_update u;
	decode_ok("{\"update_id\":2,\"message\":{\"message_id\":5,"
	          "\"from\":{\"id\":11,\"is_bot\":false,\"first_name\":\"Bob\"},"
	          "\"chat\":{\"id\":-1001234567890,\"title\":\"Team\",\"type\":\"supergroup\"},"
	          "\"date\":1,\"text\":\"@tgllm_bot what is 2+2?\","
	          "\"entities\":[{\"offset\":0,\"length\":10,\"type\":\"mention\"}]}}",
	          &u);
	expect_int("chat_id", -1001234567890LL, u.message.chat_id);
	expect_int("chat_type", TG_CHAT_SUPERGROUP, u.message.chat_type);
	expect_int("n_entities", 1, u.message.n_entities);
	expect_str("entity type", "mention", u.message.entities[0].type);
	expect_int("entity offset", 0, u.message.entities[0].offset);
	expect_int("entity length", 10, u.message.entities[0].length);
	expect_int("entity user_id", 0, u.message.entities[0].user_id);
	update_clear(&u);
}

static void test_chat_types_are_mapped(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		enum tg_chat_type type;
	} cases[] = {
	    {"private", TG_CHAT_PRIVATE}, {"group", TG_CHAT_GROUP},  {"supergroup", TG_CHAT_SUPERGROUP},
	    {"channel", TG_CHAT_CHANNEL}, {"sender", TG_CHAT_OTHER},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char json[256];
		snprintf(json, sizeof json,
		         "{\"update_id\":1,\"message\":{\"message_id\":1,"
		         "\"chat\":{\"id\":1,\"type\":\"%s\"},\"text\":\"x\"}}",
		         cases[i].name);
		struct tg_update u;
		decode_ok(json, &u);
		if (u.message.chat_type != cases[i].type)
			fail_msg("chat type \"%s\": expected %d, got %d", cases[i].name, cases[i].type,
			         u.message.chat_type);
		update_clear(&u);
	}
}

static void test_text_mention_and_command_entities(void **state)
{
	(void)state;
	struct tg_update u;
	decode_ok("{\"update_id\":3,\"message\":{\"message_id\":6,"
	          "\"from\":{\"id\":11,\"first_name\":\"Bob\"},"
	          "\"chat\":{\"id\":-42,\"type\":\"group\"},\"text\":\"/new@tgllm_bot Ann\","
	          "\"entities\":[{\"offset\":0,\"length\":14,\"type\":\"bot_command\"},"
	          "{\"offset\":15,\"length\":3,\"type\":\"text_mention\","
	          "\"user\":{\"id\":777,\"is_bot\":false,\"first_name\":\"Ann\"}}]}}",
	          &u);
	expect_int("chat_type", TG_CHAT_GROUP, u.message.chat_type);
	expect_int("n_entities", 2, u.message.n_entities);
	expect_str("entity 0 type", "bot_command", u.message.entities[0].type);
	expect_str("entity 1 type", "text_mention", u.message.entities[1].type);
	expect_int("entity 1 offset", 15, u.message.entities[1].offset);
	expect_int("entity 1 user_id", 777, u.message.entities[1].user_id);
	update_clear(&u);
}

static void test_forum_topic_message_has_thread_id(void **state)
{
	(void)state;
	struct tg_update u;
	decode_ok("{\"update_id\":4,\"message\":{\"message_id\":90,\"message_thread_id\":88,"
	          "\"is_topic_message\":true,\"from\":{\"id\":11,\"first_name\":\"Bob\"},"
	          "\"chat\":{\"id\":-1009,\"type\":\"supergroup\",\"is_forum\":true},"
	          "\"text\":\"hello topic\"}}",
	          &u);
	expect_int("thread_id", 88, u.message.thread_id);
	expect_int("is_topic_message", 1, u.message.is_topic_message);
	expect_str("text", "hello topic", u.message.text);
	update_clear(&u);
}

static void test_user_without_username_or_first_name(void **state)
{
	(void)state;
	struct tg_update u;
	decode_ok("{\"update_id\":5,\"message\":{\"message_id\":1,\"from\":{\"id\":12},"
	          "\"chat\":{\"id\":12,\"type\":\"private\"},\"text\":\"hi\"}}",
	          &u);
	expect_int("has_from", 1, u.message.has_from);
	expect_int("from.id", 12, u.message.from.id);
	expect_null("from.username", u.message.from.username);
	expect_null("from.language_code", u.message.from.language_code);
	expect_str("from.first_name defaults to empty", "", u.message.from.first_name);
	update_clear(&u);
}

static void test_message_without_from_has_no_sender(void **state)
{
	(void)state;
	struct tg_update u;
	/* An anonymous group admin writes as the chat (sender_chat), with no "from". */
	decode_ok("{\"update_id\":6,\"message\":{\"message_id\":2,"
	          "\"sender_chat\":{\"id\":-1005,\"type\":\"supergroup\"},"
	          "\"chat\":{\"id\":-1005,\"type\":\"supergroup\"},\"text\":\"as admin\"}}",
	          &u);
	expect_int("has_from", 0, u.message.has_from);
	expect_int("from.id", 0, u.message.from.id);
	expect_null("from.first_name", u.message.from.first_name);
	expect_str("text", "as admin", u.message.text);
	update_clear(&u);
}

static void test_sticker_and_service_messages_have_no_text(void **state)
{
	(void)state;
	static const char *const cases[] = {
	    "{\"update_id\":7,\"message\":{\"message_id\":3,\"from\":{\"id\":1},"
	    "\"chat\":{\"id\":1,\"type\":\"private\"},"
	    "\"sticker\":{\"file_id\":\"CAAC\",\"emoji\":\"😀\"}}}",
	    "{\"update_id\":9,\"message\":{\"message_id\":5,\"from\":{\"id\":1},"
	    "\"chat\":{\"id\":-5,\"type\":\"group\"},"
	    "\"new_chat_members\":[{\"id\":2,\"first_name\":\"New\"}]}}",
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct tg_update u;
		decode_ok(cases[i], &u);
		expect_int("kind", TG_UPDATE_MESSAGE, u.kind);
		if (u.message.text)
			fail_msg("case %zu: expected no text, got \"%s\"", i, u.message.text);
		expect_int("n_entities", 0, u.message.n_entities);
		expect_int("media", TG_MEDIA_NONE, u.message.media.kind);
		update_clear(&u);
	}
}

/* A photo's caption is no text; the largest size that may be downloaded is the one to read. */
static void test_photo_has_its_largest_size_and_caption(void **state)
{
	(void)state;
	struct tg_update u;
	decode_ok("{\"update_id\":8,\"message\":{\"message_id\":4,\"from\":{\"id\":1},"
	          "\"chat\":{\"id\":1,\"type\":\"private\"},\"photo\":["
	          "{\"file_id\":\"small\",\"width\":90,\"height\":60,\"file_size\":1000},"
	          "{\"file_id\":\"huge\",\"width\":9000,\"height\":6000,\"file_size\":30000000},"
	          "{\"file_id\":\"big\",\"width\":1280,\"height\":853,\"file_size\":200000}],"
	          "\"caption\":\"look at this @bot\","
	          "\"caption_entities\":[{\"offset\":13,\"length\":4,\"type\":\"mention\"}]}}",
	          &u);
	if (u.message.text)
		fail_msg("expected no text, got \"%s\"", u.message.text);
	expect_int("media", TG_MEDIA_PHOTO, u.message.media.kind);
	expect_str("file_id", "big", u.message.media.file_id);
	expect_int("file_size", 200000, u.message.media.file_size);
	expect_str("mime_type", "image/jpeg", u.message.media.mime_type);
	expect_str("caption", "look at this @bot", u.message.caption);
	expect_int("caption entities", 1, u.message.n_entities);
	update_clear(&u);

	/* Every size over the limit: the largest, so that the user is told it is too big. */
	decode_ok("{\"update_id\":8,\"message\":{\"message_id\":4,\"chat\":{\"id\":1,\"type\":\"private\"},"
	          "\"photo\":[{\"file_id\":\"a\",\"width\":10,\"height\":10,\"file_size\":30000000},"
	          "{\"file_id\":\"b\",\"width\":20,\"height\":20,\"file_size\":40000000},{\"width\":1}]}}",
	          &u);
	expect_str("file_id", "b", u.message.media.file_id);
	expect_int("file_size", 40000000, u.message.media.file_size);
	update_clear(&u);
}

static void test_voice_audio_video_note_and_document_are_files(void **state)
{
	(void)state;
	static const struct {
		const char *field;
		enum tg_media_kind kind;
	} cases[] = {
	    {"voice", TG_MEDIA_VOICE},
	    {"audio", TG_MEDIA_AUDIO},
	    {"video_note", TG_MEDIA_VIDEO_NOTE},
	    {"document", TG_MEDIA_DOCUMENT},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char json[512];
		snprintf(json, sizeof json,
		         "{\"update_id\":1,\"message\":{\"message_id\":2,\"chat\":{\"id\":1,\"type\":\"private\"},"
		         "\"%s\":{\"file_id\":\"F%zu\",\"file_size\":1234,\"mime_type\":\"audio/ogg\","
		         "\"file_name\":\"a.txt\",\"duration\":3}}}",
		         cases[i].field, i);
		struct tg_update u;
		decode_ok(json, &u);
		expect_int(cases[i].field, cases[i].kind, u.message.media.kind);
		expect_int("file_size", 1234, u.message.media.file_size);
		expect_str("mime_type", "audio/ogg", u.message.media.mime_type);
		expect_str("file_name", "a.txt", u.message.media.file_name);
		if (!u.message.media.file_id || strncmp(u.message.media.file_id, "F", 1) != 0)
			fail_msg("%s: expected a file_id", cases[i].field);
		update_clear(&u);
	}
	/* A file without a file_id is no file; one of a wrong size type has no size. */
	struct tg_update u;
	decode_ok("{\"update_id\":1,\"message\":{\"message_id\":2,\"chat\":{\"id\":1,\"type\":\"private\"},"
	          "\"voice\":{\"file_size\":3}}}",
	          &u);
	expect_int("no file_id", TG_MEDIA_NONE, u.message.media.kind);
	update_clear(&u);
	decode_ok("{\"update_id\":1,\"message\":{\"message_id\":2,\"chat\":{\"id\":1,\"type\":\"private\"},"
	          "\"voice\":{\"file_id\":\"x\",\"file_size\":\"big\"}}}",
	          &u);
	expect_int("voice", TG_MEDIA_VOICE, u.message.media.kind);
	expect_int("a size that is no number", 0, u.message.media.file_size);
	update_clear(&u);
}

static void test_other_update_kinds_report_their_name(void **state)
{
	(void)state;
	static const char *const kinds[] = {
	    "edited_message", "callback_query", "channel_post", "my_chat_member", "message_reaction",
	};
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
		char json[256];
		snprintf(json, sizeof json,
		         "{\"update_id\":10,\"%s\":{\"message_id\":1,"
		         "\"chat\":{\"id\":1,\"type\":\"private\"},\"text\":\"x\"}}",
		         kinds[i]);
		struct tg_update u;
		decode_ok(json, &u);
		expect_int("kind", TG_UPDATE_OTHER, u.kind);
		expect_str("kind_name", kinds[i], u.kind_name);
		expect_null("text of an OTHER update", u.message.text);
		update_clear(&u);
	}
	/* The kind is the field other than update_id, wherever update_id is. */
	struct tg_update u;
	decode_ok("{\"poll\":{\"id\":\"5\"},\"update_id\":11}", &u);
	expect_str("kind_name with update_id last", "poll", u.kind_name);
	update_clear(&u);
	decode_ok("{\"update_id\":12}", &u);
	expect_int("kind of a bare update", TG_UPDATE_OTHER, u.kind);
	expect_str("kind_name of a bare update", "unknown", u.kind_name);
	update_clear(&u);
	decode_ok("{\"update_id\":13,\"a_future_update_kind_with_a_very_long_name\":{}}", &u);
	expect_str("long kind_name is cut to fit", "a_future_update_kind_with_a_ver", u.kind_name);
	update_clear(&u);
}

static void test_reply_to_message_gives_its_id_and_sender(void **state)
{
	(void)state;
	struct tg_update u;
	decode_ok("{\"update_id\":14,\"message\":{\"message_id\":50,\"from\":{\"id\":11},"
	          "\"chat\":{\"id\":-7,\"type\":\"group\"},\"text\":\"and why?\","
	          "\"reply_to_message\":{\"message_id\":49,"
	          "\"from\":{\"id\":5555,\"is_bot\":true,\"first_name\":\"tgllm\"},"
	          "\"chat\":{\"id\":-7,\"type\":\"group\"},\"text\":\"because\"}}}",
	          &u);
	expect_int("reply_to_message_id", 49, u.message.reply_to_message_id);
	expect_int("reply_to_from_id", 5555, u.message.reply_to_from_id);
	update_clear(&u);

	decode_ok("{\"update_id\":15,\"message\":{\"message_id\":51,"
	          "\"chat\":{\"id\":-7,\"type\":\"group\"},\"text\":\"x\","
	          "\"reply_to_message\":{\"message_id\":48,\"chat\":{\"id\":-7,\"type\":\"group\"}}"
	          "}}",
	          &u);
	expect_int("reply_to_message_id", 48, u.message.reply_to_message_id);
	expect_int("reply_to_from_id without from", 0, u.message.reply_to_from_id);
	update_clear(&u);
}

static void test_malformed_json_is_an_error_with_reason(void **state)
{
	(void)state;
	static const char *const cases[] = {
	    "{\"update_id\":1,",
	    "",
	    "{\"update_id\":1}garbage",
	    "{\"update_id\":1,\"x\":\"\xff\"}",    /* invalid UTF-8 in a string */
	    "{\"update_id\":1,\"x\":\"\\u0000\"}", /* NUL is refused by default */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		expect_decode_error(cases[i], strlen(cases[i]), "malformed JSON");
	/* The length given is the end, even with bytes after it. */
	expect_decode_error("{\"update_id\":1}", 14, "malformed JSON");
}

static void test_missing_or_non_integer_update_id_is_an_error(void **state)
{
	(void)state;
	static const char *const cases[] = {
	    "{\"message\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":\"private\"}}}",
	    "{\"update_id\":\"1\"}",
	    "{\"update_id\":1.5}",
	    "{\"update_id\":null}",
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		expect_decode_error(cases[i], strlen(cases[i]), "no integer update_id");
	expect_decode_error("[1,2]", 5, "not a JSON object");
	expect_decode_error("42", 2, "malformed JSON"); /* jansson wants an object or array */
}

static void test_message_without_required_fields_is_an_error(void **state)
{
	(void)state;
	static const struct {
		const char *json;
		const char *reason;
	} cases[] = {
	    {"{\"update_id\":1,\"message\":{\"chat\":{\"id\":1,\"type\":\"private\"}}}",
	     "no integer message_id"},
	    {"{\"update_id\":1,\"message\":{\"message_id\":1}}", "no chat"},
	    {"{\"update_id\":1,\"message\":{\"message_id\":1,\"chat\":{\"type\":\"group\"}}}", "no chat"},
	    {"{\"update_id\":1,\"message\":{\"message_id\":1,\"chat\":{\"id\":1}}}", "no chat"},
	    {"{\"update_id\":1,\"message\":{\"message_id\":1,\"chat\":{\"id\":\"1\","
	     "\"type\":\"private\"}}}",
	     "no chat"},
	    {"{\"update_id\":1,\"message\":\"hi\"}", "not an object"},
	    {"{\"update_id\":1,\"message\":null}", "not an object"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		expect_decode_error(cases[i].json, strlen(cases[i].json), cases[i].reason);
}

static void test_optional_fields_of_wrong_type_are_absent(void **state)
{
	(void)state;
	struct tg_update u;
	decode_ok("{\"update_id\":16,\"message\":{\"message_id\":1,\"message_thread_id\":\"7\","
	          "\"is_topic_message\":1,\"from\":{\"id\":3,\"first_name\":5,\"username\":[],"
	          "\"language_code\":null,\"is_bot\":\"true\"},"
	          "\"chat\":{\"id\":1,\"type\":\"private\"},\"text\":\"ok\","
	          "\"entities\":[7,{\"type\":\"bold\",\"offset\":\"0\",\"length\":2},"
	          "{\"type\":\"bold\",\"offset\":-1,\"length\":2},"
	          "{\"type\":1,\"offset\":0,\"length\":2},"
	          "{\"type\":\"italic\",\"offset\":0,\"length\":2,\"user\":{\"id\":\"9\"}}],"
	          "\"reply_to_message\":{\"message_id\":\"3\",\"from\":{\"id\":2.5}}}}",
	          &u);
	expect_int("thread_id (string)", 0, u.message.thread_id);
	expect_int("is_topic_message (number)", 0, u.message.is_topic_message);
	expect_int("from.is_bot (string)", 0, u.message.from.is_bot);
	expect_str("from.first_name (number)", "", u.message.from.first_name);
	expect_null("from.username (array)", u.message.from.username);
	expect_null("from.language_code (null)", u.message.from.language_code);
	expect_int("valid entities among malformed ones", 1, u.message.n_entities);
	expect_str("the valid entity", "italic", u.message.entities[0].type);
	expect_int("user_id of a malformed user", 0, u.message.entities[0].user_id);
	expect_int("reply_to_message_id (string)", 0, u.message.reply_to_message_id);
	expect_int("reply_to_from_id (real)", 0, u.message.reply_to_from_id);
	update_clear(&u);

	decode_ok("{\"update_id\":17,\"message\":{\"message_id\":1,\"from\":\"me\","
	          "\"chat\":{\"id\":1,\"type\":\"private\"},\"text\":42,\"entities\":{}}}",
	          &u);
	expect_int("has_from (string)", 0, u.message.has_from);
	expect_null("text (number)", u.message.text);
	update_clear(&u);

	decode_ok("{\"update_id\":18,\"message\":{\"message_id\":1,\"from\":{\"id\":\"3\"},"
	          "\"chat\":{\"id\":1,\"type\":\"private\"},\"text\":\"\"}}",
	          &u);
	expect_int("has_from (id is a string)", 0, u.message.has_from);
	expect_str("empty text is text", "", u.message.text);
	update_clear(&u);
}

static void test_deeply_nested_input_fails_cleanly(void **state)
{
	(void)state;
	size_t depth = 100000;
	size_t len = 2 * depth + 40;
	char *json = malloc(len);
	if (!json)
		fail_msg("out of memory in the test");
	size_t n = (size_t)snprintf(json, len, "{\"update_id\":1,\"x\":");
	for (size_t i = 0; i < depth; i++)
		json[n++] = '[';
	for (size_t i = 0; i < depth; i++)
		json[n++] = ']';
	json[n++] = '}';
	expect_decode_error(json, n, "malformed JSON");
	free(json);
}

static void test_decode_accepts_a_parsed_object(void **state)
{
	(void)state;
	json_t *obj =
	    json_pack("{s:I, s:{s:i, s:{s:I, s:s}, s:s}}", "update_id", (json_int_t)20, "message",
	              "message_id", 3, "chat", "id", (json_int_t)-99, "type", "group", "text", "hi");
	if (!obj)
		fail_msg("json_pack failed");
	struct tg_update u;
	char err[128] = "";
	if (update_decode(obj, &u, err, sizeof err) != 0)
		fail_msg("update_decode: expected success, got \"%s\"", err);
	expect_int("chat_id", -99, u.message.chat_id);
	expect_str("text", "hi", u.message.text);
	update_clear(&u);
	json_decref(obj);
	if (update_decode(NULL, &u, err, sizeof err) != -1)
		fail_msg("update_decode(NULL): expected -1");
	update_clear(&u);
}

/* The poll's offset must move past an update that fails to decode, and a webhook must tell it from a non-Update. */
static void test_a_failure_keeps_the_update_id(void **state)
{
	(void)state;
	struct tg_update u;
	char err[160];
	const char broken[] = "{\"update_id\":77,\"message\":{\"message_id\":1,\"chat\":\"no\"}}";
	if (update_parse(broken, sizeof broken - 1, &u, err, sizeof err) != -1)
		fail_msg("update_parse: expected -1 for %s", broken);
	expect_int("update_id after a failure", 77, u.update_id);
	const char named[] = "{\"update_id\":\"77\"}";
	if (update_parse(named, sizeof named - 1, &u, err, sizeof err) != -1)
		fail_msg("update_parse: expected -1 for a string update_id");
	expect_int("update_id of a text without one", 0, u.update_id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_private_text_message_is_decoded),
	    cmocka_unit_test(test_group_message_with_mention_entity),
	    cmocka_unit_test(test_chat_types_are_mapped),
	    cmocka_unit_test(test_text_mention_and_command_entities),
	    cmocka_unit_test(test_forum_topic_message_has_thread_id),
	    cmocka_unit_test(test_user_without_username_or_first_name),
	    cmocka_unit_test(test_message_without_from_has_no_sender),
	    cmocka_unit_test(test_sticker_and_service_messages_have_no_text),
	    cmocka_unit_test(test_photo_has_its_largest_size_and_caption),
	    cmocka_unit_test(test_voice_audio_video_note_and_document_are_files),
	    cmocka_unit_test(test_other_update_kinds_report_their_name),
	    cmocka_unit_test(test_reply_to_message_gives_its_id_and_sender),
	    cmocka_unit_test(test_malformed_json_is_an_error_with_reason),
	    cmocka_unit_test(test_missing_or_non_integer_update_id_is_an_error),
	    cmocka_unit_test(test_message_without_required_fields_is_an_error),
	    cmocka_unit_test(test_optional_fields_of_wrong_type_are_absent),
	    cmocka_unit_test(test_deeply_nested_input_fails_cleanly),
	    cmocka_unit_test(test_decode_accepts_a_parsed_object),
	    cmocka_unit_test(test_a_failure_keeps_the_update_id),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
