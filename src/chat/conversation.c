#include "chat/conversation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/media.h"
#include "chat/policy.h"
#include "chat/settings.h"
#include "chat/steer.h"
#include "chat/text.h"
#include "lib/backoff.h"
#include "lib/history.h"
#include "lib/log.h"
#include "model/llm.h"
#include "model/tokens.h"
#include "store/store.h"
#include "telegram/deliver.h"
#include "telegram/render.h"
#include "telegram/send.h"

#define CONTEXT_RETRIES 3
#define MAX_USER_TEXT   (64u << 10)  /* bytes of one message sent to the model */
#define REFUSED_AT      "refused_at" /* setting of the user's id: when a stranger was last refused */
/* Completion tokens a budget holds for an answer: more than models write at once; the answer ends there. */
#define COMPLETION_RESERVE 16384
#define ANSWER_MIN         16 /* tokens: with less left of a budget after the prompt, no answer is begun */

static long long chat_of(const struct conversation *c)
{
	return (long long)c->u.message.chat_id;
}

/* The job is over, whatever happened: the queue frees it. */
static void over(struct conversation *c)
{
	if (c->job != CHAT_NOT_JOURNALED) /* the gate counted that one */
		metrics_update(c->u.kind_name, c->outcome);
	log_debug("chat=%lld update=%lld: over", chat_of(c), (long long)c->u.update_id);
	c->ended(c->arg);
}

/* ---- usage: what an answer spends, and the budget it spends from ---- */

static bool is_admin(const struct conversation *c)
{
	return c->env->is_admin && c->env->is_admin(c->env->admins, &c->u.message.from);
}

static bool has_budget(const struct conversation *c)
{
	return (c->env->budget.daily || c->env->budget.monthly) && !is_admin(c);
}

/* The name /usage all shows: @username, else the first name. */
static void user_name(const struct conversation *c, char out[72])
{
	const struct tg_user *f = &c->u.message.from;
	if (f->username)
		snprintf(out, 72, "@%s", f->username);
	else
		snprintf(out, 72, "%s", f->first_name ? f->first_name : "");
}

/* store_setting_change's: the budget checked and the answer's share held, or nothing when too little is left. */
static char *reserve_change(void *arg, const char *value)
{
	struct conversation *c = arg;
	long long need = (long long)c->asked.estimated;
	long long left = usage_left(value, c->usage_day, &c->env->budget, &c->is_over_daily);
	c->is_over_budget = left - need < ANSWER_MIN;
	c->reserved = 0;
	if (c->is_over_budget)
		return NULL;
	c->allowance = left - need < COMPLETION_RESERVE ? left - need : COMPLETION_RESERVE;
	char name[72];
	user_name(c, name);
	struct usage_count add = {.reserved = need + c->allowance};
	char *out = usage_add(value, c->usage_day, c->usage_model, name, &add);
	if (out)
		c->reserved = add.reserved;
	return out;
}

/* store_setting_change's: what the answer spent added, its reservation given back. */
static char *count_change(void *arg, const char *value)
{
	struct conversation *c = arg;
	char name[72];
	user_name(c, name);
	struct usage_count add = c->spent;
	add.reserved = -c->reserved;
	return usage_add(value, c->usage_day, c->usage_model, name, &add);
}

static void on_counted(void *arg, int err)
{
	struct conversation *c = arg;
	if (err)
		log_warn("chat=%lld: what user %lld's answer spent could not be counted", chat_of(c),
		         (long long)c->u.message.from.id);
	if (--c->writes == 0 && c->is_ending)
		over(c);
}

/* Writes what the answer spent (and gives the reservation back), beside whatever else ends the job. */
static void count_usage(struct conversation *c)
{
	if (!c->is_count_due)
		return;
	c->is_count_due = false;
	if (!c->spent.prompt && !c->spent.completion && !c->reserved)
		return;
	c->writes++;
	store_setting_change(c->env->store, c->u.message.from.id, c->usage_key, count_change, c, on_counted, c);
}

/*
 * What the answer cost: the API's count, or the estimate where it reported
 * none (-1: a provider without usage, or an answer stopped or cut).
 */
static void note_spent(struct conversation *c, long prompt, long completion)
{
	double scale = llm_token_scale(c->env->llm);
	c->spent.prompt = prompt >= 0 ? prompt : (long long)c->asked.estimated;
	c->spent.completion =
	    completion >= 0 ? completion : (long long)((double)tokens_estimate(c->answer.data, c->answer.len) * scale);
	c->spent.is_estimated = prompt < 0 || completion < 0;
	c->is_count_due = true;
}

