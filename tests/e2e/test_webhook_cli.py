"""The webhook commands: `tgllm set-webhook URL [--certificate FILE]
[--drop-pending]`, `tgllm delete-webhook [--drop-pending]`, `tgllm
webhook-info`; and `tgllm poll` when a webhook is set (refuses, or deletes it
with --delete-webhook). Also checks the fake's webhook state itself."""

import json
import re
import urllib.error
import urllib.request

from harness import ALICE, ALLOWED_UPDATES, TOKEN, BotProcess, BotTestCase, _tail, main, run_bin

SECRET = "cli-Webhook_secret-0099"
URL = "https://bot.example.com/telegram/hook"
CERT = ("-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIHRlc3RzMAoGCCqGSM49BAMC\n"
        "-----END CERTIFICATE-----\n")


class WebhookCliTestCase(BotTestCase):

    def cli(self, *args, **env):
        """Runs a webhook command; returns (exit code, stdout, stderr). Neither output may hold the token."""
        r = run_bin(list(args), self.bot_env(**env), timeout=30)
        out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"----- tgllm {' '.join(args)}: exit {r.returncode}\n--- stdout:\n{out}--- stderr:\n{err}")
        self.assertNoSecretIn(out, f"the stdout of tgllm {args[0]}")
        self.assertNoSecretIn(err, f"the stderr of tgllm {args[0]}")
        return r.returncode, out, err

    def only_call(self, method: str):
        calls = self.tg.calls_of(method)
        self.assertEqual(len(calls), 1, f"expected one {method} call, got {len(calls)}:\n{self.tg.describe()}")
        return calls[0]


