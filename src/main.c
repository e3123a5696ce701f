/* tgllm: a Telegram bot for any OpenAI-compatible language model. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "bot.h"
#include "config.h"
#include "ingress.h"
#include "log.h"

static const char usage[] =
	"usage: tgllm COMMAND\n"
	"\n"
	"A Telegram bot that answers with any OpenAI-compatible language model.\n"
	"\n"
	"commands:\n"
	"  poll        run the bot by long polling (getUpdates)\n"
	"  --help      show this help\n"
	"  --version   show the version\n"
	"\n"
	"Configuration is read from the environment:\n"
	"  TG_BOT_TOKEN        the bot token from @BotFather (required)\n"
	"  TG_BOT_CHATS        who may use the bot: usernames, user or chat ids, or * (required)\n"
	"  PROXY_API_KEY       the model API key (or OPENAI_API_KEY) (required)\n"
	"  OPENAI_BASE_URL     the API base URL (default: ProxyAPI with PROXY_API_KEY, else OpenAI)\n"
	"  OPENAI_MODEL        the model (default gpt-4o-mini)\n"
	"  SYSTEM_PROMPT       an optional system prompt\n"
	"  STORE               where history lives: sqlite:PATH (default sqlite:tgllm.db)\n"
	"  CONTEXT_TOKENS      the prompt budget in tokens (default 16000)\n"
	"  OPENAI_TIMEOUT      seconds one answer may take (default 300)\n"
	"  REASONING           <think> text of reasoning models: hide or quote (default hide)\n"
	"  TELEGRAM_API_BASE   the Bot API server (default https://api.telegram.org)\n"
	"  LOG_LEVEL           debug, info, warn or error (default info)\n";

static int run_poll(void)
{
	struct config cfg;
	struct bot bot;
	char err[512];
	int status = 2;

	if (config_load(&cfg, err, sizeof err) != 0) {
		fprintf(stderr, "tgllm: %s\n", err);
		return 2;
	}
	log_set_level(cfg.log_level);
	struct event_base *base = event_base_new();
	if (!base) {
		log_error("cannot create the event loop");
		config_free(&cfg);
		return 1;
	}
	if (bot_init(&bot, base, &cfg, err, sizeof err) != 0) {
		fprintf(stderr, "tgllm: %s\n", err);
	} else {
		status = ingress_poll_run(&bot, false);
		bot_free(&bot);
	}
	event_base_free(base);
	config_free(&cfg);
	return status;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fputs(usage, argc == 1 ? stdout : stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
		printf("tgllm %s\n", TGLLM_VERSION);
		return 0;
	}
	if (strcmp(cmd, "poll") != 0) {
		fprintf(stderr, "tgllm: unknown command '%s' (try tgllm --help)\n", cmd);
		return 2;
	}
	/* A peer closing a socket must be an error code, not a killed process. */
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fputs("tgllm: cannot initialise libcurl\n", stderr);
		return 1;
	}
	int status = run_poll();
	log_forget_secrets();
	curl_global_cleanup();
	return status;
}
