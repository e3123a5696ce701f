/*
 * Unit tests for src/gate/gate.c: the journal before anything else, routing,
 * the durability contract (accepted only once journaled and settled, from the
 * loop), telling a user once when the journal fails, the bot's identity, and
 * forgetting a caller that is gone. Built with the gate's sources and the
 * store's interface over a fake backend table; the chats and the Telegram
 * client are fakes defined here (a link seam, tests/CMakeLists.txt).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "chat/text.h"
#include "gate/gate.h"
#include "lib/log.h"
#include "store/backend.h"
#include "telegram/send.h"
#include "telegram/tg.h"

#include "expect.h"

#define BOT_ID   7000
#define BOT_NAME "tgllm_bot"

/* ---- the fake chats ---- */

static int submitted[32];
static int64_t submitted_ids[32];
static size_t n_submitted;

int chats_submit(struct chats *cs, struct tg_update *u, enum chat_job job)
{
	(void)cs;
	submitted[n_submitted] = (int)job;
	submitted_ids[n_submitted++] = u->update_id;
	update_clear(u);
	return 0;
}

/* A Stop goes to chats_stop, never through the queue: test_stop_is_not_queued. */
static int64_t stopped_draft;

enum chats_stop chats_stop(struct chats *cs, int64_t chat_id, int64_t draft_id, int64_t user_id, bool is_admin)
{
	(void)cs, (void)chat_id, (void)user_id, (void)is_admin;
	stopped_draft = draft_id;
	return CHATS_NOTHING;
}

void usage_key(time_t t, char key[USAGE_KEY_LEN])
{
	(void)t;
	snprintf(key, USAGE_KEY_LEN, "usage-test");
}

const char *text_get(enum text_id id, const char *language_code)
{
	(void)id, (void)language_code;
	return "a text";
}

struct tg_call *tg_answer_callback(struct tg_client *tg, const char *callback_id, const char *text,
                                   tg_done_cb done, void *arg)
{
	(void)tg, (void)callback_id, (void)text, (void)done, (void)arg;
	fail_msg("a draft's stop needs no callback answer");
	return NULL;
}

/* ---- the fake Telegram client: getMe ---- */

struct tg_call {
	tg_done_cb done;
	void *arg;
};

static struct tg_call *getme;
static size_t n_getme;

struct tg_call *tg_call(struct tg_client *tg, const char *method, char *params, int64_t chat_id,
                        unsigned flags, long timeout_s, tg_done_cb done, void *arg)
{
	(void)tg;
	(void)chat_id;
	(void)flags;
	(void)timeout_s;
	free(params);
	if (strcmp(method, "getMe") != 0)
		fail_msg("the gate called %s", method);
	getme = calloc(1, sizeof *getme);
	getme->done = done;
	getme->arg = arg;
	n_getme++;
	return getme;
}

void tg_call_cancel(struct tg_call *call)
{
	if (call == getme)
		getme = NULL;
	free(call);
}

bool tg_is_token_rejected(const struct tg_result *res)
{
	return !res->ok && res->error_code == 401;
}

static void answer_getme(const char *json, long error_code)
{
	if (!getme)
		fail_msg("expected a getMe in flight");
	struct tg_call *call = getme;
	getme = NULL;
	json_t *result = json ? json_loads(json, 0, NULL) : NULL;
	struct tg_result res = {
	    .ok = error_code == 0, .error_code = error_code, .description = "fake", .result = result};
	call->done(call->arg, &res);
	json_decref(result);
	free(call);
}

/* ---- the fake store ---- */

struct fake_store {
	struct store base;
	int fail_claims;
	int64_t known[32]; /* update ids in the journal */
	size_t n_known;
	int64_t done[32];
	size_t n_done;
	char *identity;
	char *pending[4];
	size_t n_pending;
	bool hold_claims; /* claims wait for answer_claim, as slow S3 requests do */
	struct {
		store_claim_cb cb;
		void *arg;
	} held[8];
	size_t n_held;
};

static struct fake_store fs;

static void fake_claim(struct store *s, int64_t update_id, int64_t chat_id, const char *raw, size_t len,
                       store_claim_cb cb, void *arg)
{
	(void)chat_id;
	(void)raw;
	(void)len;
	if (fs.fail_claims) {
		store_answer_claim(s, cb, arg, -1, false);
		return;
	}
	if (fs.hold_claims) {
		fs.known[fs.n_known++] = update_id;
		fs.held[fs.n_held].cb = cb;
		fs.held[fs.n_held++].arg = arg;
		return;
	}
	for (size_t i = 0; i < fs.n_known; i++)
		if (fs.known[i] == update_id) {
			store_answer_claim(s, cb, arg, 0, false);
			return;
		}
	fs.known[fs.n_known++] = update_id;
	store_answer_claim(s, cb, arg, 0, true);
}

