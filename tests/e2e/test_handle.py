"""`tgllm handle`: serverless, one event on stdin, one JSON response line on
stdout. The event shapes of Yandex Cloud Functions (direct HTTP invocation,
API Gateway payload 0.1/1.0), AWS Lambda Function URL / API Gateway v2.0 and
a bare Update; the secret token; the answer produced before the process
exits; redelivery; history and the cached identity across invocations; and
HANDLE_DEADLINE cutting a slow answer short."""

import base64
import json
import subprocess
import time
from dataclasses import dataclass
from typing import Optional

import harness
from fake_openai import FakeOpenAI, Reply, answer
from harness import ALICE, BOB, BOT_USERNAME, MALLORY, TOKEN, BotTestCase, Chat, User, main

SECRET = "hNd1e-Secret_token-0042"
DEADLINE_CUT = "(time ran out: this is the answer so far)"
DEADLINE_NOTHING = "The model took too long to answer"


@dataclass
class Stall(Reply):
    """Streams the first `stall_after` pieces, then says nothing more (until the fake stops)."""

    stall_after: int = 2


class StallingOpenAI(FakeOpenAI):
    """The fake model, plus Stall replies: a stream that stops mid-answer and stays open."""

    def _stream(self, h, reply, text, model, n, req):
        if not isinstance(reply, Stall):
            return super()._stream(h, reply, text, model, n, req)
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def event(obj):
            b = f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode("utf-8")
            h.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
            h.wfile.flush()

        base = {"id": f"chatcmpl-stall{n}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model}
        event(dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                   "finish_reason": None}]))
        for piece in (reply.pieces or [text])[:reply.stall_after]:
            time.sleep(reply.chunk_delay)
            event(dict(base, choices=[{"index": 0, "delta": {"content": piece}, "finish_reason": None}]))
        self._stopping.wait(60)  # the stall: no more data, the connection stays open
        h.close_connection = True


@dataclass
class Invocation:
    proc: subprocess.CompletedProcess
    response: dict
    elapsed: float

    @property
    def status(self) -> int:
        return self.response["statusCode"]


def yandex_event(body: str, method: str = "POST", headers: Optional[dict] = None, b64: bool = False,
                 multi: Optional[dict] = None) -> dict:
    """A Yandex Cloud Functions HTTP event (direct invocation by HTTP), as the platform builds it."""
    headers = dict(headers if headers is not None else {"Content-Type": "application/json"})
    if b64:
        body = base64.b64encode(body.encode("utf-8")).decode("ascii")
    return {
        "httpMethod": method,
        "url": "",
        "params": {},
        "pathParams": {},
        "headers": headers,
        "multiValueHeaders": multi if multi is not None else {k: [v] for k, v in headers.items()},
        "queryStringParameters": {},
        "multiValueQueryStringParameters": {},
        "requestContext": {
            "identity": {"sourceIp": "91.108.6.65", "userAgent": ""},
            "httpMethod": method,
            "requestId": "5bb0bd1d-0b0b-4a6e-9d6c-3f1d7a4b2d11",
            "requestTime": "1/Jan/2025:00:00:00 +0000",
            "requestTimeEpoch": 1735689600,
        },
        "body": body,
        "isBase64Encoded": b64,
    }


def api_gateway_v1_event(body: str, headers: dict, multi: dict) -> dict:
    """Yandex API Gateway, payload format 1.0."""
    return {
        "version": "1.0",
        "resource": "/telegram",
        "path": "/telegram",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "requestContext": {"httpMethod": "POST", "path": "/telegram", "stage": "$default",
                           "identity": {"sourceIp": "91.108.6.65"}, "requestTimeEpoch": 1735689600},
        "pathParameters": None,
        "stageVariables": None,
        "body": body,
        "isBase64Encoded": False,
    }


def aws_v2_event(body: str, method: str = "POST", headers: Optional[dict] = None, b64: Optional[str] = None) -> dict:
    """An AWS Lambda Function URL / API Gateway HTTP API (payload 2.0) event; b64: None, "std" or "url"."""
    if b64 == "std":
        body = base64.b64encode(body.encode("utf-8")).decode("ascii")
    elif b64 == "url":
        body = base64.urlsafe_b64encode(body.encode("utf-8")).decode("ascii").rstrip("=")
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": headers if headers is not None else {"content-type": "application/json",
                                                        "host": "abc123.lambda-url.eu-west-1.on.aws"},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc123",
            "domainName": "abc123.lambda-url.eu-west-1.on.aws",
            "http": {"method": method, "path": "/", "protocol": "HTTP/1.1", "sourceIp": "91.108.6.65",
                     "userAgent": ""},
            "requestId": "c0ffee00-1111-2222-3333-444455556666",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2025:00:00:00 +0000",
            "timeEpoch": 1735689600000,
        },
        "body": body,
        "isBase64Encoded": b64 is not None,
    }


