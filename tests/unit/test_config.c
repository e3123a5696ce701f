/*
 * Unit tests for src/config.c: the environment -> struct config. Every
 * variable config_load reads is cleared before each test, so a test sees only
 * what it sets; errors must name the variable to fix.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "lib/log.h"

#include "expect.h"

#define TOKEN      "123456:AAE-secret-bot-token_xyz"
#define PROXY_KEY  "sk-proxy-secret-key"
#define OPENAI_KEY "sk-openai-secret-key"

/* Every variable config.c reads. */
static const char *const config_vars[] = {
    "TG_BOT_TOKEN",
    "TELEGRAM_API_BASE",
    "TELEGRAM_PACING",
    "LOG_LEVEL",
    "LISTEN",
    "PORT",
    "WEBHOOK_SECRET",
    "WEBHOOK_PATH",
    "TLS_CERT",
    "TLS_KEY",
    "HANDLE_DEADLINE",
    "CA_BUNDLE",
    "TG_BOT_CHATS",
    "PROXY_API_KEY",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_MODEL",
    "SYSTEM_PROMPT",
    "STORE",
    "YANDEX_BUCKET",
    "S3_BUCKET",
    "S3_ENDPOINT",
    "S3_REGION",
    "YANDEX_KEY_ID",
    "YANDEX_KEY_SECRET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SESSION_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "CONTEXT_TOKENS",
    "OPENAI_TIMEOUT",
    "REASONING",
    "TRANSCRIBE_MODEL",
    "IMAGE_MODEL",
    "IMAGE_SIZE",
};

static int clear_environment(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof config_vars / sizeof config_vars[0]; i++)
		if (unsetenv(config_vars[i]) != 0)
			return -1;
	log_forget_secrets();
	return 0;
}

static int forget_secrets(void **state)
{
	(void)state;
	log_forget_secrets();
	return 0;
}

static void set(const char *name, const char *value)
{
	if (setenv(name, value, 1) != 0)
		fail_msg("setenv(%s): failed", name);
}

/* The three variables running the bot needs, so that a test changes only what it is about. */
static void set_bot_minimum(void)
{
	set("TG_BOT_TOKEN", TOKEN);
	set("TG_BOT_CHATS", "*");
	set("OPENAI_API_KEY", OPENAI_KEY);
}

static void load_ok(struct config *cfg, enum config_scope scope, const char *what)
{
	char err[512] = "";
	if (config_load(cfg, scope, err, sizeof err) != 0)
		fail_msg("%s: expected config_load to succeed, got -1: \"%s\"", what, err);
}

/* config_load must fail with one line naming variable, and leave cfg empty. */
static void expect_refused(enum config_scope scope, const char *variable, const char *what)
{
	static const struct config empty;
	struct config cfg;
	char err[512] = "";
	memset(&cfg, 0xA5, sizeof cfg); /* whatever was there must not survive */
	int rc = config_load(&cfg, scope, err, sizeof err);
	if (rc != -1) {
		if (rc == 0)
			config_free(&cfg);
		fail_msg("%s: expected config_load to return -1 naming %s, got %d", what, variable, rc);
	}
	if (!strstr(err, variable))
		fail_msg("%s: expected an error naming %s, got \"%s\"", what, variable, err);
	if (strchr(err, '\n'))
		fail_msg("%s: expected an error of one line, got \"%s\"", what, err);
	if (memcmp(&cfg, &empty, sizeof cfg) != 0)
		fail_msg("%s: expected cfg left empty after the error \"%s\"", what, err);
}

static void expect_double(const char *what, double expected, double actual)
{
	if (fabs(expected - actual) > 1e-12)
		fail_msg("%s: expected %.17g, got %.17g", what, expected, actual);
}

/* ---- what must be set ---- */

static void test_missing_token_is_refused_naming_TG_BOT_TOKEN(void **state)
{
	(void)state;
	set("TG_BOT_CHATS", "*");
	set("OPENAI_API_KEY", OPENAI_KEY);
	expect_refused(CONFIG_BOT, "TG_BOT_TOKEN", "bot without TG_BOT_TOKEN");
	expect_refused(CONFIG_TELEGRAM, "TG_BOT_TOKEN", "webhook command without TG_BOT_TOKEN");
	set("TG_BOT_TOKEN", "");
	expect_refused(CONFIG_BOT, "TG_BOT_TOKEN", "TG_BOT_TOKEN empty");
}

static void test_token_not_shaped_like_a_token_is_refused(void **state)
{
	(void)state;
	set_bot_minimum();
	static const char *const bad[] = {"no-colon-here", "123:abc/def", "123:abc def"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char what[64];
		snprintf(what, sizeof what, "TG_BOT_TOKEN=\"%s\"", bad[i]);
		set("TG_BOT_TOKEN", bad[i]);
		expect_refused(CONFIG_TELEGRAM, "TG_BOT_TOKEN", what);
	}
}

