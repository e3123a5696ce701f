/*
 * Unit tests for src/lib/log.c: secrets are masked in every line, whole or in
 * pieces of 8 bytes or more, before a long line is cut; command output
 * (log_print) is masked the same way. What the log writes is read back from
 * a temporary file standing in for stderr.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"

#include "expect.h"

#define TOKEN "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
#define KEY   "sk-proj-Zx8Qm2Lr7Tn4Wv6Yb1Cd3Ef5"

struct captured {
	FILE *file;
	int saved_stderr;
};

static int setup(void **state)
{
	struct captured *c = calloc(1, sizeof *c);
	if (!c || !(c->file = tmpfile()))
		return -1;
	fflush(stderr);
	c->saved_stderr = dup(STDERR_FILENO);
	if (c->saved_stderr < 0 || dup2(fileno(c->file), STDERR_FILENO) < 0)
		return -1;
	log_set_level(LOG_LEVEL_DEBUG);
	log_add_secret(TOKEN);
	log_add_secret(KEY);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct captured *c = *state;
	fflush(stderr);
	dup2(c->saved_stderr, STDERR_FILENO);
	close(c->saved_stderr);
	fclose(c->file);
	free(c);
	log_forget_secrets();
	log_set_format(LOG_FORMAT_TEXT);
	return 0;
}

/* Everything written so far (the caller frees it); stderr is the test's own again, for cmocka's messages. */
static char *written(struct captured *c)
{
	fflush(stderr);
	dup2(c->saved_stderr, STDERR_FILENO);
	fflush(c->file);
	long len = ftell(c->file);
	char *out = calloc(1, (size_t)len + 1);
	if (!out)
		fail_msg("out of memory");
	rewind(c->file);
	if (fread(out, 1, (size_t)len, c->file) != (size_t)len)
		fail_msg("cannot read the captured output back");
	return out;
}

/* Fails when out holds any 8 bytes in a row of secret. */
static void expect_no_piece(const char *what, const char *out, const char *secret)
{
	for (size_t i = 0; i + 8 <= strlen(secret); i++) {
		char piece[9];
		memcpy(piece, secret + i, 8);
		piece[8] = '\0';
		if (strstr(out, piece))
			fail_msg("%s: expected no 8 bytes of a secret, found \"%s\" in:\n%s", what, piece,
			         out);
	}
}

static void test_a_whole_secret_is_masked(void **state)
{
	struct captured *c = *state;
	log_info("GET https://api.telegram.org/bot%s/getMe failed", TOKEN);
	char *out = written(c);
	expect_no_piece("a URL with the token", out, TOKEN);
	if (!strstr(out, "GET https://api.telegram.org/bot***/getMe failed\n"))
		fail_msg("expected the token replaced by ***, got:\n%s", out);
	free(out);
}

static void test_a_secret_cut_short_is_masked(void **state)
{
	struct captured *c = *state;
	/* A model error body cut at 200 bytes, the key's last characters gone. */
	log_warn("llm: HTTP 401: {\"error\":\"Incorrect API key provided: %.20s", KEY);
	/* Telegram's description echoing the token's tail. */
	log_warn("tg: 401 Unauthorized: bot %s", TOKEN + 14);
	char *out = written(c);
	expect_no_piece("a cut key and a token's tail", out, KEY);
	expect_no_piece("a cut key and a token's tail", out, TOKEN);
	if (!strstr(out, "Incorrect API key provided: ***\n") || !strstr(out, "Unauthorized: bot ***\n"))
		fail_msg("expected each piece replaced by ***, got:\n%s", out);
	free(out);
}

static void test_a_long_line_is_masked_before_it_is_cut(void **state)
{
	struct captured *c = *state;
	char pad[4100];
	for (size_t shift = 4060; shift < 4100; shift += 7) {
		memset(pad, 'x', shift);
		pad[shift] = '\0';
		log_error("%s%s and more", pad, TOKEN);
	}
	char *out = written(c);
	expect_no_piece("lines over 4 KB with the token at their cut", out, TOKEN);
	for (char *line = out, *end; (end = strchr(line, '\n')) != NULL; line = end + 1)
		if (end - line > 4096 + 200)
			fail_msg("expected a line cut near 4 KB, got %zu bytes", (size_t)(end - line));
	free(out);
}

static void test_a_line_is_cut_at_a_character_start(void **state)
{
	struct captured *c = *state;
	char text[6000] = "";
	while (strlen(text) + 2 < sizeof text - 1)
		strcat(text, "ж");
	log_info("%s", text);
	char *out = written(c);
	const char *at = strstr(out, "…\n");
	if (!at)
		fail_msg("expected a cut line to end with …, got %zu bytes", strlen(out));
	/* Before the ellipsis: whole two-byte characters only. */
	const char *start = strstr(out, "level=info ") + strlen("level=info ");
	if ((at - start) % 2 != 0)
		fail_msg("expected the cut at a character's start, got %zu bytes of two-byte characters",
		         (size_t)(at - start));
	free(out);
}

