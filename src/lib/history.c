#include "lib/history.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jsonw.h"

static const char *const role_names[] = {
    [TURN_SYSTEM] = "system",
    [TURN_USER] = "user",
    [TURN_ASSISTANT] = "assistant",
};

const char *turn_role_name(enum turn_role role)
{
	/* Only a bug passes another value; indexing past the table would be worse. */
	if ((size_t)role >= sizeof role_names / sizeof role_names[0])
		return "user";
	return role_names[role];
}

int turn_role_parse(const char *name, enum turn_role *out)
{
	for (size_t i = 0; i < sizeof role_names / sizeof role_names[0]; i++) {
		if (strcmp(name, role_names[i]) == 0) {
			*out = (enum turn_role)i;
			return 0;
		}
	}
	return -1;
}

int history_push(struct history *h, enum turn_role role, const char *content, size_t len)
{
	if (h->len == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 16;
		if (cap < h->cap || cap > SIZE_MAX / sizeof *h->turns)
			return -1;
		struct turn *turns = realloc(h->turns, cap * sizeof *turns);
		if (!turns)
			return -1;
		h->turns = turns;
		h->cap = cap;
	}
	if (len == SIZE_MAX)
		return -1;
	char *copy = malloc(len + 1);
	if (!copy)
		return -1;
	if (len)
		memcpy(copy, content, len);
	copy[len] = '\0';
	h->turns[h->len++] = (struct turn){role, copy, len, false};
	return 0;
}

int history_push_parts(struct history *h, enum turn_role role, const char *json, size_t len)
{
	if (history_push(h, role, json, len) != 0)
		return -1;
	h->turns[h->len - 1].is_parts = true;
	return 0;
}

void history_drop_front(struct history *h, size_t n)
{
	if (n > h->len)
		n = h->len;
	for (size_t i = 0; i < n; i++)
		free(h->turns[i].content);
	if (n < h->len)
		memmove(h->turns, h->turns + n, (h->len - n) * sizeof *h->turns);
	h->len -= n;
}

void history_free(struct history *h)
{
	history_drop_front(h, h->len);
	free(h->turns);
	*h = (struct history)HISTORY_INIT;
}

int history_write_json(struct buf *out, const struct turn *turns, size_t n)
{
	int rc = buf_append(out, "[", 1);
	for (size_t i = 0; i < n && rc == BUF_OK; i++) {
		rc = buf_append_str(out, i ? ",{\"role\":\"" : "{\"role\":\"");
		if (rc == BUF_OK)
			rc = buf_append_str(out, turn_role_name(turns[i].role));
		if (rc == BUF_OK)
			rc = buf_append_str(out, "\",\"content\":");
		if (rc == BUF_OK)
			rc = turns[i].is_parts ? buf_append(out, turns[i].content, turns[i].len)
			                       : jsonw_string(out, turns[i].content, turns[i].len);
		if (rc == BUF_OK)
			rc = buf_append(out, "}", 1);
	}
	return rc == BUF_OK ? buf_append(out, "]", 1) : rc;
}