class HandleTestCase(BotTestCase):

    def setUp(self):
        super().setUp()
        self.llm = StallingOpenAI().start()
        self.addCleanup(self.llm.stop)
        # Real Telegram: the bot's id is the number before ':' in its token. The
        # cached identity is checked against it, so the fake must agree.
        self.tg.bot = User(id=int(TOKEN.split(":")[0]), first_name="Test Bot", username=BOT_USERNAME, is_bot=True)
        self.runs = 0

    def new_update(self, user: User, text: str):
        """(Update, Message): user writes privately, as Telegram would deliver it (not pushed to getUpdates)."""
        msg = self.tg.message(Chat.private(user), user, text)
        return self.tg.update("message", msg), msg

    def handle(self, event, timeout: float = 20.0, **env) -> Invocation:
        """Runs `tgllm handle` with event on stdin; checks the one-line response shape and exit 0."""
        harness.check_binary()
        data = event if isinstance(event, bytes) else (event if isinstance(event, str) else json.dumps(event))
        data = data.encode("utf-8") if isinstance(data, str) else data
        self.runs += 1
        started = time.monotonic()
        proc = subprocess.run([harness.BIN, "handle"], input=data, env=harness.minimal_env(self.bot_env(**env)),
                              capture_output=True, timeout=timeout, preexec_fn=harness._die_with_parent)
        elapsed = time.monotonic() - started
        with open(self.log_path, "ab") as f:
            f.write(f"----- handle #{self.runs}: exit {proc.returncode}, {elapsed:.2f} s; stdout: ".encode()
                    + proc.stdout + b"-----\n" + proc.stderr)
        out = proc.stdout.decode("utf-8", "replace")
        self.assertNoSecretIn(out, "handle's stdout")
        err = proc.stderr.decode("utf-8", "replace")[-2000:]
        self.assertEqual(proc.returncode, 0, f"expected `tgllm handle` to exit 0 (even for bad input), got "
                                             f"{proc.returncode}; stderr:\n{err}")
        lines = out.splitlines()
        self.assertEqual(len(lines), 1, f"expected exactly one line on stdout, got {len(lines)}: {out!r}")
        try:
            response = json.loads(lines[0])
        except ValueError as e:
            self.fail(f"expected a JSON response line, got {lines[0]!r} ({e})")
        self.assertIsInstance(response, dict, f"expected a JSON object, got {lines[0]!r}")
        self.assertEqual(sorted(response), ["body", "headers", "isBase64Encoded", "statusCode"],
                         f"expected statusCode, headers, body and isBase64Encoded, got {lines[0]!r}")
        self.assertIsInstance(response["statusCode"], int, f"statusCode must be an integer: {lines[0]!r}")
        self.assertIsInstance(response["body"], str, f"body must be a string: {lines[0]!r}")
        self.assertIs(response["isBase64Encoded"], False, f"expected isBase64Encoded false: {lines[0]!r}")
        self.assertIsInstance(response["headers"], dict)
        self.assertIsInstance(response["headers"].get("Content-Type"), str,
                              f"expected a Content-Type header in the response: {lines[0]!r}")
        return Invocation(proc, response, elapsed)

    def assertNothingHappened(self, what: str):
        self.assertEqual(self.llm.snapshot(), [], f"expected no model request for {what}")
        sent = self.tg.calls_of("sendMessage")
        self.assertEqual(sent, [], f"expected no message for {what}; got {[c.params.get('text') for c in sent]}")


