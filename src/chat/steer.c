/*
 * The jobs that change how a chat is answered, not what: /model (a keyboard
 * of the models on offer, or a name), its buttons, and /system. What a chat
 * chose is one setting of the chat (chat/settings.h), read and written here
 * in the chat's own queue, so two changes of one chat never interleave.
 */
#include "chat/steer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/settings.h"
#include "chat/text.h"
#include "lib/log.h"
#include "model/models.h"
#include "store/store.h"
#include "telegram/send.h"

#define PICK_PREFIX "m:" /* a model button's callback data: "m:<model>", at most 64 bytes */
#define DATA_MAX    64

static long long chat_of(const struct conversation *c)
{
	return (long long)c->u.message.chat_id;
}

/* text_get's sentence with its %s (or %d) filled in; into out. */
static void format(const struct conversation *c, enum text_id id, char *out, size_t n, const char *a,
                   const char *b)
{
	/* The formats are ours: each sentence takes the arguments its enum comment names. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-extra-args"
	snprintf(out, n, text_get(id, c->lang), a, b);
#pragma GCC diagnostic pop
}

static void on_sent(void *arg, const struct tg_result *res)
{
	struct conversation *c = arg;
	c->send_call = NULL;
	if (!res->ok)
		log_warn("chat=%lld: could not answer a command: %ld %s", chat_of(c), res->error_code,
		         res->description);
	conversation_done(c);
}

static void say(struct conversation *c, const char *text)
{
	struct tg_target t = tg_target_of(&c->u.message);
	if (!(c->send_call = tg_send_text(c->env->tg, &t, text, strlen(text), on_sent, c)))
		conversation_done(c);
}

static void say_text(struct conversation *c, enum text_id id, const char *a, const char *b)
{
	char text[SYSTEM_MAX * 4 + 512];
	format(c, id, text, sizeof text, a, b);
	say(c, text);
}

/* The text after "/command" (or "/command@bot"), spaces trimmed: "" when none. */
static const char *argument(const struct conversation *c)
{
	const char *text = c->u.message.text;
	const char *p = text + strcspn(text, " \t\n");
	return p + strspn(p, " \t\n");
}

static const char *model_of(const struct conversation *c)
{
	return c->settings.model ? c->settings.model : llm_model(c->env->llm);
}

static void on_settings_saved(void *arg, int err)
{
	struct conversation *c = arg;
	if (err) {
		say(c, text_get(TEXT_STORE_FAILED, c->lang));
		return;
	}
	c->then(c);
}

static char *put_choice(void *arg, const char *value)
{
	struct conversation *c = arg;
	return chat_settings_merge(value, &c->settings, c->is_system_chosen);
}

/* Stores the choice made in c->settings, then goes on with next (the user is told the store failed instead). */
static void save(struct conversation *c, bool is_system, void (*next)(struct conversation *c))
{
	c->then = next;
	c->is_system_chosen = is_system;
	store_setting_change(c->env->store, c->u.message.chat_id, CHAT_SETTINGS_KEY, put_choice, c,
	                     on_settings_saved, c);
}

/* Reads the chat's settings into c->settings, then next; the user is told when the store fails. */
static void on_settings(void *arg, int err, const char *value)
{
	struct conversation *c = arg;
	if (err || chat_settings_parse(value, &c->settings) != 0) {
		say(c, text_get(TEXT_STORE_FAILED, c->lang));
		return;
	}
	c->then(c);
}

static void with_settings(struct conversation *c, void (*next)(struct conversation *c))
{
	c->then = next;
	store_setting_get(c->env->store, c->u.message.chat_id, CHAT_SETTINGS_KEY, on_settings, c);
}

/* ---- /model ---- */

/* The keyboard: a button a model whose data fits, the chat's marked. */
static size_t buttons_of(const struct conversation *c, const char *const *names, size_t n,
                         struct tg_button *buttons, char (*labels)[DATA_MAX + 8], char (*data)[DATA_MAX + 1])
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (strlen(PICK_PREFIX) + strlen(names[i]) > DATA_MAX)
			continue; /* still reachable as /model NAME */
		bool is_current = strcmp(names[i], model_of(c)) == 0;
		snprintf(labels[k], sizeof labels[k], "%s%.64s", is_current ? "✓ " : "", names[i]);
		snprintf(data[k], sizeof data[k], PICK_PREFIX "%s", names[i]);
		buttons[k] = (struct tg_button){labels[k], data[k]};
		k++;
	}
	return k;
}

