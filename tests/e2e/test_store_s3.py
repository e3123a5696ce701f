"""STORE=s3://BUCKET/PREFIX against an S3 server that checks SigV4 signatures
(@20minutes/s3rver 4.0.4 from npm, started by s3_server.py; skipped with the
reason when node/npm are missing).

What these tests prove and what they cannot:
  - every request tgllm sends is SigV4-signed in a way s3rver's own verifier
    accepts (it recomputes the signature over method, path, sorted query,
    signed headers and x-amz-content-sha256), and a wrong secret is refused;
  - the history object is <prefix><chat_id>.json in the original bot's layout
    (a JSON array of {"role","content"}), readable by Python's json module and
    by boto3, an S3 client that is not ours; the original bot's objects are
    continued;
  - the journal, settings, /new and replay of pending updates work over S3;
  - two bot processes appending to one chat lose no turns. s3rver ignores
    If-Match / If-None-Match, so the launcher in s3_server.py enforces them
    with S3's semantics: the test proves tgllm sends the conditions and
    re-reads and retries on 412; that real S3 / Yandex Object Storage enforce
    them the same way is their documented behaviour, not something shown here;
  - a server that answers 501 to conditional writes (as OpenStack Swift does)
    gets plain writes and one warning, remembered in the bucket so a later
    `handle` process neither warns nor tries a conditional write again;
  - a writer recognises its own write by the write id in the object's
    metadata: two identical exchanges stored at once both stay;
  - a history object that cannot be read (corrupt, not an array, empty, over
    8 MB) is kept aside next to it, the user told, and the chat starts over.
"""

import datetime
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from fake_telegram import Chat, FakeTelegram, User
from fake_openai import Reply
from harness import ALICE, BOB, IVAN, MALLORY, BotProcess, BotTestCase, main, run_bin
from s3_server import S3Server

HERE = Path(__file__).resolve().parent
BUCKET = "bucket"
PREFIX = "prefix/"
REGION = "us-east-1"
STORE_FAILED = "Something went wrong with the conversation storage"
HISTORY_KEPT_ASIDE = "could not read our saved conversation"
HISTORY_KEPT_ASIDE_RU = "Не удалось прочитать сохранённый разговор"


class S3TestCase(BotTestCase):
    """A BotTestCase with an S3 emulator; s3_env() points the bot at it."""

    s3_options: dict = {}

    def setUp(self):
        super().setUp()
        self.s3 = S3Server(**self.s3_options).start()
        self.addCleanup(self.s3.stop)

    def tearDown(self):
        if self._failed() or os.environ.get("TGLLM_E2E_VERBOSE"):
            sys.stderr.write(f"\n===== {self.id()}: S3 requests (last 60) =====\n{self.s3.describe()}\n")
        super().tearDown()
        log = self.log()
        if not self._failed():
            self.assertNotIn(self.s3.secret_key, log, "expected the S3 secret never to appear in the bot's stderr")

    def s3_env(self, **env) -> dict:
        base = {
            "STORE": f"s3://{BUCKET}/{PREFIX}",
            "S3_ENDPOINT": self.s3.endpoint,
            "S3_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
        }
        base.update(env)
        return base

    def handle(self, update: dict, **env) -> int:
        """Runs `tgllm handle` once with the update; its statusCode (stderr in self.last_handle_log)."""
        return self.handle_update(update, self.s3_env(**env))

    def serverless_identity(self):
        """As in test_handle.py: the cached identity is checked against the token's bot id."""
        self.tg.bot = User(id=int(self.tg.token.split(":")[0]), first_name="Test Bot",
                           username=self.tg.bot.username, is_bot=True)

    def history(self, chat_id: int):
        """The chat's history object as stored (parsed), or None when there is none."""
        raw = self.s3.read_object(BUCKET, f"{PREFIX}{chat_id}.json")
        return None if raw is None else json.loads(raw)

    def wait_history(self, chat_id: int, turns: int, timeout: float = 10.0) -> list:
        """The history object once it holds `turns` entries (it is written after the reply is sent)."""
        def stored():
            h = self.history(chat_id) or []
            return len(h) == turns and h
        return self.tg.wait_for(stored, timeout, lambda: f"{PREFIX}{chat_id}.json to hold {turns} turns; it holds "
                                                         f"{self.history(chat_id)!r}")

    def journal_record(self, update_id: int):
        raw = self.s3.read_object(BUCKET, f"{PREFIX}tgllm/updates/{update_id}.json")
        return None if raw is None else json.loads(raw)

    def journal_state(self, update_id: int):
        """The update's state in the S3 journal (wait_handled uses it)."""
        record = self.journal_record(update_id)
        return None if record is None else record.get("state")

    def requests_to(self, key: str, method: str = None) -> list:
        return [r for r in self.s3.requests()
                if r["url"].split("?")[0] == f"/{BUCKET}/{key}" and (method is None or r["method"] == method)]

    def wait_requests_to(self, key: str, method: str, n: int, timeout: float = 10.0) -> list:
        """The requests to key once the log holds n of them: an object lands
        before its request's answer is logged."""
        return self.tg.wait_for(lambda: len(r := self.requests_to(key, method)) >= n and r, timeout,
                                lambda: f"{n} {method} request(s) to {key} in the emulator's log; it has:\n"
                                        f"{self.s3.describe()}")


