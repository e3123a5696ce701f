#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROXYAPI_BASE "https://api.proxyapi.ru/openai/v1"
#define OPENAI_BASE "https://api.openai.com/v1"

/* Non-empty value of the first set variable among names, else NULL. */
static const char *env_first(const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *v = getenv(names[i]);
		if (v && *v)
			return v;
	}
	return NULL;
}

static const char *env(const char *name)
{
	return env_first(&name, 1);
}

static char *dup_url(const char *url)
{
	size_t n = strlen(url);
	while (n > 0 && url[n - 1] == '/')
		n--;
	return strndup(url, n);
}

static int is_http_url(const char *s)
{
	return (strncmp(s, "http://", 7) == 0 && s[7]) || (strncmp(s, "https://", 8) == 0 && s[8]);
}

static int parse_positive(const char *s, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v <= 0 || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Telegram allows 1-256 characters A-Z, a-z, 0-9, _ and - (setWebhook, secret_token). */
static bool is_valid_secret(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 256)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
			return false;
	return true;
}

/* LISTEN=host:port (or [v6]:port), else PORT, else 8080 on every interface. */
static int load_listen(struct config *cfg, char *err, size_t errlen)
{
	const char *v = env("LISTEN");
	long port = 8080;
	if (v) {
		const char *colon = strrchr(v, ':');
		if (!colon || parse_positive(colon + 1, 65535, &port) != 0) {
			snprintf(err, errlen, "LISTEN must be HOST:PORT (e.g. 127.0.0.1:8080)");
			return -1;
		}
		const char *host = v;
		size_t n = (size_t)(colon - v);
		if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
			host++;
			n -= 2;
		}
		if (n && !(cfg->listen_host = strndup(host, n))) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	} else if ((v = env("PORT")) && parse_positive(v, 65535, &port) != 0) {
		snprintf(err, errlen, "PORT must be a port number (1-65535)");
		return -1;
	}
	cfg->listen_port = (int)port;
	return 0;
}

static int load_webhook(struct config *cfg, char *err, size_t errlen)
{
	if (load_listen(cfg, err, errlen) != 0)
		return -1;
	const char *v = env("WEBHOOK_SECRET");
	if (v && !is_valid_secret(v)) {
		snprintf(err, errlen, "WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and -");
		return -1;
	}
	if (v && !(cfg->webhook_secret = strdup(v)))
		goto oom;
	v = env("WEBHOOK_PATH");
	if (v && v[0] != '/') {
		snprintf(err, errlen, "WEBHOOK_PATH must start with / (e.g. /telegram)");
		return -1;
	}
	if (!(cfg->webhook_path = strdup(v ? v : "/")))
		goto oom;
	const char *cert = env("TLS_CERT"), *key = env("TLS_KEY");
	if (!cert != !key) {
		snprintf(err, errlen, "%s is set but %s is not: TLS needs both", cert ? "TLS_CERT" : "TLS_KEY",
			 cert ? "TLS_KEY" : "TLS_CERT");
		return -1;
	}
	if (cert && (!(cfg->tls_cert = strdup(cert)) || !(cfg->tls_key = strdup(key))))
		goto oom;
	long deadline = 55;
	if ((v = env("HANDLE_DEADLINE")) && parse_positive(v, 3600, &deadline) != 0) {
		snprintf(err, errlen, "HANDLE_DEADLINE must be a number of seconds (1-3600)");
		return -1;
	}
	cfg->handle_deadline_s = deadline;
	if (cfg->webhook_secret)
		log_add_secret(cfg->webhook_secret);
	return 0;
oom:
	snprintf(err, errlen, "out of memory while reading the configuration");
	return -1;
}

