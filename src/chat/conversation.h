/*
 * conversation: one job of a chat (chat.h), from the update to the journal's
 * "done". Private to the chat stage: the queue (chat/queue.c) runs one at a
 * time per chat. See docs/internals/CONVERSATION.md for the steps.
 */
#ifndef TGLLM_CONVERSATION_H
#define TGLLM_CONVERSATION_H

#include <stdbool.h>
#include <stdint.h>

#include "chat/chat.h"
#include "chat/policy.h"
#include "chat/settings.h"
#include "chat/text.h"
#include "chat/usage.h"
#include "lib/buf.h"
#include "lib/history.h"
#include "lib/metrics.h"
#include "telegram/deliver.h"
#include "telegram/send.h"

/*
 * A job's state. Its members are conversation.c's; the queue holds the
 * struct in its own node (one allocation a job: thousands wait at once).
 */
struct conversation {
	const struct chat_env *env;
	struct tg_update u;
	enum chat_job job;
	const char *lang;
	void (*ended)(void *arg);
	void *arg;
	enum metrics_outcome outcome; /* what end() counts */

	/* a reply from the model */
	struct history history;
	struct turn user; /* the text as stored: prefixed with the sender's name in groups */
	size_t min_from;  /* history turns before this one are left out after a context overflow */
	int context_retries;
	struct llm_call *llm;
	struct prompt_plan asked; /* the request in flight */
	struct delivery *delivery;
	struct buf answer;       /* the model's text as it streams in; stored as the assistant turn */
	char *shown;              /* the answer as delivered: with its notice of a cut, if any */
	bool is_saved, is_delivered;
	struct event *save_timer; /* stores the exchange again after a failure */
	int save_tries;
	enum text_id after_text; /* a notice sent after the answer, TEXT_COUNT for none */
	bool is_blocked;         /* Telegram said 403: stop sending */

	struct tg_typing typing;
	struct tg_call *send_call;
	void (*after_send)(struct conversation *c); /* what follows the message being sent */

	/* the chat's choices (chat/settings.h), read beside the history; chat/steer.c changes them */
	struct chat_settings settings;
	int loading;          /* store reads still out before the model can be asked */
	bool is_load_failed;  /* the history could not be read */
	bool is_history_aside; /* it was unreadable and kept aside: the chat starts over */
	void (*then)(struct conversation *c); /* steer.c: the step after the call under way */
	bool is_system_chosen;                /* the choice being stored is the system prompt (else the model) */
	char gone_model[96];                          /* a chosen model the provider no longer has, for the notice */

	/* /retry: the last exchange as loaded, taken out of the history; the new one takes its place */
	struct turn replaced[2];
	size_t n_replaced;

	/* usage (chat/usage.h): counted in the month and day the answer began */
	char usage_key[USAGE_KEY_LEN];
	char usage_day[USAGE_DAY_LEN];
	char usage_model[96];     /* the model the answer is counted for */
	long long reserved;       /* tokens of the user's budget held for this answer; 0: none */
	long long allowance;      /* of which the answer may spend, by estimate */
	bool is_over_budget;      /* the reservation found too little left */
	bool is_over_daily;       /* ... of the daily budget (else the monthly) */
	struct usage_count spent; /* what the answer cost, to add once the job ends */
	bool is_count_due;        /* spent (or the reservation's return) is still to be written */
	int writes;               /* usage writes in flight; the job is over when they are done */
	bool is_ending;
	struct usage_user *users; /* /usage all: one per user with a count this month */
	size_t n_users, cap_users;
	struct media_job *media; /* CHAT_MEDIA: chat/media.c's download and transcription */
};

/*
 * Takes u (its contents move in; *u is left cleared). ended runs once, from
 * the loop, when the job is over, whatever happened.
 */
void conversation_init(struct conversation *c, const struct chat_env *env, struct tg_update *u,
                       enum chat_job job, void (*ended)(void *arg), void *arg);
/* Starts the job's first step. */
void conversation_start(struct conversation *c);
/* chats_stop for this job (see chat.h). */
enum chats_stop conversation_stop(struct conversation *c, int64_t draft_id, int64_t user_id, bool is_admin);
/* While the model streams: cuts the answer short and delivers what there is; false when not streaming. */
bool conversation_hurry(struct conversation *c);
int64_t conversation_update_id(const struct conversation *c);
/*
 * A reply whose user turn (c->user) is built, "typing…" shown: the answer
 * is delivered, the history and settings read, the model asked (for
 * chat/media.c, once a file became that turn).
 */
void conversation_reply(struct conversation *c);
/* Sends a notice (copied), then ends the job (marked done; outcome: failed). */
void conversation_fail(struct conversation *c, enum text_id id);
/* The same with a sentence of the caller's (copied). */
void conversation_fail_text(struct conversation *c, const char *text);
/* The job is done: marked so in the journal, then over (for chat/steer.c). */
void conversation_done(struct conversation *c);
/* Stops at once: no callback runs afterwards; the update is not marked done. */
void conversation_clear(struct conversation *c);

#endif