/* The job's work is done; it is over once what it spent is counted. */
static void end(struct conversation *c)
{
	count_usage(c);
	c->is_ending = true;
	if (c->writes == 0)
		over(c);
}

/* ---- talking to Telegram ---- */

static void typing_stop(struct conversation *c)
{
	tg_typing_stop(&c->typing);
}

typedef void (*sent_cb)(struct conversation *c);

static void on_sent(void *arg, const struct tg_result *res)
{
	struct conversation *c = arg;
	sent_cb next = c->after_send;
	c->send_call = NULL;
	if (res->ok) {
		next(c);
		return;
	}
	if (res->error_code == 403) {
		log_warn("chat=%lld: Telegram refuses messages to this chat (%s); dropping the reply",
		         chat_of(c), res->description);
		c->is_blocked = true;
	} else {
		log_error("chat=%lld: sendMessage failed: %ld %s", chat_of(c), res->error_code,
		          res->description);
	}
	next(c);
}

/* Sends text (copied) as a reply to the user's message, then calls next, whether it went or not. */
static void send_text(struct conversation *c, const char *text, size_t len, sent_cb next)
{
	c->after_send = next;
	if (!c->is_blocked) {
		struct tg_target t = tg_target_of(&c->u.message);
		c->send_call = tg_send_text(c->env->tg, &t, text, len, on_sent, c);
	}
	if (!c->send_call) {
		if (!c->is_blocked)
			log_error("chat=%lld: cannot send a message", chat_of(c));
		next(c);
	}
}

static void send_notice(struct conversation *c, enum text_id id, sent_cb next)
{
	const char *t = text_get(id, c->lang);
	send_text(c, t, strlen(t), next);
}

/* ---- commands ---- */

static void on_update_done(void *arg, int err)
{
	(void)err; /* logged by the store; at worst the update is skipped as a repeat later */
	end(arg);
}

static void mark_done_and_end(struct conversation *c)
{
	typing_stop(c);
	store_update_done(c->env->store, c->u.update_id, on_update_done, c);
}

static void on_history_cleared(void *arg, int err)
{
	struct conversation *c = arg;
	if (err)
		c->outcome = METRICS_FAILED;
	send_notice(c, err ? TEXT_STORE_FAILED : TEXT_NEW_DONE, mark_done_and_end);
}

static void send_refusal(struct conversation *c)
{
	char text[512];
	/* The format is ours: each language's TEXT_REFUSED takes exactly one %lld. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	int n = snprintf(text, sizeof text, text_get(TEXT_REFUSED, c->lang), (long long)c->u.message.from.id);
#pragma GCC diagnostic pop
	send_text(c, text, n > 0 ? (size_t)n : 0, mark_done_and_end);
}

static void on_refusal_noted(void *arg, int err)
{
	(void)err; /* logged by the store; the worst case is one refusal more */
	send_refusal(arg);
}

/* Strangers are told once an hour; the time is in the store so restarts keep it. */
static void on_last_refusal(void *arg, int err, const char *value)
{
	struct conversation *c = arg;
	long long now = (long long)time(NULL);
	long long last = value ? strtoll(value, NULL, 10) : 0;
	if (!err && !policy_refusal_is_due(last, now)) {
		log_info("chat=%lld: user %lld was refused within the hour; not telling again", chat_of(c),
		         (long long)c->u.message.from.id);
		mark_done_and_end(c);
		return;
	}
	char stamp[24];
	snprintf(stamp, sizeof stamp, "%lld", now);
	store_setting_set(c->env->store, c->u.message.from.id, REFUSED_AT, stamp, on_refusal_noted, c);
}

/* ---- a reply from the model ---- */

static void ask(struct conversation *c);
static void on_reserved(void *arg, int err);

/*
 * The answer is complete; it is delivered and stored (the exchange and the
 * update's done mark, in one step), then a notice follows if any. Which goes
 * first is the failure it is safe against, as the Bot API has no
 * idempotency key that would let a send and a commit be one step:
 *
 *  - a server (poll, serve: env->stores_first) stores first. A process
 *    killed in between has answered at most once: after a restart, or in
 *    the instance that takes its updates over, the update is done. Its
 *    window for losing an answer (stored, never sent) is the moment from the
 *    commit to the send leaving; the other order's window for answering
 *    twice is Telegram's whole round trip and then the commit's.
 *  - serverless delivers first: its failure is the deadline, which may fall
 *    while Telegram's flood limit holds the answer back; then nothing is
 *    stored, the update is released, and the next invocation answers it.
 */
