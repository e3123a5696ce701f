"""Groups and supergroups: the bot speaks when addressed (mention, reply to
it, a command for it), keeps one history per group and knows who speaks."""

import time

from harness import (ALICE, BOB, BOT_ID, FORUM, IVAN, MALLORY, OPEN_GROUP, OTHER_GROUP, PLAIN_GROUP, TEXT_HELP,
                     TEXT_NEW_DONE, BotTestCase, main)


class GroupTestCase(BotTestCase):

    def assertGroupSilent(self, *msgs: dict):
        """The bot is through with msgs (all in one group) and did nothing about them."""
        self.wait_handled(*msgs)
        chat_id = msgs[0]["chat"]["id"]
        for m in msgs:
            self.assertNoModelRequest(m["text"])
        sent = [(c.method, c.params.get("text")) for c in self.tg.calls if c.chat_id() == chat_id]
        self.assertEqual(sent, [], f"expected the bot to do nothing in group {chat_id}")

    def assertHelpAnswered(self, msg: dict):
        """msg gets the help text, as a reply, and the model is not asked."""
        reply = self.wait_reply(msg)
        self.assertEqual(reply.text, TEXT_HELP, "expected the help text")
        self.wait_handled(msg)
        self.assertEqual(self.tg.texts_in(msg["chat"]["id"]), [TEXT_HELP], "expected the help text, once")
        self.assertEqual(self.llm.requests, [], "expected a command never to reach the model")


class GroupTriggerTest(GroupTestCase):

    def test_group_message_without_mention_is_ignored(self):
        self.start_bot()
        chatter = self.tg.send_group(OPEN_GROUP, ALICE, "just chatting among ourselves")
        other = self.tg.send_group(OPEN_GROUP, BOB, "@someone_else look at this")
        self.assertGroupSilent(chatter, other)

    def test_mention_triggers_an_answer_whatever_the_case(self):
        self.start_bot()
        msg = self.tg.send_group(OPEN_GROUP, ALICE, "@TGLLM_Test_Bot what is the time")
        reply = self.wait_reply(msg)
        req = self.llm.requests_with("what is the time")[0]
        self.assertTrue(req.last_content.startswith("Alice: "),
                        f"expected the speaker's name before the text, got {req.last_content!r}")
        self.assertEqual(reply.text, "Echo: " + req.last_content)

    def test_mention_in_the_middle_of_the_text_triggers(self):
        self.start_bot()
        msg = self.tg.send_group(OPEN_GROUP, BOB, "hey @tgllm_test_bot tell a joke")
        self.wait_reply(msg)

    def test_mention_after_emoji_and_cyrillic_is_found_by_utf16_offsets(self):
        # Entity offsets count UTF-16 units: 😀 is 2 units (4 UTF-8 bytes), "й" 1 unit (2 bytes).
        self.start_bot()
        msg = self.tg.send_group(OPEN_GROUP, IVAN, "😀😀 йо @tgllm_test_bot скажи")
        self.assertEqual(msg["entities"], [{"type": "mention", "offset": 8, "length": 15}])
        self.assertTrue(self.wait_reply(msg).text.endswith("скажи"))

    def test_mention_of_a_similar_username_does_not_trigger(self):
        self.start_bot()
        msg = self.tg.send_group(OPEN_GROUP, ALICE, "@tgllm_test_bot_fan club meeting")
        self.assertGroupSilent(msg)

    def test_reply_to_the_bot_triggers_an_answer(self):
        self.start_bot()
        first = self.tg.send_group(OPEN_GROUP, ALICE, "@tgllm_test_bot start a story")
        bot_msg = self.wait_reply(first)
        reply_to_bot = {"message_id": bot_msg.message_id, "date": int(time.time()), "chat": OPEN_GROUP.to_json(),
                        "from": self.tg.bot.to_json(), "text": bot_msg.text}
        self.assertEqual(reply_to_bot["from"]["id"], BOT_ID)
        follow_up = self.tg.send_group(OPEN_GROUP, BOB, "and then what happened", reply_to=reply_to_bot)
        self.assertTrue(self.wait_reply(follow_up).text.endswith("and then what happened"))

    def test_reply_to_another_member_does_not_trigger(self):
        self.start_bot()
        alice_msg = self.tg.send_group(OPEN_GROUP, ALICE, "I like tea")
        bob_msg = self.tg.send_group(OPEN_GROUP, BOB, "me too, tea is great", reply_to=alice_msg)
        self.assertGroupSilent(alice_msg, bob_msg)

    def test_basic_group_works_like_a_supergroup(self):
        self.start_bot(TG_BOT_CHATS="alice")
        msg = self.tg.send_group(PLAIN_GROUP, ALICE, "@tgllm_test_bot hello old group")
        self.assertTrue(self.wait_reply(msg).text.endswith("hello old group"))

    def test_topic_message_is_answered_in_the_same_topic(self):
        self.start_bot()
        msg = self.tg.send_topic(FORUM, 77, ALICE, "@tgllm_test_bot answer in my topic")
        reply = self.wait_reply(msg)
        self.assertEqual(int(reply.params.get("message_thread_id", 0)), 77,
                         f"expected message_thread_id 77 for a topic message, got {reply.params!r}")

    def test_reply_thread_in_an_ordinary_supergroup_is_not_a_topic(self):
        # Outside forums Telegram still puts message_thread_id on messages of a
        # reply thread, without is_topic_message; sending to that "thread" fails.
        self.start_bot()
        msg = self.tg.send_group(OPEN_GROUP, ALICE, "@tgllm_test_bot in a reply thread",
                                 extra={"message_thread_id": 5})
        reply = self.wait_reply(msg)
        self.assertNotIn("message_thread_id", reply.params)

    def test_topic_message_without_mention_is_ignored(self):
        # Telegram marks topic messages as replies to the topic's creation message;
        # that is not a reply to the bot.
        self.start_bot()
        msg = self.tg.send_topic(FORUM, 78, ALICE, "talking in a topic")
        self.assertGroupSilent(msg)