class SetWebhookTest(WebhookCliTestCase):

    def test_set_webhook_sends_url_and_allowed_updates_as_multipart(self):
        code, out, err = self.cli("set-webhook", URL)
        self.assertEqual(code, 0, f"expected exit 0, got {code}; stderr:\n{err}")
        call = self.only_call("setWebhook")
        self.assertTrue(call.content_type.startswith("multipart/form-data"),
                        f"expected a multipart/form-data request, got {call.content_type!r}")
        self.assertEqual(call.params.get("url"), URL)
        self.assertEqual(call.params.get("allowed_updates"), ALLOWED_UPDATES,
                         f"expected allowed_updates {ALLOWED_UPDATES}, got {call.params.get('allowed_updates')!r}")
        for absent in ("secret_token", "drop_pending_updates"):
            self.assertIn(call.params.get(absent, False), (False, "false"),
                          f"expected no {absent} by default, got {call.params.get(absent)!r}")
        self.assertEqual(call.files, {}, "expected no certificate upload without --certificate")
        self.assertEqual(self.tg.webhook.url, URL)
        self.assertIn(URL, out, f"expected the command to say what it did (the URL); stdout:\n{out}")

    def test_set_webhook_sends_the_secret_from_the_environment(self):
        code, out, err = self.cli("set-webhook", URL, WEBHOOK_SECRET=SECRET)
        self.assertEqual(code, 0, f"expected exit 0; stderr:\n{err}")
        self.assertEqual(self.only_call("setWebhook").params.get("secret_token"), SECRET)
        self.assertEqual(self.tg.webhook.secret_token, SECRET)
        self.assertNotIn(SECRET, out + err, "expected the secret itself never printed")

    def test_drop_pending_forgets_waiting_updates(self):
        self.tg.send_private(ALICE, "Waiting since yesterday")
        code, _, err = self.cli("set-webhook", URL, "--drop-pending")
        self.assertEqual(code, 0, f"expected exit 0; stderr:\n{err}")
        self.assertIs(self.only_call("setWebhook").params.get("drop_pending_updates"), True)
        self.assertEqual(self.tg.webhook_info()["pending_update_count"], 0, "expected pending updates dropped")
        self.assertEqual(len(self.tg.dropped_updates), 1)

    def test_certificate_is_uploaded_as_a_file(self):
        cert = self.tmp / "public.pem"
        cert.write_text(CERT)
        code, out, err = self.cli("set-webhook", URL, "--certificate", str(cert), "--drop-pending")
        self.assertEqual(code, 0, f"expected exit 0; stderr:\n{err}")
        call = self.only_call("setWebhook")
        self.assertIn("certificate", call.files, f"expected a certificate file part; params {call.params!r}")
        self.assertEqual(call.files["certificate"].data, CERT.encode(), "expected the file's exact bytes uploaded")
        self.assertEqual(call.params.get("url"), URL)
        self.assertIs(call.params.get("drop_pending_updates"), True)
        self.assertTrue(self.tg.webhook_info()["has_custom_certificate"])

    def test_missing_certificate_file_fails_without_calling_telegram_successfully(self):
        code, out, err = self.cli("set-webhook", URL, "--certificate", str(self.tmp / "no-such.pem"))
        self.assertNotEqual(code, 0, "expected failure for a certificate file that does not exist")
        self.assertEqual(self.tg.webhook.url, "", "expected no webhook set")

    def test_telegram_error_is_printed_and_exit_is_1(self):
        code, out, err = self.cli("set-webhook", "http://bot.example.com/hook")
        self.assertEqual(code, 1, f"expected exit 1 when Telegram refuses; stdout:\n{out}\nstderr:\n{err}")
        self.assertIn("An HTTPS URL must be provided for webhook", out + err,
                      f"expected Telegram's error printed; stdout:\n{out}\nstderr:\n{err}")
        self.assertEqual(self.tg.webhook.url, "")

    def test_unauthorized_token_is_reported_without_printing_it(self):
        self.tg.fail("setWebhook", error_code=401, description="Unauthorized")
        code, out, err = self.cli("set-webhook", URL)
        self.assertEqual(code, 1, f"expected exit 1; stderr:\n{err}")
        self.assertIn("Unauthorized", out + err)

    def test_an_error_that_echoes_the_token_is_printed_masked(self):
        # Telegram's descriptions may quote what they were given: a URL that carries the token.
        self.tg.fail("setWebhook", error_code=400, description=f"Bad Request: bad webhook: {URL}/{TOKEN}")
        code, out, err = self.cli("set-webhook", URL)  # cli() fails on any 8 bytes of the token
        self.assertEqual(code, 1, f"expected exit 1; stderr:\n{err}")
        self.assertIn(f"Bad Request: bad webhook: {URL}/***", err)

    def test_unreachable_telegram_is_exit_1(self):
        code, out, err = self.cli("set-webhook", URL, TELEGRAM_API_BASE="http://127.0.0.1:9")
        self.assertEqual(code, 1, f"expected exit 1 when Telegram cannot be reached; stderr:\n{err}")

    def test_set_webhook_without_url_is_a_usage_error(self):
        code, out, err = self.cli("set-webhook")
        self.assertNotEqual(code, 0)
        self.assertEqual(self.tg.calls_of("setWebhook"), [], "expected no call without a URL")


class DeleteWebhookTest(WebhookCliTestCase):

    def test_delete_webhook(self):
        self.tg.set_webhook(URL, secret_token=SECRET)
        self.tg.send_private(ALICE, "Still waiting")
        code, out, err = self.cli("delete-webhook")
        self.assertEqual(code, 0, f"expected exit 0; stderr:\n{err}")
        call = self.only_call("deleteWebhook")
        self.assertIn(call.params.get("drop_pending_updates", False), (False, "false"),
                      f"expected pending updates kept without --drop-pending, got {call.params!r}")
        self.assertEqual(self.tg.webhook.url, "")
        self.assertEqual(self.tg.webhook_info()["pending_update_count"], 1, "expected the pending update kept")
        self.assertTrue(out.strip(), "expected the command to say what it did")

    def test_delete_webhook_drop_pending(self):
        self.tg.set_webhook(URL)
        self.tg.send_private(ALICE, "Drop me")
        code, _, err = self.cli("delete-webhook", "--drop-pending")
        self.assertEqual(code, 0, f"expected exit 0; stderr:\n{err}")
        self.assertIs(self.only_call("deleteWebhook").params.get("drop_pending_updates"), True)
        self.assertEqual(self.tg.webhook_info()["pending_update_count"], 0)

    def test_delete_webhook_error_is_exit_1(self):
        self.tg.fail("deleteWebhook", error_code=500, description="Internal Server Error")
        code, out, err = self.cli("delete-webhook")
        self.assertEqual(code, 1)
        self.assertIn("Internal Server Error", out + err)


