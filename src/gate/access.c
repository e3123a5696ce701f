#include "gate/access.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Telegram allows 5-32; the list accepts what the header promises, 1-64. */
#define USERNAME_MAX 64

struct access_list {
	bool is_everyone;
	int64_t *ids;
	size_t n_ids;
	char **usernames; /* without '@' */
	size_t n_usernames;
};

static void set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_error(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	/* A truncated reason is still a reason. */
	(void)vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_username_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
}

/* An optional '-' and one or more digits. */
static bool looks_numeric(const char *s, size_t len)
{
	size_t i = (len > 0 && s[0] == '-') ? 1 : 0;
	if (i == len)
		return false;
	for (; i < len; i++)
		if (!is_digit(s[i]))
			return false;
	return true;
}

static bool is_username(const char *s, size_t len)
{
	if (len == 0 || len > USERNAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!is_username_char(s[i]))
			return false;
	return true;
}

static int add_id(struct access_list *l, int64_t id)
{
	int64_t *ids = realloc(l->ids, (l->n_ids + 1) * sizeof *ids);
	if (!ids)
		return -1;
	l->ids = ids;
	l->ids[l->n_ids++] = id;
	return 0;
}

static int add_username(struct access_list *l, const char *name, size_t len)
{
	char **names = realloc(l->usernames, (l->n_usernames + 1) * sizeof *names);
	if (!names)
		return -1;
	l->usernames = names;
	char *copy = strndup(name, len);
	if (!copy)
		return -1;
	l->usernames[l->n_usernames++] = copy;
	return 0;
}

/* Adds one trimmed, non-empty entry; on error writes why. */
static int add_entry(struct access_list *l, const char *entry, size_t len, char *err, size_t errlen)
{
	int shown = len > 80 ? 80 : (int)len; /* enough of a junk entry to find it */

	if (len == 1 && entry[0] == '*') {
		l->is_everyone = true;
		return 0;
	}
	if (looks_numeric(entry, len)) {
		char digits[24]; /* "-9223372036854775808" and a NUL */
		if (len >= sizeof digits) {
			set_error(err, errlen, "entry '%.*s' is too large for a Telegram id", shown, entry);
			return -1;
		}
		memcpy(digits, entry, len);
		digits[len] = '\0';
		errno = 0;
		long long id = strtoll(digits, NULL, 10);
		if (errno == ERANGE) {
			set_error(err, errlen, "entry '%s' is too large for a Telegram id", digits);
			return -1;
		}
		/* 0 is nobody's id, and callers pass 0 for "unknown sender". */
		if (id == 0) {
			set_error(err, errlen, "entry '%s' is not a Telegram id", digits);
			return -1;
		}
		if (add_id(l, (int64_t)id) != 0)
			goto no_memory;
		return 0;
	}
	const char *name = entry[0] == '@' ? entry + 1 : entry;
	size_t name_len = entry[0] == '@' ? len - 1 : len;
	if (!is_username(name, name_len)) {
		set_error(err, errlen,
		          "entry '%.*s' is neither a username (1-%d letters, digits or '_', "
		          "optionally after '@') nor a numeric id",
		          shown, entry, USERNAME_MAX);
		return -1;
	}
	if (add_username(l, name, name_len) != 0)
		goto no_memory;
	return 0;

no_memory:
	set_error(err, errlen, "out of memory reading TG_BOT_CHATS");
	return -1;
}

int access_parse(const char *spec, struct access_list **out, char *err, size_t errlen)
{
	*out = NULL;
	struct access_list *l = calloc(1, sizeof *l);
	if (!l) {
		set_error(err, errlen, "out of memory reading TG_BOT_CHATS");
		return -1;
	}
	const char *p = spec ? spec : "";
	for (;;) {
		const char *end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		const char *b = p, *e = end;
		while (b < e && is_space(*b))
			b++;
		while (e > b && is_space(e[-1]))
			e--;
		if (e > b && add_entry(l, b, (size_t)(e - b), err, errlen) != 0)
			goto fail;
		if (*end == '\0')
			break;
		p = end + 1;
	}
	if (!l->is_everyone && l->n_ids == 0 && l->n_usernames == 0) {
		set_error(err, errlen,
		          "TG_BOT_CHATS is empty: list usernames or numeric ids, or '*' for "
		          "everyone");
		goto fail;
	}
	*out = l;
	return 0;

fail:
	access_free(l);
	return -1;
}

bool access_allows(const struct access_list *list, int64_t user_id, const char *username, int64_t chat_id)
{
	if (list->is_everyone)
		return true;
	for (size_t i = 0; i < list->n_ids; i++)
		if (list->ids[i] == user_id || list->ids[i] == chat_id)
			return true;
	if (!username)
		return false;
	if (username[0] == '@')
		username++;
	if (username[0] == '\0')
		return false;
	for (size_t i = 0; i < list->n_usernames; i++)
		if (strcasecmp(list->usernames[i], username) == 0)
			return true;
	return false;
}

bool access_allows_everyone(const struct access_list *list)
{
	return list->is_everyone;
}

void access_free(struct access_list *list)
{
	if (!list)
		return;
	for (size_t i = 0; i < list->n_usernames; i++)
		free(list->usernames[i]);
	free(list->usernames);
	free(list->ids);
	free(list);
}