class HandleEventShapesTest(HandleTestCase):

    def test_yandex_http_event_is_answered_before_the_process_exits(self):
        update, msg = self.new_update(ALICE, "Hello from a cloud function")
        run = self.handle(yandex_event(json.dumps(update)))
        self.assertEqual(run.status, 200, f"expected 200, got {run.response}")
        # No waiting: the answer must be in the chat by the time the process printed and exited.
        replies = self.tg.replies_to(msg)
        self.assertEqual([r.text for r in replies], ["Echo: Hello from a cloud function"],
                         f"expected the answer sent before exit; the chat has {self.tg.texts_in(ALICE.id)!r}")
        self.assertEqual(self.tg.calls_of("getUpdates"), [], "expected no getUpdates in handle mode")
        self.assertEqual(len(self.llm.requests), 1)

    def test_yandex_base64_body_is_decoded(self):
        update, msg = self.new_update(ALICE, "Привет, base64 😀")
        run = self.handle(yandex_event(json.dumps(update, ensure_ascii=False), b64=True))
        self.assertEqual(run.status, 200, f"expected 200, got {run.response}")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Привет, base64 😀"])

    def test_odd_text_in_the_update_is_read_as_replacement_characters_and_journaled_so(self):
        # A lone surrogate (jansson refuses it) in a base64 body holding a byte that is not UTF-8 too.
        update, msg = self.new_update(ALICE, "half @@ and byte ##")
        body = json.dumps(update).encode().replace(b"@@", b"\\ud83d").replace(b"##", b"\xfe")
        event = yandex_event("", b64=True)
        event["body"] = base64.b64encode(body).decode()
        run = self.handle(event)
        self.assertEqual(run.status, 200, f"expected 200, got {run.response}")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: half \ufffd and byte \ufffd"])
        self.assertEqual(self.journal_state(update["update_id"]), "done")

    def test_api_gateway_payload_1_0_with_secret_only_in_multi_value_headers(self):
        update, msg = self.new_update(ALICE, "Through the gateway")
        event = api_gateway_v1_event(json.dumps(update), {"content-type": "application/json"},
                                     {"content-type": ["application/json"],
                                      "x-telegram-bot-api-secret-token": [SECRET]})
        run = self.handle(event, WEBHOOK_SECRET=SECRET)
        self.assertEqual(run.status, 200, f"expected 200 with the secret in multiValueHeaders, got {run.response}")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Through the gateway"])

    def test_aws_function_url_event_is_answered(self):
        update, msg = self.new_update(ALICE, "Hello from Lambda")
        headers = {"content-type": "application/json", "host": "abc123.lambda-url.eu-west-1.on.aws",
                   "x-telegram-bot-api-secret-token": SECRET, "x-forwarded-proto": "https"}
        run = self.handle(aws_v2_event(json.dumps(update), headers=headers), WEBHOOK_SECRET=SECRET)
        self.assertEqual(run.status, 200, f"expected 200, got {run.response}")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Hello from Lambda"])
        self.assertNotIn(SECRET, self.log(), "expected the secret never to appear in the log")

    def test_aws_base64_bodies_standard_and_url_safe_unpadded(self):
        # "???>>>" makes '/' and '+' (or '_' and '-') appear in the base64.
        for kind, user in (("std", ALICE), ("url", BOB)):
            with self.subTest(base64=kind):
                update, msg = self.new_update(user, f"???>>> {kind} ü")
                run = self.handle(aws_v2_event(json.dumps(update, ensure_ascii=False), b64=kind))
                self.assertEqual(run.status, 200, f"expected 200 for a {kind} base64 body, got {run.response}")
                self.assertEqual([r.text for r in self.tg.replies_to(msg)], [f"Echo: ???>>> {kind} ü"])

    def test_bare_update_is_answered(self):
        update, msg = self.new_update(ALICE, "A raw update")
        run = self.handle(update)
        self.assertEqual(run.status, 200, f"expected 200 for a bare Update, got {run.response}")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: A raw update"])

    def test_update_of_a_stranger_is_acknowledged_and_not_sent_to_the_model(self):
        update, _ = self.new_update(MALLORY, "Let me in")
        run = self.handle(yandex_event(json.dumps(update)))
        self.assertEqual(run.status, 200, f"expected 200 (Telegram must not retry), got {run.response}")
        self.assertEqual(self.llm.snapshot(), [], "expected no model request for a user not on the allowlist")


