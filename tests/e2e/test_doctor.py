"""`tgllm doctor`: a line per check with ✓ or ✗ and a hint, exit 0 only when
every check passes; each check made to fail in turn against the fakes."""

import os
import shutil
import tempfile

from harness import API_KEY, BotTestCase, main, run_bin
from s3_server import S3Server


class DoctorTestCase(BotTestCase):
    """Runs `tgllm doctor` against the fakes, a model API that lists its models and wants the key."""

    def setUp(self):
        super().setUp()
        self.llm.models = ["gpt-4o-mini", "gpt-4o"]
        self.llm.api_key = API_KEY

    def doctor(self, **env) -> tuple:
        """(exit status, the ✓/✗ lines)."""
        result = run_bin(["doctor"], self.bot_env(**env), timeout=30)
        out = result.stdout.decode("utf-8", "replace")
        self.assertNoSecretIn(out + result.stderr.decode("utf-8", "replace"), "doctor's output")
        return result.returncode, out.splitlines()

    def line(self, lines: list, start: str) -> str:
        found = [ln for ln in lines if ln[2:].startswith(start)]
        self.assertTrue(found, f"expected a line about {start!r}; got:\n" + "\n".join(lines))
        return found[0]

    def assertPassed(self, lines: list, start: str):
        ln = self.line(lines, start)
        self.assertTrue(ln.startswith("✓ "), f"expected ✓ for {start!r}, got {ln!r}")

    def assertFailed(self, lines: list, start: str, hint: str):
        ln = self.line(lines, start)
        self.assertTrue(ln.startswith("✗ "), f"expected ✗ for {start!r}, got {ln!r}")
        self.assertIn(hint, ln, f"expected the hint {hint!r} in {ln!r}")


class DoctorTest(DoctorTestCase):

    def test_everything_set_up_right_passes(self):
        code, lines = self.doctor()
        self.assertEqual(code, 0, "\n".join(lines))
        for start in ("configuration", "CA certificates", "Telegram", "webhook", "model API", "store"):
            self.assertPassed(lines, start)
        self.assertIn(f"@{self.tg.bot.username}", self.line(lines, "Telegram"))
        self.assertIn("gpt-4o-mini is offered", self.line(lines, "model API"))
        self.assertIn("written, read and deleted", self.line(lines, "store"))
        self.assertEqual(lines[-1], "all checks passed")

    def test_a_rejected_token(self):
        code, lines = self.doctor(TG_BOT_TOKEN="123:wrong-token-abcdef")
        self.assertEqual(code, 1)
        self.assertFailed(lines, "Telegram", "check TG_BOT_TOKEN")

    def test_a_webhook_that_fails_deliveries(self):
        self.tg.set_webhook("https://bot.example/hook")
        self.tg.set_webhook_error("Connection refused")
        code, lines = self.doctor()
        self.assertEqual(code, 1)
        self.assertFailed(lines, "webhook: https://bot.example/hook", "Connection refused")

    def test_a_webhook_set_is_told_to_fit_serve_not_poll(self):
        self.tg.set_webhook("https://bot.example/hook")
        code, lines = self.doctor()
        self.assertEqual(code, 0)
        self.assertIn("poll --delete-webhook", self.line(lines, "webhook"))

    def test_a_rejected_model_key(self):
        self.llm.api_key = "sk-another-key-0000"
        code, lines = self.doctor()
        self.assertEqual(code, 1)
        self.assertFailed(lines, "model API", "check OPENAI_API_KEY")

    def test_a_model_the_api_does_not_offer(self):
        code, lines = self.doctor(OPENAI_MODEL="gpt-9-imaginary")
        self.assertEqual(code, 1)
        self.assertFailed(lines, "model API", "check OPENAI_MODEL")
        self.assertIn("gpt-4o-mini, gpt-4o", self.line(lines, "model API"))

    def test_without_a_models_endpoint_a_one_token_request_is_made(self):
        self.llm.models = None
        code, lines = self.doctor()
        self.assertEqual(code, 0, "\n".join(lines))
        self.assertIn("answers", self.line(lines, "model API"))
        body = self.llm.requests[-1].body
        self.assertEqual(body.get("max_tokens"), 1)
        self.assertEqual(body.get("model"), "gpt-4o-mini")

    def test_a_database_that_cannot_be_written(self):
        missing = os.path.join(tempfile.gettempdir(), "tgllm-no-such-dir", "x", "bot.db")
        code, lines = self.doctor(STORE=f"sqlite:{missing}")
        self.assertEqual(code, 1)
        self.assertFailed(lines, "store", "may write the database file and its folder")

    def test_ca_bundle_a_file_a_hashed_directory_or_neither(self):
        work = tempfile.mkdtemp(prefix="tgllm-doctor-ca-")
        self.addCleanup(shutil.rmtree, work)
        system = "/etc/ssl/certs/ca-certificates.crt"
        if os.path.exists(system):
            code, lines = self.doctor(CA_BUNDLE=system)
            self.assertEqual(code, 0, "\n".join(lines))
            self.assertRegex(self.line(lines, "CA certificates"), r"ca-certificates\.crt \(\d{2,}\)")
        hashed = os.path.join(work, "hashed")
        os.mkdir(hashed)
        for name in ("0123abcd.0", "0123abcd.1", "89abcdef.0", "README"):
            with open(os.path.join(hashed, name), "w") as f:
                f.write("-----BEGIN CERTIFICATE-----\n")
        code, lines = self.doctor(CA_BUNDLE=hashed)
        self.assertIn(f"{hashed} (3)", self.line(lines, "CA certificates"))
        empty = os.path.join(work, "empty")
        os.mkdir(empty)
        code, lines = self.doctor(CA_BUNDLE=empty)
        self.assertEqual(code, 1)
        self.assertFailed(lines, "CA_BUNDLE", "openssl rehash")

    def test_a_configuration_error_is_a_failed_check(self):
        code, lines = self.doctor(TG_BOT_TOKEN=None)
        self.assertEqual(code, 1)
        self.assertFailed(lines, "configuration", "TG_BOT_TOKEN")


