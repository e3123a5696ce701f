#include "telegram/update.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jsonr.h"

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

/* The integer member key of obj; false when absent or not an integer. */
static bool get_int(const json_t *obj, const char *key, int64_t *out)
{
	const json_t *v = json_object_get(obj, key);
	if (!json_is_integer(v))
		return false;
	*out = (int64_t)json_integer_value(v);
	return true;
}

/* The string member key of obj, borrowed; NULL when absent or not a string. */
static const char *get_str(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

static bool get_true(const json_t *obj, const char *key)
{
	return json_is_true(json_object_get(obj, key));
}

/* Copies an optional string: 0 with *out NULL when absent, -1 when out of memory. */
static int copy_str(const json_t *obj, const char *key, char **out)
{
	const char *s = get_str(obj, key);
	*out = NULL;
	if (!s)
		return 0;
	*out = strdup(s);
	return *out ? 0 : -1;
}

static enum tg_chat_type chat_type_parse(const char *s)
{
	static const struct {
		const char *name;
		enum tg_chat_type type;
	} types[] = {
	    {"private", TG_CHAT_PRIVATE},
	    {"group", TG_CHAT_GROUP},
	    {"supergroup", TG_CHAT_SUPERGROUP},
	    {"channel", TG_CHAT_CHANNEL},
	};
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (strcmp(s, types[i].name) == 0)
			return types[i].type;
	return TG_CHAT_OTHER;
}

/* https://core.telegram.org/bots/api#user; a user without an integer id counts as absent. */
static int decode_user(const json_t *obj, struct tg_message *m)
{
	struct tg_user *u = &m->from;
	if (!json_is_object(obj) || !get_int(obj, "id", &u->id))
		return 0;
	m->has_from = true;
	u->is_bot = get_true(obj, "is_bot");
	const char *first = get_str(obj, "first_name");
	u->first_name = strdup(first ? first : "");
	if (!u->first_name)
		return -1;
	if (copy_str(obj, "username", &u->username) != 0)
		return -1;
	return copy_str(obj, "language_code", &u->language_code);
}

/*
 * https://core.telegram.org/bots/api#messageentity. Malformed entities are left out.
 * Offsets and lengths are not checked against the text: whoever slices the text must.
 */
static int decode_entities(const json_t *arr, struct tg_message *m)
{
	if (!json_is_array(arr) || json_array_size(arr) == 0)
		return 0;
	m->entities = calloc(json_array_size(arr), sizeof *m->entities);
	if (!m->entities)
		return -1;
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const json_t *e = json_array_get(arr, i);
		struct tg_entity ent = {0};
		const char *type = get_str(e, "type");
		if (!type || !get_int(e, "offset", &ent.offset) || !get_int(e, "length", &ent.length) ||
		    ent.offset < 0 || ent.length < 0)
			continue;
		const json_t *user = json_object_get(e, "user");
		if (json_is_object(user) && !get_int(user, "id", &ent.user_id))
			ent.user_id = 0;
		ent.type = strdup(type);
		if (!ent.type)
			return -1;
		m->entities[m->n_entities++] = ent;
	}
	return 0;
}

/* https://core.telegram.org/bots/api#message */
static int decode_message(const json_t *obj, struct tg_message *m, char *err, size_t errlen)
{
	if (!json_is_object(obj)) {
		set_error(err, errlen, "\"message\" is not an object");
		return -1;
	}
	if (!get_int(obj, "message_id", &m->message_id)) {
		set_error(err, errlen, "message has no integer message_id");
		return -1;
	}
	const json_t *chat = json_object_get(obj, "chat");
	const char *type = get_str(chat, "type");
	if (!json_is_object(chat) || !get_int(chat, "id", &m->chat_id) || !type) {
		set_error(err, errlen, "message %lld has no chat with an integer id and a type",
		          (long long)m->message_id);
		return -1;
	}
	m->chat_type = chat_type_parse(type);
	if (!get_int(obj, "message_thread_id", &m->thread_id))
		m->thread_id = 0;
	m->is_topic_message = get_true(obj, "is_topic_message");

	if (decode_user(json_object_get(obj, "from"), m) != 0)
		goto no_memory;

	/* Only "text" is text: a photo's caption is not a message to the model. */
	if (copy_str(obj, "text", &m->text) != 0)
		goto no_memory;
	if (m->text && decode_entities(json_object_get(obj, "entities"), m) != 0)
		goto no_memory;

	const json_t *reply = json_object_get(obj, "reply_to_message");
	if (json_is_object(reply)) {
		if (!get_int(reply, "message_id", &m->reply_to_message_id))
			m->reply_to_message_id = 0;
		if (!get_int(json_object_get(reply, "from"), "id", &m->reply_to_from_id))
			m->reply_to_from_id = 0;
	}
	return 0;

no_memory:
	set_error(err, errlen, "out of memory decoding message %lld", (long long)m->message_id);
	return -1;
}