class GroupHistoryTest(GroupTestCase):

    def test_group_history_is_shared_and_names_each_speaker(self):
        self.start_bot()
        a = self.tg.send_group(OPEN_GROUP, ALICE, "@tgllm_test_bot I am Alice")
        self.wait_reply(a)
        b = self.tg.send_group(OPEN_GROUP, BOB, "@tgllm_test_bot and I am Bob")
        self.wait_reply(b)
        req = self.llm.requests_with("and I am Bob")[0]
        self.assertEqual(req.roles(), ["user", "assistant", "user"], f"got {req.messages!r}")
        first, answer_, second = req.contents()
        self.assertTrue(first.startswith("Alice: ") and first.endswith("I am Alice"), first)
        self.assertEqual(answer_, "Echo: " + first)
        self.assertTrue(second.startswith("Bob: ") and second.endswith("and I am Bob"), second)

    def test_ignored_group_messages_are_not_part_of_the_history(self):
        self.start_bot()
        self.tg.send_group(OPEN_GROUP, ALICE, "unaddressed chatter")
        msg = self.tg.send_group(OPEN_GROUP, BOB, "@tgllm_test_bot hi")
        self.wait_reply(msg)
        self.assertEqual(len(self.llm.requests[-1].messages), 1,
                         f"expected only the addressed message, got {self.llm.requests[-1].messages!r}")


class GroupCommandsTest(GroupTestCase):

    def test_bare_help_command_is_answered_with_the_help_in_a_group(self):
        self.start_bot()
        self.assertHelpAnswered(self.tg.send_group(OPEN_GROUP, ALICE, "/help"))

    def test_help_addressed_to_this_bot_is_answered_with_the_help(self):
        self.start_bot()
        self.assertHelpAnswered(self.tg.send_group(OPEN_GROUP, ALICE, "/help@tgllm_test_bot"))

    def test_help_addressed_to_this_bot_in_another_case_is_answered_with_the_help(self):
        self.start_bot()
        self.assertHelpAnswered(self.tg.send_group(OPEN_GROUP, BOB, "/HELP@TgLLM_Test_Bot"))

    def test_command_addressed_to_another_bot_is_ignored(self):
        self.start_bot()
        help_ = self.tg.send_group(OPEN_GROUP, ALICE, "/help@other_bot")
        new = self.tg.send_group(OPEN_GROUP, ALICE, "/new@other_bot")
        self.assertGroupSilent(help_, new)

    def test_new_with_bot_username_clears_the_group_history(self):
        self.start_bot()
        self.wait_reply(self.tg.send_group(OPEN_GROUP, ALICE, "@tgllm_test_bot old business"))
        before = len(self.tg.messages_in(OPEN_GROUP.id))
        self.tg.send_group(OPEN_GROUP, BOB, "/new@tgllm_test_bot")
        confirm = self.wait_messages(OPEN_GROUP.id, 1, since=before)[0]
        self.assertEqual(confirm.text, TEXT_NEW_DONE)
        self.wait_reply(self.tg.send_group(OPEN_GROUP, ALICE, "@tgllm_test_bot new business"))
        self.assertEqual(len(self.llm.requests[-1].messages), 1,
                         f"expected no prior turns after /new, got {self.llm.requests[-1].messages!r}")
        self.assertEqual(len(self.llm.requests), 2, "expected /new not to reach the model")


class GroupAccessTest(GroupTestCase):

    def test_allowed_group_serves_members_not_on_the_list(self):
        self.start_bot()   # OPEN_GROUP's id is on the list, Mallory is not
        msg = self.tg.send_group(OPEN_GROUP, MALLORY, "@tgllm_test_bot may I ask")
        self.assertTrue(self.wait_reply(msg).text.endswith("may I ask"))

    def test_allowed_user_is_served_in_a_group_not_on_the_list(self):
        self.start_bot()
        msg = self.tg.send_group(OTHER_GROUP, ALICE, "@tgllm_test_bot I brought you here")
        self.assertTrue(self.wait_reply(msg).text.endswith("I brought you here"))

    def test_stranger_in_a_group_not_on_the_list_gets_no_model_call(self):
        self.start_bot()
        msg = self.tg.send_group(OTHER_GROUP, MALLORY, "@tgllm_test_bot mallory-group-secret")
        self.wait_handled(msg)
        self.assertNoModelRequest("mallory-group-secret")
        texts = self.tg.texts_in(OTHER_GROUP.id)
        self.assertLessEqual(len(texts), 1, f"expected at most one refusal in the group, got {texts!r}")


if __name__ == "__main__":
    main()
