/*
 * gate: where every update enters the pipeline, whichever ingress brought
 * it. The update is journaled in the store (claimed) before anything else,
 * so a crash loses nothing and a repeat is not answered twice; then it is
 * routed (gate/route.h: the allowlist, group triggers, commands) and handed
 * to the chats, or marked done when it is not for the bot.
 *
 * The gate also knows who the bot is (getMe), which routing needs to see
 * mentions and commands addressed to it.
 */
#ifndef TGLLM_GATE_H
#define TGLLM_GATE_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/chat.h"
#include "gate/access.h"
#include "store/store.h"
#include "telegram/tg.h"
#include "telegram/update.h"

/* What the gate works with; all borrowed, living longer than the gate. */
struct gate_env {
	struct event_base *base;
	struct tg_client *tg;
	struct store *store;
	struct chats *chats;
	const struct access_list *allow;
	const struct access_list *admins; /* TG_BOT_ADMINS, or NULL */
	int64_t
	    bot_id; /* the number before ':' in the token: an identity cached for another bot is ignored */
};

struct gate;

struct gate *gate_new(const struct gate_env *env);
void gate_free(struct gate *g);

/*
 * Learns the bot's id and username (getMe). Transient failures are retried
 * with backoff; done gets 0, or -1 when Telegram rejects the token (logged).
 * With may_use_cache, the identity an earlier run kept in the store saves
 * the round trip (serverless invocations start cold every time).
 * Must have succeeded before gate_resume, and have been started before
 * gate_receive: an update received meanwhile is journaled at once, beside
 * the identity's own round trips, and routed once the identity is known
 * (when it cannot be known, the update is released from the journal and
 * refused: accepted gets is_journaled false). done runs from the loop; -1
 * when out of memory (done does not run).
 */
int gate_identify(struct gate *g, bool may_use_cache, void (*done)(void *arg, int status), void *arg);

/*
 * is_journaled: the update is in the journal (new, or a repeat that is not
 * answered again) and settled: queued for its chat, or, when it is not for
 * the bot, marked done. The ingress may tell Telegram it arrived. False when
 * the journal could not be written: the update was dropped, and Telegram
 * must deliver it again.
 */
typedef void (*gate_accepted_cb)(void *arg, int64_t update_id, bool is_journaled);

/*
 * Takes a decoded update (its contents move in; *u is left cleared) with its
 * JSON text (borrowed for the call), which is what the journal keeps.
 * accepted runs once, from the loop, never inside this call. -1 when out of
 * memory: the update is dropped and accepted does not run.
 */
int gate_receive(struct gate *g, struct tg_update *u, const char *text, size_t len, gate_accepted_cb accepted,
                 void *arg);

/*
 * The callbacks of gate_identify and gate_receive waiting with arg will not
 * run: whoever gave them is gone (a serverless invocation out of time). The
 * work itself goes on: an update journaled later is still handled.
 */
void gate_forget(struct gate *g, void *arg);

/*
 * Out of time (serverless), before the chats abandon theirs: the updates
 * journaled while the bot was still learning who it is are released from
 * the journal, so that Telegram's next delivery counts as new (one whose
 * claim is still out is released when it comes back). Their accepted
 * callbacks will not run. True when releases were started: done runs, from
 * the loop, once they are answered; false when there was nothing to
 * release (done does not run).
 */
bool gate_abandon(struct gate *g, void (*done)(void *arg), void *arg);

/*
 * Whether every update taken is settled: none is still being journaled (a
 * stopping server waits for those, so that their senders get their answer).
 */
bool gate_is_settled(const struct gate *g);
/* cb runs each time the last unsettled update settles; NULL to stop. */
void gate_on_settled(struct gate *g, void (*cb)(void *arg), void *arg);

/*
 * Queues the updates an earlier run journaled but did not finish, oldest
 * first. On a shared store (store_lease_ms), those of stopped instances, and
 * again twice a lease from then on.
 */
void gate_resume(struct gate *g);

#endif
