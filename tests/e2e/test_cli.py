"""The command line: --help, --version, and configuration errors (exit 2 with
one line naming the variable, before talking to anyone)."""

import re

from harness import BotTestCase, main, run_bin


class CommandLineTest(BotTestCase):

    def run_poll(self, args=("poll",), **env):
        result = run_bin(list(args), self.bot_env(**env), timeout=15)
        out = result.stdout.decode("utf-8", "replace")
        err = result.stderr.decode("utf-8", "replace")
        self.assertNoSecretIn(out + err, "the bot's output")
        return result.returncode, out, err

    def assertConfigError(self, variable: str, alternatives=(), **env):
        code, out, err = self.run_poll(**env)
        self.assertEqual(code, 2, f"expected exit status 2 for bad {variable}, got {code}; stderr: {err!r}")
        lines = [ln for ln in err.splitlines() if ln.strip()]
        self.assertEqual(len(lines), 1, f"expected one line on stderr, got {lines!r}")
        names = (variable, *alternatives)
        self.assertTrue(any(n in lines[0] for n in names), f"expected the line to name {' or '.join(names)}: "
                                                            f"{lines[0]!r}")
        self.assertEqual([c.method for c in self.tg.calls], [], "expected no Telegram call with a bad config")
        self.assertEqual(self.llm.requests, [], "expected no model call with a bad config")

    def test_help_prints_usage_and_exits_zero(self):
        code, out, err = self.run_poll(args=("--help",))
        self.assertEqual(code, 0)
        self.assertIn("poll", out + err, "expected the usage to mention the poll command")

    def test_version_prints_name_and_version(self):
        code, out, err = self.run_poll(args=("--version",))
        self.assertEqual(code, 0)
        self.assertRegex(out.strip(), r"^tgllm \d+\.\d+", f"expected 'tgllm <version>' on stdout, got {out!r}")

    def test_unknown_subcommand_exits_2(self):
        code, out, err = self.run_poll(args=("frobnicate",))
        self.assertEqual(code, 2, f"expected exit 2 for an unknown command; stderr {err!r}")
        self.assertEqual([c.method for c in self.tg.calls], [])

    def test_missing_token_exits_2_naming_it(self):
        self.assertConfigError("TG_BOT_TOKEN", TG_BOT_TOKEN=None)

    def test_missing_allowlist_exits_2_naming_it(self):
        self.assertConfigError("TG_BOT_CHATS", TG_BOT_CHATS=None)

    def test_missing_api_key_exits_2_naming_it(self):
        self.assertConfigError("OPENAI_API_KEY", ("PROXY_API_KEY",), OPENAI_API_KEY=None, PROXY_API_KEY=None)

    def test_unknown_store_exits_2_naming_it(self):
        self.assertConfigError("STORE", STORE="bogus:x")

    def test_invalid_model_url_exits_2_naming_it(self):
        self.assertConfigError("OPENAI_BASE_URL", OPENAI_BASE_URL="notaurl")

    def test_invalid_context_tokens_exits_2_naming_it(self):
        self.assertConfigError("CONTEXT_TOKENS", CONTEXT_TOKENS="abc")

    def test_other_invalid_values_exit_2_naming_them(self):
        cases = [
            ("CONTEXT_TOKENS", {"CONTEXT_TOKENS": "-5"}),
            ("LOG_LEVEL", {"LOG_LEVEL": "loud"}),
            ("TELEGRAM_API_BASE", {"TELEGRAM_API_BASE": "notaurl"}),
            ("TG_BOT_CHATS", {"TG_BOT_CHATS": "bad name!"}),
        ]
        cases += [("TELEGRAM_PACING", {"TELEGRAM_PACING": value})
                  for value in ("1,3", "1,3,30,4", "fast", "1;3;30", "-1,3,30", "1,3,30x", "1,,30", "nan,3,30")]
        for variable, env in cases:
            with self.subTest(variable=variable, value=list(env.values())[0]):
                self.assertConfigError(variable, **env)

    def test_config_error_never_prints_the_token(self):
        code, out, err = self.run_poll(STORE="bogus:x", LOG_LEVEL="debug")
        self.assertEqual(code, 2)
        self.assertFalse(re.search(r"TEST-token", out + err), "expected the token not to be printed")


if __name__ == "__main__":
    main()
