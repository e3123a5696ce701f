"""A person talks to the bot in a private chat: answers, history, typing,
long answers, and what the model request looks like."""

import re

from fake_openai import Reply, answer
from harness import ALICE, API_KEY, BOB, IVAN, TEXT_HELP, TEXT_NEW_DONE, TEXT_START, BotTestCase, main, utf16_len


def squash(text: str) -> str:
    """Text without whitespace: splitting may drop the spaces at a cut."""
    return re.sub(r"\s+", "", text)


class PrivateConversationTest(BotTestCase):

    def test_private_message_is_answered_with_a_reply_to_it(self):
        self.start_bot()
        msg = self.tg.send_private(ALICE, "Hello there")
        reply = self.wait_reply(msg)
        self.assertEqual(reply.text, "Echo: Hello there")
        self.assertEqual(int(reply.params["chat_id"]), ALICE.id)
        rp = reply.params.get("reply_parameters")
        self.assertIsInstance(rp, dict, f"expected reply_parameters in sendMessage, got {reply.params!r}")
        self.assertEqual(rp.get("message_id"), msg["message_id"])
        self.assertIs(rp.get("allow_sending_without_reply"), True,
                      f"expected allow_sending_without_reply: true, got {rp!r}")
        self.assertNotIn("message_thread_id", reply.params, "a private chat without topics has no thread")
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: Hello there"], "expected exactly one answer")

    def test_message_in_a_private_topic_is_answered_in_that_topic(self):
        self.start_bot()
        msg = self.tg.send_private(ALICE, "Hello from a private topic", thread_id=12)
        reply = self.wait_reply(msg)
        self.assertEqual(int(reply.params.get("message_thread_id", 0)), 12,
                         f"expected message_thread_id 12 for a topic message, got {reply.params!r}")

    def test_typing_is_shown_before_the_model_is_asked(self):
        self.start_bot()
        self.ask(ALICE, "Are you typing?")
        typing = self.tg.calls_of("sendChatAction", chat_id=ALICE.id)
        self.assertTrue(typing, "expected a sendChatAction before the answer")
        self.assertEqual(typing[0].params.get("action"), "typing")
        first_request = self.llm.requests[0]
        self.assertLessEqual(typing[0].time, first_request.time + 0.05,
                             "expected typing to be sent first, before the model request")

    def test_model_request_has_system_prompt_model_key_and_stream(self):
        self.start_bot(SYSTEM_PROMPT="You are a terse assistant.", OPENAI_MODEL="test-model-1")
        self.ask(ALICE, "What is two plus two")
        req = self.llm.requests[0]
        self.assertEqual(req.path, "/v1/chat/completions")
        self.assertEqual(req.headers.get("authorization"), f"Bearer {API_KEY}")
        self.assertEqual(req.body.get("model"), "test-model-1")
        self.assertIs(req.body.get("stream"), True, f"expected \"stream\": true, got {req.body.get('stream')!r}")
        self.assertEqual(req.messages, [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is two plus two"},
        ])

    def test_default_model_is_gpt_4o_mini_and_no_system_message_without_prompt(self):
        self.start_bot()
        self.ask(ALICE, "Hi")
        req = self.llm.requests[0]
        self.assertEqual(req.body.get("model"), "gpt-4o-mini")
        self.assertEqual(req.messages, [{"role": "user", "content": "Hi"}])

    def test_proxy_api_key_is_accepted_as_the_key(self):
        self.start_bot(OPENAI_API_KEY=None, PROXY_API_KEY="sk-proxy-key-0123456789")
        self.ask(ALICE, "Through the proxy")
        self.assertEqual(self.llm.requests[0].headers.get("authorization"), "Bearer sk-proxy-key-0123456789")

    def test_conversation_keeps_prior_turns(self):
        self.start_bot(SYSTEM_PROMPT="Be kind.")
        self.ask(ALICE, "My name is Alice")
        self.ask(ALICE, "What is my name")
        self.ask(ALICE, "And again")
        self.assertEqual(self.llm.requests[2].messages, [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "My name is Alice"},
            {"role": "assistant", "content": "Echo: My name is Alice"},
            {"role": "user", "content": "What is my name"},
            {"role": "assistant", "content": "Echo: What is my name"},
            {"role": "user", "content": "And again"},
        ])

    def test_history_is_kept_per_chat(self):
        self.start_bot()
        self.ask(ALICE, "Alice secret one")
        self.ask(BOB, "Bob asks something")
        bob_request = self.llm.requests_with("Bob asks something")[0]
        self.assertEqual(bob_request.messages, [{"role": "user", "content": "Bob asks something"}],
                         "expected Bob's conversation to hold none of Alice's turns")

    def test_typing_is_repeated_while_the_model_works_and_stops_after_the_reply(self):
        # Telegram shows "typing" for 5 s: the bot repeats it every 4 s.
        self.start_bot()
        self.llm.enqueue(Reply(delay=5.0))
        msg = self.tg.send_private(ALICE, "Think slowly")
        reply = self.wait_reply(msg, timeout=25)
        self.assertEqual(reply.text, "Echo: Think slowly")
        typing = [c for c in self.tg.calls_of("sendChatAction", chat_id=ALICE.id) if c.time <= reply.time]
        self.assertGreaterEqual(len(typing), 2,
                                f"expected typing re-sent every ~4 s during a 5 s answer; got {len(typing)} action(s)")
        gaps = [round(b.time - a.time, 2) for a, b in zip(typing, typing[1:])]
        self.assertTrue(all(2.5 <= g <= 6.0 for g in gaps), f"expected typing every ~4 s, gaps were {gaps}")
        self.wait_handled(msg)   # the job is over: its typing timer with it
        late = [round(c.time - reply.time, 2) for c in self.tg.calls_of("sendChatAction", chat_id=ALICE.id)
                if c.time > reply.time]
        self.assertEqual(late, [], "expected no typing after the reply was sent; came at +seconds")

    def test_long_answer_is_split_into_messages_under_the_limit(self):
        words = " ".join(f"word{i}" for i in range(1200))           # ~9,000 characters of prose
        emoji = "😀" * 3000                                            # 3,000 characters = 6,000 UTF-16 units
        text = f"Start of the answer.\n\n{words}\n\n{emoji}\n\nThe end."
        self.start_bot()
        self.llm.enqueue(answer(text))
        msg = self.tg.send_private(ALICE, "Tell me everything")
        self.tg.wait_for(lambda: squash("".join(self.tg.texts_in(ALICE.id))) == squash(text), 20,
                         "the whole long answer to arrive in the chat; it has "
                         f"{[utf16_len(t) for t in self.tg.texts_in(ALICE.id)]} UTF-16 units in its messages")
        self.wait_handled(msg)
        parts = self.tg.messages_in(ALICE.id)
        self.assertGreaterEqual(len(parts), 4, "15,000+ UTF-16 units need at least 4 messages")
        self.assertEqual(squash("".join(m.text for m in parts)), squash(text),
                         "expected the parts to hold the whole answer once, in order")
        for m in parts:
            self.assertLessEqual(utf16_len(m.text), 4096)
        self.assertEqual(parts[0].reply_to, msg["message_id"], "expected the first part to reply to the question")
        self.assertEqual([m.reply_to for m in parts[1:]], [None] * (len(parts) - 1),
                         "expected only the first part to be a reply")
        rejected = self.tg.calls_of("sendMessage", ok=False)
        self.assertEqual([c.response for c in rejected], [], "expected Telegram to accept every part")

    def test_answers_come_in_the_order_asked(self):
        self.start_bot()
        for i in range(3):
            reply = self.ask(ALICE, f"Question number {i}")
            self.assertEqual(reply.text, f"Echo: Question number {i}")
        self.assertEqual(self.tg.texts_in(ALICE.id), [f"Echo: Question number {i}" for i in range(3)])


