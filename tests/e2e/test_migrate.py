"""`tgllm migrate`: a bot's SQLite store moved into PostgreSQL (a throwaway
cluster, pg_server.py, one fresh database per test, as test_store_postgres.py).

The bot runs on SQLite through two chats, a /system setting and an update
left pending (the bot killed while the model thinks); migrate copies it all;
the bot started on PostgreSQL goes on: the model sees the earlier turns and
the chat's system prompt, and the pending update is answered, once. A second
migrate refuses and changes nothing; a wrong password and a missing file fail
with one clear line, the password never printed.

Skipped without Debian's postgresql package, failed instead under CI=true.
"""

import base64
import sqlite3

from fake_openai import Reply
from fake_telegram import Chat
from harness import ALICE, BOB, main, run_bin
from pg_server import PASSWORD
from test_store_postgres import PgTestCase

WRONG = "pg-Wrong-3k8v"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(range(256)) + b"\xff\xd9"
PHOTO_TURN = {"role": "user", "content": [
    {"type": "text", "text": "What colour is this?"},
    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()}}]}


class MigrateTestCase(PgTestCase):
    """The bot starts on SQLite; self.pg_store is where migrate puts it."""

    def setUp(self):
        super().setUp()
        self.pg_store = self.store
        self.sqlite_path = str(self.tmp / "tgllm.db")
        self.store = "sqlite:" + self.sqlite_path

    def journal_state(self, update_id: int):
        if self.store.startswith("sqlite:"):
            return super(PgTestCase, self).journal_state(update_id)
        return super().journal_state(update_id)

    def migrate(self, to=None, source=None):
        r = run_bin(["migrate", "--from", "sqlite:" + (source or self.sqlite_path), "--to", to or self.pg_store],
                    {}, timeout=60)
        out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
        with open(self.log_path, "a") as f:
            f.write(f"----- migrate: status {r.returncode}\n{out}{err}")
        self.assertNotIn(PASSWORD, out + err, "expected the password never in migrate's output")
        return r.returncode, out, err

    def talk(self, user, text: str):
        """user writes text; once the exchange is stored, the bot's reply."""
        msg = self.tg.send_private(user, text)
        reply = self.wait_reply(msg)
        self.wait_handled(msg)
        return reply

    def sqlite_rows(self, sql: str) -> list:
        con = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True)
        try:
            return [list(r) for r in con.execute(sql)]
        finally:
            con.close()

    def pg_rows(self, sql: str) -> list:
        out = self.query(sql)
        return [line.split("|") for line in out.splitlines()] if out else []

    def pg_snapshot(self) -> str:
        return self.query("SELECT (SELECT count(*) || md5(string_agg(id || chat_id || role || content || is_parts "
                          "|| created_at, ',' ORDER BY id)) FROM tgllm_messages) || ' ' || "
                          "(SELECT count(*) || md5(string_agg(scope || key || value, ',' ORDER BY scope, key)) "
                          "FROM tgllm_settings) || ' ' || (SELECT count(*) || md5(string_agg(update_id || state || "
                          "coalesce(body, ''), ',' ORDER BY update_id)) FROM tgllm_updates)")


