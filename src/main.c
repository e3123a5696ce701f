/* tgllm: a Telegram bot for any OpenAI-compatible language model. */
#include <curl/curl.h>
#include <errno.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bot.h"
#include "doctor.h"
#include "config.h"
#include "ingress/ingress.h"
#include "ingress/webhook.h"
#include "lib/backoff.h"
#include "lib/log.h"
#ifdef TGLLM_POSTGRES
#include "store/migrate.h"
#endif

static const char usage[] =
	"usage: tgllm COMMAND [OPTIONS]\n"
	"\n"
	"A Telegram bot that answers with any OpenAI-compatible language model.\n"
	"\n"
	"commands:\n"
	"  poll [--delete-webhook]   run the bot by long polling (getUpdates)\n"
	"  serve                     run a webhook server (LISTEN or PORT, WEBHOOK_SECRET, TLS_CERT/TLS_KEY)\n"
	"  handle                    serverless: one event on stdin, the response on stdout\n"
	"  lambda                    AWS Lambda custom runtime loop (provided.al2023)\n"
	"  set-webhook URL [--certificate FILE] [--drop-pending]\n"
	"                            point Telegram at URL (sends WEBHOOK_SECRET as the secret token)\n"
	"  delete-webhook [--drop-pending]\n"
	"  webhook-info              the webhook's URL, pending updates and last error\n"
	"  doctor                    check the token, the webhook, the model API and the store\n"
	"  migrate --from sqlite:PATH --to postgres://USER:PASSWORD@HOST:PORT/DB\n"
	"                            copy a SQLite store into an empty PostgreSQL one\n"
	"  --help, --version\n"
	"\n"
	"In chats: /new, /model [NAME], /system [TEXT|reset], /retry, /usage [all], /image PROMPT, /help;\n"
	"a streaming answer has a Stop control.\n"
	"Voice notes, audio and video notes are transcribed and answered; photos are shown to the model;\n"
	"text files and PDFs are read (files up to 20 MB).\n"
	"\n"
	"Configuration is read from the environment:\n"
	"  TG_BOT_TOKEN        the bot token from @BotFather (required)\n"
	"  TG_BOT_CHATS        who may use the bot: usernames, user or chat ids, or * (required)\n"
	"  PROXY_API_KEY       the model API key (or OPENAI_API_KEY) (required)\n"
	"  OPENAI_BASE_URL     the API base URL (default: ProxyAPI with PROXY_API_KEY, else OpenAI)\n"
	"  OPENAI_MODEL        the model (default gpt-4o-mini); a chat may choose another with /model\n"
	"  OPENAI_MODELS       the models /model offers, comma-separated (default: the provider's list)\n"
	"  TRANSCRIBE_MODEL    the speech-to-text model for voice notes (default whisper-1)\n"
	"  IMAGE_MODEL         the model /image draws with (default gpt-image-1)\n"
	"  IMAGE_SIZE          the size of its pictures, WIDTHxHEIGHT or auto (default 1024x1024)\n"
	"  TG_BOT_ADMINS       who else may change a group's model and system prompt; no budget, /usage all\n"
	"  DAILY_TOKENS        each user's tokens a UTC day (default: unlimited)\n"
	"  MONTHLY_TOKENS      each user's tokens a UTC month (default: unlimited)\n"
	"  SYSTEM_PROMPT       an optional system prompt; a chat may set its own with /system\n"
	"  STORE               where history lives: sqlite:PATH, s3://BUCKET[/PREFIX], postgres://\n"
	"                      (default sqlite:tgllm.db; s3://$YANDEX_BUCKET when that is set)\n"
	"  S3_ENDPOINT         the S3 server (default https://storage.yandexcloud.net)\n"
	"  S3_REGION           its region (default ru-central1)\n"
	"  YANDEX_KEY_ID, YANDEX_KEY_SECRET   the S3 key pair (or AWS_ACCESS_KEY_ID,\n"
	"                      AWS_SECRET_ACCESS_KEY and, for temporary credentials, AWS_SESSION_TOKEN)\n"
	"  CONTEXT_TOKENS      the prompt budget in tokens (default 16000)\n"
	"  OPENAI_TIMEOUT      seconds one answer may take (default 300)\n"
	"  REASONING           <think> text of reasoning models: hide or quote (default hide)\n"
	"  TELEGRAM_API_BASE   the Bot API server (default https://api.telegram.org)\n"
	"  TELEGRAM_PACING     seconds between messages to a private chat and to a group, and calls\n"
	"                      a second overall (default 1,3,30: Telegram's limits; 0 is no limit)\n"
	"  LISTEN, PORT        the webhook server's address (default port 8080, all interfaces)\n"
	"  WEBHOOK_PATH        the path Telegram posts to (default /)\n"
	"  WEBHOOK_SECRET      the secret token Telegram must send with every update\n"
	"  TLS_CERT, TLS_KEY   PEM files: serve HTTPS directly (e.g. a self-signed certificate)\n"
	"  HANDLE_DEADLINE     seconds a serverless invocation may take (default 55)\n"
	"  CA_BUNDLE           trusted certificate authorities: a PEM file or a hashed directory\n"
	"  LOG_LEVEL           debug, info, warn or error (default info)\n"
	"  LOG_FORMAT          text, or json: one JSON object a line (default text)\n"
	"  METRICS_LISTEN      HOST:PORT for GET /metrics and /healthz (serve also has them on LISTEN)\n";

