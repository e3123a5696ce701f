"""What the store keeps across restarts: history, /new, handled updates, and
messages that were in the works when the bot was killed."""

from fake_openai import Reply
from fake_telegram import Chat
from harness import ALICE, TEXT_HELP, BotTestCase, main


class HistoryPersistenceTest(BotTestCase):

    def test_history_survives_a_restart(self):
        bot = self.start_bot()
        self.ask(ALICE, "Remember the number 42")
        self.restart_bot(bot)
        self.ask(ALICE, "Which number did I say")
        self.assertEqual(self.llm.requests[-1].messages, [
            {"role": "user", "content": "Remember the number 42"},
            {"role": "assistant", "content": "Echo: Remember the number 42"},
            {"role": "user", "content": "Which number did I say"},
        ], "expected the turns from before the restart in the request")

    def test_new_conversation_survives_a_restart(self):
        bot = self.start_bot()
        self.ask(ALICE, "Forget this later")
        self.tg.send_private(ALICE, "/new")
        self.wait_text(ALICE.id, "new conversation")
        self.restart_bot(bot)
        self.ask(ALICE, "Fresh start")
        self.assertEqual(self.llm.requests[-1].messages, [{"role": "user", "content": "Fresh start"}])


class HandledUpdatesTest(BotTestCase):

    def private_update(self, text: str):
        msg = self.tg.message(Chat.private(ALICE), ALICE, text)
        return msg, self.tg.update("message", msg)

    def assertResentBatchTaken(self):
        self.assertTrue(any(c.scripted for c in self.tg.calls_of("getUpdates")),
                        "control: expected the bot to have been handed the re-sent update")

    def assertAnsweredOnce(self, msg: dict):
        replies = self.tg.replies_to(msg)
        self.assertEqual([r.text for r in replies], ["Echo: " + msg["text"]],
                         "expected exactly one answer to the message")
        self.assertEqual(len(self.llm.requests_with(msg["text"])), 1, "expected one model request for it")

    def test_update_resent_by_telegram_is_not_answered_again(self):
        self.start_bot()
        msg, update = self.private_update("Only once please")
        self.tg.push(update)
        self.wait_reply(msg)
        self.tg.inject_updates([update])   # Telegram hands the same update over again
        # One chat is handled in order: once the next message is answered, the
        # re-sent one has been dealt with.
        self.ask(ALICE, "Next message")
        self.assertResentBatchTaken()
        self.assertAnsweredOnce(msg)

    def test_update_handled_before_a_restart_is_not_answered_after_it(self):
        bot = self.start_bot()
        msg, update = self.private_update("Once across restarts")
        self.tg.push(update)
        self.wait_reply(msg)
        self.restart_bot(bot)
        self.tg.inject_updates([update])
        self.ask(ALICE, "After the restart")   # one chat is handled in order
        self.assertResentBatchTaken()
        self.assertAnsweredOnce(msg)

    def test_command_handled_before_a_restart_is_not_handled_after_it(self):
        bot = self.start_bot()
        msg, update = self.private_update("/help")
        self.tg.push(update)
        self.assertEqual(self.wait_reply(msg).text, TEXT_HELP)
        self.wait_handled(msg)
        self.restart_bot(bot)
        self.tg.inject_updates([update])
        self.ask(ALICE, "After the restart")   # one chat is handled in order
        self.assertResentBatchTaken()
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], [TEXT_HELP],
                         "expected the command answered once: it was done before the restart")

    def test_message_in_the_works_when_killed_is_answered_once_after_restart(self):
        bot = self.start_bot()
        self.llm.enqueue(Reply(delay=30.0))       # the model is still thinking when the bot dies
        msg, update = self.private_update("Please survive the crash")
        self.tg.push(update)
        self.llm.wait_requests(1)
        # The hard case: the bot has already confirmed the update to Telegram,
        # which then forgets it. Give it the chance (it need not take it).
        try:
            self.tg.wait_for(lambda: any(o is not None and o > update["update_id"] for o in self.tg.offsets()),
                             5, "the update to be confirmed")
        except AssertionError:
            pass
        bot.kill()
        self.start_bot()
        reply = self.wait_reply(msg, timeout=20)
        self.assertEqual(reply.text, "Echo: Please survive the crash")
        self.wait_handled(msg)
        self.ask(ALICE, "Next message")   # one chat is handled in order: a second answer would come first
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Please survive the crash"],
                         "expected the message answered exactly once")
        self.assertEqual([m.text for m in self.tg.messages_in(ALICE.id)],
                         ["Echo: Please survive the crash", "Echo: Next message"],
                         "expected the message answered exactly once")
        last = self.llm.requests_with("Please survive the crash")[-1]
        self.assertEqual(last.contents().count("Please survive the crash"), 1,
                         f"expected the message once in the request after restart, got {last.messages!r}")


if __name__ == "__main__":
    main()