class HandleSecretTest(HandleTestCase):

    def test_secret_header_name_is_case_insensitive(self):
        for i, name in enumerate(("X-Telegram-Bot-Api-Secret-Token", "x-telegram-bot-api-secret-token",
                                  "X-TELEGRAM-BOT-API-SECRET-TOKEN")):
            with self.subTest(header=name):
                update, msg = self.new_update(ALICE, f"Secret spelled #{i}")
                headers = {"Content-Type": "application/json", name: SECRET}
                run = self.handle(yandex_event(json.dumps(update), headers=headers, multi={}),
                                  WEBHOOK_SECRET=SECRET)
                self.assertEqual(run.status, 200, f"expected 200 with header {name!r}, got {run.response}")
                self.assertEqual(len(self.tg.replies_to(msg)), 1, f"expected an answer with header {name!r}")

    def test_missing_or_wrong_secret_is_401_and_nothing_is_done(self):
        update, _ = self.new_update(ALICE, "Sneaky update")
        body = json.dumps(update)
        cases = {
            "no header": yandex_event(body),
            "wrong secret": yandex_event(body, headers={"Content-Type": "application/json",
                                                        "X-Telegram-Bot-Api-Secret-Token": "not-the-secret"}),
            "secret with a suffix": yandex_event(body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET + "x"}),
            "secret cut short": yandex_event(body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET[:-1]}),
            "AWS, wrong secret": aws_v2_event(body, headers={"x-telegram-bot-api-secret-token": "nope"}),
            "bare update (no headers)": update,
        }
        for what, event in cases.items():
            with self.subTest(case=what):
                run = self.handle(event, WEBHOOK_SECRET=SECRET)
                self.assertEqual(run.status, 401, f"expected 401 for {what}, got {run.response}")
        self.assertNothingHappened("requests without the right secret token")
        self.assertNotIn(SECRET, self.log(), "expected the secret never to appear in the log")


class HandleBadInputTest(HandleTestCase):

    def test_non_post_is_405(self):
        update, _ = self.new_update(ALICE, "Wrong method")
        body = json.dumps(update)
        for what, event in (("Yandex GET", yandex_event("", method="GET")),
                            ("Yandex PUT with an update", yandex_event(body, method="PUT")),
                            ("AWS GET", aws_v2_event("", method="GET")),
                            ("AWS DELETE with an update", aws_v2_event(body, method="DELETE"))):
            with self.subTest(case=what):
                run = self.handle(event)
                self.assertEqual(run.status, 405, f"expected 405 for {what}, got {run.response}")
        self.assertNothingHappened("non-POST requests")

    def test_garbage_is_400(self):
        cases = {
            "empty stdin": b"",
            "not JSON": b"hello, function",
            "truncated JSON": b'{"httpMethod": "POST", "body": ',
            "a JSON array": b"[1, 2, 3]",
            "a JSON string": b'"update"',
            "an object that is no event": b'{"foo": "bar"}',
            "binary": bytes(range(256)),
            "Yandex event, body not JSON": yandex_event("definitely not json"),
            "Yandex event, body without update_id": yandex_event('{"message": {"text": "hi"}}'),
            "Yandex event, string update_id": yandex_event('{"update_id": "12", "message": {}}'),
            "Yandex event, body a JSON array": yandex_event("[]"),
            "Yandex event, empty body": yandex_event(""),
            "Yandex event, invalid base64": dict(yandex_event("!!! not base64 !!!"), isBase64Encoded=True),
            "AWS event, body not JSON": aws_v2_event("<html>"),
            "AWS event, base64 of garbage": aws_v2_event("garbage", b64="std"),
        }
        for what, event in cases.items():
            with self.subTest(case=what):
                run = self.handle(event)
                self.assertGreaterEqual(run.status, 400, f"expected 400 for {what}, got {run.response}")
                self.assertEqual(run.status, 400, f"expected 400 for {what}, got {run.response}")
        self.assertNothingHappened("bad input")


