/*
 * access: the allowlist from TG_BOT_CHATS.
 *
 * A comma-separated list; each entry is a username (with or without '@',
 * matched case-insensitively), a numeric user id, a numeric chat id (groups
 * are negative, e.g. -1001234567890), or '*' for everyone. Whitespace around
 * entries is ignored; empty entries are skipped. Id 0 is refused: callers pass
 * 0 for "no sender", which must never match.
 */
#ifndef TGLLM_ACCESS_H
#define TGLLM_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct access_list;

/*
 * Parses spec. On error returns -1 and writes a one-line reason to err
 * (e.g. "entry 'bad name!' is neither a username nor a numeric id").
 * A list with no entries at all is an error too ("TG_BOT_CHATS is empty").
 * Usernames are 1-64 characters of [A-Za-z0-9_].
 */
int access_parse(const char *spec, struct access_list **out, char *err, size_t errlen);
/*
 * True when the sender or the chat is allowed. username may be NULL (users
 * without a username are matched by id only).
 */
bool access_allows(const struct access_list *list, int64_t user_id, const char *username,
		   int64_t chat_id);
/* True when the list contains '*'. */
bool access_allows_everyone(const struct access_list *list);
void access_free(struct access_list *list);

#endif