static void test_missing_chats_is_refused_naming_TG_BOT_CHATS(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	set("OPENAI_API_KEY", OPENAI_KEY);
	expect_refused(CONFIG_BOT, "TG_BOT_CHATS", "bot without TG_BOT_CHATS");
	set("TG_BOT_CHATS", "bad name!");
	expect_refused(CONFIG_BOT, "TG_BOT_CHATS", "TG_BOT_CHATS=\"bad name!\"");
}

static void test_missing_api_key_is_refused_naming_both_key_variables(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	set("TG_BOT_CHATS", "*");
	expect_refused(CONFIG_BOT, "PROXY_API_KEY", "bot without a model key");
	expect_refused(CONFIG_BOT, "OPENAI_API_KEY", "bot without a model key");
}

static void test_telegram_scope_needs_only_the_token(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	struct config cfg;
	load_ok(&cfg, CONFIG_TELEGRAM, "CONFIG_TELEGRAM with only TG_BOT_TOKEN");
	expect_str("tg_token", TOKEN, cfg.tg_token);
	expect_str("tg_api_base", "https://api.telegram.org", cfg.tg_api_base);
	expect_str("webhook_path", "/", cfg.webhook_path);
	if (cfg.allow || cfg.llm_key || cfg.store)
		fail_msg("CONFIG_TELEGRAM: expected no allowlist, model key or store, got %p %p %p",
		         (void *)cfg.allow, (void *)cfg.llm_key, (void *)cfg.store);
	config_free(&cfg);
}

/* ---- defaults ---- */

static void test_defaults_with_only_the_required_variables(void **state)
{
	(void)state;
	set_bot_minimum();
	struct config cfg;
	load_ok(&cfg, CONFIG_BOT, "the three required variables");
	expect_str("tg_api_base", "https://api.telegram.org", cfg.tg_api_base);
	expect_str("llm_key", OPENAI_KEY, cfg.llm_key);
	expect_str("llm_base_url with OPENAI_API_KEY", "https://api.openai.com/v1", cfg.llm_base_url);
	expect_str("llm_model", "gpt-4o-mini", cfg.llm_model);
	expect_str("transcribe_model", "whisper-1", cfg.transcribe_model);
	expect_str("image_model", "gpt-image-1", cfg.image_model);
	expect_str("image_size", "1024x1024", cfg.image_size);
	expect_null("system_prompt", cfg.system_prompt);
	expect_str("store", "sqlite:tgllm.db", cfg.store);
	expect_null("s3_endpoint without an S3 store", cfg.s3_endpoint);
	expect_null("s3_secret without an S3 store", cfg.s3_secret);
	expect_int("context_tokens", 16000, cfg.context_tokens);
	expect_int("llm_timeout_s", 300, cfg.llm_timeout_s);
	expect_int("show_reasoning", 0, cfg.show_reasoning);
	expect_null("listen_host", cfg.listen_host);
	expect_int("listen_port", 8080, cfg.listen_port);
	expect_str("webhook_path", "/", cfg.webhook_path);
	expect_null("webhook_secret", cfg.webhook_secret);
	expect_null("tls_cert", cfg.tls_cert);
	expect_null("tls_key", cfg.tls_key);
	expect_null("ca_bundle", cfg.ca_bundle);
	expect_int("handle_deadline_s", 55, cfg.handle_deadline_s);
	expect_int("log_level", LOG_LEVEL_INFO, cfg.log_level);
	if (!cfg.allow || !access_allows_everyone(cfg.allow))
		fail_msg("TG_BOT_CHATS=*: expected an allowlist allowing everyone");
	config_free(&cfg);
}

static void test_proxy_key_selects_proxyapi_else_openai(void **state)
{
	(void)state;
	set_bot_minimum();
	unsetenv("OPENAI_API_KEY");
	set("PROXY_API_KEY", PROXY_KEY);
	struct config cfg;
	load_ok(&cfg, CONFIG_BOT, "PROXY_API_KEY");
	expect_str("llm_key from PROXY_API_KEY", PROXY_KEY, cfg.llm_key);
	expect_str("llm_base_url with PROXY_API_KEY", "https://api.proxyapi.ru/openai/v1", cfg.llm_base_url);
	config_free(&cfg);

	set("OPENAI_API_KEY", OPENAI_KEY);
	load_ok(&cfg, CONFIG_BOT, "both keys");
	expect_str("llm_key with both keys", PROXY_KEY, cfg.llm_key);
	expect_str("llm_base_url with both keys", "https://api.proxyapi.ru/openai/v1", cfg.llm_base_url);
	config_free(&cfg);

	/* An empty variable is an unset one. */
	set("PROXY_API_KEY", "");
	load_ok(&cfg, CONFIG_BOT, "PROXY_API_KEY empty, OPENAI_API_KEY set");
	expect_str("llm_key with PROXY_API_KEY empty", OPENAI_KEY, cfg.llm_key);
	expect_str("llm_base_url with PROXY_API_KEY empty", "https://api.openai.com/v1", cfg.llm_base_url);
	config_free(&cfg);
}

