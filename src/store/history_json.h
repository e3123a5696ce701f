/*
 * history_json: a history as the original bot keeps it in object storage,
 * `<chat_id>.json`, a JSON array of {"role","content"} objects, read and
 * written as jansson trees (the S3 store appends to what it read, keeping
 * entries it does not understand as they are).
 */
#ifndef TGLLM_HISTORY_JSON_H
#define TGLLM_HISTORY_JSON_H

#include <jansson.h>

#include "lib/history.h"

/*
 * The turns [from, len) as a JSON array (new reference; NULL when out of
 * memory). Invalid UTF-8 in a content, which JSON cannot carry, becomes U+FFFD.
 */
json_t *history_to_json(const struct history *h, size_t from);
/*
 * Appends the turns of a JSON array in that layout. Entries that are not
 * objects with a known "role" and a string "content" are skipped (content that
 * is an array of parts is kept as such, turn.is_parts, with its text, image_url
 * and file parts; an array without one is skipped too). Returns the number of skipped entries, or -1 when arr
 * is not an array or memory ran out (then nothing is appended).
 */
int history_append_json(struct history *h, const json_t *arr);
/*
 * history_append_json for the text of such an array, read without building
 * a tree (jsonr): the common history, text turns only, read at every load.
 * Returns 1 when read; 0, appending nothing, when the text holds anything
 * else (content parts, an entry to skip, what jsonr refuses), which jansson
 * then reads; -1 when out of memory.
 */
int history_read_text_turns(struct history *h, const char *text, size_t len);

#endif
