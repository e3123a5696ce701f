/*
 * jsonr: a strict JSON reader for the few shapes read on every update (the
 * model's stream chunks, Telegram's Updates), without building a tree.
 * Building one with jansson was the largest cost per update (bench/README.md).
 *
 * The reader accepts exactly the grammar jansson accepts and refuses the
 * rest, together with whatever its callers cannot be sure of reading as
 * jansson would: keys written with escapes, numbers with an exponent or more
 * than 18 digits, \u0000, nesting deeper than JSONR_MAX_DEPTH. A caller that
 * meets a refusal hands the text to jansson, so a reading either means what
 * jansson's would or does not happen.
 *
 * Every function returns false when it refuses; the position is then
 * meaningless. Whitespace before a value is skipped by the function reading it.
 */
#ifndef TGLLM_JSONR_H
#define TGLLM_JSONR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib/buf.h"

#define JSONR_MAX_DEPTH 32

struct jsonr {
	const unsigned char *p;
	const unsigned char *end;
	bool is_out_of_memory; /* a string could not be appended to its buffer */
};

/*
 * One member of an object: key holds the key's raw bytes (no escapes),
 * depth is the member value's, seen the bits first_time set for this object.
 */
typedef bool (*jsonr_member_fn)(struct jsonr *r, void *ctx, const unsigned char *key, size_t len,
				int depth, unsigned *seen);

void jsonr_init(struct jsonr *r, const char *text, size_t len);

/* The helpers below run for every token: inline, as they were when one reader had them. */
static inline void jsonr_skip_space(struct jsonr *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
		r->p++;
}

/* True when only whitespace is left. */
static inline bool jsonr_is_end(struct jsonr *r)
{
	jsonr_skip_space(r);
	return r->p == r->end;
}

/* True when the next value starts with c (nothing is taken). */
static inline bool jsonr_at(struct jsonr *r, unsigned char c)
{
	jsonr_skip_space(r);
	return r->p < r->end && *r->p == c;
}

/* Takes c, the next byte after whitespace. */
static inline bool jsonr_take(struct jsonr *r, unsigned char c)
{
	if (!jsonr_at(r, c))
		return false;
	r->p++;
	return true;
}

/* A string, unescaped (valid UTF-8, no NUL) and appended to `to` unless it is NULL. */
bool jsonr_string(struct jsonr *r, struct buf *to);
/* A number; *value is set and *is_integer true when it has no fraction (jansson's json_is_integer). */
bool jsonr_number(struct jsonr *r, int64_t *value, bool *is_integer);
/* true or false. */
bool jsonr_boolean(struct jsonr *r, bool *value);
/* An object whose members go to fn; keys written with escapes are refused. */
bool jsonr_object(struct jsonr *r, int depth, jsonr_member_fn fn, void *ctx);
/* Any value, checked and passed over. */
bool jsonr_skip(struct jsonr *r, int depth);
/* Any value, passed over as jsonr_skip does; *start and *len give its text. */
bool jsonr_span(struct jsonr *r, int depth, const char **start, size_t *len);

/*
 * A high surrogate one text ends a string with, for the next to join: some
 * OpenAI-compatible servers split an emoji's UTF-16 pair across two events.
 */
struct jsonr_carry {
	unsigned high;   /* in: what the previous text left (0: none); out: what this text leaves */
	bool was_joined; /* out: the high given was joined with the low surrogate starting a string */
};

/*
 * A copy of JSON text that jansson refuses only for what is not text in its
 * strings, mended: bytes that are not UTF-8, \u0000 and lone surrogate
 * escapes become U+FFFD. With carry, a lone high surrogate that ends a string
 * is taken out and left in carry->high, and a carried one is joined with a
 * lone low surrogate that starts a string. NULL when there was nothing to
 * mend (the text is refused for another reason), or out of memory.
 */
char *jsonr_mend(const char *text, size_t len, size_t *out_len, struct jsonr_carry *carry);

static inline bool jsonr_is_key(const unsigned char *key, size_t len, const char *name)
{
	return len == strlen(name) && memcmp(key, name, len) == 0;
}

/*
 * Marks a key of interest as seen in *seen; false the second time, which
 * refuses the text: jansson keeps the last of duplicate keys.
 */
static inline bool jsonr_first_time(unsigned *seen, unsigned bit)
{
	if (*seen & bit)
		return false;
	*seen |= bit;
	return true;
}

#endif
