#include "bot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store_options bot_store_options(const struct config *cfg)
{
	return (struct store_options){
	    .spec = cfg->store,
	    .s3_endpoint = cfg->s3_endpoint,
	    .s3_region = cfg->s3_region,
	    .s3_key_id = cfg->s3_key_id,
	    .s3_secret = cfg->s3_secret,
	    .s3_session_token = cfg->s3_session_token,
	    .lease_ms = (unsigned)cfg->lease_s * 1000u,
	};
}

static bool is_admin(const void *admins, const struct tg_user *u)
{
	return access_allows(admins, u->id, u->username, 0);
}

int bot_open(struct bot *b, struct event_base *base, const struct config *cfg, bool can_stop, char *err,
             size_t errlen)
{
	int rc = -1;
	memset(b, 0, sizeof *b);
	b->http = http_client_new(base);
	if (!b->http || http_client_set_ca_bundle(b->http, cfg->ca_bundle) != 0)
		goto oom;
	b->tg = tg_client_new(base, b->http, cfg->tg_api_base, cfg->tg_token, &cfg->tg_pacing);
	struct llm_options llm = {
	    .base_url = cfg->llm_base_url,
	    .key = cfg->llm_key,
	    .model = cfg->llm_model,
	    .timeout_s = cfg->llm_timeout_s,
	    .transcribe_model = cfg->transcribe_model,
	    .image_model = cfg->image_model,
	    .image_size = cfg->image_size,
	};
	b->llm = llm_client_new(base, b->http, &llm);
	struct model_list_options models = {
	    .base_url = cfg->llm_base_url,
	    .key = cfg->llm_key,
	    .configured = cfg->llm_models,
	    .fallback = cfg->llm_model,
	};
	b->models = model_list_new(base, b->http, &models);
	if (!b->tg || !b->llm || !b->models)
		goto oom;
	struct store_options so = bot_store_options(cfg);
	char why[256];
	rc = store_open(&so, base, b->http, &b->store, why, sizeof why);
	if (rc != 0) {
		snprintf(err, errlen, "STORE: %s", why);
		goto fail;
	}
	struct chat_env chat = {
	    .base = base,
	    .tg = b->tg,
	    .llm = b->llm,
	    .models = b->models,
	    .store = b->store,
	    .system_prompt = cfg->system_prompt,
	    .context_tokens = cfg->context_tokens,
	    .think = cfg->show_reasoning ? RENDER_THINK_QUOTE : RENDER_THINK_HIDE,
	    .can_stop = can_stop,
	    .stores_first = can_stop, /* a server: kills are its failure, not a serverless deadline */
	    .budget = cfg->budget,
	    .is_admin = cfg->admins ? is_admin : NULL,
	    .admins = cfg->admins,
	};
	if (!(b->chats = chats_new(&chat)))
		goto oom;
	struct gate_env gate = {
	    .base = base,
	    .tg = b->tg,
	    .store = b->store,
	    .chats = b->chats,
	    .allow = cfg->allow,
	    .admins = cfg->admins,
	    .bot_id = strtoll(cfg->tg_token, NULL, 10),
	};
	if (!(b->gate = gate_new(&gate)))
		goto oom;
	b->ingress = (struct ingress){
	    .base = base,
	    .cfg = cfg,
	    .gate = b->gate,
	    .chats = b->chats,
	    .tg = b->tg,
	    .store = b->store,
	    .http = b->http,
	};
	return 0;
oom:
	rc = -1;
	snprintf(err, errlen, "out of memory");
fail:
	bot_close(b);
	return rc;
}

void bot_close(struct bot *b)
{
	gate_free(b->gate);
	chats_free(b->chats);
	store_free(b->store);
	model_list_free(b->models);
	llm_client_free(b->llm);
	tg_client_free(b->tg);
	http_client_free(b->http);
	memset(b, 0, sizeof *b);
}
