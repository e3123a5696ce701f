/*
 * Unit tests for the chat stage (src/chat/queue.c, conversation.c): the
 * conversation state machine and the per-chat queue, run against fakes of
 * the stages below it. This file is built with the chat stage's sources and
 * in place of telegram/ and model/ it defines their functions itself (a link
 * seam, tests/CMakeLists.txt); the store is the real store.h over a fake
 * backend table. Every fake records what it was asked in order and answers
 * only when the test says so, from the test, as the loop would.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "chat/text.h"
#include "lib/log.h"
#include "model/llm.h"
#include "model/images.h"
#include "model/transcribe.h"
#include "store/backend.h"
#include "telegram/deliver.h"
#include "telegram/send.h"

#include "expect.h"

/* ---- what the fakes saw: one line per call, in order ---- */

#define MAX_EVENTS 256

static char *events[MAX_EVENTS];
static size_t n_events;

__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n_events == MAX_EVENTS)
		fail_msg("more than %d calls to the fakes", MAX_EVENTS);
	events[n_events++] = strdup(line);
}

static void forget_events(void)
{
	for (size_t i = 0; i < n_events; i++)
		free(events[i]);
	n_events = 0;
}

static size_t count_events(const char *prefix)
{
	size_t n = 0;
	for (size_t i = 0; i < n_events; i++)
		n += strncmp(events[i], prefix, strlen(prefix)) == 0;
	return n;
}

/* The index of the first event starting with prefix at or after from; fails when there is none. */
static size_t find_event(const char *prefix, size_t from)
{
	for (size_t i = from; i < n_events; i++)
		if (strncmp(events[i], prefix, strlen(prefix)) == 0)
			return i;
	char all[8192] = "";
	for (size_t i = 0; i < n_events; i++) {
		strncat(all, "\n  ", sizeof all - strlen(all) - 1);
		strncat(all, events[i], sizeof all - strlen(all) - 1);
	}
	fail_msg("expected a call \"%s...\" (from call %zu); the calls were:%s", prefix, from, all);
	return 0;
}

static void expect_no_event(const char *prefix)
{
	if (count_events(prefix))
		fail_msg("expected no call \"%s...\", got %zu", prefix, count_events(prefix));
}

/* ---- the fake Telegram stage ---- */

struct tg_call {
	tg_done_cb done;
	void *arg;
	int64_t chat_id;
	char *text;
	bool is_cancelled; /* freed by the test once it is answered */
};

#define MAX_CALLS 64
static struct tg_call *sends[MAX_CALLS];
static size_t n_sends;

struct tg_call *tg_send_text(struct tg_client *tg, const struct tg_target *t, const char *text, size_t len,
                             tg_done_cb done, void *arg)
{
	(void)tg;
	note("send chat=%lld thread=%lld reply_to=%lld: %.*s", (long long)t->chat_id, (long long)t->thread_id,
	     (long long)t->reply_to, (int)len, text);
	struct tg_call *call = calloc(1, sizeof *call);
	call->done = done;
	call->arg = arg;
	call->chat_id = t->chat_id;
	call->text = strndup(text, len);
	sends[n_sends++] = call;
	return call;
}

void tg_call_cancel(struct tg_call *call)
{
	if (call)
		call->is_cancelled = true;
}

/* Answers the oldest unanswered sendMessage: ok, or Telegram's error_code. */
static void answer_send(long error_code)
{
	for (size_t i = 0; i < n_sends; i++) {
		struct tg_call *call = sends[i];
		if (!call || call->is_cancelled)
			continue;
		sends[i] = NULL;
		struct tg_result res = {
		    .ok = error_code == 0, .error_code = error_code, .description = "fake"};
		call->done(call->arg, &res);
		free(call->text);
		free(call);
		return;
	}
	fail_msg("expected a sendMessage waiting for its answer; there is none");
}

static void free_sends(void)
{
	for (size_t i = 0; i < n_sends; i++)
		if (sends[i]) {
			free(sends[i]->text);
			free(sends[i]);
		}
	n_sends = 0;
}

void tg_typing_start(struct tg_typing *typing, struct tg_client *tg, struct event_base *base,
                     const struct tg_target *t)
{
	(void)tg;
	(void)base;
	note("typing start chat=%lld", (long long)t->chat_id);
	typing->chat_id = t->chat_id;
}

void tg_typing_stop(struct tg_typing *typing)
{
	if (!typing->chat_id)
		return;
	note("typing stop chat=%lld", (long long)typing->chat_id);
	memset(typing, 0, sizeof *typing);
}

struct delivery {
	struct tg_target target;
	const struct buf *text;
	delivery_visible_cb visible;
	delivery_done_cb done;
	void *arg;
	size_t progressed;
};

static struct delivery *delivery; /* the one of the test's current answer */

