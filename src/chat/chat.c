#include "chat/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "telegram/deliver.h"
#include "lib/history.h"
#include "lib/jsonw.h"
#include "model/llm.h"
#include "lib/log.h"
#include "store/store.h"
#include "chat/text.h"
#include "telegram/tg.h"

#define CHAT_BUCKETS 1024
#define TYPING_INTERVAL_S 4  /* Telegram shows "typing" for 5 s */
#define CONTEXT_RETRIES 3
#define SEND_TIMEOUT_S 30
#define MAX_USER_TEXT (64u << 10) /* bytes of one message sent to the model */
#define REFUSAL_INTERVAL_S 3600   /* a stranger is told "no" once an hour, not at every message */

struct chat;

struct job {
	struct job *next;
	struct chat *chat;
	struct bot *bot;
	struct tg_update u;
	enum bot_action action;
	const char *lang;

	/* a reply to a message */
	struct history history;
	char *user_turn; /* the text as stored: prefixed with the sender's name in groups */
	size_t user_turn_len;
	size_t budget;   /* tokens for the prompt */
	size_t min_from; /* history turns before this one are left out after a context overflow */
	int context_retries;
	struct llm_call *llm;
	size_t asked_tokens; /* the prompt of the request in flight, by our estimate */
	size_t asked_from;   /* the first history turn it carries */
	struct delivery *delivery;
	struct buf answer;    /* the model's text as it streams in; stored as the assistant turn */
	enum text_id after_text; /* a notice sent after the answer, TEXT_COUNT for none */
	bool is_blocked;         /* Telegram said 403: stop sending */

	struct event *typing_timer;
	struct tg_call *typing_call;
	struct tg_call *send_call;
	void (*after_send)(struct job *job); /* what follows the message being sent */
};

struct chat {
	struct chat *next_in_bucket;
	int64_t id;
	struct job *head, *tail; /* head is running */
};

struct chats {
	struct bot *bot;
	struct chat *buckets[CHAT_BUCKETS];
	size_t n_jobs;
	void (*on_idle)(void *arg);
	void *idle_arg;
};

static void job_start(struct job *job);
static void job_finish(struct job *job);

/* ---- the queue ---- */

static struct chat **bucket_of(struct chats *cs, int64_t id)
{
	uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15u;
	return &cs->buckets[h >> 54]; /* 10 bits: CHAT_BUCKETS */
}

static struct chat *chat_get(struct chats *cs, int64_t id)
{
	struct chat **b = bucket_of(cs, id);
	for (struct chat *c = *b; c; c = c->next_in_bucket)
		if (c->id == id)
			return c;
	struct chat *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->id = id;
	c->next_in_bucket = *b;
	*b = c;
	return c;
}

static void chat_remove(struct chats *cs, struct chat *c)
{
	for (struct chat **p = bucket_of(cs, c->id); *p; p = &(*p)->next_in_bucket) {
		if (*p == c) {
			*p = c->next_in_bucket;
			free(c);
			return;
		}
	}
}

static void job_free(struct job *job)
{
	llm_cancel(job->llm);
	delivery_free(job->delivery);
	tg_call_cancel(job->typing_call);
	tg_call_cancel(job->send_call);
	if (job->typing_timer)
		event_free(job->typing_timer);
	history_free(&job->history);
	free(job->user_turn);
	buf_free(&job->answer);
	update_clear(&job->u);
	free(job);
}

int chats_submit(struct chats *cs, struct tg_update *u, enum bot_action action)
{
	struct chat *c = chat_get(cs, u->message.chat_id);
	struct job *job = c ? calloc(1, sizeof *job) : NULL;
	if (!job) {
		if (c && !c->head)
			chat_remove(cs, c);
		return -1;
	}
	job->chat = c;
	job->bot = cs->bot;
	job->u = *u;
	memset(u, 0, sizeof *u);
	job->action = action;
	job->lang = job->u.message.from.language_code;
	job->after_text = TEXT_COUNT;
	cs->n_jobs++;
	if (c->tail) {
		c->tail->next = job;
		c->tail = job;
		return 0;
	}
	c->head = c->tail = job;
	job_start(job);
	return 0;
}