class S3HistoryTest(S3TestCase):

    def test_history_lands_in_the_original_layout_and_survives_a_restart(self):
        bot = self.start_bot(**self.s3_env())
        self.ask(IVAN, "Запомни число 42")
        self.assertEqual(self.wait_history(IVAN.id, 2), [
            {"role": "user", "content": "Запомни число 42"},
            {"role": "assistant", "content": "Echo: Запомни число 42"},
        ], f"expected {PREFIX}{IVAN.id}.json to hold the exchange as a JSON array of role/content")
        raw = self.s3.read_object(BUCKET, f"{PREFIX}{IVAN.id}.json")
        self.assertIn("Запомни".encode(), raw, "expected compact UTF-8 JSON (not \\u escapes)")

        self.restart_bot(bot, **self.s3_env())
        self.ask(IVAN, "Какое число я назвал?")
        self.assertEqual(self.llm.requests[-1].messages, [
            {"role": "user", "content": "Запомни число 42"},
            {"role": "assistant", "content": "Echo: Запомни число 42"},
            {"role": "user", "content": "Какое число я назвал?"},
        ], "expected the turns from before the restart in the request")
        self.wait_history(IVAN.id, 4)

        # How it was written: signed with our key, the payload hash sent, and
        # conditional: a new object with If-None-Match: *, then If-Match on its ETag.
        for r in self.s3.requests():
            self.assertTrue(r["credential"] and r["credential"].startswith(self.s3.access_key + "/")
                            and f"/{REGION}/s3/aws4_request" in r["credential"],
                            f"expected every request signed with the key and region; got {r}")
            self.assertRegex(r["contentSha256"] or "", "^[0-9a-f]{64}$",
                             f"expected x-amz-content-sha256 on every request; got {r}")
            self.assertIn("x-amz-content-sha256", r["signed"], f"expected the payload hash signed; got {r}")
        puts = self.wait_requests_to(f"{PREFIX}{IVAN.id}.json", "PUT", 2)
        self.assertEqual([(p["ifNoneMatch"], bool(p["ifMatch"])) for p in puts], [("*", False), (None, True)],
                         "expected the first write with If-None-Match: * and the second with If-Match")

    def test_history_of_the_original_bot_is_continued(self):
        # What the Python bot wrote: json.dumps(history), ASCII escapes and ", " separators.
        old = [{"role": "user", "content": "Привет, меня зовут Алиса"},
               {"role": "assistant", "content": "Здравствуйте, Алиса!"}]
        self.s3.put_object(BUCKET, f"{PREFIX}{ALICE.id}.json", json.dumps(old).encode())
        self.start_bot(**self.s3_env())
        self.ask(ALICE, "What is my name?")
        self.assertEqual(self.llm.requests[-1].messages, old + [{"role": "user", "content": "What is my name?"}],
                         "expected the original bot's history in the request")
        self.assertEqual(self.wait_history(ALICE.id, 4), old + [
            {"role": "user", "content": "What is my name?"},
            {"role": "assistant", "content": "Echo: What is my name?"},
        ], "expected the exchange appended to the original bot's history, which stays as it was")
        # Appended to its text: the original's bytes stay as they were (a tree dumped again would
        # rewrite them, compact and unescaped), and the new turns follow.
        raw = self.s3.read_object(BUCKET, f"{PREFIX}{ALICE.id}.json")
        self.assertTrue(raw.startswith(json.dumps(old).encode()[:-1] + b',{"role":"user"'), raw[:200])

    def test_new_conversation_deletes_the_history_object(self):
        self.start_bot(**self.s3_env())
        self.ask(ALICE, "Forget this later")
        self.wait_history(ALICE.id, 2)
        self.tg.send_private(ALICE, "/new")
        self.wait_text(ALICE.id, "new conversation")
        self.assertIsNone(self.history(ALICE.id), "expected /new to delete the history object")
        self.ask(ALICE, "Fresh start")
        self.assertEqual(self.llm.requests[-1].messages, [{"role": "user", "content": "Fresh start"}])
        self.wait_history(ALICE.id, 2)

    def test_refusal_time_is_a_setting_object(self):
        self.start_bot(**self.s3_env())
        self.ask(MALLORY, "Let me in")
        value = self.s3.read_object(BUCKET, f"{PREFIX}tgllm/settings/{MALLORY.id}/refused_at")
        self.assertIsNotNone(value, "expected the refusal time stored as a setting object")
        self.assertAlmostEqual(int(value), time.time(), delta=60)
        msg = self.tg.send_private(MALLORY, "Again")
        self.wait_handled(msg)
        self.assertEqual(self.tg.replies_to(msg), [], "expected no second refusal within the hour")


class S3ConfigTest(BotTestCase):
    """Configuration of the S3 store: errors exit 2 with one line naming the variable."""

    def config_error(self, **env) -> str:
        result = run_bin(["poll"], self.bot_env(**env), timeout=15)
        err = result.stderr.decode("utf-8", "replace").strip()
        self.assertEqual(result.returncode, 2, f"expected exit status 2; got {result.returncode}: {err!r}")
        self.assertEqual(len(err.splitlines()), 1, f"expected one line on stderr; got {err!r}")
        self.assertEqual(self.tg.calls, [], "expected no Telegram call with a bad configuration")
        return err

    def test_s3_store_without_a_key_pair_names_the_variables(self):
        err = self.config_error(STORE="s3://bucket/prefix")
        self.assertIn("YANDEX_KEY_ID", err)
        self.assertIn("AWS_ACCESS_KEY_ID", err)

    def test_half_a_key_pair_names_the_missing_half(self):
        self.assertIn("YANDEX_KEY_SECRET", self.config_error(STORE="s3://bucket", YANDEX_KEY_ID="id"))
        self.assertIn("AWS_ACCESS_KEY_ID", self.config_error(STORE="s3://bucket", AWS_SECRET_ACCESS_KEY="secret"))

    def test_bucket_alone_selects_the_s3_store(self):
        err = self.config_error(STORE=None, YANDEX_BUCKET="bucket")
        self.assertIn("YANDEX_BUCKET", err, "expected YANDEX_BUCKET alone to select the S3 store, which needs keys")

    def test_bad_store_values_name_both_forms(self):
        for value in ("bogus:x", "s3://", "s3://bad bucket/x", "sqlite:"):
            with self.subTest(STORE=value):
                self.assertIn("STORE must be sqlite:PATH or s3://BUCKET[/PREFIX]", self.config_error(STORE=value))

    def test_bad_endpoint_and_region_are_named(self):
        keys = {"STORE": "s3://bucket", "YANDEX_KEY_ID": "id", "YANDEX_KEY_SECRET": "secret-value"}
        self.assertIn("S3_ENDPOINT", self.config_error(S3_ENDPOINT="ftp://x", **keys))
        self.assertIn("S3_REGION", self.config_error(S3_REGION="us:east", **keys))