struct delivery *delivery_new(struct tg_client *tg, struct event_base *base, enum render_think think,
                              const struct tg_target *t, const struct buf *text, delivery_visible_cb visible,
                              void *arg)
{
	(void)tg;
	(void)base;
	note("delivery new chat=%lld thread=%lld reply_to=%lld think=%d private=%d", (long long)t->chat_id,
	     (long long)t->thread_id, (long long)t->reply_to, (int)think, t->is_private);
	struct delivery *d = calloc(1, sizeof *d);
	d->target = *t;
	d->text = text;
	d->visible = visible;
	d->arg = arg;
	delivery = d;
	return d;
}

void delivery_offer_stop(struct delivery *d, const char *label, const char *data)
{
	(void)d, (void)label, (void)data;
}

void delivery_progress(struct delivery *d)
{
	d->progressed++;
}

void delivery_finish(struct delivery *d, const char *text, size_t len, delivery_done_cb done)
{
	note("delivery finish: %.*s", (int)len, text);
	d->done = done;
}

void delivery_free(struct delivery *d)
{
	if (d == delivery)
		delivery = NULL;
	free(d);
}

/* The delivery has sent every part (or not). */
static void answer_delivery(bool is_delivered)
{
	if (!delivery || !delivery->done)
		fail_msg("expected a delivery being finished");
	delivery_done_cb done = delivery->done;
	delivery->done = NULL;
	done(delivery->arg, is_delivered);
}

/* ---- the fake model ---- */

struct llm_call {
	struct buf *answer;
	llm_progress_cb progress;
	llm_done_cb done;
	void *arg;
	size_t n_turns;
	struct turn turns[64]; /* borrowed views, valid while the call waits */
	char *contents[64];    /* copies, to check after the caller moved on */
};

static struct llm_call *llm; /* the latest request in flight */
static double fake_token_scale = 1.0;
static size_t n_llm_calls;

double llm_token_scale(const struct llm_client *client)
{
	(void)client;
	return fake_token_scale;
}

const char *llm_model(const struct llm_client *client)
{
	(void)client;
	return "fake-model";
}

/* /model and its buttons are the e2e tests' (test_steer.py): here they must not be reached. */
int model_list_get(struct model_list *ml, model_list_cb cb, void *arg)
{
	(void)ml;
	(void)cb;
	(void)arg;
	fail_msg("model_list_get");
	return -1;
}

void model_list_forget(struct model_list *ml, void *arg)
{
	(void)ml;
	(void)arg;
}

struct tg_call *tg_send_keyboard(struct tg_client *tg, const struct tg_target *t, const char *text,
                                 const struct tg_button *buttons, size_t n, tg_done_cb done, void *arg)
{
	(void)tg, (void)t, (void)text, (void)buttons, (void)n, (void)done, (void)arg;
	fail_msg("tg_send_keyboard");
	return NULL;
}

struct tg_call *tg_edit_keyboard(struct tg_client *tg, int64_t chat_id, int64_t message_id, const char *text,
                                 const struct tg_button *buttons, size_t n, tg_done_cb done, void *arg)
{
	(void)tg, (void)chat_id, (void)message_id, (void)text, (void)buttons, (void)n, (void)done, (void)arg;
	fail_msg("tg_edit_keyboard");
	return NULL;
}

struct tg_call *tg_answer_callback(struct tg_client *tg, const char *callback_id, const char *text,
                                   tg_done_cb done, void *arg)
{
	(void)tg, (void)callback_id, (void)text, (void)done, (void)arg;
	fail_msg("tg_answer_callback");
	return NULL;
}

struct llm_call *llm_complete(struct llm_client *client, const char *model, const struct turn *turns, size_t n,
                              struct buf *answer, llm_progress_cb progress, llm_done_cb done, void *arg)
{
	(void)client;
	(void)model;
	struct llm_call *call = calloc(1, sizeof *call);
	call->answer = answer;
	call->progress = progress;
	call->done = done;
	call->arg = arg;
	call->n_turns = n;
	char line[2048] = "";
	for (size_t i = 0; i < n && i < 64; i++) {
		call->contents[i] = strndup(turns[i].content, turns[i].len);
		call->turns[i] = (struct turn){turns[i].role, call->contents[i], turns[i].len, turns[i].is_parts};
		snprintf(line + strlen(line), sizeof line - strlen(line), "%s%s:%s", i ? " | " : "",
		         turn_role_name(turns[i].role), call->contents[i]);
	}
	note("llm %s", line);
	buf_free(answer);
	buf_init(answer, 1u << 20);
	llm = call;
	n_llm_calls++;
	return call;
}

static void llm_call_free(struct llm_call *call)
{
	for (size_t i = 0; i < call->n_turns && i < 64; i++)
		free(call->contents[i]);
	free(call);
}

void llm_limit(struct llm_call *call, size_t max)
{
	(void)call;
	note("llm limit %zu", max);
}