static void test_base_urls_lose_trailing_slashes(void **state)
{
	(void)state;
	set_bot_minimum();
	set("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1///");
	set("TELEGRAM_API_BASE", "http://127.0.0.1:8081/");
	struct config cfg;
	load_ok(&cfg, CONFIG_BOT, "base URLs with trailing slashes");
	expect_str("llm_base_url", "http://127.0.0.1:8000/v1", cfg.llm_base_url);
	expect_str("tg_api_base", "http://127.0.0.1:8081", cfg.tg_api_base);
	config_free(&cfg);
}

static void test_base_urls_must_be_http(void **state)
{
	(void)state;
	set_bot_minimum();
	set("OPENAI_BASE_URL", "ftp://example.com/v1");
	expect_refused(CONFIG_BOT, "OPENAI_BASE_URL", "OPENAI_BASE_URL=ftp://...");
	set("OPENAI_BASE_URL", "https://");
	expect_refused(CONFIG_BOT, "OPENAI_BASE_URL", "OPENAI_BASE_URL=https://");
	unsetenv("OPENAI_BASE_URL");
	set("TELEGRAM_API_BASE", "api.telegram.org");
	expect_refused(CONFIG_TELEGRAM, "TELEGRAM_API_BASE", "TELEGRAM_API_BASE without a scheme");
}

static void test_model_prompt_context_and_timeout_are_read(void **state)
{
	(void)state;
	set_bot_minimum();
	set("OPENAI_MODEL", "gpt-4.1");
	set("SYSTEM_PROMPT", "Be brief.");
	set("CONTEXT_TOKENS", "32000");
	set("OPENAI_TIMEOUT", "60");
	set("CA_BUNDLE", "/etc/ssl/bundle.pem");
	struct config cfg;
	load_ok(&cfg, CONFIG_BOT, "model settings");
	expect_str("llm_model", "gpt-4.1", cfg.llm_model);
	expect_str("system_prompt", "Be brief.", cfg.system_prompt);
	expect_int("context_tokens", 32000, cfg.context_tokens);
	expect_int("llm_timeout_s", 60, cfg.llm_timeout_s);
	expect_str("ca_bundle", "/etc/ssl/bundle.pem", cfg.ca_bundle);
	config_free(&cfg);
}

static void test_context_tokens_and_timeout_must_be_positive_numbers(void **state)
{
	(void)state;
	set_bot_minimum();
	static const char *const bad[] = {"0", "-5", "12k", "", "99999999999"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (!*bad[i])
			continue; /* empty is unset: the default */
		char what[64];
		snprintf(what, sizeof what, "CONTEXT_TOKENS=\"%s\"", bad[i]);
		set("CONTEXT_TOKENS", bad[i]);
		expect_refused(CONFIG_BOT, "CONTEXT_TOKENS", what);
	}
	unsetenv("CONTEXT_TOKENS");
	set("OPENAI_TIMEOUT", "3601");
	expect_refused(CONFIG_BOT, "OPENAI_TIMEOUT", "OPENAI_TIMEOUT=3601");
}

static void test_media_models_are_read_and_image_size_checked(void **state)
{
	(void)state;
	set_bot_minimum();
	set("TRANSCRIBE_MODEL", "gpt-4o-transcribe");
	set("IMAGE_MODEL", "dall-e-3");
	set("IMAGE_SIZE", "1792x1024");
	struct config cfg;
	load_ok(&cfg, CONFIG_BOT, "the media models");
	expect_str("transcribe_model", "gpt-4o-transcribe", cfg.transcribe_model);
	expect_str("image_model", "dall-e-3", cfg.image_model);
	expect_str("image_size", "1792x1024", cfg.image_size);
	config_free(&cfg);
	set("IMAGE_SIZE", "auto");
	load_ok(&cfg, CONFIG_BOT, "IMAGE_SIZE=auto");
	config_free(&cfg);
	static const char *const bad[] = {"1024", "1024x", "x1024", "big", "1024x1024x2", "1024 x 1024"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		set("IMAGE_SIZE", bad[i]);
		expect_refused(CONFIG_BOT, "IMAGE_SIZE", bad[i]);
	}
}

/* ---- the store ---- */

