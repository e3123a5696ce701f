/* gate/route.c: which updates reach the model, which are commands, refusals or ignored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gate/access.h"
#include "gate/route.h"
#include "telegram/update.h"

#define SELF_ID 1000
#define SELF "TgLLM_bot"

static struct access_list *allow;

static int setup(void **state)
{
	(void)state;
	char err[128];
	return access_parse("alice, 42, -100500", &allow, err, sizeof err);
}

static int teardown(void **state)
{
	(void)state;
	access_free(allow);
	return 0;
}

#define IGNORED (-1)

/* Routes an Update given as JSON: the chat job, or IGNORED. */
static int route(const char *json)
{
	struct tg_update u;
	char err[128];
	if (update_parse(json, strlen(json), &u, err, sizeof err) != 0)
		fail_msg("test update does not decode: %s", err);
	const char *why = NULL;
	enum chat_job job;
	struct route_self self = {SELF_ID, SELF};
	bool is_for_bot = route_update(&u, allow, NULL, &self, &job, &why);
	update_clear(&u);
	if (!is_for_bot && (!why || !*why))
		fail_msg("an update not for the bot must say why");
	return is_for_bot ? (int)job : IGNORED;
}

#define PRIVATE(from, text)                                                                        \
	"{\"update_id\":1,\"message\":{\"message_id\":5,\"chat\":{\"id\":7,\"type\":\"private\"}," \
	"\"from\":" from ",\"text\":\"" text "\"}}"
#define GROUP(chat, from, text, extra)                                                             \
	"{\"update_id\":1,\"message\":{\"message_id\":5,\"chat\":{\"id\":" chat                    \
	",\"type\":\"supergroup\"},\"from\":" from ",\"text\":\"" text "\"" extra "}}"
#define ALICE "{\"id\":1,\"is_bot\":false,\"first_name\":\"A\",\"username\":\"Alice\"}"
#define BY_ID "{\"id\":42,\"is_bot\":false,\"first_name\":\"N\"}"
#define EVE "{\"id\":66,\"is_bot\":false,\"first_name\":\"E\",\"username\":\"eve\"}"
#define A_BOT "{\"id\":77,\"is_bot\":true,\"first_name\":\"B\",\"username\":\"other_bot\"}"

static void test_private_text_goes_to_the_model(void **state)
{
	(void)state;
	assert_int_equal(route(PRIVATE(ALICE, "hello")), CHAT_REPLY);
	assert_int_equal(route(PRIVATE(BY_ID, "hello")), CHAT_REPLY);
}

static void test_commands_are_recognised_with_and_without_the_bot_name(void **state)
{
	(void)state;
	assert_int_equal(route(PRIVATE(ALICE, "/start")), CHAT_START);
	assert_int_equal(route(PRIVATE(ALICE, "/help")), CHAT_HELP);
	assert_int_equal(route(PRIVATE(ALICE, "/new")), CHAT_NEW);
	assert_int_equal(route(PRIVATE(ALICE, "/new@tgllm_BOT")), CHAT_NEW);
	assert_int_equal(route(PRIVATE(ALICE, "/image a fox")), CHAT_IMAGE);
	assert_int_equal(route(PRIVATE(ALICE, "/img")), CHAT_IMAGE);
	assert_int_equal(route(PRIVATE(ALICE, "/NEW please")), CHAT_NEW);
	assert_int_equal(route(PRIVATE(ALICE, "/new@other_bot")), IGNORED);
	/* Not a command: the model gets it. */
	assert_int_equal(route(PRIVATE(ALICE, "/newish")), CHAT_REPLY);
}

static void test_strangers_are_refused(void **state)
{
	(void)state;
	assert_int_equal(route(PRIVATE(EVE, "hello")), CHAT_REFUSE);
	assert_int_equal(route(PRIVATE(EVE, "/start")), CHAT_REFUSE);
}

static void test_group_messages_need_a_mention_a_reply_or_a_command(void **state)
{
	(void)state;
	assert_int_equal(route(GROUP("-100500", EVE, "just chatting", "")), IGNORED);
	assert_int_equal(route(GROUP("-100500", EVE, "hey @tgllm_bot what's up", "")), CHAT_REPLY);
	assert_int_equal(route(GROUP("-100500", EVE, "hey @tgllm_botty", "")), IGNORED);
	assert_int_equal(
		route(GROUP("-100500", EVE, "sure",
			    ",\"reply_to_message\":{\"message_id\":4,\"chat\":{\"id\":-100500,"
			    "\"type\":\"supergroup\"},\"from\":{\"id\":1000,\"is_bot\":true,"
			    "\"first_name\":\"Bot\"}}")),
		CHAT_REPLY);
	assert_int_equal(
		route(GROUP("-100500", EVE, "sure",
			    ",\"reply_to_message\":{\"message_id\":4,\"chat\":{\"id\":-100500,"
			    "\"type\":\"supergroup\"},\"from\":{\"id\":9,\"is_bot\":false,"
			    "\"first_name\":\"X\"}}")),
		IGNORED);
	assert_int_equal(route(GROUP("-100500", EVE, "/new", "")), CHAT_NEW);
	assert_int_equal(route(GROUP("-100500", EVE, "/help@TgLLM_bot", "")), CHAT_HELP);
	assert_int_equal(route(GROUP("-100500", EVE, "/start@tgllm_bot", "")), CHAT_START);
	assert_int_equal(route(GROUP("-100500", EVE, "/help", "")), CHAT_HELP);
	assert_int_equal(route(GROUP("-100500", EVE, "/ask@tgllm_bot why", "")), CHAT_REPLY);
	assert_int_equal(route(GROUP("-100500", EVE, "/ask why", "")), IGNORED);
	assert_int_equal(route(GROUP("-100500", EVE, "/new@other_bot", "")), IGNORED);
}

