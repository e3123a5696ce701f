"""The durability contract, the same for every ingress: an update is
acknowledged to Telegram (the next getUpdates offset, the webhook's 200, the
serverless response) only once its claim is in the journal. When the journal
cannot take it (here: another connection holds the SQLite database's write
lock past the bot's busy timeout), the update is not taken: the user is told
once that the storage is failing, Telegram delivers it again, and once the
journal works it is answered exactly once."""

import json
import os
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ALICE, BotTestCase, Chat, main  # noqa: E402
from test_handle import HandleTestCase, yandex_event  # noqa: E402
from test_serve import ServeTestCase  # noqa: E402

STORE_FAILED = "Something went wrong with the conversation storage"


class JournalMixin:
    """Holds the store's write lock, as a stuck writer would."""

    def lock_journal(self) -> sqlite3.Connection:
        path = self.store.split(":", 1)[1]
        self.tg.wait_for(lambda: os.path.exists(path), 10, "the bot to create its database")
        con = sqlite3.connect(path, timeout=10, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        self.addCleanup(con.close)
        return con

    def journal_state(self, update_id: int):
        """The update's state in the journal ('pending', 'done'), or None when it is not there."""
        con = sqlite3.connect(f"file:{self.store.split(':', 1)[1]}?mode=ro", uri=True, timeout=10)
        try:
            row = con.execute("SELECT state FROM updates WHERE update_id = ?", (update_id,)).fetchone()
        finally:
            con.close()
        return row[0] if row else None

    def model_requests_for(self, text: str) -> int:
        return len(self.llm.requests_with(text))


class PollJournalTest(JournalMixin, BotTestCase):

    def test_an_update_the_journal_cannot_take_is_asked_for_again_and_answered_once(self):
        self.start_bot()
        lock = self.lock_journal()
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Anyone there while the disk is stuck?")
        update = self.tg.update("message", msg)
        self.tg.push(update)
        self.wait_text(ALICE.id, STORE_FAILED, timeout=30)
        self.assertLogged(r"update=\d+ could not be journaled; not taken", levels=("error",))
        self.assertEqual(self.model_requests_for("disk is stuck"), 0, "expected no model request for it yet")
        polls = len(self.tg.calls_of("getUpdates"))
        lock.execute("ROLLBACK")
        reply = self.wait_text(ALICE.id, "Echo: Anyone there while the disk is stuck?", timeout=30)
        self.assertEqual(reply.reply_to, msg["message_id"])
        self.tg.wait_for(lambda: self.journal_state(update["update_id"]) == "done", 10, "the update marked done")
        self.assertEqual(self.model_requests_for("disk is stuck"), 1, "expected it answered exactly once")
        self.assertEqual(len([t for t in self.tg.texts_in(ALICE.id) if STORE_FAILED in t]), 1,
                         "expected the user told once, however often the update came again")
        self.assertGreater(len(self.tg.calls_of("getUpdates")), polls, "expected Telegram asked again")


class ServeJournalTest(JournalMixin, ServeTestCase):

    def test_a_post_the_journal_cannot_take_gets_500_and_its_retry_200(self):
        self.start_serve()
        lock = self.lock_journal()
        update, msg = self.new_update(ALICE, "Webhook while the disk is stuck")
        status = self.post_update(update)
        self.assertEqual(status, 500, "expected 500: not journaled, so Telegram must deliver it again")
        self.wait_text(ALICE.id, STORE_FAILED, timeout=15)
        self.assertIsNone(self.journal_state(update["update_id"]))
        lock.execute("ROLLBACK")
        # Telegram delivers it again.
        status = self.post_update(update)
        self.assertEqual(status, 200)
        self.assertIsNotNone(self.journal_state(update["update_id"]), "expected 200 only once it is journaled")
        self.wait_text(ALICE.id, "Echo: Webhook while the disk is stuck", timeout=15)
        self.tg.wait_for(lambda: self.journal_state(update["update_id"]) == "done", 10, "the update marked done")
        self.assertEqual(self.model_requests_for("Webhook while the disk"), 1)
        # A third delivery of the same update is acknowledged without a second answer.
        self.assertEqual(self.post_update(update), 200)
        self.assertEqual(self.model_requests_for("Webhook while the disk"), 1)
        self.assertEqual(len([t for t in self.tg.texts_in(ALICE.id) if STORE_FAILED in t]), 1)


class HandleJournalTest(JournalMixin, HandleTestCase):

    def test_an_invocation_the_journal_cannot_take_answers_500(self):
        self.handle(yandex_event("{\"update_id\": 1, \"edited_message\": {}}"))  # creates the database
        lock = self.lock_journal()
        update, msg = self.new_update(ALICE, "Serverless while the disk is stuck")
        inv = self.handle(yandex_event(json.dumps(update)), timeout=30)
        self.assertEqual(inv.status, 500, "expected 500, for Telegram to deliver it again")
        self.assertTrue(any(STORE_FAILED in t for t in self.tg.texts_in(ALICE.id)),
                        "expected the user told, before the invocation ended")
        lock.execute("ROLLBACK")
        inv = self.handle(yandex_event(json.dumps(update)), timeout=30)
        self.assertEqual(inv.status, 200)
        self.assertTrue(any(t == "Echo: Serverless while the disk is stuck" for t in self.tg.texts_in(ALICE.id)))
        self.assertEqual(self.journal_state(update["update_id"]), "done")


if __name__ == "__main__":
    main()
