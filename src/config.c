#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

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

/* "1024x1536" or "auto" (https://platform.openai.com/docs/api-reference/images/create). */
static bool is_image_size(const char *s)
{
	if (strcmp(s, "auto") == 0)
		return true;
	size_t w = strspn(s, "0123456789");
	if (w == 0 || w > 5 || s[w] != 'x')
		return false;
	size_t h = strspn(s + w + 1, "0123456789");
	return h > 0 && h <= 5 && s[w + 1 + h] == '\0';
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

/* HOST:PORT or [v6]:PORT -> *host (NULL for an empty HOST: every interface) and *port. */
static int parse_host_port(const char *v, char **host, int *port, const char *name, char *err, size_t errlen)
{
	const char *colon = strrchr(v, ':');
	long p;
	if (!colon || parse_positive(colon + 1, 65535, &p) != 0) {
		snprintf(err, errlen, "%s must be HOST:PORT (e.g. 127.0.0.1:8080)", name);
		return -1;
	}
	size_t n = (size_t)(colon - v);
	if (n >= 2 && v[0] == '[' && v[n - 1] == ']') {
		v++;
		n -= 2;
	}
	if (n && !(*host = strndup(v, n))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	*port = (int)p;
	return 0;
}

/*
 * LISTEN=host:port (or [v6]:port), else PORT, else 8080 on every interface;
 * METRICS_LISTEN the same, or unset.
 */
static int load_listen(struct config *cfg, char *err, size_t errlen)
{
	const char *v = env("METRICS_LISTEN");
	if (v && parse_host_port(v, &cfg->metrics_host, &cfg->metrics_port, "METRICS_LISTEN", err, errlen) != 0)
		return -1;
	if ((v = env("LISTEN")))
		return parse_host_port(v, &cfg->listen_host, &cfg->listen_port, "LISTEN", err, errlen);
	long port = 8080;
	if ((v = env("PORT")) && parse_positive(v, 65535, &port) != 0) {
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
	if ((v = env("CA_BUNDLE")) && !(cfg->ca_bundle = strdup(v)))
		goto oom;
	if (cfg->webhook_secret)
		log_add_secret(cfg->webhook_secret);
	return 0;
oom:
	snprintf(err, errlen, "out of memory while reading the configuration");
	return -1;
}

/*
 * The S3 store's settings: S3_ENDPOINT (default https://storage.yandexcloud.net),
 * S3_REGION (default ru-central1) and the key pair, YANDEX_KEY_ID and
 * YANDEX_KEY_SECRET, else AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. The
 * strings are borrowed from the environment.
 */
struct config_s3 {
	const char *endpoint;
	const char *region;
	const char *key_id;
	const char *secret;
	const char *session_token;
};

static int config_s3_load(struct config_s3 *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	out->endpoint = env("S3_ENDPOINT");
	if (!out->endpoint)
		out->endpoint = "https://storage.yandexcloud.net";
	if (!is_http_url(out->endpoint)) {
		snprintf(err, errlen, "S3_ENDPOINT must be an http:// or https:// URL");
		return -1;
	}
	out->region = env("S3_REGION");
	if (!out->region)
		out->region = "ru-central1";
	/* It becomes part of libcurl's "aws:amz:REGION:s3", where ':' separates fields. */
	for (const char *p = out->region; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_') {
			snprintf(err, errlen, "S3_REGION must be a region name such as ru-central1 or us-east-1");
			return -1;
		}
	}
	/* A pair comes from one place: half of each would only fail at the first request. */
	const char *id_name = "YANDEX_KEY_ID", *secret_name = "YANDEX_KEY_SECRET";
	if (!env(id_name) && !env(secret_name)) {
		id_name = "AWS_ACCESS_KEY_ID";
		secret_name = "AWS_SECRET_ACCESS_KEY";
	}
	out->key_id = env(id_name);
	out->secret = env(secret_name);
	if (!out->key_id || !out->secret) {
		if (!out->key_id && !out->secret)
			snprintf(err, errlen,
				 "the S3 store needs a key pair: set YANDEX_KEY_ID and YANDEX_KEY_SECRET "
				 "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");
		else
			snprintf(err, errlen, "%s is not set (the S3 store needs it with %s)",
				 out->key_id ? secret_name : id_name, out->key_id ? id_name : secret_name);
		return -1;
	}
	/* Temporary credentials (an AWS role, e.g. Lambda's) come with a token to send along. */
	if (strcmp(id_name, "AWS_ACCESS_KEY_ID") == 0)
		out->session_token = env("AWS_SESSION_TOKEN");
	return 0;
}

/* s3://BUCKET[/PREFIX]: bucket names as S3 allows them (some servers allow '_' and capitals). */
static bool is_valid_s3_spec(const char *v)
{
	if (strncmp(v, "s3://", 5) != 0)
		return false;
	const char *b = v + 5, *p = b;
	for (; *p && *p != '/'; p++)
		if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
			return false;
	if (p == b || p - b > 255)
		return false;
	for (; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

/* STORE, else s3://$YANDEX_BUCKET (or S3_BUCKET) as the original bot has it, else sqlite:tgllm.db. */
static int load_store(struct config *cfg, char *err, size_t errlen)
{
	static const char *const bucket_names[] = {"YANDEX_BUCKET", "S3_BUCKET"};
	const char *v = env("STORE"), *bucket = env_first(bucket_names, 2);
	const char *name = "STORE";
	if (v) {
		cfg->store = strdup(v);
	} else if (bucket) {
		name = env("YANDEX_BUCKET") ? "YANDEX_BUCKET" : "S3_BUCKET";
		if (asprintf(&cfg->store, "s3://%s", bucket) < 0)
			cfg->store = NULL;
	} else {
		cfg->store = strdup("sqlite:tgllm.db");
	}
	if (!cfg->store) {
		snprintf(err, errlen, "out of memory while reading the configuration");
		return -1;
	}
	if (strncmp(cfg->store, "sqlite:", 7) == 0 && cfg->store[7])
		return 0;
	if (store_is_postgres_spec(cfg->store))
		return 0; /* its password goes to the log's secrets when the store opens */
	if (!is_valid_s3_spec(cfg->store)) {
		if (strcmp(name, "STORE") == 0)
			snprintf(err, errlen,
				 "STORE must be sqlite:PATH or s3://BUCKET[/PREFIX] (e.g. sqlite:tgllm.db), "
				 "or postgres://USER:PASSWORD@HOST:PORT/DB");
		else
			snprintf(err, errlen, "%s must be a bucket name (letters, digits, '.', '-', '_')", name);
		return -1;
	}
	struct config_s3 s3;
	char why[256];
	if (config_s3_load(&s3, why, sizeof why) != 0) {
		snprintf(err, errlen, "%s is %s: %s", name, cfg->store, why);
		return -1;
	}
	if (!(cfg->s3_endpoint = dup_url(s3.endpoint)) || !(cfg->s3_region = strdup(s3.region)) ||
	    !(cfg->s3_key_id = strdup(s3.key_id)) || !(cfg->s3_secret = strdup(s3.secret)) ||
	    (s3.session_token && !(cfg->s3_session_token = strdup(s3.session_token)))) {
		snprintf(err, errlen, "out of memory while reading the configuration");
		return -1;
	}
	log_add_secret(cfg->s3_secret);
	if (cfg->s3_session_token)
		log_add_secret(cfg->s3_session_token);
	return 0;
}

/*
 * TELEGRAM_PACING=PRIVATE_S,GROUP_S,PER_SECOND: seconds between calls to one
 * private chat, to one group, and calls a second overall (0: no limit).
 * Telegram's limits are the default; a bot allowed more (paid broadcasts,
 * a local Bot API server of one's own) may say so.
 */
static int load_pacing(struct config *cfg, char *err, size_t errlen)
{
	const char *v = env("TELEGRAM_PACING");
	cfg->tg_pacing = TG_PACING_DEFAULT;
	if (!v)
		return 0;
	double private_s, group_s, per_s;
	int used = 0;
	if (sscanf(v, "%lf,%lf,%lf%n", &private_s, &group_s, &per_s, &used) != 3 || v[used] ||
	    !(private_s >= 0 && private_s <= 3600) || !(group_s >= 0 && group_s <= 3600) ||
	    !(per_s >= 0 && per_s <= 1e6)) {
		snprintf(err, errlen,
			 "TELEGRAM_PACING must be PRIVATE_SECONDS,GROUP_SECONDS,CALLS_PER_SECOND (Telegram's "
			 "limits are 1,3,30; 0 means no limit)");
		return -1;
	}
	cfg->tg_pacing = (struct tg_pacing){private_s, group_s, per_s > 0 ? 1.0 / per_s : 0};
	return 0;
}

/* What every command needs: the bot token, where Telegram is, the log level, webhook settings. */
static int load_telegram(struct config *cfg, char *err, size_t errlen)
{
	const char *v = env("TG_BOT_TOKEN");
	if (!v) {
		snprintf(err, errlen, "TG_BOT_TOKEN is not set: get a token from @BotFather");
		return -1;
	}
	if (strchr(v, '/') || strchr(v, ' ') || !strchr(v, ':')) {
		snprintf(err, errlen, "TG_BOT_TOKEN does not look like a bot token (123456:ABC...)");
		return -1;
	}
	if (!(cfg->tg_token = strdup(v)))
		goto oom;
	log_add_secret(cfg->tg_token);

	v = env("TELEGRAM_API_BASE");
	if (!v)
		v = "https://api.telegram.org";
	if (!is_http_url(v)) {
		snprintf(err, errlen, "TELEGRAM_API_BASE must be an http:// or https:// URL");
		return -1;
	}
	if (!(cfg->tg_api_base = dup_url(v)))
		goto oom;

	if (load_pacing(cfg, err, errlen) != 0)
		return -1;

	cfg->log_level = LOG_LEVEL_INFO;
	if ((v = env("LOG_LEVEL")) && log_level_parse(v, &cfg->log_level) != 0) {
		snprintf(err, errlen, "LOG_LEVEL must be debug, info, warn or error");
		return -1;
	}
	cfg->log_format = LOG_FORMAT_TEXT;
	if ((v = env("LOG_FORMAT")) && log_format_parse(v, &cfg->log_format) != 0) {
		snprintf(err, errlen, "LOG_FORMAT must be text or json");
		return -1;
	}
	return load_webhook(cfg, err, errlen);
oom:
	snprintf(err, errlen, "out of memory while reading the configuration");
	return -1;
}

/* What running the bot needs on top: who may use it, the model, the store. */
static int load_bot(struct config *cfg, char *err, size_t errlen)
{
	char why[256];
	const char *v;

	/* A bot that pays for every message must not be open by accident. */
	if (!(v = getenv("TG_BOT_CHATS"))) {
		snprintf(err, errlen,
			 "TG_BOT_CHATS is not set: list the usernames or ids allowed to use the bot, "
			 "or '*' for everyone");
		return -1;
	}
	if (access_parse(v, &cfg->allow, why, sizeof why) != 0) {
		snprintf(err, errlen, "TG_BOT_CHATS: %s", why);
		return -1;
	}
	if ((v = env("TG_BOT_ADMINS")) && access_parse(v, &cfg->admins, why, sizeof why) != 0) {
		snprintf(err, errlen, "TG_BOT_ADMINS: %s", why);
		return -1;
	}

	static const char *const key_names[] = {"PROXY_API_KEY", "OPENAI_API_KEY"};
	if (!(v = env_first(key_names, 2))) {
		snprintf(err, errlen, "PROXY_API_KEY (or OPENAI_API_KEY) is not set: the model API key");
		return -1;
	}
	if (!(cfg->llm_key = strdup(v)))
		goto oom;
	log_add_secret(cfg->llm_key);

	v = env("OPENAI_BASE_URL");
	if (!v)
		v = env("PROXY_API_KEY") ? PROXYAPI_BASE : OPENAI_BASE;
	if (!is_http_url(v)) {
		snprintf(err, errlen, "OPENAI_BASE_URL must be an http:// or https:// URL");
		return -1;
	}
	if (!(cfg->llm_base_url = dup_url(v)))
		goto oom;

	v = env("OPENAI_MODEL");
	if (!(cfg->llm_model = strdup(v ? v : "gpt-4o-mini")))
		goto oom;
	if ((v = env("OPENAI_MODELS")) && !(cfg->llm_models = strdup(v)))
		goto oom;
	v = env("TRANSCRIBE_MODEL");
	if (!(cfg->transcribe_model = strdup(v ? v : "whisper-1")))
		goto oom;
	v = env("IMAGE_MODEL");
	if (!(cfg->image_model = strdup(v ? v : "gpt-image-1")))
		goto oom;
	v = env("IMAGE_SIZE");
	if (v && !is_image_size(v)) {
		snprintf(err, errlen, "IMAGE_SIZE must be WIDTHxHEIGHT (e.g. 1024x1024) or auto");
		return -1;
	}
	if (!(cfg->image_size = strdup(v ? v : "1024x1024")))
		goto oom;
	if ((v = env("SYSTEM_PROMPT")) && !(cfg->system_prompt = strdup(v)))
		goto oom;

	if (load_store(cfg, err, errlen) != 0)
		return -1;

	long n = 16000;
	if ((v = env("CONTEXT_TOKENS")) && parse_positive(v, 10000000, &n) != 0) {
		snprintf(err, errlen, "CONTEXT_TOKENS must be a positive number of tokens");
		return -1;
	}
	cfg->context_tokens = (size_t)n;

	n = 300;
	if ((v = env("OPENAI_TIMEOUT")) && parse_positive(v, 3600, &n) != 0) {
		snprintf(err, errlen, "OPENAI_TIMEOUT must be a number of seconds (1-3600)");
		return -1;
	}
	cfg->llm_timeout_s = n;

	n = 10;
	if ((v = env("LEASE_SECONDS")) && parse_positive(v, 3600, &n) != 0) {
		snprintf(err, errlen, "LEASE_SECONDS must be a number of seconds (1-3600)");
		return -1;
	}
	cfg->lease_s = n;

	static const char *const budgets[] = {"DAILY_TOKENS", "MONTHLY_TOKENS"};
	long long *budget_of[] = {&cfg->budget.daily, &cfg->budget.monthly};
	for (size_t i = 0; i < 2; i++) {
		n = 0;
		if ((v = env(budgets[i])) && parse_positive(v, 2000000000, &n) != 0) {
			snprintf(err, errlen, "%s must be a positive number of tokens (unset: unlimited)", budgets[i]);
			return -1;
		}
		*budget_of[i] = n;
	}

	v = env("REASONING");
	if (v && strcmp(v, "quote") != 0 && strcmp(v, "hide") != 0) {
		snprintf(err, errlen, "REASONING must be hide or quote");
		return -1;
	}
	cfg->show_reasoning = v && strcmp(v, "quote") == 0;
	return 0;
oom:
	snprintf(err, errlen, "out of memory while reading the configuration");
	return -1;
}

int config_load(struct config *cfg, enum config_scope scope, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof *cfg);
	if (load_telegram(cfg, err, errlen) != 0 || (scope == CONFIG_BOT && load_bot(cfg, err, errlen) != 0)) {
		config_free(cfg);
		return -1;
	}
	return 0;
}

void config_free(struct config *cfg)
{
	free(cfg->tg_token);
	free(cfg->tg_api_base);
	access_free(cfg->allow);
	access_free(cfg->admins);
	free(cfg->llm_models);
	free(cfg->transcribe_model);
	free(cfg->image_model);
	free(cfg->image_size);
	free(cfg->llm_key);
	free(cfg->llm_base_url);
	free(cfg->llm_model);
	free(cfg->system_prompt);
	free(cfg->store);
	free(cfg->s3_endpoint);
	free(cfg->s3_region);
	free(cfg->s3_key_id);
	free(cfg->s3_secret);
	free(cfg->s3_session_token);
	free(cfg->listen_host);
	free(cfg->metrics_host);
	free(cfg->webhook_path);
	free(cfg->webhook_secret);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	free(cfg->ca_bundle);
	memset(cfg, 0, sizeof *cfg);
}