/*
 * An Update has update_id and at most one other field, which names its kind
 * (https://core.telegram.org/bots/api#update).
 */
static void find_kind(const json_t *obj, struct tg_update *u)
{
	snprintf(u->kind_name, sizeof u->kind_name, "unknown");
	/* jansson's iterators take a non-const object but do not change it. */
	json_t *o = (json_t *)obj;
	for (void *it = json_object_iter(o); it; it = json_object_iter_next(o, it)) {
		const char *key = json_object_iter_key(it);
		if (strcmp(key, "update_id") != 0) {
			/* Longer names are cut: the name is for log lines only. */
			snprintf(u->kind_name, sizeof u->kind_name, "%s", key);
			return;
		}
	}
}

int update_decode(const json_t *obj, struct tg_update *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	if (!json_is_object(obj)) {
		set_error(err, errlen, "update is not a JSON object");
		return -1;
	}
	if (!get_int(obj, "update_id", &out->update_id)) {
		set_error(err, errlen, "update has no integer update_id");
		return -1;
	}
	const json_t *message = json_object_get(obj, "message");
	if (!message) {
		out->kind = TG_UPDATE_OTHER;
		find_kind(obj, out);
		return 0;
	}
	out->kind = TG_UPDATE_MESSAGE;
	snprintf(out->kind_name, sizeof out->kind_name, "message");
	if (decode_message(message, &out->message, err, errlen) != 0) {
		int64_t id = out->update_id;
		update_clear(out);
		out->update_id = id;
		return -1;
	}
	return 0;
}

/*
 * The reader: Updates as Telegram writes them, read with jsonr and without
 * a tree (building one cost ~80 k instructions an update). It reads only
 * what update_decode would make of the same text and refuses the rest
 * (fields of unexpected types, malformed entities, messages without their
 * required fields, duplicate keys of interest): update_parse then decodes
 * with jansson, which also words the errors.
 */
#define MAX_STRING ((size_t)1 << 24)

struct reading {
	struct tg_update *u;
	struct buf scratch;        /* a string being read: kept strings are copied out at their size */
	struct tg_entity *entity;  /* the entity being read */
	size_t entities_cap;
	bool has_chat_type;
	bool has_kind_name; /* the first key but update_id named the kind (it may be "") */
};

static bool read_int(struct jsonr *r, int64_t *to)
{
	bool is_integer;
	return jsonr_number(r, to, &is_integer) && is_integer;
}

/* A string into the scratch buffer. */
static bool read_scratch(struct jsonr *r, struct reading *rd)
{
	buf_reset(&rd->scratch);
	return jsonr_at(r, '"') && jsonr_string(r, &rd->scratch);
}

/* A string member into *to, which must be NULL (a key of interest is read once). */
static bool read_str(struct jsonr *r, struct reading *rd, char **to)
{
	if (*to || !read_scratch(r, rd))
		return false;
	*to = strndup(buf_str(&rd->scratch), rd->scratch.len);
	return *to != NULL;
}

enum { USER_ID = 1, IS_BOT = 2 };

static bool user_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
			unsigned *seen)
{
	struct reading *rd = ctx;
	struct tg_user *u = &rd->u->message.from;
	if (jsonr_is_key(key, len, "id"))
		return jsonr_first_time(seen, USER_ID) && read_int(r, &u->id);
	if (jsonr_is_key(key, len, "is_bot"))
		return jsonr_first_time(seen, IS_BOT) && jsonr_boolean(r, &u->is_bot);
	if (jsonr_is_key(key, len, "first_name"))
		return read_str(r, rd, &u->first_name);
	if (jsonr_is_key(key, len, "username"))
		return read_str(r, rd, &u->username);
	if (jsonr_is_key(key, len, "language_code"))
		return read_str(r, rd, &u->language_code);
	return jsonr_skip(r, depth);
}

/* Just the id of an object (a sender), into the int64_t at ctx; left as it is when absent. */
static bool id_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
		      unsigned *seen)
{
	if (!jsonr_is_key(key, len, "id"))
		return jsonr_skip(r, depth);
	return jsonr_first_time(seen, USER_ID) && read_int(r, ctx);
}

