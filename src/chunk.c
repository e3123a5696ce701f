#include "chunk.h"

#include <string.h>

#include "utf8.h"

#define MAX_DEPTH 32
#define MAX_DIGITS 18 /* fits a long and a json_int_t; jansson fails on overflow */

struct reader {
	const unsigned char *p;
	const unsigned char *end;
	struct chunk *out;
	struct buf *content;
	bool is_out_of_memory;
};

/* Every function below returns false when the chunk is refused (see chunk.h). */
/*
 * One member of an object being read: key is its raw bytes (NULL in objects
 * only skipped), seen the object's keys of interest met so far.
 */
typedef bool (*member_fn)(struct reader *r, const unsigned char *key, size_t len, int depth,
			  unsigned *seen);

static void skip_space(struct reader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
		r->p++;
}

static bool take(struct reader *r, unsigned char c)
{
	skip_space(r);
	if (r->p == r->end || *r->p != c)
		return false;
	r->p++;
	return true;
}

static bool at(struct reader *r, unsigned char c)
{
	skip_space(r);
	return r->p < r->end && *r->p == c;
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
static unsigned long unicode_escape(struct reader *r)
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

static bool append(struct reader *r, struct buf *to, const void *s, size_t n)
{
	if (!to || buf_append(to, s, n) == BUF_OK)
		return true;
	r->is_out_of_memory = true;
	return false;
}


/* A string at r->p (the opening quote); its unescaped bytes go to `to` unless NULL. */
static bool read_string(struct reader *r, struct buf *to)
{
	if (!take(r, '"'))
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
			if (cp == 0 || !append(r, to, u, utf8_encode(cp, u)))
				return false;
		}
		run = r->p;
	}
	return false;
}

