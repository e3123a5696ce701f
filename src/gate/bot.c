#include "gate/bot.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat/chat.h"
#include "lib/http.h"
#include "model/llm.h"
#include "lib/log.h"
#include "store/store.h"
#include "telegram/tg.h"

static bool is_username_char(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

/* "@name" in text as a whole word, case-insensitively. */
static bool mentions(const char *text, const char *username)
{
	size_t n = strlen(username);
	if (n == 0)
		return false;
	for (const char *p = strchr(text, '@'); p; p = strchr(p + 1, '@')) {
		if (strncasecmp(p + 1, username, n) == 0 && !is_username_char(p[1 + n]))
			return true;
	}
	return false;
}

struct command {
	char name[33];
	char target[65]; /* the "@bot" part, "" when absent */
};

/* Parses "/name[@target]" at the start of text; false when text is not a command. */
static bool parse_command(const char *text, struct command *cmd)
{
	if (text[0] != '/')
		return false;
	size_t i = 1, n = 0;
	while (is_username_char(text[i]) && n < sizeof cmd->name - 1)
		cmd->name[n++] = (char)tolower((unsigned char)text[i++]);
	cmd->name[n] = '\0';
	if (n == 0)
		return false;
	n = 0;
	if (text[i] == '@') {
		i++;
		while (is_username_char(text[i]) && n < sizeof cmd->target - 1)
			cmd->target[n++] = text[i++];
	}
	cmd->target[n] = '\0';
	return text[i] == '\0' || isspace((unsigned char)text[i]);
}

enum bot_action bot_route(const struct tg_update *u, const struct access_list *allow,
			  int64_t self_id, const char *self_username, const char **why)
{
	const struct tg_message *m = &u->message;
	*why = "";
	if (u->kind != TG_UPDATE_MESSAGE) {
		*why = "not a message";
		return BOT_IGNORE;
	}
	if (!m->has_from) {
		*why = "no sender";
		return BOT_IGNORE;
	}
	if (m->from.is_bot) {
		*why = "sent by a bot";
		return BOT_IGNORE;
	}
	if (!m->text) {
		*why = "no text";
		return BOT_IGNORE;
	}
	bool is_group = m->chat_type == TG_CHAT_GROUP || m->chat_type == TG_CHAT_SUPERGROUP;
	if (!is_group && m->chat_type != TG_CHAT_PRIVATE) {
		*why = "not a private chat or a group";
		return BOT_IGNORE;
	}

	struct command cmd;
	bool is_command = parse_command(m->text, &cmd);
	if (is_command && cmd.target[0] && strcasecmp(cmd.target, self_username) != 0) {
		*why = "a command for another bot";
		return BOT_IGNORE;
	}
	enum bot_action command_action = BOT_REPLY;
	if (is_command) {
		if (strcmp(cmd.name, "start") == 0)
			command_action = BOT_START;
		else if (strcmp(cmd.name, "help") == 0)
			command_action = BOT_HELP;
		else if (strcmp(cmd.name, "new") == 0)
			command_action = BOT_NEW;
	}

	if (is_group) {
		bool is_for_bot = (is_command && (cmd.target[0] || command_action != BOT_REPLY)) ||
				  mentions(m->text, self_username) ||
				  (m->reply_to_from_id != 0 && m->reply_to_from_id == self_id);
		for (size_t i = 0; i < m->n_entities && !is_for_bot; i++)
			is_for_bot = strcmp(m->entities[i].type, "text_mention") == 0 &&
				     m->entities[i].user_id == self_id;
		if (!is_for_bot) {
			*why = "a group message not addressed to the bot";
			return BOT_IGNORE;
		}
	}
	if (!access_allows(allow, m->from.id, m->from.username, m->chat_id))
		return BOT_REFUSE;
	return command_action;
}

static void on_done_marked(void *arg, int err)
{
	(void)arg;
	(void)err; /* the store logged it; the update may be seen again after a restart, and skipped then */
}

/* Routes a journaled update and queues its job (or marks it done). */
static void dispatch(struct bot *b, struct tg_update *u)
{
	const char *why;
	enum bot_action action = bot_route(u, b->cfg->allow, b->self_id, b->self_username, &why);
	if (action == BOT_REFUSE)
		log_info("bot: update=%lld chat=%lld: user %lld (@%s) is not on the allowlist",
			 (long long)u->update_id, (long long)u->message.chat_id,
			 (long long)u->message.from.id,
			 u->message.from.username ? u->message.from.username : "-");
	if (action == BOT_IGNORE) {
		log_info("bot: update=%lld: skipped (%s%s%s)", (long long)u->update_id, why,
			 u->kind == TG_UPDATE_OTHER ? ": " : "",
			 u->kind == TG_UPDATE_OTHER ? u->kind_name : "");
		b->store->ops->update_done(b->store, u->update_id, on_done_marked, NULL);
		update_clear(u);
		return;
	}
	if (chats_submit(b->chats, u, action) != 0) {
		log_error("bot: update=%lld: out of memory, left for a restart", (long long)u->update_id);
		update_clear(u);
	}
}

struct receipt {
	struct bot *bot;
	struct tg_update update;
	bot_accepted_cb accepted;
	void *arg;
};

static void on_claimed(void *arg, int err, bool is_new)
{
	struct receipt *r = arg;
	if (err)
		log_error("bot: update=%lld could not be journaled; handling it anyway",
			  (long long)r->update.update_id);
	if (err || is_new) {
		dispatch(r->bot, &r->update);
	} else {
		log_info("bot: update=%lld: already handled, skipped", (long long)r->update.update_id);
		update_clear(&r->update);
	}
	if (r->accepted)
		r->accepted(r->arg);
	free(r);
}

int64_t bot_receive(struct bot *b, const char *text, size_t len, bot_accepted_cb accepted, void *arg)
{
	char err[160];
	struct tg_update u;
	if (update_parse(text, len, &u, err, sizeof err) != 0) {
		log_warn("bot: skipping an update that cannot be decoded: %s", err);
		if (accepted)
			accepted(arg);
		return u.update_id;
	}
	int64_t id = u.update_id;
	struct receipt *r = malloc(sizeof *r);
	if (!r) {
		log_error("bot: update=%lld: out of memory", (long long)id);
		update_clear(&u);
		if (accepted)
			accepted(arg);
		return id;
	}
	*r = (struct receipt){.bot = b, .update = u, .accepted = accepted, .arg = arg};
	b->store->ops->update_claim(b->store, id, u.message.chat_id, text, len, on_claimed, r);
	return id;
}

static void on_pending(void *arg, int err, const char *raw)
{
	struct bot *b = arg;
	if (!raw) {
		if (err)
			log_error("bot: the journal of unfinished updates could not be read");
		return;
	}
	struct tg_update u;
	char why[160];
	if (update_parse(raw, strlen(raw), &u, why, sizeof why) != 0) {
		log_warn("bot: a journaled update cannot be decoded (%s)", why);
		return;
	}
	log_info("bot: update=%lld: resuming, unfinished by the last run", (long long)u.update_id);
	dispatch(b, &u);
}

void bot_resume(struct bot *b)
{
	b->store->ops->update_pending(b->store, on_pending, b);
}

struct identify {
	struct bot *bot;
	struct tg_call *call;
	struct event *timer;
	int failures;
	void (*done)(void *arg, int status);
	void *arg;
};

#define IDENTITY_KEY "bot_identity" /* setting of scope 0: "<id> <username>" */

static void identify_end(struct identify *id, int status)
{
	struct bot *b = id->bot;
	void (*done)(void *arg, int status) = id->done;
	void *arg = id->arg;
	b->identify = NULL;
	tg_call_cancel(id->call);
	event_free(id->timer);
	free(id);
	if (status == 0)
		log_info("bot: @%s (id %lld)", b->self_username, (long long)b->self_id);
	done(arg, status);
}

static int set_identity(struct bot *b, int64_t id, const char *username)
{
	char *copy = strdup(username);
	if (!copy)
		return -1;
	free(b->self_username);
	b->self_username = copy;
	b->self_id = id;
	return 0;
}

static void ask_me(struct identify *id);

static void on_identify_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	ask_me(arg);
}

