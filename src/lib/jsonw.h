/*
 * jsonw: writing JSON text straight into a buffer, for the bodies built on
 * every update (the model request carries the whole history). Building a
 * jansson tree and dumping it was a fifth of the bot's CPU per update
 * (bench/README.md, figure 2); jansson stays for reading and for small,
 * irregular bodies.
 */
#ifndef TGLLM_JSONW_H
#define TGLLM_JSONW_H

#include <stddef.h>

#include "lib/buf.h"

/*
 * Appends s as a quoted JSON string, escaped as jansson's json_dumps does
 * by default (UTF-8 kept, "/" not escaped). Invalid UTF-8, which JSON cannot
 * carry, becomes U+FFFD, one per bad byte. BUF_OK or a buf_error.
 */
int jsonw_string(struct buf *b, const char *s, size_t len);
/*
 * Starts a member of the object (or an element of the array) being
 * written: a comma unless it is the first (the buffer is empty or ends
 * with a bracket), then "key": (no key: NULL). The key is written as it
 * is: a name of the API, which needs no escapes. Callers write the brackets.
 */
int jsonw_member(struct buf *b, const char *key);
int jsonw_int(struct buf *b, long long v);
/*
 * Ends an object written into b: appends "}" when rc (the writing so far)
 * is BUF_OK and hands over the text; NULL when anything failed. Frees b.
 */
char *jsonw_finish_object(struct buf *b, int rc);
/* A member with its value. */
int jsonw_member_int(struct buf *b, const char *key, long long v);
int jsonw_member_string(struct buf *b, const char *key, const char *s, size_t len);

#endif
