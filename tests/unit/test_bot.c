/* Routing: which updates reach the model, which are commands, refusals or ignored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "gate/access.h"
#include "gate/bot.h"
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

/* Routes an Update given as JSON. */
static enum bot_action route(const char *json)
{
	struct tg_update u;
	char err[128];
	if (update_parse(json, strlen(json), &u, err, sizeof err) != 0)
		fail_msg("test update does not decode: %s", err);
	const char *why;
	enum bot_action a = bot_route(&u, allow, SELF_ID, SELF, &why);
	update_clear(&u);
	return a;
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
	assert_int_equal(route(PRIVATE(ALICE, "hello")), BOT_REPLY);
	assert_int_equal(route(PRIVATE(BY_ID, "hello")), BOT_REPLY);
}

static void test_commands_are_recognised_with_and_without_the_bot_name(void **state)
{
	(void)state;
	assert_int_equal(route(PRIVATE(ALICE, "/start")), BOT_START);
	assert_int_equal(route(PRIVATE(ALICE, "/help")), BOT_HELP);
	assert_int_equal(route(PRIVATE(ALICE, "/new")), BOT_NEW);
	assert_int_equal(route(PRIVATE(ALICE, "/new@tgllm_BOT")), BOT_NEW);
	assert_int_equal(route(PRIVATE(ALICE, "/NEW please")), BOT_NEW);
	assert_int_equal(route(PRIVATE(ALICE, "/new@other_bot")), BOT_IGNORE);
	/* Not a command: the model gets it. */
	assert_int_equal(route(PRIVATE(ALICE, "/newish")), BOT_REPLY);
}

static void test_strangers_are_refused(void **state)
{
	(void)state;
	assert_int_equal(route(PRIVATE(EVE, "hello")), BOT_REFUSE);
	assert_int_equal(route(PRIVATE(EVE, "/start")), BOT_REFUSE);
}

static void test_group_messages_need_a_mention_a_reply_or_a_command(void **state)
{
	(void)state;
	assert_int_equal(route(GROUP("-100500", EVE, "just chatting", "")), BOT_IGNORE);
	assert_int_equal(route(GROUP("-100500", EVE, "hey @tgllm_bot what's up", "")), BOT_REPLY);
	assert_int_equal(route(GROUP("-100500", EVE, "hey @tgllm_botty", "")), BOT_IGNORE);
	assert_int_equal(
		route(GROUP("-100500", EVE, "sure",
			    ",\"reply_to_message\":{\"message_id\":4,\"chat\":{\"id\":-100500,"
			    "\"type\":\"supergroup\"},\"from\":{\"id\":1000,\"is_bot\":true,"
			    "\"first_name\":\"Bot\"}}")),
		BOT_REPLY);
	assert_int_equal(
		route(GROUP("-100500", EVE, "sure",
			    ",\"reply_to_message\":{\"message_id\":4,\"chat\":{\"id\":-100500,"
			    "\"type\":\"supergroup\"},\"from\":{\"id\":9,\"is_bot\":false,"
			    "\"first_name\":\"X\"}}")),
		BOT_IGNORE);
	assert_int_equal(route(GROUP("-100500", EVE, "/new", "")), BOT_NEW);
	assert_int_equal(route(GROUP("-100500", EVE, "/ask@tgllm_bot why", "")), BOT_REPLY);
	assert_int_equal(route(GROUP("-100500", EVE, "/ask why", "")), BOT_IGNORE);
	assert_int_equal(route(GROUP("-100500", EVE, "/new@other_bot", "")), BOT_IGNORE);
}

static void test_group_access_by_chat_or_sender(void **state)
{
	(void)state;
	/* The group is allowed: anyone in it. */
	assert_int_equal(route(GROUP("-100500", EVE, "@tgllm_bot hi", "")), BOT_REPLY);
	/* Another group: only allowed senders; strangers addressed to the bot are refused. */
	assert_int_equal(route(GROUP("-999", ALICE, "@tgllm_bot hi", "")), BOT_REPLY);
	assert_int_equal(route(GROUP("-999", EVE, "@tgllm_bot hi", "")), BOT_REFUSE);
	/* Strangers not addressing the bot are not told anything. */
	assert_int_equal(route(GROUP("-999", EVE, "hi all", "")), BOT_IGNORE);
}

static void test_other_updates_and_messages_are_ignored(void **state)
{
	(void)state;
	assert_int_equal(
		route("{\"update_id\":1,\"edited_message\":{\"message_id\":5,\"chat\":{\"id\":7,"
		      "\"type\":\"private\"},\"from\":" ALICE ",\"text\":\"x\"}}"),
		BOT_IGNORE);
	assert_int_equal(route("{\"update_id\":1,\"message\":{\"message_id\":5,\"chat\":{\"id\":7,"
			       "\"type\":\"private\"},\"from\":" ALICE ",\"sticker\":{}}}"),
			 BOT_IGNORE);
	assert_int_equal(route("{\"update_id\":1,\"message\":{\"message_id\":5,\"chat\":{\"id\":7,"
			       "\"type\":\"private\"},\"text\":\"no sender\"}}"),
			 BOT_IGNORE);
	assert_int_equal(route(PRIVATE(A_BOT, "hello")), BOT_IGNORE);
	assert_int_equal(route("{\"update_id\":1,\"message\":{\"message_id\":5,\"chat\":{\"id\":-5,"
			       "\"type\":\"channel\"},\"from\":" ALICE ",\"text\":\"x\"}}"),
			 BOT_IGNORE);
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
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