class HandleStateTest(HandleTestCase):

    def test_redelivered_update_is_acknowledged_and_not_answered_again(self):
        update, msg = self.new_update(ALICE, "Only once please")
        event = yandex_event(json.dumps(update))
        first = self.handle(event)
        self.assertEqual(first.status, 200)
        self.assertEqual(len(self.tg.replies_to(msg)), 1)
        second = self.handle(event)
        self.assertEqual(second.status, 200, f"expected 200 for a redelivered update, got {second.response}")
        self.assertEqual(len(self.tg.replies_to(msg)), 1,
                         f"expected no second answer; the chat has {self.tg.texts_in(ALICE.id)!r}")
        self.assertEqual(len(self.llm.requests), 1, "expected the model asked once")

    def test_history_persists_across_invocations(self):
        for text in ("My favourite colour is teal", "What is my favourite colour"):
            update, msg = self.new_update(ALICE, text)
            self.assertEqual(self.handle(yandex_event(json.dumps(update))).status, 200)
            self.assertEqual(len(self.tg.replies_to(msg)), 1, f"expected an answer to {text!r}")
        self.assertEqual(self.llm.requests[-1].messages, [
            {"role": "user", "content": "My favourite colour is teal"},
            {"role": "assistant", "content": "Echo: My favourite colour is teal"},
            {"role": "user", "content": "What is my favourite colour"},
        ])

    def test_identity_is_cached_so_the_next_invocation_needs_no_getme(self):
        update, _ = self.new_update(ALICE, "First invocation")
        self.handle(yandex_event(json.dumps(update)))
        self.assertEqual(len(self.tg.calls_of("getMe")), 1, "expected getMe on the first (cold) invocation")
        calls_before = len(self.tg.calls)
        update, msg = self.new_update(ALICE, "Second invocation")
        self.handle(yandex_event(json.dumps(update)))
        self.assertEqual(len(self.tg.replies_to(msg)), 1, "expected the second invocation answered")
        later = [c.method for c in self.tg.calls[calls_before:]]
        self.assertNotIn("getMe", later, f"expected no getMe on the second invocation (identity cached in the "
                                         f"store); its calls were {later}")


    def test_update_the_bot_cannot_route_for_a_rejected_token_is_left_for_telegram(self):
        # The update is journaled beside getMe; when getMe says the token is wrong, the
        # update must leave the journal again, or Telegram's next delivery would be skipped.
        update, msg = self.new_update(ALICE, "Are you there")
        event = yandex_event(json.dumps(update))
        first = self.handle(event, TG_BOT_TOKEN="999999:not-the-token-telegram-knows")
        self.assertEqual(first.status, 500, f"expected 500 when the bot cannot identify itself; got {first.response}")
        self.assertEqual(self.tg.replies_to(msg), [], "expected no answer from a bot that does not know who it is")
        second = self.handle(event)
        self.assertEqual(second.status, 200, f"expected the redelivery handled; got {second.response}")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Are you there"],
                         "expected the redelivered update answered once, not skipped as a repeat")