static void save_exchange(struct conversation *c);

static void send_after_text(struct conversation *c)
{
	if (c->after_text == TEXT_COUNT) {
		end(c);
		return;
	}
	enum text_id id = c->after_text;
	c->after_text = TEXT_COUNT;
	send_notice(c, id, end);
}

static void on_delivered(void *arg, bool is_delivered)
{
	struct conversation *c = arg;
	c->is_delivered = true;
	if (!is_delivered)
		log_warn("chat=%lld update=%lld: the answer did not fully reach the chat", chat_of(c),
		         (long long)c->u.update_id);
	else
		log_debug("chat=%lld update=%lld: delivered", chat_of(c), (long long)c->u.update_id);
	if (c->is_saved)
		send_after_text(c);
	else
		save_exchange(c); /* at once: a kill before its commit answers the update twice */
}

static void finish_delivery(struct conversation *c)
{
	delivery_finish(c->delivery, c->shown, strlen(c->shown), on_delivered);
}

/*
 * A store that fails to take the exchange (down, out of disk, a statement
 * timing out) is asked again, 1 s doubling to 30 s, SAVE_TRIES times in all
 * (about a minute and a half), the user told once; the chat's next job
 * waits. After that the answer goes unstored, and its update stays pending,
 * to be answered again after a restart (or by the instance that takes it
 * over).
 */
#define SAVE_TRIES 8
static const struct backoff save_backoff = {.first_ms = 1000, .max_ms = 30000, .has_jitter = true};

static void save(struct conversation *c);

static void on_save_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	save(arg);
}

/* The exchange is not stored, and will not be: the answer goes (if it has not), and the job ends. */
static void give_up_saving(struct conversation *c)
{
	if (c->is_delivered)
		send_after_text(c);
	else
		finish_delivery(c);
}

static void save_later(struct conversation *c)
{
	long ms = backoff_ms(&save_backoff, c->save_tries);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if ((c->save_timer || (c->save_timer = evtimer_new(c->env->base, on_save_timer, c))) &&
	    evtimer_add(c->save_timer, &tv) == 0)
		return;
	log_error("chat=%lld update=%lld: cannot wait to store the exchange again; the update stays pending",
	          chat_of(c), (long long)c->u.update_id);
	give_up_saving(c);
}

static void on_saved(void *arg, int err)
{
	struct conversation *c = arg;
	if (err == STORE_TAKEN_OVER) { /* another instance took the update over, and answers it */
		c->outcome = METRICS_DUPLICATE;
		end(c);
		return;
	}
	if (!err) {
		c->is_saved = true;
		log_debug("chat=%lld update=%lld: stored", chat_of(c), (long long)c->u.update_id);
		if (c->is_delivered)
			send_after_text(c);
		else
			finish_delivery(c);
		return;
	}
	if (++c->save_tries < SAVE_TRIES) {
		log_error("chat=%lld update=%lld: the exchange could not be stored (try %d of %d); trying again",
		          chat_of(c), (long long)c->u.update_id, c->save_tries, SAVE_TRIES);
		if (c->save_tries == 1)
			send_notice(c, c->is_delivered ? TEXT_STORE_UNSAVED : TEXT_STORE_SAVING, save_later);
		else
			save_later(c);
		return;
	}
	log_error("chat=%lld update=%lld: the exchange could not be stored; the update stays pending", chat_of(c),
	          (long long)c->u.update_id);
	give_up_saving(c);
}

static void save(struct conversation *c)
{
	struct turn turns[2] = {c->user, {TURN_ASSISTANT, c->answer.data, c->answer.len, false}};
	store_history_replace(c->env->store, c->u.message.chat_id, c->replaced, c->n_replaced, turns, 2,
	                      c->u.update_id, on_saved, c);
}

static void save_exchange(struct conversation *c)
{
	count_usage(c); /* at once, beside the history: on S3 each is a round trip */
	save(c);
}

static void deliver(struct conversation *c, const char *suffix)
{
	typing_stop(c);
	free(c->shown);
	if (asprintf(&c->shown, "%s%s%s", buf_str(&c->answer), suffix ? "\n\n" : "", suffix ? suffix : "") < 0) {
		c->shown = NULL;
		log_error("chat=%lld: out of memory delivering an answer", chat_of(c));
		mark_done_and_end(c);
		return;
	}
	c->outcome = METRICS_ANSWERED;
	if (c->env->stores_first)
		save_exchange(c);
	else
		finish_delivery(c);
}