static void test_store_defaults_to_a_sqlite_file(void **state)
{
	(void)state;
	set_bot_minimum();
	struct config cfg;
	set("STORE", "sqlite:/var/lib/tgllm/bot.db");
	load_ok(&cfg, CONFIG_BOT, "STORE=sqlite:PATH");
	expect_str("store", "sqlite:/var/lib/tgllm/bot.db", cfg.store);
	expect_null("s3_endpoint with a SQLite store", cfg.s3_endpoint);
	config_free(&cfg);
	/* PostgreSQL's forms are taken as they are (libpq reads them when the store opens). */
	static const char *const pg[] = {"postgres://u:p@db:5432/tgllm", "postgresql://db/tgllm", "host=db dbname=tgllm"};
	for (size_t i = 0; i < sizeof pg / sizeof pg[0]; i++) {
		set("STORE", pg[i]);
		load_ok(&cfg, CONFIG_BOT, pg[i]);
		expect_str("store", pg[i], cfg.store);
		config_free(&cfg);
	}
	static const char *const bad[] = {"sqlite:", "mysql://x", "s3://", "s3://bad bucket", "tgllm.db"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char what[64];
		snprintf(what, sizeof what, "STORE=\"%s\"", bad[i]);
		set("STORE", bad[i]);
		expect_refused(CONFIG_BOT, "STORE", what);
	}
}

static void set_yandex_keys(void)
{
	set("YANDEX_KEY_ID", "yandex-key-id");
	set("YANDEX_KEY_SECRET", "yandex-secret-value");
}

static void test_bucket_variables_select_the_s3_store(void **state)
{
	(void)state;
	set_bot_minimum();
	set_yandex_keys();
	struct config cfg;
	set("S3_BUCKET", "s3-bucket");
	load_ok(&cfg, CONFIG_BOT, "S3_BUCKET");
	expect_str("store from S3_BUCKET", "s3://s3-bucket", cfg.store);
	config_free(&cfg);

	set("YANDEX_BUCKET", "yandex-bucket");
	load_ok(&cfg, CONFIG_BOT, "YANDEX_BUCKET and S3_BUCKET");
	expect_str("store from YANDEX_BUCKET before S3_BUCKET", "s3://yandex-bucket", cfg.store);
	config_free(&cfg);

	set("STORE", "s3://explicit/prefix");
	load_ok(&cfg, CONFIG_BOT, "STORE and the bucket variables");
	expect_str("STORE before the bucket variables", "s3://explicit/prefix", cfg.store);
	config_free(&cfg);

	unsetenv("STORE");
	set("YANDEX_BUCKET", "bad bucket");
	expect_refused(CONFIG_BOT, "YANDEX_BUCKET", "YANDEX_BUCKET=\"bad bucket\"");
}

static void test_s3_endpoint_and_region_defaults(void **state)
{
	(void)state;
	set_bot_minimum();
	set_yandex_keys();
	set("STORE", "s3://bucket");
	struct config cfg;
	load_ok(&cfg, CONFIG_BOT, "S3 store with defaults");
	expect_str("s3_endpoint", "https://storage.yandexcloud.net", cfg.s3_endpoint);
	expect_str("s3_region", "ru-central1", cfg.s3_region);
	expect_str("s3_key_id", "yandex-key-id", cfg.s3_key_id);
	expect_str("s3_secret", "yandex-secret-value", cfg.s3_secret);
	expect_null("s3_session_token", cfg.s3_session_token);
	config_free(&cfg);

	set("S3_ENDPOINT", "http://127.0.0.1:9000//");
	set("S3_REGION", "us-east-1");
	load_ok(&cfg, CONFIG_BOT, "S3_ENDPOINT and S3_REGION");
	expect_str("s3_endpoint without trailing slashes", "http://127.0.0.1:9000", cfg.s3_endpoint);
	expect_str("s3_region", "us-east-1", cfg.s3_region);
	config_free(&cfg);

	set("S3_ENDPOINT", "storage.yandexcloud.net");
	expect_refused(CONFIG_BOT, "S3_ENDPOINT", "S3_ENDPOINT without a scheme");
	unsetenv("S3_ENDPOINT");
	/* The region becomes a field of libcurl's "aws:amz:REGION:s3". */
	set("S3_REGION", "us:east");
	expect_refused(CONFIG_BOT, "S3_REGION", "S3_REGION with ':'");
}

