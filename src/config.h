/*
 * config: the environment -> one immutable struct config.
 *
 * Variable names are those of the original serverless bot (README.md,
 * "Compatibility") plus tgllm's own. config_load() validates everything up
 * front so a misconfigured bot fails at start with one line naming the
 * variable, not at the first message.
 */
#ifndef TGLLM_CONFIG_H
#define TGLLM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "chat/usage.h"
#include "gate/access.h"
#include "lib/log.h"
#include "telegram/tg.h"

struct config {
	char *tg_token;
	char *tg_api_base; /* without a trailing slash */
	struct tg_pacing tg_pacing;
	struct access_list *allow;
	struct access_list *admins; /* TG_BOT_ADMINS, or NULL for none */
	char *llm_key;
	char *llm_base_url; /* without a trailing slash */
	char *llm_model;
	char *llm_models; /* OPENAI_MODELS: the choice /model offers; NULL: the provider's list */
	char *transcribe_model; /* TRANSCRIBE_MODEL: speech to text (voice notes) */
	char *image_model;      /* IMAGE_MODEL: /image */
	char *image_size;       /* IMAGE_SIZE: /image's WIDTHxHEIGHT (or auto) */
	char *system_prompt; /* NULL when unset */
	char *store;         /* "sqlite:PATH" or "s3://BUCKET[/PREFIX]" */
	/* STORE=s3://...: NULL otherwise */
	char *s3_endpoint;   /* without a trailing slash */
	char *s3_region;
	char *s3_key_id;
	char *s3_secret;
	char *s3_session_token; /* AWS_SESSION_TOKEN with temporary AWS credentials (Lambda's role), or NULL */
	size_t context_tokens;
	struct usage_budget budget; /* DAILY_TOKENS, MONTHLY_TOKENS; 0: unlimited */
	long llm_timeout_s;  /* a whole model answer */
	long lease_s;        /* LEASE_SECONDS: a claim on an update in a shared (PostgreSQL) store */
	bool show_reasoning; /* <think> text as an expandable quote, else hidden */

	/* webhook and serverless */
	char *listen_host;     /* NULL: all interfaces */
	int listen_port;
	char *metrics_host; /* METRICS_LISTEN: /metrics and /healthz there; NULL: all interfaces */
	int metrics_port;   /* 0: no METRICS_LISTEN (serve has /metrics beside the webhook) */
	char *webhook_path;    /* where Telegram posts updates, default "/" */
	char *webhook_secret;  /* NULL: no X-Telegram-Bot-Api-Secret-Token check */
	char *tls_cert;        /* PEM files; both or neither */
	char *tls_key;
	long handle_deadline_s; /* a serverless invocation must answer within this */
	char *ca_bundle;        /* CA_BUNDLE: a PEM file of trusted CAs; NULL for the system's */
	enum log_level log_level;
	enum log_format log_format;
};

enum config_scope {
	CONFIG_BOT,      /* everything running the bot needs */
	CONFIG_TELEGRAM, /* the token, Telegram's address and webhook settings only (webhook commands) */
};

/*
 * Fills cfg from the environment. On error returns -1 with one line in err
 * naming the variable and what is wrong; cfg is then left empty.
 * Registers the secrets with the log so they are never printed.
 */
int config_load(struct config *cfg, enum config_scope scope, char *err, size_t errlen);

void config_free(struct config *cfg);

#endif
