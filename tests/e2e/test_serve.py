"""`tgllm serve`: the webhook server. Telegram POSTs each Update to
WEBHOOK_PATH; the test plays Telegram's part with plain HTTP(S) requests to
127.0.0.1. Answers, status codes, the secret token, limits, slow clients,
redelivery, journal resumption, shutdown, concurrency and TLS."""

import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
from typing import Optional

from fake_openai import Reply
from harness import ALICE, BOB, IVAN, MALLORY, BotProcess, BotTestCase, Chat, User, _tail, main

SECRET = "s3rve-Webhook_Secret-7731"
LISTENING = "serve: listening on"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeTestCase(BotTestCase):

    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.tls_ctx: Optional[ssl.SSLContext] = None

    def start_serve(self, max_files: Optional[int] = None, **env) -> BotProcess:
        """Starts `tgllm serve` on 127.0.0.1:self.port; waits for its "listening" log line."""
        env.setdefault("LISTEN", f"127.0.0.1:{self.port}")
        bot = BotProcess(self.bot_env(**env), self.log_path, args=("serve",), max_files=max_files)
        self.bots.append(bot)
        self.addCleanup(bot.kill)
        seen_before = self.log().count(LISTENING)
        self.tg.wait_for(lambda: self.log().count(LISTENING) > seen_before or not bot.running(), 15,
                         f"the log line {LISTENING!r}")
        self.assertTrue(bot.running(), f"`tgllm serve` exited at start with status {bot.proc.returncode}; "
                                       f"stderr:\n{_tail(bot.log(), 20)}")
        return bot

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        if self.tls_ctx:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=self.tls_ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, headers: Optional[dict] = None,
                timeout: float = 10.0) -> tuple:
        """(status, body) of one request on a fresh connection."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body, ensure_ascii=False)
        if isinstance(body, str):
            body = body.encode("utf-8")
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        c = self.connection(timeout)
        try:
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def post_update(self, update: dict, path: str = "/", secret: Optional[str] = None) -> int:
        """POSTs an Update as Telegram does; returns the HTTP status."""
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        status, _ = self.request("POST", path, update, headers)
        return status

    def new_update(self, user: User, text: str):
        """(Update, Message): user writes privately (delivered by webhook, not getUpdates)."""
        msg = self.tg.message(Chat.private(user), user, text)
        return self.tg.update("message", msg), msg

    def barrier(self, user: User, text: str, secret: Optional[str] = None):
        """user writes again and is answered. One chat is handled in order, so by
        then every earlier update of that chat is through."""
        update, msg = self.new_update(user, text)
        self.assertEqual(self.post_update(update, secret=secret), 200)
        self.wait_reply(msg)
        self.wait_handled(update)

    def assertNotJournaled(self, update: dict, what: str):
        """The bot journals an update before it answers the POST: one it did not
        take is not in the journal once the POST was answered."""
        self.assertIsNone(self.journal_state(update["update_id"]), f"expected {what} not to be taken")

    def wait_stopping(self):
        """Waits until the server says it is stopping (or no longer answers)."""
        def stopping():
            try:
                status, body = self.request("GET", "/healthz", timeout=2)
            except (ConnectionError, http.client.HTTPException, socket.timeout, OSError):
                return True
            return status == 200 and body.strip() == b"stopping"
        self.tg.wait_for(stopping, 10, "/healthz to answer \"stopping\" after SIGTERM")

    def assertServing(self, bot: BotProcess, what: str):
        """The server is alive: healthz answers and a fresh update is answered."""
        self.assertBotRunning(bot)
        status, _ = self.request("GET", "/healthz")
        self.assertEqual(status, 200, f"expected /healthz to answer 200 {what}, got {status}")
        update, msg = self.new_update(IVAN, f"Still there? ({what})")
        self.assertEqual(self.post_update(update), 200)
        self.wait_reply(msg)
        self.wait_handled(update)


class ServeBasicsTest(ServeTestCase):

    def test_update_posted_to_the_webhook_is_answered(self):
        bot = self.start_serve()
        self.assertEqual(self.tg.calls[0].method, "getMe", f"expected getMe first, got {self.tg.calls[0].method}")
        update, msg = self.new_update(ALICE, "Hello over the webhook")
        self.assertEqual(self.post_update(update), 200)
        reply = self.wait_reply(msg)
        self.assertEqual(reply.text, "Echo: Hello over the webhook")
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: Hello over the webhook"], "expected one answer")
        self.assertEqual(self.tg.calls_of("getUpdates"), [], "expected no getUpdates from the webhook server")
        self.assertBotRunning(bot)

    def test_post_is_acknowledged_at_once_while_the_model_works(self):
        self.start_serve()
        self.llm.enqueue(Reply(delay=2.0))
        update, msg = self.new_update(ALICE, "Take your time")
        started = time.monotonic()
        self.assertEqual(self.post_update(update), 200)
        took = time.monotonic() - started
        self.assertLess(took, 1.0, f"expected 200 at once (before the answer), took {took:.2f} s")
        self.assertEqual(self.wait_reply(msg, timeout=15).text, "Echo: Take your time")

    def test_several_updates_over_one_keep_alive_connection(self):
        # Telegram keeps its connections to a webhook open between updates.
        self.start_serve()
        c = self.connection()
        self.addCleanup(c.close)
        msgs = []
        for user in (ALICE, BOB, IVAN):
            update, msg = self.new_update(user, f"Kept alive for {user.first_name}")
            c.request("POST", "/", body=json.dumps(update).encode(), headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200, f"expected 200 for the update of {user.first_name} on a kept connection")
            msgs.append(msg)
        for msg in msgs:
            self.wait_reply(msg)

    def test_healthz_is_200(self):
        self.start_serve()
        status, _ = self.request("GET", "/healthz")
        self.assertEqual(status, 200)

    def test_wrong_path_is_404_and_wrong_method_is_405(self):
        bot = self.start_serve()
        update, _ = self.new_update(ALICE, "Posted to the wrong place")
        for method, path, want in (("POST", "/elsewhere", 404), ("POST", "/bot/webhook", 404),
                                   ("GET", "/nothing-here", 404), ("GET", "/", 405), ("PUT", "/", 405)):
            with self.subTest(method=method, path=path):
                status, _ = self.request(method, path, update if method != "GET" else None)
                self.assertEqual(status, want, f"expected {want} for {method} {path}, got {status}")
        self.assertNotJournaled(update, "an update posted to a wrong path or with a wrong method")
        self.assertServing(bot, "after wrong paths and methods")
        self.assertNoModelRequest("Posted to the wrong place")
        self.assertEqual(self.tg.calls_of("sendMessage", chat_id=ALICE.id), [])

    def test_body_that_is_not_an_update_is_400(self):
        bot = self.start_serve()
        bodies = {
            "not JSON": b"hello",
            "truncated JSON": b'{"update_id": 1, "message": {',
            "empty body": b"",
            "a JSON array": b"[]",
            "no update_id": json.dumps({"message": {"text": "hi"}}).encode(),
            "string update_id": json.dumps({"update_id": "900", "message": {"text": "hi"}}).encode(),
            "fractional update_id": b'{"update_id": 1.5}',
            "binary": bytes(range(256)),
        }
        for what, body in bodies.items():
            with self.subTest(body=what):
                status, _ = self.request("POST", "/", body)
                self.assertEqual(status, 400, f"expected 400 for {what}, got {status}")
        self.assertServing(bot, "after bad bodies")
        self.assertEqual([r.last_content for r in self.llm.snapshot()], ["Still there? (after bad bodies)"],
                         "expected no model request for bad bodies")

    def test_custom_webhook_path(self):
        self.start_serve(WEBHOOK_PATH="/tg/hook-1234")
        update, msg = self.new_update(ALICE, "Custom path")
        self.assertEqual(self.post_update(update, path="/"), 404, "expected 404 on / with WEBHOOK_PATH set")
        self.assertEqual(self.post_update(update, path="/tg/hook-1234"), 200)
        self.assertEqual(self.wait_reply(msg).text, "Echo: Custom path")

    def test_query_string_does_not_change_the_path(self):
        self.start_serve(WEBHOOK_PATH="/hook")
        update, msg = self.new_update(ALICE, "With a query")
        self.assertEqual(self.post_update(update, path="/hook?source=telegram"), 200)
        self.wait_reply(msg)

    def test_stranger_gets_200_and_no_model_request(self):
        self.start_serve()
        update, _ = self.new_update(MALLORY, "Let me in")
        self.assertEqual(self.post_update(update), 200, "expected 200, or Telegram redelivers forever")
        self.wait_handled(update)
        self.assertEqual(self.llm.snapshot(), [], "expected no model request for a user not on the allowlist")

    def test_redelivered_update_is_acknowledged_and_not_answered_again(self):
        self.start_serve()
        update, msg = self.new_update(ALICE, "Say it once")
        self.assertEqual(self.post_update(update), 200)
        self.wait_reply(msg)
        self.assertEqual(self.post_update(update), 200, "expected 200 for a redelivered update")
        self.assertEqual(self.post_update(update), 200, "expected 200 for a redelivered update")
        self.barrier(ALICE, "And now this")
        self.assertEqual(len(self.tg.replies_to(msg)), 1,
                         f"expected one answer; the chat has {self.tg.texts_in(ALICE.id)!r}")
        self.assertEqual(len(self.llm.requests_with("Say it once")), 1, "expected the model asked once")

    def test_redelivery_while_the_first_is_still_running_is_not_answered_twice(self):
        self.start_serve()
        self.llm.enqueue(Reply(delay=2.0))
        update, msg = self.new_update(ALICE, "Patience")
        self.assertEqual(self.post_update(update), 200)
        self.llm.wait_requests(1)
        self.assertEqual(self.post_update(update), 200)
        self.wait_reply(msg, timeout=10)
        self.barrier(ALICE, "And now this")
        self.assertEqual(len(self.tg.replies_to(msg)), 1,
                         f"expected one answer; the chat has {self.tg.texts_in(ALICE.id)!r}")
        self.assertEqual(len(self.llm.requests_with("Patience")), 1, "expected the model asked once")

    def test_conversation_history_is_kept(self):
        self.start_serve()
        for text in ("My name is Alice", "What is my name"):
            update, msg = self.new_update(ALICE, text)
            self.assertEqual(self.post_update(update), 200)
            self.wait_reply(msg)
        self.assertEqual(self.llm.requests[-1].messages, [
            {"role": "user", "content": "My name is Alice"},
            {"role": "assistant", "content": "Echo: My name is Alice"},
            {"role": "user", "content": "What is my name"},
        ])


class ServeSecretTest(ServeTestCase):

    def test_missing_or_wrong_secret_is_401_and_nothing_is_processed(self):
        bot = self.start_serve(WEBHOOK_SECRET=SECRET)
        update, msg = self.new_update(ALICE, "Forged update")
        for what, secret in (("no header", None), ("wrong secret", "wrong-secret"), ("empty", ""),
                             ("secret plus a char", SECRET + "x"), ("secret cut short", SECRET[:-1]),
                             ("other case", SECRET.upper())):
            with self.subTest(case=what):
                self.assertEqual(self.post_update(update, secret=secret), 401, f"expected 401 for {what}")
        self.assertNotJournaled(update, "an update without the right secret")
        self.assertEqual(self.llm.snapshot(), [], "expected no model request without the right secret")
        self.assertEqual(self.tg.calls_of("sendMessage"), [], "expected no message without the right secret")
        self.assertEqual(self.tg.calls_of("sendChatAction"), [], "expected no typing without the right secret")
        # The same update with the secret: it was not marked as handled by the refused attempts.
        self.assertEqual(self.post_update(update, secret=SECRET), 200)
        self.assertEqual(self.wait_reply(msg).text, "Echo: Forged update")
        status, _ = self.request("GET", "/healthz")
        self.assertEqual(status, 200, "expected /healthz to need no secret (load balancers don't have it)")
        bot.stop()
        self.assertNotIn(SECRET, self.log(), "expected the webhook secret never to appear in the log")


class ServeLimitsTest(ServeTestCase):

    def raw_exchange(self, data_parts: list, timeout: float = 10.0) -> Optional[bytes]:
        """Sends raw bytes; returns what the server answered (b"" if it closed without a word,
        None if it reset the connection while we were still sending)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            try:
                for part in data_parts:
                    s.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                pass
            got = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                    if b"\r\n\r\n" in got:
                        break
            except ConnectionResetError:
                return got or None
            return got
        finally:
            s.close()

    def assertRejected(self, answer: Optional[bytes], what: str):
        if answer:
            status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
            parts = status_line.split()
            self.assertTrue(len(parts) >= 2 and parts[1].isdigit() and 400 <= int(parts[1]) < 500,
                            f"expected a 4xx (or a closed connection) for {what}, got {status_line!r}")
        # else: the connection was closed or reset: a rejection too.

    def test_body_over_1_mb_is_rejected_and_the_server_keeps_serving(self):
        bot = self.start_serve()
        big = json.dumps({"update_id": 1, "message": {"message_id": 1, "date": 1, "chat": {"id": ALICE.id,
                          "type": "private"}, "from": ALICE.to_json(), "text": "BIG " + "x" * (1100 * 1024)}})
        head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(big)}\r\n\r\n").encode()
        self.assertRejected(self.raw_exchange([head, big.encode()]), "a 1.1 MB body")
        body = big.encode()
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                           for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
        head = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        self.assertRejected(self.raw_exchange([head, chunked]), "a 1.1 MB chunked body")
        self.assertServing(bot, "after a body over 1 MB")
        self.assertNoModelRequest("BIG ")

    def test_body_just_under_1_mb_is_accepted(self):
        self.start_serve()
        update, msg = self.new_update(ALICE, "Padded")
        body = json.dumps(update).encode()
        body = body[:-1] + b" " * (1000 * 1000 - len(body)) + b"}"   # ~0.95 MiB of JSON whitespace
        status, _ = self.request("POST", "/", body)
        self.assertEqual(status, 200, f"expected a {len(body)}-byte update accepted, got {status}")
        self.wait_reply(msg)

    def test_headers_over_16_kb_are_rejected_and_the_server_keeps_serving(self):
        bot = self.start_serve()
        update, msg = self.new_update(ALICE, "Huge headers")
        body = json.dumps(update).encode()
        head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"X-Padding: {'a' * (20 * 1024)}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.assertRejected(self.raw_exchange([head, body]), "20 KB of headers")
        many = "".join(f"X-Header-{i}: {'b' * 100}\r\n" for i in range(200))
        head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{many}"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.assertRejected(self.raw_exchange([head, body]), "200 headers of 100 bytes")
        self.assertNotJournaled(update, "the update with huge headers")
        self.assertServing(bot, "after huge headers")
        self.assertEqual(self.tg.replies_to(msg), [], "expected the update with huge headers not answered")

    def test_silent_client_does_not_stall_the_server_and_is_cut_off(self):
        bot = self.start_serve()
        idle = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        self.addCleanup(idle.close)
        half = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        self.addCleanup(half.close)
        half.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{\"update_id\":")
        opened = time.monotonic()
        # Meanwhile others are served.
        update, msg = self.new_update(ALICE, "Anyone home")
        started = time.monotonic()
        self.assertEqual(self.post_update(update), 200)
        self.assertLess(time.monotonic() - started, 2.0, "expected the server not to wait for the silent clients")
        self.wait_reply(msg)
        status, _ = self.request("GET", "/healthz")
        self.assertEqual(status, 200)
        # The silent ones are cut after ~5 s.
        for name, s in (("a client that sent nothing", idle), ("a client that stopped mid-body", half)):
            try:
                data = s.recv(4096)
                while data and not data.startswith(b"HTTP/1.1 4") and not data.startswith(b"HTTP/1.0 4"):
                    data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            except socket.timeout:
                self.fail(f"expected {name} cut off after ~5 s; still open after "
                          f"{time.monotonic() - opened:.1f} s")
            waited = time.monotonic() - opened
            self.assertLess(waited, 10.0, f"expected {name} cut off after ~5 s, took {waited:.1f} s")
        self.assertGreater(time.monotonic() - opened, 3.0, "expected idle connections to be given some seconds")
        self.assertServing(bot, "after silent clients")


    def test_trickling_client_is_cut_off_at_the_request_deadline(self):
        """A byte now and then does not keep a connection: the whole request has a deadline."""
        bot = self.start_serve()
        s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        self.addCleanup(s.close)
        request = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n" + b"x" * 500
        opened = time.monotonic()
        for byte in request:
            if time.monotonic() - opened > 12:
                break
            try:
                s.sendall(bytes([byte]))
                got = s.recv(4096)
            except socket.timeout:
                continue                      # still open: a second later, the next byte
            except OSError:
                break
            if not got or got.startswith(b"HTTP/1.1 4"):
                break
        waited = time.monotonic() - opened
        self.assertLess(waited, 9.0, f"expected a client sending a byte a second cut off after ~5 s, "
                                     f"still open after {waited:.1f} s")
        self.assertServing(bot, "after a trickling client")

    def test_clients_holding_every_file_descriptor_neither_spin_the_server_nor_lock_telegram_out(self):
        """200 connections trickling bytes against a limit of 128 open files: the server
        keeps a connection cap below the limit, does not spin on failing accepts, logs
        no flood, and answers a real update meanwhile."""
        bot = self.start_serve(max_files=128)
        log_before = len(self.log())
        cpu_before = bot.cpu_seconds()
        attackers = []
        self.addCleanup(lambda: [a.close() for a in attackers])
        for _ in range(200):
            a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            a.setblocking(False)
            a.connect_ex(("127.0.0.1", self.port))
            attackers.append(a)
        started = time.monotonic()
        update, msg = self.new_update(ALICE, "Through the crowd")
        posted = None
        while time.monotonic() - started < 6:
            for a in attackers:
                try:
                    a.send(b"P")
                except OSError:
                    pass
            if posted is None and time.monotonic() - started > 1:
                t = time.monotonic()
                posted = self.post_update(update)
                self.assertLess(time.monotonic() - t, 4.0, "expected Telegram's POST answered promptly "
                                                           "while 200 clients hold connections")
            time.sleep(0.5)    # the attackers' pace, not a wait for the bot
        self.assertEqual(posted, 200)
        self.wait_reply(msg)
        cpu = bot.cpu_seconds() - cpu_before
        self.assertLess(cpu, 2.5, f"expected the server idle while clients trickle; it used {cpu:.1f} s "
                                  "of CPU in 6 s (spinning on accept?)")
        logged = [ln for ln in self.log()[log_before:].splitlines() if "level=debug" not in ln]
        self.assertLess(len(logged), 20, f"expected a few log lines, got {len(logged)}: "
                                         f"{logged[:3]}…{logged[-3:]}")
        for a in attackers:
            a.close()
        self.assertServing(bot, "after 200 trickling clients")


