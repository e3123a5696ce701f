#include "lib/base64.h"

#include <stdint.h>
#include <stdlib.h>

static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_append(struct buf *b, const void *data, size_t n)
{
	const unsigned char *s = data;
	char out[1024];
	size_t k = 0;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)s[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)s[i + 1] << 8;
		if (i + 2 < n)
			v |= s[i + 2];
		out[k++] = digits[(v >> 18) & 63];
		out[k++] = digits[(v >> 12) & 63];
		out[k++] = i + 1 < n ? digits[(v >> 6) & 63] : '=';
		out[k++] = i + 2 < n ? digits[v & 63] : '=';
		if (k == sizeof out) {
			int rc = buf_append(b, out, k);
			if (rc != BUF_OK)
				return rc;
			k = 0;
		}
	}
	return buf_append(b, out, k);
}

static int value_of(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-') /* '-' and '_': the URL-safe alphabet (some event bodies) */
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

char *base64_decode(const char *s, size_t n, size_t *out_len)
{
	if (n > SIZE_MAX / 3)
		return NULL;
	char *out = malloc(n / 4 * 3 + 4);
	if (!out)
		return NULL;
	size_t k = 0, bits = 0, pad = 0;
	uint32_t acc = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		int v = value_of(c);
		if (v < 0 || pad) { /* nothing but padding after padding */
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[k++] = (char)(acc >> bits & 0xFF);
		}
	}
	/* A lone character is no byte; bits left over that are not zero are not from an encoder. */
	if (bits >= 6 || pad > 2 || (acc & ((1u << bits) - 1)) != 0) {
		free(out);
		return NULL;
	}
	out[k] = '\0';
	*out_len = k;
	return out;
}
