/*
 * chunk: reads one streamed chat-completion chunk, the JSON of an SSE event
 * such as
 *   {"id":"…","object":"chat.completion.chunk","choices":[{"index":0,
 *    "delta":{"content":"Hel"},"finish_reason":null}]}
 * without building a JSON tree. A model answer arrives as hundreds of these,
 * and decoding each with jansson was a third of the bot's CPU per update
 * (bench/README.md, figure 2).
 *
 * It reads with jsonr, so it validates the whole text as strict JSON and
 * refuses what jsonr.h lists, and also an "error" key and a key of interest
 * given twice. The caller decodes a refused chunk with jansson instead, so a
 * chunk it reads means exactly what jansson's reading would.
 */
#ifndef TGLLM_CHUNK_H
#define TGLLM_CHUNK_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

struct chunk {
	bool is_finished;        /* choices[0].finish_reason is a string */
	long prompt_tokens;      /* usage.prompt_tokens when an integer, else -1 */
	long completion_tokens;  /* usage.completion_tokens when an integer, else -1 */
};

enum chunk_result {
	CHUNK_READ,  /* *out filled; choices[0].delta.content (if a string) appended to content */
	CHUNK_OTHER, /* not read: decode it with jansson; content may hold a part (reset it) */
	CHUNK_NO_MEMORY /* content could not grow (BUF_TOO_BIG or out of memory) */
};

/*
 * Reads the len bytes at json. The content string is appended unescaped
 * (valid UTF-8, no NUL bytes) to content.
 */
enum chunk_result chunk_read(const char *json, size_t len, struct chunk *out, struct buf *content);

#endif