class S3OriginalBotVariablesTest(S3TestCase):

    def test_the_original_bots_variables_alone_keep_histories_at_the_bucket_root(self):
        # No STORE: YANDEX_BUCKET and the YANDEX_KEY_* pair, as the Python bot was deployed.
        self.s3.put_object(BUCKET, f"{ALICE.id}.json", json.dumps(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]).encode())
        self.start_bot(STORE=None, YANDEX_BUCKET=BUCKET, YANDEX_KEY_ID=self.s3.access_key,
                       YANDEX_KEY_SECRET=self.s3.secret_key, S3_ENDPOINT=self.s3.endpoint, S3_REGION=REGION)
        self.ask(ALICE, "Again")
        self.assertEqual(self.llm.requests[-1].contents(), ["Hi", "Hello!", "Again"])

        def stored():
            h = json.loads(self.s3.read_object(BUCKET, f"{ALICE.id}.json"))
            return len(h) == 4 and h
        history = self.tg.wait_for(stored, 10, lambda: f"{ALICE.id}.json to hold 4 turns; it holds "
                                                       f"{self.s3.read_object(BUCKET, f'{ALICE.id}.json')!r}")
        self.assertEqual(history[-1], {"role": "assistant", "content": "Echo: Again"})


class S3JournalTest(S3TestCase):
    # s3rver as it is: conditions ignored, so a known update must be found by reading first.
    s3_options = {"conditions": "ignore"}

    def test_update_resent_by_telegram_is_not_answered_again(self):
        self.start_bot(**self.s3_env())
        msg = self.tg.message(self.tg_chat(ALICE), ALICE, "Only once please")
        update = self.tg.update("message", msg)
        self.tg.push(update)
        self.wait_reply(msg)
        self.tg.inject_updates([update])
        self.ask(ALICE, "Next message")   # one chat is handled in order
        self.assertTrue(any(c.scripted for c in self.tg.calls_of("getUpdates")),
                        "control: expected the bot to have been handed the re-sent update")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Only once please"],
                         "expected exactly one answer to the re-sent update")
        self.assertEqual(self.journal_record(update["update_id"]), {"state": "done"},
                         "expected the journal record marked done")

    def test_pending_update_is_replayed_at_start(self):
        msg = self.tg.message(self.tg_chat(ALICE), ALICE, "Left unanswered by a crash")
        update = self.tg.update("message", msg)
        record = {"state": "pending", "chat_id": ALICE.id, "body": update}
        self.s3.put_object(BUCKET, f"{PREFIX}tgllm/updates/{update['update_id']}.json", json.dumps(record).encode())
        done = {"state": "done"}
        self.s3.put_object(BUCKET, f"{PREFIX}tgllm/updates/{update['update_id'] - 1}.json", json.dumps(done).encode())
        self.start_bot(**self.s3_env())
        reply = self.wait_reply(msg)
        self.assertEqual(reply.text, "Echo: Left unanswered by a crash")
        self.tg.wait_for(lambda: self.journal_record(update["update_id"]) == {"state": "done"}, 5,
                         "the replayed update to be marked done")
        self.assertEqual(len(self.llm.requests_with("Left unanswered")), 1)

    def test_a_long_journal_is_paged_replayed_in_order_and_pruned(self):
        # Over 1000 records: ListObjectsV2 answers in pages (continuation tokens).
        # Written as s3rver's files directly, which is what a PUT leaves behind.
        root = self.s3.data_dir / BUCKET / PREFIX.rstrip("/") / "tgllm" / "updates"
        root.mkdir(parents=True, exist_ok=True)
        first = 400000
        old = time.time() - 8 * 86400
        for i in range(1100):
            path = root / f"{first + i}.json._S3rver_object"
            path.write_text('{"state":"done"}')
            if i < 50:
                os.utime(path, (old, old))   # done over 7 days ago: to be pruned
        msgs = []
        for uid in (first + 1100, first + 700):   # pending, journaled out of order
            msg = self.tg.message(self.tg_chat(ALICE), ALICE, f"pending {uid}")
            update = {"update_id": uid, "message": msg}
            (root / f"{uid}.json._S3rver_object").write_text(
                json.dumps({"state": "pending", "chat_id": ALICE.id, "body": update}))
            msgs.append(msg)
        self.start_bot(**self.s3_env())
        for msg in msgs:
            self.wait_reply(msg, timeout=30)
        asked = [r.last_content for r in self.llm.requests]
        self.assertEqual(asked, [f"pending {first + 700}", f"pending {first + 1100}"],
                         "expected both pending updates replayed, oldest update id first")
        lists = [r for r in self.s3.requests() if "list-type=2" in r["url"]]
        self.assertGreaterEqual(len(lists), 2, "expected the listing to take more than one page")
        self.assertTrue(any("continuation-token=" in r["url"] for r in lists))
        self.tg.wait_for(lambda: not any((root / f"{first + i}.json._S3rver_object").exists() for i in range(50)),
                         15, "the done records older than 7 days to be deleted")
        self.assertTrue((root / f"{first + 50}.json._S3rver_object").exists(), "expected recent records kept")

    def tg_chat(self, user):
        return Chat.private(user)


