/*
 * route: which updates are for the bot, and what it should do with them.
 * Pure: no I/O, no state. In groups only messages that mention the bot,
 * reply to it, or are commands for it count; the allowlist is checked only
 * for those, so strangers in a group are not told off for talking among
 * themselves.
 */
#ifndef TGLLM_ROUTE_H
#define TGLLM_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "chat/chat.h"
#include "gate/access.h"
#include "telegram/update.h"

/* Who the bot is (getMe): mentions and commands name it. */
struct route_self {
	int64_t id;
	const char *username; /* without '@' */
};

/*
 * True when u is for the bot; *job says what to do with it. False when it
 * is not, with a short reason for the log in *why. admins (TG_BOT_ADMINS)
 * may be NULL. In groups, changing the chat's model or system prompt (and
 * pressing /model's buttons) is for the people the allowlist names and the
 * admins: a group allowed by its id lets everyone talk, not steer.
 */
bool route_update(const struct tg_update *u, const struct access_list *allow, const struct access_list *admins,
                  const struct route_self *self, enum chat_job *job, const char **why);

#endif
