"""Conformance: the bot's Bot API calls and its chat-completion requests,
checked by Prism 5.16 (a third-party OpenAPI validator) against the official
specs (tests/e2e/prism.py says how, and where Prism and the specs come from).

BotApiConformanceTest puts `prism proxy` (Bot API 10.1 spec, --errors)
between the bot and the fake Telegram and runs real conversations that make
the bot use every Bot API method it calls: getMe, getWebhookInfo,
getUpdates, deleteWebhook, setWebhook (multipart, with a certificate),
getMyCommands, setMyCommands, sendMessage (entities, reply_parameters,
message_thread_id, an inline keyboard), sendMessageDraft (entities,
can_stop), sendChatAction, editMessageText (with and without reply_markup)
and answerCallbackQuery, the Stop flows (stopped_message_generation and the
Stop button) included; in poll, serve and handle, with the webhook commands
and doctor, an answer in several parts and one sent again as plain text,
a photo (getFile; the download itself is no Bot API method) and a picture
drawn (sendPhoto, multipart). Every call Prism refuses (422: a parameter name,
type or required parameter the spec does not allow; 404: a method it does
not know) fails the test, naming the call and what Prism said. When every
test of the class has run and passed, every Bot API method named in src/
must have been through Prism at least once.

The spec is Bot API 10.1; the bot also sends one field of Bot API 10.3,
sendMessageDraft's can_stop (Boolean). Prism rejects unknown parameters,
so prism.BOT_API_ADDITIONS adds exactly that field to the spec; everything
else is validated as published.

ChatCompletionConformanceTest runs conversations (system prompt, history,
a model chosen per chat, streaming with stream_options) and `tgllm doctor`
against the fake model, then sends every request it recorded, byte for
byte, to `prism mock` of the official OpenAI spec (no SSE there, so it
checks the request, not the stream): any answer but 2xx fails. The
model-list GETs go the same way.

Without ../shared/peers and ../shared/specs (a fresh clone) both classes
are skipped; with them, a Prism that cannot be installed or started skips
them, except with CI=true, where it fails them.
"""

import collections
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

import prism
from fake_openai import answer, streamed
from fake_telegram import Chat
from harness import ALICE, BOB, FORUM, IVAN, TOKEN, BotProcess, BotTestCase, main, run_bin
from prism import free_port

MODELS = "gpt-4o-mini, gpt-4o, o3-mini"
HOOK = "https://bot.example.com/telegram/hook"
SECRET = "conformance-Secret_0042"
CERT = ("-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIHRlc3RzMAoGCCqGSM49BAMC\n"
        "-----END CERTIFICATE-----\n")
# An answer with formatting of many kinds: the drafts and the final message carry entities.
FORMATTED = ["**Bold** and _italic_, ", "`code`, a [link](https://example.com/a?b=c) ", "and ~~gone~~.\n\n",
             "```python\nprint('hi')\n```\n", "> quoted\n\n", "- one\n- two\n"]
SLOW = [f"word{i} " for i in range(40)]  # 8 s unless stopped
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(range(256)) + b"\xff\xd9"


def methods_in_source() -> dict:
    """Bot API method names (those of the spec) that src/ names, with a file naming each; not in
    comments nor compared with strcmp (a method's kind), and not in lib/metrics.c, which only
    lists names for its counters: it calls nothing."""
    spec = json.loads((prism.SPECS / "telegram" / "api.json").read_text())["methods"]
    found = {}
    for path in sorted((prism.REPO / "src").rglob("*.c")):
        if path.name == "metrics.c":
            continue
        code = re.sub(r"/\*.*?\*/|^\s*//[^\n]*|\bstrn?cmp\s*\([^()]*\)", "", path.read_text("utf-8", "replace"),
                      flags=re.S | re.M)
        for name in re.findall(r'"([a-z]+[A-Z][A-Za-z]*)"', code):
            if name in spec:
                found.setdefault(name, str(path.relative_to(prism.REPO)))
    return found


