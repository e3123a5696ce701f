"""The context window: history is trimmed to CONTEXT_TOKENS, and when the
model still says the context is too long, older turns are dropped (the user
is told) without wiping the conversation."""

from harness import ALICE, BotTestCase, estimate_tokens, main


def filler(label: str, size: int) -> str:
    """A message of about size characters that starts with label."""
    text = label + ":"
    while len(text) < size:
        text += " lorem"
    return text


class TokenBudgetTest(BotTestCase):

    def test_old_turns_are_trimmed_to_the_token_budget(self):
        self.start_bot(CONTEXT_TOKENS="200", SYSTEM_PROMPT="Be brief.")
        history = []
        for i in range(4):
            text = filler(f"Turn {i}", 120)
            reply = self.ask(ALICE, text)
            history += [text, reply.text]
        self.ask(ALICE, "Final question")
        req = self.llm.requests[-1]
        contents = req.contents()
        self.assertEqual(req.messages[0], {"role": "system", "content": "Be brief."},
                         "expected the system prompt to stay first")
        self.assertEqual(contents[-1], "Final question", "expected the new message to be sent")
        self.assertNotIn(history[0], contents, "expected the oldest turn to be left out")
        kept = contents[1:-1]
        self.assertEqual(kept, history[len(history) - len(kept):],
                         "expected the kept turns to be the most recent ones, in order")
        self.assertLessEqual(estimate_tokens(contents), 200 * 1.05,
                             f"expected the request within 200 tokens (~4 + bytes/3 each); "
                             f"sizes {[len(c) for c in contents]}")
        self.assertEqual(self.tg.texts_in(ALICE.id)[-1], "Echo: Final question")

    def test_message_too_long_for_the_budget_gets_a_short_reply(self):
        self.start_bot(CONTEXT_TOKENS="200")
        self.tg.send_private(ALICE, filler("An essay far beyond the budget", 1500))
        note = self.wait_text(ALICE.id, "too long")
        self.assertLess(len(note.text), 500, "expected a short reply")
        self.assertNoModelRequest("An essay far beyond the budget")
        self.assertEqual(self.ask(ALICE, "Short one").text, "Echo: Short one")


class TokenCalibrationTest(BotTestCase):
    """The bot learns from the usage the API reports how many real tokens its
    estimate (~4 + UTF-8 bytes / 3 a message) stands for, and fits the history
    to CONTEXT_TOKENS in real tokens: a model that counts more gets fewer old
    turns, one that counts fewer gets more."""

    def converse(self, turns: int, size: int) -> list:
        """Alice sends `turns` messages of about size characters; returns the history (questions and answers)."""
        history = []
        for i in range(turns):
            text = filler(f"Turn {i}", size)
            history += [text, self.ask(ALICE, text).text]
        return history

    def final_request(self) -> list:
        self.ask(ALICE, "Final question")
        contents = self.llm.requests[-1].contents()
        self.assertEqual(contents[-1], "Final question", "expected the new message to be sent")
        return contents

    def test_model_counting_more_tokens_than_estimated_gets_fewer_old_turns(self):
        self.start_bot(CONTEXT_TOKENS="260")
        self.llm.prompt_token_factor = 4.0      # usage says 4x what the bot estimates
        history = self.converse(3, 90)          # three answers to learn from (about 70 tokens an exchange)
        contents = self.final_request()
        self.assertLessEqual(estimate_tokens(history + ["Final question"]), 260 * 0.9,
                             "control: the whole history would fit 260 tokens by the estimate alone")
        kept = contents[:-1]
        self.assertNotIn(history[0], kept, f"expected the oldest turn left out once the bot learned the model "
                                           f"counts 4x its estimate; the request held {len(kept)} of "
                                           f"{len(history)} history turns")
        self.assertTrue(kept, "expected the most recent exchange still sent")
        self.assertEqual(kept, history[len(history) - len(kept):],
                         "expected the kept turns to be the most recent ones, in order")

    def test_without_such_usage_the_same_turns_are_kept(self):
        self.start_bot(CONTEXT_TOKENS="260")
        history = self.converse(3, 90)
        contents = self.final_request()
        self.assertEqual(contents[:-1], history, "expected every turn sent when the usage matches the estimate")

    def test_model_counting_fewer_tokens_than_estimated_gets_more_old_turns(self):
        self.start_bot(CONTEXT_TOKENS="200")
        self.llm.prompt_token_factor = 0.25     # usage says a quarter of what the bot estimates
        history = self.converse(4, 90)
        contents = self.final_request()
        self.assertGreater(estimate_tokens(history + ["Final question"]), 200,
                           "control: the whole history would not fit 200 tokens by the estimate alone")
        self.assertEqual(contents[:-1], history, "expected every turn sent once the bot learned the model counts "
                                                 "a quarter of its estimate")


class ModelContextLimitTest(BotTestCase):

    def test_context_overflow_drops_older_turns_answers_and_tells_the_user(self):
        self.start_bot()
        history = []
        for i in range(5):
            text = filler(f"Story part {i}", 100)
            history += [text, self.ask(ALICE, text).text]
        self.llm.context_limit = 700          # the whole history (~1,050 characters) no longer fits
        msg = self.tg.send_private(ALICE, "Newest question")
        reply = self.wait_reply(msg, timeout=20)
        self.assertEqual(reply.text, "Echo: Newest question")
        self.wait_text(ALICE.id, "Older messages", case=True)
        attempts = self.llm.requests_with("Newest question")
        self.assertTrue(2 <= len(attempts) <= 5, f"expected a few attempts, got {len(attempts)}")
        self.assertEqual(attempts[0].status, 400)
        accepted = attempts[-1]
        self.assertEqual(accepted.status, 200)
        self.assertLessEqual(accepted.total_chars(), 700)
        self.assertEqual(accepted.contents()[-1], "Newest question")

        # The conversation was not wiped: no /new needed, recent turns still go along.
        self.llm.context_limit = None
        self.ask(ALICE, "And now what")
        later = self.llm.requests[-1].contents()
        self.assertEqual(later[-3:], ["Newest question", "Echo: Newest question", "And now what"],
                         "expected the most recent exchange in the next request")
        self.assertIn(history[-1], later, "expected the stored history to remain")

    def test_message_too_long_for_the_model_gets_a_short_reply(self):
        self.start_bot()
        self.llm.context_limit = 300
        self.tg.send_private(ALICE, filler("A message the model cannot take", 800))
        self.wait_text(ALICE.id, "too long", timeout=20)
        attempts = self.llm.requests_with("A message the model cannot take")
        self.assertLessEqual(len(attempts), 5, f"expected at most a few attempts, got {len(attempts)}")
        self.assertEqual(self.ask(ALICE, "Short one", timeout=20).text, "Echo: Short one")


if __name__ == "__main__":
    main()