class ServeFloodTest(ServeTestCase):
    """Without WEBHOOK_SECRET anyone can post updates: a flood for one chat is
    bounded (20 waiting), the chat is told once, the rest journaled as done."""

    BUSY = "I am still answering your earlier messages"

    def test_a_flood_for_one_chat_is_bounded_and_the_chat_told_once(self):
        self.start_serve(LISTEN=f"127.0.0.1:{self.port}")
        self.assertIn("whatever forwards to 127.0.0.1 must check who posts", self.log(),
                      "expected a note that the server has no secret (on loopback: not a warning)")
        self.llm.enqueue(Reply(delay=2.0))   # the first answer holds the queue while the flood comes
        updates = []
        for i in range(45):
            update, msg = self.new_update(ALICE, f"Flood {i}")
            self.assertEqual(self.post_update(update), 200, f"expected update {i} taken (journaled)")
            updates.append((update, msg))
        self.wait_handled(*[u for u, _ in updates], timeout=30)
        busy = [t for t in self.tg.texts_in(ALICE.id) if t.startswith(self.BUSY)]
        self.assertEqual(len(busy), 1, f"expected the chat told once that it is busy; got {len(busy)}")
        asked = self.llm.requests_with("Flood ")
        self.assertEqual(len(asked), 20, f"expected the model asked for the 20 updates the chat may queue, "
                                         f"not {len(asked)}")
        answered = [i for i, (_, m) in enumerate(updates) if self.tg.replies_to(m)
                    and not self.tg.replies_to(m)[0].text.startswith(self.BUSY)]
        self.assertEqual(answered, list(range(20)), "expected the first 20 answered, in order")
        # The chat works again once its queue has emptied.
        self.barrier(ALICE, "After the flood")

    def test_no_secret_beyond_loopback_is_a_loud_warning(self):
        self.start_serve(LISTEN=f"0.0.0.0:{self.port}")
        self.assertIn("WARNING: WEBHOOK_SECRET is not set and 0.0.0.0 is reachable from other machines",
                      self.log())