/* A key of an object being read: its raw bytes, refused when written with escapes. */
static bool read_key(struct reader *r, const unsigned char **key, size_t *len)
{
	if (!take(r, '"'))
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

/* A number; *value is set when it is an integer (no fraction, no exponent: jansson's json_is_integer). */
static bool read_number(struct reader *r, long *value, bool *is_integer)
{
	skip_space(r);
	bool is_negative = r->p < r->end && *r->p == '-';
	if (is_negative)
		r->p++;
	const unsigned char *digits = r->p;
	long v = 0;
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

static bool skip_value(struct reader *r, int depth);

static bool skip_member(struct reader *r, const unsigned char *key, size_t len, int depth,
			unsigned *seen)
{
	(void)key;
	(void)len;
	(void)seen;
	return skip_value(r, depth);
}

/* An object whose members go to fn; with read_keys, fn is given the keys. */
static bool read_object(struct reader *r, int depth, member_fn fn, bool read_keys)
{
	if (depth > MAX_DEPTH || !take(r, '{'))
		return false;
	if (take(r, '}'))
		return true;
	unsigned seen = 0;
	do {
		const unsigned char *key = NULL;
		size_t len = 0;
		if (read_keys ? !read_key(r, &key, &len) : (!at(r, '"') || !read_string(r, NULL)))
			return false;
		if (!take(r, ':') || !fn(r, key, len, depth + 1, &seen))
			return false;
	} while (take(r, ','));
	return take(r, '}');
}

static bool skip_array(struct reader *r, int depth)
{
	if (depth > MAX_DEPTH || !take(r, '['))
		return false;
	if (take(r, ']'))
		return true;
	do {
		if (!skip_value(r, depth + 1))
			return false;
	} while (take(r, ','));
	return take(r, ']');
}

static bool literal(struct reader *r, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
		return false;
	r->p += n;
	return true;
}

static bool skip_value(struct reader *r, int depth)
{
	skip_space(r);
	if (r->p == r->end)
		return false;
	long v;
	bool is_integer;
	switch (*r->p) {
	case '{': return read_object(r, depth, skip_member, false);
	case '[': return skip_array(r, depth);
	case '"': return read_string(r, NULL);
	case 't': return literal(r, "true");
	case 'f': return literal(r, "false");
	case 'n': return literal(r, "null");
	default: return read_number(r, &v, &is_integer);
	}
}

static bool is_key(const unsigned char *key, size_t len, const char *name)
{
	return len == strlen(name) && memcmp(key, name, len) == 0;
}

/* Marks a key of interest as seen; false (refused) the second time: jansson keeps the last. */
static bool first_time(unsigned *seen, unsigned bit)
{
	if (*seen & bit)
		return false;
	*seen |= bit;
	return true;
}

static bool usage_integer(struct reader *r, long *to, int depth)
{
	skip_space(r);
	if (r->p == r->end || !(*r->p == '-' || (*r->p >= '0' && *r->p <= '9')))
		return skip_value(r, depth);
	long v;
	bool is_integer;
	if (!read_number(r, &v, &is_integer))
		return false;
	if (is_integer)
		*to = v;
	return true;
}

enum { PROMPT_TOKENS = 1, COMPLETION_TOKENS = 2 };

static bool usage_member(struct reader *r, const unsigned char *key, size_t len, int depth,
			 unsigned *seen)
{
	if (is_key(key, len, "prompt_tokens"))
		return first_time(seen, PROMPT_TOKENS) && usage_integer(r, &r->out->prompt_tokens, depth);
	if (is_key(key, len, "completion_tokens"))
		return first_time(seen, COMPLETION_TOKENS) &&
		       usage_integer(r, &r->out->completion_tokens, depth);
	return skip_value(r, depth);
}

enum { CONTENT = 1 };

static bool delta_member(struct reader *r, const unsigned char *key, size_t len, int depth,
			 unsigned *seen)
{
	if (is_key(key, len, "content")) {
		if (!first_time(seen, CONTENT))
			return false;
		return at(r, '"') ? read_string(r, r->content) : skip_value(r, depth);
	}
	return skip_value(r, depth);
}

enum { DELTA = 1, FINISH_REASON = 2 };

static bool choice_member(struct reader *r, const unsigned char *key, size_t len, int depth,
			  unsigned *seen)
{
	if (is_key(key, len, "delta")) {
		if (!first_time(seen, DELTA))
			return false;
		return at(r, '{') ? read_object(r, depth, delta_member, true) : skip_value(r, depth);
	}
	if (is_key(key, len, "finish_reason")) {
		if (!first_time(seen, FINISH_REASON))
			return false;
		if (!at(r, '"'))
			return skip_value(r, depth);
		r->out->is_finished = true;
		return read_string(r, NULL);
	}
	return skip_value(r, depth);
}

/* "choices": the first element is the answer; the others are only checked. */
static bool read_choices(struct reader *r, int depth)
{
	if (depth > MAX_DEPTH || !take(r, '['))
		return false;
	if (take(r, ']'))
		return true;
	bool ok = at(r, '{') ? read_object(r, depth + 1, choice_member, true) : skip_value(r, depth + 1);
	while (ok && take(r, ','))
		ok = skip_value(r, depth + 1);
	return ok && take(r, ']');
}

enum { USAGE = 1, CHOICES = 2 };

static bool root_member(struct reader *r, const unsigned char *key, size_t len, int depth,
			unsigned *seen)
{
	if (is_key(key, len, "error"))
		return false;
	if (is_key(key, len, "usage")) {
		if (!first_time(seen, USAGE))
			return false;
		return at(r, '{') ? read_object(r, depth, usage_member, true) : skip_value(r, depth);
	}
	if (is_key(key, len, "choices")) {
		if (!first_time(seen, CHOICES))
			return false;
		return at(r, '[') ? read_choices(r, depth) : skip_value(r, depth);
	}
	return skip_value(r, depth);
}

enum chunk_result chunk_read(const char *json, size_t len, struct chunk *out, struct buf *content)
{
	*out = (struct chunk){false, -1, -1};
	struct reader r = {(const unsigned char *)json, (const unsigned char *)json + len, out, content,
			   false};
	bool ok = read_object(&r, 1, root_member, true);
	skip_space(&r);
	if (r.is_out_of_memory)
		return CHUNK_NO_MEMORY;
	if (!ok || r.p != r.end) {
		*out = (struct chunk){false, -1, -1};
		return CHUNK_OTHER;
	}
	return CHUNK_READ;
}