void llm_cancel(struct llm_call *call)
{
	if (!call)
		return;
	note("llm cancel");
	if (call == llm)
		llm = NULL;
	llm_call_free(call);
}

/* The model writes text into the answer, as a stream does. */
static void stream(const char *text)
{
	if (!llm)
		fail_msg("expected a model request in flight");
	if (buf_append_str(llm->answer, text) != BUF_OK)
		fail_msg("the answer buffer refused text");
	llm->progress(llm->arg);
}

static void answer_llm(enum llm_status status, long prompt_tokens)
{
	if (!llm)
		fail_msg("expected a model request in flight");
	struct llm_call *call = llm;
	llm = NULL;
	struct llm_result res = {.status = status, .prompt_tokens = prompt_tokens, .completion_tokens = 10, .detail = "fake detail"};
	call->done(call->arg, &res);
	llm_call_free(call);
}

const char *llm_status_name(enum llm_status status)
{
	(void)status;
	return "fake";
}

/* Files (chat/media.c): no test here sends one; tests/e2e/test_media.py does. */
struct tg_download *tg_download(struct tg_client *tg, const char *file_id, size_t max_bytes, tg_file_cb done,
                                void *arg)
{
	(void)tg, (void)max_bytes, (void)done, (void)arg;
	note("tg_download %s", file_id);
	return NULL;
}

void tg_download_cancel(struct tg_download *d)
{
	(void)d;
}

struct transcribe_call *transcribe(struct llm_client *client, const char *data, size_t len, const char *file_name,
                                   const char *mime, transcribe_cb done, void *arg)
{
	(void)client, (void)data, (void)len, (void)file_name, (void)mime, (void)done, (void)arg;
	return NULL;
}

void transcribe_cancel(struct transcribe_call *call)
{
	(void)call;
}

struct images_call *images_generate(struct llm_client *client, const char *prompt, images_cb done, void *arg)
{
	(void)client, (void)done, (void)arg;
	note("images_generate %s", prompt);
	return NULL;
}

void images_cancel(struct images_call *call)
{
	(void)call;
}

struct tg_call *tg_send_photo(struct tg_client *tg, const struct tg_target *t, const char *data, size_t len,
                              const char *caption, tg_done_cb done, void *arg)
{
	(void)tg, (void)t, (void)data, (void)len, (void)caption, (void)done, (void)arg;
	return NULL;
}

void tg_action_start(struct tg_typing *typing, struct tg_client *tg, struct event_base *base,
                     const struct tg_target *t, const char *action)
{
	(void)action;
	tg_typing_start(typing, tg, base, t);
}

void transcribe_file_name(const char *file_path, const char *mime, char *out, size_t n)
{
	(void)file_path, (void)mime;
	snprintf(out, n, "voice.ogg");
}

/* ---- the fake store: a backend table over the real store.h ---- */

struct fake_store {
	struct store base;
	struct history history; /* what history_load returns */
	int fail_load, fail_append;
	bool set_aside_load; /* history_load answers STORE_HISTORY_SET_ASIDE with no turns */
	char *refused_at;    /* the refused_at setting's value */
	char *usage;         /* the usage setting's value (one user, one month) */
	char *chat;          /* the chat setting's value */
};

static struct fake_store *fs;

static void fake_history_load(struct store *s, int64_t chat_id, store_history_cb cb, void *arg)
{
	note("store load chat=%lld", (long long)chat_id);
	struct history h = HISTORY_INIT;
	for (size_t i = 0; !fs->fail_load && !fs->set_aside_load && i < fs->history.len; i++)
		history_push(&h, fs->history.turns[i].role, fs->history.turns[i].content,
		             fs->history.turns[i].len);
	int err = fs->fail_load ? -1 : 0;
	if (fs->set_aside_load)
		err = STORE_HISTORY_SET_ASIDE;
	store_answer_history(s, cb, arg, err, &h);
}

static void fake_history_append(struct store *s, int64_t chat_id, const struct turn *old, size_t n_old,
                                const struct turn *turns, size_t n, int64_t update_id, store_done_cb cb, void *arg)
{
	(void)old;
	if (n_old)
		note("store replace %zu", n_old);
	char line[2048] = "";
	for (size_t i = 0; i < n; i++)
		snprintf(line + strlen(line), sizeof line - strlen(line), "%s%s:%.*s", i ? " | " : "",
		         turn_role_name(turns[i].role), (int)turns[i].len, turns[i].content);
	note("store append chat=%lld update=%lld %s", (long long)chat_id, (long long)update_id, line);
	for (size_t i = 0; !fs->fail_append && i < n; i++)
		history_push(&fs->history, turns[i].role, turns[i].content, turns[i].len);
	store_answer_done(s, cb, arg, fs->fail_append ? -1 : 0);
}

static void fake_history_clear(struct store *s, int64_t chat_id, store_done_cb cb, void *arg)
{
	note("store clear chat=%lld", (long long)chat_id);
	store_answer_done(s, cb, arg, 0);
}