enum mode { MODE_POLL, MODE_SERVE, MODE_HANDLE, MODE_LAMBDA };

struct options {
	bool delete_webhook;
	bool drop_pending;
	const char *certificate;
	const char *url;
};

/* Runs the bot in one of its modes, on its event loop. */
static int run_bot(const struct config *cfg, enum mode mode, const struct options *opt)
{
	struct bot bot;
	char err[512];
	struct event_base *base = event_base_new();
	if (!base) {
		log_error("cannot create the event loop");
		return 1;
	}
	int status = 1;
	/* A stop reaches only the process streaming the answer: serverless invocations are separate processes. */
	bool can_stop = mode == MODE_POLL || mode == MODE_SERVE;
	int rc = bot_open(&bot, base, cfg, can_stop, err, sizeof err);
	/*
	 * A long-running bot started before its database (a reboot, a
	 * container started beside PostgreSQL's) waits for it. Nothing is
	 * taken from Telegram yet, so SIGTERM and SIGINT keep their default
	 * action meanwhile: they end the process at once. A serverless
	 * invocation has a deadline and a platform that retries: it fails.
	 */
	static const struct backoff store_wait = {.first_ms = 1000, .max_ms = 30000, .has_jitter = true};
	for (int failures = 1; rc == STORE_UNREACHABLE && can_stop; failures++) {
		long ms = backoff_ms(&store_wait, failures);
		if (failures == 1 || failures % 10 == 0)
			log_error("%s; trying again until it answers (next in %ld ms, attempt %d)", err, ms,
			          failures);
		struct timespec pause = {ms / 1000, ms % 1000 * 1000000L};
		while (nanosleep(&pause, &pause) != 0 && errno == EINTR)
			;
		if ((rc = bot_open(&bot, base, cfg, can_stop, err, sizeof err)) == 0)
			log_info("the store answered after %d failed attempts", failures);
	}
	if (rc != 0) {
		log_print(stderr, "tgllm: %s", err);
		status = 2;
	} else {
		switch (mode) {
		case MODE_POLL:
			status = ingress_poll_run(&bot.ingress, opt->delete_webhook);
			break;
		case MODE_SERVE:
			status = ingress_serve_run(&bot.ingress);
			break;
		case MODE_HANDLE:
			status = ingress_handle_run(&bot.ingress);
			break;
		case MODE_LAMBDA:
			status = ingress_lambda_run(&bot.ingress);
			break;
		}
		bot_close(&bot);
	}
	event_base_free(base);
	return status;
}