static void fake_done(struct store *s, int64_t update_id, store_done_cb cb, void *arg)
{
	fs.done[fs.n_done++] = update_id;
	store_answer_done(s, cb, arg, 0);
}

static void fake_pending(struct store *s, store_pending_cb cb, void *arg)
{
	char **raws = calloc(fs.n_pending + 1, sizeof *raws);
	for (size_t i = 0; i < fs.n_pending; i++)
		raws[i] = strdup(fs.pending[i]);
	store_answer_pending(s, cb, arg, 0, raws, fs.n_pending);
}

static void fake_get(struct store *s, int64_t scope, const char *key, store_value_cb cb, void *arg)
{
	(void)scope;
	store_answer_value(s, cb, arg, 0, strcmp(key, "bot_identity") == 0 ? fs.identity : NULL);
}

static void fake_set(struct store *s, int64_t scope, const char *key, const char *value, store_done_cb cb,
                     void *arg)
{
	(void)scope;
	if (strcmp(key, "bot_identity") == 0) {
		free(fs.identity);
		fs.identity = strdup(value);
	}
	store_answer_done(s, cb, arg, 0);
}

static void fake_free(struct store *s)
{
	store_clear(s);
}

static const struct store_ops fake_ops = {
    .name = "fake",
    .update_claim = fake_claim,
    .update_done = fake_done,
    .update_pending = fake_pending,
    .setting_get = fake_get,
    .setting_set = fake_set,
    .free = fake_free,
};

/* ---- the world ---- */

static struct event_base *base;
static struct access_list *allow;
static struct gate *gate;

struct accepted {
	size_t n;
	int64_t update_id;
	bool is_journaled;
	bool is_inside_call; /* set while a gate call runs */
	size_t n_done_then;  /* updates marked done when it was last called */
};

static struct accepted acc;

static void on_accepted(void *arg, int64_t update_id, bool is_journaled)
{
	struct accepted *a = arg;
	if (a->is_inside_call)
		fail_msg("accepted ran inside gate_receive");
	a->n++;
	a->n_done_then = fs.n_done;
	a->update_id = update_id;
	a->is_journaled = is_journaled;
}

static int identified = -100;

static void on_identified(void *arg, int status)
{
	(void)arg;
	identified = status;
}