static void fail_with(struct conversation *c, enum text_id id)
{
	typing_stop(c);
	c->outcome = METRICS_FAILED;
	send_notice(c, id, mark_done_and_end);
}

/*
 * An answer that renders to nothing (only reasoning, whitespace, an empty
 * code fence…) is told as such, and not stored: an empty turn would teach
 * the model nothing and show the user nothing.
 */
static bool is_blank(struct conversation *c)
{
	enum render_blank blank = render_blank(c->answer.data, c->answer.len);
	if (blank == RENDER_SHOWS_TEXT)
		return false;
	log_warn("chat=%lld update=%lld: the model's answer (%zu bytes) shows nothing%s", chat_of(c),
	         (long long)c->u.update_id, c->answer.len,
	         blank == RENDER_BLANK_THINKING ? ": its reasoning never ended" : "");
	fail_with(c, blank == RENDER_BLANK_THINKING ? TEXT_MODEL_THINKING : TEXT_MODEL_EMPTY);
	return true;
}

static void forget_model(struct conversation *c);

static void on_answer(void *arg, const struct llm_result *res)
{
	struct conversation *c = arg;
	c->llm = NULL;
	if ((res->status == LLM_OK || res->status == LLM_CUT) && is_blank(c))
		return;
	switch (res->status) {
	case LLM_OK:
		note_spent(c, res->prompt_tokens, res->completion_tokens);
		if (c->min_from > 0)
			c->after_text = TEXT_CONTEXT_DROPPED;
		log_info("chat=%lld update=%lld: answered (%zu bytes, %ld+%ld tokens)", chat_of(c),
		         (long long)c->u.update_id, c->answer.len, res->prompt_tokens,
		         res->completion_tokens);
		deliver(c, NULL);
		return;
	case LLM_CUT:
		note_spent(c, res->prompt_tokens, res->completion_tokens);
		if (c->min_from > 0)
			c->after_text = TEXT_CONTEXT_DROPPED;
		if (res->is_at_limit && c->reserved) {
			log_info("chat=%lld: user %lld's answer reached what is left of the budget", chat_of(c),
			         (long long)c->u.message.from.id);
			deliver(c, text_get(TEXT_BUDGET_CUT, c->lang));
			return;
		}
		log_warn("chat=%lld: the model's answer broke off (%s); delivering the part", chat_of(c),
		         res->detail);
		deliver(c, text_get(TEXT_ANSWER_CUT, c->lang));
		return;
	case LLM_CONTEXT:
		log_warn("chat=%lld: the prompt (~%zu tokens) is over the model's context: %s", chat_of(c),
		         c->asked.estimated, res->detail);
		if (c->context_retries++ < CONTEXT_RETRIES &&
		    policy_drop_half(c->asked.from, c->history.len, &c->min_from)) {
			ask(c);
			return;
		}
		fail_with(c, TEXT_TOO_LONG);
		return;
	case LLM_QUOTA:
		log_error("llm: the API account has no credit left (%s): top it up", res->detail);
		fail_with(c, TEXT_MODEL_QUOTA);
		return;
	case LLM_AUTH:
		log_error("llm: the API key is rejected (%s): check PROXY_API_KEY / OPENAI_API_KEY",
		          res->detail);
		fail_with(c, TEXT_MODEL_AUTH);
		return;
	case LLM_BUSY:
		log_error("chat=%lld: the model is rate limited (%s)", chat_of(c), res->detail);
		fail_with(c, TEXT_MODEL_BUSY);
		return;
	case LLM_DOWN:
		log_error("chat=%lld: the model is unreachable (%s)", chat_of(c), res->detail);
		fail_with(c, TEXT_MODEL_DOWN);
		return;
	case LLM_REJECTED:
		log_error("chat=%lld: the model refused the request (%s)", chat_of(c), res->detail);
		fail_with(c, c->user.is_parts ? TEXT_NO_VISION : TEXT_MODEL_REJECTED); /* likely the picture */
		return;
	case LLM_EMPTY:
		log_warn("chat=%lld: the model answered with no text", chat_of(c));
		fail_with(c, TEXT_MODEL_EMPTY);
		return;
	case LLM_NO_MODEL:
		if (c->settings.model) {
			log_warn("chat=%lld: the provider has no model %s (%s); the chat goes back to %s",
			         chat_of(c), c->settings.model, res->detail, llm_model(c->env->llm));
			forget_model(c);
			return;
		}
		log_error("llm: the provider has no model %s (%s): check OPENAI_MODEL", llm_model(c->env->llm),
		          res->detail);
		fail_with(c, TEXT_MODEL_REJECTED);
		return;
	}
}

