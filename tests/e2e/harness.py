"""Shared machinery of the end-to-end tests.

Each test gets a fresh temporary directory, a fake Telegram and a fake model
server on 127.0.0.1 (ephemeral ports), and starts the real binary
(`$TGLLM_BIN poll`, default <repo>/build/tgllm) with a minimal environment:
only PATH, the sanitizer options if any, and the variables the test passes.
The bot's stderr goes to a file in the temporary directory and is printed
when a test fails. Every bot process is stopped in tearDown (SIGTERM, then
SIGKILL after a bound), and is also asked to die with the test runner
(PR_SET_PDEATHSIG), so no process outlives a test even when it fails or the
runner is killed.

Every test also proves that no piece of a secret (8 bytes in a row of the
bot token, an API key, a webhook or S3 secret handed to the binary) reaches
what the binary printed.

No test sleeps to give the bot time: a test waits (bounded) for something it
can observe, then asserts. For "the bot must NOT do X" the observable is the
update journal: the bot journals each update in its store before confirming
it and marks it done when its handling has ended (wait_handled), so once an
update is done, whatever it was going to cause has happened. One chat's
messages are handled in order, so a later message's answer also proves the
earlier ones are through.

Telegram's pacing (1 s between messages to a private chat, 3 s to a group,
30 calls a second) would make most tests wait for nothing: bots get a fast
pacing (FAST_PACING, small but not zero, so the pacing code still runs).
Tests that prove the real intervals set `pacing = None` (the binary's
default, Telegram's limits).
"""

import atexit
import ctypes
import os
import resource
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai import FakeOpenAI  # noqa: E402
from fake_telegram import BOT_ID, BOT_USERNAME, TOKEN, Chat, FakeTelegram, User, utf16_len  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("TGLLM_BIN") or str(REPO / "build" / "tgllm")
API_KEY = "sk-test-e2e-0123456789abcdef"

# The people of the tests.
ALICE = User(id=111001, first_name="Alice", username="alice", language_code="en")
BOB = User(id=222002, first_name="Bob", username="Bob_Builder", language_code="en-GB")
IVAN = User(id=333003, first_name="Иван", username="ivan_petrov", language_code="ru")
NONAME = User(id=444004, first_name="Nameless")               # no username: allowed by id
MALLORY = User(id=666006, first_name="Mallory", username="mallory", language_code="en")  # not allowed
ERIN = User(id=777007, first_name="Erin", username="erin")    # not allowed

# What the bot asks Telegram for (getUpdates, setWebhook): pinned by issue 17.
ALLOWED_UPDATES = ["message", "callback_query", "stopped_message_generation"]

GROUP_ID = -1001000000001          # an allowed supergroup
OPEN_GROUP = Chat.supergroup(GROUP_ID, "Allowed group")
OTHER_GROUP = Chat.supergroup(-1002000000002, "Strangers' group")   # not allowed
PLAIN_GROUP = Chat.group(-3000000003, "Old-style group")            # a basic group, not allowed by id
FORUM = Chat.supergroup(-1004000000004, "Forum", is_forum=True)

# Usernames with and without '@', in another case than the user's; a numeric
# user id; a numeric chat id.
DEFAULT_ALLOWLIST = f"@ALICE, bob_builder,Ivan_Petrov, {NONAME.id}, {GROUP_ID}, {FORUM.id}"

# TELEGRAM_PACING of most tests: seconds between messages to one private chat,
# to one group, and calls a second overall (0: no limit).
FAST_PACING = "0.05,0.15,0"

# What the bot says in English (src/chat/text.c), for tests that must tell
# one of its answers from another.
TEXT_START = ("Hi! I am a bot that answers with a language model. Just write to me; I remember our "
              "conversation. /new starts a fresh one, /help tells more.")
TEXT_HELP = ("Write a message and I will answer, keeping the context of our conversation. I also understand "
             "voice messages, photos and text files.\n"
             "In groups, mention me or reply to my message.\n\n"
             "/new — forget this conversation and start a fresh one\n"
             "/model — see or change the model that answers in this chat\n"
             "/system — see or set how the model should behave here (/system reset: the default)\n"
             "/retry — ask again for the last answer\n"
             "/usage — the tokens you spent today and this month\n"
             "/image — draw a picture of what you describe\n"
             "/help — this help")
TEXT_NEW_DONE = "Started a new conversation: I have forgotten the previous one."