class HandleConcurrencyTest(HandleTestCase):

    def test_parallel_cold_invocations_on_a_fresh_store_all_answer(self):
        # A platform starts several instances at once when updates arrive together; on the first
        # deployment they all find the store empty and create it at the same moment.
        self.llm.default = Reply(delay=0.5)
        users = [ALICE, BOB, User(id=555005, first_name="Dora", username="dora"),
                 User(id=555006, first_name="Eve", username="eve")]
        for rnd in range(6):  # a race: several rounds make it show
            store = f"sqlite:{self.tmp / f'fresh-{rnd}.db'}"
            procs = []
            for u in users:
                update, msg = self.new_update(u, f"Parallel round {rnd} from {u.first_name}")
                p = subprocess.Popen([harness.BIN, "handle"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=harness._die_with_parent,
                                     env=harness.minimal_env(self.bot_env(STORE=store, TG_BOT_CHATS="*")))
                procs.append((p, msg, json.dumps(yandex_event(json.dumps(update))).encode()))
            results = [(p.communicate(data, timeout=20), p.returncode, msg) for p, msg, data in procs]
            for (out, err), code, msg in results:
                with open(self.log_path, "ab") as f:
                    f.write(f"----- parallel round {rnd}: exit {code}; stdout: ".encode() + out + b"-----\n" + err)
                self.assertEqual(code, 0, f"round {rnd}: expected every parallel invocation to exit 0 with a JSON "
                                          f"line, one exited {code} with stdout {out!r}; stderr:\n"
                                          f"{err.decode('utf-8', 'replace')[-500:]}")
                self.assertEqual(json.loads(out)["statusCode"], 200)
                self.assertEqual(len(self.tg.replies_to(msg)), 1, f"round {rnd}: expected {msg['text']!r} answered")


class HandleDeadlineTest(HandleTestCase):

    def test_deadline_delivers_the_answer_so_far_and_keeps_it_in_history(self):
        self.llm.enqueue(Stall(pieces=["The first part of the answer. ", "The second part. ", "Never sent."],
                               stall_after=2, chunk_delay=0.2))
        update, msg = self.new_update(ALICE, "Tell me a very long story")
        run = self.handle(yandex_event(json.dumps(update)), timeout=15, HANDLE_DEADLINE=4)
        self.assertLessEqual(run.elapsed, 5.0, f"expected the invocation over within ~N+1 = 5 s with "
                                               f"HANDLE_DEADLINE=4, took {run.elapsed:.2f} s")
        self.assertEqual(run.status, 200, f"expected 200, got {run.response}")
        shown = "\n".join(self.tg.texts_in(ALICE.id))
        self.assertIn("The first part of the answer. The second part.", shown,
                      f"expected the answer so far delivered; the chat has {self.tg.texts_in(ALICE.id)!r}")
        self.assertIn(DEADLINE_CUT, shown, f"expected the notice {DEADLINE_CUT!r}; the chat has "
                                           f"{self.tg.texts_in(ALICE.id)!r}")
        self.assertNotIn("Never sent", shown)
        self.assertTrue(self.tg.replies_to(msg), "expected the partial answer to reply to the question")
        # Stored: the next invocation's model request carries it.
        update, msg2 = self.new_update(ALICE, "Go on")
        self.assertEqual(self.handle(yandex_event(json.dumps(update))).status, 200)
        self.assertEqual(len(self.tg.replies_to(msg2)), 1, "expected the next question answered")
        req = self.llm.requests[-1]
        self.assertEqual(req.roles(), ["user", "assistant", "user"],
                         f"expected the cut answer in the history, got {req.messages!r}")
        self.assertIn("The first part of the answer. The second part.", req.contents()[1],
                      f"expected the stored answer to hold what was said, got {req.contents()[1]!r}")

    def test_deadline_with_nothing_said_tells_the_user(self):
        self.llm.enqueue(Reply(delay=30))
        update, msg = self.new_update(ALICE, "Think forever")
        run = self.handle(yandex_event(json.dumps(update)), timeout=15, HANDLE_DEADLINE=4)
        self.assertLessEqual(run.elapsed, 5.0, f"expected the invocation over within ~5 s, took {run.elapsed:.2f} s")
        self.assertEqual(run.status, 200, f"expected 200, got {run.response}")
        replies = self.tg.replies_to(msg)
        self.assertTrue(replies and DEADLINE_NOTHING in replies[0].text,
                        f"expected {DEADLINE_NOTHING!r}...; the chat has {self.tg.texts_in(ALICE.id)!r}")

    def test_deadline_over_10_s_cuts_the_answer_5_s_before_it(self):
        self.llm.enqueue(Stall(pieces=["Slowly, ", "very slowly. ", "Never sent."], stall_after=2, chunk_delay=0.2))
        update, msg = self.new_update(ALICE, "A long deadline")
        run = self.handle(yandex_event(json.dumps(update)), timeout=25, HANDLE_DEADLINE=12)
        self.assertEqual(run.status, 200)
        # Cut at 7 s; delivering and storing the part take a moment more on a loaded machine (well before 12 s).
        self.assertTrue(6.0 <= run.elapsed <= 9.5, f"expected the answer cut at N-5 = 7 s with HANDLE_DEADLINE=12, "
                                                  f"the invocation took {run.elapsed:.2f} s")
        shown = "\n".join(self.tg.texts_in(ALICE.id))
        self.assertIn("Slowly, very slowly.", shown)
        self.assertIn(DEADLINE_CUT, shown)

    def test_hanging_telegram_does_not_keep_the_invocation_past_the_deadline(self):
        self.tg.slow("sendMessage", 30, times=5)
        update, _ = self.new_update(ALICE, "Telegram is slow today")
        run = self.handle(yandex_event(json.dumps(update)), timeout=20, HANDLE_DEADLINE=4)
        self.assertLessEqual(run.elapsed, 5.5, f"expected the invocation over within ~N+1 = 5 s although "
                                               f"sendMessage hangs, took {run.elapsed:.2f} s")

    def test_hanging_getme_on_a_cold_start_does_not_keep_the_invocation_past_the_deadline(self):
        self.tg.slow("getMe", 30, times=5)
        update, _ = self.new_update(ALICE, "Who are you")
        run = self.handle(yandex_event(json.dumps(update)), timeout=20, HANDLE_DEADLINE=4)
        self.assertLessEqual(run.elapsed, 5.5, f"expected the invocation over within ~N+1 = 5 s although getMe "
                                               f"hangs, took {run.elapsed:.2f} s")

    def test_update_journaled_while_getme_hangs_is_answered_by_a_later_invocation(self):
        # The claim goes beside getMe: at the deadline the update waits in the gate for the
        # identity, and must be released from the journal for Telegram's next delivery.
        self.tg.slow("getMe", 30, times=1)
        update, msg = self.new_update(ALICE, "Who are you")
        event = yandex_event(json.dumps(update))
        self.assertEqual(self.handle(event, timeout=20, HANDLE_DEADLINE=3).status, 503)
        self.assertEqual(self.tg.replies_to(msg), [])
        self.assertEqual(self.handle(event).status, 200)
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["Echo: Who are you"],
                         "expected the update answered by the next invocation, not skipped as a repeat")

    def test_question_left_unanswered_at_the_deadline_is_answered_by_a_later_invocation(self):
        # Telegram's flood limit outlasts the invocation: the answer cannot be delivered in time.
        self.tg.fail("sendMessage", error_code=429, retry_after=10)
        update, msg = self.new_update(ALICE, "Rate limited question")
        event = yandex_event(json.dumps(update))
        run = self.handle(event, timeout=20, HANDLE_DEADLINE=4)
        self.assertLessEqual(run.elapsed, 5.5, f"expected the invocation over within ~5 s, took {run.elapsed:.2f} s")
        self.assertEqual(self.tg.replies_to(msg), [], "the flood limit kept the answer from being delivered")
        # The update was not handled (nobody got an answer), so neither a redelivery of it nor the
        # next invocation may leave the question unanswered for good.
        self.handle(event, HANDLE_DEADLINE=4)
        later, later_msg = self.new_update(ALICE, "Hello again")
        self.handle(yandex_event(json.dumps(later)), HANDLE_DEADLINE=4)
        self.assertEqual(len(self.tg.replies_to(later_msg)), 1, "expected the next question answered")
        self.assertTrue(self.tg.replies_to(msg),
                        f"expected the question the deadline left unanswered to be answered by the redelivery "
                        f"or the next invocation; it never was. The chat has {self.tg.texts_in(ALICE.id)!r}")

    def test_fast_answer_is_not_cut_by_a_short_deadline(self):
        self.llm.enqueue(answer("A quick and complete answer."))
        update, msg = self.new_update(ALICE, "Quick one")
        run = self.handle(yandex_event(json.dumps(update)), timeout=15, HANDLE_DEADLINE=4)
        self.assertEqual(run.status, 200)
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], ["A quick and complete answer."])
        self.assertLess(run.elapsed, 2.5, f"expected a fast answer not to wait for the deadline, took "
                                          f"{run.elapsed:.2f} s")



