/*
 * bot: every stage of the pipeline built from the configuration and wired
 * together, for the ingress a command runs (main.c). Nothing else holds the
 * whole: each stage gets what it works with, and nothing more.
 */
#ifndef TGLLM_BOT_H
#define TGLLM_BOT_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "chat/chat.h"
#include "config.h"
#include "gate/gate.h"
#include "ingress/ingress.h"
#include "lib/http.h"
#include "model/llm.h"
#include "model/models.h"
#include "store/store.h"
#include "telegram/tg.h"

struct bot {
	struct http_client *http;
	struct tg_client *tg;
	struct llm_client *llm;
	struct model_list *models;
	struct store *store;
	struct chats *chats;
	struct gate *gate;
	struct ingress ingress; /* what the ingress works with */
};

/* Builds every stage on base; -1 with a one-line reason in err. */
/* What the store is opened with: the configuration's STORE and S3 settings (borrowed). */
struct store_options bot_store_options(const struct config *cfg);
/*
 * can_stop: answers offer a Stop control (the process lives on to receive the stop).
 * STORE_UNREACHABLE (store.h) instead of -1 when only the store's server was not there.
 */
int bot_open(struct bot *b, struct event_base *base, const struct config *cfg, bool can_stop, char *err,
             size_t errlen);
void bot_close(struct bot *b);

#endif
