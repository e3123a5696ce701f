#include "render.h"

#include <stdbool.h>
#include <stdlib.h>

/*
 * Bytes of the well-formed UTF-8 sequence at s (Unicode, table 3-7), or 0
 * when s starts with an invalid byte. Surrogates and overlong forms are
 * invalid, so a sequence of 4 bytes is exactly a code point above U+FFFF.
 */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	size_t need;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		need = 2;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		need = 3;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		need = 4;
	else
		return 0;
	/* The second byte's range excludes overlong forms, surrogates and code points above U+10FFFF. */
	unsigned lo = 0x80, hi = 0xBF;
	if (s[0] == 0xE0)
		lo = 0xA0;
	else if (s[0] == 0xED)
		hi = 0x9F;
	else if (s[0] == 0xF0)
		lo = 0x90;
	else if (s[0] == 0xF4)
		hi = 0x8F;
	if (n < need || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	return need;
}

/*
 * One step through text: the bytes of the next code point (an invalid byte is
 * a step of its own) and its UTF-16 units. Code points above U+FFFF take a
 * surrogate pair in UTF-16.
 */
static size_t next_char(const char *text, size_t len, size_t i, size_t *units)
{
	size_t n = utf8_seq_len((const unsigned char *)text + i, len - i);
	*units = n == 4 ? 2 : 1;
	return n ? n : 1;
}

size_t render_utf16_len(const char *text, size_t len)
{
	size_t units = 0;
	for (size_t i = 0; i < len;) {
		size_t u;
		i += next_char(text, len, i, &u);
		units += u;
	}
	return units;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/*
 * Where to end a part that starts at start and may not extend past limit
 * (limit < len, so text[limit] exists). The separator found is left out of
 * the part; the caller trims what whitespace remains.
 */
static size_t find_cut(const char *text, size_t len, size_t start, size_t limit)
{
	/* The separator may begin at limit itself: it is dropped, so it need not fit. */
	for (size_t k = limit; k > start; k--)
		if (text[k] == '\n' && k + 1 < len && text[k + 1] == '\n')
			return k;
	for (size_t k = limit; k > start; k--)
		if (text[k] == '\n')
			return k;
	for (size_t k = limit; k > start; k--)
		if (text[k] == ' ')
			return k;
	return limit;
}

static int add_part(struct render_part **parts, size_t *n, size_t *cap, size_t offset, size_t len)
{
	if (*n == *cap) {
		size_t new_cap = *cap ? *cap * 2 : 4;
		struct render_part *p = realloc(*parts, new_cap * sizeof *p);
		if (!p)
			return -1;
		*parts = p;
		*cap = new_cap;
	}
	(*parts)[(*n)++] = (struct render_part){offset, len};
	return 0;
}

long render_split_plain(const char *text, size_t len, size_t max_units, struct render_part **out)
{
	struct render_part *parts = NULL;
	size_t n = 0, cap = 0;
	/* One code point may need a surrogate pair; a smaller part could not hold it. */
	if (max_units < 2)
		max_units = 2;

	size_t pos = 0;
	for (;;) {
		while (pos < len && is_space(text[pos]))
			pos++;
		if (pos == len)
			break;

		/* The longest prefix from pos that fits, ending on a code point boundary. */
		size_t limit = pos, units = 0;
		while (limit < len) {
			size_t u;
			size_t step = next_char(text, len, limit, &u);
			if (units + u > max_units)
				break;
			units += u;
			limit += step;
		}
		size_t end = limit == len ? len : find_cut(text, len, pos, limit);
		size_t part_end = end;
		while (part_end > pos && is_space(text[part_end - 1]))
			part_end--;
		/* text[pos] is not whitespace, so the part is never empty. */
		if (add_part(&parts, &n, &cap, pos, part_end - pos) != 0) {
			free(parts);
			*out = NULL;
			return -1;
		}
		pos = end;
	}
	*out = parts;
	return (long)n;
}
