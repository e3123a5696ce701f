/*
 * libFuzzer target for src/render.c. The first three bytes pick the options
 * (max_units, max_entities, partial, reasoning shown); the rest is the text.
 *
 * render_split_plain: parts in order, within the limit, never starting or
 * ending with whitespace, and only whitespace left out between them.
 *
 * render_markdown: every message within its limits, valid UTF-8 without
 * whitespace at its ends (but a pre block's indentation), its entities
 * non-empty, inside it, on character boundaries, sorted, and nested only as
 * Telegram allows; and the messages together are the unsplit rendering, cut
 * only at whitespace, with every visible character under the same entity
 * types.
 */
#include "telegram/render.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static void check_split_plain(const char *text, size_t len, size_t max_units)
{
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
}

/* UTF-16 offset of each byte of valid UTF-8 text, SIZE_MAX inside a sequence; aborts on invalid text. */
static size_t *unit_offsets(const char *text, size_t len)
{
	size_t *at = malloc((len + 1) * sizeof *at);
	if (!at)
		abort();
	size_t u = 0;
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)text[i];
		size_t n = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
		if ((c >= 0x80 && c < 0xC2) || i + n > len ||
		    render_utf16_len(text + i, n) != (n == 4 ? 2 : 1))
			abort();
		at[i] = u;
		for (size_t k = 1; k < n; k++)
			at[i + k] = SIZE_MAX;
		u += n == 4 ? 2 : 1;
		i += n;
	}
	at[len] = u;
	return at;
}

static bool is_type(const struct render_entity *e, const char *type)
{
	return strcmp(e->type, type) == 0;
}

static bool is_quote(const struct render_entity *e)
{
	return is_type(e, "blockquote") || is_type(e, "expandable_blockquote");
}

static bool is_verbatim(const struct render_entity *e)
{
	return is_type(e, "pre") || is_type(e, "code");
}

static unsigned type_bit(const struct render_entity *e)
{
	static const char *const types[] = {"bold", "italic",    "strikethrough", "code",
	                                    "pre",  "text_link", "blockquote",    "expandable_blockquote"};
	for (unsigned i = 0; i < sizeof types / sizeof types[0]; i++)
		if (is_type(e, types[i]))
			return 1u << i;
	abort();
}

static void check_message(const struct render_message *m, size_t max_units, size_t max_entities)
{
	if (m->len == 0 || strlen(m->text) != m->len || is_space(m->text[m->len - 1]))
		abort();
	/* Only a code block or table keeps its first line's indentation. */
	size_t indent = 0;
	while (m->text[indent] == ' ' || m->text[indent] == '\t')
		indent++;
	bool is_pre_indent = false;
	for (size_t k = 0; k < m->n_entities && m->entities[k].offset == 0; k++)
		is_pre_indent =
		    is_pre_indent || (is_type(&m->entities[k], "pre") && m->entities[k].length > indent);
	if (is_space(m->text[indent]) || (indent > 0 && !is_pre_indent))
		abort();
	size_t *at = unit_offsets(m->text, m->len);
	size_t units = at[m->len];
	if (units > max_units || m->n_entities > max_entities)
		abort();
	for (size_t k = 0; k < m->n_entities; k++) {
		const struct render_entity *e = &m->entities[k];
		size_t end = e->offset + e->length;
		if (e->length == 0 || end > units)
			abort();
		bool starts_ok = false, ends_ok = false;
		for (size_t i = 0; i <= m->len; i++) {
			starts_ok = starts_ok || at[i] == e->offset;
			ends_ok = ends_ok || at[i] == end;
		}
		if (!starts_ok || !ends_ok)
			abort();
		if ((e->url != NULL) != is_type(e, "text_link") || (e->language && !is_type(e, "pre")))
			abort();
		(void)type_bit(e);
		if (k > 0) {
			const struct render_entity *p = &m->entities[k - 1];
			if (p->offset > e->offset || (p->offset == e->offset && p->length < e->length))
				abort();
		}
		for (size_t j = 0; j < k; j++) {
			const struct render_entity *o = &m->entities[j];
			if (o->offset + o->length <= e->offset)
				continue;
			/* o overlaps e: it must contain it, and Telegram must allow the nesting. */
			if (end > o->offset + o->length || is_verbatim(o) || (is_quote(o) && is_quote(e)) ||
			    (is_verbatim(e) && !is_quote(o)) || strcmp(o->type, e->type) == 0)
				abort();
		}
	}
	free(at);
}

