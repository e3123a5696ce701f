#include "jsonw.h"

#include <stdio.h>

#include "utf8.h"

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

int jsonw_string(struct buf *b, const char *s, size_t len)
{
	static const char replacement[] = "\xEF\xBF\xBD";
	const unsigned char *p = (const unsigned char *)s, *end = p + len, *run = p;
	int rc = buf_append(b, "\"", 1);
	while (rc == BUF_OK && p < end) {
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
