"""`tgllm lambda`: the AWS Lambda custom runtime loop against a fake Runtime API."""

import base64
import json

from fake_lambda import FakeLambda
from fake_telegram import Chat
from harness import ALICE, BotProcess, BotTestCase, main, run_bin


def function_url_event(update: dict, secret=None, base64_body=False) -> dict:
    """An AWS Lambda Function URL (payload 2.0) event carrying update."""
    body = json.dumps(update)
    headers = {"content-type": "application/json"}
    if secret:
        headers["x-telegram-bot-api-secret-token"] = secret
    return {
        "version": "2.0", "rawPath": "/", "rawQueryString": "", "headers": headers,
        "requestContext": {"http": {"method": "POST", "path": "/"}},
        "body": base64.b64encode(body.encode()).decode() if base64_body else body,
        "isBase64Encoded": base64_body,
    }


class LambdaRuntimeTest(BotTestCase):

    def setUp(self):
        super().setUp()
        self.runtime = FakeLambda(idle_limit=1.0).start()   # every event is pushed before the bot starts
        self.addCleanup(self.runtime.stop)

    def test_events_are_answered_one_after_another_with_history(self):
        chat = Chat.private(ALICE)
        first = self.tg.update("message", self.tg.message(chat, ALICE, "first over lambda"))
        second = self.tg.update("message", self.tg.message(chat, ALICE, "second over lambda"))
        self.runtime.push("req-1", function_url_event(first, secret="lambda-secret"))
        self.runtime.push("req-2", function_url_event(second, secret="lambda-secret", base64_body=True))
        bot = self.start_bot_lambda()
        kind, resp = self.runtime.wait_response("req-1")
        self.assertEqual((kind, resp["statusCode"]), ("response", 200), f"got {kind} {resp}")
        kind, resp = self.runtime.wait_response("req-2")
        self.assertEqual((kind, resp["statusCode"]), ("response", 200), f"got {kind} {resp}")
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: first over lambda", "Echo: second over lambda"])
        second_request = self.llm.requests_with("second over lambda")[0]
        self.assertEqual(len(second_request.messages), 3, "expected the second event to carry the first exchange")
        # With no more events the fake answers 500 and the runtime stops.
        self.assertIsNotNone(bot.wait(10), "expected the runtime to stop when the Runtime API fails")

    def test_a_wrong_secret_gets_401_and_no_answer(self):
        forged = self.tg.update("message", self.tg.message(Chat.private(ALICE), ALICE, "forged"))
        genuine = self.tg.update("message", self.tg.message(Chat.private(ALICE), ALICE, "genuine"))
        self.runtime.push("req-x", function_url_event(forged, secret="wrong"))
        self.runtime.push("req-y", function_url_event(genuine, secret="lambda-secret"))
        self.start_bot_lambda()
        kind, resp = self.runtime.wait_response("req-x")
        self.assertEqual((kind, resp["statusCode"]), ("response", 401), f"got {kind} {resp}")
        # Events are handled one after another: once the next is answered, the forged one is through.
        kind, resp = self.runtime.wait_response("req-y")
        self.assertEqual((kind, resp["statusCode"]), ("response", 200), f"got {kind} {resp}")
        self.assertEqual([r.last_content for r in self.llm.requests], ["genuine"],
                         "expected no model call for the forged event")
        self.assertEqual(self.tg.texts_in(ALICE.id), ["Echo: genuine"], "expected no answer to the forged event")

    def test_without_the_runtime_api_it_says_where_it_runs(self):
        res = run_bin(["lambda"], self.bot_env())
        self.assertEqual(res.returncode, 2, f"expected exit 2 without AWS_LAMBDA_RUNTIME_API, got {res.returncode}")
        self.assertIn("AWS_LAMBDA_RUNTIME_API", res.stderr.decode())

    def start_bot_lambda(self):
        bot = BotProcess(self.bot_env(AWS_LAMBDA_RUNTIME_API=self.runtime.address, WEBHOOK_SECRET="lambda-secret"),
                         self.log_path, args=("lambda",))
        self.bots.append(bot)
        self.addCleanup(bot.kill)
        return bot


if __name__ == "__main__":
    main()
