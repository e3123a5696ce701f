"""/retry, /usage and the token budgets (DAILY_TOKENS, MONTHLY_TOKENS).

/retry asks the model again for the chat's last answer, with the same
question and the same context, and the new answer takes the old one's
place in the history. /usage shows the asking user's tokens today and this
month (UTC), per model, as the API reported them (estimated, and said so,
when it reports none); admins also get /usage all. A user over a budget is
told when it starts again and no model call is made; admins are exempt. A
budget is checked and the answer's share held in one store change before
the model is asked, so two messages raced by one user cannot both spend
what is left; an answer that reaches what is left ends there.
"""

import datetime
import json
import sqlite3
import threading

from fake_openai import Reply, reported_usage, streamed
from fake_telegram import Chat
from harness import ALICE, BOB, GROUP_ID, IVAN, BotTestCase, main
from test_store_s3 import BUCKET, PREFIX, S3TestCase

GROUP = Chat.supergroup(GROUP_ID, "Allowed group")


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


class UsageTestCase(BotTestCase):

    def stored_history(self, chat_id: int) -> list:
        path = self.store.split(":", 1)[1]
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute("SELECT role, content FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,))
            return [{"role": r, "content": c} for r, c in rows]
        finally:
            con.close()

    def spent(self, needle: str) -> int:
        """The tokens the fake model reported for the request whose last message holds needle."""
        req = self.llm.wait_for(lambda: self.llm.requests_with(needle), 10, f"a request with {needle!r}")[0]
        return tokens(reported_usage(req, "Echo: " + req.last_content))


class RetryTest(UsageTestCase):

    def test_the_same_question_in_the_same_context_and_the_answer_replaced(self):
        self.start_bot()
        self.ask(ALICE, "First question")
        self.ask(ALICE, "Second question")
        self.llm.enqueue(Reply(text="A better second answer"))
        msg = self.tg.send_private(ALICE, "/retry")
        self.assertEqual(self.wait_reply(msg).text, "A better second answer")
        self.assertEqual(self.llm.requests[-1].messages, [
            user("First question"), assistant("Echo: First question"), user("Second question")])
        self.wait_handled(msg)
        self.assertEqual(self.stored_history(ALICE.id), [
            user("First question"), assistant("Echo: First question"),
            user("Second question"), assistant("A better second answer")])
        self.ask(ALICE, "Third")
        self.assertEqual(self.llm.requests[-1].messages[-3:], [
            user("Second question"), assistant("A better second answer"), user("Third")])

    def test_nothing_to_retry_is_said(self):
        self.start_bot()
        reply = self.ask(IVAN, "/retry")
        self.assertIn("Повторять нечего", reply.text)
        self.ask(ALICE, "Something")
        self.ask(ALICE, "/new")
        self.assertIn("There is no answer to ask again for", self.ask(ALICE, "/retry").text)
        self.assertEqual(len(self.llm.requests), 1)

    def test_a_burst_of_retries_is_answered_in_order_and_leaves_one_exchange(self):
        self.start_bot()
        self.wait_handled(self.tg.send_private(ALICE, "Roll a die"))
        for i in range(20):  # CHAT_QUEUE_MAX: each is queued, none refused as one too many
            self.llm.enqueue(Reply(text=f"Take {i}"))
        msgs = [self.tg.send_private(ALICE, "/retry") for _ in range(20)]
        self.wait_handled(*msgs, timeout=60)
        self.assertEqual([self.tg.replies_to(m)[0].text for m in msgs], [f"Take {i}" for i in range(20)])
        self.assertEqual(self.stored_history(ALICE.id), [user("Roll a die"), assistant("Take 19")])

    def test_retry_in_a_group_and_after_a_restart(self):
        bot = self.start_bot()
        msg = self.tg.send_group(GROUP, IVAN, "@tgllm_test_bot Сколько будет 2+2?")
        self.wait_reply(msg)
        bot = self.restart_bot(bot)
        self.llm.enqueue(Reply(text="Четыре"))
        reply = self.wait_reply(self.tg.send_group(GROUP, BOB, "/retry@tgllm_test_bot"))
        self.assertEqual(reply.text, "Четыре")
        self.assertEqual(self.llm.requests[-1].messages, [user("Иван: @tgllm_test_bot Сколько будет 2+2?")])

    def test_a_retry_can_be_stopped(self):
        self.start_bot()
        self.ask(ALICE, "Tell a story")
        self.llm.enqueue(streamed([f"word{i} " for i in range(40)], chunk_delay=0.2))
        msg = self.tg.send_private(ALICE, "/retry")
        draft = self.tg.wait_for(lambda: [d for d in self.tg.drafts if "word2" in (d.get("text") or "")], 10,
                                 "a draft of the retried answer")[0]
        self.tg.push(self.tg.update("stopped_message_generation",
                                    {"chat": Chat.private(ALICE).to_json(), "draft_id": draft["draft_id"]}))
        reply = self.wait_reply(msg)
        self.assertIn("(stopped)", reply.text)
        self.wait_handled(msg)
        # The retried answer replaces the first, cut where the stop found it: a chunk or two
        # after word2 when the machine is slow (every 0.2 s), never the whole story.
        question, said = self.stored_history(ALICE.id)
        self.assertEqual(question, user("Tell a story"))
        self.assertEqual(said["role"], "assistant")
        self.assertTrue(said["content"].startswith("word0 word1 word2 "), said)
        self.assertNotIn("word39", said["content"])
        self.assertNotIn("(stopped)", said["content"])


class UsageTest(UsageTestCase):

    def test_usage_counts_what_the_api_reported_today_and_this_month(self):
        self.start_bot(OPENAI_MODELS="gpt-4o-mini, gpt-4o")
        self.ask(ALICE, "Hello there")
        self.ask(ALICE, "/model gpt-4o")
        self.ask(ALICE, "And again")
        first, second = self.spent("Hello there"), self.spent("And again")
        report = self.ask(ALICE, "/usage").text
        self.assertIn(f"Today (UTC): {first + second}\n", report)
        self.assertIn(f"This month: {first + second}\n", report)
        for needle, model in (("Hello there", "gpt-4o-mini"), ("And again", "gpt-4o")):
            req = self.llm.requests_with(needle)[0]
            u = reported_usage(req, "Echo: " + req.last_content)
            self.assertIn(f"  {model}: {u['prompt_tokens']} + {u['completion_tokens']}\n", report)
        self.assertNotIn("~", report)
        self.assertNotIn("Left", report, "no budget, nothing said of one")
        self.assertIn("Сегодня (UTC): токенов не потрачено", self.ask(IVAN, "/usage").text)

    def test_an_answer_without_reported_usage_is_estimated_and_said_so(self):
        self.start_bot()
        self.llm.enqueue(Reply(text="An answer of a provider that counts nothing", usage=False))
        self.ask(ALICE, "Count this")
        report = self.ask(ALICE, "/usage").text
        self.assertRegex(report, r"Today \(UTC\): ~\d+")
        self.assertIn("an estimate", report)

    def test_usage_survives_a_restart(self):
        bot = self.start_bot()
        self.ask(ALICE, "Remember my spending")
        self.restart_bot(bot)
        self.assertIn(f"Today (UTC): {self.spent('Remember my spending')}\n", self.ask(ALICE, "/usage").text)

    def test_usage_all_is_for_admins(self):
        self.start_bot(TG_BOT_ADMINS="alice")
        self.wait_handled(self.tg.send_private(BOB, "Bob talks a lot, a lot more than the others"),
                          self.tg.send_private(IVAN, "Привет"))
        report = self.ask(ALICE, "/usage all").text
        self.assertIn("Top users today (UTC):\n1. @Bob_Builder (222002): ", report)
        self.assertIn("2. @ivan_petrov (333003): ", report)
        self.assertIn("Top users this month:\n1. @Bob_Builder", report)
        refused = self.ask(BOB, "/usage all").text
        self.assertIn("Only the bot's admins can see everyone's usage. Here is yours.", refused)
        self.assertIn(f"Today (UTC): {self.spent('Bob talks')}\n", refused)


class BudgetTest(UsageTestCase):
    """The fake model counts 4 + bytes / 3 tokens a message and bytes / 3 an answer, as the bot estimates."""

    LONG = "word " * 20  # a 100-byte answer: 33 completion tokens

    def test_over_the_daily_budget_no_model_call_and_the_time_it_starts_again(self):
        self.start_bot(DAILY_TOKENS="50")
        self.llm.enqueue(Reply(text=self.LONG))
        self.ask(ALICE, "hi")  # 4 prompt + 33 completion: 13 left, less than the next prompt
        reply = self.ask(ALICE, "and now?")
        self.assertEqual(reply.text, "You have used your 50 tokens for today. The budget starts again at 00:00 UTC.")
        self.assertNoModelRequest("and now?")
        report = self.ask(ALICE, "/usage").text
        self.assertIn("Left today: 13 of 50 tokens.", report)
        self.assertIn("Echo: Hello", self.ask(BOB, "Hello").text, "another user's budget is their own")

    def test_over_the_monthly_budget(self):
        self.start_bot(MONTHLY_TOKENS="50", DAILY_TOKENS="1000")
        self.llm.enqueue(Reply(text=self.LONG))
        self.ask(IVAN, "привет")
        reply = self.ask(IVAN, "и ещё?")
        first = (datetime.datetime.now(datetime.timezone.utc).replace(day=28) + datetime.timedelta(days=4)).replace(
            day=1)
        self.assertEqual(reply.text, f"Вы израсходовали свои 50 токенов на этот месяц. "
                                     f"Бюджет обновится {first:%Y-%m-%d}.")
        self.assertNoModelRequest("и ещё?")

    def test_admins_have_no_budget(self):
        self.start_bot(DAILY_TOKENS="10", TG_BOT_ADMINS="alice")
        for text in ("one", "two", "three"):
            self.assertEqual(self.ask(ALICE, text).text, f"Echo: {text}")
        self.assertNotIn("Left", self.ask(ALICE, "/usage").text)

    def test_an_answer_that_reaches_the_budget_ends_there(self):
        self.start_bot(DAILY_TOKENS="50")
        self.llm.enqueue(streamed(["word "] * 200, chunk_delay=0.01))  # 1000 bytes: far past what is left
        msg = self.tg.send_private(ALICE, "Tell me everything")
        reply = self.wait_reply(msg)
        self.assertIn("(cut short: your token budget ran out; /usage tells more)", reply.text)
        self.assertLess(len(reply.text), 250)
        req = self.llm.requests_with("Tell me everything")[0]
        self.llm.wait_for(lambda: req.finished, 5, "the model transfer to end at the budget")
        self.wait_handled(msg)
        report = self.ask(ALICE, "/usage").text
        self.assertRegex(report, r"Today \(UTC\): ~(4\d|50)\n", "about the budget spent, estimated")
        self.assertIn("You have used your 50 tokens", self.ask(ALICE, "more?").text)

    def test_two_messages_raced_in_two_chats_cannot_both_spend_what_is_left(self):
        self.start_bot(DAILY_TOKENS="60")
        self.llm.on_message_containing("private", Reply(text="slow answer", delay=2))
        first = self.tg.send_private(ALICE, "in private")
        self.llm.wait_for(lambda: self.llm.requests_with("in private"), 10, "the first request")
        second = self.tg.send_group(GROUP, ALICE, "@tgllm_test_bot in the group")
        reply = self.wait_reply(second)
        self.assertIn("You have used your 60 tokens for today", reply.text)
        self.assertNoModelRequest("in the group")
        self.assertEqual(self.wait_reply(first).text, "slow answer")
        self.wait_handled(first)
        left = 60 - self.spent_by_slow_answer()
        self.assertIn(f"Left today: {left} of 60 tokens.", self.ask(ALICE, "/usage").text,
                      "the reservation given back once the answer is counted")

    def spent_by_slow_answer(self) -> int:
        req = self.llm.requests_with("in private")[0]
        return tokens(reported_usage(req, "slow answer"))


def tokens(usage: dict) -> int:
    return usage["prompt_tokens"] + usage["completion_tokens"]


def usage_key() -> str:
    return f"usage-{datetime.datetime.now(datetime.timezone.utc):%Y-%m}"


class S3UsageTest(S3TestCase):
    """`tgllm handle` over S3: /retry replaces the exchange in the history object, usage is a small object
    beside it that concurrent invocations add to without losing a count, and budgets hold."""

    # The usage object's reads wait for a partner: two invocations read the same version and collide.
    s3_options = {"pair_gets": rf"^prefix/tgllm/settings/{ALICE.id}/usage-", "pair_wait_ms": 3000}

    def handle_text(self, u, text: str, **env) -> dict:
        msg = self.tg.message(Chat.private(u), u, text)
        self.assertEqual(self.handle(self.tg.update("message", msg), **env), 200)
        return msg

    def usage_object(self, u):
        raw = self.s3.read_object(BUCKET, f"{PREFIX}tgllm/settings/{u.id}/{usage_key()}")
        return None if raw is None else json.loads(raw)

    def test_retry_and_usage_through_handle(self):
        self.serverless_identity()
        self.handle_text(BOB, "What is S3?")
        self.llm.enqueue(Reply(text="Object storage, said better"))
        msg = self.handle_text(BOB, "/retry")
        self.assertEqual(self.tg.replies_to(msg)[0].text, "Object storage, said better")
        self.assertEqual(self.history(BOB.id), [user("What is S3?"), assistant("Object storage, said better")])
        msg = self.handle_text(BOB, "/usage")
        answers = ["Echo: What is S3?", "Object storage, said better"]
        spent = sum(tokens(reported_usage(r, a)) for r, a in zip(self.llm.requests, answers))
        self.assertIn(f"Today (UTC): {spent}\n", self.tg.replies_to(msg)[0].text)
        counted = self.usage_object(BOB)
        self.assertEqual(counted["name"], "@Bob_Builder")
        self.assertEqual(list(counted["days"]), [f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}"])
        msg = self.handle_text(ALICE, "/usage all", TG_BOT_ADMINS="alice")  # every user's object, listed
        self.assertIn(f"Top users today (UTC):\n1. @Bob_Builder ({BOB.id}): {spent}\n",
                      self.tg.replies_to(msg)[0].text)

    def test_concurrent_invocations_lose_no_count_and_a_budget_holds(self):
        self.serverless_identity()
        msgs = [self.tg.message(Chat.private(ALICE), ALICE, text) for text in ("First", "Second")]
        results = {}
        threads = [threading.Thread(target=lambda m=m: results.update(
            {m["text"]: self.handle(self.tg.update("message", m), DAILY_TOKENS="100000")})) for m in msgs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(results, {"First": 200, "Second": 200})
        spent = sum(tokens(reported_usage(r, "Echo: " + r.last_content)) for r in self.llm.requests)
        day = self.usage_object(ALICE)["days"][f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}"]
        count = day["gpt-4o-mini"]
        self.assertEqual((count["prompt"] + count["completion"], count["reserved"]), (spent, 0),
                         f"expected both answers counted and both reservations given back: {count}")
        statuses = [p["status"] for p in self.requests_to(f"{PREFIX}tgllm/settings/{ALICE.id}/{usage_key()}", "PUT")]
        self.assertIn(412, statuses, f"expected the two writers to collide; without it this proves nothing: "
                                     f"{statuses}")
        msg = self.handle_text(ALICE, "Over?", DAILY_TOKENS=str(spent + 5))
        self.assertIn("You have used your", self.tg.replies_to(msg)[0].text)
        self.assertNoModelRequest("Over?")


if __name__ == "__main__":
    main()