static void test_text_without_secrets_is_unchanged(void **state)
{
	struct captured *c = *state;
	log_info("chat=123456700 update=12345670: answered in 1234 ms, 123456 tokens");
	char *out = written(c);
	if (!strstr(out, "level=info chat=123456700 update=12345670: answered in 1234 ms, 123456 tokens\n"))
		fail_msg("expected the line as written, got:\n%s", out);
	free(out);
}

static void test_command_output_is_masked_too(void **state)
{
	struct captured *c = *state;
	log_print(stderr, "tgllm: setWebhook failed: 400 Bad Request: bad webhook: %s", TOKEN);
	log_print(stderr, "Webhook: https://example.org/hook/%s", TOKEN + 10);
	char *out = written(c);
	expect_no_piece("set-webhook's and webhook-info's output", out, TOKEN);
	if (!strstr(out, "tgllm: setWebhook failed: 400 Bad Request: bad webhook: ***\n") ||
	    !strstr(out, "Webhook: https://example.org/hook/***\n") || strstr(out, "level="))
		fail_msg("expected the lines masked, without the log's prefix, got:\n%s", out);
	free(out);
}

static void test_lines_under_the_level_are_not_written(void **state)
{
	struct captured *c = *state;
	log_set_level(LOG_LEVEL_WARN);
	log_info("not shown");
	log_warn("shown");
	char *out = written(c);
	if (strstr(out, "not shown") || !strstr(out, "level=warn shown\n"))
		fail_msg("expected only the warning, got:\n%s", out);
	free(out);
}

/* Each line of out as a JSON object (new references in lines[]); fails on a line that is not one. */
static size_t json_lines(const char *out, json_t **lines, size_t max)
{
	size_t n = 0;
	for (const char *line = out, *end; (end = strchr(line, '\n')) != NULL && n < max; line = end + 1) {
		json_error_t e;
		lines[n] = json_loadb(line, (size_t)(end - line), 0, &e);
		if (!json_is_object(lines[n]))
			fail_msg("expected line %zu to be a JSON object (%s), got: %.*s", n + 1, e.text,
			         (int)(end - line), line);
		n++;
	}
	return n;
}

static void test_json_lines_carry_the_message_and_its_fields(void **state)
{
	struct captured *c = *state;
	log_set_format(LOG_FORMAT_JSON);
	log_info("bot: update=12345670 chat=-100123: user=@alice answered in 1234 ms, ok=yes");
	log_warn("tg: \"quoted\" \\ and a tab\there, bad byte \xff, token %s", TOKEN);
	char *out = written(c);
	json_t *lines[2];
	expect_int("lines", 2, (int)json_lines(out, lines, 2));
	expect_str("level", "info", json_string_value(json_object_get(lines[0], "level")));
	expect_str("component", "bot", json_string_value(json_object_get(lines[0], "component")));
	expect_str("msg", "bot: update=12345670 chat=-100123: user=@alice answered in 1234 ms, ok=yes",
	           json_string_value(json_object_get(lines[0], "msg")));
	expect_int("update, a number", 12345670,
	           (int)json_integer_value(json_object_get(lines[0], "update")));
	expect_int("chat, a number", -100123, (int)json_integer_value(json_object_get(lines[0], "chat")));
	expect_str("a word that is no number", "@alice",
	           json_string_value(json_object_get(lines[0], "user")));
	expect_str("ok", "yes", json_string_value(json_object_get(lines[0], "ok")));
	const char *time = json_string_value(json_object_get(lines[0], "time"));
	if (!time || strlen(time) != 24 || time[23] != 'Z')
		fail_msg("expected an ISO 8601 UTC time, got %s", time ? time : "none");
	expect_str("escapes and U+FFFD",
	           "tg: \"quoted\" \\ and a tab\there, bad byte \xef\xbf\xbd, token ***",
	           json_string_value(json_object_get(lines[1], "msg")));
	expect_no_piece("JSON lines", out, TOKEN);
	json_decref(lines[0]);
	json_decref(lines[1]);
	free(out);
}

static void test_a_long_json_line_is_cut_and_stays_json(void **state)
{
	struct captured *c = *state;
	log_set_format(LOG_FORMAT_JSON);
	char pad[5000];
	memset(pad, '"', sizeof pad - 1);
	pad[sizeof pad - 1] = '\0';
	log_error("%s%s", pad, TOKEN);
	char *out = written(c);
	json_t *line;
	expect_int("lines", 1, (int)json_lines(out, &line, 1));
	expect_no_piece("a cut JSON line", out, TOKEN);
	json_decref(line);
	free(out);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_a_whole_secret_is_masked),
	    T(test_a_secret_cut_short_is_masked),
	    T(test_a_long_line_is_masked_before_it_is_cut),
	    T(test_a_line_is_cut_at_a_character_start),
	    T(test_text_without_secrets_is_unchanged),
	    T(test_command_output_is_masked_too),
	    T(test_lines_under_the_level_are_not_written),
	    T(test_json_lines_carry_the_message_and_its_fields),
	    T(test_a_long_json_line_is_cut_and_stays_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
