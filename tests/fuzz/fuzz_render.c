/*
 * libFuzzer target for src/render.c. The first two bytes pick max_units; the
 * rest is the text. Checks what render_split_plain promises: parts in order,
 * within the limit, never starting or ending with whitespace, and only
 * whitespace left out between them.
 */
#include "render.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t max_units = ((size_t)data[0] << 8 | data[1]) % 600;
	const char *text = (const char *)data + 2;
	size_t len = size - 2;

	size_t units = render_utf16_len(text, len);
	if (units > len || units < (len + 3) / 4)
		abort(); /* at most one unit per byte, at least one per 4-byte sequence */

	struct render_part *parts;
	long n = render_split_plain(text, len, max_units, &parts);
	if (n < 0)
		abort();
	size_t limit = max_units < 2 ? 2 : max_units, prev_end = 0;
	for (long i = 0; i < n; i++) {
		size_t off = parts[i].offset, plen = parts[i].len;
		if (off < prev_end || plen == 0 || plen > len - off)
			abort();
		if (render_utf16_len(text + off, plen) > limit)
			abort();
		if (is_space(text[off]) || is_space(text[off + plen - 1]))
			abort();
		for (size_t k = prev_end; k < off; k++)
			if (!is_space(text[k]))
				abort();
		prev_end = off + plen;
	}
	for (size_t k = prev_end; k < len; k++)
		if (!is_space(text[k]))
			abort();
	free(parts);
	return 0;
}
