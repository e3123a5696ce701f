/*
 * libFuzzer target for tg_answer_decode (src/telegram/tg.c): any bytes as a
 * Bot API answer. Where jansson reads the bytes, the decoder's reading
 * (including its fast path for plain successes) must be jansson's: the same
 * ok, message_id, error_code and description.
 */
#include "telegram/tg.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct tg_answer a;
	tg_answer_decode(&a, text, size, 502);
	const struct tg_result *r = &a.result;
	if (!r->description || (!r->ok && r->error_code == 0) || a.retry_after < 1)
		abort();

	json_t *root = json_loadb(text, size, 0, NULL);
	const json_t *ok = json_object_get(root, "ok");
	if (json_is_boolean(ok)) {
		if (r->ok != json_is_true(ok))
			abort();
		if (r->ok) {
			const json_t *id = json_object_get(json_object_get(root, "result"), "message_id");
			if (r->message_id != (json_is_integer(id) ? json_integer_value(id) : 0))
				abort(); /* the fast path read another message_id than jansson */
		} else {
			const char *desc = json_string_value(json_object_get(root, "description"));
			if (strcmp(r->description, desc ? desc : "no description") != 0)
				abort();
		}
	} else if (root && r->ok) {
		abort(); /* a success that is not a Bot API answer */
	}
	json_decref(root);
	tg_answer_free(&a);
	return 0;
}