static void on_model_forgotten(void *arg, int err)
{
	struct conversation *c = arg;
	(void)err; /* logged by the store; the next message meets the missing model again */
	char text[512];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	snprintf(text, sizeof text, text_get(TEXT_MODEL_GONE, c->lang), c->gone_model, llm_model(c->env->llm));
#pragma GCC diagnostic pop
	send_text(c, text, strlen(text), mark_done_and_end);
}

static char *put_model(void *arg, const char *value)
{
	struct conversation *c = arg;
	return chat_settings_merge(value, &c->settings, false);
}

/* The chat's model is gone from the provider: back to the default, and the user asked to send again. */
static void forget_model(struct conversation *c)
{
	typing_stop(c);
	c->outcome = METRICS_FAILED;
	snprintf(c->gone_model, sizeof c->gone_model, "%s", c->settings.model);
	free(c->settings.model);
	c->settings.model = NULL;
	store_setting_change(c->env->store, c->u.message.chat_id, CHAT_SETTINGS_KEY, put_model, c,
	                     on_model_forgotten, c);
}

static void on_progress(void *arg)
{
	struct conversation *c = arg;
	delivery_progress(c->delivery);
}

/* Asks the model with the system prompt, what fits of the history and the new turn. */
static void ask(struct conversation *c)
{
	const struct chat_env *env = c->env;
	const char *system = c->settings.system ? c->settings.system : env->system_prompt;
	if (policy_plan_prompt(&c->history, c->min_from, system, &c->user, env->context_tokens,
	                       llm_token_scale(env->llm), &c->asked) != 0) {
		log_warn("chat=%lld: a message of %zu bytes does not fit the budget of %zu tokens",
		         chat_of(c), c->user.len, env->context_tokens);
		fail_with(c, TEXT_TOO_LONG);
		return;
	}
	if (!c->usage_model[0])
		snprintf(c->usage_model, sizeof c->usage_model, "%s",
		         c->settings.model ? c->settings.model : llm_model(env->llm));
	if (has_budget(c) && !c->reserved) {
		store_setting_change(env->store, c->u.message.from.id, c->usage_key, reserve_change, c, on_reserved,
		                     c);
		return;
	}
	size_t from = c->asked.from;
	if (from > 0)
		log_debug("chat=%lld: leaving out the %zu oldest turns", chat_of(c), from);
	media_drop_images(&c->history, from, c->asked.images_from);

	/* A view of the request's turns: the strings stay where they are. */
	size_t n = 0;
	struct turn *turns = malloc((c->history.len - from + 2) * sizeof *turns);
	if (!turns) {
		log_error("chat=%lld: out of memory building a request", chat_of(c));
		fail_with(c, TEXT_MODEL_DOWN);
		return;
	}
	if (system)
		turns[n++] = (struct turn){TURN_SYSTEM, (char *)system, strlen(system), false};
	for (size_t i = from; i < c->history.len; i++)
		turns[n++] = c->history.turns[i];
	turns[n++] = c->user;
	c->llm = llm_complete(env->llm, c->settings.model, turns, n, &c->answer, on_progress, on_answer, c);
	free(turns);
	if (!c->llm) {
		fail_with(c, TEXT_MODEL_DOWN);
		return;
	}
	if (c->reserved) { /* the text the allowance is, by the estimate's measure: 4 + bytes / 3 (tokens.h) */
		double scale = llm_token_scale(env->llm);
		double tokens = (double)c->allowance / (scale > 0 ? scale : 1) - 4;
		llm_limit(c->llm, tokens > 0 ? (size_t)(3 * tokens) : 0);
	}
}

static void over_budget(struct conversation *c)
{
	typing_stop(c);
	c->outcome = METRICS_REFUSED;
	time_t resets = usage_resets(time(NULL), c->is_over_daily);
	struct tm tm;
	gmtime_r(&resets, &tm);
	char when[16], limit[24], text[512];
	strftime(when, sizeof when, c->is_over_daily ? "%H:%M" : "%Y-%m-%d", &tm);
	snprintf(limit, sizeof limit, "%lld", c->is_over_daily ? c->env->budget.daily : c->env->budget.monthly);
	log_info("chat=%lld: user %lld is over the %s budget", chat_of(c), (long long)c->u.message.from.id,
	         c->is_over_daily ? "daily" : "monthly");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	snprintf(text, sizeof text, text_get(c->is_over_daily ? TEXT_OVER_DAILY : TEXT_OVER_MONTHLY, c->lang), limit,
	         when); /* each language's text takes two %s */
#pragma GCC diagnostic pop
	send_text(c, text, strlen(text), mark_done_and_end);
}