/* Appends the visible bytes of the messages to chars and the entity types over each to types. */
static size_t visible_coverage(const struct render_output *out, char *chars, unsigned *types)
{
	size_t n = 0;
	for (size_t i = 0; i < out->n_parts; i++) {
		const struct render_message *m = &out->parts[i];
		size_t *at = unit_offsets(m->text, m->len);
		size_t u = 0;
		for (size_t b = 0; b < m->len; b++) {
			if (at[b] != SIZE_MAX)
				u = at[b];
			if (is_space(m->text[b]))
				continue;
			unsigned bits = 0;
			for (size_t k = 0; k < m->n_entities; k++)
				if (u >= m->entities[k].offset &&
				    u < m->entities[k].offset + m->entities[k].length)
					bits |= type_bit(&m->entities[k]);
			chars[n] = m->text[b];
			types[n] = bits;
			n++;
		}
		free(at);
	}
	return n;
}

static size_t total_len(const struct render_output *out)
{
	size_t n = 0;
	for (size_t i = 0; i < out->n_parts; i++)
		n += out->parts[i].len;
	return n;
}

static void check_render(const char *md, size_t len, const struct render_options *opt)
{
	struct render_output split, whole;
	if (render_markdown(md, len, opt, &split) != 0)
		abort();
	struct render_options unlimited = *opt;
	unlimited.max_units = SIZE_MAX / 4;
	unlimited.max_entities = SIZE_MAX / 4;
	if (render_markdown(md, len, &unlimited, &whole) != 0 || whole.n_parts > 1)
		abort();
	size_t max_units = opt->max_units == 0 ? RENDER_MAX_UNITS : opt->max_units < 2 ? 2 : opt->max_units;
	for (size_t i = 0; i < split.n_parts; i++)
		check_message(&split.parts[i], max_units, opt->max_entities);
	for (size_t i = 0; i < whole.n_parts; i++)
		check_message(&whole.parts[i], unlimited.max_units, unlimited.max_entities);

	/* The messages are consecutive pieces of the whole text with only whitespace between. */
	const char *full = whole.n_parts ? whole.parts[0].text : "";
	size_t pos = 0, full_len = strlen(full);
	for (size_t i = 0; i < split.n_parts; i++) {
		const struct render_message *m = &split.parts[i];
		size_t indent = 0;
		while (is_space(m->text[indent]))
			indent++;
		while (pos < full_len && is_space(full[pos]))
			pos++;
		size_t n = m->len - indent;
		if (pos < indent || memcmp(full + pos - indent, m->text, indent) != 0 || full_len - pos < n ||
		    memcmp(full + pos, m->text + indent, n) != 0)
			abort();
		pos += n;
	}
	while (pos < full_len && is_space(full[pos]))
		pos++;
	if (pos != full_len)
		abort();

	size_t cap = total_len(&whole) + 1;
	char *c1 = malloc(cap), *c2 = malloc(cap);
	unsigned *t1 = malloc(cap * sizeof *t1), *t2 = malloc(cap * sizeof *t2);
	if (!c1 || !c2 || !t1 || !t2)
		abort();
	size_t n1 = visible_coverage(&split, c1, t1), n2 = visible_coverage(&whole, c2, t2);
	if (n1 != n2 || memcmp(c1, c2, n1) != 0 || memcmp(t1, t2, n1 * sizeof *t1) != 0)
		abort();
	free(c1);
	free(c2);
	free(t1);
	free(t2);

	for (size_t i = 0; i < split.n_parts; i++) {
		struct buf b;
		buf_init(&b, SIZE_MAX - 1);
		if (render_write_entities(&b, &split.parts[i]) != BUF_OK)
			abort();
		json_t *j = json_loadb(b.data, b.len, 0, NULL);
		if (!j || json_array_size(j) != split.parts[i].n_entities)
			abort();
		json_decref(j);
		buf_free(&b);
	}
	render_output_free(&split);
	render_output_free(&whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	size_t max_units = ((size_t)data[0] << 8 | data[1]) % 600;
	const char *text = (const char *)data + 3;
	size_t len = size - 3;
	check_split_plain(text, len, max_units);

	/* At least 5 entities a message: 5 can start at one character (quote, link, bold, italic, strike). */
	struct render_options opt = {
	    .max_units = max_units,
	    .max_entities = 5 + (size_t)(data[2] >> 2) % 40,
	    .think = data[2] & 2 ? RENDER_THINK_QUOTE : RENDER_THINK_HIDE,
	    .is_partial = data[2] & 1,
	};
	check_render(text, len, &opt);
	return 0;
}
