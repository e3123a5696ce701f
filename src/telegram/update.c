#include "telegram/update.h"

#include <jansson.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The file fields every kind shares; a file without a string file_id counts as absent. */
static int decode_file(const json_t *obj, enum tg_media_kind kind, struct tg_media *out)
{
	const char *id = get_str(obj, "file_id");
	if (!id)
		return 0;
	if (!get_int(obj, "file_size", &out->file_size) || out->file_size < 0)
		out->file_size = 0;
	out->kind = kind;
	if (!(out->file_id = strdup(id)) || copy_str(obj, "mime_type", &out->mime_type) != 0 ||
	    copy_str(obj, "file_name", &out->file_name) != 0)
		return -1;
	return 0;
}

/*
 * https://core.telegram.org/bots/api#photosize: the sizes of one photo. The
 * largest that may be downloaded is the one to read; when none may, the
 * largest, so that the user is told it is too big.
 */
static const json_t *pick_photo(const json_t *sizes)
{
	const json_t *best = NULL, *biggest = NULL;
	int64_t best_area = -1, biggest_area = -1;
	for (size_t i = 0; i < json_array_size(sizes); i++) {
		const json_t *p = json_array_get(sizes, i);
		int64_t w = 0, h = 0, size = 0;
		if (!get_str(p, "file_id"))
			continue;
		(void)get_int(p, "width", &w); /* absent: 0, the smallest */
		(void)get_int(p, "height", &h);
		(void)get_int(p, "file_size", &size);
		int64_t area = w > 0 && h > 0 && w < INT32_MAX && h < INT32_MAX ? w * h : 0;
		if (area > biggest_area) {
			biggest = p;
			biggest_area = area;
		}
		if (size <= TG_FILE_MAX && area > best_area) {
			best = p;
			best_area = area;
		}
	}
	return best ? best : biggest;
}

/* The file a message carries, if it is one the bot reads. */
static int decode_media(const json_t *obj, struct tg_media *out)
{
	static const struct {
		const char *field;
		enum tg_media_kind kind;
	} kinds[] = {
	    {"voice", TG_MEDIA_VOICE},
	    {"audio", TG_MEDIA_AUDIO},
	    {"video_note", TG_MEDIA_VIDEO_NOTE},
	    {"document", TG_MEDIA_DOCUMENT},
	};
	const json_t *photo = pick_photo(json_object_get(obj, "photo"));
	if (photo) {
		if (decode_file(photo, TG_MEDIA_PHOTO, out) != 0)
			return -1;
		free(out->mime_type); /* Telegram's photos are JPEG; a PhotoSize has no mime_type */
		out->mime_type = strdup("image/jpeg");
		return out->mime_type ? 0 : -1;
	}
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
		const json_t *f = json_object_get(obj, kinds[i].field);
		if (json_is_object(f))
			return decode_file(f, kinds[i].kind, out);
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
	if (!m->text) {
		if (decode_media(obj, &m->media) != 0)
			goto no_memory;
		/* A caption addresses the bot as text does: its mentions are the message's entities. */
		if (m->media.kind != TG_MEDIA_NONE &&
		    (copy_str(obj, "caption", &m->caption) != 0 ||
		     (m->caption && decode_entities(json_object_get(obj, "caption_entities"), m) != 0)))
			goto no_memory;
	}

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

/* A button of a message in a chat (not one of an inline-mode message, which has no chat here). */
static bool is_chat_callback(const json_t *cb)
{
	return json_is_object(json_object_get(cb, "message"));
}

/*
 * https://core.telegram.org/bots/api#callbackquery: the message the button
 * belongs to, with the person who pressed it as its sender (the message's
 * own sender is the bot). A message too old for Telegram to show
 * (InaccessibleMessage) still has its chat and id.
 */
static int decode_callback(const json_t *cb, struct tg_update *u, char *err, size_t errlen)
{
	const char *id = get_str(cb, "id");
	if (!id) {
		set_error(err, errlen, "callback_query has no id");
		return -1;
	}
	if (decode_message(json_object_get(cb, "message"), &u->message, err, errlen) != 0)
		return -1;
	struct tg_message *m = &u->message;
	free(m->from.first_name);
	free(m->from.username);
	free(m->from.language_code);
	memset(&m->from, 0, sizeof m->from);
	m->has_from = false;
	free(m->text); /* the button's message is the bot's, not a question */
	m->text = NULL;
	free(m->caption);
	m->caption = NULL;
	for (size_t i = 0; i < m->n_entities; i++) /* the text's and the caption's, gone with them */
		free(m->entities[i].type);
	free(m->entities);
	m->entities = NULL;
	m->n_entities = 0;
	free(m->media.file_id);
	free(m->media.mime_type);
	free(m->media.file_name);
	memset(&m->media, 0, sizeof m->media);
	if (decode_user(json_object_get(cb, "from"), m) != 0 || !(u->callback_id = strdup(id)) ||
	    copy_str(cb, "data", &u->callback_data) != 0) {
		set_error(err, errlen, "out of memory decoding a callback_query");
		return -1;
	}
	return 0;
}

/* https://core.telegram.org/bots/api#messagegenerationstopped: the chat, its topic, the draft. */
static int decode_stop(const json_t *obj, struct tg_update *u, char *err, size_t errlen)
{
	struct tg_message *m = &u->message;
	u->kind = TG_UPDATE_STOP;
	snprintf(u->kind_name, sizeof u->kind_name, "stopped_message_generation");
	const json_t *chat = json_object_get(obj, "chat");
	const char *type = get_str(chat, "type");
	if (!get_int(chat, "id", &m->chat_id) || !type || !get_int(obj, "draft_id", &u->draft_id)) {
		set_error(err, errlen, "stopped_message_generation has no chat with an id and a type, or no draft_id");
		int64_t id = u->update_id;
		memset(u, 0, sizeof *u);
		u->update_id = id;
		return -1;
	}
	m->chat_type = chat_type_parse(type);
	if (get_int(obj, "message_thread_id", &m->thread_id))
		m->is_topic_message = true;
	return 0;
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
	const json_t *callback = json_object_get(obj, "callback_query");
	const json_t *stop = json_object_get(obj, "stopped_message_generation");
	if (stop)
		return decode_stop(stop, out, err, errlen);
	if (!message && !is_chat_callback(callback)) {
		out->kind = TG_UPDATE_OTHER;
		find_kind(obj, out);
		return 0;
	}
	int rc;
	if (message) {
		out->kind = TG_UPDATE_MESSAGE;
		snprintf(out->kind_name, sizeof out->kind_name, "message");
		rc = decode_message(message, &out->message, err, errlen);
	} else {
		out->kind = TG_UPDATE_CALLBACK;
		snprintf(out->kind_name, sizeof out->kind_name, "callback_query");
		rc = decode_callback(callback, out, err, errlen);
	}
	if (rc != 0) {
		int64_t id = out->update_id;
		update_clear(out);
		out->update_id = id;
		return -1;
	}
	return 0;
}

int update_parse(const char *json, size_t len, struct tg_update *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
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
	free(m->caption);
	free(m->media.file_id);
	free(m->media.mime_type);
	free(m->media.file_name);
	for (size_t i = 0; i < m->n_entities; i++)
		free(m->entities[i].type);
	free(m->entities);
	free(u->callback_id);
	free(u->callback_data);
	memset(u, 0, sizeof *u);
}
