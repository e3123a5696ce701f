#include "gate/route.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static bool is_username_char(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

/* "@name" in text as a whole word, case-insensitively. */
static bool mentions(const char *text, const char *username)
{
	size_t n = strlen(username);
	if (n == 0)
		return false;
	for (const char *p = strchr(text, '@'); p; p = strchr(p + 1, '@')) {
		if (strncasecmp(p + 1, username, n) == 0 && !is_username_char(p[1 + n]))
			return true;
	}
	return false;
}

struct command {
	char name[33];
	char target[65]; /* the "@bot" part, "" when absent */
};

/* Parses "/name[@target]" at the start of text; false when text is not a command. */
static bool parse_command(const char *text, struct command *cmd)
{
	if (text[0] != '/')
		return false;
	size_t i = 1, n = 0;
	while (is_username_char(text[i]) && n < sizeof cmd->name - 1)
		cmd->name[n++] = (char)tolower((unsigned char)text[i++]);
	cmd->name[n] = '\0';
	if (n == 0)
		return false;
	n = 0;
	if (text[i] == '@') {
		i++;
		while (is_username_char(text[i]) && n < sizeof cmd->target - 1)
			cmd->target[n++] = text[i++];
	}
	cmd->target[n] = '\0';
	return text[i] == '\0' || isspace((unsigned char)text[i]);
}

/* The job a command asks for; CHAT_REPLY for one the bot does not know (the model may). */
static enum chat_job command_job(const char *name)
{
	static const struct {
		const char *name;
		enum chat_job job;
	} commands[] = {
	    {"start", CHAT_START},
	    {"help", CHAT_HELP},
	    {"new", CHAT_NEW},
	    {"model", CHAT_MODEL},
	    {"system", CHAT_SYSTEM},
	    {"retry", CHAT_RETRY},
	    {"usage", CHAT_USAGE},
	    {"image", CHAT_IMAGE},
	    {"img", CHAT_IMAGE},
	};
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(name, commands[i].name) == 0)
			return commands[i].job;
	return CHAT_REPLY;
}

static bool is_group(const struct tg_message *m)
{
	return m->chat_type == TG_CHAT_GROUP || m->chat_type == TG_CHAT_SUPERGROUP;
}

/* Why an update is not for the bot whoever sent it, or NULL. */
static const char *why_not_for_bot(const struct tg_update *u)
{
	const struct tg_message *m = &u->message;
	if (u->kind != TG_UPDATE_MESSAGE && u->kind != TG_UPDATE_CALLBACK)
		return "not a message";
	if (!m->has_from)
		return "no sender";
	if (m->from.is_bot)
		return "sent by a bot";
	if (u->kind == TG_UPDATE_MESSAGE && !m->text && m->media.kind == TG_MEDIA_NONE)
		return "no text";
	if (!is_group(m) && m->chat_type != TG_CHAT_PRIVATE)
		return "not a private chat or a group";
	return NULL;
}

/*
 * Whether the sender may change what the chat's model is and how it is told
 * to behave: anyone allowed, in a private chat; in a group, a person the
 * allowlist names (not the whole group by its id) or an admin.
 */
static bool may_steer(const struct tg_message *m, const struct access_list *allow,
                      const struct access_list *admins)
{
	const struct tg_user *f = &m->from;
	if (!is_group(m))
		return access_allows(allow, f->id, f->username, m->chat_id);
	return access_allows(allow, f->id, f->username, 0) ||
	       (admins && access_allows(admins, f->id, f->username, 0));
}

/* Text after the command: whether there is any. */
static bool has_argument(const char *text)
{
	const char *p = text + strcspn(text, " \t\n");
	return p[strspn(p, " \t\n")] != '\0';
}

/* In a group: whether the message mentions the bot, replies to it, or is a command for it. */
static bool is_addressed(const struct tg_message *m, const char *text, const struct route_self *self,
                         bool is_command, const struct command *cmd, enum chat_job job)
{
	if (is_command && (cmd->target[0] || (job != CHAT_REPLY && job != CHAT_MEDIA)))
		return true;
	if (mentions(text, self->username))
		return true;
	if (m->reply_to_from_id != 0 && m->reply_to_from_id == self->id)
		return true;
	for (size_t i = 0; i < m->n_entities; i++)
		if (strcmp(m->entities[i].type, "text_mention") == 0 && m->entities[i].user_id == self->id)
			return true;
	return false;
}

bool route_update(const struct tg_update *u, const struct access_list *allow, const struct access_list *admins,
                  const struct route_self *self, enum chat_job *job, const char **why)
{
	const struct tg_message *m = &u->message;
	if (u->kind == TG_UPDATE_STOP) {
		/* Only what runs in that chat, for that draft, is stopped: nothing to allow or refuse. */
		*job = CHAT_STOP;
		return true;
	}
	*why = why_not_for_bot(u);
	if (*why)
		return false;
	if (u->kind == TG_UPDATE_CALLBACK && u->callback_data && strncmp(u->callback_data, "s:", 2) == 0) {
		*job = CHAT_STOP; /* who may stop (the asker, an admin) is the running answer's business */
		return true;
	}
	if (u->kind == TG_UPDATE_CALLBACK) {
		/* Buttons are only on the bot's own messages; a stranger's press is answered, not refused aloud. */
		*job = may_steer(m, allow, admins) ? CHAT_PICK : CHAT_NOT_PERMITTED;
		return true;
	}
	/* A file's caption addresses the bot as a text does; the file is the job whatever it says. */
	const char *text = m->text ? m->text : m->caption ? m->caption : "";
	struct command cmd;
	bool is_command = parse_command(text, &cmd);
	if (is_command && cmd.target[0] && strcasecmp(cmd.target, self->username) != 0) {
		*why = "a command for another bot";
		return false;
	}
	*job = !m->text ? CHAT_MEDIA : is_command ? command_job(cmd.name) : CHAT_REPLY;
	if (is_group(m) && !is_addressed(m, text, self, is_command, &cmd, *job)) {
		*why = "a group message not addressed to the bot";
		return false;
	}
	if (!access_allows(allow, m->from.id, m->from.username, m->chat_id))
		*job = CHAT_REFUSE;
	else if ((*job == CHAT_MODEL || *job == CHAT_SYSTEM) && has_argument(text) &&
	         !may_steer(m, allow, admins))
		*job = CHAT_NOT_PERMITTED;
	return true;
}