class DoctorS3Test(DoctorTestCase):
    """The store check against an S3 server: the bucket there, and missing; whether the server
    enforces conditional writes, answers 501 to them, or ignores them."""

    def start_s3(self, conditions: str = "enforce") -> S3Server:
        s3 = S3Server(conditions=conditions).start()
        self.addCleanup(s3.stop)
        return s3

    def s3_env(self, s3: S3Server, bucket: str) -> dict:
        return {"STORE": f"s3://{bucket}/prefix/", "S3_ENDPOINT": s3.endpoint, "S3_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}

    def test_a_bucket_is_written_read_and_cleaned(self):
        s3 = self.start_s3()
        code, lines = self.doctor(**self.s3_env(s3, "bucket"))
        self.assertEqual(code, 0, "\n".join(lines))
        self.assertIn("written, read and deleted", self.line(lines, "store s3://bucket/prefix/"))
        self.assertPassed(lines, "S3 conditional writes: enforced")
        self.assertEqual([k for k in s3.keys("bucket") if not k.startswith("prefix/tgllm/")], [],
                         "expected the test record deleted")
        self.assertNotIn("prefix/tgllm/doctor-conditional-write", s3.keys("bucket"),
                         "expected the conditional-write test object deleted")

    def test_a_missing_bucket(self):
        s3 = self.start_s3()
        code, lines = self.doctor(**self.s3_env(s3, "no-such-bucket"))
        self.assertEqual(code, 1)
        self.assertFailed(lines, "store s3://no-such-bucket/prefix/", "check the bucket")
        self.assertFalse([ln for ln in lines if "conditional writes" in ln],
                         "expected no conditional-write check without a working store")

    def test_a_server_without_conditional_writes_is_reported(self):
        s3 = self.start_s3(conditions="501")  # as OpenStack Swift's s3api
        code, lines = self.doctor(**self.s3_env(s3, "bucket"))
        self.assertEqual(code, 0, "\n".join(lines))
        self.assertIn("not for parallel serverless invocations",
                      self.line(lines, "S3 conditional writes: not supported (501)"))

    def test_a_server_that_ignores_conditional_writes_fails(self):
        s3 = self.start_s3(conditions="ignore")
        code, lines = self.doctor(**self.s3_env(s3, "bucket"))
        self.assertEqual(code, 1)
        self.assertFailed(lines, "S3 conditional writes: ignored", "use a server that enforces them")
        self.assertNotIn("prefix/tgllm/doctor-conditional-write", s3.keys("bucket"))


if __name__ == "__main__":
    main()