class ServeLifecycleTest(ServeTestCase):

    def test_sigterm_stops_accepting_finishes_the_running_reply_and_exits_0(self):
        bot = self.start_serve()
        self.llm.enqueue(Reply(delay=3.0))
        update, msg = self.new_update(ALICE, "Answer before you go")
        self.assertEqual(self.post_update(update), 200)
        self.llm.wait_requests(1)
        bot.signal(signal.SIGTERM)
        self.wait_stopping()
        later, later_msg = self.new_update(BOB, "Too late")
        try:
            status = self.post_update(later)
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
            status = None
        self.assertIn(status, (None, 503), f"expected no new update taken after SIGTERM, got {status}")
        reply = self.wait_reply(msg, timeout=10)
        self.assertEqual(reply.text, "Echo: Answer before you go")
        code = bot.wait(10)
        self.assertEqual(code, 0, f"expected exit 0 within 10 s of SIGTERM, got {code}")
        self.assertEqual(self.tg.replies_to(later_msg), [], "expected the update refused after SIGTERM unanswered")

    def test_sigterm_with_a_reply_longer_than_10_s_exits_0_and_the_update_resumes_at_the_next_start(self):
        bot = self.start_serve()
        self.llm.enqueue(Reply(delay=60.0))
        update, msg = self.new_update(ALICE, "A very slow answer")
        self.assertEqual(self.post_update(update), 200)
        self.llm.wait_requests(1)
        stopped = time.monotonic()
        bot.signal(signal.SIGTERM)
        code = bot.wait(15)
        took = time.monotonic() - stopped
        self.assertIsNotNone(code, "expected serve to exit within ~10 s of SIGTERM with a reply still running")
        self.assertEqual(code, 0, f"expected exit 0 after the 10 s drain, got {code}")
        self.assertLessEqual(took, 12.0, f"expected the drain to last at most ~10 s, took {took:.1f} s")
        self.start_serve()
        self.assertEqual(self.wait_reply(msg, timeout=15).text, "Echo: A very slow answer",
                         "expected the unfinished update answered after the next start")

    def test_journaled_update_is_answered_after_a_crash(self):
        bot = self.start_serve()
        self.llm.enqueue(Reply(delay=30.0))
        update, msg = self.new_update(ALICE, "Survive a crash")
        self.assertEqual(self.post_update(update), 200)
        self.llm.wait_requests(1)
        bot.kill()
        self.start_serve()
        reply = self.wait_reply(msg, timeout=15)
        self.assertEqual(reply.text, "Echo: Survive a crash")
        self.barrier(ALICE, "After the crash")
        self.assertEqual(len(self.tg.replies_to(msg)), 1, "expected exactly one answer after the restart")
        # A redelivery by Telegram after the restart is not answered again.
        self.assertEqual(self.post_update(update), 200)
        self.barrier(ALICE, "After the redelivery")
        self.assertEqual(len(self.tg.replies_to(msg)), 1, "expected no second answer to the redelivered update")

    def test_port_in_use_fails_at_start(self):
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", self.port))
        blocker.listen(1)
        bot = BotProcess(self.bot_env(LISTEN=f"127.0.0.1:{self.port}"), self.log_path, args=("serve",))
        self.bots.append(bot)
        self.addCleanup(bot.kill)
        code = bot.wait(15)
        self.assertIsNotNone(code, "expected serve to exit when its port is taken")
        self.assertNotEqual(code, 0, "expected a non-zero exit when the port is taken")
        self.assertLogged(rf"{self.port}", levels=("error",), what="naming the port it could not listen on")

    def test_concurrent_updates_for_different_chats_are_answered_concurrently(self):
        self.start_serve()
        self.llm.enqueue(Reply(delay=2.5), Reply(delay=2.5), Reply(delay=2.5))
        pairs = [self.new_update(u, f"Concurrent question from {u.first_name}") for u in (ALICE, BOB, IVAN)]
        started = time.monotonic()
        for update, _ in pairs:
            self.assertEqual(self.post_update(update), 200)
        for _, msg in pairs:
            self.wait_reply(msg, timeout=15)
        took = time.monotonic() - started
        self.assertGreaterEqual(self.llm.max_in_flight, 3,
                                f"expected the three model requests in flight at once, max was "
                                f"{self.llm.max_in_flight}")
        self.assertLess(took, 5.0, f"expected three 2.5 s answers in parallel (~2.5 s), took {took:.1f} s")