def remove_workdir(workdir: Path):
    """The class's folder (the spec the proxy loads, Prism's logs); TGLLM_E2E_KEEP=1 keeps it."""
    if os.environ.get("TGLLM_E2E_KEEP"):
        sys.stderr.write(f"\nPrism's spec and logs kept in {workdir}\n")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


class BotApiConformanceTest(BotTestCase):
    """Every Bot API call through `prism proxy` (one Prism for the class, each test with its own fake)."""

    @classmethod
    def setUpClass(cls):
        cls.workdir = Path(tempfile.mkdtemp(prefix="tgllm-prism-"))
        try:
            cls.proxy = prism.TelegramProxy(cls.workdir)
        except BaseException:
            shutil.rmtree(cls.workdir, ignore_errors=True)
            raise
        cls.accepted = collections.Counter()   # method -> calls Prism let through, over the class
        cls.ran = set()
        cls.failed = False

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        remove_workdir(cls.workdir)
        every = set(unittest.TestLoader().getTestCaseNames(cls))
        if cls.ran != every or cls.failed:
            return  # one test alone, or a failure: the coverage would say nothing more
        missing = {m: f for m, f in methods_in_source().items() if not cls.accepted[m]}
        if missing:
            raise AssertionError("expected every Bot API method the bot calls checked by Prism; no test made "
                                 "these calls: " + ", ".join(f"{m} ({f})" for m, f in sorted(missing.items()))
                                 + ". Add a conversation that makes them to test_conformance.py")

    def setUp(self):
        super().setUp()
        self.ran.add(self._testMethodName)
        self.proxy.upstream = self.tg.base_url
        self.proxy.take()

    def telegram_api_base(self) -> str:
        return self.proxy.base_url

    def tearDown(self):
        super().tearDown()  # stops the bots: every call is in
        calls = self.proxy.take()
        refused = [c for c in calls if c.wrong]
        for c in calls:
            if not c.wrong:
                self.accepted[c.method] += 1
        if refused or self._failed():
            type(self).failed = True
        if refused:
            first = {}  # one example of each distinct violation
            for c in refused:
                first.setdefault((c.method, c.violations()), c)
            self.fail(f"Prism (or the test, for names in form bodies) refused {len(refused)} of the bot's "
                      f"{len(calls)} Bot API calls (spec: Bot API 10.1 + {prism.BOT_API_ADDITIONS}); "
                      f"each distinct violation once:\n" + "\n".join("  " + c.describe(TOKEN) for c in first.values()))

    # ---- helpers ---------------------------------------------------------

    def calls_with(self, method: str, *params: str) -> list:
        """The calls of method that reached the fake (so Prism let them through) carrying every param."""
        return [c for c in self.tg.calls_of(method) if all(p in c.params for p in params)]

    def assertCalled(self, method: str, *params: str):
        self.assertTrue(self.calls_with(method, *params),
                        f"expected a {method} call with {', '.join(params) or 'any parameters'} through Prism; "
                        f"the calls:\n{self.tg.describe()}")

    def press(self, user, message, data, chat=None) -> dict:
        update = self.tg.press(user, message, data, chat)
        self.tg.push(update)
        self.wait_update_done(update["update_id"])
        return update

    def cli(self, *args, **env):
        r = run_bin(list(args), self.bot_env(**env), timeout=30)
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"----- tgllm {' '.join(args)}: exit {r.returncode}\n{out}")
        self.assertEqual(r.returncode, 0, f"tgllm {' '.join(args)} failed:\n{out}")
        return out

    # ---- conversations ---------------------------------------------------

    def test_a_private_conversation_with_formatting_drafts_and_the_menu(self):
        self.start_bot(SYSTEM_PROMPT="You answer briefly.")
        self.tg.wait_for(lambda: len(self.tg.calls_of("setMyCommands", ok=True)) == 2, 10,
                         "the menu set in English and Russian")
        self.ask(ALICE, "/start")
        self.llm.on_message_containing("Format something", streamed(FORMATTED, chunk_delay=0.15))
        reply = self.ask(ALICE, "Format something for me")
        self.assertTrue(reply.entities, f"expected a formatted answer: {reply.params}")
        self.ask(ALICE, "/help")
        self.ask(IVAN, "Привет! Как дела?")
        # An answer over 4096 characters: several messages.
        self.llm.on_message_containing("Write a lot", answer("Lorem ipsum **dolor** sit amet. " * 200))
        before = len(self.tg.messages_in(ALICE.id))
        self.wait_handled(self.tg.send_private(ALICE, "Write a lot"))
        # Stored (done) before it is sent: the parts follow.
        self.tg.wait_for(lambda: len(self.tg.messages_in(ALICE.id)) - before >= 2, 10, "the answer in parts")
        # Formatting Telegram refuses: the answer goes again as plain text.
        self.tg.reject_entities(times=1)
        self.llm.on_message_containing("Refused format", streamed(FORMATTED))
        plain = self.ask(ALICE, "Refused format, please")
        self.assertEqual(plain.entities, [])
        for method in ("getMe", "getWebhookInfo"):
            self.assertCalled(method)
        self.assertCalled("getUpdates", "offset", "timeout", "allowed_updates")
        self.assertCalled("getMyCommands", "language_code")
        self.assertCalled("setMyCommands", "commands", "language_code")
        self.assertCalled("sendMessage", "chat_id", "text", "reply_parameters", "entities")
        self.assertCalled("sendMessageDraft", "chat_id", "draft_id", "text", "entities", "can_stop")
        self.assertCalled("sendChatAction", "chat_id", "action")

    def test_a_photo_read_and_a_picture_drawn(self):
        self.start_bot()
        photo = self.tg.send_file(Chat.private(ALICE), ALICE, "photo", JPEG, caption="What is this?")
        self.assertEqual(self.wait_reply(photo).text, "Echo: What is this?")
        drawn = self.wait_reply(self.tg.send_private(ALICE, "/image a red fox in the snow"))
        self.assertEqual(drawn.text, "a red fox in the snow")
        self.assertCalled("getFile", "file_id")
        self.assertCalled("sendPhoto", "chat_id", "caption", "reply_parameters")

    def test_a_draft_stopped_with_telegrams_stop_control(self):
        self.start_bot()
        self.llm.on_message_containing("long story", streamed(SLOW, chunk_delay=0.2))
        msg = self.tg.send_private(ALICE, "Tell me a long story")
        draft = self.tg.wait_for(lambda: [d for d in self.tg.drafts if "word2" in (d.get("text") or "")], 10,
                                 "a draft with some text")[0]
        self.assertIs(draft.get("can_stop"), True, f"expected can_stop on the draft: {draft}")
        self.tg.push(self.tg.update("stopped_message_generation",
                                    {"chat": Chat.private(ALICE).to_json(), "draft_id": draft["draft_id"]}))
        reply = self.wait_reply(msg)
        self.assertTrue(reply.text.endswith("(stopped)"), reply.text)

    def test_the_stop_button_in_a_forum_topic(self):
        self.start_bot()
        self.llm.on_message_containing("explain everything", streamed(SLOW, chunk_delay=0.2))
        msg = self.tg.send_topic(FORUM, 77, IVAN, "@tgllm_test_bot explain everything")
        streaming = self.tg.wait_for(lambda: [m for m in self.tg.messages_in(FORUM.id) if m.buttons()], 15,
                                     "the streaming message with its Stop button")[0]
        self.tg.wait_for(lambda: self.calls_with("editMessageText", "reply_markup"), 10,
                         "a frame edited with the Stop button")
        label, data = streaming.buttons()[0]
        self.press(BOB, streaming, data, chat=FORUM)  # not the asker: a refusal in the callback answer
        self.press(IVAN, streaming, data, chat=FORUM)
        self.tg.wait_for(lambda: self.tg.messages_in(FORUM.id)[0].text.endswith("(остановлено)"), 10,
                         "the answer marked as stopped")
        self.wait_handled(msg)
        self.press(IVAN, streaming, data, chat=FORUM)  # too late: a polite answer
        self.assertCalled("sendMessage", "chat_id", "message_thread_id", "reply_parameters", "reply_markup")
        self.assertCalled("sendChatAction", "chat_id", "message_thread_id", "action")
        self.assertCalled("answerCallbackQuery", "callback_query_id", "text")
        edits = self.tg.calls_of("editMessageText")
        self.assertTrue([c for c in edits if "reply_markup" not in c.params], "expected the final edit without "
                        f"the Stop button; edits:\n{self.tg.describe()}")

    def test_the_model_keyboard(self):
        self.start_bot(OPENAI_MODELS=MODELS)
        menu = self.ask(ALICE, "/model")
        self.assertTrue(menu.buttons(), f"expected a keyboard: {menu.params}")
        self.press(ALICE, menu, "m:o3-mini")
        self.tg.wait_for(lambda: menu.edits, 5, "the keyboard message edited")
        self.press(ALICE, menu, "zz:unknown")
        self.ask(ALICE, "/model gpt-4o")
        self.ask(ALICE, "Which model answers?")
        self.assertCalled("sendMessage", "chat_id", "text", "reply_markup")
        self.assertCalled("editMessageText", "chat_id", "message_id", "text", "reply_markup")
        self.assertCalled("answerCallbackQuery", "callback_query_id")

    def test_the_webhook_commands_and_poll_delete_webhook(self):
        cert = self.tmp / "public.pem"
        cert.write_text(CERT)
        self.tg.send_private(ALICE, "Waiting since yesterday")
        self.cli("set-webhook", HOOK, "--certificate", str(cert), "--drop-pending", WEBHOOK_SECRET=SECRET)
        self.assertEqual(self.tg.webhook.url, HOOK)
        self.assertTrue(self.tg.webhook.has_custom_certificate)
        self.assertCalled("setWebhook", "url", "allowed_updates", "secret_token", "drop_pending_updates")
        self.cli("webhook-info")
        self.cli("set-webhook", HOOK)  # the same URL again, without extras
        bot = BotProcess(self.bot_env(), self.log_path, args=("poll", "--delete-webhook"))
        self.bots.append(bot)
        self.addCleanup(bot.kill)
        reply = self.ask(ALICE, "Polling again?", timeout=15)
        self.assertIn("Polling again?", reply.text)
        self.assertEqual(self.tg.webhook.url, "")
        bot.stop()
        self.cli("set-webhook", HOOK)
        self.cli("delete-webhook", "--drop-pending")
        self.cli("delete-webhook")
        self.assertEqual(self.tg.webhook.url, "")
        self.assertCalled("deleteWebhook", "drop_pending_updates")

    def test_serve_and_handle(self):
        port = free_port()
        bot = BotProcess(self.bot_env(LISTEN=f"127.0.0.1:{port}"), self.log_path, args=("serve",))
        self.bots.append(bot)
        self.addCleanup(bot.kill)
        self.tg.wait_for(lambda: "serve: listening on" in self.log() or not bot.running(), 15,
                         "`tgllm serve` listening")
        msg = self.tg.message(Chat.private(BOB), BOB, "Through the webhook server")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/", json.dumps(self.tg.update("message", msg)),
                         {"Content-Type": "application/json"})
            self.assertEqual(conn.getresponse().status, 200)
        finally:
            conn.close()
        self.wait_reply(msg)
        bot.stop()
        msg = self.tg.message(Chat.private(ALICE), ALICE, "Through tgllm handle")
        self.assertEqual(self.handle_update(self.tg.update("message", msg), {}), 200)
        self.wait_reply(msg)

    def test_doctor(self):
        self.cli("doctor")
        self.assertCalled("getMe")
        self.assertCalled("getWebhookInfo")