static void test_s3_key_pair_comes_from_one_place(void **state)
{
	(void)state;
	set_bot_minimum();
	set("STORE", "s3://bucket");
	struct config cfg;

	expect_refused(CONFIG_BOT, "YANDEX_KEY_ID", "S3 store without any key");

	set("AWS_ACCESS_KEY_ID", "aws-key-id");
	set("AWS_SECRET_ACCESS_KEY", "aws-secret-value");
	load_ok(&cfg, CONFIG_BOT, "AWS key pair");
	expect_str("s3_key_id from AWS", "aws-key-id", cfg.s3_key_id);
	expect_str("s3_secret from AWS", "aws-secret-value", cfg.s3_secret);
	config_free(&cfg);

	set_yandex_keys();
	load_ok(&cfg, CONFIG_BOT, "both key pairs");
	expect_str("s3_key_id with both pairs", "yandex-key-id", cfg.s3_key_id);
	expect_str("s3_secret with both pairs", "yandex-secret-value", cfg.s3_secret);
	config_free(&cfg);

	/* Half of each: the YANDEX id is set, so its secret is wanted, never AWS's. */
	unsetenv("YANDEX_KEY_SECRET");
	expect_refused(CONFIG_BOT, "YANDEX_KEY_SECRET", "YANDEX_KEY_ID with AWS_SECRET_ACCESS_KEY");
	set_yandex_keys();
	unsetenv("YANDEX_KEY_ID");
	expect_refused(CONFIG_BOT, "YANDEX_KEY_ID", "YANDEX_KEY_SECRET with AWS_ACCESS_KEY_ID");

	unsetenv("YANDEX_KEY_SECRET");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	expect_refused(CONFIG_BOT, "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID alone");

	/* OpenStack Swift's s3api names keys account:user. */
	set("AWS_SECRET_ACCESS_KEY", "aws-secret-value");
	set("AWS_ACCESS_KEY_ID", "test:tester");
	load_ok(&cfg, CONFIG_BOT, "a key id with ':' (Swift's account:user)");
	expect_str("s3_key_id", "test:tester", cfg.s3_key_id);
	config_free(&cfg);
}

static void test_s3_session_token_only_with_aws_keys(void **state)
{
	(void)state;
	set_bot_minimum();
	set("STORE", "s3://bucket");
	set("AWS_ACCESS_KEY_ID", "aws-key-id");
	set("AWS_SECRET_ACCESS_KEY", "aws-secret-value");
	set("AWS_SESSION_TOKEN", "aws-session-token-value");
	struct config cfg;
	load_ok(&cfg, CONFIG_BOT, "AWS keys with a session token");
	expect_str("s3_session_token with AWS keys", "aws-session-token-value", cfg.s3_session_token);
	config_free(&cfg);

	/* Lambda sets AWS_SESSION_TOKEN for its own role: it does not belong to a Yandex key. */
	set_yandex_keys();
	load_ok(&cfg, CONFIG_BOT, "Yandex keys, AWS_SESSION_TOKEN set");
	expect_str("s3_key_id", "yandex-key-id", cfg.s3_key_id);
	expect_null("s3_session_token with Yandex keys", cfg.s3_session_token);
	config_free(&cfg);
}

/* ---- webhook settings ---- */

static void test_listen_takes_host_port_and_bracketed_v6(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	static const struct {
		const char *listen;
		const char *host; /* NULL: every interface */
		int port;
	} cases[] = {
	    {"127.0.0.1:8443", "127.0.0.1", 8443}, {"[::1]:8080", "::1", 8080},
	    {"localhost:1", "localhost", 1},       {":9000", NULL, 9000},
	    {"0.0.0.0:65535", "0.0.0.0", 65535},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char what[64];
		snprintf(what, sizeof what, "LISTEN=%s", cases[i].listen);
		set("LISTEN", cases[i].listen);
		set("PORT", "1234"); /* LISTEN wins */
		struct config cfg;
		load_ok(&cfg, CONFIG_TELEGRAM, what);
		if (cases[i].host)
			expect_str(what, cases[i].host, cfg.listen_host);
		else
			expect_null(what, cfg.listen_host);
		expect_int(what, cases[i].port, cfg.listen_port);
		config_free(&cfg);
	}
}

static void test_port_sets_the_port_on_every_interface(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	set("PORT", "9090");
	struct config cfg;
	load_ok(&cfg, CONFIG_TELEGRAM, "PORT=9090");
	expect_null("listen_host with PORT", cfg.listen_host);
	expect_int("listen_port with PORT", 9090, cfg.listen_port);
	config_free(&cfg);
}

static void test_bad_listen_or_port_is_refused(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	static const char *const bad_listen[] = {"localhost", "host:0", "host:65536",
	                                         "host:80x",  "[::1]",  "host:"};
	for (size_t i = 0; i < sizeof bad_listen / sizeof bad_listen[0]; i++) {
		char what[64];
		snprintf(what, sizeof what, "LISTEN=\"%s\"", bad_listen[i]);
		set("LISTEN", bad_listen[i]);
		expect_refused(CONFIG_TELEGRAM, "LISTEN", what);
	}
	unsetenv("LISTEN");
	static const char *const bad_port[] = {"0", "65536", "http", "-1"};
	for (size_t i = 0; i < sizeof bad_port / sizeof bad_port[0]; i++) {
		char what[64];
		snprintf(what, sizeof what, "PORT=\"%s\"", bad_port[i]);
		set("PORT", bad_port[i]);
		expect_refused(CONFIG_TELEGRAM, "PORT", what);
	}
}

