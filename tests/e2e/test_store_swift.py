"""STORE=s3://BUCKET/PREFIX against OpenStack Swift's S3 API (s3api with
tempauth), a real S3 server from Debian's packages, started by
swift_server.py (skipped with the reason when Swift is not installed; a
failure in CI, which installs it).

What these tests prove, beyond test_store_s3.py's emulator:
  - a key named account:user ("test:tester") signs requests Swift accepts:
    Swift recomputes the SigV4 signature (signature, region, canonical
    query), and a wrong secret is refused; it also checks the payload hash
    (x-amz-content-sha256) against the body, which s3rver does not;
  - a conversation of two exchanges is stored as <prefix><chat_id>.json in
    the original bot's layout (a JSON array of {"role","content"}), read back
    from Swift;
  - Swift answers 501 to conditional writes: tgllm falls back to plain writes
    with one warning, and remembers it in the bucket, so a later `handle`
    process neither warns nor tries a conditional write again;
  - the update journal works: an update sent again is answered once, and a
    pending one is replayed at start (a listing: ListObjectsV2 on Swift);
  - /new deletes the history object;
  - the secret never appears in the bot's log.

One Swift serves the whole class (it takes a few seconds to start); each
test has its own bucket.
"""

import itertools
import json
import os
import sys

from harness import ALICE, IVAN, BotTestCase, Chat, User, main
from swift_server import SwiftServer

PREFIX = "prefix/"
NO_CONDITIONS = "does not support conditional writes"
STORE_FAILED = "Something went wrong with the conversation storage"


class SwiftTestCase(BotTestCase):
    """A BotTestCase with the class's Swift and a bucket of its own; swift_env() points the bot at it."""

    swift: SwiftServer
    _buckets = itertools.count(1)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.swift = SwiftServer(buckets=()).start()
        cls.addClassCleanup(cls.swift.stop)

    def setUp(self):
        super().setUp()
        self.bucket = f"bucket-{next(self._buckets)}"
        self.swift.create_bucket(self.bucket)

    def tearDown(self):
        failed = self._failed()
        if failed or os.environ.get("TGLLM_E2E_VERBOSE"):
            sys.stderr.write(f"\n===== {self.id()}: Swift's S3 requests (last 60) =====\n"
                                     f"{self.swift.describe()}\n")
        super().tearDown()
        if not failed:
            # Shorter than the 8 bytes harness looks for in every log: checked whole here.
            self.assertNotIn(self.swift.secret_key, self.log(), "expected the S3 secret never in the bot's log")

    def swift_env(self, **env) -> dict:
        base = {
            "STORE": f"s3://{self.bucket}/{PREFIX}",
            "S3_ENDPOINT": self.swift.endpoint,
            "S3_REGION": self.swift.region,
            "AWS_ACCESS_KEY_ID": self.swift.access_key,
            "AWS_SECRET_ACCESS_KEY": self.swift.secret_key,
        }
        base.update(env)
        return base

    def requests(self) -> list:
        """The bot's requests to this test's bucket, as Swift answered them."""
        return [r for r in self.swift.requests() if r["url"].split("?")[0].split("/")[1] == self.bucket]

    def history(self, chat_id: int):
        """The chat's history object as Swift holds it (parsed), or None when there is none."""
        raw = self.swift.read_object(self.bucket, f"{PREFIX}{chat_id}.json")
        return None if raw is None else json.loads(raw)

    def wait_history(self, chat_id: int, turns: int, timeout: float = 10.0) -> list:
        """The history object once it holds `turns` entries (it is written after the reply is sent)."""
        def stored():
            h = self.history(chat_id) or []
            return len(h) == turns and h
        return self.tg.wait_for(stored, timeout, lambda: f"{PREFIX}{chat_id}.json to hold {turns} turns; it holds "
                                                         f"{self.history(chat_id)!r}")

    def journal_record(self, update_id: int):
        raw = self.swift.read_object(self.bucket, f"{PREFIX}tgllm/updates/{update_id}.json")
        return None if raw is None else json.loads(raw)

    def journal_state(self, update_id: int):
        """The update's state in the S3 journal (wait_handled uses it)."""
        record = self.journal_record(update_id)
        return None if record is None else record.get("state")

    def handle(self, update: dict, **env) -> int:
        """Runs `tgllm handle` once with the update; its statusCode (stderr in self.last_handle_log)."""
        return self.handle_update(update, self.swift_env(**env))

    def no_conditions_warnings(self, log: str) -> list:
        return [ln for ln in log.splitlines() if "level=warn" in ln and NO_CONDITIONS in ln]

    def refused_conditions(self) -> list:
        return [r for r in self.requests() if r["status"] == 501]