class ChatCompletionConformanceTest(BotTestCase):
    """The bot's model requests, sent again to `prism mock` of the official OpenAI spec."""

    @classmethod
    def setUpClass(cls):
        cls.workdir = Path(tempfile.mkdtemp(prefix="tgllm-prism-"))
        try:
            cls.mock = prism.OpenAIMock(cls.workdir)
        except BaseException:
            shutil.rmtree(cls.workdir, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()
        remove_workdir(cls.workdir)

    def assertSpecAccepts(self, min_posts: int, min_gets: int = 0):
        """Every request the fake model recorded, as Prism's mock answers it: 2xx, or the test fails."""
        posts, gets = self.llm.snapshot(), list(self.llm.gets)
        self.assertGreaterEqual(len(posts), min_posts, "expected more model requests to check")
        self.assertGreaterEqual(len(gets), min_gets, "expected more model-list requests to check")
        refused = []
        for method, req in [("POST", r) for r in posts] + [("GET", r) for r in gets]:
            path = req.path[len("/v1"):] if req.path.startswith("/v1/") else req.path
            # Not the bot's Accept (text/event-stream): the mock has no SSE and would answer 500
            # after validating. What is checked is the request: path, Authorization, body.
            headers = {k: v for k, v in req.headers.items() if k in ("authorization", "content-type")}
            status, answer = self.mock.send(method, path, req.raw, headers)
            if not 200 <= status < 300:
                try:
                    problem = json.loads(answer)
                    said = "; ".join(f"{'.'.join(v.get('location', []))}: {v.get('message')}"
                                     for v in problem.get("validation", [])) or problem.get("detail")
                except ValueError:
                    said = answer[:300]
                refused.append(f"  {method} {req.path} {req.raw.decode('utf-8', 'replace')[:400]}\n"
                               f"    -> Prism {status}: {said}")
        if refused:
            self.fail(f"Prism refused {len(refused)} of the bot's {len(posts) + len(gets)} model requests "
                      "(the official OpenAI spec):\n" + "\n".join(refused[:10]))

    def test_conversations_with_history_system_prompts_and_models(self):
        self.llm.models = ["gpt-4o-mini", "gpt-4o", "o3-mini", "text-embedding-3-small"]
        self.start_bot(SYSTEM_PROMPT="You answer briefly.")
        self.ask(ALICE, "Remember the number 42")
        self.ask(ALICE, "Which number did I say?")
        self.ask(BOB, "/system You are a pirate.")
        self.ask(BOB, "Hello there")
        menu = self.ask(ALICE, "/model")   # the provider's list: GET /models
        self.assertTrue(menu.buttons(), f"expected a keyboard of models: {menu.params}")
        self.ask(ALICE, "/model o3-mini")
        self.ask(ALICE, "And now?")
        self.tg.send_topic(FORUM, 5, IVAN, "@tgllm_test_bot привет")
        self.wait_text(FORUM.id, "привет")
        streamed_reqs = [r for r in self.llm.snapshot() if r.body.get("stream")]
        self.assertTrue(streamed_reqs and all(r.body.get("stream_options") for r in streamed_reqs),
                        "expected streamed requests with stream_options")
        self.assertIn("system", self.llm.requests_with("Which number")[0].roles())
        self.assertSpecAccepts(min_posts=5, min_gets=1)

    def test_doctors_requests(self):
        self.llm.models = None  # no model list: doctor asks for one token
        r = run_bin(["doctor"], self.bot_env(), timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout.decode("utf-8", "replace"))
        self.assertEqual(self.llm.requests[-1].body.get("max_tokens"), 1)
        self.assertSpecAccepts(min_posts=1, min_gets=1)


if __name__ == "__main__":
    main()