static void fake_update_claim(struct store *s, int64_t update_id, int64_t chat_id, const char *raw,
                              size_t len, store_claim_cb cb, void *arg)
{
	(void)raw;
	(void)len;
	note("store claim update=%lld chat=%lld", (long long)update_id, (long long)chat_id);
	store_answer_claim(s, cb, arg, 0, true);
}

static void fake_update_done(struct store *s, int64_t update_id, store_done_cb cb, void *arg)
{
	note("store done update=%lld", (long long)update_id);
	store_answer_done(s, cb, arg, 0);
}

static void fake_update_release(struct store *s, int64_t update_id, store_done_cb cb, void *arg)
{
	note("store release update=%lld", (long long)update_id);
	store_answer_done(s, cb, arg, 0);
}

static void fake_update_pending(struct store *s, store_pending_cb cb, void *arg)
{
	store_answer_pending(s, cb, arg, 0, NULL, 0);
}

static void fake_setting_get(struct store *s, int64_t scope, const char *key, store_value_cb cb, void *arg)
{
	note("store get %lld %s", (long long)scope, key);
	store_answer_value(s, cb, arg, 0, strcmp(key, "refused_at") == 0 ? fs->refused_at : NULL);
}

static void fake_setting_set(struct store *s, int64_t scope, const char *key, const char *value,
                             store_done_cb cb, void *arg)
{
	note("store set %lld %s", (long long)scope, key);
	if (strcmp(key, "refused_at") == 0) {
		free(fs->refused_at);
		fs->refused_at = strdup(value);
	}
	store_answer_done(s, cb, arg, 0);
}

static void fake_setting_change(struct store *s, int64_t scope, const char *key, store_change_fn change,
                                void *change_arg, store_done_cb cb, void *arg)
{
	char **kept = strncmp(key, "usage-", 6) == 0 ? &fs->usage : &fs->chat;
	char *value = change(change_arg, *kept);
	note("store change %lld %s", (long long)scope, key);
	if (value) {
		free(*kept);
		*kept = value;
	}
	store_answer_done(s, cb, arg, 0);
}

static void fake_free(struct store *s)
{
	store_clear(s);
}

static const struct store_ops fake_ops = {
    .name = "fake",
    .history_load = fake_history_load,
    .history_append = fake_history_append,
    .history_clear = fake_history_clear,
    .update_claim = fake_update_claim,
    .update_done = fake_update_done,
    .update_release = fake_update_release,
    .update_pending = fake_update_pending,
    .setting_get = fake_setting_get,
    .setting_set = fake_setting_set,
    .setting_change = fake_setting_change,
    .free = fake_free,
};

/* ---- the world of one test ---- */

struct world {
	struct event_base *base;
	struct fake_store store;
	struct chats *chats;
	int idle_count;
};

static struct world w;

static void on_idle(void *arg)
{
	(void)arg;
	w.idle_count++;
}

static void world_open(const char *system_prompt, size_t context_tokens)
{
	memset(&w, 0, sizeof w);
	w.base = event_base_new();
	fs = &w.store;
	if (!w.base || store_init(&w.store.base, &fake_ops, w.base) != 0)
		fail_msg("cannot set up the test's loop");
	struct chat_env env = {
	    .base = w.base,
	    .store = &w.store.base,
	    .system_prompt = system_prompt,
	    .context_tokens = context_tokens,
	    .think = RENDER_THINK_HIDE,
	};
	w.chats = chats_new(&env);
	chats_on_idle(w.chats, on_idle, NULL);
	fake_token_scale = 1.0;
	n_llm_calls = 0;
}

static int world_close(void **state)
{
	(void)state;
	chats_free(w.chats);
	if (llm)
		llm_cancel(llm);
	store_clear(&w.store.base);
	history_free(&w.store.history);
	free(w.store.refused_at);
	free(w.store.usage);
	free(w.store.chat);
	event_base_free(w.base);
	free_sends();
	forget_events();
	return 0;
}

/* Runs what the loop has ready (the store's answers), as the event loop would between callbacks. */
static void run_loop(void)
{
	for (int i = 0; i < 10; i++)
		event_base_loop(w.base, EVLOOP_NONBLOCK);
}

static const char *language = "en";

/* An update of a private chat (chat id = user id), or of a group when chat_id is negative. */
static struct tg_update message(int64_t update_id, int64_t chat_id, int64_t user_id, const char *text)
{
	struct tg_update u = {.update_id = update_id, .kind = TG_UPDATE_MESSAGE};
	snprintf(u.kind_name, sizeof u.kind_name, "message");
	u.message.message_id = update_id * 10;
	u.message.chat_id = chat_id;
	u.message.chat_type = chat_id < 0 ? TG_CHAT_SUPERGROUP : TG_CHAT_PRIVATE;
	u.message.has_from = true;
	u.message.from.id = user_id;
	u.message.from.first_name = strdup("Alice");
	u.message.from.language_code = strdup(language);
	u.message.text = strdup(text);
	return u;
}