static void retry_identify(struct identify *id, const char *why)
{
	long wait = 1L << (id->failures < 5 ? id->failures : 5);
	id->failures++;
	log_warn("bot: getMe failed (%s); retrying in %ld s", why, wait);
	struct timeval tv = {wait, 0};
	if (evtimer_add(id->timer, &tv) != 0)
		identify_end(id, -1);
}

static void on_identity_saved(void *arg, int err)
{
	(void)err; /* only a cache: the next cold start asks Telegram again */
	identify_end(arg, 0);
}

static void on_me(void *arg, const struct tg_result *res)
{
	struct identify *id = arg;
	struct bot *b = id->bot;
	id->call = NULL;
	if (!res->ok) {
		if (tg_is_token_rejected(res)) {
			identify_end(id, -1);
			return;
		}
		retry_identify(id, res->description);
		return;
	}
	const json_t *user_id = json_object_get(res->result, "id");
	const char *username = json_string_value(json_object_get(res->result, "username"));
	if (!json_is_integer(user_id) || !username) {
		log_error("bot: getMe did not say who the bot is");
		identify_end(id, -1);
		return;
	}
	if (set_identity(b, json_integer_value(user_id), username) != 0) {
		identify_end(id, -1);
		return;
	}
	char value[128];
	snprintf(value, sizeof value, "%lld %s", (long long)b->self_id, b->self_username);
	b->store->ops->setting_set(b->store, 0, IDENTITY_KEY, value, on_identity_saved, id);
}

