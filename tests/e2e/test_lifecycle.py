"""Start-up (getMe, then long polling) and shutdown on SIGTERM / SIGINT."""

import json
import signal
import time

from fake_openai import Reply
from fake_telegram import Chat
from harness import ALICE, ALLOWED_UPDATES, BotTestCase, main


class StartupTest(BotTestCase):

    def test_start_calls_get_me_then_long_polls_for_messages(self):
        self.start_bot()
        self.assertEqual(self.tg.calls[0].method, "getMe", f"expected getMe first, got {self.tg.calls[0].method}")
        self.assertTrue(self.tg.calls[0].token_ok)
        poll = self.tg.calls_of("getUpdates")[0]
        self.assertTrue(poll.token_ok, "expected the token in the getUpdates URL")
        self.assertEqual(poll.content_type.split(";")[0].strip(), "application/json",
                         "expected a JSON POST body")
        self.assertEqual(int(poll.params.get("timeout", 0)), 30)
        self.assertEqual(poll.params.get("allowed_updates"), ALLOWED_UPDATES)

    def test_updates_are_confirmed_with_the_next_offset(self):
        self.start_bot()
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Confirm me")
        update = self.tg.update("message", msg)
        self.tg.push(update)
        self.wait_reply(msg)
        self.tg.wait_for(lambda: update["update_id"] + 1 in self.tg.offsets(), 5,
                         f"a getUpdates with offset {update['update_id'] + 1}; offsets were {self.tg.offsets()}")

    def test_polling_goes_on_while_the_model_is_slow(self):
        self.start_bot()
        self.llm.enqueue(Reply(delay=4.0))
        self.tg.send_private(ALICE, "slow one")
        self.llm.wait_requests(1)
        polls = len(self.tg.calls_of("getUpdates"))
        self.tg.wait_for(lambda: len(self.tg.calls_of("getUpdates")) >= polls + 2, 4,
                         "the bot to keep polling while a model answer is pending")


    def test_token_rejected_by_telegram_is_logged_without_the_token(self):
        self.tg.token = "999999:a-different-token-entirely"   # Telegram answers 401 to our token
        bot = self.start_bot(wait_polling=False)
        self.tg.wait_for(lambda: self.tg.calls, 10, "the bot to call Telegram")
        self.tg.wait_for(lambda: not bot.running() or any(
            "level=error" in ln or "level=warn" in ln for ln in self.log().splitlines()), 10,
            "a warning or error about the rejected token")
        self.assertLogged(r"401|unauthori[sz]ed|token", what="saying Telegram rejected the token")
        self.assertNoSecretIn(self.log())
        self.assertEqual([c.method for c in self.tg.calls if c.token_ok], [], "control: every call was refused")


class JsonLogTest(BotTestCase):
    """LOG_FORMAT=json: one JSON object a line, for log collectors."""

    def test_every_line_is_a_json_object_with_the_chat_and_update_as_numbers(self):
        bot = self.start_bot(LOG_FORMAT="json")
        self.ask(ALICE, "Log me, secretly")
        self.assertEqual(bot.stop(), 0)
        lines = self.log().splitlines()
        self.assertTrue(lines, "expected log lines")
        objects = []
        for line in lines:
            try:
                objects.append(json.loads(line))
            except ValueError:
                self.fail(f"expected every line to be JSON, got: {line}")
        for o in objects:
            self.assertTrue({"time", "level", "msg"} <= o.keys(), f"expected time, level and msg in {o}")
        answered = [o for o in objects if "answered" in o["msg"] and o.get("chat") == ALICE.id]
        self.assertTrue(answered, "expected the answer's line with chat as a number")
        self.assertIsInstance(answered[0].get("update"), int)
        self.assertNotIn("secretly", "\n".join(o["msg"] for o in objects if o["level"] != "debug"),
                         "expected no message text at info and above")


class ShutdownTest(BotTestCase):

    def assertExitsZeroWithin(self, bot, seconds: float, sig):
        started = time.monotonic()
        bot.signal(sig)
        code = bot.wait(seconds)
        took = time.monotonic() - started
        self.assertIsNotNone(code, f"expected the bot to exit within {seconds} s of {sig.name}; it is still running")
        self.assertEqual(code, 0, f"expected exit status 0 after {sig.name}, got {code}")
        return took

    def test_sigterm_when_idle_exits_zero_quickly(self):
        bot = self.start_bot()
        self.assertExitsZeroWithin(bot, 5, signal.SIGTERM)

    def test_sigint_when_idle_exits_zero_quickly(self):
        bot = self.start_bot()
        self.assertExitsZeroWithin(bot, 5, signal.SIGINT)

    def test_sigterm_lets_the_answer_in_flight_finish(self):
        bot = self.start_bot()
        self.llm.enqueue(Reply(delay=2.0, chunk_delay=0.2))
        msg = self.tg.send_private(ALICE, "Finish before you go")
        self.llm.wait_requests(1)
        signalled = time.monotonic()
        self.assertExitsZeroWithin(bot, 15, signal.SIGTERM)
        replies = self.tg.replies_to(msg)
        self.assertEqual([r.text for r in replies], ["Echo: Finish before you go"],
                         "expected the answer in flight to be delivered before exit")
        late_polls = [round(c.time - signalled, 2) for c in self.tg.calls_of("getUpdates")
                      if c.time > signalled + 0.5]
        self.assertEqual(late_polls, [], "expected no new getUpdates after SIGTERM (seconds after the signal)")

    def test_sigterm_with_a_stuck_model_exits_within_the_bound(self):
        bot = self.start_bot()
        self.llm.enqueue(Reply(delay=120.0))
        self.tg.send_private(ALICE, "This will never be answered")
        self.llm.wait_requests(1)
        took = self.assertExitsZeroWithin(bot, 15, signal.SIGTERM)
        self.assertGreaterEqual(took, 1.0, "expected the bot to give the answer in flight some time")


if __name__ == "__main__":
    main()
