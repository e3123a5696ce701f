/*
 * bot: the running bot — its clients, its store, and the routing of updates.
 *
 * Every ingress (long polling, webhook, serverless) hands the text of each
 * Update to bot_receive(): the update is journaled in the store,
 * decoded, gated (allowlist, group triggers, commands) and queued for its
 * chat (chat.h), which does the work.
 */
#ifndef TGLLM_BOT_H
#define TGLLM_BOT_H

#include <event2/event.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "gate/access.h"
#include "config.h"
#include "telegram/update.h"

enum bot_action {
	BOT_IGNORE, /* not for the bot: log and mark done */
	BOT_REPLY,  /* a message for the model */
	BOT_START,
	BOT_HELP,
	BOT_NEW,
	BOT_REFUSE, /* from someone not on the allowlist */
};

/*
 * Decides what to do with an update (pure, no side effects). In groups only
 * messages that mention the bot, reply to it or are commands for it count;
 * the allowlist is checked only for those. why is set to a short reason for
 * the log when the answer is BOT_IGNORE.
 */
enum bot_action bot_route(const struct tg_update *u, const struct access_list *allow,
			  int64_t self_id, const char *self_username, const char **why);

struct bot {
	struct event_base *base;
	const struct config *cfg; /* borrowed */
	struct http_client *http;
	struct tg_client *tg;
	struct llm_client *llm;
	struct store *store;
	struct chats *chats;
	int64_t self_id;      /* from getMe */
	char *self_username;  /* from getMe, without '@' */
	double token_scale;   /* real tokens per estimated token, learned from usage */
	bool has_no_drafts;   /* sendMessageDraft failed once: stream by edits */
	struct identify *identify; /* a getMe in progress */
};

/* Creates the clients and opens the store; -1 with a reason in err. */
int bot_init(struct bot *b, struct event_base *base, const struct config *cfg, char *err,
	     size_t errlen);
void bot_free(struct bot *b);

/*
 * Learns the bot's id and username (getMe), needed to see mentions and
 * commands addressed to it. Transient failures are retried with backoff;
 * done gets 0, or -1 when Telegram rejects the token (logged). With
 * may_use_cache, a previous answer kept in the store saves the round trip
 * (serverless invocations start cold every time).
 */
void bot_identify(struct bot *b, bool may_use_cache, void (*done)(void *arg, int status), void *arg);

/* Called once the update is safely journaled (or found to be a repeat, or broken). */
typedef void (*bot_accepted_cb)(void *arg);
/*
 * Takes the JSON text of an Update (borrowed) from an ingress; the same bytes
 * are journaled. Returns its update_id, also when the rest of it cannot be
 * decoded (the update is then skipped), and 0 when the text has none: it is
 * not an Update.
 */
int64_t bot_receive(struct bot *b, const char *text, size_t len, bot_accepted_cb accepted, void *arg);
/* Queues the updates a previous run journaled but did not finish. */
void bot_resume(struct bot *b);
/*
 * Out of time (serverless): stops every job and forgets their updates in the
 * journal, so that Telegram's redelivery (the caller answers 5xx) counts as
 * new. done runs once the store has forgotten them.
 */
void bot_abandon(struct bot *b, void (*done)(void *arg), void *arg);
/* Cuts answers short to deliver them now (see chats_hurry). */
void bot_hurry(struct bot *b);
/* Updates queued or being handled. */
size_t bot_busy(const struct bot *b);
/* Called each time the bot becomes idle (bot_busy() drops to 0). */
void bot_on_idle(struct bot *b, void (*cb)(void *arg), void *arg);

#endif