/* The job is over, whatever happened: free it and start the chat's next one. */
static void job_finish(struct job *job)
{
	struct chats *cs = job->bot->chats;
	struct chat *c = job->chat;
	c->head = job->next;
	if (!c->head)
		c->tail = NULL;
	job_free(job);
	cs->n_jobs--;
	if (c->head) {
		job_start(c->head);
		return;
	}
	chat_remove(cs, c);
	if (cs->n_jobs == 0 && cs->on_idle)
		cs->on_idle(cs->idle_arg);
}

struct chats *chats_new(struct bot *b)
{
	struct chats *cs = calloc(1, sizeof *cs);
	if (cs)
		cs->bot = b;
	return cs;
}

size_t chats_abandon(struct chats *cs, int64_t *update_ids, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < CHAT_BUCKETS; i++) {
		while (cs->buckets[i]) {
			struct chat *c = cs->buckets[i];
			cs->buckets[i] = c->next_in_bucket;
			while (c->head) {
				struct job *job = c->head;
				c->head = job->next;
				if (n < max)
					update_ids[n++] = job->u.update_id;
				job_free(job);
			}
			free(c);
		}
	}
	cs->n_jobs = 0;
	return n;
}

void chats_free(struct chats *cs)
{
	if (!cs)
		return;
	chats_abandon(cs, NULL, 0);
	free(cs);
}

size_t chats_busy(const struct chats *cs)
{
	return cs->n_jobs;
}

void chats_on_idle(struct chats *cs, void (*cb)(void *arg), void *arg)
{
	cs->on_idle = cb;
	cs->idle_arg = arg;
}

/* ---- talking to Telegram ---- */

static void on_action_sent(void *arg, const struct tg_result *res)
{
	struct job *job = arg;
	job->typing_call = NULL;
	if (!res->ok)
		log_debug("chat=%lld: sendChatAction: %ld %s", (long long)job->chat->id, res->error_code,
			  res->description);
}

/* Opens a request body to the job's chat: {"chat_id":...[,"message_thread_id":...]. */
static int open_chat_params(struct buf *b, const struct tg_message *m)
{
	buf_init(b, SIZE_MAX - 1);
	int rc = buf_append_str(b, "{");
	if (rc == BUF_OK)
		rc = jsonw_member_int(b, "chat_id", m->chat_id);
	if (rc == BUF_OK && m->is_topic_message)
		rc = jsonw_member_int(b, "message_thread_id", m->thread_id);
	return rc;
}

static void send_typing(struct job *job)
{
	if (job->typing_call)
		return;
	struct buf b;
	int rc = open_chat_params(&b, &job->u.message);
	if (rc == BUF_OK)
		rc = jsonw_member_string(&b, "action", "typing", 6);
	char *params = jsonw_finish_object(&b, rc);
	if (params)
		job->typing_call = tg_call(job->bot->tg, "sendChatAction", params, job->chat->id, 0,
					   SEND_TIMEOUT_S, on_action_sent, job);
}

static void on_typing_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	send_typing(arg);
}

static void typing_start(struct job *job)
{
	send_typing(job);
	job->typing_timer = event_new(job->bot->base, -1, EV_PERSIST, on_typing_timer, job);
	struct timeval tv = {TYPING_INTERVAL_S, 0};
	if (!job->typing_timer || event_add(job->typing_timer, &tv) != 0)
		log_warn("chat=%lld: cannot repeat the typing indicator", (long long)job->chat->id);
}

static void typing_stop(struct job *job)
{
	if (job->typing_timer) {
		event_free(job->typing_timer);
		job->typing_timer = NULL;
	}
	tg_call_cancel(job->typing_call);
	job->typing_call = NULL;
}