static void submit(struct tg_update u, enum chat_job job)
{
	if (chats_submit(w.chats, &u, job) != 0)
		fail_msg("chats_submit: expected 0");
	if (u.message.text)
		fail_msg("chats_submit: expected the update moved in");
}

static void push(struct history *h, enum turn_role role, const char *content)
{
	if (history_push(h, role, content, strlen(content)) != 0)
		fail_msg("history_push failed");
}

/* ---- the tests ---- */

static void test_a_reply_streams_then_is_delivered_then_stored(void **state)
{
	(void)state;
	world_open("Be brief.", 16000);
	push(&w.store.history, TURN_USER, "Earlier question");
	push(&w.store.history, TURN_ASSISTANT, "Earlier answer");
	submit(message(1, 111, 111, "What is 2+2?"), CHAT_REPLY);
	find_event("typing start chat=111", 0);
	find_event("delivery new chat=111 thread=0 reply_to=10 think=0 private=1", 0);
	expect_no_event("llm");
	run_loop(); /* the history arrives */
	find_event(
	    "llm system:Be brief. | user:Earlier question | assistant:Earlier answer | user:What is 2+2?", 0);
	stream("It is ");
	stream("4.");
	expect_int("progress reported to the delivery for every piece", 2, delivery->progressed);
	answer_llm(LLM_OK, 40);
	size_t stop = find_event("typing stop chat=111", 0);
	size_t finish = find_event("delivery finish: It is 4.", 0);
	if (stop > finish)
		fail_msg("expected typing stopped before the final answer is sent");
	expect_no_event("store append");
	answer_delivery(true);
	find_event("store append chat=111 update=1 user:What is 2+2? | assistant:It is 4.", finish);
	expect_int("not idle before the store has answered", 0, w.idle_count);
	run_loop();
	expect_int("idle once the exchange is stored", 1, w.idle_count);
	expect_int("no job left", 0, chats_busy(w.chats));
	expect_no_event("store done"); /* the append marks the update done, atomically */
	expect_no_event("send ");
}

static void test_one_chat_waits_its_turn_while_others_go_on(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	submit(message(1, 111, 111, "first"), CHAT_REPLY);
	submit(message(2, 111, 111, "second"), CHAT_REPLY);
	submit(message(3, -500, 111, "/help"), CHAT_HELP);
	expect_int("three jobs", 3, chats_busy(w.chats));
	run_loop();
	find_event("llm user:first", 0);
	/* The group's job runs beside the first chat's. */
	find_event("send chat=-500 thread=0 reply_to=30: ", 0);
	expect_int("one model request: the second message waits", 1, n_llm_calls);
	stream("one");
	answer_llm(LLM_OK, -1);
	answer_delivery(true);
	run_loop();
	find_event("store append chat=111 update=1", 0);
	expect_int("the second starts after the first is stored", 2, n_llm_calls);
	find_event("llm user:first | assistant:one | user:second", 0);
	answer_send(0); /* the help text */
	run_loop();
	find_event("store done update=3", 0);
	expect_int("still the second job", 1, chats_busy(w.chats));
}

static void test_a_chat_queues_at_most_its_bound_and_is_told_once(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	for (int i = 1; i <= CHAT_QUEUE_MAX; i++)
		submit(message(i, 111, 111, "again"), CHAT_REPLY);
	expect_int("the chat's bound queued", CHAT_QUEUE_MAX, chats_busy(w.chats));
	for (int i = 1; i <= 2; i++) {
		struct tg_update u = message(CHAT_QUEUE_MAX + i, 111, 111, "one too many");
		expect_int("an update beyond the bound", CHATS_CHAT_FULL,
		           chats_submit(w.chats, &u, CHAT_REPLY));
		expect_null("its text, freed", u.message.text);
	}
	expect_int("nothing more queued", CHAT_QUEUE_MAX, chats_busy(w.chats));
	find_event("send chat=111 thread=0 reply_to=210: I am still answering", 0);
	expect_int("the chat told once", 1, count_events("send chat=111"));
	answer_send(0);
	/* Another chat is not held by this one's bound. */
	submit(message(99, 222, 222, "hello"), CHAT_REPLY);
	expect_int("another chat's update queued", CHAT_QUEUE_MAX + 1, chats_busy(w.chats));
	expect_int("far from the bound of all chats", 0, chats_are_full(w.chats));
}

static void test_group_turns_name_the_speaker_and_stay_in_the_topic(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	struct tg_update u = message(4, -100, 222, "@bot hello");
	u.message.thread_id = 77;
	u.message.is_topic_message = true;
	submit(u, CHAT_REPLY);
	find_event("delivery new chat=-100 thread=77 reply_to=40 think=0 private=0", 0);
	run_loop();
	find_event("llm user:Alice: @bot hello", 0);
	answer_llm(LLM_EMPTY, -1);
	find_event("send chat=-100 thread=77 reply_to=40: ", 0);
}

