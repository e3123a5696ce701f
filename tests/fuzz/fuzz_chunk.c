/*
 * libFuzzer target for src/chunk.c, differential against jansson. The input
 * is one chunk. ref_read is llm.c's decoding of a chunk (on_event,
 * read_usage, read_error) written again with jansson, as in
 * tests/unit/test_chunk.c.
 *
 * chunk_read, with content already holding a prefix: CHUNK_READ only when
 * jansson decodes an object without "error", and then the same is_finished,
 * token counts and choices[0].delta.content, appended after the prefix; any
 * other input CHUNK_OTHER, the prefix intact; never CHUNK_NO_MEMORY with room
 * to spare. A chunk it reads it reads again into a buffer of exactly the
 * needed size, and one byte less is CHUNK_NO_MEMORY.
 */
#include "lib/buf.h"
#include "model/chunk.h"
#include "../unit/chunk_reference.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BIG ((size_t)1 << 28)

static const char prefix[] = "» ";

/* chunk_read into a buffer of max bytes holding prefix, its struct chunk set to values no reading has. */
static enum chunk_result read_into(const char *json, size_t len, size_t max, const struct reading *ref,
                                   struct chunk *out, struct buf *content)
{
	buf_init(content, max);
	if (buf_append_str(content, prefix) != BUF_OK)
		abort();
	*out =
	    (struct chunk){!ref->chunk.is_finished, ~ref->chunk.prompt_tokens, ~ref->chunk.completion_tokens};
	return chunk_read(json, len, out, content);
}

static bool is_same_reading(const struct chunk *c, const struct buf *content, const struct reading *ref)
{
	size_t p = strlen(prefix);
	return c->is_finished == ref->chunk.is_finished && c->prompt_tokens == ref->chunk.prompt_tokens &&
	       c->completion_tokens == ref->chunk.completion_tokens && content->len == p + ref->content.len &&
	       memcmp(buf_str(content), prefix, p) == 0 &&
	       memcmp(buf_str(content) + p, buf_str(&ref->content), ref->content.len) == 0;
}

static bool has_prefix(const struct buf *content)
{
	return content->len >= strlen(prefix) && memcmp(buf_str(content), prefix, strlen(prefix)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *json = (const char *)data;
	struct reading ref;
	if (!ref_read(json, size, BIG, &ref))
		abort(); /* the input is far below BIG */

	struct chunk c;
	struct buf content;
	enum chunk_result r = read_into(json, size, BIG, &ref, &c, &content);
	if (r == CHUNK_READ && (ref.outcome != REF_READ || !is_same_reading(&c, &content, &ref)))
		abort(); /* read, and differently from jansson */
	if (r == CHUNK_OTHER && !has_prefix(&content))
		abort(); /* refused, but what the buffer held before is gone */
	if (r != CHUNK_READ && r != CHUNK_OTHER)
		abort(); /* out of room in a buffer of 256 MiB, or not a chunk_result */
	buf_free(&content);

	if (r == CHUNK_READ) {
		size_t fit = strlen(prefix) + ref.content.len;
		if (read_into(json, size, fit, &ref, &c, &content) != CHUNK_READ ||
		    !is_same_reading(&c, &content, &ref))
			abort(); /* a buffer of exactly the needed size did not do */
		buf_free(&content);
		if (ref.content.len) {
			if (read_into(json, size, fit - 1, &ref, &c, &content) != CHUNK_NO_MEMORY ||
			    content.len > fit - 1)
				abort(); /* a buffer one byte short was not reported, or overran */
			buf_free(&content);
		}
	}
	buf_free(&ref.content);
	return 0;
}
