#include "store/history_json.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/utf8.h"

static char *utf8_repair(const char *s, size_t len, size_t *out_len)
{
	static const char replacement[] = "\xEF\xBF\xBD";
	struct buf b;
	buf_init(&b, SIZE_MAX - 1);
	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq_len((const unsigned char *)s + i, len - i);
		int rc = n ? buf_append(&b, s + i, n) : buf_append(&b, replacement, 3);
		if (rc != BUF_OK) {
			buf_free(&b);
			return NULL;
		}
		i += n ? n : 1;
	}
	*out_len = b.len;
	return buf_take(&b);
}

static json_t *json_text(const char *s, size_t len)
{
	json_t *j = json_stringn(s, len);
	if (j)
		return j;
	size_t fixed_len = 0;
	char *fixed = utf8_repair(s, len, &fixed_len);
	if (!fixed)
		return NULL;
	j = json_stringn(fixed, fixed_len);
	free(fixed);
	return j;
}

/* {"role": ..., "content": ...}, or NULL when out of memory. */
static json_t *turn_to_json(const struct turn *t)
{
	json_t *obj = json_object();
	if (!obj)
		return NULL;
	/* json_object_set_new takes the value even when it fails (or is NULL). */
	/* A turn of parts was written by us (or read from such an object): its text is a JSON array. */
	json_t *content = t->is_parts ? json_loadb(t->content, t->len, 0, NULL) : NULL;
	if (!content)
		content = json_text(t->content, t->len);
	if (json_object_set_new(obj, "role", json_string(turn_role_name(t->role))) != 0 ||
	    json_object_set_new(obj, "content", content) != 0) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

json_t *history_to_json(const struct history *h, size_t from)
{
	json_t *arr = json_array();
	if (!arr)
		return NULL;
	for (size_t i = from; i < h->len; i++) {
		/* json_array_append_new takes the value even when it fails (or is NULL). */
		if (json_array_append_new(arr, turn_to_json(&h->turns[i])) != 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

static bool is_known_part(const json_t *part)
{
	const char *type = json_string_value(json_object_get(part, "type"));
	if (!type)
		return false;
	if (strcmp(type, "text") == 0)
		return json_is_string(json_object_get(part, "text"));
	if (strcmp(type, "image_url") == 0)
		return json_is_string(json_object_get(json_object_get(part, "image_url"), "url"));
	if (strcmp(type, "file") == 0)
		return json_is_object(json_object_get(part, "file"));
	return false;
}

/*
 * Appends a turn whose content is an array of parts, as its compact JSON
 * text: the text, image and file parts, in their order (others, which a
 * model may refuse, are left out). Returns 1 when no part is one of those
 * (nothing appended), 0 when appended, -1 when out of memory.
 */
static int push_parts(struct history *h, enum turn_role role, const json_t *parts)
{
	json_t *kept = json_array();
	if (!kept)
		return -1;
	int rc = 1;
	for (size_t i = 0; i < json_array_size(parts); i++) {
		json_t *part = json_array_get(parts, i);
		if (is_known_part(part) && json_array_append(kept, part) != 0) {
			rc = -1;
			goto out;
		}
	}
	if (json_array_size(kept) == 0)
		goto out;
	char *text = json_dumps(kept, JSON_COMPACT);
	rc = text ? history_push_parts(h, role, text, strlen(text)) : -1;
	free(text);
out:
	json_decref(kept);
	return rc;
}

int history_append_json(struct history *h, const json_t *arr)
{
	if (!json_is_array(arr))
		return -1;
	size_t old_len = h->len;
	int skipped = 0;
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *entry = json_array_get(arr, i);
		enum turn_role role;
		const char *name = json_string_value(json_object_get(entry, "role"));
		const json_t *content = json_object_get(entry, "content");
		int rc = 1; /* skipped unless pushed */
		if (name && turn_role_parse(name, &role) == 0) {
			if (json_is_string(content))
				rc = history_push(h, role, json_string_value(content),
				                  json_string_length(content));
			else if (json_is_array(content))
				rc = push_parts(h, role, content);
		}
		if (rc < 0)
			goto no_memory;
		if (rc > 0 && skipped < INT_MAX)
			skipped++;
	}
	return skipped;

no_memory:
	/* All or nothing: a half-read history would silently lose turns when saved. */
	while (h->len > old_len)
		free(h->turns[--h->len].content);
	return -1;
}
