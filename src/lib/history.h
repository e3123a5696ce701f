/*
 * history: a conversation as a list of turns, and trimming it to the model's
 * context window.
 *
 * The JSON form is the original bot's layout: an array of
 * {"role": "...", "content": "..."} objects, as the chat completions API takes.
 * A history owns its turns and their strings.
 */
#ifndef TGLLM_HISTORY_H
#define TGLLM_HISTORY_H

#include <jansson.h>
#include <stddef.h>

#include "lib/buf.h"

enum turn_role { TURN_SYSTEM, TURN_USER, TURN_ASSISTANT };

struct turn {
	enum turn_role role;
	char *content;
	size_t len; /* bytes of content, excluding the NUL */
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
/* Removes the first n turns (all of them when n >= len). */
void history_drop_front(struct history *h, size_t n);
void history_free(struct history *h);

/*
 * A cheap token estimate for one message of the chat API: its UTF-8 text plus
 * the per-message overhead (about 4 tokens). Deliberately pessimistic about
 * bytes per token (counts ~3 bytes of UTF-8 as one token) so that
 * Cyrillic text is not underestimated: 4 + ceil(len / 3). The caller scales
 * it with a calibration factor learned from the API's reported usage.
 */
size_t history_estimate_tokens(const char *content, size_t len);

/*
 * Index of the first turn to send so that turns [index, len) fit within
 * budget tokens, each turn costing history_estimate_tokens() * scale.
 * Keeps the newest turns; never starts the kept part with an assistant turn
 * (a reply without its question confuses models), so the index may go one
 * further. Returns h->len when not even the last turn fits. A scale that is
 * not a positive finite number is taken as 1.
 */
size_t history_fit(const struct history *h, size_t budget, double scale);

/*
 * The turns [from, len) as a JSON array in the API's / original bot's layout
 * (new reference; NULL when out of memory). Invalid UTF-8 in a content, which
 * JSON cannot carry, becomes U+FFFD.
 */
json_t *history_to_json(const struct history *h, size_t from);
/*
 * Appends turns as the same JSON array, written directly (the model request
 * is built on every update). BUF_OK or a buf_error.
 */
int history_write_json(struct buf *out, const struct turn *turns, size_t n);
/*
 * Appends the turns of a JSON array in that layout. Entries that are not
 * objects with a known "role" and a string "content" are skipped (content that
 * is an array of parts takes the concatenated "text" parts; an array without
 * one is skipped too). Returns the number of skipped entries, or -1 when arr
 * is not an array or memory ran out (then nothing is appended).
 */
int history_append_json(struct history *h, const json_t *arr);

#endif