static void test_a_context_overflow_leaves_out_older_turns_and_says_so(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	for (int i = 1; i <= 4; i++) {
		char q[16], a[16];
		snprintf(q, sizeof q, "q%d", i);
		snprintf(a, sizeof a, "a%d", i);
		push(&w.store.history, TURN_USER, q);
		push(&w.store.history, TURN_ASSISTANT, a);
	}
	submit(message(5, 111, 111, "now"), CHAT_REPLY);
	run_loop();
	find_event("llm user:q1 | assistant:a1 | user:q2", 0);
	answer_llm(LLM_CONTEXT, -1);
	/* 8 turns were sent: the older 4 go. */
	size_t second = find_event("llm user:q3 | assistant:a3 | user:q4 | assistant:a4 | user:now", 1);
	answer_llm(LLM_CONTEXT, -1);
	find_event("llm user:q4 | assistant:a4 | user:now", second + 1);
	stream("fits now");
	answer_llm(LLM_OK, -1);
	answer_delivery(true);
	/* After the answer: the exchange stored (at once: a kill before it answers twice), then the notice that
	 * older messages were left out. */
	size_t append = find_event("store append chat=111 update=5 user:now | assistant:fits now", 0);
	expect_no_event("send chat=111");
	run_loop();
	find_event("send chat=111 thread=0 reply_to=50: (Older messages", append);
	answer_send(0);
	run_loop();
	expect_int("idle once the notice is sent", 1, w.idle_count);
}

static void test_a_message_the_model_never_takes_is_too_long(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	push(&w.store.history, TURN_USER, "q1");
	push(&w.store.history, TURN_ASSISTANT, "a1");
	submit(message(6, 111, 111, "huge"), CHAT_REPLY);
	run_loop();
	for (int i = 0; i < 2; i++)
		answer_llm(LLM_CONTEXT, -1);
	/* No history left to leave out: the user is told, nothing is stored. */
	find_event("send chat=111 thread=0 reply_to=60: This message is too long", 0);
	expect_int("two requests: with the history, then without", 2, n_llm_calls);
	answer_send(0);
	run_loop();
	find_event("store done update=6", 0);
	expect_no_event("store append");
	expect_int("idle", 1, w.idle_count);
}

static void test_the_budget_counts_the_learned_token_scale(void **state)
{
	(void)state;
	/* Each turn of 2 bytes costs 5 estimated tokens (+1 by the planner): 12 hold the new turn and one
	 * more. */
	world_open(NULL, 14);
	push(&w.store.history, TURN_USER, "q1");
	push(&w.store.history, TURN_ASSISTANT, "a1");
	push(&w.store.history, TURN_USER, "q2");
	submit(message(7, 111, 111, "hi"), CHAT_REPLY);
	run_loop();
	find_event("llm user:q2 | user:hi", 0);
	answer_llm(LLM_EMPTY, -1);
	answer_send(0);
	run_loop();
	/* The model client learned that tokens cost twice the estimate: q2 no longer fits. */
	fake_token_scale = 2.0;
	submit(message(8, 111, 111, "hi"), CHAT_REPLY);
	run_loop();
	find_event("llm user:hi", 0);
	expect_int("at scale 2 the history is left out", 1, count_events("llm user:hi"));
}

static void test_model_failures_are_worded_for_the_user_and_nothing_is_stored(void **state)
{
	(void)state;
	static const struct {
		enum llm_status status;
		enum text_id text;
	} cases[] = {
	    {LLM_QUOTA, TEXT_MODEL_QUOTA}, {LLM_AUTH, TEXT_MODEL_AUTH},         {LLM_BUSY, TEXT_MODEL_BUSY},
	    {LLM_DOWN, TEXT_MODEL_DOWN},   {LLM_REJECTED, TEXT_MODEL_REJECTED}, {LLM_EMPTY, TEXT_MODEL_EMPTY},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		world_open(NULL, 16000);
		submit(message(9, 111, 111, "question"), CHAT_REPLY);
		run_loop();
		answer_llm(cases[i].status, -1);
		char want[512];
		snprintf(want, sizeof want, "send chat=111 thread=0 reply_to=90: %s",
		         text_get(cases[i].text, "en"));
		size_t sent = find_event(want, 0);
		if (find_event("typing stop", 0) > sent)
			fail_msg("expected typing stopped before the notice");
		answer_send(0);
		run_loop();
		find_event("store done update=9", sent);
		expect_no_event("store append");
		world_close(NULL);
	}
	world_open(NULL, 16000); /* for the teardown */
}