class CommandsTest(BotTestCase):

    def test_start_greets_in_english_without_asking_the_model(self):
        self.start_bot()
        msg = self.tg.send_private(ALICE, "/start")
        greeting = self.wait_reply(msg)
        self.assertEqual(greeting.text, TEXT_START, "expected the English greeting for language_code en")
        self.wait_handled(msg)
        self.assertEqual(self.tg.texts_in(ALICE.id), [TEXT_START], "expected the greeting, once")
        self.assertEqual(self.llm.requests, [], "commands never reach the model")

    def test_start_greets_in_russian_for_a_russian_user(self):
        self.start_bot()
        self.tg.send_private(IVAN, "/start")
        greeting = self.wait_messages(IVAN.id, 1)[0]
        self.assertRegex(greeting.text, "[А-Яа-яЁё]", "expected a Russian greeting for language_code ru")

    def test_help_explains_without_asking_the_model(self):
        self.start_bot()
        msg = self.tg.send_private(ALICE, "/help")
        self.assertEqual(self.wait_reply(msg).text, TEXT_HELP, "expected the help text")
        self.wait_handled(msg)
        self.assertEqual(self.tg.texts_in(ALICE.id), [TEXT_HELP], "expected the help, once")
        self.assertEqual(self.llm.requests, [], "commands never reach the model")

    def test_new_starts_a_fresh_conversation(self):
        self.start_bot()
        self.ask(ALICE, "First topic")
        self.ask(ALICE, "More on the first topic")
        before = len(self.tg.messages_in(ALICE.id))
        self.tg.send_private(ALICE, "/new")
        confirm = self.wait_messages(ALICE.id, 1, since=before)[0]
        self.assertEqual(confirm.text, TEXT_NEW_DONE)
        self.ask(ALICE, "Second topic")
        self.assertEqual(self.llm.requests[-1].messages, [{"role": "user", "content": "Second topic"}],
                         "expected no prior turns after /new")
        self.assertEqual(len(self.llm.requests), 3, "expected /new itself not to reach the model")

    def test_new_addressed_with_the_bot_username_works_the_same(self):
        self.start_bot()
        self.ask(ALICE, "Old topic")
        before = len(self.tg.messages_in(ALICE.id))
        self.tg.send_private(ALICE, "/new@tgllm_test_bot")
        confirm = self.wait_messages(ALICE.id, 1, since=before)[0]
        self.assertEqual(confirm.text, TEXT_NEW_DONE)
        self.ask(ALICE, "New topic")
        self.assertEqual(self.llm.requests[-1].messages, [{"role": "user", "content": "New topic"}])


if __name__ == "__main__":
    main()