class WebhookInfoTest(WebhookCliTestCase):

    def test_info_shows_url_pending_count_and_last_error(self):
        self.tg.set_webhook(URL)
        for i in range(3):
            self.tg.send_private(ALICE, f"Undelivered {i}")
        self.tg.set_webhook_error("Wrong response from the webhook: 502 Bad Gateway", date=1700000000)
        code, out, err = self.cli("webhook-info")
        self.assertEqual(code, 0, f"expected exit 0; stderr:\n{err}")
        self.assertIn(URL, out)
        self.assertIn("Updates waiting to be delivered: 3", out)
        m = re.search(r"The last delivery failed at (.+?): Wrong response from the webhook: 502 Bad Gateway", out)
        self.assertTrue(m, f"expected 'The last delivery failed at <date>: <message>'; stdout:\n{out}")
        self.assertRegex(m.group(1), r"2023", f"expected the date of 1700000000 (2023-11-14), got {m.group(1)!r}")

    def test_info_without_errors(self):
        self.tg.set_webhook(URL, certificate=CERT.encode())
        code, out, err = self.cli("webhook-info")
        self.assertEqual(code, 0, f"expected exit 0; stderr:\n{err}")
        self.assertIn(URL, out)
        self.assertIn("Updates waiting to be delivered: 0", out)
        self.assertNotIn("The last delivery failed", out)

    def test_info_without_a_webhook(self):
        code, out, err = self.cli("webhook-info")
        self.assertEqual(code, 0, f"expected exit 0; stderr:\n{err}")
        self.assertNotIn("https://", out, "expected no URL when no webhook is set")

    def test_info_error_is_exit_1(self):
        self.tg.fail("getWebhookInfo", error_code=502, description="Bad Gateway")
        code, out, err = self.cli("webhook-info")
        self.assertEqual(code, 1)
        self.assertIn("Bad Gateway", out + err)


class PollWithWebhookTest(WebhookCliTestCase):

    def test_poll_refuses_to_run_while_a_webhook_is_set(self):
        self.tg.set_webhook(URL)
        bot = BotProcess(self.bot_env(), self.log_path, args=("poll",))
        self.bots.append(bot)
        self.addCleanup(bot.kill)
        code = bot.wait(15)
        self.assertEqual(code, 1, f"expected `tgllm poll` to exit 1 while a webhook is set, got {code}; "
                                  f"stderr:\n{_tail(self.log(), 15)}")
        self.assertLogged(r"webhook.*\bset\b", levels=("error", "warn"), what="saying a webhook is set")
        self.assertLogged(r"tgllm delete-webhook", levels=("error", "warn"), what="suggesting delete-webhook")
        self.assertLogged(r"tgllm poll --delete-webhook", levels=("error", "warn"),
                          what="suggesting poll --delete-webhook")
        self.assertEqual(self.tg.calls_of("deleteWebhook"), [], "expected the webhook left alone")
        self.assertEqual(self.tg.webhook.url, URL)

    def test_poll_delete_webhook_deletes_it_keeps_pending_updates_and_polls(self):
        self.tg.set_webhook(URL, secret_token=SECRET)
        waiting = self.tg.send_private(ALICE, "Sent while the webhook was set")
        bot = BotProcess(self.bot_env(), self.log_path, args=("poll", "--delete-webhook"))
        self.bots.append(bot)
        self.addCleanup(bot.kill)
        reply = self.wait_reply(waiting, timeout=15)
        self.assertEqual(reply.text, "Echo: Sent while the webhook was set",
                         "expected the update pending before the switch answered")
        self.assertEqual(self.tg.webhook.url, "")
        deletes = self.tg.calls_of("deleteWebhook")
        self.assertEqual(len(deletes), 1)
        self.assertIn(deletes[0].params.get("drop_pending_updates", False), (False, "false"),
                      "expected poll --delete-webhook not to drop pending updates")
        polls = self.tg.calls_of("getUpdates")
        self.assertTrue(polls and polls[0].time >= deletes[0].time, "expected deleteWebhook before getUpdates")
        conflicts = [c for c in self.tg.calls_of("getUpdates") if c.status == 409]
        self.assertEqual(conflicts, [], "expected no getUpdates conflict (409) after deleteWebhook")
        self.assertEqual(self.ask(ALICE, "And now?").text, "Echo: And now?")
        self.assertBotRunning(bot)

    def test_poll_without_a_webhook_does_not_delete_anything(self):
        self.start_bot()
        self.assertEqual(self.ask(ALICE, "Plain polling").text, "Echo: Plain polling")
        self.assertEqual(self.tg.calls_of("deleteWebhook"), [])


