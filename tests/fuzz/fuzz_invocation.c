/*
 * libFuzzer target for invocation_parse (src/ingress/invocation.c), the
 * serverless events. The first byte picks a mode: the bytes as an event of
 * any shape, or the bytes as a request body sent base64-encoded in a Yandex
 * event (standard or URL-safe alphabet, padded or not, with line breaks or
 * not), which must decode back to exactly those bytes.
 */
#include "ingress/invocation.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *base64(const uint8_t *in, size_t n, unsigned mode)
{
	const char *abc = mode & 1 ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	                           : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc(n / 3 * 4 + n / 57 * 2 + 8), *w = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
		             (i + 2 < n ? in[i + 2] : 0);
		size_t chars = i + 2 < n ? 4 : i + 1 < n ? 3 : 2;
		for (size_t k = 0; k < 4; k++)
			if (k < chars)
				*w++ = abc[(v >> (18 - 6 * k)) & 63];
			else if (mode & 2)
				*w++ = '=';
		if (mode & 4 && (i / 3) % 19 == 18)
			*w++ = '\n'; /* MIME line breaks every 76 characters */
	}
	*w = '\0';
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct invocation inv;
	char err[256];
	if (size == 0 || data[0] < 128) {
		if (invocation_parse((const char *)data, size, &inv, err, sizeof err) == 0) {
			if (inv.body && inv.body[inv.body_len] != '\0')
				abort(); /* the body is NUL-terminated */
			invocation_clear(&inv);
		}
		return 0;
	}
	char *b64 = base64(data + 1, size - 1, data[0]);
	json_t *event = b64 ? json_pack("{s:s, s:s, s:{}, s:b}", "httpMethod", "POST", "body", b64, "headers",
	                                "isBase64Encoded", 1)
	                    : NULL;
	char *text = event ? json_dumps(event, JSON_COMPACT) : NULL;
	if (text) {
		if (invocation_parse(text, strlen(text), &inv, err, sizeof err) != 0)
			abort(); /* valid base64 refused */
		if (inv.body_len != size - 1 || memcmp(inv.body, data + 1, size - 1) != 0)
			abort(); /* decoded to other bytes */
		invocation_clear(&inv);
	}
	free(text);
	json_decref(event);
	free(b64);
	return 0;
}
