"""The PostgreSQL store end to end: STORE=postgres://... against a throwaway
cluster (pg_server.py), one fresh database per test.

The conversations of the SQLite tests run again here unchanged (history
across a restart, redelivered updates answered once, /new, /retry, /usage,
budgets, /model): their classes are subclassed with the store pointed at
PostgreSQL and their peeks into the store (journal_state, stored_history)
answered from it. Then what only a server has: `handle` over it, the
password never printed, a restart of the server mid-run, a wrong password
and a server that is not there.

Skipped without Debian's postgresql package, failed instead under CI=true.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time

import harness
import test_persistence
import test_usage
from fake_openai import Reply
from fake_telegram import Chat, User
from harness import ALICE, BOB, IVAN, BotProcess, BotTestCase, main, run_bin
from pg_server import PASSWORD, PgServer, skip_or_fail, unavailable
from test_serve import free_port

_databases = itertools.count(1)


class PgTestCase(BotTestCase):
    """A BotTestCase whose store is a fresh PostgreSQL database (one cluster per class)."""

    pg = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not unavailable():
            cls.pg = PgServer().start()

    @classmethod
    def tearDownClass(cls):
        if cls.pg:
            cls.pg.stop()
        super().tearDownClass()

    def setUp(self):
        skip_or_fail(self)
        super().setUp()
        harness._handed_secrets.add(PASSWORD)  # no 8 bytes of it in any output (tearDown checks)
        self.db = "t%d_%d" % (os.getpid(), next(_databases))
        self.pg.sql("CREATE DATABASE %s" % self.db, database="postgres")
        self.store = self.pg.url(database=self.db)

    def tearDown(self):
        super().tearDown()
        if not self._failed():
            self.assertNotIn(PASSWORD, self.log(), "expected the password never in the bot's stderr")
        if self._failed() or os.environ.get("TGLLM_E2E_VERBOSE"):
            sys.stderr.write("\n===== PostgreSQL's log (last lines) =====\n%s\n"
                             % "\n".join(self.pg.log().splitlines()[-30:]))

    def query(self, sql: str) -> str:
        """sql on the test's database ('' when a table is not there yet)."""
        try:
            return self.pg.sql(sql, database=self.db)
        except RuntimeError as e:
            if "does not exist" in str(e):
                return ""
            raise

    def journal_state(self, update_id: int):
        return self.query("SELECT state FROM tgllm_updates WHERE update_id = %d" % int(update_id)) or None

    def stored_history(self, chat_id: int) -> list:
        raw = self.query("SELECT coalesce(json_agg(json_build_object('role', role, 'content', content) "
                         "ORDER BY id), '[]') FROM tgllm_messages WHERE chat_id = %d" % int(chat_id))
        return json.loads(raw or "[]")

    def store_contains(self, needle: str) -> bool:
        tag = "$n$"
        self.assertNotIn(tag, needle)
        return self.query("SELECT count(*) FROM (SELECT content AS t FROM tgllm_messages UNION ALL "
                          "SELECT body FROM tgllm_updates UNION ALL SELECT value FROM tgllm_settings) AS a "
                          "WHERE strpos(t, %s%s%s) > 0" % (tag, needle, tag)) not in ("", "0")


# ---- the SQLite store's conversations, on PostgreSQL ----

class PgHistoryPersistenceTest(PgTestCase, test_persistence.HistoryPersistenceTest):
    pass


class PgHandledUpdatesTest(PgTestCase, test_persistence.HandledUpdatesTest):
    pass


class PgRetryTest(PgTestCase, test_usage.RetryTest):
    pass


class PgUsageTest(PgTestCase, test_usage.UsageTest):
    pass


class PgBudgetTest(PgTestCase, test_usage.BudgetTest):
    pass


# ---- what a server adds ----

