/*
 * update: Bot API Update JSON -> plain C structs.
 *
 * Only what the bot acts on is decoded: text messages, and the files it can
 * read (voice, audio, video_note, photo, document) with their caption, which
 * is not the message's text. Every other update kind is reported as
 * TG_UPDATE_OTHER with its kind name, so the caller can log and skip it.
 * A decoded update owns all its strings; update_clear() frees them.
 * See https://core.telegram.org/bots/api#update and #message.
 */
#ifndef TGLLM_UPDATE_H
#define TGLLM_UPDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tg_chat_type {
	TG_CHAT_PRIVATE,
	TG_CHAT_GROUP,
	TG_CHAT_SUPERGROUP,
	TG_CHAT_CHANNEL,
	TG_CHAT_OTHER,
};

struct tg_user {
	int64_t id;
	bool is_bot;
	char *first_name;    /* "" when absent */
	char *username;      /* NULL when the user has none */
	char *language_code; /* NULL when absent */
};

struct tg_entity {
	char *type;      /* "mention", "bot_command", "text_mention", ... */
	int64_t offset;  /* in UTF-16 code units, as Telegram counts */
	int64_t length;  /* in UTF-16 code units */
	int64_t user_id; /* for "text_mention", else 0 */
};

/* A file the message carries (https://core.telegram.org/bots/api#voice, #audio, #videonote, #photosize, #document). */
enum tg_media_kind {
	TG_MEDIA_NONE,
	TG_MEDIA_VOICE,
	TG_MEDIA_AUDIO,
	TG_MEDIA_VIDEO_NOTE,
	TG_MEDIA_PHOTO, /* the largest PhotoSize within TG_FILE_MAX (the largest of all when none is) */
	TG_MEDIA_DOCUMENT,
};

struct tg_media {
	enum tg_media_kind kind;
	char *file_id;     /* for getFile; never NULL unless kind is TG_MEDIA_NONE */
	int64_t file_size; /* bytes; 0 when Telegram does not say */
	char *mime_type;   /* NULL when absent ("image/jpeg" for a photo) */
	char *file_name;   /* NULL when absent */
};

/* The largest file a bot may download (https://core.telegram.org/bots/api#getfile). */
#define TG_FILE_MAX (20 * 1024 * 1024)

struct tg_message {
	int64_t message_id;
	int64_t chat_id;
	enum tg_chat_type chat_type;
	int64_t thread_id; /* message_thread_id, 0 when absent */
	bool is_topic_message;
	bool has_from;
	struct tg_user from; /* valid when has_from */
	char *text;          /* NULL when the message has no text (sticker, photo, service...) */
	struct tg_entity *entities;
	size_t n_entities;
	int64_t reply_to_message_id;   /* 0 when not a reply */
	int64_t reply_to_from_id;      /* sender of the replied-to message, 0 when unknown */
	struct tg_media media;         /* kind TG_MEDIA_NONE for a message without a file */
	char *caption;                 /* the file's caption, NULL when none; its entities are in entities */
};

enum tg_update_kind {
	TG_UPDATE_MESSAGE,  /* the "message" field; message is filled in */
	TG_UPDATE_CALLBACK, /* "callback_query": a button of a message in a chat was pressed (see below) */
	TG_UPDATE_STOP,     /* "stopped_message_generation": the user stopped a draft (message: chat only) */
	TG_UPDATE_OTHER,    /* anything else; kind_name says what */
};

struct tg_update {
	int64_t update_id;
	enum tg_update_kind kind;
	char kind_name[32]; /* the update's field name, e.g. "edited_message"; "unknown" if none */
	/*
	 * A callback's message is the one with the button (its chat and id; no
	 * text), from the person who pressed it.
	 */
	struct tg_message message;
	char *callback_id;   /* for answerCallbackQuery; NULL unless TG_UPDATE_CALLBACK */
	char *callback_data; /* the button's data; NULL when it has none */
	int64_t draft_id;    /* TG_UPDATE_STOP: the draft stopped */
};

/*
 * Decodes one Update object. Returns 0 on success, -1 when the object is not
 * an Update (not an object, no integer update_id) or a "message" lacks
 * message_id / chat.id / chat.type, with a short reason in err.
 * Fields of wrong type that are optional are treated as absent, and so are
 * malformed entities. Entity offsets are not checked against the text.
 * out need not be initialised; on failure it is left cleared (nothing to
 * free) but for update_id, which keeps the id of an update that has one.
 */
struct json_t; /* jansson's json_t, for those who have a tree already (getUpdates' list) */
int update_decode(const struct json_t *obj, struct tg_update *out, char *err, size_t errlen);
/* Parses text (with jansson) then decodes; malformed JSON is an error with jansson's reason. */
int update_parse(const char *json, size_t len, struct tg_update *out, char *err, size_t errlen);
/* Frees what a decoded update owns and zeroes it; safe on a zeroed update. */
void update_clear(struct tg_update *u);

#endif