class ServeTlsTest(ServeTestCase):

    def make_cert(self):
        if not shutil.which("openssl"):
            self.skipTest("openssl is not installed: no self-signed certificate for the TLS tests")
        cert, key = self.tmp / "cert.pem", self.tmp / "key.pem"
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                            "-days", "1", "-keyout", str(key), "-out", str(cert)],
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            self.skipTest(f"openssl could not make a certificate: {r.stderr.decode(errors='replace')[-300:]}")
        return cert, key

    def test_https_with_a_self_signed_certificate(self):
        cert, key = self.make_cert()
        bot = self.start_serve(TLS_CERT=cert, TLS_KEY=key, WEBHOOK_SECRET=SECRET)
        self.assertLogged(r"listening on https://", levels=("info",), what="saying it serves HTTPS")
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False  # CN=127.0.0.1 without a subjectAltName; the chain is still verified
        self.tls_ctx = ctx
        status, _ = self.request("GET", "/healthz")
        self.assertEqual(status, 200)
        update, msg = self.new_update(ALICE, "Over TLS")
        self.assertEqual(self.post_update(update, secret="wrong"), 401)
        self.assertEqual(self.post_update(update, secret=SECRET), 200)
        self.assertEqual(self.wait_reply(msg).text, "Echo: Over TLS")
        # Plain HTTP to the TLS port gets no answer to act on.
        self.tls_ctx = None
        later, later_msg = self.new_update(BOB, "Plain text to a TLS port")
        try:
            status = self.post_update(later)
        except (ConnectionError, http.client.HTTPException, socket.timeout, OSError):
            status = None
        self.assertNotEqual(status, 200, "expected plain HTTP not to be accepted on the TLS port")
        self.assertNotJournaled(later, "an update sent in plain HTTP to the TLS port")
        self.tls_ctx = ctx
        self.barrier(BOB, "Over TLS again", secret=SECRET)
        self.assertEqual(self.tg.replies_to(later_msg), [])
        self.assertBotRunning(bot)
        code = bot.stop()
        self.assertEqual(code, 0, f"expected exit 0 on SIGTERM, got {code}")
        self.assertNotIn(SECRET, self.log(), "expected the webhook secret never to appear in the log")

    def test_unusable_certificate_fails_at_start(self):
        bad = self.tmp / "bad.pem"
        bad.write_text("not a certificate\n")
        bot = BotProcess(self.bot_env(LISTEN=f"127.0.0.1:{self.port}", TLS_CERT=bad, TLS_KEY=bad), self.log_path,
                         args=("serve",))
        self.bots.append(bot)
        self.addCleanup(bot.kill)
        code = bot.wait(15)
        self.assertIsNotNone(code, "expected serve to exit with an unusable TLS_CERT")
        self.assertNotEqual(code, 0)
        self.assertLogged(r"TLS_CERT", levels=("error",), what="naming TLS_CERT")


if __name__ == "__main__":
    main()