typedef void (*sent_cb)(struct job *job);

static void log_send_failure(struct job *job, const struct tg_result *res)
{
	if (res->error_code == 403) {
		log_warn("chat=%lld: Telegram refuses messages to this chat (%s); dropping the reply",
			 (long long)job->chat->id, res->description);
		job->is_blocked = true;
		return;
	}
	log_error("chat=%lld: sendMessage failed: %ld %s", (long long)job->chat->id, res->error_code,
		  res->description);
}

static void on_sent(void *arg, const struct tg_result *res)
{
	struct job *job = arg;
	sent_cb next = job->after_send;
	job->send_call = NULL;
	if (!res->ok)
		log_send_failure(job, res);
	next(job);
}

/*
 * Sends text (copied into the request) to the job's chat, as a reply to the
 * user's message when is_reply, then calls next, whether it went or not.
 */
static void send_text(struct job *job, const char *text, size_t len, bool is_reply, sent_cb next)
{
	const struct tg_message *m = &job->u.message;
	char *params = NULL;
	if (!job->is_blocked) {
		struct buf b;
		int rc = open_chat_params(&b, m);
		if (rc == BUF_OK)
			rc = jsonw_member_string(&b, "text", text, len);
		if (rc == BUF_OK && is_reply)
			rc = tg_write_reply_parameters(&b, m->message_id);
		params = jsonw_finish_object(&b, rc);
	}
	job->after_send = next;
	if (params)
		job->send_call = tg_call(job->bot->tg, "sendMessage", params, m->chat_id, 0, SEND_TIMEOUT_S, on_sent, job);
	if (!job->send_call) {
		if (!job->is_blocked)
			log_error("chat=%lld: cannot send a message", (long long)job->chat->id);
		next(job);
	}
}

static void send_notice(struct job *job, enum text_id id, sent_cb next)
{
	const char *t = text_get(id, job->lang);
	send_text(job, t, strlen(t), true, next);
}

/* ---- commands ---- */

static void on_update_done(void *arg, int err)
{
	(void)err; /* logged by the store; at worst the update is skipped as a repeat later */
	job_finish(arg);
}

static void mark_done_and_finish(struct job *job)
{
	typing_stop(job);
	job->bot->store->ops->update_done(job->bot->store, job->u.update_id, on_update_done, job);
}

static void on_history_cleared(void *arg, int err)
{
	struct job *job = arg;
	send_notice(job, err ? TEXT_STORE_FAILED : TEXT_NEW_DONE, mark_done_and_finish);
}

static void send_refusal(struct job *job)
{
	char text[512];
	/* The format is ours: each language's TEXT_REFUSED takes exactly one %lld. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	int n = snprintf(text, sizeof text, text_get(TEXT_REFUSED, job->lang),
			 (long long)job->u.message.from.id);
#pragma GCC diagnostic pop
	send_text(job, text, n > 0 ? (size_t)n : 0, true, mark_done_and_finish);
}

static void on_refusal_noted(void *arg, int err)
{
	(void)err; /* logged by the store; the worst case is one refusal more */
	send_refusal(arg);
}

/* Strangers are told once an hour; the time is in the store so restarts keep it. */
static void on_last_refusal(void *arg, int err, const char *value)
{
	struct job *job = arg;
	time_t now = time(NULL);
	long long last = value ? strtoll(value, NULL, 10) : 0;
	if (!err && now - last < REFUSAL_INTERVAL_S) {
		log_info("chat=%lld: user %lld was refused within the hour; not telling again",
			 (long long)job->chat->id, (long long)job->u.message.from.id);
		mark_done_and_finish(job);
		return;
	}
	char stamp[24];
	snprintf(stamp, sizeof stamp, "%lld", (long long)now);
	job->bot->store->ops->setting_set(job->bot->store, job->u.message.from.id, "refused_at", stamp,
					  on_refusal_noted, job);
}

