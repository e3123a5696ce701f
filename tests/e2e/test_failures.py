"""When the model or Telegram fails: retries, clear messages, clear log
lines, and the bot goes on serving."""

from fake_openai import (Reply, answer, cut, cut_before_text, insufficient_quota, invalid_api_key, rate_limited,
                         server_error)
from harness import ALICE, API_KEY, BOB, BotTestCase, main


class ModelFailureTest(BotTestCase):

    def test_server_errors_are_retried_with_backoff_then_answered(self):
        self.start_bot()
        self.llm.enqueue(server_error(503), server_error(502))
        reply = self.ask(ALICE, "Are you there", timeout=15)
        self.assertEqual(reply.text, "Echo: Are you there")
        reqs = self.llm.requests_with("Are you there")
        self.assertEqual([r.status for r in reqs], [503, 502, 200])
        gaps = [round(b.time - a.time, 2) for a, b in zip(reqs, reqs[1:])]
        self.assertGreaterEqual(gaps[0], 0.3, f"expected ~0.5 s before the first retry, gaps were {gaps}")
        self.assertGreaterEqual(gaps[1], 0.6, f"expected ~1 s before the second retry, gaps were {gaps}")
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: Are you there"], "expected no error message")

    def test_rate_limit_retry_after_header_is_obeyed(self):
        self.start_bot()
        self.llm.enqueue(rate_limited(retry_after=2))
        reply = self.ask(ALICE, "Busy now", timeout=15)
        self.assertEqual(reply.text, "Echo: Busy now")
        first, second = self.llm.requests_with("Busy now")[:2]
        self.assertGreaterEqual(second.time - first.time, 1.8,
                                f"expected the retry after Retry-After: 2, came after {second.time - first.time:.2f} s")

    def test_rate_limit_without_retry_after_is_retried(self):
        self.start_bot()
        self.llm.enqueue(rate_limited(), rate_limited())
        reply = self.ask(ALICE, "Crowded", timeout=15)
        self.assertEqual(reply.text, "Echo: Crowded")
        self.assertEqual([r.status for r in self.llm.requests_with("Crowded")], [429, 429, 200])

    def test_model_down_gives_a_short_message_and_the_bot_goes_on(self):
        self.start_bot()
        self.llm.on_message_containing("doomed", server_error(500))
        msg = self.tg.send_private(ALICE, "a doomed question")
        note = self.wait_text(ALICE.id, "not answering", timeout=20)
        self.wait_handled(msg)
        attempts = len(self.llm.requests_with("doomed"))
        self.assertTrue(2 <= attempts <= 5, f"expected about 3 attempts, got {attempts}")
        late = [c for c in self.tg.calls_of("sendChatAction", chat_id=ALICE.id) if c.time > note.time]
        self.assertEqual(late, [], "expected typing to stop when the error message was sent")
        self.assertEqual(len(self.llm.requests_with("doomed")), attempts, "expected no retries after giving up")
        self.assertEqual(self.ask(BOB, "Are you back").text, "Echo: Are you back")
        self.assertEqual(self.ask(ALICE, "And for me").text, "Echo: And for me")

    def test_quota_exhausted_is_not_retried_and_the_user_hears_about_credit(self):
        self.start_bot()
        self.llm.enqueue(insufficient_quota())
        msg = self.tg.send_private(ALICE, "Spend money")
        self.wait_text(ALICE.id, "credit")
        self.wait_handled(msg)
        self.assertEqual(len(self.llm.requests), 1, "expected no retry when the quota is exhausted")
        self.assertLogged(r"quota|credit|billing|429", what="for the operator to top up the account")

    def test_rejected_api_key_is_reported_to_user_and_operator(self):
        self.start_bot()
        self.llm.enqueue(invalid_api_key())
        self.tg.send_private(ALICE, "Do you know me")
        self.wait_text(ALICE.id, "API key", case=True)
        self.assertLogged(r"401|key", what="saying the API key is rejected")
        self.assertNotIn(API_KEY, self.log(), "expected the API key itself never to be logged")

    def test_an_error_body_that_echoes_the_key_is_logged_without_any_of_it(self):
        # A proxy's error page, not JSON: the log keeps its first 200 bytes. The
        # key starts at byte 180, and a log that cut before masking kept 20 bytes of it.
        body = "<html><body>" + "x" * 158 + " Bad key: " + API_KEY + " is not valid here</body></html>"
        self.assertEqual(body.index(API_KEY), 180)
        self.start_bot()
        self.llm.enqueue(Reply(status=401, raw_body=body.encode()))
        msg = self.tg.send_private(ALICE, "Who am I to you")
        self.wait_text(ALICE.id, "API key", case=True)
        self.wait_handled(msg)
        self.assertLogged(r"HTTP 401: <html>", what="quoting the error page")
        self.assertNoSecretIn(self.log())

    def test_answers_that_show_nothing_are_told_and_not_stored(self):
        self.start_bot()
        for text, notice in (("<think>Reasoning until the tokens ran out", "ran out of room while thinking"),
                             ("<think>Only reasoning</think>\n\n", "empty answer"),
                             ("```\n```", "empty answer")):
            self.llm.enqueue(answer(text, finish_reason="length" if "ran out" in notice else "stop"))
            msg = self.tg.send_private(ALICE, f"Question {notice}")
            self.assertIn(notice, self.wait_reply(msg).text)
            self.wait_handled(msg)
        self.ask(ALICE, "And now")
        self.assertEqual(self.llm.requests[-1].messages, [{"role": "user", "content": "And now"}],
                         "expected no turn stored for the answers that showed nothing")

    def test_cut_stream_delivers_the_partial_answer_with_a_notice(self):
        self.start_bot()
        self.llm.enqueue(cut("The first half of a long story", pieces=3))
        self.tg.send_private(ALICE, "Tell me a story")
        msg = self.wait_text(ALICE.id, "cut off")
        self.assertIn("The first half of a long story", msg.text)
        self.assertIn("(the answer was cut off)", msg.text)

    def test_stream_cut_before_any_text_is_retried(self):
        self.start_bot()
        self.llm.enqueue(cut_before_text())
        reply = self.ask(ALICE, "Try again please", timeout=15)
        self.assertEqual(reply.text, "Echo: Try again please")
        self.assertEqual(len(self.llm.requests_with("Try again please")), 2)
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: Try again please"])


