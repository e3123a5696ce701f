/*
 * chat: the conversation stage. The gate hands it updates that are for the
 * bot, each with the job it chose; this stage does the job and says what it
 * did to the store's journal.
 *
 * Updates of one chat are handled strictly in order, one at a time, so a
 * history is never read and written by two jobs at once; different chats
 * run concurrently on the loop (chat/queue.c). A job is a conversation
 * (chat/conversation.h): a chain of steps, each starting one asynchronous
 * operation and naming its continuation:
 *
 *   load history -> ask the model (trim, retry on context overflow)
 *     -> save both turns and deliver the answer (in an order conversation.c
 *        explains) -> next job
 *
 * "typing…" is shown from the start of a job until the answer is visible
 * or the job fails. See docs/internals/CONVERSATION.md.
 */
#ifndef TGLLM_CHAT_H
#define TGLLM_CHAT_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/llm.h"
#include "chat/usage.h"
#include "model/models.h"
#include "store/store.h"
#include "telegram/render.h"
#include "telegram/tg.h"
#include "telegram/update.h"

/* What the gate asks for an update. */
enum chat_job {
	CHAT_REPLY,  /* a message for the model */
	CHAT_MEDIA,  /* a voice note, audio, video note, photo or document for the model (chat/media.h) */
	CHAT_START,  /* /start: the greeting */
	CHAT_HELP,   /* /help */
	CHAT_NEW,    /* /new: forget the conversation */
	CHAT_MODEL,  /* /model [NAME]: show the chat's model and the choice, or switch */
	CHAT_SYSTEM, /* /system [TEXT|reset]: show, set or reset the chat's system prompt */
	CHAT_IMAGE,  /* /image PROMPT (/img): draw a picture (chat/media.h) */
	CHAT_PICK,   /* a button of the bot's message was pressed (/model's choice) */
	CHAT_RETRY,  /* /retry: the last answer again, in its place */
	CHAT_USAGE,  /* /usage [all]: the sender's tokens (everyone's, for an admin) */
	/* /model NAME or /system TEXT in a group, or a button, from someone who may not steer it */
	CHAT_NOT_PERMITTED,
	/*
	 * Stop the answer streaming in the chat (a draft's stop control, or the
	 * Stop button): not queued behind it, but given to chats_stop.
	 */
	CHAT_STOP,
	CHAT_REFUSE, /* from someone not on the allowlist: say so, at most once an hour */
	/*
	 * The journal could not take the update, so it is left for Telegram to
	 * deliver again: tell the user the storage is failing (nothing is
	 * marked done, there being nothing in the journal).
	 */
	CHAT_NOT_JOURNALED,
};

/* What the conversations work with; all borrowed, living longer than the chats. */
struct chat_env {
	struct event_base *base;
	struct tg_client *tg;
	struct llm_client *llm;
	struct model_list *models; /* what /model offers */
	struct store *store;
	const char *system_prompt; /* NULL for none */
	size_t context_tokens;     /* the prompt budget */
	enum render_think think;   /* what becomes of the model's <think> text */
	bool can_stop;             /* streamed answers offer a Stop control (poll, serve: not serverless) */
	/* An answer's exchange is stored before it is sent (poll, serve), else after (conversation.c, deliver). */
	bool stores_first;
	struct usage_budget budget; /* DAILY_TOKENS, MONTHLY_TOKENS: per user */
	/* Whether u is one of TG_BOT_ADMINS (the gate's list): no budget, /usage all. NULL: no one is. */
	bool (*is_admin)(const void *admins, const struct tg_user *u);
	const void *admins;
};

struct chats;

/* env is copied. NULL when out of memory. */
struct chats *chats_new(const struct chat_env *env);
/* Cancels whatever is running; unfinished updates stay pending in the journal. NULL is a no-op. */
void chats_free(struct chats *cs);
/*
 * Bounds on what waits, so that a flood (a forged one, without a webhook
 * secret) cannot take all memory: CHAT_QUEUE_MAX updates per chat, queued
 * or running; beyond CHATS_MAX_BUSY of all chats the ingresses take no more
 * updates (Telegram keeps them and delivers them again).
 */
#define CHAT_QUEUE_MAX 20
#define CHATS_MAX_BUSY 10000

/* chats_submit's answer when the chat has CHAT_QUEUE_MAX updates already. */
#define CHATS_CHAT_FULL 1

/*
 * Queues u (ownership moves to the queue; *u is left cleared) for job.
 * Returns 0; -1 when out of memory; CHATS_CHAT_FULL when u's chat is full:
 * u is not queued (and cleared), the chat is told once, until its queue has
 * emptied, that it is busy and that what it sends meanwhile is skipped.
 */
int chats_submit(struct chats *cs, struct tg_update *u, enum chat_job job);
enum chats_stop {
	CHATS_STOPPED,     /* the answer was cut where it was, delivered and stored */
	CHATS_NOTHING,     /* no answer of that draft is streaming (over already, or never here) */
	CHATS_NOT_ALLOWED, /* it is someone else's, and the one asking is no admin */
};

/*
 * Stops the answer to message draft_id of chat_id while it streams: the
 * model call is cancelled, what it said so far becomes the answer (marked
 * as stopped for the user). user_id asked (is_admin: may stop anyone's).
 */
enum chats_stop chats_stop(struct chats *cs, int64_t chat_id, int64_t draft_id, int64_t user_id, bool is_admin);

/* Jobs queued or running. */
size_t chats_busy(const struct chats *cs);
/* Jobs running: one per chat that has any; the rest of chats_busy() wait behind them. */
size_t chats_running(const struct chats *cs);
/* Whether CHATS_MAX_BUSY jobs are queued or running. */
bool chats_are_full(const struct chats *cs);
/* cb runs each time the last job ends (chats_busy() drops to 0); NULL to stop. */
void chats_on_idle(struct chats *cs, void (*cb)(void *arg), void *arg);
/*
 * Time is nearly up (serverless): every answer still streaming from the
 * model is cut where it is and delivered with a notice, then stored, so the
 * history stays consistent.
 */
void chats_hurry(struct chats *cs);
/*
 * Out of time (serverless): stops every job at once and forgets their
 * updates in the journal, so that Telegram's redelivery counts as new.
 * done runs once the store has forgotten them: from the loop, or at once
 * when there was nothing to forget.
 */
void chats_abandon(struct chats *cs, void (*done)(void *arg), void *arg);

#endif