class PgStoreTest(PgTestCase):

    def test_turns_land_in_the_tables_and_new_clears_them(self):
        self.start_bot()
        self.wait_handled(self.tg.send_private(ALICE, "Put me in PostgreSQL"))
        self.assertEqual(self.stored_history(ALICE.id), [
            {"role": "user", "content": "Put me in PostgreSQL"},
            {"role": "assistant", "content": "Echo: Put me in PostgreSQL"}])
        self.assertEqual(self.query("SELECT version FROM tgllm_schema"), "2")
        self.tg.send_private(ALICE, "/new")
        self.wait_text(ALICE.id, "new conversation")
        self.assertEqual(self.stored_history(ALICE.id), [])

    def test_libpq_keyword_form_works_too(self):
        self.store = self.pg.keywords().replace("dbname=tgllm", "dbname=" + self.db)
        self.start_bot()
        msg = self.tg.send_private(ALICE, "Keywords")
        self.assertEqual(self.wait_reply(msg).text, "Echo: Keywords")
        self.wait_handled(msg)
        self.assertEqual(len(self.stored_history(ALICE.id)), 2)

    def test_handle_invocations_share_the_history(self):
        # As test_handle.py: the cached identity is checked against the token's bot id.
        self.tg.bot = User(id=int(self.tg.token.split(":")[0]), first_name="Test Bot",
                           username=self.tg.bot.username, is_bot=True)
        first = self.tg.message(Chat.private(BOB), BOB, "Remember 7")
        update = self.tg.update("message", first)
        self.assertEqual(self.handle_update(update, {}), 200)
        self.assertNotIn(PASSWORD, self.last_handle_log)
        self.assertEqual(self.handle_update(update, {}), 200)  # redelivered: not answered again
        second = self.tg.message(Chat.private(BOB), BOB, "Which number?")
        self.assertEqual(self.handle_update(self.tg.update("message", second), {}), 200)
        self.assertEqual([r.text for r in self.tg.replies_to(first)], ["Echo: Remember 7"])
        self.assertEqual(self.llm.requests[-1].messages, [
            {"role": "user", "content": "Remember 7"},
            {"role": "assistant", "content": "Echo: Remember 7"},
            {"role": "user", "content": "Which number?"}])

    def test_a_server_restart_mid_run_and_the_bot_goes_on(self):
        bot = self.start_bot()
        self.wait_handled(self.tg.send_private(ALICE, "Before the restart"))
        self.pg.restart()  # every connection of the bot is closed by the server
        # The bot notices, connects again and goes on; nothing stored before is lost.
        msg = self.tg.send_private(ALICE, "After the restart")
        self.assertEqual(self.wait_reply(msg, timeout=20).text, "Echo: After the restart")
        self.wait_handled(msg)
        self.assertBotRunning(bot)
        self.assertEqual(len(self.stored_history(ALICE.id)), 4)
        self.assertEqual(self.llm.requests[-1].messages[0], {"role": "user", "content": "Before the restart"})
        self.assertLogged(r"store: postgres: connection \d lost", levels=("error",))

    def test_a_server_restart_while_the_model_thinks_loses_no_turn(self):
        self.start_bot()
        self.llm.enqueue(Reply(text="A slow answer", delay=3.0))
        msg = self.tg.send_private(ALICE, "Think while the database restarts")
        self.llm.wait_requests(1)
        self.pg.restart()
        self.assertEqual(self.wait_reply(msg, timeout=20).text, "A slow answer")
        self.wait_handled(msg, timeout=20)
        self.assertEqual(self.stored_history(ALICE.id), [
            {"role": "user", "content": "Think while the database restarts"},
            {"role": "assistant", "content": "A slow answer"}])
        self.assertEqual(self.ask(ALICE, "Next").text, "Echo: Next")
        self.assertEqual(len(self.llm.requests[-1].messages), 3, "the slow exchange in the next request")

    def test_messages_while_the_server_is_down_are_answered_once_it_is_back(self):
        self.start_bot()
        self.wait_handled(self.tg.send_private(ALICE, "Hello"))
        self.pg.stop_server()
        msg = self.tg.send_private(ALICE, "While it is down")
        time.sleep(8)  # longer than an operation waits for a connection (OP_WAIT_S)
        self.pg.start_server()
        # The server's going away ends the lead lock's session: the bot stops polling, and the update
        # stays with Telegram. (Fetched in the instant before it noticed, it is not journaled: the user
        # is told, and Telegram offers it again.) Once the server is back it leads again and answers, once.
        echo = "Echo: While it is down"
        self.tg.wait_for(lambda: echo in [r.text for r in self.tg.replies_to(msg)], 40,
                         lambda: f"the answer once the server is back; replies: {self.tg.replies_to(msg)!r}")
        self.wait_handled(msg, timeout=20)
        self.ask(ALICE, "And after")
        texts = [r.text for r in self.tg.replies_to(msg)]
        self.assertEqual(texts.count(echo), 1, f"expected the message answered exactly once: {texts!r}")
        self.assertLogged(r"poll: no longer leading", levels=("warn",))