static void test_webhook_path_must_start_with_slash(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	set("WEBHOOK_PATH", "/telegram/hook");
	struct config cfg;
	load_ok(&cfg, CONFIG_TELEGRAM, "WEBHOOK_PATH=/telegram/hook");
	expect_str("webhook_path", "/telegram/hook", cfg.webhook_path);
	config_free(&cfg);
	set("WEBHOOK_PATH", "telegram");
	expect_refused(CONFIG_TELEGRAM, "WEBHOOK_PATH", "WEBHOOK_PATH=telegram");
}

static void test_webhook_secret_is_telegrams_charset_of_1_to_256(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	char longest[258];
	memset(longest, 'a', 256);
	longest[256] = '\0';
	static const char *const good[] = {"abc_DEF-0123456789", "x"};
	struct config cfg;
	for (size_t i = 0; i < 3; i++) {
		const char *v = i < 2 ? good[i] : longest;
		set("WEBHOOK_SECRET", v);
		load_ok(&cfg, CONFIG_TELEGRAM, "WEBHOOK_SECRET of allowed characters");
		expect_str("webhook_secret", v, cfg.webhook_secret);
		config_free(&cfg);
	}
	longest[256] = 'a';
	longest[257] = '\0';
	set("WEBHOOK_SECRET", longest);
	expect_refused(CONFIG_TELEGRAM, "WEBHOOK_SECRET", "WEBHOOK_SECRET of 257 characters");
	static const char *const bad[] = {"has space", "dot.ted", "slash/", "plus+", "ünïcode"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char what[64];
		snprintf(what, sizeof what, "WEBHOOK_SECRET=\"%s\"", bad[i]);
		set("WEBHOOK_SECRET", bad[i]);
		expect_refused(CONFIG_TELEGRAM, "WEBHOOK_SECRET", what);
	}
}

static void test_tls_needs_both_cert_and_key(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	set("TLS_CERT", "/etc/tgllm/cert.pem");
	expect_refused(CONFIG_TELEGRAM, "TLS_KEY", "TLS_CERT without TLS_KEY");
	expect_refused(CONFIG_TELEGRAM, "TLS_CERT", "TLS_CERT without TLS_KEY");
	unsetenv("TLS_CERT");
	set("TLS_KEY", "/etc/tgllm/key.pem");
	expect_refused(CONFIG_TELEGRAM, "TLS_CERT", "TLS_KEY without TLS_CERT");
	set("TLS_CERT", "/etc/tgllm/cert.pem");
	struct config cfg;
	load_ok(&cfg, CONFIG_TELEGRAM, "TLS_CERT and TLS_KEY");
	expect_str("tls_cert", "/etc/tgllm/cert.pem", cfg.tls_cert);
	expect_str("tls_key", "/etc/tgllm/key.pem", cfg.tls_key);
	config_free(&cfg);
}

static void test_handle_deadline_is_1_to_3600_seconds(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	static const struct {
		const char *v;
		long s;
	} good[] = {{"1", 1}, {"900", 900}, {"3600", 3600}};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		set("HANDLE_DEADLINE", good[i].v);
		struct config cfg;
		load_ok(&cfg, CONFIG_TELEGRAM, good[i].v);
		expect_int("handle_deadline_s", good[i].s, cfg.handle_deadline_s);
		config_free(&cfg);
	}
	static const char *const bad[] = {"0", "3601", "-1", "10s", "1.5"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char what[64];
		snprintf(what, sizeof what, "HANDLE_DEADLINE=\"%s\"", bad[i]);
		set("HANDLE_DEADLINE", bad[i]);
		expect_refused(CONFIG_TELEGRAM, "HANDLE_DEADLINE", what);
	}
}

/* ---- behaviour switches ---- */

static void test_reasoning_is_hide_or_quote(void **state)
{
	(void)state;
	set_bot_minimum();
	struct config cfg;
	set("REASONING", "quote");
	load_ok(&cfg, CONFIG_BOT, "REASONING=quote");
	expect_int("show_reasoning with quote", 1, cfg.show_reasoning);
	config_free(&cfg);
	set("REASONING", "hide");
	load_ok(&cfg, CONFIG_BOT, "REASONING=hide");
	expect_int("show_reasoning with hide", 0, cfg.show_reasoning);
	config_free(&cfg);
	set("REASONING", "show");
	expect_refused(CONFIG_BOT, "REASONING", "REASONING=show");
	set("REASONING", "Quote");
	expect_refused(CONFIG_BOT, "REASONING", "REASONING=Quote");
}