static void on_reserved(void *arg, int err)
{
	struct conversation *c = arg;
	if (err || (!c->is_over_budget && !c->reserved)) {
		c->reserved = 0;
		log_error("chat=%lld: user %lld's budget cannot be checked", chat_of(c),
		          (long long)c->u.message.from.id);
		fail_with(c, TEXT_STORE_FAILED);
		return;
	}
	if (c->is_over_budget) {
		over_budget(c);
		return;
	}
	c->is_count_due = true; /* the reservation goes back, whatever happens to the answer */
	ask(c);
}

/*
 * /retry: the history's last exchange comes out of it; its question is
 * asked again, and the new exchange will take its place. 0 when the
 * history does not end with an answer, -1 when out of memory.
 */
static int take_last_exchange(struct conversation *c)
{
	struct history *h = &c->history;
	if (h->len < 2 || h->turns[h->len - 1].role != TURN_ASSISTANT || h->turns[h->len - 2].role != TURN_USER)
		return 0;
	const struct turn *q = &h->turns[h->len - 2];
	if (!(c->user.content = malloc(q->len + 1)))
		return -1;
	memcpy(c->user.content, q->content, q->len + 1);
	c->user.len = q->len;
	c->user.is_parts = q->is_parts; /* a picture's question is asked with the picture */
	c->replaced[0] = h->turns[h->len - 2];
	c->replaced[1] = h->turns[h->len - 1];
	c->n_replaced = 2;
	h->len -= 2;
	log_info("chat=%lld update=%lld: asking again for the last answer", chat_of(c), (long long)c->u.update_id);
	return 1;
}

/* One of the two reads (history, settings) is in; with both, the model is asked. */
static void loaded(struct conversation *c)
{
	if (--c->loading > 0)
		return;
	int taken = c->job == CHAT_RETRY && !c->is_load_failed ? take_last_exchange(c) : 1;
	if (c->is_load_failed)
		fail_with(c, TEXT_STORE_FAILED);
	else if (taken <= 0)
		fail_with(c, taken == 0 ? TEXT_RETRY_NOTHING : TEXT_MODEL_DOWN);
	else if (c->is_history_aside) /* told before the answer, which begins a new conversation */
		send_notice(c, TEXT_HISTORY_ASIDE, ask);
	else
		ask(c);
}

static void on_history_loaded(void *arg, int err, struct history *h)
{
	struct conversation *c = arg;
	if (err && err != STORE_HISTORY_SET_ASIDE) {
		history_free(h);
		c->is_load_failed = true;
	} else {
		c->history = *h;
		*h = (struct history)HISTORY_INIT;
		c->is_history_aside = err == STORE_HISTORY_SET_ASIDE;
	}
	loaded(c);
}

/* The chat's model and system prompt: the defaults when the store cannot say. */
static void on_settings_loaded(void *arg, int err, const char *value)
{
	struct conversation *c = arg;
	if (err || chat_settings_parse(value, &c->settings) != 0)
		log_warn("chat=%lld: the chat's settings cannot be read; answering with the defaults",
		         chat_of(c));
	loaded(c);
}

/* Text is on the screen: "typing…" would only get in the way. */
static void on_visible(void *arg)
{
	typing_stop(arg);
}

void conversation_reply(struct conversation *c)
{
	const struct tg_message *m = &c->u.message;
	struct tg_target t = tg_target_of(&c->u.message);
	time_t now = time(NULL);
	usage_day(now, c->usage_day);
	usage_key(now, c->usage_key);
	c->delivery = delivery_new(c->env->tg, c->env->base, c->env->think, &t, &c->answer, on_visible, c);
	if (!c->delivery) {
		fail_with(c, TEXT_MODEL_DOWN);
		return;
	}
	if (c->env->can_stop) {
		char stop[32];
		snprintf(stop, sizeof stop, "s:%lld", (long long)m->message_id);
		delivery_offer_stop(c->delivery, text_get(TEXT_STOP_BUTTON, c->lang), stop);
	}
	/* Independent reads, at once: on S3 each is a round trip. */
	c->loading = 2;
	store_history_load(c->env->store, c->u.message.chat_id, on_history_loaded, c);
	store_setting_get(c->env->store, c->u.message.chat_id, CHAT_SETTINGS_KEY, on_settings_loaded, c);
}