/* Parses the options after the command; -1 on a bad one (reported). */
static int parse_options(int argc, char **argv, const char *cmd, struct options *opt)
{
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--delete-webhook") == 0 && strcmp(cmd, "poll") == 0) {
			opt->delete_webhook = true;
		} else if (strcmp(a, "--drop-pending") == 0 &&
			   (strcmp(cmd, "set-webhook") == 0 || strcmp(cmd, "delete-webhook") == 0)) {
			opt->drop_pending = true;
		} else if (strcmp(a, "--certificate") == 0 && strcmp(cmd, "set-webhook") == 0 && i + 1 < argc) {
			opt->certificate = argv[++i];
		} else if (a[0] != '-' && strcmp(cmd, "set-webhook") == 0 && !opt->url) {
			opt->url = a;
		} else {
			fprintf(stderr, "tgllm: %s: unexpected argument '%s' (try tgllm --help)\n", cmd, a);
			return -1;
		}
	}
	if (strcmp(cmd, "set-webhook") == 0 && !opt->url) {
		fprintf(stderr, "tgllm: set-webhook needs the URL Telegram should post to\n");
		return -1;
	}
	return 0;
}

/* tgllm migrate: needs its two options only, not the bot's configuration. */
static int run_migrate(int argc, char **argv)
{
	const char *from = NULL, *to = NULL;
	for (int i = 2; i < argc; i++) {
		const char **opt = strcmp(argv[i], "--from") == 0 ? &from
		                   : strcmp(argv[i], "--to") == 0 ? &to
		                                                  : NULL;
		if (!opt || i + 1 == argc || *opt) {
			fprintf(stderr, "tgllm: migrate: unexpected argument '%s' (try tgllm --help)\n",
			        argv[i]);
			return 2;
		}
		*opt = argv[++i];
	}
	if (!from || !to) {
		fprintf(
		    stderr,
		    "tgllm: migrate needs --from sqlite:PATH and --to postgres://... (try tgllm --help)\n");
		return 2;
	}
#ifdef TGLLM_POSTGRES
	return migrate_run(from, to);
#else
	fprintf(stderr, "tgllm: migrate: this tgllm is built without PostgreSQL support (TGLLM_POSTGRES=OFF, "
	                "or the lean static build): use the one built with libpq\n");
	return 1;
#endif
}

/* The bot mode cmd names (enum mode), or -1. */
static int bot_mode(const char *cmd)
{
	static const char *const names[] = {"poll", "serve", "handle", "lambda"};
	for (int i = 0; i < 4; i++)
		if (strcmp(cmd, names[i]) == 0)
			return i;
	return -1;
}

static int run(int argc, char **argv)
{
	const char *cmd = argv[1];
	if (strcmp(cmd, "migrate") == 0)
		return run_migrate(argc, argv);
	static const char *const webhook_cmds[] = {"set-webhook", "delete-webhook", "webhook-info"};
	int mode = bot_mode(cmd), webhook_cmd = -1;
	bool is_doctor = strcmp(cmd, "doctor") == 0;
	for (int i = 0; i < 3; i++)
		if (strcmp(cmd, webhook_cmds[i]) == 0)
			webhook_cmd = i;
	if (mode < 0 && webhook_cmd < 0 && !is_doctor) {
		fprintf(stderr, "tgllm: unknown command '%s' (try tgllm --help)\n", cmd);
		return 2;
	}
	struct options opt = {0};
	if (parse_options(argc, argv, cmd, &opt) != 0)
		return 2;

	struct config cfg;
	char err[512];
	if (config_load(&cfg, mode >= 0 || is_doctor ? CONFIG_BOT : CONFIG_TELEGRAM, err, sizeof err) != 0) {
		if (is_doctor)
			return doctor_config_failed(err);
		log_print(stderr, "tgllm: %s", err);
		return 2;
	}
	log_set_level(cfg.log_level);
	log_set_format(cfg.log_format);
	int status;
	if (is_doctor)
		status = doctor_run(&cfg);
	else if (mode >= 0)
		status = run_bot(&cfg, (enum mode)mode, &opt);
	else if (webhook_cmd == 0)
		status = webhook_set(&cfg, opt.url, opt.certificate, opt.drop_pending);
	else if (webhook_cmd == 1)
		status = webhook_delete(&cfg, opt.drop_pending);
	else
		status = webhook_info(&cfg);
	config_free(&cfg);
	return status;
}