enum { CHAT_ID = 1, CHAT_TYPE = 2 };

static bool chat_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
			unsigned *seen)
{
	struct reading *rd = ctx;
	if (jsonr_is_key(key, len, "id"))
		return jsonr_first_time(seen, CHAT_ID) && read_int(r, &rd->u->message.chat_id);
	if (jsonr_is_key(key, len, "type")) {
		if (!jsonr_first_time(seen, CHAT_TYPE) || !read_scratch(r, rd))
			return false;
		rd->u->message.chat_type = chat_type_parse(buf_str(&rd->scratch));
		rd->has_chat_type = true;
		return true;
	}
	return jsonr_skip(r, depth);
}

enum { ENTITY_OFFSET = 1, ENTITY_LENGTH = 2, ENTITY_USER = 4 };

static bool entity_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
			  unsigned *seen)
{
	struct reading *rd = ctx;
	struct tg_entity *e = rd->entity;
	if (jsonr_is_key(key, len, "type"))
		return read_str(r, rd, &e->type);
	if (jsonr_is_key(key, len, "offset"))
		return jsonr_first_time(seen, ENTITY_OFFSET) && read_int(r, &e->offset);
	if (jsonr_is_key(key, len, "length"))
		return jsonr_first_time(seen, ENTITY_LENGTH) && read_int(r, &e->length);
	if (jsonr_is_key(key, len, "user"))
		return jsonr_first_time(seen, ENTITY_USER) && jsonr_at(r, '{') &&
		       jsonr_object(r, depth, id_member, &e->user_id);
	return jsonr_skip(r, depth);
}

/* Entities without a type, or with an offset or length missing or negative, are left out by update_decode: refused here. */
static bool read_entities(struct jsonr *r, struct reading *rd, int depth)
{
	struct tg_message *m = &rd->u->message;
	if (depth > JSONR_MAX_DEPTH || !jsonr_take(r, '['))
		return false;
	if (jsonr_take(r, ']'))
		return true;
	do {
		if (m->n_entities == rd->entities_cap) {
			size_t cap = rd->entities_cap ? 2 * rd->entities_cap : 4;
			struct tg_entity *grown = realloc(m->entities, cap * sizeof *grown);
			if (!grown)
				return false;
			m->entities = grown;
			rd->entities_cap = cap;
		}
		struct tg_entity *e = &m->entities[m->n_entities];
		*e = (struct tg_entity){.offset = -1, .length = -1};
		m->n_entities++; /* owned from here on, for update_clear */
		rd->entity = e;
		if (!jsonr_at(r, '{') || !jsonr_object(r, depth + 1, entity_member, rd) || !e->type ||
		    e->offset < 0 || e->length < 0)
			return false;
	} while (jsonr_take(r, ','));
	return jsonr_take(r, ']');
}

enum { REPLY_ID = 1, REPLY_FROM = 2 };

static bool reply_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
			 unsigned *seen)
{
	struct tg_message *m = ctx;
	if (jsonr_is_key(key, len, "message_id"))
		return jsonr_first_time(seen, REPLY_ID) && read_int(r, &m->reply_to_message_id);
	if (jsonr_is_key(key, len, "from"))
		return jsonr_first_time(seen, REPLY_FROM) && jsonr_at(r, '{') &&
		       jsonr_object(r, depth, id_member, &m->reply_to_from_id);
	return jsonr_skip(r, depth);
}

enum {
	MESSAGE_ID = 1,
	CHAT = 2,
	FROM = 4,
	THREAD_ID = 8,
	IS_TOPIC = 16,
	ENTITIES = 32,
	REPLY = 64,
};