class SwiftStoreTest(SwiftTestCase):

    def test_two_exchanges_are_stored_in_the_original_layout(self):
        self.start_bot(**self.swift_env())
        for text in ("Remember the number 42", "Which number did I say?"):
            self.assertEqual(self.ask(ALICE, text).text, f"Echo: {text}", "expected the model's answer")
        self.assertEqual(self.llm.requests[-1].contents(),
                         ["Remember the number 42", "Echo: Remember the number 42", "Which number did I say?"],
                         "expected the first exchange, read back from Swift, in the second request")
        self.assertEqual(self.wait_history(ALICE.id, 4), [
            {"role": "user", "content": "Remember the number 42"},
            {"role": "assistant", "content": "Echo: Remember the number 42"},
            {"role": "user", "content": "Which number did I say?"},
            {"role": "assistant", "content": "Echo: Which number did I say?"},
        ], f"expected {PREFIX}{ALICE.id}.json to hold the four turns as a JSON array of role/content")

        # Swift refuses conditional writes: one 501, one warning, then plain writes.
        self.assertEqual(len(self.no_conditions_warnings(self.log())), 1,
                         f"expected one warning about conditional writes; the warnings are:\n"
                         + "\n".join(self.log_lines("warn")))
        self.assertEqual(len(self.refused_conditions()), 1,
                         f"expected one conditional write refused (501), then none tried; Swift answered:\n"
                         + self.swift.describe())
        self.assertEqual(self.swift.read_object(self.bucket, f"{PREFIX}tgllm/settings/0/s3_conditional_writes"),
                         b"unsupported", "expected the 501 remembered in the bucket")
        failed = [r for r in self.requests() if r["status"] >= 400 and r["status"] not in (404, 501)]
        self.assertEqual(failed, [], "expected Swift to accept every signed request")

    def test_an_update_sent_again_is_answered_once(self):
        self.start_bot(**self.swift_env())
        msg = self.tg.message(Chat.private(IVAN), IVAN, "Только один раз")
        update = self.tg.update("message", msg)
        self.tg.push(update)
        self.wait_reply(msg)
        self.wait_handled(msg)
        self.tg.inject_updates([update])
        self.ask(IVAN, "Следующее")   # one chat is handled in order
        self.assertTrue(any(c.scripted for c in self.tg.calls_of("getUpdates")),
                        "control: expected the bot to have been handed the update again")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Только один раз"],
                         "expected exactly one answer to the update sent again")
        self.assertEqual(self.journal_record(update["update_id"]), {"state": "done"})
        self.assertEqual([t["content"] for t in self.wait_history(IVAN.id, 4)],
                         ["Только один раз", "Echo: Только один раз", "Следующее", "Echo: Следующее"])

    def test_a_pending_update_is_replayed_at_start(self):
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Left unanswered by a crash")
        update = self.tg.update("message", msg)
        record = {"state": "pending", "chat_id": ALICE.id, "body": update}
        self.swift.put_object(self.bucket, f"{PREFIX}tgllm/updates/{update['update_id']}.json",
                              json.dumps(record).encode())
        self.start_bot(**self.swift_env())
        self.assertEqual(self.wait_reply(msg).text, "Echo: Left unanswered by a crash")
        self.wait_handled(msg)
        self.assertEqual(self.wait_history(ALICE.id, 2)[0]["content"], "Left unanswered by a crash")

    def test_new_deletes_the_history(self):
        self.start_bot(**self.swift_env())
        self.ask(ALICE, "Forget this later")
        self.wait_history(ALICE.id, 2)
        self.tg.send_private(ALICE, "/new")
        self.wait_text(ALICE.id, "new conversation")
        self.assertIsNone(self.history(ALICE.id), "expected /new to delete the history object")
        self.ask(ALICE, "Fresh start")
        self.assertEqual(self.llm.requests[-1].contents(), ["Fresh start"], "expected no turn from before /new")
        self.assertEqual([t["content"] for t in self.wait_history(ALICE.id, 2)], ["Fresh start", "Echo: Fresh start"])

    def test_the_501_is_learned_once_across_handle_runs(self):
        # As in test_handle.py: the cached identity is checked against the token's bot id.
        self.tg.bot = User(id=int(self.tg.token.split(":")[0]), first_name="Test Bot",
                           username=self.tg.bot.username, is_bot=True)
        runs = []
        for text in ("First", "Second"):
            msg = self.tg.message(Chat.private(ALICE), ALICE, text)
            refused_before = len(self.refused_conditions())
            self.assertEqual(self.handle(self.tg.update("message", msg)), 200)
            self.assertEqual([r.text for r in self.tg.replies_to(msg)], [f"Echo: {text}"])
            runs.append((self.no_conditions_warnings(self.last_handle_log),
                         len(self.refused_conditions()) - refused_before))
        self.assertEqual(len(runs[0][0]), 1, f"expected the first run to warn once; got {runs[0][0]}")
        self.assertEqual(runs[1][0], [], "expected the second run not to warn again")
        self.assertEqual([n for _, n in runs], [1, 0], "expected one conditional write refused by Swift in the "
                                                        "first run, and none tried in the second")
        self.assertEqual([t["content"] for t in self.wait_history(ALICE.id, 4)],
                         ["First", "Echo: First", "Second", "Echo: Second"])

    def test_a_wrong_secret_is_refused(self):
        # Control: Swift checks the signature, so the tests above prove tgllm signs right.
        wrong = "wrong-secret-not-the-real-one"
        bot = self.start_bot(**self.swift_env(AWS_SECRET_ACCESS_KEY=wrong))
        self.assertIn(STORE_FAILED, self.ask(ALICE, "Hello?").text, "expected the storage-failure message")
        self.assertLogged(r"store: s3: .*HTTP 403 SignatureDoesNotMatch", levels=("error",),
                          what="naming Swift's answer")
        self.assertBotRunning(bot)
        self.assertNotIn(wrong, self.log(), "expected the secret never in the log")
        statuses = {r["status"] for r in self.requests()}
        self.assertEqual(statuses, {403}, f"expected Swift to refuse every request; it answered:\n"
                                          + self.swift.describe())
        self.assertIsNone(self.history(ALICE.id), "expected nothing written")


if __name__ == "__main__":
    main()