class TelegramFailureTest(BotTestCase):

    def test_send_message_rate_limit_is_obeyed_and_delivered_once(self):
        self.start_bot()
        self.tg.fail("sendMessage", times=1, error_code=429, retry_after=1, chat_id=ALICE.id)
        msg = self.tg.send_private(ALICE, "Flood me")
        reply = self.wait_reply(msg, timeout=15)
        self.assertEqual(reply.text, "Echo: Flood me")
        calls = self.tg.calls_of("sendMessage", chat_id=ALICE.id)
        refused = [c for c in calls if c.status == 429]
        self.assertEqual(len(refused), 1)
        delivered = [c for c in calls if c.ok]
        self.assertGreaterEqual(delivered[0].time - refused[0].time, 0.9,
                                "expected the bot to wait retry_after = 1 s before sending again")
        self.wait_handled(msg)
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: Flood me"], "expected the answer exactly once")

    def test_blocked_user_is_dropped_and_others_are_served(self):
        bot = self.start_bot()
        self.tg.block(BOB.id)
        blocked = self.tg.send_private(BOB, "I blocked you")
        self.tg.wait_for(lambda: self.tg.calls_of("sendMessage", chat_id=BOB.id) or
                         self.llm.requests_with("I blocked you"), 10, "the bot to try to answer Bob")
        self.assertEqual(self.ask(ALICE, "Hello after block", timeout=15).text, "Echo: Hello after block")
        # The answer reaches Telegram as a draft or a message; either way Telegram says 403.
        sends = lambda: (self.tg.calls_of("sendMessage", chat_id=BOB.id) +
                         self.tg.calls_of("sendMessageDraft", chat_id=BOB.id))
        self.tg.wait_for(sends, 10, "the bot to try sending Bob the answer")
        self.wait_handled(blocked)
        self.assertBotRunning(bot)
        self.assertLogged(r"403|blocked|forbidden", what="about the blocked chat")
        self.assertLessEqual(len(sends()), 3, "expected a 403 not to be retried over and over")

    def test_malformed_get_updates_answers_are_logged_and_polling_goes_on(self):
        bot = self.start_bot()
        self.tg.inject_body(b'{"ok":true,"result":[{"update_id":')
        self.tg.inject_body(b'{"ok":false,"error_code":500,"description":"Internal Server Error"}', status=500)
        self.tg.inject_body(b"<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html")
        self.tg.inject_body(b'{"ok":true,"result":{"not":"an array"}}')
        self.tg.wait_for(lambda: not self.tg.scripted, 20, "the bot to poll through the broken answers")
        self.assertEqual(self.ask(ALICE, "Still polling", timeout=20).text, "Echo: Still polling")
        self.assertBotRunning(bot)
        logged = [ln for ln in self.log_lines() if "getUpdates" in ln and ("level=warn" in ln or "level=error" in ln)]
        self.assertGreaterEqual(len(logged), 3, "expected a warning about (nearly) each of the 4 broken getUpdates "
                                                f"answers; got {logged!r}")


if __name__ == "__main__":
    main()