/*
 * A cold serverless start pays for each page it touches first: on the
 * virtual machines functions run on, a page fault can cost ~10 microseconds,
 * where mapping the page ahead costs under 1 (bench/README.md, "Start-up:
 * page faults"). The heap that one update grows (~400 kB) is mapped in one
 * call before the bot allocates, and kept: a free does not hand it back to
 * be faulted in again. A kernel older than 5.14 refuses the advice; the
 * pages then fault in one by one as before.
 */
static void heap_prefault(void)
{
	enum { HEAP = 512 << 10 };
	if (mallopt(M_MMAP_THRESHOLD, 2 * HEAP) != 1 || mallopt(M_TRIM_THRESHOLD, 2 * HEAP) != 1)
		return;
	char *block = malloc(HEAP);
	if (!block)
		return;
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	char *start = (char *)((uintptr_t)block & ~(page - 1)), *end = sbrk(0);
	if (end != (char *)-1 && end > start)
		(void)madvise(start, (size_t)(end - start), MADV_POPULATE_WRITE);
	free(block);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("tgllm %s\n", TGLLM_VERSION);
		return 0;
	}
	/* A serverless process starts on a cold invocation: its start-up is the wait. */
	int mode = bot_mode(argv[1]);
	bool is_serverless = mode == MODE_HANDLE || mode == MODE_LAMBDA;
	if (is_serverless)
		heap_prefault();
	/* A peer closing a socket must be an error code, not a killed process. */
	signal(SIGPIPE, SIG_IGN);
	/*
	 * OpenSSL 3 fills its legacy name tables with every cipher and digest at
	 * init (libcurl's init asks for it), and the first digest fetched then
	 * copies them all into the providers' name map: ~4 M instructions, a
	 * third of a cold `handle`. Nothing here looks an algorithm up by its
	 * legacy name (TLS and EVP fetch from the providers), so the tables stay
	 * empty: the first call's choice holds for the process.
	 */
	uint64_t init = OPENSSL_INIT_NO_ADD_ALL_CIPHERS | OPENSSL_INIT_NO_ADD_ALL_DIGESTS;
	/*
	 * OpenSSL's ~2,000 error strings take 0.9 M instructions to load, 15 %
	 * of a cold handle, and are read only when TLS fails. Serverless logs
	 * such a failure with OpenSSL's code (error:0A000086:lib(20)::reason(134),
	 * which `openssl errstr` words); `tgllm doctor`, run where it fails,
	 * words it in full.
	 */
	if (is_serverless)
		init |= OPENSSL_INIT_NO_LOAD_CRYPTO_STRINGS | OPENSSL_INIT_NO_LOAD_SSL_STRINGS;
	/*
	 * The system's openssl.cnf (12 KB on Debian, parsed at every start:
	 * ~1 M instructions) says nothing the bot's TLS needs; an operator who
	 * does want a configuration names it in OPENSSL_CONF.
	 */
	if (!getenv("OPENSSL_CONF"))
		init |= OPENSSL_INIT_NO_LOAD_CONFIG;
	if (OPENSSL_init_ssl(init, NULL) != 1 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fputs("tgllm: cannot initialise libcurl\n", stderr);
		return 1;
	}
	int status = run(argc, argv);
	log_forget_secrets();
	curl_global_cleanup();
	return status;
}