static void test_a_cut_answer_is_delivered_with_a_notice_and_stored(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	submit(message(10, 111, 111, "tell me"), CHAT_REPLY);
	run_loop();
	stream("Once upon");
	answer_llm(LLM_CUT, -1);
	find_event("delivery finish: Once upon\n\n(the answer was cut off)", 0);
	answer_delivery(false);
	find_event("store append chat=111 update=10 user:tell me | assistant:Once upon", 0);
}

/* An answer that renders to nothing is told as such, and no empty assistant turn is stored. */
static void test_an_answer_that_shows_nothing_is_told_and_not_stored(void **state)
{
	(void)state;
	static const struct {
		const char *answer;
		enum llm_status status;
		enum text_id text;
	} cases[] = {
	    {"<think>Only reasoning.</think>", LLM_OK, TEXT_MODEL_EMPTY},
	    {"<think>Reasoning that runs out of tokens", LLM_OK, TEXT_MODEL_THINKING},
	    {"<think>Cut while reasoning", LLM_CUT, TEXT_MODEL_THINKING},
	    {" \n\t\n ", LLM_OK, TEXT_MODEL_EMPTY},
	    {">", LLM_OK, TEXT_MODEL_EMPTY},
	    {"```\n```", LLM_OK, TEXT_MODEL_EMPTY},
	    {"<think>x</think>\n\n> \n", LLM_OK, TEXT_MODEL_EMPTY},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		world_open(NULL, 16000);
		submit(message(12, 111, 111, "question"), CHAT_REPLY);
		run_loop();
		stream(cases[i].answer);
		answer_llm(cases[i].status, -1);
		char want[512];
		snprintf(want, sizeof want, "send chat=111 thread=0 reply_to=120: %s",
		         text_get(cases[i].text, "en"));
		size_t sent = find_event(want, 0);
		expect_no_event("delivery finish");
		answer_send(0);
		run_loop();
		find_event("store done update=12", sent);
		expect_no_event("store append");
		world_close(NULL);
	}
	world_open(NULL, 16000); /* for the teardown */
}

static void test_a_history_that_cannot_be_read_is_a_storage_failure(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	w.store.fail_load = 1;
	language = "ru";
	submit(message(11, 111, 111, "привет"), CHAT_REPLY);
	language = "en";
	run_loop();
	expect_int("no model request", 0, n_llm_calls);
	char want[512];
	snprintf(want, sizeof want, "send chat=111 thread=0 reply_to=110: %s",
	         text_get(TEXT_STORE_FAILED, "ru"));
	find_event(want, 0);
}

/* The store kept an unreadable history aside: the user hears so, then gets an answer from a fresh start. */
static void test_a_history_kept_aside_is_told_then_the_chat_starts_over(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	history_push(&w.store.history, TURN_USER, "lost", 4);
	w.store.set_aside_load = true;
	submit(message(13, 111, 111, "hello"), CHAT_REPLY);
	run_loop();
	char want[512];
	snprintf(want, sizeof want, "send chat=111 thread=0 reply_to=130: %s",
	         text_get(TEXT_HISTORY_ASIDE, "en"));
	size_t told = find_event(want, 0);
	expect_int("no model request before the notice is sent", 0, n_llm_calls);
	answer_send(0);
	run_loop();
	find_event("llm user:hello", told);
	stream("hi");
	answer_llm(LLM_OK, -1);
	answer_delivery(true);
	run_loop();
	find_event("store append chat=111 update=13 user:hello | assistant:hi", told);
}

static void test_new_forgets_the_history_and_says_so(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	submit(message(12, 111, 111, "/new"), CHAT_NEW);
	size_t clear = find_event("store clear chat=111", 0);
	expect_no_event("send");
	run_loop();
	find_event("send chat=111 thread=0 reply_to=120: Started a new conversation", clear);
	answer_send(0);
	run_loop();
	find_event("store done update=12", clear);
	expect_int("idle", 1, w.idle_count);
}

static void test_a_stranger_is_told_once_an_hour(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	submit(message(13, 666, 666, "let me in"), CHAT_REFUSE);
	run_loop();
	find_event("store get 666 refused_at", 0);
	find_event("store set 666 refused_at", 0);
	run_loop();
	find_event("send chat=666 thread=0 reply_to=130: Sorry, this bot is private. Your Telegram id is 666",
	           0);
	answer_send(0);
	run_loop();
	find_event("store done update=13", 0);
	/* Again within the hour: nothing said, the update done all the same. */
	submit(message(14, 666, 666, "please"), CHAT_REFUSE);
	run_loop();
	run_loop();
	expect_int("one refusal only", 1, count_events("send chat=666"));
	find_event("store done update=14", 0);
}

static void test_a_notice_telegram_refuses_still_ends_the_job(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	submit(message(15, 111, 111, "q"), CHAT_REPLY);
	run_loop();
	answer_llm(LLM_CONTEXT, -1); /* no history: too long */
	answer_send(403);            /* blocked */
	run_loop();
	find_event("store done update=15", 0);
	expect_int("one message tried", 1, count_events("send chat=111"));
}