# Environment variables whose values are secrets. No 8 bytes in a row of any
# secret handed to a process may appear in anything it prints (its stderr,
# stdout, a command's output): every test checks its outputs.
SECRET_VARS = ("TG_BOT_TOKEN", "OPENAI_API_KEY", "PROXY_API_KEY", "WEBHOOK_SECRET", "YANDEX_KEY_SECRET",
               "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
SECRET_PIECE = 8
_handed_secrets = {TOKEN, API_KEY}

_live = set()


def _kill_leftovers():
    for p in list(_live):
        if p.poll() is None:
            p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass


atexit.register(_kill_leftovers)


def _die_with_parent():
    # Linux: the bot gets SIGKILL when the test runner dies, whatever kills it.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def minimal_env(env: dict) -> dict:
    """PATH (+ sanitizer options) and env; a value of None leaves the variable out."""
    out = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            out[k] = os.environ[k]
    for k, v in env.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = str(v)
    _handed_secrets.update(out[k] for k in SECRET_VARS if len(out.get(k, "")) >= SECRET_PIECE)
    return out


def secret_piece_in(text: str) -> Optional[str]:
    """The first line of text holding 8 bytes in a row of a secret handed to the bot, with the piece."""
    for secret in _handed_secrets:
        for i in range(len(secret) - SECRET_PIECE + 1):
            piece = secret[i:i + SECRET_PIECE]
            if piece in text:
                line = next(ln for ln in text.splitlines() if piece in ln)
                return f"{piece!r} in: {line}"
    return None


def run_bin(args: list, env: dict, timeout: float = 20) -> subprocess.CompletedProcess:
    """Runs the binary to completion (CLI tests)."""
    check_binary()
    r = subprocess.run([BIN, *args], env=minimal_env(env), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout, preexec_fn=_die_with_parent)
    leak = secret_piece_in(r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace"))
    if leak:
        raise AssertionError(f"expected no piece of a secret in the output of tgllm {args[0]}; found {leak}")
    return r


def check_binary():
    if not os.access(BIN, os.X_OK):
        raise AssertionError(f"the bot binary {BIN} does not exist or is not executable; "
                             "build it (cmake -B build && cmake --build build) or set TGLLM_BIN")


class BotProcess:
    """One running `tgllm poll`."""

    def __init__(self, env: dict, log_path: Path, args=("poll",), max_files: Optional[int] = None):
        """max_files: the bot's limit on open files (RLIMIT_NOFILE), else the runner's."""
        check_binary()
        self.log_path = log_path
        self._log = open(log_path, "ab")

        def prepare():
            _die_with_parent()
            if max_files:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))
        self.proc = subprocess.Popen([BIN, *args], env=minimal_env(env), stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, preexec_fn=prepare)
        _live.add(self.proc)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """The CPU time the bot has used so far (user + system)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after timeout seconds; returns the exit status."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.proc.kill()
                self.proc.wait(10)
        self._close()
        return self.proc.returncode

    def kill(self) -> int:
        if self.running():
            self.proc.kill()
            self.proc.wait(10)
        self._close()
        return self.proc.returncode

    def _close(self):
        _live.discard(self.proc)
        if not self._log.closed:
            self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""


class BotTestCase(unittest.TestCase):
    """A test with fresh fakes and a temp dir; start_bot() starts the binary."""

    maxDiff = 4000
    # TELEGRAM_PACING for the bots of this test; None leaves it unset (Telegram's limits).
    pacing: Optional[str] = FAST_PACING

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # tests/CMakeLists.txt makes one CTest test of each class named *Test; bases are *TestCase.
        if not cls.__name__.endswith(("Test", "TestCase")):
            raise TypeError(f"{cls.__name__}: name test classes *Test (run by CTest) or *TestCase (bases)")

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="tgllm-e2e-"))
        self.log_path = self.tmp / "bot.stderr"
        self.store = f"sqlite:{self.tmp / 'tgllm.db'}"
        self.addCleanup(self._remove_tmp)
        self.tg = FakeTelegram().start()
        self.addCleanup(self.tg.stop)
        self.llm = FakeOpenAI().start()
        self.addCleanup(self.llm.stop)
        self.bots: list[BotProcess] = []

    def _remove_tmp(self):
        if not os.environ.get("TGLLM_E2E_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def tearDown(self):
        for bot in self.bots:
            bot.stop(timeout=5)
        failed = self._failed()
        log = self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""
        if failed or os.environ.get("TGLLM_E2E_VERBOSE"):
            sys.stderr.write(f"\n===== {self.id()}: bot stderr ({self.log_path}) =====\n")
            sys.stderr.write(_tail(log, 150))
            sys.stderr.write("\n===== Telegram calls (last 60) =====\n" + self.tg.describe() + "\n")
            sys.stderr.write("===== model requests (last 30) =====\n" + self.llm.describe() + "\n")
        # Every test proves the secrets stay out of the logs.
        if not failed:
            self.assertNoSecretIn(log)

    def _failed(self) -> bool:
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        if hasattr(outcome, "errors"):  # Python <= 3.10
            return any(err for _, err in outcome.errors)
        # Python >= 3.11 reports failures to the result as they happen.
        result = outcome.result
        return any(getattr(t, "test_case", t) is self
                   for t, _ in list(getattr(result, "failures", [])) + list(getattr(result, "errors", [])))

    # ---- the bot ---------------------------------------------------------

    def telegram_api_base(self) -> str:
        """The bots' TELEGRAM_API_BASE: the fake Telegram, unless a test puts something in
        between (test_conformance.py: Prism, which checks every call against the Bot API spec)."""
        return self.tg.base_url

    def bot_env(self, **env) -> dict:
        base = {
            "TG_BOT_TOKEN": TOKEN,
            "TG_BOT_CHATS": DEFAULT_ALLOWLIST,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": self.llm.base_url,
            "TELEGRAM_API_BASE": self.telegram_api_base(),
            "STORE": self.store,
            "LOG_LEVEL": "debug",
            "TELEGRAM_PACING": self.pacing,
        }
        base.update(env)
        return base

    def start_bot(self, wait_polling: bool = True, **env) -> BotProcess:
        """Starts `tgllm poll`; by default waits until it long-polls getUpdates."""
        polls_before = len(self.tg.calls_of("getUpdates"))
        bot = BotProcess(self.bot_env(**env), self.log_path)
        self.bots.append(bot)
        self.addCleanup(bot.kill)  # safety net: tearDown stops it gently first
        if wait_polling:
            self.tg.wait_for(lambda: len(self.tg.calls_of("getUpdates")) > polls_before or not bot.running(),
                             15, lambda: f"the bot to call getUpdates; stderr:\n{_tail(bot.log(), 20)}")
            self.assertTrue(bot.running(), f"the bot exited at start with status {bot.proc.returncode}; "
                                           f"stderr:\n{_tail(bot.log(), 20)}")
        return bot

    def handle_update(self, update: dict, env: dict) -> int:
        """Runs `tgllm handle` once with a bare update and the bot's env plus env; its statusCode.
        The run's stderr is in self.last_handle_log (and the test's log)."""
        check_binary()
        proc = subprocess.run([BIN, "handle"], input=json.dumps(update).encode(),
                              env=minimal_env(self.bot_env(**env)), capture_output=True,
                              timeout=40, preexec_fn=_die_with_parent)
        with open(self.log_path, "ab") as f:
            f.write(b"----- handle: " + proc.stdout + b"\n" + proc.stderr)
        self.last_handle_log = proc.stderr.decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 0, self.last_handle_log[-2000:])
        return json.loads(proc.stdout)["statusCode"]

    def restart_bot(self, bot: BotProcess, **env) -> BotProcess:
        code = bot.stop()
        self.assertEqual(code, 0, f"expected the bot to exit 0 on SIGTERM, got {code}")
        return self.start_bot(**env)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def log_lines(self, level: Optional[str] = None) -> list:
        lines = self.log().splitlines()
        if level:
            lines = [ln for ln in lines if f"level={level}" in ln]
        return lines

    # ---- conversations ---------------------------------------------------

    def ask(self, user: User, text: str, timeout: float = 10.0, **kw):
        """user writes text privately; returns the bot's reply (BotMessage)."""
        msg = self.tg.send_private(user, text, **kw)
        return self.wait_reply(msg, timeout)

    def wait_reply(self, msg: dict, timeout: float = 10.0):
        """The bot's first message replying to msg."""
        replies = self.tg.wait_for(lambda: self.tg.replies_to(msg), timeout,
                                   lambda: f"a reply to message {msg['message_id']} ({_short(msg.get('text'))}) in "
                                           f"chat {msg['chat']['id']}; the chat has "
                                           f"{self.tg.texts_in(msg['chat']['id'])!r}")
        return replies[0]

    def wait_messages(self, chat_id: int, count: int, since: int = 0, timeout: float = 10.0) -> list:
        """Waits until the bot has at least `since + count` messages in the chat; returns the new ones."""
        msgs = self.tg.wait_for(lambda: len(self.tg.messages_in(chat_id)) >= since + count
                                and self.tg.messages_in(chat_id), timeout,
                                lambda: f"{count} new bot message(s) in chat {chat_id}; "
                                        f"has {self.tg.texts_in(chat_id)[since:]!r}")
        return msgs[since:]

    def wait_text(self, chat_id: int, needle: str, timeout: float = 10.0, case: bool = False):
        """The bot's first message in the chat containing needle."""
        def find():
            for m in self.tg.messages_in(chat_id):
                if (needle in m.text) if case else (needle.lower() in m.text.lower()):
                    return m
            return None
        return self.tg.wait_for(find, timeout, lambda: f"a bot message containing {needle!r} in chat {chat_id}; "
                                                       f"the chat has {self.tg.texts_in(chat_id)!r}")

    # ---- the update journal ----------------------------------------------

    def journal_state(self, update_id: int) -> Optional[str]:
        """The update's state in the bot's journal: "pending", "done", or None
        when it is not journaled (yet). Reads the SQLite store WAL-safely (a
        read-only connection) while the bot runs; S3 tests override this."""
        path = self.store.split(":", 1)[1]
        if not os.path.exists(path):
            return None
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                row = con.execute("SELECT state FROM updates WHERE update_id = ?", (update_id,)).fetchone()
            finally:
                con.close()
        except sqlite3.OperationalError as e:   # the bot is still creating the store
            self._journal_error = str(e)
            return None
        return row[0] if row else None

    def wait_update_done(self, update_id: int, timeout: float = 10.0):
        """Waits until the bot has marked the update done: its handling has
        ended (answer or notice sent, history stored, or skipped)."""
        self.tg.wait_for(lambda: self.journal_state(update_id) == "done", timeout,
                         lambda: f"update {update_id} to be marked done in the journal; its state is "
                                 f"{self.journal_state(update_id)!r}"
                                 + (f" ({self._journal_error})" if getattr(self, "_journal_error", None) else ""))

    def update_id(self, item: dict) -> int:
        """The update_id of an Update, or of the update a Message was sent in."""
        return item["update_id"] if "update_id" in item else self.tg.update_id_of(item)

    def wait_handled(self, *items: dict, timeout: float = 10.0):
        """Waits until the bot is through with each message (or update): its
        update is done in the journal and, when a job handled it, the job is
        over (a server stores an answer before it sends it: the journal says
        done first). Then a test can assert what did NOT happen."""
        for item in items:
            uid = self.update_id(item)
            self.wait_update_done(uid, timeout)
            self.tg.wait_for(lambda: self._job_over(uid), timeout, f"the job of update {uid} to be over")

    def _job_over(self, update_id: int) -> bool:
        """No job handled the update (the debug log says "handling" when one starts), or the last one is over."""
        log = self.log()
        start = log.rfind(f" update={update_id}: handling")
        return start < 0 or log.find(f" update={update_id}: over", start) >= 0

    # ---- assertions ------------------------------------------------------

    def assertNoSecretIn(self, text: str, where: str = "the bot's stderr"):
        leak = secret_piece_in(text)
        if leak:
            self.fail(f"expected no 8 bytes of a secret (token, keys) in {where}; found {leak}")

    def assertBotRunning(self, bot: BotProcess):
        self.assertTrue(bot.running(), f"expected the bot to keep running; it exited with status "
                                       f"{bot.proc.returncode}; last stderr:\n{_tail(bot.log(), 15)}")

    def assertNoModelRequest(self, needle: str):
        reqs = self.llm.requests_with(needle)
        self.assertEqual(reqs, [], f"expected no model request for {needle!r}; got {len(reqs)}")

    def assertLogged(self, pattern: str, levels=("warn", "error"), what: str = ""):
        """Some stderr line at one of levels matches pattern (regex, case-insensitive)."""
        rx = re.compile(pattern, re.I)
        lines = [ln for ln in self.log().splitlines() if any(f"level={lv}" in ln for lv in levels)]
        if not any(rx.search(ln) for ln in lines):
            self.fail(f"expected a {'/'.join(levels)} log line matching /{pattern}/ {what}; "
                      f"the {'/'.join(levels)} lines are:\n" + _tail("\n".join(lines), 20))

    def store_contains(self, needle: str) -> bool:
        """Whether any text cell of any table of the SQLite store holds needle
        (schema-agnostic). Read with the bot stopped, or WAL-safe while it runs."""
        path = self.store.split(":", 1)[1]
        if not os.path.exists(path):
            return False
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for t in tables:
                for row in con.execute(f'SELECT * FROM "{t}"'):
                    for cell in row:
                        if isinstance(cell, bytes):
                            cell = cell.decode("utf-8", "replace")
                        if isinstance(cell, str) and needle in cell:
                            return True
        finally:
            con.close()
        return False


def _tail(text: str, n: int) -> str:
    lines = text.splitlines()
    return "\n".join(lines[-n:]) + ("\n" if lines else "(empty)\n")


def _short(text, n: int = 40) -> str:
    if text is None:
        return "no text"
    return repr(text if len(text) <= n else text[:n] + "...")


def estimate_tokens(contents: list) -> float:
    """The contract's pessimistic estimate: about 4 + UTF-8 bytes / 3 per message."""
    return sum(4 + len(c.encode("utf-8")) / 3 for c in contents)


def main():
    unittest.main(verbosity=2)
