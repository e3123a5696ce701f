"""Prometheus metrics: `serve` answers GET /metrics beside the webhook and
/healthz; METRICS_LISTEN moves /metrics to an address of its own, and gives
`poll` one. The test scrapes during a conversation and checks what the
counters say against what the fakes saw: updates by kind and outcome,
model calls and tokens, Telegram calls with their 429s, conversations in
flight and queued, store latency, and the process's memory and CPU."""

import http.client
import re
import socket

from fake_openai import Reply, reported_usage
from fake_telegram import Chat
from harness import ALICE, BOB, GROUP_ID, MALLORY, main, run_bin
from test_serve import ServeTestCase, free_port

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict:
    """{(name, frozenset(labels)): value}, checking the exposition format on the way: every
    sample's family has a TYPE line before it, histogram buckets grow and end with +Inf = count."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no # TYPE line before it"
        key = (name, frozenset(LABEL.findall(labels)))
        assert key not in samples, f"{line!r} is there twice"
        samples[key] = float(value)
    for (name, labels), count in samples.items():
        if not name.endswith("_count") or types.get(name[:-6]) != "histogram":
            continue
        base = name[:-6]
        buckets = sorted(((float(dict(l)["le"]), v) for (n, l), v in samples.items()
                          if n == base + "_bucket" and l - {("le", dict(l)["le"])} == labels))
        assert buckets and buckets[-1][0] == float("inf") and buckets[-1][1] == count, f"{base} {labels}"
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), f"{base}'s buckets shrink"
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class MetricsTestCase(ServeTestCase):

    def scrape(self, port: int = 0) -> dict:
        c = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=5)
        try:
            c.request("GET", "/metrics")
            r = c.getresponse()
            body = r.read().decode("utf-8")
            self.assertEqual(r.status, 200, body)
            self.assertEqual(r.getheader("Content-Type"), PROMETHEUS_TYPE)
            return parse(body)
        finally:
            c.close()

    def get(self, port: int, path: str) -> int:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()


class ServeMetricsTest(MetricsTestCase):

    def test_counters_follow_a_conversation(self):
        self.start_serve()
        before = self.scrape()
        self.assertEqual(value(before, "tgllm_updates_total", kind="message", outcome="answered"), 0)
        self.assertGreater(value(before, "process_resident_memory_bytes"), 1e6)
        self.assertGreater(value(before, "process_cpu_seconds_total"), 0)

        # Answered, then the same update again (a duplicate), a stranger (refused), a group
        # message not addressed to the bot (ignored), and an update kind the bot does not handle.
        self.tg.fail("sendMessage", times=1, error_code=429, retry_after=1)
        update, msg = self.new_update(ALICE, "Count this one")
        self.assertEqual(self.post_update(update), 200)
        self.wait_reply(msg)
        self.wait_handled(update)
        self.assertEqual(self.post_update(update), 200)
        stranger, _ = self.new_update(MALLORY, "Let me in")
        self.assertEqual(self.post_update(stranger), 200)
        group = self.tg.update("message", self.tg.message(Chat.group(GROUP_ID), BOB, "just chatting"))
        self.assertEqual(self.post_update(group), 200)
        reaction = self.tg.update("message_reaction", {"chat": Chat.private(ALICE).to_json(), "message_id": 1,
                                                       "date": 0, "old_reaction": [], "new_reaction": []})
        self.assertEqual(self.post_update(reaction), 200)
        for u in (stranger, group, reaction):
            self.wait_handled(u)

        m = self.tg.wait_for(lambda: (lambda s: s if value(s, "tgllm_updates_total", kind="message",
                                                          outcome="refused") else None)(self.scrape()),
                             10, "the refusal to be counted")
        self.assertEqual(value(m, "tgllm_updates_total", kind="message", outcome="answered"), 1)
        self.assertEqual(value(m, "tgllm_updates_total", kind="message", outcome="duplicate"), 1)
        self.assertEqual(value(m, "tgllm_updates_total", kind="message", outcome="refused"), 1)
        self.assertEqual(value(m, "tgllm_updates_total", kind="message", outcome="ignored"), 1)
        self.assertEqual(value(m, "tgllm_updates_total", kind="message_reaction", outcome="ignored"), 1)
        self.assertEqual(value(m, "tgllm_updates_total", kind="message", outcome="failed"), 0)

        [req] = self.llm.requests_with("Count this one")
        reply_text = "Echo: Count this one"
        usage = reported_usage(req, reply_text)
        self.assertEqual(value(m, "tgllm_model_calls_total", outcome="ok"), 1)
        self.assertEqual(value(m, "tgllm_model_tokens_total", direction="prompt"), usage["prompt_tokens"])
        self.assertEqual(value(m, "tgllm_model_tokens_total", direction="completion"), usage["completion_tokens"])
        self.assertEqual(value(m, "tgllm_model_first_token_seconds_count"), 1)
        self.assertEqual(value(m, "tgllm_model_call_seconds_count"), 1)
        self.assertLess(value(m, "tgllm_model_call_seconds_sum"), 10)

        sent_ok = len(self.tg.calls_of("sendMessage", ok=True))
        self.assertGreaterEqual(sent_ok, 2)  # the answer and the refusal
        self.assertEqual(value(m, "tgllm_telegram_calls_total", method="sendMessage", outcome="ok"), sent_ok)
        self.assertEqual(value(m, "tgllm_telegram_429_total", method="sendMessage"), 1)
        self.assertEqual(value(m, "tgllm_telegram_calls_total", method="getMe", outcome="ok"), 1)

        # The store: one history read and one write for the answer, a claim per update.
        self.assertEqual(value(m, "tgllm_store_operation_seconds_count", op="history_load"), 1)
        self.assertEqual(value(m, "tgllm_store_operation_seconds_count", op="history_append"), 1)
        self.assertEqual(value(m, "tgllm_store_operation_seconds_count", op="update_claim"), 5)
        self.assertEqual(value(m, "tgllm_conversations_in_flight"), 0)
        self.assertEqual(value(m, "tgllm_updates_queued"), 0)

    def test_in_flight_and_queued_while_the_model_answers(self):
        self.start_serve()
        self.llm.on_message_containing("Slow one", Reply(text="Finally.", delay=30))
        first, _ = self.new_update(ALICE, "Slow one")
        second, msg2 = self.new_update(ALICE, "Waiting behind it")
        self.assertEqual(self.post_update(first), 200)
        self.assertEqual(self.post_update(second), 200)
        self.llm.wait_for(lambda: self.llm.requests_with("Slow one"), 10, "the slow request")
        m = self.scrape()
        self.assertEqual(value(m, "tgllm_conversations_in_flight"), 1)
        self.assertEqual(value(m, "tgllm_updates_queued"), 1)
        self.assertEqual(value(m, "tgllm_model_calls_total", outcome="ok"), 0)

    def test_model_failure_is_counted(self):
        self.start_serve()
        self.llm.on_message_containing("Unlucky", Reply(status=401, error={
            "message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}))
        update, msg = self.new_update(ALICE, "Unlucky")
        self.assertEqual(self.post_update(update), 200)
        self.wait_reply(msg)
        self.wait_handled(update)
        m = self.tg.wait_for(lambda: (lambda s: s if value(s, "tgllm_updates_total", kind="message",
                                                          outcome="failed") else None)(self.scrape()),
                             10, "the failure to be counted")
        self.assertEqual(value(m, "tgllm_model_calls_total", outcome="auth"), 1)
        self.assertEqual(value(m, "tgllm_model_first_token_seconds_count"), 0)
        self.assertEqual(value(m, "tgllm_updates_total", kind="message", outcome="answered"), 0)

    def test_metrics_listen_takes_metrics_off_the_public_address(self):
        metrics_port = free_port()
        self.start_serve(METRICS_LISTEN=f"127.0.0.1:{metrics_port}")
        self.assertEqual(self.get(self.port, "/metrics"), 404)
        self.assertEqual(self.get(self.port, "/healthz"), 200)  # load balancers check the public one
        self.assertEqual(self.get(metrics_port, "/healthz"), 200)
        self.assertEqual(self.get(metrics_port, "/elsewhere"), 404)
        m = self.scrape(metrics_port)
        self.assertIn(("process_resident_memory_bytes", frozenset()), m)
        self.barrier(ALICE, "Through the public port")
        m = self.scrape(metrics_port)
        self.assertEqual(value(m, "tgllm_updates_total", kind="message", outcome="answered"), 1)

    def test_bad_metrics_listen_is_refused_at_start(self):
        for bad in ("nonsense", "127.0.0.1:0", "127.0.0.1:99999"):
            with self.subTest(bad=bad):
                r = run_bin(["serve"], self.bot_env(METRICS_LISTEN=bad))
                self.assertEqual(r.returncode, 2)  # a configuration error
                self.assertIn("METRICS_LISTEN must be HOST:PORT", r.stderr.decode())

    def test_metrics_listen_port_taken_is_refused_at_start(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            r = run_bin(["serve"], self.bot_env(LISTEN=f"127.0.0.1:{self.port}",
                                                 METRICS_LISTEN=f"127.0.0.1:{taken.getsockname()[1]}"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot listen on METRICS_LISTEN", r.stderr.decode())


class PollMetricsTest(MetricsTestCase):

    def test_poll_serves_metrics_on_metrics_listen(self):
        metrics_port = free_port()
        self.start_bot(METRICS_LISTEN=f"127.0.0.1:{metrics_port}")
        self.ask(ALICE, "Polled and counted")
        m = self.tg.wait_for(lambda: (lambda s: s if value(s, "tgllm_updates_total", kind="message",
                                                          outcome="answered") else None)(self.scrape(metrics_port)),
                             10, "the answer to be counted")
        self.assertGreaterEqual(value(m, "tgllm_telegram_calls_total", method="getUpdates", outcome="ok"), 1)
        self.assertEqual(value(m, "tgllm_model_calls_total", outcome="ok"), 1)
        self.assertEqual(self.get(metrics_port, "/healthz"), 200)


if __name__ == "__main__":
    main()