static bool message_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
			   unsigned *seen)
{
	struct reading *rd = ctx;
	struct tg_message *m = &rd->u->message;
	if (jsonr_is_key(key, len, "message_id"))
		return jsonr_first_time(seen, MESSAGE_ID) && read_int(r, &m->message_id);
	if (jsonr_is_key(key, len, "chat"))
		return jsonr_first_time(seen, CHAT) && jsonr_at(r, '{') &&
		       jsonr_object(r, depth, chat_member, rd);
	if (jsonr_is_key(key, len, "from")) {
		/* A sender without an id counts as absent for update_decode: refused below. */
		if (!jsonr_first_time(seen, FROM) || !jsonr_at(r, '{'))
			return false;
		m->has_from = true;
		m->from.id = INT64_MIN;
		return jsonr_object(r, depth, user_member, rd) && m->from.id != INT64_MIN;
	}
	if (jsonr_is_key(key, len, "message_thread_id"))
		return jsonr_first_time(seen, THREAD_ID) && read_int(r, &m->thread_id);
	if (jsonr_is_key(key, len, "is_topic_message"))
		return jsonr_first_time(seen, IS_TOPIC) && jsonr_boolean(r, &m->is_topic_message);
	if (jsonr_is_key(key, len, "text"))
		return read_str(r, rd, &m->text);
	if (jsonr_is_key(key, len, "entities"))
		return jsonr_first_time(seen, ENTITIES) && read_entities(r, rd, depth);
	if (jsonr_is_key(key, len, "reply_to_message"))
		return jsonr_first_time(seen, REPLY) && jsonr_at(r, '{') &&
		       jsonr_object(r, depth, reply_member, m);
	return jsonr_skip(r, depth);
}

enum { UPDATE_ID = 1, MESSAGE = 2 };

static bool update_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
			  unsigned *seen)
{
	struct reading *rd = ctx;
	struct tg_update *u = rd->u;
	if (jsonr_is_key(key, len, "update_id"))
		return jsonr_first_time(seen, UPDATE_ID) && read_int(r, &u->update_id);
	if (jsonr_is_key(key, len, "message")) {
		u->kind = TG_UPDATE_MESSAGE;
		return jsonr_first_time(seen, MESSAGE) && jsonr_at(r, '{') &&
		       jsonr_object(r, depth, message_member, rd);
	}
	if (!rd->has_kind_name)
		snprintf(u->kind_name, sizeof u->kind_name, "%.*s", (int)len, (const char *)key);
	rd->has_kind_name = true;
	return jsonr_skip(r, depth);
}

static bool read_fields(const char *json, size_t len, struct reading *rd)
{
	struct tg_update *u = rd->u;
	struct jsonr r;
	jsonr_init(&r, json, len);
	u->kind = TG_UPDATE_OTHER;
	u->update_id = INT64_MIN;
	if (!jsonr_object(&r, 1, update_member, rd) || !jsonr_is_end(&r) || u->update_id == INT64_MIN)
		return false;
	if (u->kind == TG_UPDATE_OTHER) {
		if (!rd->has_kind_name)
			snprintf(u->kind_name, sizeof u->kind_name, "unknown");
		return true;
	}
	struct tg_message *m = &u->message;
	/* 0 stands for absent here; a text whose id really is 0 goes to jansson. */
	if (m->message_id == 0 || m->chat_id == 0 || !rd->has_chat_type)
		return false;
	snprintf(u->kind_name, sizeof u->kind_name, "message");
	if (m->has_from && !m->from.first_name && !(m->from.first_name = strdup("")))
		return false;
	if (!m->text) {
		for (size_t i = 0; i < m->n_entities; i++)
			free(m->entities[i].type);
		free(m->entities);
		m->entities = NULL;
		m->n_entities = 0;
	} else if (m->n_entities && m->n_entities < rd->entities_cap) {
		/* The update lives as long as its conversation: held at its size. */
		struct tg_entity *fit = realloc(m->entities, m->n_entities * sizeof *fit);
		if (fit)
			m->entities = fit;
	}
	return true;
}

static bool read_update(const char *json, size_t len, struct tg_update *u)
{
	struct reading rd = {.u = u};
	buf_init(&rd.scratch, MAX_STRING);
	bool ok = read_fields(json, len, &rd);
	buf_free(&rd.scratch);
	return ok;
}

bool update_read(const char *json, size_t len, struct tg_update *out)
{
	memset(out, 0, sizeof *out);
	if (read_update(json, len, out))
		return true;
	update_clear(out);
	return false;
}

int update_parse(const char *json, size_t len, struct tg_update *out, char *err, size_t errlen)
{
	if (update_read(json, len, out))
		return 0;
	json_error_t jerr;
	json_t *obj = json_loadb(json, len, 0, &jerr);
	if (!obj) {
		set_error(err, errlen, "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
		          jerr.text);
		return -1;
	}
	int rc = update_decode(obj, out, err, errlen);
	json_decref(obj);
	return rc;
}

void update_clear(struct tg_update *u)
{
	struct tg_message *m = &u->message;
	free(m->from.first_name);
	free(m->from.username);
	free(m->from.language_code);
	free(m->text);
	for (size_t i = 0; i < m->n_entities; i++)
		free(m->entities[i].type);
	free(m->entities);
	memset(u, 0, sizeof *u);
}