class FakeWebhookStateTest(BotTestCase):
    """The fake Telegram's webhook behaviour itself (no bot)."""

    def call(self, method, params=None):
        req = urllib.request.Request(f"{self.tg.base_url}/bot{TOKEN}/{method}", data=json.dumps(params or {}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def test_get_updates_conflicts_while_a_webhook_is_set(self):
        self.assertEqual(self.call("getUpdates")[0], 200)
        status, body = self.call("setWebhook", {"url": URL, "allowed_updates": ["message"]})
        self.assertEqual((status, body["result"], body["description"]), (200, True, "Webhook was set"))
        status, body = self.call("getUpdates")
        self.assertEqual(status, 409)
        self.assertEqual(body["description"], "Conflict: can't use getUpdates method while webhook is active; "
                                              "use deleteWebhook to delete the webhook first")
        status, body = self.call("getWebhookInfo")
        self.assertEqual(body["result"], {"url": URL, "has_custom_certificate": False, "pending_update_count": 0,
                                          "max_connections": 40, "allowed_updates": ["message"]})
        self.assertEqual(self.call("deleteWebhook")[1]["description"], "Webhook was deleted")
        self.assertEqual(self.call("deleteWebhook")[1]["description"], "Webhook is already deleted")
        self.assertEqual(self.call("getUpdates")[0], 200)

    def test_set_webhook_validates_like_telegram(self):
        for url, desc in (("http://x.example/h", "An HTTPS URL must be provided"),
                          ("https://x.example:8080/h", "ports 80, 88, 443 or 8443")):
            status, body = self.call("setWebhook", {"url": url})
            self.assertEqual(status, 400)
            self.assertIn(desc, body["description"])
        status, body = self.call("setWebhook", {"url": URL, "secret_token": "bad secret!"})
        self.assertEqual(status, 400)
        self.assertEqual(self.call("setWebhook", {"url": "https://x.example:8443/h"})[0], 200)
        # An empty url removes the webhook, as in the real API.
        self.assertEqual(self.call("setWebhook", {"url": ""})[1]["description"], "Webhook was deleted")
        self.assertEqual(self.tg.webhook.url, "")

    def test_last_error_is_reported_only_when_set(self):
        self.tg.set_webhook(URL)
        self.assertNotIn("last_error_message", self.call("getWebhookInfo")[1]["result"])
        self.tg.set_webhook_error("Connection timed out", date=1700000001)
        info = self.call("getWebhookInfo")[1]["result"]
        self.assertEqual((info["last_error_date"], info["last_error_message"]), (1700000001, "Connection timed out"))
        self.tg.set_webhook_error(None)
        self.assertNotIn("last_error_date", self.call("getWebhookInfo")[1]["result"])


if __name__ == "__main__":
    main()