static void start_typing(struct conversation *c)
{
	struct tg_target t = tg_target_of(&c->u.message);
	tg_typing_start(&c->typing, c->env->tg, c->env->base, &t);
}

static void start_reply(struct conversation *c)
{
	const struct tg_message *m = &c->u.message;
	start_typing(c);
	size_t len = strlen(m->text);
	if (len > MAX_USER_TEXT) {
		log_warn("chat=%lld: a message of %zu bytes is over the limit", chat_of(c), len);
		fail_with(c, TEXT_TOO_LONG);
		return;
	}
	bool is_group = m->chat_type == TG_CHAT_GROUP || m->chat_type == TG_CHAT_SUPERGROUP;
	int n = is_group ? asprintf(&c->user.content, "%s: %s", m->from.first_name, m->text)
	                 : asprintf(&c->user.content, "%s", m->text);
	if (n < 0) {
		c->user.content = NULL;
		fail_with(c, TEXT_MODEL_DOWN);
		return;
	}
	c->user.len = (size_t)n;
	conversation_reply(c);
}

/* ---- /usage ---- */

static void send_buf(struct conversation *c, struct buf *text, int rc)
{
	if (rc != BUF_OK) {
		buf_free(text);
		log_error("chat=%lld: out of memory writing a usage report", chat_of(c));
		fail_with(c, TEXT_MODEL_DOWN);
		return;
	}
	send_text(c, text->data, text->len, mark_done_and_end);
	buf_free(text);
}

static void on_usage_read(void *arg, int err, const char *value)
{
	struct conversation *c = arg;
	if (err) {
		fail_with(c, TEXT_STORE_FAILED);
		return;
	}
	struct buf text;
	buf_init(&text, 8192);
	int rc = BUF_OK;
	if (c->job == CHAT_USAGE && c->users) /* asked for everyone's, and is no admin */
		rc = buf_append_str(&text, text_get(TEXT_USAGE_ALL_ONLY_ADMINS, c->lang));
	if (rc == BUF_OK && text.len)
		rc = buf_append_str(&text, "\n\n");
	struct usage_budget none = {0};
	if (rc == BUF_OK)
		rc = usage_report(&text, value, c->usage_day, has_budget(c) ? &c->env->budget : &none, c->lang);
	send_buf(c, &text, rc);
}

static void on_usage_scanned(void *arg, int err, int64_t scope, const char *value)
{
	struct conversation *c = arg;
	if (value) {
		if (c->n_users == c->cap_users) {
			size_t cap = c->cap_users ? c->cap_users * 2 : 32;
			struct usage_user *u = realloc(c->users, cap * sizeof *u);
			if (!u)
				return; /* the report leaves this user out */
			c->users = u;
			c->cap_users = cap;
		}
		if (usage_user_read(value, c->usage_day, (long long)scope, &c->users[c->n_users]))
			c->n_users++;
		return;
	}
	if (err) {
		fail_with(c, TEXT_STORE_FAILED);
		return;
	}
	struct buf text;
	buf_init(&text, 8192);
	send_buf(c, &text, usage_report_all(&text, c->users, c->n_users, c->lang));
}

/* Whether the command's argument is "all". */
static bool asks_for_all(const char *text)
{
	const char *p = text ? text + strcspn(text, " \t\n") : "";
	p += strspn(p, " \t\n");
	return strncasecmp(p, "all", 3) == 0 && (p[3] == '\0' || strchr(" \t\n", p[3]));
}

static void start_usage(struct conversation *c)
{
	time_t now = time(NULL);
	usage_day(now, c->usage_day);
	usage_key(now, c->usage_key);
	if (asks_for_all(c->u.message.text)) {
		if (is_admin(c)) {
			c->job = CHAT_USAGE; /* stays; c->users marks the scan */
			store_setting_scan(c->env->store, c->usage_key, on_usage_scanned, c);
			return;
		}
		c->users = calloc(1, sizeof *c->users); /* marks the refusal for on_usage_read */
	}
	store_setting_get(c->env->store, c->u.message.from.id, c->usage_key, on_usage_read, c);
}