static void test_log_level_names(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	static const struct {
		const char *name;
		enum log_level level;
	} cases[] = {{"debug", LOG_LEVEL_DEBUG},
	             {"info", LOG_LEVEL_INFO},
	             {"warn", LOG_LEVEL_WARN},
	             {"error", LOG_LEVEL_ERROR},
	             {"DEBUG", LOG_LEVEL_DEBUG}};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		set("LOG_LEVEL", cases[i].name);
		struct config cfg;
		load_ok(&cfg, CONFIG_TELEGRAM, cases[i].name);
		expect_int(cases[i].name, cases[i].level, cfg.log_level);
		config_free(&cfg);
	}
	set("LOG_LEVEL", "verbose");
	expect_refused(CONFIG_TELEGRAM, "LOG_LEVEL", "LOG_LEVEL=verbose");
}

/* ---- TELEGRAM_PACING ---- */

static void expect_pacing(const char *value, double private_s, double group_s, double global_s)
{
	char what[96];
	struct config cfg;
	if (value)
		set("TELEGRAM_PACING", value);
	else
		unsetenv("TELEGRAM_PACING");
	snprintf(what, sizeof what, "TELEGRAM_PACING=%s", value ? value : "(unset)");
	load_ok(&cfg, CONFIG_TELEGRAM, what);
	snprintf(what, sizeof what, "TELEGRAM_PACING=%s: seconds between calls to one private chat",
	         value ? value : "(unset)");
	expect_double(what, private_s, cfg.tg_pacing.private_s);
	snprintf(what, sizeof what, "TELEGRAM_PACING=%s: seconds between calls to one group",
	         value ? value : "(unset)");
	expect_double(what, group_s, cfg.tg_pacing.group_s);
	snprintf(what, sizeof what, "TELEGRAM_PACING=%s: seconds between any two calls",
	         value ? value : "(unset)");
	expect_double(what, global_s, cfg.tg_pacing.global_s);
	config_free(&cfg);
}

static void test_pacing_defaults_to_telegrams_limits(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	expect_pacing(NULL, 1.0, 3.0, 1.0 / 30);
	expect_pacing("", 1.0, 3.0, 1.0 / 30); /* empty is unset */
}

static void test_pacing_third_field_is_calls_per_second(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	expect_pacing("0.5,2,10", 0.5, 2.0, 0.1);
	expect_pacing("1,3,30", 1.0, 3.0, 1.0 / 30);
	expect_pacing("3600,3600,1000000", 3600.0, 3600.0, 1e-6);
	expect_pacing("2,5,0.5", 2.0, 5.0, 2.0);
}

static void test_pacing_zeros_mean_no_limit(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	expect_pacing("0,0,0", 0.0, 0.0, 0.0);
	expect_pacing("1,3,0", 1.0, 3.0, 0.0);
}

static void test_pacing_bad_forms_are_refused(void **state)
{
	(void)state;
	set("TG_BOT_TOKEN", TOKEN);
	static const char *const bad[] = {
	    "1,2",       "a,b,c",       "1,2,3x", "1,2,3,4",  "-1,3,30",  "1,-3,30", "1,3,-30", "3601,3,30",
	    "1,3601,30", "1,3,1000001", "1;3;30", "nan,3,30", "1,inf,30", "1,3,30 ", ",3,30",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char what[64];
		snprintf(what, sizeof what, "TELEGRAM_PACING=\"%s\"", bad[i]);
		set("TELEGRAM_PACING", bad[i]);
		expect_refused(CONFIG_TELEGRAM, "TELEGRAM_PACING", what);
	}
}

/* ---- secrets never reach the log ---- */

