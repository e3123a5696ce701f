/*
 * libFuzzer target for src/lib/base64.c: any bytes as base64 text (a drawn
 * picture's b64_json, an event's body). What decodes encodes back to the
 * same text, once whitespace and padding are set aside and the URL-safe
 * alphabet read as the standard one; and any bytes encode and decode back.
 */
#include "lib/base64.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len = 0;
	char *plain = base64_decode((const char *)data, size, &len);
	if (plain) {
		struct buf b;
		buf_init(&b, SIZE_MAX - 1);
		if (base64_append(&b, plain, len) != BUF_OK)
			abort();
		/* The input's significant characters, padding aside, are the encoding's. */
		size_t k = 0;
		for (size_t i = 0; i < size; i++) {
			char c = (char)data[i];
			if (c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '=')
				continue;
			c = c == '-' ? '+' : c == '_' ? '/' : c;
			if (k >= b.len || b.data[k] != c)
				abort();
			k++;
		}
		while (k < b.len && b.data[k] == '=')
			k++;
		if (k != b.len)
			abort();
		buf_free(&b);
		free(plain);
	}
	struct buf e;
	buf_init(&e, SIZE_MAX - 1);
	if (base64_append(&e, data, size) != BUF_OK)
		abort();
	char *back = base64_decode(e.data ? e.data : "", e.len, &len);
	if (!back || len != size || (size && memcmp(back, data, size) != 0))
		abort();
	free(back);
	buf_free(&e);
	return 0;
}