class S3FailureTest(S3TestCase):

    def test_wrong_secret_is_refused_and_the_user_told(self):
        wrong = "wrong-secret-not-the-real-one"
        bot = self.start_bot(**self.s3_env(AWS_SECRET_ACCESS_KEY=wrong))
        reply = self.ask(ALICE, "Hello?")
        self.assertIn(STORE_FAILED, reply.text, "expected the storage-failure message")
        self.assertLogged(r"store: s3: .*HTTP 403 SignatureDoesNotMatch.*check the key pair", levels=("error",),
                          what="naming the S3 error and what to check")
        self.assertBotRunning(bot)
        self.assertNotIn(wrong, self.log(), "expected the secret never in the log")
        statuses = [r["status"] for r in self.s3.requests()]  # one snapshot: the bot may still be asking
        self.assertEqual(statuses, [403] * len(statuses),
                         "expected the emulator to refuse every request signed with the wrong secret")
        self.assertEqual(self.s3.keys(BUCKET), [], "expected nothing written")

    def test_server_without_conditional_writes_gets_plain_writes_and_one_warning(self):
        self.s3.stop()
        self.s3 = S3Server(conditions="501").start()
        self.start_bot(**self.s3_env())
        self.ask(ALICE, "One")
        self.ask(ALICE, "Two")
        self.assertEqual([t["content"] for t in self.wait_history(ALICE.id, 4)],
                         ["One", "Echo: One", "Two", "Echo: Two"])
        warnings = [ln for ln in self.log_lines("warn") if "does not support conditional writes" in ln]
        self.assertEqual(len(warnings), 1, f"expected one warning about conditional writes; got {warnings}")
        refused = [r for r in self.s3.requests() if r["status"] == 501]
        self.assertEqual(len(refused), 1, f"expected one conditional write refused, then none tried; got {refused}")
        history_puts = self.wait_requests_to(f"{PREFIX}{ALICE.id}.json", "PUT", 2)
        self.assertEqual([(p["status"], p["ifMatch"], p["ifNoneMatch"]) for p in history_puts],
                         [(200, None, None)] * 2, "expected plain history writes")

    def test_unreachable_server_is_a_storage_failure(self):
        self.s3.stop()
        bot = self.start_bot(**self.s3_env(S3_ENDPOINT="http://127.0.0.1:9"))
        reply = self.ask(ALICE, "Anyone there?", timeout=60)
        self.assertIn(STORE_FAILED, reply.text)
        # The update is not journaled, so not taken: the user hears why, and Telegram delivers it again.
        self.assertLogged(r"store: s3: journaling an update s3://bucket/prefix/tgllm/updates/\d+\.json: no answer from",
                          levels=("error",))
        self.assertBotRunning(bot)


class S3SwiftLikeTest(S3TestCase):
    """OpenStack Swift's s3api: keys named account:user, and 501 for conditional writes."""
    s3_options = {"access_key": "test:tester", "conditions": "501"}

    def test_a_key_with_a_colon_signs_and_plain_writes_follow_the_501(self):
        self.start_bot(**self.s3_env())
        self.ask(ALICE, "One")
        self.ask(ALICE, "Two")
        self.assertEqual([t["content"] for t in self.wait_history(ALICE.id, 4)],
                         ["One", "Echo: One", "Two", "Echo: Two"])
        self.assertTrue(all(r["credential"].startswith("test:tester/") for r in self.s3.requests()),
                        "expected every request signed with the account:user key")


class S3BrokenHistoryTest(S3TestCase):
    """A history object tgllm cannot read is kept aside under a key next to
    it, the user is told, and the chat starts over at once."""

    def start_over_from(self, body: bytes, cause: str, user=ALICE, notice: str = HISTORY_KEPT_ASIDE):
        key = f"{PREFIX}{user.id}.json"
        self.s3.put_object(BUCKET, key, body)
        bot = self.start_bot(**self.s3_env())
        msg = self.tg.send_private(user, "Hello again")
        self.assertIn(notice, self.wait_reply(msg, 15).text, "expected the user told first that their "
                                                             "conversation was kept aside")
        replies = self.tg.wait_for(lambda: len(r := self.tg.replies_to(msg)) >= 2 and r, 15,
                                   lambda: f"the answer to {msg['text']!r} after the notice; the chat has "
                                           f"{self.tg.texts_in(user.id)!r}")
        self.assertEqual(replies[1].text, "Echo: Hello again", "expected the message answered in a new chat")
        self.assertEqual(self.llm.requests[-1].messages, [{"role": "user", "content": "Hello again"}],
                         "expected no turn of the broken history in the request")
        self.assertLogged(rf"store: s3: chat={user.id}: the history s3://{BUCKET}/{key} {cause}; kept it as "
                          rf"s3://{BUCKET}/{key}\.broken-\d+ and started the chat over", levels=("error",),
                          what="naming the real cause and where the object went")
        aside = [k for k in self.s3.keys(BUCKET) if k.startswith(key + ".broken-")]
        self.assertEqual(len(aside), 1, f"expected the broken object kept aside once; keys: {self.s3.keys(BUCKET)}")
        self.assertEqual(self.s3.read_object(BUCKET, aside[0]), body, "expected the object kept aside as it was")
        self.wait_history(user.id, 2)
        self.assertEqual(self.ask(user, "And now?").text, "Echo: And now?", "expected the chat to work again")
        self.assertEqual(self.llm.requests[-1].contents(), ["Hello again", "Echo: Hello again", "And now?"])
        self.wait_history(user.id, 4)
        self.assertEqual(len(self.tg.replies_to(msg)), 2, "expected no other message")
        self.assertBotRunning(bot)

    def test_corrupt_history_is_kept_aside(self):
        self.start_over_from(b'[{"role": "user", "content": "cut off', r"is not valid JSON \(line 1: .+\)")

    def test_history_that_is_not_an_array_is_kept_aside(self):
        self.start_over_from(b'{"role": "user", "content": "an object"}', r"is not a JSON array but an object")

    def test_empty_history_object_is_kept_aside(self):
        self.start_over_from(b"", r"is empty \(0 bytes\)")

    def test_history_over_8_mb_is_kept_aside(self):
        turn = {"role": "user", "content": "x" * 100000}
        body = json.dumps([turn] * 90).encode()   # ~9 MB of valid JSON
        self.start_over_from(body, rf"is {len(body)} bytes, over the 8388608 bytes a history may have")

    def test_russian_speaker_is_told_in_russian(self):
        self.start_over_from(b"not json", r"is not valid JSON \(line 1: .+\)", user=IVAN, notice=HISTORY_KEPT_ASIDE_RU)