static void test_group_access_by_chat_or_sender(void **state)
{
	(void)state;
	/* The group is allowed: anyone in it. */
	assert_int_equal(route(GROUP("-100500", EVE, "@tgllm_bot hi", "")), CHAT_REPLY);
	/* Another group: only allowed senders; strangers addressed to the bot are refused. */
	assert_int_equal(route(GROUP("-999", ALICE, "@tgllm_bot hi", "")), CHAT_REPLY);
	assert_int_equal(route(GROUP("-999", EVE, "@tgllm_bot hi", "")), CHAT_REFUSE);
	/* Strangers not addressing the bot are not told anything. */
	assert_int_equal(route(GROUP("-999", EVE, "hi all", "")), IGNORED);
}

static void test_other_updates_and_messages_are_ignored(void **state)
{
	(void)state;
	assert_int_equal(
		route("{\"update_id\":1,\"edited_message\":{\"message_id\":5,\"chat\":{\"id\":7,"
		      "\"type\":\"private\"},\"from\":" ALICE ",\"text\":\"x\"}}"),
		IGNORED);
	assert_int_equal(route("{\"update_id\":1,\"message\":{\"message_id\":5,\"chat\":{\"id\":7,"
			       "\"type\":\"private\"},\"from\":" ALICE ",\"sticker\":{}}}"),
			 IGNORED);
	assert_int_equal(route("{\"update_id\":1,\"message\":{\"message_id\":5,\"chat\":{\"id\":7,"
			       "\"type\":\"private\"},\"text\":\"no sender\"}}"),
			 IGNORED);
	assert_int_equal(route(PRIVATE(A_BOT, "hello")), IGNORED);
	assert_int_equal(route("{\"update_id\":1,\"message\":{\"message_id\":5,\"chat\":{\"id\":-5,"
			       "\"type\":\"channel\"},\"from\":" ALICE ",\"text\":\"x\"}}"),
			 IGNORED);
}

#define PHOTO_IN(chat, type, from, extra)                                                          \
	"{\"update_id\":1,\"message\":{\"message_id\":5,\"chat\":{\"id\":" chat ",\"type\":\"" type "\"}," \
	"\"from\":" from ",\"photo\":[{\"file_id\":\"p\",\"width\":9,\"height\":9}]" extra "}}"

/* A file is routed as text is: in a private chat always, in a group when its caption or a reply addresses the bot. */
static void test_files_go_to_the_model_when_addressed(void **state)
{
	(void)state;
	assert_int_equal(route(PHOTO_IN("7", "private", ALICE, "")), CHAT_MEDIA);
	assert_int_equal(route(PHOTO_IN("7", "private", ALICE, ",\"caption\":\"/new\"")), CHAT_MEDIA);
	assert_int_equal(route(PHOTO_IN("7", "private", EVE, "")), CHAT_REFUSE);
	assert_int_equal(route("{\"update_id\":1,\"message\":{\"message_id\":5,\"chat\":{\"id\":7,"
	                       "\"type\":\"private\"},\"from\":" ALICE ",\"voice\":{\"file_id\":\"v\"}}}"),
	                 CHAT_MEDIA);
	assert_int_equal(route(PHOTO_IN("-100500", "group", EVE, "")), IGNORED);
	assert_int_equal(route(PHOTO_IN("-100500", "group", EVE, ",\"caption\":\"nice one\"")), IGNORED);
	assert_int_equal(route(PHOTO_IN("-100500", "group", EVE, ",\"caption\":\"@tgllm_bot what is it\"")),
	                 CHAT_MEDIA);
	assert_int_equal(route(PHOTO_IN("-100500", "group", EVE,
	                                ",\"reply_to_message\":{\"message_id\":4,\"chat\":{\"id\":-100500,"
	                                "\"type\":\"group\"},\"from\":{\"id\":1000,\"is_bot\":true,"
	                                "\"first_name\":\"Bot\"}}")),
	                 CHAT_MEDIA);
	assert_int_equal(route(PHOTO_IN("-999", "group", EVE, ",\"caption\":\"@tgllm_bot hi\"")), CHAT_REFUSE);
}

static void test_a_text_mention_of_the_bot_addresses_it(void **state)
{
	(void)state;
	/* A mention of a bot without a username is a text_mention entity carrying its id. */
	assert_int_equal(route(GROUP("-100500", EVE, "Bot, hi",
				     ",\"entities\":[{\"type\":\"text_mention\",\"offset\":0,\"length\":3,"
				     "\"user\":{\"id\":1000,\"is_bot\":true,\"first_name\":\"Bot\"}}]")),
			 CHAT_REPLY);
	assert_int_equal(route(GROUP("-100500", EVE, "Bob, hi",
				     ",\"entities\":[{\"type\":\"text_mention\",\"offset\":0,\"length\":3,"
				     "\"user\":{\"id\":9,\"is_bot\":false,\"first_name\":\"Bob\"}}]")),
			 IGNORED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_private_text_goes_to_the_model),
		cmocka_unit_test(test_commands_are_recognised_with_and_without_the_bot_name),
		cmocka_unit_test(test_strangers_are_refused),
		cmocka_unit_test(test_group_messages_need_a_mention_a_reply_or_a_command),
		cmocka_unit_test(test_group_access_by_chat_or_sender),
		cmocka_unit_test(test_other_updates_and_messages_are_ignored),
		cmocka_unit_test(test_files_go_to_the_model_when_addressed),
		cmocka_unit_test(test_a_text_mention_of_the_bot_addresses_it),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