class PgFaultTest(PgTestCase):
    """A database that cannot take an exchange for a while: a full disk, a statement blocked past its timeout.
    The user is told once, the update stays pending, and the answer follows, stored once, when it can be."""

    SAVING = "Your answer is ready, but the conversation storage is failing"

    def wait_stored_once(self, msg, question: str):
        reply = self.wait_reply(msg, timeout=20)
        self.wait_handled(msg)
        self.assertEqual([r.text for r in self.tg.replies_to(msg)][-1], "Echo: " + question)
        self.assertEqual(self.stored_history(ALICE.id), [{"role": "user", "content": question},
                                                         {"role": "assistant", "content": "Echo: " + question}])
        return reply

    def test_a_full_disk_tells_the_user_and_the_answer_follows_once_stored(self):
        self.start_bot()
        self.wait_handled(self.tg.send_private(BOB, "Warm up"))  # the schema is there
        # What PostgreSQL says when its disk is full (SQLSTATE 53100), on every turn written.
        self.query("CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
                   "RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; "
                   "END$$; CREATE TRIGGER full_disk BEFORE INSERT ON tgllm_messages FOR EACH ROW "
                   "EXECUTE FUNCTION full_disk()")
        msg = self.tg.send_private(ALICE, "Is there room?")
        self.wait_text(ALICE.id, self.SAVING)
        self.assertEqual(self.journal_state(self.update_id(msg)), "pending")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], [self.tg.texts_in(ALICE.id)[0]],
                         "expected the notice alone until the answer is stored")
        self.assertLogged(r"No space left on device", levels=("error",), what="the database's refusal")
        self.query("DROP TRIGGER full_disk ON tgllm_messages")  # room again
        self.wait_stored_once(msg, "Is there room?")
        self.assertEqual(len(self.llm.requests_with("Is there room?")), 1, "expected the model asked once")

    def test_a_statement_blocked_past_its_timeout_fails_cleanly_and_is_tried_again(self):
        self.store += "?options=-c%20statement_timeout%3D300"  # the connection string's own timeout wins
        self.start_bot()
        self.wait_handled(self.tg.send_private(BOB, "Warm up"))
        # Another session holds the table against writers for 2.5 s (reads go on).
        locker = threading.Thread(target=self.query, daemon=True, args=(
            "BEGIN; LOCK TABLE tgllm_messages IN EXCLUSIVE MODE; SELECT pg_sleep(2.5); COMMIT",))
        locker.start()
        self.tg.wait_for(lambda: self.query("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                                            "WHERE c.relname = 'tgllm_messages' AND l.mode = 'ExclusiveLock'")
                         == "1", 10, "the lock held")
        msg = self.tg.send_private(ALICE, "Through the lock?")
        self.wait_text(ALICE.id, self.SAVING)
        self.assertLogged(r"statement timeout", levels=("error",), what="the statement cancelled by the server")
        self.wait_stored_once(msg, "Through the lock?")
        locker.join(10)
        self.assertBotRunning(self.bots[0])


class PgStartTest(PgTestCase):
    """What a start against a server that cannot be used says (and that it does not say the password)."""

    def start_fails(self, store: str, command: str = "poll") -> str:
        result = run_bin([command], self.bot_env(STORE=store), timeout=30)
        err = result.stderr.decode("utf-8", "replace")
        self.assertNotEqual(result.returncode, 0, "expected the start to fail")
        self.assertNoSecretIn(err, "the start's error")
        self.assertNotIn("pg-Wrong-9x7q", err)
        return err

    def test_a_wrong_password_is_a_clear_error_without_it(self):
        err = self.start_fails(self.pg.url(password="pg-Wrong-9x7q", database=self.db))
        self.assertIn("STORE: cannot connect to PostgreSQL", err)
        self.assertIn("password authentication failed", err)

    def test_an_unreachable_server_is_a_clear_error_in_handle(self):
        # poll and serve wait for the server (PgWaitTest); a serverless invocation fails, bounded.
        started = time.monotonic()
        err = self.start_fails("postgresql://tgllm:%s@127.0.0.1:1/x" % PASSWORD, command="handle")
        self.assertIn("STORE: cannot connect to PostgreSQL", err)
        self.assertIn("Connection refused", err)
        self.assertLess(time.monotonic() - started, 15)

    def test_handle_fails_when_the_server_is_down(self):
        self.tg.bot = User(id=int(self.tg.token.split(":")[0]), first_name="Test Bot",
                           username=self.tg.bot.username, is_bot=True)
        msg = self.tg.message(Chat.private(BOB), BOB, "Anyone?")
        result = run_bin(["handle"], self.bot_env(STORE="postgres://tgllm:%s@127.0.0.1:1/x" % PASSWORD),
                         timeout=30)
        del msg
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("cannot connect to PostgreSQL", result.stderr.decode("utf-8", "replace"))

    def test_instances_starting_at_once_on_a_new_database_make_one_schema(self):
        # Six `handle` invocations at once on a new database: the schema is made by whichever comes
        # first, under an advisory lock; the others wait for it and find it made.
        self.tg.bot = User(id=int(self.tg.token.split(":")[0]), first_name="Test Bot",
                           username=self.tg.bot.username, is_bot=True)
        msgs = [self.tg.message(Chat.private(u), u, f"At once {i}") for i, u in enumerate([ALICE, BOB, IVAN] * 2)]
        statuses = {}
        threads = [threading.Thread(target=lambda m=m: statuses.update(
            {m["text"]: self.handle_update(self.tg.update("message", m), {})})) for m in msgs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(statuses, {m["text"]: 200 for m in msgs})
        for m in msgs:
            self.assertEqual([r.text for r in self.tg.replies_to(m)], ["Echo: " + m["text"]])
        self.assertEqual(self.query("SELECT count(*) || ' ' || max(version) FROM tgllm_schema"), "1 2")

    def test_doctor_checks_the_database_and_hides_the_password(self):
        result = run_bin(["doctor"], self.bot_env(), timeout=30)
        out = result.stdout.decode("utf-8", "replace")
        self.assertNotIn(PASSWORD, out + result.stderr.decode("utf-8", "replace"))
        self.assertIn("✓ store postgres://tgllm:***@", out)
        self.assertIn("a test record written, read and deleted", out)


class PgWaitTest(PgTestCase):
    """poll and serve started while PostgreSQL is down: one clear error line, then they wait for it."""

    WAITING = "trying again until it answers"

    def stop_server(self):
        self.pg.stop_server()
        # The cluster is the class's: the next test needs it up.
        self.addCleanup(lambda: os.path.exists(os.path.join(self.pg.data, "postmaster.pid"))
                        or self.pg.start_server())

    def wait_logged(self, bot, needle: str, timeout: float = 15):
        self.tg.wait_for(lambda: needle in self.log() or not bot.running(), timeout, f"the log line {needle!r}")
        self.assertBotRunning(bot)

    def test_poll_waits_for_the_server_and_answers_once_it_is_up(self):
        self.stop_server()
        bot = self.start_bot(wait_polling=False)
        self.wait_logged(bot, self.WAITING)
        line = next(ln for ln in self.log_lines("error") if self.WAITING in ln)
        self.assertIn("STORE: cannot connect to PostgreSQL", line)
        self.assertIn("Connection refused", line)
        self.assertEqual(self.tg.calls_of("getUpdates"), [], "expected no update taken before the store opens")
        self.pg.start_server()
        # The waits double from 1 s (plus up to half at random): the next tries come within ~5 s.
        self.tg.wait_for(lambda: self.tg.calls_of("getUpdates") or not bot.running(), 45, "the bot to poll")
        self.assertBotRunning(bot)
        self.assertEqual(self.ask(ALICE, "Are you there?").text, "Echo: Are you there?")
        self.assertEqual(len([ln for ln in self.log_lines("error") if self.WAITING in ln]), 1,
                         "expected one error line for the wait")
        self.assertLogged(r"the store answered after \d+ failed attempts", levels=("info",))

    def test_a_server_out_of_connections_is_waited_for_too(self):
        settings = ("max_connections = 4", "superuser_reserved_connections = 0",
                    "client_connection_check_interval = '100ms'")  # a killed client's slot is free at once
        for setting in settings:
            self.pg.sql("ALTER SYSTEM SET " + setting, database="postgres")
        self.addCleanup(self.pg.restart)  # cleanups run last first: after the RESET below
        self.addCleanup(lambda: self.pg.sql("ALTER SYSTEM RESET ALL", database="postgres"))
        self.pg.restart()
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        psql = "%s -h 127.0.0.1 -p %d -U tgllm -d %s -c 'SELECT pg_sleep(60)'" % (
            os.path.join(self.pg.bin, "psql"), self.pg.port, self.db)
        # Each holder tries again until it has its slot: one may lose it to the probe below.
        holders = [subprocess.Popen(["sh", "-c", "until %s; do sleep 0.1; done" % psql], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                   for _ in range(4)]

        def release():
            for h in holders:
                if h.poll() is None:
                    os.killpg(h.pid, signal.SIGKILL)
                    h.wait(10)
        self.addCleanup(release)

        def is_full():
            try:
                self.pg.sql("SELECT 1", database=self.db)
                return False
            except RuntimeError as e:
                return "too many clients" in str(e)
        self.tg.wait_for(is_full, 15, "the server's connections all taken")
        bot = self.start_bot(wait_polling=False)
        self.wait_logged(bot, self.WAITING)
        self.assertIn("too many clients", next(ln for ln in self.log_lines("error") if self.WAITING in ln))
        release()
        self.tg.wait_for(lambda: self.tg.calls_of("getUpdates") or not bot.running(), 45, "the bot to poll")
        self.assertEqual(self.ask(ALICE, "Room now?").text, "Echo: Room now?")

    def test_poll_waits_for_a_unix_socket_not_there_yet(self):
        # libpq's connect() fails at once here (no socket file), before any server speaks.
        self.store = "host=%s port=%d user=tgllm password=%s dbname=%s" % (self.pg.dir, self.pg.port, PASSWORD,
                                                                         self.db)
        self.stop_server()
        bot = self.start_bot(wait_polling=False)
        self.wait_logged(bot, self.WAITING)
        self.assertIn("No such file or directory", next(ln for ln in self.log_lines("error") if self.WAITING in ln))
        self.pg.start_server()
        self.tg.wait_for(lambda: self.tg.calls_of("getUpdates") or not bot.running(), 45, "the bot to poll")
        self.assertEqual(self.ask(ALICE, "Through the socket?").text, "Echo: Through the socket?")

    def test_an_invalid_option_is_not_waited_for(self):
        result = run_bin(["serve"], self.bot_env(STORE=self.pg.url(database=self.db) + "?sslmode=bogus"), timeout=30)
        err = result.stderr.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 2, err)
        self.assertIn('invalid sslmode value: "bogus"', err)
        self.assertNotIn(self.WAITING, err)

    def test_serve_waits_and_sigterm_stops_it_at_once(self):
        self.stop_server()
        bot = BotProcess(self.bot_env(LISTEN="127.0.0.1:%d" % free_port()), self.log_path, args=("serve",))
        self.bots.append(bot)
        self.addCleanup(bot.kill)
        self.wait_logged(bot, self.WAITING)
        started = time.monotonic()
        bot.signal(signal.SIGTERM)
        self.assertEqual(bot.wait(5), -signal.SIGTERM, "expected SIGTERM to end the wait at once")
        self.assertLess(time.monotonic() - started, 5)

    def test_a_wrong_password_is_not_waited_for(self):
        started = time.monotonic()
        result = run_bin(["poll"], self.bot_env(STORE=self.pg.url(password="pg-Wrong-9x7q", database=self.db)),
                         timeout=30)
        err = result.stderr.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 2, err)
        self.assertIn("password authentication failed", err)
        self.assertNotIn(self.WAITING, err)
        self.assertNotIn("pg-Wrong-9x7q", err)
        self.assertLess(time.monotonic() - started, 15)


if __name__ == "__main__":
    main()