void conversation_start(struct conversation *c)
{
	log_debug("chat=%lld update=%lld: handling", chat_of(c), (long long)c->u.update_id);
	switch (c->job) {
	case CHAT_REPLY:
		start_reply(c);
		return;
	case CHAT_RETRY:
		start_typing(c);
		conversation_reply(c);
		return;
	case CHAT_USAGE:
		start_usage(c);
		return;
	case CHAT_MEDIA:
		media_start(c);
		return;
	case CHAT_IMAGE:
		media_draw(c);
		return;
	case CHAT_START:
		send_notice(c, TEXT_START, mark_done_and_end);
		return;
	case CHAT_HELP:
		send_notice(c, TEXT_HELP, mark_done_and_end);
		return;
	case CHAT_NEW:
		store_history_clear(c->env->store, c->u.message.chat_id, on_history_cleared, c);
		return;
	case CHAT_REFUSE:
		store_setting_get(c->env->store, c->u.message.from.id, REFUSED_AT, on_last_refusal, c);
		return;
	case CHAT_NOT_JOURNALED:
		send_notice(c, TEXT_STORE_FAILED, end);
		return;
	case CHAT_MODEL:
	case CHAT_SYSTEM:
	case CHAT_PICK:
	case CHAT_NOT_PERMITTED:
		steer_start(c);
		return;
	case CHAT_STOP: /* the gate gives these to chats_stop; never queued */
		break;
	}
	mark_done_and_end(c);
}

enum chats_stop conversation_stop(struct conversation *c, int64_t draft_id, int64_t user_id, bool is_admin)
{
	if ((c->job != CHAT_REPLY && c->job != CHAT_RETRY && c->job != CHAT_MEDIA) || c->u.message.message_id != draft_id || !c->llm)
		return CHATS_NOTHING;
	if (!is_admin && c->u.message.from.id != user_id)
		return CHATS_NOT_ALLOWED;
	log_info("chat=%lld update=%lld: stopped by the user after %zu bytes", chat_of(c),
	         (long long)c->u.update_id, c->answer.len);
	llm_cancel(c->llm);
	c->llm = NULL;
	note_spent(c, -1, -1);
	if (c->answer.len && !is_blank(c))
		deliver(c, text_get(TEXT_STOPPED, c->lang));
	else if (!c->answer.len)
		fail_with(c, TEXT_STOPPED_EMPTY);
	return CHATS_STOPPED;
}

bool conversation_hurry(struct conversation *c)
{
	if (!c->llm)
		return false;
	log_warn("chat=%lld update=%lld: out of time; delivering the %zu bytes there are", chat_of(c),
	         (long long)c->u.update_id, c->answer.len);
	llm_cancel(c->llm);
	c->llm = NULL;
	note_spent(c, -1, -1);
	if (c->answer.len)
		deliver(c, text_get(TEXT_DEADLINE_CUT, c->lang));
	else
		fail_with(c, TEXT_DEADLINE);
	return true;
}

void conversation_done(struct conversation *c)
{
	mark_done_and_end(c);
}

void conversation_fail(struct conversation *c, enum text_id id)
{
	fail_with(c, id);
}

void conversation_fail_text(struct conversation *c, const char *text)
{
	typing_stop(c);
	c->outcome = METRICS_FAILED;
	send_text(c, text, strlen(text), mark_done_and_end);
}

int64_t conversation_update_id(const struct conversation *c)
{
	return c->u.update_id;
}

void conversation_init(struct conversation *c, const struct chat_env *env, struct tg_update *u,
                       enum chat_job job, void (*ended)(void *arg), void *arg)
{
	memset(c, 0, sizeof *c);
	c->env = env;
	c->u = *u;
	memset(u, 0, sizeof *u);
	c->job = job;
	c->outcome = job == CHAT_REFUSE || job == CHAT_NOT_PERMITTED ? METRICS_REFUSED
	             : job == CHAT_REPLY || job == CHAT_RETRY || job == CHAT_MEDIA ? METRICS_FAILED
	                                                              : METRICS_ANSWERED;
	c->ended = ended;
	c->arg = arg;
	c->lang = c->u.message.from.language_code;
	c->user.role = TURN_USER;
	c->after_text = TEXT_COUNT;
}

void conversation_clear(struct conversation *c)
{
	if (c->env)
		model_list_forget(c->env->models, c);
	bool had_file = c->media != NULL;
	media_clear(c);
	chat_settings_free(&c->settings);
	llm_cancel(c->llm);
	delivery_free(c->delivery);
	tg_typing_stop(&c->typing);
	tg_call_cancel(c->send_call);
	history_free(&c->history);
	for (size_t i = 0; i < c->n_replaced; i++)
		free(c->replaced[i].content);
	free(c->users);
	free(c->user.content);
	buf_free(&c->answer);
	free(c->shown);
	if (c->save_timer)
		event_free(c->save_timer);
	update_clear(&c->u);
	memset(c, 0, sizeof *c);
	if (had_file)
		media_release_memory();
}
