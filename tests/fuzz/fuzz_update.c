/*
 * libFuzzer target for src/telegram/update.c: any bytes as an Update body.
 * A decoded update keeps its promises (update.h): a message's text and
 * entities, or its file (with a file_id) and caption, a callback's id and
 * presser, nothing more for other kinds; a failure says why and leaves
 * nothing to free.
 */
#include "telegram/update.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tg_update u;
	char err[128];
	if (update_parse((const char *)data, size, &u, err, sizeof err) != 0) {
		if (err[0] == '\0' || u.message.text || u.message.entities || u.message.from.first_name ||
		    u.message.media.file_id || u.message.caption)
			abort(); /* a failure says why and leaves nothing to free */
		return 0;
	}
	if (memchr(u.kind_name, '\0', sizeof u.kind_name) == NULL)
		abort();
	const struct tg_message *m = &u.message;
	if (u.kind == TG_UPDATE_MESSAGE) {
		if (m->has_from && !m->from.first_name)
			abort();
		if (!m->text && !m->caption && m->n_entities)
			abort(); /* entities are the text's, or a file's caption's */
		if (m->text && (m->media.kind != TG_MEDIA_NONE || m->caption))
			abort(); /* a text message carries no file */
		if ((m->media.kind == TG_MEDIA_NONE) != !m->media.file_id || (m->caption && !m->media.file_id))
			abort(); /* a file has its id; a caption, its file */
		if (m->media.file_size < 0 || (m->media.kind == TG_MEDIA_PHOTO && !m->media.mime_type))
			abort();
		for (size_t i = 0; i < m->n_entities; i++)
			if (!m->entities[i].type || m->entities[i].offset < 0 || m->entities[i].length < 0)
				abort();
	} else if (u.kind == TG_UPDATE_CALLBACK) {
		/* The button's message is the bot's: no text; the sender is who pressed it. */
		if (!u.callback_id || m->text || m->entities || m->media.file_id || m->caption ||
		    (m->has_from && !m->from.first_name))
			abort();
	} else if (m->text || m->entities || m->from.first_name || u.callback_id || u.callback_data ||
	           m->media.file_id || m->caption) {
		abort();
	}
	update_clear(&u);
	return 0;
}