static void ask_me(struct identify *id)
{
	id->call = tg_call(id->bot->tg, "getMe", NULL, 0, 0, 15, on_me, id);
	if (!id->call)
		retry_identify(id, "cannot start the request");
}

/* The bot id is the number before ':' in the token: a cached identity of another bot is ignored. */
static void on_cached_identity(void *arg, int err, const char *value)
{
	struct identify *id = arg;
	long long cached_id;
	char name[65];
	long long token_id = strtoll(id->bot->cfg->tg_token, NULL, 10);
	if (!err && value && sscanf(value, "%lld %64s", &cached_id, name) == 2 && cached_id == token_id &&
	    set_identity(id->bot, cached_id, name) == 0) {
		identify_end(id, 0);
		return;
	}
	ask_me(id);
}

void bot_identify(struct bot *b, bool may_use_cache, void (*done)(void *arg, int status), void *arg)
{
	struct identify *id = calloc(1, sizeof *id);
	if (!id || !(id->timer = evtimer_new(b->base, on_identify_timer, id))) {
		free(id);
		log_error("bot: out of memory");
		done(arg, -1);
		return;
	}
	id->bot = b;
	id->done = done;
	id->arg = arg;
	b->identify = id;
	if (may_use_cache)
		b->store->ops->setting_get(b->store, 0, IDENTITY_KEY, on_cached_identity, id);
	else
		ask_me(id);
}

struct abandon {
	size_t left;
	void (*done)(void *arg);
	void *arg;
};

static void on_released(void *arg, int err)
{
	struct abandon *a = arg;
	(void)err; /* logged by the store: that update is then skipped as a repeat */
	if (--a->left > 0)
		return;
	void (*done)(void *arg) = a->done;
	void *done_arg = a->arg;
	free(a);
	done(done_arg);
}

void bot_abandon(struct bot *b, void (*done)(void *arg), void *arg)
{
	size_t n = chats_busy(b->chats);
	int64_t *ids = calloc(n + 1, sizeof *ids);
	struct abandon *a = calloc(1, sizeof *a);
	if (!ids || !a) {
		log_error("bot: out of memory abandoning updates");
		chats_abandon(b->chats, NULL, 0);
		free(ids);
		free(a);
		done(arg);
		return;
	}
	n = chats_abandon(b->chats, ids, n);
	a->left = n + 1; /* one more, released below, so done cannot run before the loop ends */
	a->done = done;
	a->arg = arg;
	for (size_t i = 0; i < n; i++) {
		log_warn("bot: update=%lld: unfinished; left for Telegram to deliver again", (long long)ids[i]);
		b->store->ops->update_release(b->store, ids[i], on_released, a);
	}
	free(ids);
	on_released(a, 0);
}

void bot_hurry(struct bot *b)
{
	chats_hurry(b->chats);
}

size_t bot_busy(const struct bot *b)
{
	return chats_busy(b->chats);
}

void bot_on_idle(struct bot *b, void (*cb)(void *arg), void *arg)
{
	chats_on_idle(b->chats, cb, arg);
}

int bot_init(struct bot *b, struct event_base *base, const struct config *cfg, char *err,
	     size_t errlen)
{
	memset(b, 0, sizeof *b);
	b->base = base;
	b->cfg = cfg;
	b->token_scale = 1.0;
	b->http = http_client_new(base);
	if (b->http && http_client_set_ca_bundle(b->http, cfg->ca_bundle) != 0)
		goto oom;
	if (b->http) {
		b->tg = tg_client_new(base, b->http, cfg->tg_api_base, cfg->tg_token, &cfg->tg_pacing);
		b->llm = llm_client_new(base, b->http, cfg);
	}
	b->chats = chats_new(b);
	if (!b->http || !b->tg || !b->llm || !b->chats)
		goto oom;
	char why[256];
	if (store_open(cfg->store, base, b->http, &b->store, why, sizeof why) != 0) {
		snprintf(err, errlen, "STORE: %s", why);
		goto fail;
	}
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
fail:
	bot_free(b);
	return -1;
}

void bot_free(struct bot *b)
{
	if (b->identify) {
		tg_call_cancel(b->identify->call);
		event_free(b->identify->timer);
		free(b->identify);
	}
	chats_free(b->chats);
	store_free(b->store);
	llm_client_free(b->llm);
	tg_client_free(b->tg);
	http_client_free(b->http);
	free(b->self_username);
	memset(b, 0, sizeof *b);
}