class S3ThrottlingTest(S3TestCase):
    s3_options = {"slow_down": 2, "slow_down_keys": r"^prefix/-?\d+\.json$"}

    def test_slow_down_is_waited_out(self):
        self.start_bot(**self.s3_env())
        self.ask(ALICE, "Busy day")
        self.assertEqual([t["content"] for t in self.wait_history(ALICE.id, 2)], ["Busy day", "Echo: Busy day"])
        puts = self.wait_requests_to(f"{PREFIX}{ALICE.id}.json", "PUT", 3)
        self.assertEqual([p["status"] for p in puts], [503, 503, 200], "expected two SlowDowns, then the write")
        self.assertLogged(r"writing history s3://bucket/prefix/111001\.json: HTTP 503 SlowDown; retrying in \d+ ms",
                          levels=("warn",))


class S3ServeAcknowledgementTest(S3TestCase):
    """`serve` over a slow S3 journal: Telegram hears 200 only once the update is
    written, so a crash right after it loses nothing, and SIGTERM waits for an
    update still being written instead of dropping its POST."""

    s3_options = {"delay_ms": 1500, "delay_keys": r"tgllm/updates/\d+\.json$"}

    def start_serve(self, port: int) -> BotProcess:
        bot = BotProcess(self.bot_env(**self.s3_env(LISTEN=f"127.0.0.1:{port}")), self.log_path, args=("serve",))
        self.bots.append(bot)
        self.addCleanup(bot.kill)
        seen = self.log().count("serve: listening on")
        self.tg.wait_for(lambda: self.log().count("serve: listening on") > seen or not bot.running(), 15,
                         "serve's listening line")
        self.assertTrue(bot.running(), "expected serve to start")
        return bot

    def post_in_background(self, port: int, update: dict) -> dict:
        """POSTs update from a thread; the dict gets "status" (or "error") when the answer comes."""
        outcome = {}

        def post():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            try:
                c.request("POST", "/", json.dumps(update), {"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                outcome["answered_writes"] = [q for q in self.s3.requests() if q["method"] == "PUT"
                                              and f"tgllm/updates/{update['update_id']}.json" in q["url"]]
                outcome["status"] = r.status
            except (OSError, http.client.HTTPException) as e:
                outcome["error"] = repr(e)
            finally:
                c.close()
        t = threading.Thread(target=post, daemon=True)
        t.start()
        self.addCleanup(t.join, 25)
        return outcome

    def wait_claim_arrived(self, update: dict):
        key = f"tgllm/updates/{update['update_id']}.json"
        self.tg.wait_for(lambda: any(a["method"] == "PUT" and key in a["url"] for a in self.s3.arrivals()), 10,
                         "the journal write to arrive at S3")

    def free_port(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def test_the_200_comes_after_the_journal_write_and_a_kill_right_after_it_loses_nothing(self):
        port = self.free_port()
        bot = self.start_serve(port)
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Kept through a crash")
        update = self.tg.update("message", msg)
        outcome = self.post_in_background(port, update)
        self.wait_claim_arrived(update)
        self.assertNotIn("status", outcome, "expected no answer to the POST while its journal write is pending")
        self.tg.wait_for(lambda: outcome, 15, "the POST's answer")
        bot.proc.kill()   # right after the 200: nothing may depend on what happens next
        self.assertEqual(outcome.get("status"), 200, outcome)
        self.assertTrue(outcome["answered_writes"], "expected the journal write answered by S3 before the 200")
        bot.proc.wait(5)
        self.start_serve(port)
        self.wait_reply(msg)
        self.tg.wait_for(lambda: self.journal_state(update["update_id"]) == "done", 15,
                         "the update to be marked done")

    def test_sigterm_waits_for_an_update_still_being_journaled(self):
        port = self.free_port()
        bot = self.start_serve(port)
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Caught at shutdown")
        update = self.tg.update("message", msg)
        outcome = self.post_in_background(port, update)
        self.wait_claim_arrived(update)
        bot.signal(signal.SIGTERM)
        self.tg.wait_for(lambda: outcome, 15, "the POST's answer")
        self.assertEqual(outcome.get("status"), 200, f"expected the POST answered 200 after SIGTERM, got {outcome}")
        self.assertEqual(bot.wait(20), 0, "expected serve to exit 0")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Caught at shutdown"],
                         "expected the update answered before serve stopped")


class S3LostAnswerTest(S3TestCase):
    # The claim and the history write are done, but their answers are lost.
    s3_options = {"drop_after_put": 2, "drop_keys": r"^prefix/(tgllm/updates/)?-?\d+\.json$"}

    def test_a_write_whose_answer_was_lost_is_not_done_twice(self):
        self.start_bot(**self.s3_env())
        msg = self.tg.send_private(ALICE, "Did it land?")
        self.wait_reply(msg)
        self.assertEqual([t["content"] for t in self.wait_history(ALICE.id, 2)],
                         ["Did it land?", "Echo: Did it land?"], "expected the exchange stored once")
        self.wait_handled(msg)
        self.assertEqual(self.journal_record(self.update_id(msg)), {"state": "done"})
        self.assertEqual(len(self.tg.replies_to(msg)), 1, "expected one answer: the update was claimed by us")
        self.assertEqual(len(self.history(ALICE.id)), 2, "expected no turn written twice")
        statuses = [r["status"] for r in self.requests_to(f"{PREFIX}{ALICE.id}.json", "PUT")]
        self.assertEqual(statuses[-1], 412, f"expected the retried write refused as already done; got {statuses}")
        self.assertLogged(r"the history write whose answer was lost did land", levels=("info",))


class S3ServerlessTest(S3TestCase):
    """`tgllm handle` (one update per process, as on Yandex Cloud Functions) with the S3 store."""

    # History reads wait up to 6 s for a partner: long enough to pass a 3 s deadline.
    s3_options = {"pair_gets": r"^prefix/-?\d+\.json$", "pair_wait_ms": 6000}

    def test_an_invocation_out_of_time_releases_the_update_for_the_next(self):
        self.serverless_identity()
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Slow storage today")
        update = self.tg.update("message", msg)
        self.assertEqual(self.handle(update, HANDLE_DEADLINE=3), 503, "expected the out-of-time invocation to "
                                                                      "ask Telegram to deliver again")
        self.assertIsNone(self.journal_record(update["update_id"]),
                          "expected the unfinished update released from the journal")
        self.assertLogged(r"update=\d+: unfinished; left for Telegram", levels=("warn",))
        self.assertEqual(self.handle(update, HANDLE_DEADLINE=30), 200)
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Slow storage today"])
        self.assertEqual(self.journal_record(update["update_id"]), {"state": "done"})
        self.assertEqual(len(self.wait_history(ALICE.id, 2)), 2)


class S3ColdHandleTest(S3TestCase):
    """What one cold `handle` asks of S3 once the bucket is known (the bot's identity
    cached, the server known to enforce conditional writes): only requests that carry
    information, and the guarantees kept on the shorter paths."""

    def warm_up(self):
        """A first invocation: caches the identity and finds out the server's conditional writes."""
        self.serverless_identity()
        update = self.tg.update("message", self.tg.message(Chat.private(BOB), BOB, "Warm-up"))
        self.assertEqual(self.handle(update), 200)
        self.assertEqual(self.s3.read_object(BUCKET, f"{PREFIX}tgllm/settings/0/s3_conditional_writes"), b"enforced",
                         "expected the first invocation to find out, and keep, that the server enforces conditions")

    def requests_since(self, seen: int) -> list:
        keys = {f"{PREFIX}{ALICE.id}.json": "history"}
        out = []
        for r in self.s3.requests()[seen:]:
            key = r["url"].split("?")[0][len(f"/{BUCKET}/"):]
            name = keys.get(key) or key[len(PREFIX):]
            name = "journal" if name.startswith("tgllm/updates/") else name
            cond = "If-None-Match" if r["ifNoneMatch"] else "If-Match" if r["ifMatch"] else ""
            out.append((r["method"], name, cond, r["status"]))
        return out

    def test_a_cold_handle_makes_only_the_requests_that_carry_information(self):
        self.warm_up()
        seen = len(self.s3.requests())
        calls = len(self.tg.calls)
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Count my requests")
        self.assertEqual(self.handle(self.tg.update("message", msg)), 200)
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Count my requests"])
        got = self.requests_since(seen)
        usage = f"usage-{datetime.datetime.now(datetime.timezone.utc):%Y-%m}"
        # Before: the journal record read, then written; the history read twice (the
        # second time only for its ETag); 8 requests (9 with the chat's settings), one after another.
        self.assertEqual(sorted(got), sorted([
            ("GET", "tgllm/settings/0/s3_conditional_writes", "", 200),
            ("GET", "tgllm/settings/0/bot_identity", "", 200),
            ("PUT", "journal", "If-None-Match", 200),   # the claim: one conditional PUT
            ("GET", "history", "", 404),                # read ahead, beside the claim; the append writes on it
            ("GET", f"tgllm/settings/{ALICE.id}/chat", "", 404),   # the chat's model and prompt, beside it too
            ("GET", f"tgllm/settings/{ALICE.id}/{usage}", "", 404),  # the sender's usage, beside it too
            ("PUT", "history", "If-None-Match", 200),
            ("PUT", f"tgllm/settings/{ALICE.id}/{usage}", "If-None-Match", 200),  # counted, beside the history
            ("PUT", "journal", "", 200),                # marked done
        ]), "expected 9 S3 requests for a cold handle; got:\n" + "\n".join(map(str, got)))
        self.assertEqual(got[-1][:2], ("PUT", "journal"), "expected the update marked done last, once the "
                                                          "exchange is stored")
        methods = [c.method for c in self.tg.calls[calls:]]
        self.assertNotIn("getMe", methods, "expected the identity from the store")
        self.assertEqual(methods.count("sendMessage"), 1, f"expected one answer; Telegram got {methods}")
        self.assertEqual(len(self.llm.requests_with("Count my requests")), 1)

    def test_a_redelivered_update_is_refused_by_the_conditional_claim_and_not_answered_again(self):
        self.warm_up()
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Only once please")
        update = self.tg.update("message", msg)
        self.assertEqual(self.handle(update), 200)
        seen = len(self.s3.requests())
        self.assertEqual(self.handle(update), 200, "expected a redelivered update acknowledged")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Only once please"],
                         "expected exactly one answer to the redelivered update")
        claims = [r for r in self.requests_since(seen) if r[:2] == ("PUT", "journal")]
        self.assertEqual(claims, [("PUT", "journal", "If-None-Match", 412)],
                         "expected the repeat told by the claim's 412, and the record left as it was")
        self.assertEqual(self.journal_record(update["update_id"]), {"state": "done"})

    def test_the_history_kept_from_the_load_is_not_written_over_a_newer_one(self):
        # Between this invocation's load and its write, another writer changes the history
        # (the model takes 1 s here): the write on the ETag of the load is refused, and the
        # append reads again and keeps the other's turns.
        self.warm_up()
        self.s3.put_object(BUCKET, f"{PREFIX}{ALICE.id}.json", json.dumps(
            [{"role": "user", "content": "Old"}, {"role": "assistant", "content": "Older answer"}]).encode())
        self.llm.default = Reply(delay=1.0)
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Mine")
        result = {}
        t = threading.Thread(target=lambda: result.update(code=self.handle(self.tg.update("message", msg))))
        t.start()
        self.tg.wait_for(lambda: self.llm.requests_with("Mine"), 10, "the invocation to ask the model")
        other = [{"role": "user", "content": "Old"}, {"role": "assistant", "content": "Older answer"},
                 {"role": "user", "content": "Theirs"}, {"role": "assistant", "content": "Their answer"}]
        self.s3.put_object(BUCKET, f"{PREFIX}{ALICE.id}.json", json.dumps(other).encode())
        t.join(30)
        self.assertEqual(result.get("code"), 200)
        self.assertEqual([t["content"] for t in self.history(ALICE.id)],
                         ["Old", "Older answer", "Theirs", "Their answer", "Mine", "Echo: Mine"],
                         "expected the other writer's turns kept and ours after them")
        puts = [p["status"] for p in self.requests_to(f"{PREFIX}{ALICE.id}.json", "PUT") if p["ifMatch"]]
        self.assertEqual(puts, [412, 200], "expected the bot's write on the loaded ETag refused, then done on a "
                                           "re-read (the test's own writes carry no condition)")


