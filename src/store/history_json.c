#include "store/history_json.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/jsonr.h"
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

struct text_turn {
	struct buf role;
	struct buf content;
	unsigned seen; /* SEEN_ROLE, SEEN_CONTENT */
};

enum { SEEN_ROLE = 1, SEEN_CONTENT = 2 };

static bool text_turn_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
                             unsigned *seen)
{
	(void)seen; /* t->seen, which outlives the object */
	struct text_turn *t = ctx;
	bool is_role = jsonr_is_key(key, len, "role");
	if (!is_role && !jsonr_is_key(key, len, "content"))
		return jsonr_skip(r, depth);
	/* A key twice refuses the text (jsonr_first_time): jansson keeps the last. */
	return jsonr_first_time(&t->seen, is_role ? SEEN_ROLE : SEEN_CONTENT) && jsonr_at(r, '"') &&
	       jsonr_string(r, is_role ? &t->role : &t->content);
}

/* One {"role","content"} entry with a known role and string content, pushed: 1, 0 or -1 as below. */
static int read_text_turn(struct jsonr *r, struct history *h, struct text_turn *t)
{
	buf_reset(&t->role);
	buf_reset(&t->content);
	t->seen = 0;
	enum turn_role role;
	if (!jsonr_at(r, '{') || !jsonr_object(r, 2, text_turn_member, t))
		return r->is_out_of_memory ? -1 : 0;
	if (t->seen != (SEEN_ROLE | SEEN_CONTENT) || turn_role_parse(buf_str(&t->role), &role) != 0)
		return 0;
	return history_push(h, role, buf_str(&t->content), t->content.len) == 0 ? 1 : -1;
}

int history_read_text_turns(struct history *h, const char *text, size_t len)
{
	struct jsonr r;
	struct text_turn t;
	size_t old_len = h->len;
	int rc = 1;
	jsonr_init(&r, text, len);
	buf_init(&t.role, 64);
	buf_init(&t.content, SIZE_MAX - 1);
	if (!jsonr_take(&r, '['))
		rc = 0;
	else if (!jsonr_take(&r, ']')) {
		do
			rc = read_text_turn(&r, h, &t);
		while (rc == 1 && jsonr_take(&r, ','));
		if (rc == 1 && !jsonr_take(&r, ']'))
			rc = 0;
	}
	if (rc == 1 && !jsonr_is_end(&r))
		rc = 0;
	buf_free(&t.role);
	buf_free(&t.content);
	/* All or nothing, as history_append_json. */
	if (rc != 1)
		while (h->len > old_len)
			free(h->turns[--h->len].content);
	return rc;
}
