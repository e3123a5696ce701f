#include "lib/jsonw.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lib/utf8.h"

/* The escape for a byte below 0x20 or a quote or backslash; NULL when none is needed. */
static const char *escape_of(unsigned char c, char hex[7])
{
	switch (c) {
	case '"': return "\\\"";
	case '\\': return "\\\\";
	case '\b': return "\\b";
	case '\f': return "\\f";
	case '\n': return "\\n";
	case '\r': return "\\r";
	case '\t': return "\\t";
	default:
		if (c >= 0x20)
			return NULL;
		snprintf(hex, 7, "\\u%04X", c);
		return hex;
	}
}

#define ONES 0x0101010101010101u
#define HIGHS 0x8080808080808080u

/* High bit set in each byte of v that is zero (and perhaps above one that is: enough for "any"). */
static uint64_t zero_bytes(uint64_t v)
{
	return (v - ONES) & ~v & HIGHS;
}

/*
 * Bytes from p on, a word at a time, that need no look: printable ASCII
 * other than a quote or backslash. Histories are kilobytes of such text
 * on every request.
 */
static const unsigned char *plain_run(const unsigned char *p, const unsigned char *end)
{
	while (end - p >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		if ((w & HIGHS) || zero_bytes(w & ~(ONES * 0x1f)) || zero_bytes(w ^ (ONES * '"')) ||
		    zero_bytes(w ^ (ONES * '\\')))
			break;
		p += 8;
	}
	return p;
}

int jsonw_string(struct buf *b, const char *s, size_t len)
{
	static const char replacement[] = "\xEF\xBF\xBD";
	const unsigned char *p = (const unsigned char *)s, *end = p + len, *run = p;
	int rc = buf_append(b, "\"", 1);
	while (rc == BUF_OK && (p = plain_run(p, end)) < end) {
		char hex[7];
		const char *esc;
		if (*p >= 0x80) {
			size_t n = utf8_seq_len(p, (size_t)(end - p));
			if (n) {
				p += n;
				continue;
			}
			esc = replacement;
		} else if (!(esc = escape_of(*p, hex))) {
			p++;
			continue;
		}
		rc = buf_append(b, run, (size_t)(p - run));
		if (rc == BUF_OK)
			rc = buf_append_str(b, esc);
		run = ++p;
	}
	if (rc == BUF_OK)
		rc = buf_append(b, run, (size_t)(p - run));
	return rc == BUF_OK ? buf_append(b, "\"", 1) : rc;
}

int jsonw_member(struct buf *b, const char *key)
{
	char last = b->len ? b->data[b->len - 1] : '{';
	int rc = last == '{' || last == '[' ? BUF_OK : buf_append(b, ",", 1);
	if (rc != BUF_OK || !key)
		return rc;
	rc = buf_append(b, "\"", 1);
	if (rc == BUF_OK)
		rc = buf_append_str(b, key);
	return rc == BUF_OK ? buf_append(b, "\":", 2) : rc;
}

/* Written by hand: snprintf's machinery was a tenth of the cost of a sendMessage body of entities. */
int jsonw_int(struct buf *b, long long v)
{
	char digits[24];
	char *p = digits + sizeof digits;
	/* In unsigned arithmetic, so that LLONG_MIN has a magnitude too. */
	unsigned long long m = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
	do {
		*--p = (char)('0' + m % 10);
		m /= 10;
	} while (m);
	if (v < 0)
		*--p = '-';
	return buf_append(b, p, (size_t)(digits + sizeof digits - p));
}

int jsonw_member_int(struct buf *b, const char *key, long long v)
{
	int rc = jsonw_member(b, key);
	return rc == BUF_OK ? jsonw_int(b, v) : rc;
}

int jsonw_member_string(struct buf *b, const char *key, const char *s, size_t len)
{
	int rc = jsonw_member(b, key);
	return rc == BUF_OK ? jsonw_string(b, s, len) : rc;
}

char *jsonw_finish_object(struct buf *b, int rc)
{
	if (rc == BUF_OK)
		rc = buf_append(b, "}", 1);
	char *text = rc == BUF_OK ? buf_take(b) : NULL;
	buf_free(b);
	return text;
}