class S3ColdHandleOverlapTest(S3ColdHandleTest):
    """The claim held 800 ms by the server: what a cold handle sends meanwhile."""
    s3_options = {"delay_ms": 800, "delay_keys": r"tgllm/updates/\d+\.json$"}

    def test_the_history_is_read_while_the_update_is_being_journaled(self):
        self.warm_up()
        seen_arrivals, seen = len(self.s3.arrivals()), len(self.s3.requests())
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Read ahead")
        self.assertEqual(self.handle(self.tg.update("message", msg)), 200)
        history, journal = f"/{BUCKET}/{PREFIX}{ALICE.id}.json", f"/{BUCKET}/{PREFIX}tgllm/updates/"
        settings = f"/{BUCKET}/{PREFIX}tgllm/settings/{ALICE.id}/chat"
        usage = f"/{BUCKET}/{PREFIX}tgllm/settings/{ALICE.id}/usage-{datetime.datetime.now(datetime.timezone.utc):%Y-%m}"
        claim = [r for r in self.s3.requests()[seen:] if r["method"] == "PUT" and r["url"].startswith(journal)]
        for url in (history, settings, usage):
            read = [a for a in self.s3.arrivals()[seen_arrivals:] if a["method"] == "GET" and a["url"] == url]
            self.assertTrue(read and claim, f"expected a read of {url} and a claim; got\n{self.s3.describe()}")
            self.assertLess(read[0]["at"], claim[0]["at"], f"expected {url} read before the claim was answered "
                                                          "(beside it), not after")

    # The parent's tests, run here too, would only repeat them slower.
    test_a_cold_handle_makes_only_the_requests_that_carry_information = None
    test_a_redelivered_update_is_refused_by_the_conditional_claim_and_not_answered_again = None
    test_the_history_kept_from_the_load_is_not_written_over_a_newer_one = None