int config_load(struct config *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof *cfg);
	char why[256];
	const char *v;

	if (!(v = env("TG_BOT_TOKEN"))) {
		snprintf(err, errlen, "TG_BOT_TOKEN is not set: get a token from @BotFather");
		goto fail;
	}
	if (strchr(v, '/') || strchr(v, ' ') || !strchr(v, ':')) {
		snprintf(err, errlen, "TG_BOT_TOKEN does not look like a bot token (123456:ABC...)");
		goto fail;
	}
	cfg->tg_token = strdup(v);

	/* A bot that pays for every message must not be open by accident. */
	if (!(v = getenv("TG_BOT_CHATS"))) {
		snprintf(err, errlen,
			 "TG_BOT_CHATS is not set: list the usernames or ids allowed to use the bot, "
			 "or '*' for everyone");
		goto fail;
	}
	if (access_parse(v, &cfg->allow, why, sizeof why) != 0) {
		snprintf(err, errlen, "TG_BOT_CHATS: %s", why);
		goto fail;
	}

	static const char *const key_names[] = {"PROXY_API_KEY", "OPENAI_API_KEY"};
	if (!(v = env_first(key_names, 2))) {
		snprintf(err, errlen, "PROXY_API_KEY (or OPENAI_API_KEY) is not set: the model API key");
		goto fail;
	}
	cfg->llm_key = strdup(v);

	v = env("OPENAI_BASE_URL");
	if (!v)
		v = env("PROXY_API_KEY") ? PROXYAPI_BASE : OPENAI_BASE;
	if (!is_http_url(v)) {
		snprintf(err, errlen, "OPENAI_BASE_URL must be an http:// or https:// URL");
		goto fail;
	}
	cfg->llm_base_url = dup_url(v);

	v = env("TELEGRAM_API_BASE");
	if (!v)
		v = "https://api.telegram.org";
	if (!is_http_url(v)) {
		snprintf(err, errlen, "TELEGRAM_API_BASE must be an http:// or https:// URL");
		goto fail;
	}
	cfg->tg_api_base = dup_url(v);

	v = env("OPENAI_MODEL");
	cfg->llm_model = strdup(v ? v : "gpt-4o-mini");
	v = env("SYSTEM_PROMPT");
	if (v)
		cfg->system_prompt = strdup(v);

	v = env("STORE");
	if (!v)
		v = "sqlite:tgllm.db";
	if (strncmp(v, "sqlite:", 7) != 0 || !v[7]) {
		snprintf(err, errlen, "STORE must be sqlite:PATH (e.g. sqlite:tgllm.db)");
		goto fail;
	}
	cfg->store = strdup(v);

	long n = 16000;
	if ((v = env("CONTEXT_TOKENS")) && parse_positive(v, 10000000, &n) != 0) {
		snprintf(err, errlen, "CONTEXT_TOKENS must be a positive number of tokens");
		goto fail;
	}
	cfg->context_tokens = (size_t)n;

	n = 300;
	if ((v = env("OPENAI_TIMEOUT")) && parse_positive(v, 3600, &n) != 0) {
		snprintf(err, errlen, "OPENAI_TIMEOUT must be a number of seconds (1-3600)");
		goto fail;
	}
	cfg->llm_timeout_s = n;

	v = env("REASONING");
	if (v && strcmp(v, "quote") != 0 && strcmp(v, "hide") != 0) {
		snprintf(err, errlen, "REASONING must be hide or quote");
		goto fail;
	}
	cfg->show_reasoning = v && strcmp(v, "quote") == 0;

	if (load_webhook(cfg, err, errlen) != 0)
		goto fail;

	cfg->log_level = LOG_LEVEL_INFO;
	if ((v = env("LOG_LEVEL")) && log_level_parse(v, &cfg->log_level) != 0) {
		snprintf(err, errlen, "LOG_LEVEL must be debug, info, warn or error");
		goto fail;
	}

	if (!cfg->tg_token || !cfg->llm_key || !cfg->llm_base_url || !cfg->tg_api_base ||
	    !cfg->llm_model || !cfg->store || (env("SYSTEM_PROMPT") && !cfg->system_prompt)) {
		snprintf(err, errlen, "out of memory while reading the configuration");
		goto fail;
	}
	log_add_secret(cfg->tg_token);
	log_add_secret(cfg->llm_key);
	return 0;
fail:
	config_free(cfg);
	return -1;
}

void config_free(struct config *cfg)
{
	free(cfg->tg_token);
	free(cfg->tg_api_base);
	access_free(cfg->allow);
	free(cfg->llm_key);
	free(cfg->llm_base_url);
	free(cfg->llm_model);
	free(cfg->system_prompt);
	free(cfg->store);
	free(cfg->listen_host);
	free(cfg->webhook_path);
	free(cfg->webhook_secret);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	memset(cfg, 0, sizeof *cfg);
}