/* ---- a reply from the model ---- */

static void ask(struct job *job);

static size_t estimate(const struct job *job, const char *text, size_t len)
{
	return (size_t)((double)history_estimate_tokens(text, len) * job->bot->token_scale) + 1;
}

static void on_saved(void *arg, int err)
{
	struct job *job = arg;
	if (err)
		log_error("chat=%lld update=%lld: the exchange could not be stored", (long long)job->chat->id,
			  (long long)job->u.update_id);
	job_finish(job);
}

static void save_exchange(struct job *job)
{
	struct turn turns[2] = {
		{TURN_USER, job->user_turn, job->user_turn_len},
		{TURN_ASSISTANT, job->answer.data, job->answer.len},
	};
	job->bot->store->ops->history_append(job->bot->store, job->chat->id, turns, 2, job->u.update_id,
					     on_saved, job);
}

static void send_after_text(struct job *job)
{
	if (job->after_text == TEXT_COUNT) {
		save_exchange(job);
		return;
	}
	enum text_id id = job->after_text;
	job->after_text = TEXT_COUNT;
	send_notice(job, id, save_exchange);
}

static void on_delivered(void *arg, bool is_delivered)
{
	struct job *job = arg;
	if (!is_delivered)
		log_warn("chat=%lld update=%lld: the answer did not fully reach the chat; it is stored",
			 (long long)job->chat->id, (long long)job->u.update_id);
	send_after_text(job);
}

/* The answer is complete: the final messages, then a notice if any, then the history. */
static void deliver(struct job *job, const char *suffix)
{
	typing_stop(job);
	char *shown = NULL;
	if (asprintf(&shown, "%s%s%s", buf_str(&job->answer), suffix ? "\n\n" : "", suffix ? suffix : "") < 0)
		shown = NULL;
	if (!shown) {
		free(shown);
		log_error("chat=%lld: out of memory delivering an answer", (long long)job->chat->id);
		mark_done_and_finish(job);
		return;
	}
	delivery_finish(job->delivery, shown, strlen(shown), on_delivered);
	free(shown);
}

static void fail_with(struct job *job, enum text_id id)
{
	typing_stop(job);
	send_notice(job, id, mark_done_and_finish);
}

static void calibrate(struct job *job, long prompt_tokens, size_t estimated)
{
	if (prompt_tokens <= 0 || estimated == 0)
		return;
	double ratio = (double)prompt_tokens / ((double)estimated / job->bot->token_scale);
	if (ratio < 0.25)
		ratio = 0.25;
	if (ratio > 4.0)
		ratio = 4.0;
	/* A moving average: one odd answer must not swing the budget. */
	job->bot->token_scale = 0.8 * job->bot->token_scale + 0.2 * ratio;
}

