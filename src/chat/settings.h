/*
 * settings: what a chat has chosen (/model, /system), kept in the store as
 * one setting of the chat, "chat", whose value is a small JSON object:
 * {"model":"…","system":"…"}, each member absent when the chat keeps the
 * default (OPENAI_MODEL, SYSTEM_PROMPT). Pure: no I/O.
 */
#ifndef TGLLM_CHAT_SETTINGS_H
#define TGLLM_CHAT_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

#define CHAT_SETTINGS_KEY "chat"
#define SYSTEM_MAX        3500 /* characters of a chat's system prompt: /system shows it in one message */

struct chat_settings {
	char *model;  /* NULL: the default */
	char *system; /* NULL: the default */
};

/* Reads value (NULL: nothing chosen); a value that is not such an object reads as nothing chosen. -1 when out
 * of memory. */
int chat_settings_parse(const char *value, struct chat_settings *s);
/* The value to store; NULL when out of memory. */
char *chat_settings_format(const struct chat_settings *s);
/*
 * The stored value (NULL: nothing chosen) with one choice of mine, its
 * system prompt or (is_system false) its model, put in: what a
 * store_setting_change writes, so that a choice of the other kind made
 * meanwhile elsewhere (another serverless invocation) is kept. NULL when
 * out of memory.
 */
char *chat_settings_merge(const char *value, const struct chat_settings *mine, bool is_system);
/* Replaces *field with a copy of v (NULL: the default); -1 when out of memory (unchanged). */
int chat_settings_set(char **field, const char *v);
void chat_settings_free(struct chat_settings *s);

/*
 * A system prompt as kept: control characters but newlines and tabs
 * removed, spaces around it trimmed. A new string (NULL when out of memory);
 * *len its length.
 */
char *chat_settings_clean_system(const char *text, size_t *len);

#endif