class HandleQuickAnswerTest(HandleTestCase):
    """A quick answer with Telegram's own pacing: its draft does not hold the final message a second."""

    pacing = None   # TELEGRAM_PACING unset

    def test_an_answer_streamed_for_50_ms_ends_the_invocation_at_once(self):
        text = "A quick answer, streamed for a moment."
        self.llm.enqueue(answer(text, chunks=3, chunk_delay=0.025))
        update, msg = self.new_update(ALICE, "Quick one")
        run = self.handle(yandex_event(json.dumps(update)), timeout=15)
        ended = time.monotonic()
        self.assertEqual(run.status, 200, f"expected 200, got {run.response}")
        self.assertEqual([r.text for r in self.tg.replies_to(msg)], [text])
        drafts = self.tg.calls_of("sendMessageDraft", chat_id=ALICE.id)
        final = self.tg.calls_of("sendMessage", chat_id=ALICE.id)
        self.assertEqual(len(drafts), 1, f"expected one draft for a 50 ms stream, got {len(drafts)}")
        gap = final[0].time - drafts[0].time
        self.assertLess(gap, 0.3, f"expected the final message well under a second after the draft (< 0.3 s); "
                                  f"it came {gap:.3f} s after")
        # The fakes and this test read one monotonic clock.
        took = ended - self.llm.requests[0].time
        self.assertLess(took, 0.5, f"expected the invocation over within 0.5 s of asking the model (a 50 ms "
                                   f"answer); it took {took:.3f} s (the whole run: {run.elapsed:.2f} s)")

if __name__ == "__main__":
    main()
