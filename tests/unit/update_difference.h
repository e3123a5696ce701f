/*
 * The comparison of two decoded Updates for tests/unit/test_update_read.c
 * and tests/fuzz/fuzz_update.c, which both hold update_read (the reader
 * without a tree) to update_decode on jansson's tree.
 */
#ifndef TGLLM_TEST_UPDATE_DIFFERENCE_H
#define TGLLM_TEST_UPDATE_DIFFERENCE_H

#include <stdbool.h>
#include <string.h>

#include "telegram/update.h"

static inline bool same_text(const char *a, const char *b)
{
	return (a == NULL) == (b == NULL) && (!a || strcmp(a, b) == 0);
}

/* The name of the first field in which a and b differ; NULL when none does. */
static inline const char *update_difference(const struct tg_update *a, const struct tg_update *b)
{
	const struct tg_message *x = &a->message, *y = &b->message;
	if (a->update_id != b->update_id)
		return "update_id";
	if (a->kind != b->kind)
		return "kind";
	if (strcmp(a->kind_name, b->kind_name) != 0)
		return "kind_name";
	if (x->message_id != y->message_id)
		return "message_id";
	if (x->chat_id != y->chat_id)
		return "chat_id";
	if (x->chat_type != y->chat_type)
		return "chat_type";
	if (x->thread_id != y->thread_id)
		return "thread_id";
	if (x->is_topic_message != y->is_topic_message)
		return "is_topic_message";
	if (x->has_from != y->has_from)
		return "has_from";
	if (x->from.id != y->from.id)
		return "from.id";
	if (x->from.is_bot != y->from.is_bot)
		return "from.is_bot";
	if (!same_text(x->from.first_name, y->from.first_name))
		return "from.first_name";
	if (!same_text(x->from.username, y->from.username))
		return "from.username";
	if (!same_text(x->from.language_code, y->from.language_code))
		return "from.language_code";
	if (!same_text(x->text, y->text))
		return "text";
	if (x->n_entities != y->n_entities)
		return "n_entities";
	for (size_t i = 0; i < x->n_entities; i++) {
		if (!same_text(x->entities[i].type, y->entities[i].type))
			return "entity type";
		if (x->entities[i].offset != y->entities[i].offset)
			return "entity offset";
		if (x->entities[i].length != y->entities[i].length)
			return "entity length";
		if (x->entities[i].user_id != y->entities[i].user_id)
			return "entity user_id";
	}
	if (x->reply_to_message_id != y->reply_to_message_id)
		return "reply_to_message_id";
	if (x->reply_to_from_id != y->reply_to_from_id)
		return "reply_to_from_id";
	return NULL;
}

#endif