static void on_answer(void *arg, const struct llm_result *res)
{
	struct job *job = arg;
	size_t estimated = job->asked_tokens, from = job->asked_from;
	job->llm = NULL;
	long long chat = (long long)job->chat->id;

	switch (res->status) {
	case LLM_OK:
		calibrate(job, res->prompt_tokens, estimated);
		if (job->min_from > 0)
			job->after_text = TEXT_CONTEXT_DROPPED;
		log_info("chat=%lld update=%lld: answered (%zu bytes, %ld+%ld tokens)", chat,
			 (long long)job->u.update_id, job->answer.len, res->prompt_tokens, res->completion_tokens);
		deliver(job, NULL);
		return;
	case LLM_CUT:
		log_warn("chat=%lld: the model's answer broke off (%s); delivering the part", chat, res->detail);
		if (job->min_from > 0)
			job->after_text = TEXT_CONTEXT_DROPPED;
		deliver(job, text_get(TEXT_ANSWER_CUT, job->lang));
		return;
	case LLM_CONTEXT:
		log_warn("chat=%lld: the prompt (~%zu tokens) is over the model's context: %s", chat,
			 estimated, res->detail);
		/* Our estimate was low: leave out half of the turns sent, oldest first. */
		if (from < job->history.len && job->context_retries++ < CONTEXT_RETRIES) {
			size_t sent = job->history.len - from;
			job->min_from = from + (sent + 1) / 2;
			ask(job);
			return;
		}
		fail_with(job, TEXT_TOO_LONG);
		return;
	case LLM_QUOTA:
		log_error("llm: the API account has no credit left (%s): top it up", res->detail);
		fail_with(job, TEXT_MODEL_QUOTA);
		return;
	case LLM_AUTH:
		log_error("llm: the API key is rejected (%s): check PROXY_API_KEY / OPENAI_API_KEY",
			  res->detail);
		fail_with(job, TEXT_MODEL_AUTH);
		return;
	case LLM_BUSY:
		log_error("chat=%lld: the model is rate limited (%s)", chat, res->detail);
		fail_with(job, TEXT_MODEL_BUSY);
		return;
	case LLM_DOWN:
		log_error("chat=%lld: the model is unreachable (%s)", chat, res->detail);
		fail_with(job, TEXT_MODEL_DOWN);
		return;
	case LLM_REJECTED:
		log_error("chat=%lld: the model refused the request (%s)", chat, res->detail);
		fail_with(job, TEXT_MODEL_REJECTED);
		return;
	case LLM_EMPTY:
		log_warn("chat=%lld: the model answered with no text", chat);
		fail_with(job, TEXT_MODEL_EMPTY);
		return;
	}
}

static void on_progress(void *arg)
{
	struct job *job = arg;
	delivery_progress(job->delivery);
}

/* Builds the request from the system prompt, what fits of the history and the new turn. */
static void ask(struct job *job)
{
	const struct config *cfg = job->bot->cfg;
	size_t fixed = estimate(job, job->user_turn, job->user_turn_len);
	if (cfg->system_prompt)
		fixed += estimate(job, cfg->system_prompt, strlen(cfg->system_prompt));
	if (fixed > job->budget) {
		log_warn("chat=%lld: a message of ~%zu tokens does not fit the budget of %zu",
			 (long long)job->chat->id, fixed, job->budget);
		fail_with(job, TEXT_TOO_LONG);
		return;
	}
	size_t from = history_fit(&job->history, job->budget - fixed, job->bot->token_scale);
	if (from < job->min_from)
		from = job->min_from;
	/* history_fit never starts with an answer; neither does a cut made here. */
	while (from < job->history.len && job->history.turns[from].role == TURN_ASSISTANT)
		from++;
	if (from > 0)
		log_debug("chat=%lld: leaving out the %zu oldest turns", (long long)job->chat->id, from);
	size_t estimated = fixed;
	for (size_t i = from; i < job->history.len; i++)
		estimated += estimate(job, job->history.turns[i].content, job->history.turns[i].len);

	/* A view of the request's turns: the strings stay where they are. */
	size_t n = 0, most = job->history.len - from + 2;
	struct turn *turns = malloc(most * sizeof *turns);
	if (!turns) {
		log_error("chat=%lld: out of memory building a request", (long long)job->chat->id);
		fail_with(job, TEXT_MODEL_DOWN);
		return;
	}
	if (cfg->system_prompt)
		turns[n++] = (struct turn){TURN_SYSTEM, cfg->system_prompt, strlen(cfg->system_prompt)};
	for (size_t i = from; i < job->history.len; i++)
		turns[n++] = job->history.turns[i];
	turns[n++] = (struct turn){TURN_USER, job->user_turn, job->user_turn_len};
	job->asked_tokens = estimated;
	job->asked_from = from;
	job->llm = llm_complete(job->bot->llm, turns, n, &job->answer, on_progress, on_answer, job);
	free(turns);
	if (!job->llm)
		fail_with(job, TEXT_MODEL_DOWN);
}

