#include "telegram/commands.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/jsonw.h"
#include "lib/log.h"

#define MENU_TIMEOUT_S 15

struct tg_menu_sync {
	struct tg_client *tg;
	const char *language;
	const struct tg_command *commands;
	size_t n;
	struct tg_call *call;
	void (*done)(void *arg, bool ok);
	void *arg;
};

static void end(struct tg_menu_sync *s, bool ok)
{
	s->call = NULL;
	void (*done)(void *, bool) = s->done;
	void *arg = s->arg;
	free(s);
	done(arg, ok);
}

/* {["commands":[…],]["language_code":…]}; NULL when out of memory. */
static char *params(const struct tg_menu_sync *s, bool with_commands)
{
	struct buf b;
	buf_init(&b, SIZE_MAX - 1);
	int rc = buf_append_str(&b, "{");
	if (rc == BUF_OK && with_commands) {
		rc = jsonw_member(&b, "commands");
		if (rc == BUF_OK)
			rc = buf_append_str(&b, "[");
		for (size_t i = 0; i < s->n && rc == BUF_OK; i++) {
			const struct tg_command *c = &s->commands[i];
			rc = jsonw_member(&b, NULL);
			if (rc == BUF_OK)
				rc = buf_append_str(&b, "{");
			if (rc == BUF_OK)
				rc = jsonw_member_string(&b, "command", c->command, strlen(c->command));
			if (rc == BUF_OK)
				rc = jsonw_member_string(&b, "description", c->description,
				                         strlen(c->description));
			if (rc == BUF_OK)
				rc = buf_append_str(&b, "}");
		}
		if (rc == BUF_OK)
			rc = buf_append_str(&b, "]");
	}
	if (rc == BUF_OK && s->language[0])
		rc = jsonw_member_string(&b, "language_code", s->language, strlen(s->language));
	return jsonw_finish_object(&b, rc);
}

static void on_set(void *arg, const struct tg_result *res)
{
	struct tg_menu_sync *s = arg;
	if (res->ok)
		log_info("tg: the command menu%s%s is set", s->language[0] ? " for " : "", s->language);
	else
		log_warn("tg: setMyCommands%s%s failed: %ld %s", s->language[0] ? " for " : "", s->language,
		         res->error_code, res->description);
	end(s, res->ok);
}

/* Whether Telegram's list is ours, command by command, in order. */
static bool is_same(const struct tg_menu_sync *s, const json_t *list)
{
	if (!json_is_array(list) || json_array_size(list) != s->n)
		return false;
	for (size_t i = 0; i < s->n; i++) {
		const json_t *c = json_array_get(list, i);
		const char *command = json_string_value(json_object_get(c, "command"));
		const char *description = json_string_value(json_object_get(c, "description"));
		if (!command || !description || strcmp(command, s->commands[i].command) != 0 ||
		    strcmp(description, s->commands[i].description) != 0)
			return false;
	}
	return true;
}

static void on_got(void *arg, const struct tg_result *res)
{
	struct tg_menu_sync *s = arg;
	if (res->ok && is_same(s, res->result)) {
		end(s, true);
		return;
	}
	if (!res->ok)
		log_debug("tg: getMyCommands: %ld %s; setting the menu anyway", res->error_code,
		          res->description);
	char *p = params(s, true);
	if (!p || !(s->call = tg_call(s->tg, "setMyCommands", p, 0, 0, MENU_TIMEOUT_S, on_set, s)))
		end(s, false);
}

struct tg_menu_sync *tg_menu_sync(struct tg_client *tg, const char *language,
                                  const struct tg_command *commands, size_t n,
                                  void (*done)(void *arg, bool ok), void *arg)
{
	struct tg_menu_sync *s = malloc(sizeof *s);
	if (!s)
		return NULL;
	*s = (struct tg_menu_sync){tg, language, commands, n, NULL, done, arg};
	char *p = params(s, false);
	if (!p || !(s->call = tg_call(tg, "getMyCommands", p, 0, 0, MENU_TIMEOUT_S, on_got, s))) {
		free(s);
		return NULL;
	}
	return s;
}

void tg_menu_cancel(struct tg_menu_sync *s)
{
	if (!s)
		return;
	tg_call_cancel(s->call);
	free(s);
}