/* What log_error("%s", line) writes to stderr (a malloc'd string). */
static char *log_line_of(const char *line)
{
	int fds[2], saved = -1;
	fflush(stderr);
	if (pipe(fds) != 0 || (saved = dup(STDERR_FILENO)) < 0 || dup2(fds[1], STDERR_FILENO) < 0)
		fail_msg("cannot redirect stderr to a pipe");
	log_error("%s", line);
	fflush(stderr);
	if (dup2(saved, STDERR_FILENO) < 0)
		fail_msg("cannot restore stderr");
	close(saved);
	close(fds[1]);
	char buf[8192];
	size_t n = 0;
	ssize_t got;
	while (n < sizeof buf - 1 && (got = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
		n += (size_t)got;
	close(fds[0]);
	while (n > 0 && buf[n - 1] == '\n')
		n--;
	buf[n] = '\0';
	char *copy = strdup(buf);
	if (!copy)
		fail_msg("out of memory");
	return copy;
}

static void expect_masked(const char *secret, const char *name)
{
	char line[512];
	snprintf(line, sizeof line, "calling https://example/%s/x failed", secret);
	char *out = log_line_of(line);
	if (strstr(out, secret) || !strstr(out, "https://example/***/x failed")) {
		char copy[1024];
		snprintf(copy, sizeof copy, "%s", out);
		free(out);
		fail_msg("%s in a log line: expected it shown as ***, got \"%s\"", name, copy);
	}
	free(out);
}

static void test_secrets_are_masked_in_log_lines(void **state)
{
	(void)state;
	set_bot_minimum();
	set("STORE", "s3://bucket");
	set("AWS_ACCESS_KEY_ID", "aws-key-id");
	set("AWS_SECRET_ACCESS_KEY", "aws-secret-value");
	set("AWS_SESSION_TOKEN", "aws-session-token-value");
	set("WEBHOOK_SECRET", "webhook-secret-value");

	/* Not registered before config_load: the check below proves config_load did it. */
	char *before = log_line_of(TOKEN);
	int was_shown = strstr(before, TOKEN) != NULL;
	free(before);
	if (!was_shown)
		fail_msg("before config_load: expected the token printed as it is, got it masked");

	struct config cfg;
	load_ok(&cfg, CONFIG_BOT, "S3 store with a session token and a webhook secret");
	expect_masked(TOKEN, "TG_BOT_TOKEN");
	expect_masked(OPENAI_KEY, "OPENAI_API_KEY");
	expect_masked("aws-secret-value", "AWS_SECRET_ACCESS_KEY");
	expect_masked("aws-session-token-value", "AWS_SESSION_TOKEN");
	expect_masked("webhook-secret-value", "WEBHOOK_SECRET");
	/* The key id is not a secret: it is shown, so an operator can tell which key is used. */
	char *out = log_line_of("key aws-key-id");
	int is_shown = strstr(out, "key aws-key-id") != NULL;
	free(out);
	config_free(&cfg);
	if (!is_shown)
		fail_msg("the S3 key id in a log line: expected it shown as it is, got it masked");
}

static void test_proxy_key_is_masked_in_log_lines(void **state)
{
	(void)state;
	set_bot_minimum();
	set("PROXY_API_KEY", PROXY_KEY);
	struct config cfg;
	load_ok(&cfg, CONFIG_BOT, "PROXY_API_KEY");
	expect_masked(PROXY_KEY, "PROXY_API_KEY");
	config_free(&cfg);
}

#define TEST(f) cmocka_unit_test_setup_teardown(f, clear_environment, forget_secrets)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    TEST(test_missing_token_is_refused_naming_TG_BOT_TOKEN),
	    TEST(test_token_not_shaped_like_a_token_is_refused),
	    TEST(test_missing_chats_is_refused_naming_TG_BOT_CHATS),
	    TEST(test_missing_api_key_is_refused_naming_both_key_variables),
	    TEST(test_telegram_scope_needs_only_the_token),
	    TEST(test_defaults_with_only_the_required_variables),
	    TEST(test_proxy_key_selects_proxyapi_else_openai),
	    TEST(test_base_urls_lose_trailing_slashes),
	    TEST(test_base_urls_must_be_http),
	    TEST(test_model_prompt_context_and_timeout_are_read),
	    TEST(test_context_tokens_and_timeout_must_be_positive_numbers),
	    TEST(test_media_models_are_read_and_image_size_checked),
	    TEST(test_store_defaults_to_a_sqlite_file),
	    TEST(test_bucket_variables_select_the_s3_store),
	    TEST(test_s3_endpoint_and_region_defaults),
	    TEST(test_s3_key_pair_comes_from_one_place),
	    TEST(test_s3_session_token_only_with_aws_keys),
	    TEST(test_listen_takes_host_port_and_bracketed_v6),
	    TEST(test_port_sets_the_port_on_every_interface),
	    TEST(test_bad_listen_or_port_is_refused),
	    TEST(test_webhook_path_must_start_with_slash),
	    TEST(test_webhook_secret_is_telegrams_charset_of_1_to_256),
	    TEST(test_tls_needs_both_cert_and_key),
	    TEST(test_handle_deadline_is_1_to_3600_seconds),
	    TEST(test_reasoning_is_hide_or_quote),
	    TEST(test_log_level_names),
	    TEST(test_pacing_defaults_to_telegrams_limits),
	    TEST(test_pacing_third_field_is_calls_per_second),
	    TEST(test_pacing_zeros_mean_no_limit),
	    TEST(test_pacing_bad_forms_are_refused),
	    TEST(test_secrets_are_masked_in_log_lines),
	    TEST(test_proxy_key_is_masked_in_log_lines),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