static void on_history_loaded(void *arg, int err, struct history *h)
{
	struct job *job = arg;
	if (err) {
		history_free(h);
		fail_with(job, TEXT_STORE_FAILED);
		return;
	}
	job->history = *h;
	*h = (struct history)HISTORY_INIT;
	ask(job);
}

/* Text is on the screen: "typing…" would only get in the way. */
static void on_visible(void *arg)
{
	typing_stop(arg);
}

static void start_reply(struct job *job)
{
	const struct tg_message *m = &job->u.message;
	size_t len = strlen(m->text);
	if (len > MAX_USER_TEXT) {
		log_warn("chat=%lld: a message of %zu bytes is over the limit", (long long)job->chat->id, len);
		fail_with(job, TEXT_TOO_LONG);
		return;
	}
	bool is_group = m->chat_type == TG_CHAT_GROUP || m->chat_type == TG_CHAT_SUPERGROUP;
	int n = is_group ? asprintf(&job->user_turn, "%s: %s", m->from.first_name, m->text)
			 : asprintf(&job->user_turn, "%s", m->text);
	if (n < 0) {
		job->user_turn = NULL;
		fail_with(job, TEXT_MODEL_DOWN);
		return;
	}
	job->user_turn_len = (size_t)n;
	job->budget = job->bot->cfg->context_tokens;
	struct delivery_target target = {
		.chat_id = m->chat_id,
		.reply_to = m->message_id,
		.thread_id = m->is_topic_message ? m->thread_id : 0,
		.is_private = m->chat_type == TG_CHAT_PRIVATE,
	};
	job->delivery = delivery_new(job->bot, &target, &job->answer, on_visible, job);
	if (!job->delivery) {
		fail_with(job, TEXT_MODEL_DOWN);
		return;
	}
	job->bot->store->ops->history_load(job->bot->store, job->chat->id, on_history_loaded, job);
}

static void job_start(struct job *job)
{
	log_debug("chat=%lld update=%lld: handling", (long long)job->chat->id, (long long)job->u.update_id);
	switch (job->action) {
	case BOT_REPLY:
		typing_start(job);
		start_reply(job);
		return;
	case BOT_START:
		send_notice(job, TEXT_START, mark_done_and_finish);
		return;
	case BOT_HELP:
		send_notice(job, TEXT_HELP, mark_done_and_finish);
		return;
	case BOT_NEW:
		job->bot->store->ops->history_clear(job->bot->store, job->chat->id, on_history_cleared, job);
		return;
	case BOT_REFUSE:
		job->bot->store->ops->setting_get(job->bot->store, job->u.message.from.id, "refused_at",
						  on_last_refusal, job);
		return;
	case BOT_IGNORE:
		break;
	}
	mark_done_and_finish(job);
}

/* Cuts one answer short and delivers what there is. */
static void hurry(struct job *job)
{
	log_warn("chat=%lld update=%lld: out of time; delivering the %zu bytes there are",
		 (long long)job->chat->id, (long long)job->u.update_id, job->answer.len);
	llm_cancel(job->llm);
	job->llm = NULL;
	if (job->answer.len)
		deliver(job, text_get(TEXT_DEADLINE_CUT, job->lang));
	else
		fail_with(job, TEXT_DEADLINE);
}

void chats_hurry(struct chats *cs)
{
	/* Collected first: finishing a job may free its chat, and the table must not change under the walk. */
	struct job **jobs = calloc(cs->n_jobs + 1, sizeof *jobs);
	size_t n = 0;
	if (!jobs) {
		log_error("out of memory cutting answers short");
		return;
	}
	for (size_t i = 0; i < CHAT_BUCKETS; i++)
		for (struct chat *c = cs->buckets[i]; c; c = c->next_in_bucket)
			if (c->head && c->head->llm && n < cs->n_jobs)
				jobs[n++] = c->head;
	for (size_t i = 0; i < n; i++)
		hurry(jobs[i]);
	free(jobs);
}