class MigrateTest(MigrateTestCase):

    def test_a_sqlite_store_moves_to_postgresql_and_the_bot_goes_on(self):
        bot = self.start_bot()
        self.assertIn("Saved", self.talk(ALICE, "/system Answer like a pirate.").text)
        self.talk(ALICE, "Remember the number 42")
        self.talk(BOB, "My colour is blue")
        photo = self.tg.send_file(Chat.private(BOB), BOB, "photo", JPEG, caption="What colour is this?")
        self.wait_reply(photo)
        self.wait_handled(photo)  # a turn of content parts (is_parts)
        self.talk(ALICE, "And the word anchor")
        # An update journaled but never answered: the bot dies while the model thinks.
        self.llm.enqueue(Reply(delay=30.0))
        asked = len(self.llm.requests)
        pending = self.tg.send_private(BOB, "Answer me after the move")
        self.llm.wait_requests(asked + 1)
        self.tg.wait_for(lambda: self.journal_state(self.update_id(pending)) == "pending", 10,
                         "the update journaled as pending")
        bot.kill()

        status, out, err = self.migrate()
        self.assertEqual(status, 0, err)
        settings = self.sqlite_rows("SELECT count(*) FROM settings")[0][0]  # the chat's, and usage counts
        self.assertIn(f"copied 2 chats (8 turns), {settings} settings, 1 pending updates", out)
        # Every turn, in order, with its role, content, is_parts and time.
        rows = self.pg_rows("SELECT chat_id, role, content, is_parts::int, created_at FROM tgllm_messages ORDER BY id")
        self.assertEqual([r[3] for r in rows].count("1"), 1,
                         "expected the photo's turn kept as content parts (is_parts)")
        self.assertEqual(rows,
                         [[str(c) for c in r] for r in self.sqlite_rows(
                             "SELECT chat_id, role, content, is_parts, created_at FROM messages ORDER BY id")])
        self.assertEqual(self.pg_rows("SELECT scope, key, value FROM tgllm_settings ORDER BY scope, key"),
                         [[str(c) for c in r] for r in self.sqlite_rows(
                             "SELECT scope, key, value FROM settings ORDER BY scope, key")])

        self.store = self.pg_store
        self.assertEqual(self.journal_state(self.update_id(pending)), "pending")
        self.start_bot()
        # The pending update is replayed from PostgreSQL, with the history it was asked in.
        self.assertEqual(self.wait_reply(pending, timeout=20).text, "Echo: Answer me after the move")
        self.wait_handled(pending)
        self.assertEqual(self.llm.requests[-1].messages, [
            {"role": "user", "content": "My colour is blue"},
            {"role": "assistant", "content": "Echo: My colour is blue"},
            PHOTO_TURN,
            {"role": "assistant", "content": "Echo: What colour is this?"},
            {"role": "user", "content": "Answer me after the move"}])
        # The conversation goes on with the migrated history and the chat's system prompt.
        self.ask(ALICE, "Which number and word?")
        self.assertEqual(self.llm.requests[-1].messages, [
            {"role": "system", "content": "Answer like a pirate."},
            {"role": "user", "content": "Remember the number 42"},
            {"role": "assistant", "content": "Echo: Remember the number 42"},
            {"role": "user", "content": "And the word anchor"},
            {"role": "assistant", "content": "Echo: And the word anchor"},
            {"role": "user", "content": "Which number and word?"}])
        self.ask(BOB, "Next")  # one chat is handled in order: a second answer would have come first
        self.assertEqual([r.text for r in self.tg.replies_to(pending)], ["Echo: Answer me after the move"],
                         "expected the pending update answered exactly once")
        asked_for = [r for r in self.llm.requests if r.messages[-1]["content"] == "Answer me after the move"]
        self.assertEqual(len(asked_for), 2, "expected the model asked once before the kill and once after the move")

        # Run again: refused, and the target is as it was.
        before = self.pg_snapshot()
        status, out, err = self.migrate()
        self.assertEqual(status, 1, out + err)
        self.assertIn("already holds history", err)
        self.assertEqual(out, "")
        self.assertEqual(self.pg_snapshot(), before, "expected a refused migrate to change nothing")

    def test_a_wrong_password_fails_clearly_without_printing_it(self):
        bot = self.start_bot()
        self.talk(ALICE, "Hello")
        bot.stop()
        status, out, err = self.migrate(to=self.pg.url(password=WRONG, database=self.db))
        self.assertEqual(status, 1, out + err)
        self.assertIn("tgllm: migrate: --to: cannot connect to PostgreSQL", err)
        self.assertIn("password authentication failed", err)
        self.assertNotIn(WRONG, out + err)
        self.assertEqual(self.query("SELECT count(*) FROM tgllm_messages"), "", "expected nothing made")

    def test_a_missing_sqlite_file_fails_clearly(self):
        missing = str(self.tmp / "nothing-here.db")
        status, out, err = self.migrate(source=missing)
        self.assertEqual(status, 1, out + err)
        self.assertIn(f"tgllm: migrate: cannot read {missing}: No such file or directory", err)
        self.assertEqual(self.query("SELECT count(*) FROM tgllm_messages"), "", "expected nothing made")

    def test_a_store_from_a_newer_tgllm_is_refused(self):
        con = sqlite3.connect(self.sqlite_path)
        con.execute("PRAGMA user_version = 99")
        con.close()
        status, out, err = self.migrate()
        self.assertEqual(status, 1, out + err)
        self.assertIn("schema version 99, newer than this tgllm", err)

    def test_bad_arguments_are_a_usage_error(self):
        for args in (["migrate"], ["migrate", "--from", "sqlite:x"], ["migrate", "--to", self.pg_store],
                     ["migrate", "--from", "x.db", "--to", self.pg_store],
                     ["migrate", "--from", "sqlite:x", "--to", self.pg_store, "--force"]):
            r = run_bin(args, {})
            self.assertEqual(r.returncode, 2, f"tgllm {' '.join(args)}: {r.stderr!r}")
            self.assertIn(b"migrate", r.stderr)


if __name__ == "__main__":
    main()
