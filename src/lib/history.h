/*
 * history: a conversation as a list of turns, the data every stage shares
 * (the store keeps it, the model reads it, the conversation adds to it).
 *
 * The JSON form is the original bot's layout: an array of
 * {"role": "...", "content": ...} objects, as the chat completions API takes,
 * where content is a string or an array of content parts
 * ({"type":"text"}, {"type":"image_url"}, {"type":"file"}: a photo, a PDF).
 * A history owns its turns and their strings. docs/internals/MEDIA.md says
 * where the bytes of a picture live.
 */
#ifndef TGLLM_HISTORY_H
#define TGLLM_HISTORY_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

enum turn_role { TURN_SYSTEM, TURN_USER, TURN_ASSISTANT };

struct turn {
	enum turn_role role;
	char *content;
	size_t len;    /* bytes of content, excluding the NUL */
	bool is_parts; /* content is the compact JSON text of an array of content parts, not text */
};

struct history {
	struct turn *turns;
	size_t len;
	size_t cap;
};

#define HISTORY_INIT {NULL, 0, 0}

/* "system", "user", "assistant". */
const char *turn_role_name(enum turn_role role);
/* Returns -1 for any other name. */
int turn_role_parse(const char *name, enum turn_role *out);

/* Copies content; returns 0, or -1 when out of memory. */
int history_push(struct history *h, enum turn_role role, const char *content, size_t len);
/* history_push for content that is the JSON text of an array of content parts (is_parts). */
int history_push_parts(struct history *h, enum turn_role role, const char *json, size_t len);
/* Removes the first n turns (all of them when n >= len). */
void history_drop_front(struct history *h, size_t n);
void history_free(struct history *h);

/*
 * Appends turns as the same JSON array, written directly (the model request
 * is built on every update); a turn of parts goes as its array, as it is.
 * BUF_OK or a buf_error.
 */
int history_write_json(struct buf *out, const struct turn *turns, size_t n);

#endif
