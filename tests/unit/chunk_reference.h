/*
 * The judge of src/chunk.c for tests/unit/test_chunk.c and
 * tests/fuzz/fuzz_chunk.c: llm.c's decoding of a stream chunk with jansson
 * (on_event, read_usage, read_error), written again.
 */
#ifndef TGLLM_TEST_CHUNK_REFERENCE_H
#define TGLLM_TEST_CHUNK_REFERENCE_H

#include <jansson.h>
#include <stdbool.h>

#include "lib/buf.h"
#include "model/chunk.h"

enum ref_outcome {
	REF_READ,       /* an object without "error": on_event takes usage, content and finish_reason */
	REF_ERROR,      /* an object with an "error" key, whatever its value: the stream fails */
	REF_NOT_OBJECT, /* invalid JSON, or not an object: on_event skips it */
};

struct reading {
	enum ref_outcome outcome;
	struct chunk chunk;
	struct buf content; /* choices[0].delta.content when a string */
};

/* false when the content did not fit in max bytes */
static inline bool ref_read(const char *json, size_t len, size_t max, struct reading *r)
{
	bool fits = true;
	r->chunk = (struct chunk){false, -1, -1};
	buf_init(&r->content, max);
	json_t *root = json_loadb(json, len, 0, NULL);
	if (!json_is_object(root)) {
		r->outcome = REF_NOT_OBJECT;
		goto out;
	}
	if (json_object_get(root, "error")) {
		r->outcome = REF_ERROR;
		goto out;
	}
	r->outcome = REF_READ;
	const json_t *usage = json_object_get(root, "usage");
	if (json_is_object(usage)) {
		const json_t *p = json_object_get(usage, "prompt_tokens");
		const json_t *c = json_object_get(usage, "completion_tokens");
		if (json_is_integer(p))
			r->chunk.prompt_tokens = (long)json_integer_value(p);
		if (json_is_integer(c))
			r->chunk.completion_tokens = (long)json_integer_value(c);
	}
	const json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
	const json_t *content = json_object_get(json_object_get(choice, "delta"), "content");
	if (json_is_string(content))
		fits = buf_append(&r->content, json_string_value(content), json_string_length(content)) == BUF_OK;
	r->chunk.is_finished = json_is_string(json_object_get(choice, "finish_reason"));
out:
	json_decref(root);
	return fits;
}

#endif
