/*
 * libFuzzer target for src/update.c: any bytes as an Update body. Whatever
 * update_read (the reader without a tree) reads must decode as jansson's
 * tree decodes through update_decode.
 */
#include "update.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool same_str(const char *a, const char *b)
{
	return (a == NULL) == (b == NULL) && (!a || strcmp(a, b) == 0);
}

static bool same(const struct tg_update *a, const struct tg_update *b)
{
	const struct tg_message *x = &a->message, *y = &b->message;
	if (a->update_id != b->update_id || a->kind != b->kind || strcmp(a->kind_name, b->kind_name) != 0 ||
	    x->message_id != y->message_id || x->chat_id != y->chat_id || x->chat_type != y->chat_type ||
	    x->thread_id != y->thread_id || x->is_topic_message != y->is_topic_message ||
	    x->has_from != y->has_from || x->from.id != y->from.id || x->from.is_bot != y->from.is_bot ||
	    !same_str(x->from.first_name, y->from.first_name) || !same_str(x->from.username, y->from.username) ||
	    !same_str(x->from.language_code, y->from.language_code) || !same_str(x->text, y->text) ||
	    x->n_entities != y->n_entities || x->reply_to_message_id != y->reply_to_message_id ||
	    x->reply_to_from_id != y->reply_to_from_id)
		return false;
	for (size_t i = 0; i < x->n_entities; i++)
		if (!same_str(x->entities[i].type, y->entities[i].type) ||
		    x->entities[i].offset != y->entities[i].offset ||
		    x->entities[i].length != y->entities[i].length ||
		    x->entities[i].user_id != y->entities[i].user_id)
			return false;
	return true;
}

static void check_reader(const char *text, size_t size)
{
	struct tg_update read, decoded;
	if (!update_read(text, size, &read))
		return;
	json_t *tree = json_loadb(text, size, 0, NULL);
	if (!tree || update_decode(tree, &decoded, NULL, 0) != 0 || !same(&read, &decoded))
		abort(); /* the reader read it otherwise than jansson */
	json_decref(tree);
	update_clear(&decoded);
	update_clear(&read);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tg_update u;
	char err[128];
	check_reader((const char *)data, size);
	if (update_parse((const char *)data, size, &u, err, sizeof err) != 0) {
		if (err[0] == '\0' || u.message.text || u.message.entities)
			abort(); /* a failure says why and leaves nothing to free */
		return 0;
	}
	if (memchr(u.kind_name, '\0', sizeof u.kind_name) == NULL)
		abort();
	const struct tg_message *m = &u.message;
	if (u.kind == TG_UPDATE_MESSAGE) {
		if (m->has_from && !m->from.first_name)
			abort();
		if (!m->text && m->n_entities)
			abort();
		for (size_t i = 0; i < m->n_entities; i++)
			if (!m->entities[i].type || m->entities[i].offset < 0 || m->entities[i].length < 0)
				abort();
	} else if (m->text || m->entities || m->from.first_name) {
		abort();
	}
	update_clear(&u);
	return 0;
}