static bool offers(const char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

static void on_switched(struct conversation *c)
{
	say_text(c, TEXT_MODEL_SET, model_of(c), NULL);
}

static void switch_to(struct conversation *c, const char *name, void (*next)(struct conversation *c))
{
	/* The default is no choice at all: a later OPENAI_MODEL reaches the chat. */
	if (chat_settings_set(&c->settings.model, strcmp(name, llm_model(c->env->llm)) ? name : NULL) != 0) {
		say(c, text_get(TEXT_STORE_FAILED, c->lang));
		return;
	}
	save(c, false, next);
}

static void on_models_for_command(void *arg, const char *const *names, size_t n)
{
	struct conversation *c = arg;
	const char *name = argument(c);
	if (name[0]) {
		if (!offers(names, n, name)) {
			say_text(c, TEXT_MODEL_UNKNOWN, name, NULL);
			return;
		}
		switch_to(c, name, on_switched);
		return;
	}
	struct tg_button buttons[MODELS_MAX];
	char labels[MODELS_MAX][DATA_MAX + 8], data[MODELS_MAX][DATA_MAX + 1];
	size_t k = buttons_of(c, names, n, buttons, labels, data);
	char text[512];
	format(c, TEXT_MODEL_SHOW, text, sizeof text, model_of(c), NULL);
	struct tg_target t = tg_target_of(&c->u.message);
	if (!(c->send_call = tg_send_keyboard(c->env->tg, &t, text, buttons, k, on_sent, c)))
		conversation_done(c);
}

static void ask_models(struct conversation *c, model_list_cb cb)
{
	if (model_list_get(c->env->models, cb, c) != 0) {
		log_error("chat=%lld: out of memory listing models", chat_of(c));
		conversation_done(c);
	}
}

static void model_command(struct conversation *c)
{
	ask_models(c, on_models_for_command);
}

/* ---- /model's buttons ---- */

static void on_keyboard_edited(void *arg, const struct tg_result *res)
{
	struct conversation *c = arg;
	c->send_call = NULL;
	/* "message is not modified": the same choice pressed twice. */
	if (!res->ok && !strstr(res->description, "not modified"))
		log_warn("chat=%lld: could not show the model chosen: %ld %s", chat_of(c), res->error_code,
		         res->description);
	conversation_done(c);
}

static void on_answered(void *arg, const struct tg_result *res)
{
	struct conversation *c = arg;
	c->send_call = NULL;
	if (!res->ok)
		log_debug("chat=%lld: answerCallbackQuery: %ld %s", chat_of(c), res->error_code,
		          res->description);
	c->then(c);
}

/* Ends the button's spinner with text (NULL: none), then next. */
static void answer_button(struct conversation *c, const char *text, void (*next)(struct conversation *c))
{
	c->then = next;
	if (!(c->send_call = tg_answer_callback(c->env->tg, c->u.callback_id, text, on_answered, c)))
		conversation_done(c);
}

/* The message with the buttons now shows the choice. */
static void on_models_for_edit(void *arg, const char *const *names, size_t n)
{
	struct conversation *c = arg;
	struct tg_button buttons[MODELS_MAX];
	char labels[MODELS_MAX][DATA_MAX + 8], data[MODELS_MAX][DATA_MAX + 1];
	size_t k = buttons_of(c, names, n, buttons, labels, data);
	char text[512];
	format(c, TEXT_MODEL_SHOW, text, sizeof text, model_of(c), NULL);
	const struct tg_message *m = &c->u.message;
	if (!(c->send_call = tg_edit_keyboard(c->env->tg, m->chat_id, m->message_id, text, buttons, k,
	                                      on_keyboard_edited, c)))
		conversation_done(c);
}

static void edit_keyboard(struct conversation *c)
{
	ask_models(c, on_models_for_edit);
}

static void on_picked_saved(struct conversation *c)
{
	char text[160];
	format(c, TEXT_MODEL_PICKED, text, sizeof text, model_of(c), NULL);
	answer_button(c, text, edit_keyboard);
}

static void on_models_for_pick(void *arg, const char *const *names, size_t n)
{
	struct conversation *c = arg;
	const char *name = c->u.callback_data + strlen(PICK_PREFIX);
	if (!offers(names, n, name)) {
		answer_button(c, text_get(TEXT_BUTTON_STALE, c->lang), conversation_done);
		return;
	}
	switch_to(c, name, on_picked_saved);
}

static void pick_with_settings(struct conversation *c)
{
	ask_models(c, on_models_for_pick);
}

static void pick(struct conversation *c)
{
	const char *data = c->u.callback_data;
	if (!data || strncmp(data, PICK_PREFIX, strlen(PICK_PREFIX)) != 0) {
		log_info("chat=%lld: a button with data this bot does not know", chat_of(c));
		answer_button(c, text_get(TEXT_BUTTON_STALE, c->lang), conversation_done);
		return;
	}
	with_settings(c, pick_with_settings);
}

/* ---- /system ---- */

/* UTF-8 characters in s: the bytes that do not continue one. */
static size_t characters(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += ((unsigned char)s[i] & 0xC0) != 0x80;
	return n;
}

static void show_system(struct conversation *c)
{
	const char *prompt = c->settings.system ? c->settings.system : c->env->system_prompt;
	if (!prompt)
		say(c, text_get(TEXT_SYSTEM_NONE, c->lang));
	else
		say_text(c, TEXT_SYSTEM_SHOW, prompt, NULL);
}

static void on_system_saved(struct conversation *c)
{
	say(c, text_get(c->settings.system ? TEXT_SYSTEM_SET : TEXT_SYSTEM_RESET, c->lang));
}

static void system_with_settings(struct conversation *c)
{
	const char *arg = argument(c);
	if (!arg[0]) {
		show_system(c);
		return;
	}
	size_t len;
	char *prompt = strcmp(arg, "reset") == 0 ? NULL : chat_settings_clean_system(arg, &len);
	if (prompt && characters(prompt, len) > SYSTEM_MAX) {
		free(prompt);
		char limit[16];
		snprintf(limit, sizeof limit, "%d", SYSTEM_MAX);
		say_text(c, TEXT_SYSTEM_TOO_LONG, limit, NULL);
		return;
	}
	if (strcmp(arg, "reset") != 0 && (!prompt || !prompt[0])) {
		free(prompt);
		show_system(c);
		return;
	}
	free(c->settings.system);
	c->settings.system = prompt;
	save(c, true, on_system_saved);
}

/* ---- the jobs ---- */

void steer_start(struct conversation *c)
{
	switch (c->job) {
	case CHAT_MODEL:
		with_settings(c, model_command);
		return;
	case CHAT_SYSTEM:
		with_settings(c, system_with_settings);
		return;
	case CHAT_PICK:
		pick(c);
		return;
	case CHAT_NOT_PERMITTED:
		if (c->u.kind == TG_UPDATE_CALLBACK)
			answer_button(c, text_get(TEXT_NOT_PERMITTED, c->lang), conversation_done);
		else
			say(c, text_get(TEXT_NOT_PERMITTED, c->lang));
		return;
	default:
		conversation_done(c);
		return;
	}
}
