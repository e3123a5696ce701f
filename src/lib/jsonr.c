#include "lib/jsonr.h"

#include <stdlib.h>
#include <string.h>

#include "lib/utf8.h"

#define MAX_DIGITS 18 /* fits an int64_t and a json_int_t; jansson fails on overflow */

void jsonr_init(struct jsonr *r, const char *text, size_t len)
{
	*r = (struct jsonr){(const unsigned char *)text, (const unsigned char *)text + len, false};
}

static int hex4(const unsigned char *s)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned char c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/* The code point of a \u escape at p (after the backslash), surrogate pairs joined; 0 when invalid. */
static unsigned long unicode_escape(struct jsonr *r)
{
	if (r->end - r->p < 5)
		return 0;
	int hi = hex4(r->p + 1);
	if (hi <= 0 || (hi >= 0xDC00 && hi <= 0xDFFF))
		return 0; /* jansson refuses \u0000 and a lone low surrogate */
	r->p += 5;
	if (hi < 0xD800 || hi > 0xDBFF)
		return (unsigned long)hi;
	if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u')
		return 0;
	int lo = hex4(r->p + 2);
	if (lo < 0xDC00 || lo > 0xDFFF)
		return 0;
	r->p += 6;
	return 0x10000 + (((unsigned long)hi - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
}

static bool append(struct jsonr *r, struct buf *to, const void *s, size_t n)
{
	if (!to || buf_append(to, s, n) == BUF_OK)
		return true;
	r->is_out_of_memory = true;
	return false;
}

bool jsonr_string(struct jsonr *r, struct buf *to)
{
	if (!jsonr_take(r, '"'))
		return false;
	const unsigned char *run = r->p;
	while (r->p < r->end) {
		unsigned char c = *r->p;
		if (c == '"') {
			bool ok = append(r, to, run, (size_t)(r->p - run));
			r->p++;
			return ok;
		}
		if (c < 0x20)
			return false;
		if (c >= 0x80) {
			size_t n = utf8_seq_len(r->p, (size_t)(r->end - r->p));
			if (n == 0)
				return false;
			r->p += n;
			continue;
		}
		if (c != '\\') {
			r->p++;
			continue;
		}
		if (!append(r, to, run, (size_t)(r->p - run)) || r->end - r->p < 2)
			return false;
		static const char plain[] = "\"\\/bfnrt", meant[] = "\"\\/\b\f\n\r\t";
		const char *e = r->p[1] ? strchr(plain, r->p[1]) : NULL;
		if (e) {
			if (!append(r, to, &meant[e - plain], 1))
				return false;
			r->p += 2;
		} else {
			if (r->p[1] != 'u')
				return false;
			r->p++;
			unsigned long cp = unicode_escape(r);
			unsigned char u[4];
			if (cp == 0 || !append(r, to, u, utf8_write(cp, u)))
				return false;
		}
		run = r->p;
	}
	return false;
}

/* A key: its raw bytes, refused when written with escapes. */
static bool read_key(struct jsonr *r, const unsigned char **key, size_t *len)
{
	if (!jsonr_take(r, '"'))
		return false;
	*key = r->p;
	const unsigned char *q = memchr(r->p, '"', (size_t)(r->end - r->p));
	if (!q || memchr(r->p, '\\', (size_t)(q - r->p)))
		return false;
	for (const unsigned char *s = r->p; s < q;) {
		if (*s < 0x20)
			return false;
		size_t n = *s < 0x80 ? 1 : utf8_seq_len(s, (size_t)(q - s));
		if (n == 0)
			return false;
		s += n;
	}
	*len = (size_t)(q - r->p);
	r->p = q + 1;
	return true;
}

bool jsonr_number(struct jsonr *r, int64_t *value, bool *is_integer)
{
	jsonr_skip_space(r);
	bool is_negative = r->p < r->end && *r->p == '-';
	if (is_negative)
		r->p++;
	const unsigned char *digits = r->p;
	int64_t v = 0;
	int n = 0;
	while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
		if (++n > MAX_DIGITS)
			return false;
		v = v * 10 + (*r->p++ - '0');
	}
	if (n == 0 || (n > 1 && *digits == '0'))
		return false;
	*is_integer = true;
	if (r->p < r->end && *r->p == '.') {
		*is_integer = false;
		r->p++;
		const unsigned char *frac = r->p;
		while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
			if (++n > MAX_DIGITS)
				return false;
			else
				r->p++;
		if (r->p == frac)
			return false;
	}
	if (r->p < r->end && (*r->p == 'e' || *r->p == 'E'))
		return false;
	*value = is_negative ? -v : v;
	return true;
}

static bool literal(struct jsonr *r, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
		return false;
	r->p += n;
	return true;
}

bool jsonr_boolean(struct jsonr *r, bool *value)
{
	jsonr_skip_space(r);
	*value = r->p < r->end && *r->p == 't';
	return literal(r, *value ? "true" : "false");
}

bool jsonr_object(struct jsonr *r, int depth, jsonr_member_fn fn, void *ctx)
{
	if (depth > JSONR_MAX_DEPTH || !jsonr_take(r, '{'))
		return false;
	if (jsonr_take(r, '}'))
		return true;
	unsigned seen = 0;
	do {
		const unsigned char *key;
		size_t len;
		if (!read_key(r, &key, &len) || !jsonr_take(r, ':') || !fn(r, ctx, key, len, depth + 1, &seen))
			return false;
	} while (jsonr_take(r, ','));
	return jsonr_take(r, '}');
}

/* Passed over, keys may have escapes: nothing reads them. */
static bool skip_object(struct jsonr *r, int depth)
{
	if (depth > JSONR_MAX_DEPTH || !jsonr_take(r, '{'))
		return false;
	if (jsonr_take(r, '}'))
		return true;
	do {
		if (!jsonr_at(r, '"') || !jsonr_string(r, NULL) || !jsonr_take(r, ':') ||
		    !jsonr_skip(r, depth + 1))
			return false;
	} while (jsonr_take(r, ','));
	return jsonr_take(r, '}');
}

static bool skip_array(struct jsonr *r, int depth)
{
	if (depth > JSONR_MAX_DEPTH || !jsonr_take(r, '['))
		return false;
	if (jsonr_take(r, ']'))
		return true;
	do {
		if (!jsonr_skip(r, depth + 1))
			return false;
	} while (jsonr_take(r, ','));
	return jsonr_take(r, ']');
}

bool jsonr_skip(struct jsonr *r, int depth)
{
	jsonr_skip_space(r);
	if (r->p == r->end)
		return false;
	int64_t v;
	bool is_integer;
	switch (*r->p) {
	case '{': return skip_object(r, depth);
	case '[': return skip_array(r, depth);
	case '"': return jsonr_string(r, NULL);
	case 't': return literal(r, "true");
	case 'f': return literal(r, "false");
	case 'n': return literal(r, "null");
	default: return jsonr_number(r, &v, &is_integer);
	}
}

bool jsonr_span(struct jsonr *r, int depth, const char **start, size_t *len)
{
	jsonr_skip_space(r);
	*start = (const char *)r->p;
	if (!jsonr_skip(r, depth))
		return false;
	*len = (size_t)((const char *)r->p - *start);
	return true;
}

static bool is_escape(const unsigned char *p, const unsigned char *end, int lo, int hi, int *cp)
{
	if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
		return false;
	*cp = hex4(p + 2);
	return *cp >= lo && *cp <= hi;
}

static unsigned char *put(unsigned char *w, const void *s, size_t n)
{
	memcpy(w, s, n);
	return w + n;
}

char *jsonr_mend(const char *text, size_t len, size_t *out_len, struct jsonr_carry *carry)
{
	/* An invalid byte becomes 3; a joined pair (6 bytes of escape) 4. */
	unsigned char *out = malloc(len * 3 + 1);
	if (!out)
		return NULL;
	unsigned high = carry ? carry->high : 0;
	if (carry)
		*carry = (struct jsonr_carry){0};
	const unsigned char *p = (const unsigned char *)text, *end = p + len, *string_start = NULL;
	unsigned char *w = out;
	bool is_mended = false;
	static const char fffd_escape[] = "\\ufffd", fffd[] = "\xEF\xBF\xBD";
	while (p < end) {
		int cp;
		if (!string_start) {
			if (*p == '"')
				string_start = p + 1;
			*w++ = *p++;
		} else if (*p == '"') {
			string_start = NULL;
			*w++ = *p++;
		} else if (is_escape(p, end, 0xD800, 0xDBFF, &cp)) {
			int lo;
			if (is_escape(p + 6, end, 0xDC00, 0xDFFF, &lo)) {
				w = put(w, p, 12);
				p += 12;
				continue;
			}
			is_mended = true;
			if (carry && end - p > 6 && p[6] == '"')
				carry->high = (unsigned)cp; /* the next text may hold its low half */
			else
				w = put(w, fffd_escape, 6);
			p += 6;
		} else if (is_escape(p, end, 0xDC00, 0xDFFF, &cp)) {
			is_mended = true;
			if (high && p == string_start) {
				w += utf8_write(0x10000 + ((high - 0xD800) << 10) + ((unsigned)cp - 0xDC00), w);
				high = 0;
				carry->was_joined = true;
			} else {
				w = put(w, fffd_escape, 6);
			}
			p += 6;
		} else if (is_escape(p, end, 0, 0, &cp)) {
			is_mended = true;
			w = put(w, fffd_escape, 6);
			p += 6;
		} else if (*p == '\\') {
			size_t n = end - p < 2 ? 1 : 2;
			w = put(w, p, n);
			p += n;
		} else if (*p >= 0x80) {
			size_t n = utf8_seq_len(p, (size_t)(end - p));
			if (n == 0) {
				is_mended = true;
				w = put(w, fffd, 3);
				p++;
			} else {
				w = put(w, p, n);
				p += n;
			}
		} else {
			*w++ = *p++;
		}
	}
	if (!is_mended) {
		free(out);
		return NULL;
	}
	*w = '\0';
	*out_len = (size_t)(w - out);
	return (char *)out;
}