static void run_loop(void)
{
	for (int i = 0; i < 10; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

static int setup(void **state)
{
	(void)state;
	char err[128];
	memset(&fs, 0, sizeof fs);
	memset(&acc, 0, sizeof acc);
	n_submitted = 0;
	n_getme = 0;
	identified = -100;
	base = event_base_new();
	if (!base || store_init(&fs.base, &fake_ops, base) != 0 ||
	    access_parse("alice", &allow, err, sizeof err) != 0)
		fail_msg("setup failed");
	struct gate_env env = {.base = base, .store = &fs.base, .allow = allow, .bot_id = BOT_ID};
	gate = gate_new(&env);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	gate_free(gate);
	store_clear(&fs.base);
	free(fs.identity);
	for (size_t i = 0; i < fs.n_pending; i++)
		free(fs.pending[i]);
	access_free(allow);
	event_base_free(base);
	if (getme)
		tg_call_cancel(getme);
	return 0;
}

/* The gate knows who it is (from getMe). */
static void identify(void)
{
	if (gate_identify(gate, false, on_identified, NULL) != 0)
		fail_msg("gate_identify: expected 0");
	answer_getme("{\"id\":7000,\"is_bot\":true,\"first_name\":\"Bot\",\"username\":\"" BOT_NAME "\"}", 0);
	run_loop();
	expect_int("identified", 0, identified);
}

static void receive(const char *json)
{
	struct tg_update u;
	char err[128];
	if (update_parse(json, strlen(json), &u, err, sizeof err) != 0)
		fail_msg("test update does not decode: %s", err);
	acc.is_inside_call = true;
	if (gate_receive(gate, &u, json, strlen(json), on_accepted, &acc) != 0)
		fail_msg("gate_receive: expected 0");
	acc.is_inside_call = false;
	if (u.message.text)
		fail_msg("gate_receive: expected the update moved in");
}

#define PRIVATE(id, from, text)                                                                              \
	"{\"update_id\":" #id ",\"message\":{\"message_id\":" #id                                            \
	",\"chat\":{\"id\":1,\"type\":\"private\"},"                                                         \
	"\"from\":{\"id\":1,\"is_bot\":false,\"first_name\":\"A\",\"username\":\"" from                      \
	"\"},\"text\":\"" text "\"}}"

static void test_an_update_is_journaled_then_queued_then_accepted(void **state)
{
	(void)state;
	identify();
	receive(PRIVATE(10, "alice", "hello"));
	expect_int("nothing accepted before the journal answers", 0, acc.n);
	expect_int("nothing queued before the journal answers", 0, n_submitted);
	run_loop();
	expect_int("journaled", 1, fs.n_known);
	expect_int("queued once", 1, n_submitted);
	expect_int("as a reply", CHAT_REPLY, submitted[0]);
	expect_int("accepted once", 1, acc.n);
	expect_int("journaled: acknowledge it", true, acc.is_journaled);
	expect_int("its id", 10, acc.update_id);
}

/* The i-th held claim ends now (new), as an S3 PUT that happened to be quick or slow. */
static void answer_claim(size_t i)
{
	store_answer_claim(&fs.base, fs.held[i].cb, fs.held[i].arg, 0, true);
	run_loop();
}

#define PRIVATE_OF(id, chat, text)                                                                           \
	"{\"update_id\":" #id ",\"message\":{\"message_id\":" #id ",\"chat\":{\"id\":" #chat              \
	",\"type\":\"private\"},\"from\":{\"id\":" #chat                                                  \
	",\"is_bot\":false,\"first_name\":\"A\",\"username\":\"alice\"},\"text\":\"" text "\"}}"

static void test_a_chats_updates_go_on_in_the_order_they_came_whatever_their_claims_do(void **state)
{
	(void)state;
	identify();
	fs.hold_claims = true;
	receive(PRIVATE_OF(20, 1, "first"));
	receive(PRIVATE_OF(21, 2, "another chat"));
	receive(PRIVATE_OF(22, 1, "second"));
	receive(PRIVATE_OF(23, 1, "third"));
	answer_claim(3); /* chat 1's third, then its second: both wait for its first */
	answer_claim(2);
	expect_int("nothing of chat 1 before its first", 0, n_submitted);
	answer_claim(1); /* another chat does not wait */
	expect_int("the other chat at once", 1, n_submitted);
	expect_int("its update", 21, submitted_ids[0]);
	answer_claim(0);
	expect_int("then chat 1's three", 4, n_submitted);
	expect_int("first", 20, submitted_ids[1]);
	expect_int("second", 22, submitted_ids[2]);
	expect_int("third", 23, submitted_ids[3]);
	expect_int("all accepted", 4, acc.n);
}

static void test_a_repeat_is_accepted_without_a_second_job(void **state)
{
	(void)state;
	identify();
	receive(PRIVATE(11, "alice", "hello"));
	run_loop();
	receive(PRIVATE(11, "alice", "hello"));
	run_loop();
	expect_int("queued once", 1, n_submitted);
	expect_int("accepted twice", 2, acc.n);
	expect_int("the repeat is acknowledged", true, acc.is_journaled);
}

static void test_an_update_not_for_the_bot_is_accepted_once_marked_done(void **state)
{
	(void)state;
	identify();
	receive("{\"update_id\":12,\"edited_message\":{\"message_id\":1,\"chat\":{\"id\":1,\"type\":"
	        "\"private\"}}}");
	run_loop();
	expect_int("nothing queued", 0, n_submitted);
	expect_int("marked done", 1, fs.n_done);
	expect_int("the update marked done", 12, fs.done[0]);
	expect_int("accepted once", 1, acc.n);
	expect_int("accepted only after the marking", 1, acc.n_done_then);
	expect_int("acknowledged", true, acc.is_journaled);
}

static void test_stop_is_not_queued(void **state)
{
	(void)state;
	identify();
	stopped_draft = 0;
	receive("{\"update_id\":14,\"stopped_message_generation\":{\"chat\":{\"id\":1,\"type\":"
	        "\"private\"},\"draft_id\":77}}");
	run_loop();
	expect_int("nothing queued: the answer it stops runs in the queue", 0, n_submitted);
	expect_int("the draft given to chats_stop", 77, stopped_draft);
	expect_int("marked done", 1, fs.n_done);
	expect_int("accepted", 1, acc.n);
}

static void test_a_stranger_is_routed_to_a_refusal(void **state)
{
	(void)state;
	identify();
	receive(PRIVATE(13, "mallory", "let me in"));
	run_loop();
	expect_int("queued", 1, n_submitted);
	expect_int("as a refusal", CHAT_REFUSE, submitted[0]);
}

static void test_a_journal_failure_is_not_acknowledged_and_told_once(void **state)
{
	(void)state;
	identify();
	fs.fail_claims = 1;
	receive(PRIVATE(14, "alice", "anyone?"));
	run_loop();
	expect_int("accepted", 1, acc.n);
	expect_int("not journaled: Telegram must deliver it again", false, acc.is_journaled);
	expect_int("the user told", 1, n_submitted);
	expect_int("told the journal failed", CHAT_NOT_JOURNALED, submitted[0]);
	/* Telegram delivers it again, and again: told once. */
	receive(PRIVATE(14, "alice", "anyone?"));
	receive(PRIVATE(14, "alice", "anyone?"));
	run_loop();
	expect_int("told once however often it comes", 1, n_submitted);
	/* A stranger is not told anything. */
	receive(PRIVATE(15, "mallory", "anyone?"));
	run_loop();
	expect_int("no refusal while the journal fails", 1, n_submitted);
	/* The journal works again: the update is taken and answered. */
	fs.fail_claims = 0;
	receive(PRIVATE(14, "alice", "anyone?"));
	run_loop();
	expect_int("queued as a reply now", CHAT_REPLY, submitted[1]);
	expect_int("acknowledged now", true, acc.is_journaled);
}

static void test_a_forgotten_caller_is_not_called_back(void **state)
{
	(void)state;
	identify();
	receive(PRIVATE(16, "alice", "late"));
	gate_forget(gate, &acc);
	run_loop();
	expect_int("no callback for a caller that is gone", 0, acc.n);
	expect_int("the work goes on: journaled and queued", 1, n_submitted);
}

static void test_the_identity_is_cached_for_the_bot_of_the_token_only(void **state)
{
	(void)state;
	/* A cache of another bot (the token's number differs) is ignored: getMe is asked. */
	fs.identity = strdup("9999 other_bot");
	if (gate_identify(gate, true, on_identified, NULL) != 0)
		fail_msg("gate_identify: expected 0");
	run_loop();
	expect_int("getMe asked", 1, n_getme);
	answer_getme("{\"id\":7000,\"is_bot\":true,\"first_name\":\"Bot\",\"username\":\"" BOT_NAME "\"}", 0);
	run_loop();
	expect_int("identified", 0, identified);
	expect_str("the cache rewritten", "7000 " BOT_NAME, fs.identity);
	/* The next cold start uses the cache: no getMe. */
	identified = -100;
	if (gate_identify(gate, true, on_identified, NULL) != 0)
		fail_msg("gate_identify: expected 0");
	run_loop();
	expect_int("identified from the cache", 0, identified);
	expect_int("no second getMe", 1, n_getme);
}

static void test_a_rejected_token_fails_identification(void **state)
{
	(void)state;
	if (gate_identify(gate, false, on_identified, NULL) != 0)
		fail_msg("gate_identify: expected 0");
	answer_getme(NULL, 401);
	run_loop();
	expect_int("identification fails", -1, identified);
}

static void test_commands_for_the_bot_in_a_group_use_its_name(void **state)
{
	(void)state;
	identify();
	receive(
	    "{\"update_id\":17,\"message\":{\"message_id\":17,\"chat\":{\"id\":-5,\"type\":\"supergroup\"},"
	    "\"from\":{\"id\":1,\"is_bot\":false,\"first_name\":\"A\",\"username\":\"alice\"},"
	    "\"text\":\"/help@" BOT_NAME "\"}}");
	run_loop();
	expect_int("queued", 1, n_submitted);
	expect_int("the help, not the model", CHAT_HELP, submitted[0]);
}

static void test_pending_updates_are_resumed(void **state)
{
	(void)state;
	identify();
	fs.pending[fs.n_pending++] = strdup(PRIVATE(20, "alice", "before the crash"));
	fs.pending[fs.n_pending++] = strdup(PRIVATE(21, "alice", "and this"));
	gate_resume(gate);
	expect_int("nothing inside the call", 0, n_submitted);
	run_loop();
	expect_int("both queued", 2, n_submitted);
	expect_int("oldest first", 20, submitted_ids[0]);
	expect_int("then the next", 21, submitted_ids[1]);
}

int main(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_an_update_is_journaled_then_queued_then_accepted, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_a_repeat_is_accepted_without_a_second_job, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_a_chats_updates_go_on_in_the_order_they_came_whatever_their_claims_do, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_an_update_not_for_the_bot_is_accepted_once_marked_done,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_a_stranger_is_routed_to_a_refusal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stop_is_not_queued, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_a_journal_failure_is_not_acknowledged_and_told_once, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_a_forgotten_caller_is_not_called_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_the_identity_is_cached_for_the_bot_of_the_token_only, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_a_rejected_token_fails_identification, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commands_for_the_bot_in_a_group_use_its_name, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_pending_updates_are_resumed, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