static void test_out_of_time_the_answer_so_far_is_delivered_and_stored(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	submit(message(16, 111, 111, "slow question"), CHAT_REPLY);
	run_loop();
	stream("Half an");
	chats_hurry(w.chats);
	find_event("llm cancel", 0);
	find_event("delivery finish: Half an\n\n(time ran out", 0);
	answer_delivery(true);
	find_event("store append chat=111 update=16 user:slow question | assistant:Half an", 0);
}

static void test_out_of_time_without_text_the_user_is_told(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	submit(message(18, 111, 111, "slow"), CHAT_REPLY);
	run_loop();
	chats_hurry(w.chats);
	find_event("send chat=111 thread=0 reply_to=180: The model took too long", 0);
	expect_no_event("store append");
}

static void on_abandoned(void *arg)
{
	(void)arg;
	note("abandoned");
}

static void test_abandoned_updates_are_released_for_telegram_to_deliver_again(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	submit(message(19, 111, 111, "a"), CHAT_REPLY);
	submit(message(20, 111, 111, "b"), CHAT_REPLY);
	submit(message(21, 222, 222, "c"), CHAT_REPLY);
	run_loop();
	chats_abandon(w.chats, on_abandoned, NULL);
	expect_int("nothing left", 0, chats_busy(w.chats));
	expect_no_event("abandoned"); /* not before the store has answered */
	find_event("store release update=19", 0);
	find_event("store release update=20", 0);
	find_event("store release update=21", 0);
	run_loop();
	find_event("abandoned", 0);
	expect_no_event("store append");
}

static void test_a_journal_failure_is_told_and_nothing_marked(void **state)
{
	(void)state;
	world_open(NULL, 16000);
	submit(message(22, 111, 111, "hello?"), CHAT_NOT_JOURNALED);
	char want[512];
	snprintf(want, sizeof want, "send chat=111 thread=0 reply_to=220: %s",
	         text_get(TEXT_STORE_FAILED, "en"));
	find_event(want, 0);
	answer_send(0);
	run_loop();
	expect_no_event("store");
	expect_int("idle", 1, w.idle_count);
}

static void test_an_oversized_message_is_refused_before_the_model(void **state)
{
	(void)state;
	world_open(NULL, 10000000);
	char *big = malloc(70000);
	memset(big, 'x', 69999);
	big[69999] = '\0';
	submit(message(23, 111, 111, big), CHAT_REPLY);
	free(big);
	find_event("send chat=111 thread=0 reply_to=230: This message is too long", 0);
	expect_int("no model request", 0, n_llm_calls);
}

int main(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(test_a_reply_streams_then_is_delivered_then_stored, world_close),
	    cmocka_unit_test_teardown(test_one_chat_waits_its_turn_while_others_go_on, world_close),
	    cmocka_unit_test_teardown(test_a_chat_queues_at_most_its_bound_and_is_told_once, world_close),
	    cmocka_unit_test_teardown(test_group_turns_name_the_speaker_and_stay_in_the_topic, world_close),
	    cmocka_unit_test_teardown(test_a_context_overflow_leaves_out_older_turns_and_says_so,
	                              world_close),
	    cmocka_unit_test_teardown(test_a_message_the_model_never_takes_is_too_long, world_close),
	    cmocka_unit_test_teardown(test_the_budget_counts_the_learned_token_scale, world_close),
	    cmocka_unit_test_teardown(test_model_failures_are_worded_for_the_user_and_nothing_is_stored,
	                              world_close),
	    cmocka_unit_test_teardown(test_a_cut_answer_is_delivered_with_a_notice_and_stored, world_close),
	    cmocka_unit_test_teardown(test_an_answer_that_shows_nothing_is_told_and_not_stored, world_close),
	    cmocka_unit_test_teardown(test_a_history_that_cannot_be_read_is_a_storage_failure, world_close),
	    cmocka_unit_test_teardown(test_a_history_kept_aside_is_told_then_the_chat_starts_over,
	                              world_close),
	    cmocka_unit_test_teardown(test_new_forgets_the_history_and_says_so, world_close),
	    cmocka_unit_test_teardown(test_a_stranger_is_told_once_an_hour, world_close),
	    cmocka_unit_test_teardown(test_a_notice_telegram_refuses_still_ends_the_job, world_close),
	    cmocka_unit_test_teardown(test_out_of_time_the_answer_so_far_is_delivered_and_stored,
	                              world_close),
	    cmocka_unit_test_teardown(test_out_of_time_without_text_the_user_is_told, world_close),
	    cmocka_unit_test_teardown(test_abandoned_updates_are_released_for_telegram_to_deliver_again,
	                              world_close),
	    cmocka_unit_test_teardown(test_a_journal_failure_is_told_and_nothing_marked, world_close),
	    cmocka_unit_test_teardown(test_an_oversized_message_is_refused_before_the_model, world_close),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
