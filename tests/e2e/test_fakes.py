"""Self-tests of the fake servers (no bot involved): the other e2e tests are
only as good as the fakes they talk to."""

import http.client
import json
import threading
import time
import unittest
import urllib.error
import urllib.request

import harness  # noqa: F401  (sets sys.path)
from fake_openai import FakeOpenAI, answer, cut, insufficient_quota, rate_limited, Reply
from fake_telegram import TOKEN, Chat, FakeTelegram, User, auto_entities, utf16_len

ALICE = User(id=1, first_name="Alice", username="alice")


def call(base, method, params=None, token=TOKEN, timeout=10):
    data = json.dumps(params or {}).encode()
    req = urllib.request.Request(f"{base}/bot{token}/{method}", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class FakeTelegramTest(unittest.TestCase):
    def setUp(self):
        self.tg = FakeTelegram(poll_cap=1.0).start()
        self.addCleanup(self.tg.stop)
        self.base = self.tg.base_url

    def test_get_me_describes_the_bot(self):
        status, body = call(self.base, "getMe")
        self.assertEqual(status, 200)
        self.assertEqual(body["result"]["id"], 1000)
        self.assertEqual(body["result"]["username"], "tgllm_test_bot")
        self.assertTrue(body["result"]["is_bot"])

    def test_wrong_token_is_unauthorized(self):
        status, body = call(self.base, "getMe", token="1:wrong")
        self.assertEqual((status, body), (401, {"ok": False, "error_code": 401, "description": "Unauthorized"}))

    def test_get_updates_confirms_by_offset_and_long_polls(self):
        m1 = self.tg.send_private(ALICE, "one")
        m2 = self.tg.send_private(ALICE, "two")
        _, body = call(self.base, "getUpdates", {"timeout": 30})
        ids = [u["update_id"] for u in body["result"]]
        self.assertEqual([u["message"]["text"] for u in body["result"]], ["one", "two"])
        self.assertEqual(ids[1], ids[0] + 1)
        self.assertLess(m1["message_id"], m2["message_id"])
        # Not confirmed yet: the same offset gets them again.
        _, body = call(self.base, "getUpdates", {"offset": ids[0]})
        self.assertEqual(len(body["result"]), 2)
        # A higher offset confirms the first.
        _, body = call(self.base, "getUpdates", {"offset": ids[1]})
        self.assertEqual([u["update_id"] for u in body["result"]], [ids[1]])
        _, body = call(self.base, "getUpdates", {"offset": 0, "timeout": 0})
        self.assertEqual([u["update_id"] for u in body["result"]], [ids[1]])
        # Long poll: empty after the cap, early when an update arrives.
        t = time.monotonic()
        _, body = call(self.base, "getUpdates", {"offset": ids[1] + 1, "timeout": 30})
        self.assertEqual(body["result"], [])
        self.assertLess(time.monotonic() - t, 2.5)
        threading.Timer(0.3, lambda: self.tg.send_private(ALICE, "three")).start()
        t = time.monotonic()
        _, body = call(self.base, "getUpdates", {"offset": ids[1] + 1, "timeout": 30})
        self.assertEqual([u["message"]["text"] for u in body["result"]], ["three"])
        self.assertLess(time.monotonic() - t, 0.9)

    def test_limit(self):
        for i in range(5):
            self.tg.send_private(ALICE, f"m{i}")
        _, body = call(self.base, "getUpdates", {"limit": 2})
        self.assertEqual(len(body["result"]), 2)

    def test_send_message_records_and_validates(self):
        self.tg.send_private(ALICE, "hi")
        status, body = call(self.base, "sendMessage", {"chat_id": ALICE.id, "text": "hello 👋",
                                                       "reply_parameters": {"message_id": 1}})
        self.assertEqual(status, 200)
        self.assertEqual(body["result"]["text"], "hello 👋")
        self.assertEqual(body["result"]["from"]["id"], 1000)
        self.assertEqual(self.tg.texts_in(ALICE.id), ["hello 👋"])
        self.assertEqual(self.tg.messages_in(ALICE.id)[0].reply_to, 1)
        status, body = call(self.base, "sendMessage", {"chat_id": ALICE.id, "text": "x" * 4097})
        self.assertEqual((status, body["description"]), (400, "Bad Request: message is too long"))
        status, _ = call(self.base, "sendMessage", {"chat_id": ALICE.id, "text": "😀" * 2049})
        self.assertEqual(status, 400, "2049 emoji are 4098 UTF-16 units")
        status, _ = call(self.base, "sendMessage", {"chat_id": ALICE.id, "text": ""})
        self.assertEqual(status, 400)
        status, _ = call(self.base, "sendMessage", {"chat_id": ALICE.id, "text": "ab",
                                                    "entities": [{"type": "bold", "offset": 1, "length": 5}]})
        self.assertEqual(status, 400)
        status, body = call(self.base, "editMessageText", {"chat_id": ALICE.id, "message_id": 2, "text": "edited"})
        self.assertEqual(status, 200, body)
        self.assertEqual(self.tg.texts_in(ALICE.id), ["edited"])
        status, body = call(self.base, "editMessageText", {"chat_id": ALICE.id, "message_id": 2, "text": "edited"})
        self.assertEqual(status, 400)
        self.assertIn("not modified", body["description"])

    def test_form_encoded_params(self):
        req = urllib.request.Request(f"{self.base}/bot{TOKEN}/sendMessage", data=b"chat_id=5&text=hi%20there")
        with urllib.request.urlopen(req, timeout=5) as r:
            self.assertEqual(json.loads(r.read())["result"]["text"], "hi there")
        with urllib.request.urlopen(f"{self.base}/bot{TOKEN}/sendChatAction?chat_id=5&action=typing",
                                    timeout=5) as r:
            self.assertTrue(json.loads(r.read())["ok"])
        self.assertEqual(self.tg.calls_of("sendChatAction")[0].params, {"chat_id": "5", "action": "typing"})

    def test_failures_and_blocking(self):
        self.tg.fail("sendMessage", times=1, error_code=429, retry_after=3)
        status, body = call(self.base, "sendMessage", {"chat_id": 5, "text": "a"})
        self.assertEqual(status, 429)
        self.assertEqual(body["parameters"], {"retry_after": 3})
        status, _ = call(self.base, "sendMessage", {"chat_id": 5, "text": "a"})
        self.assertEqual(status, 200)
        self.tg.block(7)
        status, body = call(self.base, "sendMessage", {"chat_id": 7, "text": "a"})
        self.assertEqual((status, body["description"]), (403, "Forbidden: bot was blocked by the user"))
        self.assertEqual(len(self.tg.calls_of("sendMessage", ok=True)), 1)

    def test_scripted_get_updates(self):
        self.tg.inject_body(b"{not json", status=200)
        self.tg.inject_updates([{"message": {"text": "no id"}}])
        req = urllib.request.Request(f"{self.base}/bot{TOKEN}/getUpdates", data=b"{}",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            self.assertEqual(r.read(), b"{not json")
        _, body = call(self.base, "getUpdates")
        self.assertEqual(body["result"], [{"message": {"text": "no id"}}])

    def test_concurrent_poll_gets_conflict(self):
        results = {}
        t = threading.Thread(target=lambda: results.setdefault("first", call(self.base, "getUpdates",
                                                                               {"timeout": 5})))
        t.start()
        self.tg.wait_for(lambda: self.tg.polls_waiting == 1, 5, "the first getUpdates to be waiting")
        call(self.base, "getUpdates", {"timeout": 0})
        t.join(5)
        self.assertEqual(results["first"][0], 409)

    def test_entities(self):
        self.assertEqual(auto_entities("/new@tgllm_test_bot"),
                         [{"type": "bot_command", "offset": 0, "length": 19}])
        self.assertEqual(auto_entities("😀 @TgLLM_test_bot hi"),
                         [{"type": "mention", "offset": 3, "length": 15}])
        msg = self.tg.send_topic(Chat.supergroup(-100, is_forum=True), 77, ALICE, "hi")
        self.assertTrue(msg["is_topic_message"])
        self.assertEqual(msg["reply_to_message"]["forum_topic_created"]["name"], "Topic")
        self.assertEqual(utf16_len("a😀"), 3)


class FakeOpenAITest(unittest.TestCase):
    def setUp(self):
        self.llm = FakeOpenAI().start()
        self.addCleanup(self.llm.stop)

    def post(self, body, raw=False):
        c = http.client.HTTPConnection("127.0.0.1", self.llm.port, timeout=10)
        c.request("POST", "/v1/chat/completions", json.dumps(body),
                  {"Content-Type": "application/json", "Authorization": "Bearer k"})
        self.addCleanup(c.close)
        r = c.getresponse()
        try:
            data = r.read()
        except http.client.IncompleteRead as e:
            data = e.partial
            return r, data, "incomplete"
        return r, data, None

    @staticmethod
    def sse_text(data: bytes):
        text, events = "", []
        for block in data.decode().replace("\r\n", "\n").split("\n\n"):
            lines = [ln[5:].lstrip(" ") for ln in block.split("\n") if ln.startswith("data:")]
            if not lines:
                continue
            payload = "\n".join(lines)
            events.append(payload)
            if payload == "[DONE]":
                continue
            obj = json.loads(payload)
            for ch in obj["choices"]:
                text += ch["delta"].get("content") or ""
        return text, events

    def test_default_streams_echo_with_usage_and_done(self):
        r, data, _ = self.post({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(r.status, 200)
        text, events = self.sse_text(data)
        self.assertEqual(text, "Echo: hi")
        self.assertEqual(events[-1], "[DONE]")
        self.assertEqual(json.loads(events[-2])["choices"], [])
        self.assertIn("usage", json.loads(events[-2]))
        self.assertEqual(self.llm.requests[0].headers["authorization"], "Bearer k")

    def test_non_stream(self):
        r, data, _ = self.post({"messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(json.loads(data)["choices"][0]["message"]["content"], "Echo: hi")

    def test_queue_rules_and_context_limit(self):
        self.llm.enqueue(rate_limited(retry_after=2), answer("fixed", crlf=True, comments=True, multiline_data=True))
        r, data, _ = self.post({"stream": True, "messages": [{"role": "user", "content": "a"}]})
        self.assertEqual((r.status, r.getheader("Retry-After")), (429, "2"))
        r, data, _ = self.post({"stream": True, "messages": [{"role": "user", "content": "a"}]})
        self.assertIn(b"\r\n", data)
        self.assertIn(b": ping", data)
        self.assertEqual(self.sse_text(data)[0], "fixed")
        self.llm.on_message_containing("broke", insufficient_quota())
        r, data, _ = self.post({"stream": True, "messages": [{"role": "user", "content": "I am broke"}]})
        self.assertEqual(json.loads(data)["error"]["code"], "insufficient_quota")
        self.llm.context_limit = 10
        r, data, _ = self.post({"stream": True, "messages": [{"role": "user", "content": "x" * 11}]})
        self.assertEqual(json.loads(data)["error"]["code"], "context_length_exceeded")
        self.assertIn("maximum context length is 10 tokens", json.loads(data)["error"]["message"])

    def test_cut_stream_has_no_done(self):
        self.llm.enqueue(cut("partial text"))
        r, data, incomplete = self.post({"stream": True, "messages": [{"role": "user", "content": "a"}]})
        self.assertEqual(incomplete, "incomplete")
        text, events = self.sse_text(data)
        self.assertEqual(text, "partial text")
        self.assertNotIn("[DONE]", events)

    def test_force_json_and_tiny_writes(self):
        self.llm.enqueue(Reply(text="plain", force_json=True), answer("Привет 👋 мир", tiny_writes=True))
        r, data, _ = self.post({"stream": True, "messages": [{"role": "user", "content": "a"}]})
        self.assertEqual(r.getheader("Content-Type"), "application/json")
        r, data, _ = self.post({"stream": True, "messages": [{"role": "user", "content": "a"}]})
        self.assertEqual(self.sse_text(data)[0], "Привет 👋 мир")

    def test_delay_is_measured(self):
        self.llm.enqueue(Reply(delay=0.5))
        t = time.monotonic()
        self.post({"stream": True, "messages": [{"role": "user", "content": "a"}]})
        self.assertGreaterEqual(time.monotonic() - t, 0.5)


if __name__ == "__main__":
    unittest.main(verbosity=2)