class S3ConcurrentHandleTest(S3TestCase):
    """Two cold `handle` processes of one chat at once, on the short paths."""
    s3_options = {"pair_gets": rf"^prefix/{ALICE.id}\.json$", "pair_wait_ms": 3000}

    def test_two_invocations_of_one_chat_at_once_lose_no_turn(self):
        self.serverless_identity()
        warm = self.tg.update("message", self.tg.message(Chat.private(BOB), BOB, "Warm-up"))
        self.assertEqual(self.handle(warm), 200)
        msgs = [self.tg.message(Chat.private(ALICE), ALICE, text) for text in ("First", "Second")]
        results = {}
        threads = [threading.Thread(target=lambda m=m: results.update(
            {m["text"]: self.handle(self.tg.update("message", m))})) for m in msgs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(results, {"First": 200, "Second": 200})
        history = self.history(ALICE.id)
        pairs = {(history[k]["content"], history[k + 1]["content"]) for k in range(0, len(history), 2)}
        self.assertEqual(pairs, {("First", "Echo: First"), ("Second", "Echo: Second")},
                         f"expected both exchanges stored; got {history}")
        statuses = [p["status"] for p in self.requests_to(f"{PREFIX}{ALICE.id}.json", "PUT")]
        self.assertIn(412, statuses, f"expected the two writers to collide (they read the same version); "
                                     f"without a collision this test proves nothing: {statuses}")


class S3ClaimOrderTest(S3TestCase):
    """`poll` with S3: claims end when their requests end, in any order; a chat's updates are still
    answered in the order they came. The server holds the first update's claim (its PUT) 800 ms."""
    s3_options = {"delay_ms": 800, "delay_keys": r"tgllm/updates/700000\.json$"}

    def test_a_chats_updates_are_answered_in_order_whatever_their_claims_do(self):
        self.start_bot(**self.s3_env())
        self.tg.next_update_id = 700000
        first = self.tg.message(Chat.private(ALICE), ALICE, "First")
        second = self.tg.message(Chat.private(ALICE), ALICE, "Second")
        self.tg.push(self.tg.update("message", first), self.tg.update("message", second))  # one batch
        self.wait_handled(first, second)
        self.assertEqual([r.last_content for r in self.llm.requests], ["First", "Second"],
                         "expected the first message asked first, though its claim ended last")
        self.assertEqual([t["content"] for t in self.history(ALICE.id)],
                         ["First", "Echo: First", "Second", "Echo: Second"])


class S3ServerlessNoConditionsTest(S3TestCase):
    """`tgllm handle` against a server that answers 501 to conditional writes:
    each invocation is a fresh process, so what the first learned is kept in the bucket."""
    s3_options = {"conditions": "501"}

    def test_the_501_is_learned_once_across_invocations(self):
        self.serverless_identity()
        warning = "does not support conditional writes"
        runs = []
        for text in ("First", "Second"):
            msg = self.tg.message(Chat.private(ALICE), ALICE, text)
            self.assertEqual(self.handle(self.tg.update("message", msg)), 200)
            self.assertEqual([r.text for r in self.tg.replies_to(msg)], [f"Echo: {text}"])
            warned = [ln for ln in self.last_handle_log.splitlines() if "level=warn" in ln and warning in ln]
            runs.append((warned, len([r for r in self.s3.requests() if r["status"] == 501])))
        self.assertEqual(len(runs[0][0]), 1, f"expected the first invocation to warn once; got {runs[0][0]}")
        self.assertEqual(runs[1][0], [], "expected the second invocation not to warn again")
        self.assertEqual([n for _, n in runs], [1, 1], "expected one conditional write refused in the first "
                                                        "invocation, and none tried in the second")
        self.assertEqual([t["content"] for t in self.wait_history(ALICE.id, 4)],
                         ["First", "Echo: First", "Second", "Echo: Second"])


class S3ShutdownTest(S3TestCase):
    # A history GET waits up to 2 s for a partner that never comes: the bot is stopped meanwhile.
    s3_options = {"pair_gets": r"^prefix/-?\d+\.json$", "pair_wait_ms": 2000}

    def test_stop_while_a_request_is_in_flight(self):
        bot = self.start_bot(**self.s3_env())
        self.tg.send_private(ALICE, "Hello")
        history = f"/{BUCKET}/{PREFIX}{ALICE.id}.json"

        def in_flight():
            arrived = [r for r in self.s3.arrivals() if r["method"] == "GET" and r["url"].split("?")[0] == history]
            answered = [r for r in self.s3.requests() if r["method"] == "GET" and r["url"].split("?")[0] == history]
            return len(arrived) > len(answered)
        self.tg.wait_for(in_flight, 10, lambda: f"the bot's GET of {history} to be waiting for its partner; "
                                                f"requests so far:\n{self.s3.describe()}")
        self.assertEqual(bot.stop(), 0, "expected a clean exit (under ASan: no leak) with an S3 request in flight")


class S3ConcurrencyTest(S3TestCase):
    # GETs of history objects are served in pairs, so both bots read the same version and race.
    s3_options = {"pair_gets": r"^prefix/-?\d+\.json$", "pair_wait_ms": 3000}

    def start_two_bots(self) -> FakeTelegram:
        """Two instances of one bot, each fed by its own fake Telegram (with
        distinct update ids, as one bot's updates have), one bucket; the second's fake."""
        tg2 = FakeTelegram().start()
        self.addCleanup(tg2.stop)
        tg2.next_update_id = 900000
        self.start_bot(**self.s3_env())
        polls = len(tg2.calls_of("getUpdates"))
        bot2 = self.start_bot(wait_polling=False, **self.s3_env(TELEGRAM_API_BASE=tg2.base_url))
        tg2.wait_for(lambda: len(tg2.calls_of("getUpdates")) > polls or not bot2.running(), 15,
                     "the second bot to poll")
        self.assertBotRunning(bot2)
        return tg2

    def test_two_bots_sharing_a_chat_lose_no_turns(self):
        tg2 = self.start_two_bots()

        rounds = 2
        for i in range(rounds):
            m1 = self.tg.send_private(ALICE, f"first bot, round {i}")
            m2 = tg2.send_private(ALICE, f"second bot, round {i}")
            self.wait_reply(m1, timeout=30)
            tg2.wait_for(lambda: tg2.replies_to(m2), 30, "the second bot's reply")

        def settled():
            h = self.history(ALICE.id) or []
            return len(h) == 4 * rounds and h
        history = self.tg.wait_for(settled, 30, lambda: f"all {4 * rounds} turns stored; have {self.history(ALICE.id)}")
        pairs = [(history[k]["content"], history[k + 1]["content"]) for k in range(0, len(history), 2)]
        expected = {(f"{who} bot, round {i}", f"Echo: {who} bot, round {i}")
                    for who in ("first", "second") for i in range(rounds)}
        self.assertEqual(set(pairs), expected, "expected every exchange stored once, question then answer")
        conflicts = [r for r in self.requests_to(f"{PREFIX}{ALICE.id}.json", "PUT") if r["status"] in (409, 412)]
        self.assertTrue(conflicts, "expected the two bots to collide at least once (a 412 on a history write); "
                                   "without a collision this test proves nothing")
        self.assertLogged(r"the history changed while it was written", levels=("info",))

    def test_two_identical_messages_at_once_are_both_stored(self):
        # The same words from one user reach two instances at once: both read
        # the same (missing) history and race. The loser must not take the
        # winner's identical turns for its own write.
        tg2 = self.start_two_bots()
        m1 = self.tg.send_private(ALICE, "Same words")
        m2 = tg2.send_private(ALICE, "Same words")
        self.wait_reply(m1, timeout=30)
        tg2.wait_for(lambda: tg2.replies_to(m2), 30, "the second bot's reply")
        self.wait_handled(m1)
        tg2.wait_for(lambda: self.journal_state(tg2.update_id_of(m2)) == "done", 30,
                     "the second bot's update to be marked done")
        self.assertEqual([t["content"] for t in self.history(ALICE.id)],
                         ["Same words", "Echo: Same words"] * 2, "expected both exchanges stored")
        conflicts = [r for r in self.requests_to(f"{PREFIX}{ALICE.id}.json", "PUT") if r["status"] in (409, 412)]
        self.assertTrue(conflicts, "expected the two bots to collide (a 412 on a history write); "
                                   "without a collision this test proves nothing")
        self.assertNotIn("the history write whose answer was lost did land", self.log(),
                         "expected no writer to take the other's identical turns for its own")


class S3ClientInteropTest(S3TestCase):

    def test_an_s3_client_that_is_not_ours_reads_what_tgllm_wrote(self):
        python = "/usr/bin/python3"
        probe = subprocess.run([python, "-c", "import boto3"], capture_output=True)
        if probe.returncode != 0:
            self.skipTest("boto3 is not importable by /usr/bin/python3 (apt-get install python3-boto3)")
        self.start_bot(**self.s3_env())
        self.ask(IVAN, "Привет из Telegram")
        self.wait_history(IVAN.id, 2)
        out = subprocess.run(
            [python, str(HERE / "s3_client_check.py"), self.s3.endpoint, REGION, BUCKET, PREFIX],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AWS_ACCESS_KEY_ID": self.s3.access_key,
                 "AWS_SECRET_ACCESS_KEY": self.s3.secret_key, "HOME": str(self.tmp)},
            capture_output=True, timeout=60)
        self.assertEqual(out.returncode, 0, f"boto3 failed:\n{out.stderr.decode('utf-8', 'replace')}")
        seen = json.loads(out.stdout)
        self.assertIn(f"{PREFIX}{IVAN.id}.json", seen["keys"])
        self.assertEqual(seen["objects"][f"{PREFIX}{IVAN.id}.json"], [
            {"role": "user", "content": "Привет из Telegram"},
            {"role": "assistant", "content": "Echo: Привет из Telegram"},
        ], "expected boto3 to read the history as tgllm wrote it")


if __name__ == "__main__":
    main()
