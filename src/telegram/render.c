#include "telegram/render.h"

#include <ctype.h>

#include "lib/buf.h"

#include <md4c.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/jsonw.h"
#include "lib/utf8.h"


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

/*
 * Markdown rendering, in stages:
 *   1. sanitize_input: the answer as valid UTF-8 with LF line ends;
 *   2. split_think: the leading <think>...</think> taken out;
 *   3. close_open_inlines (streaming only): markup open at the end closed;
 *   4. md4c's callbacks write the whole plain text once, recording entities
 *      (struct ent) in bytes and UTF-16 units as their spans and blocks close;
 *   5. split_messages cuts that text into messages and each entity with it.
 */

#define REPLACEMENT_CHAR "\xEF\xBF\xBD" /* U+FFFD */

/* Past this many list levels the indentation stops growing: deeper is unreadable on a phone anyway. */
#define MAX_INDENT_LEVEL 8
/* Table columns are padded to at most this many characters; longer cells overflow their column. */
#define MAX_COLUMN_WIDTH 40
/* A blockquote longer than this is sent expandable, so it does not fill the screen. */
#define LONG_QUOTE_LINES 5
#define LONG_QUOTE_UNITS 500
/* Telegram refuses the whole message when a text_link's URL does not parse; longer ones are left plain. */
#define MAX_URL_LEN 2048
/* Entities open at once: bold, italic, strikethrough, underline, link, code, blockquote. */
#define MAX_LIVE 8

/* --- input preparation --- */

/*
 * The input as valid UTF-8 in out: invalid bytes and NUL become U+FFFD
 * (CommonMark asks the same of NUL), CR LF and lone CR become LF, so md4c
 * and everything after it sees only well-formed text.
 */
static int sanitize_input(const char *in, size_t len, struct buf *out)
{
	size_t start = 0;
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)in[i];
		const char *repl = NULL;
		size_t step = 1;
		if (c == '\r') {
			repl = "\n";
			if (i + 1 < len && in[i + 1] == '\n')
				step = 2;
		} else if (c == 0) {
			repl = REPLACEMENT_CHAR;
		} else if (c >= 0x80) {
			size_t n = utf8_seq_len((const unsigned char *)in + i, len - i);
			if (n == 0)
				repl = REPLACEMENT_CHAR;
			else
				step = n;
		}
		if (!repl) {
			i += step;
			continue;
		}
		if (buf_append(out, in + start, i - start) != BUF_OK || buf_append_str(out, repl) != BUF_OK)
			return -1;
		i += step;
		start = i;
	}
	return buf_append(out, in + start, len - start) == BUF_OK ? 0 : -1;
}

/* --- reasoning text --- */

struct think_split {
	size_t think_start, think_end; /* the reasoning text, empty when none */
	size_t answer_start;           /* the Markdown answer runs from here to the end */
};

static bool has_prefix(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	return len >= n && memcmp(s, prefix, n) == 0;
}

/*
 * Reasoning models (DeepSeek R1, Qwen QwQ, ...) start their answer with
 * <think>...</think>. It is taken out before Markdown parsing: it is not
 * Markdown, and its text must not leak into the answer. While streaming the
 * closing tag may be missing (all is reasoning so far) or half-written.
 */
static struct think_split split_think(const char *s, size_t len, bool is_partial)
{
	static const char open_tag[] = "<think>", close_tag[] = "</think>";
	struct think_split t = {0, 0, 0};
	size_t p = 0;
	while (p < len && is_space(s[p]))
		p++;
	if (!has_prefix(s + p, len - p, open_tag)) {
		/* "<thi" may be the start of the tag: show nothing rather than a flash of it. */
		if (is_partial && p < len && len - p < strlen(open_tag) &&
		    memcmp(s + p, open_tag, len - p) == 0)
			t.answer_start = len;
		return t;
	}
	t.think_start = p + strlen(open_tag);
	const char *close = NULL;
	for (size_t k = t.think_start; k + strlen(close_tag) <= len; k++)
		if (s[k] == '<' && memcmp(s + k, close_tag, strlen(close_tag)) == 0) {
			close = s + k;
			break;
		}
	if (close) {
		t.think_end = (size_t)(close - s);
		t.answer_start = t.think_end + strlen(close_tag);
		return t;
	}
	t.think_end = len;
	t.answer_start = len;
	if (is_partial) {
		/* A closing tag being streamed: "...</thi". */
		for (size_t n = strlen(close_tag) - 1; n > 0; n--)
			if (len - t.think_start >= n && memcmp(s + len - n, close_tag, n) == 0) {
				t.think_end = len - n;
				break;
			}
	}
	return t;
}

/* --- closing what a streamed answer left open --- */

static bool is_ascii_punct(char c)
{
	return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
	       (c >= '{' && c <= '~');
}

static bool is_blank_range(const char *s, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (!is_space(s[i]))
			return false;
	return true;
}

static size_t run_length(const char *s, size_t len, size_t i)
{
	size_t n = 1;
	while (i + n < len && s[i + n] == s[i])
		n++;
	return n;
}

/* A list item marker ("- ", "* ", "+ ", "1. ", "1) ") at s[i]. */
static bool is_list_marker(const char *s, size_t len, size_t i)
{
	if (i < len && (s[i] == '-' || s[i] == '*' || s[i] == '+'))
		return i + 1 == len || s[i + 1] == ' ' || s[i + 1] == '\t';
	size_t k = i;
	while (k < len && k - i < 9 && s[k] >= '0' && s[k] <= '9')
		k++;
	if (k == i || k >= len || (s[k] != '.' && s[k] != ')'))
		return false;
	return k + 1 == len || s[k + 1] == ' ' || s[k + 1] == '\t';
}

/*
 * Where the last block of s starts, for closing its inline markup: after the
 * last blank line, fenced code block, heading, or at the last list item or
 * table row. Sets *in_fence when s ends inside a fenced code block, which
 * md4c already runs to the end of the text.
 */
static size_t last_block_start(const char *s, size_t len, bool *in_fence)
{
	size_t start = 0;
	char fence_char = 0;
	size_t fence_len = 0;
	bool after_heading = false;
	for (size_t i = 0; i < len;) {
		const char *nl = memchr(s + i, '\n', len - i);
		size_t eol = nl ? (size_t)(nl - s) : len;
		size_t next = nl ? eol + 1 : len;
		/* Skip indentation and blockquote markers: they are containers, not inline text. */
		size_t j = i;
		while (j < eol && (s[j] == ' ' || s[j] == '\t' || s[j] == '>'))
			j++;
		size_t run = j < eol && (s[j] == '`' || s[j] == '~') ? run_length(s, eol, j) : 0;
		/* A backtick fence's info string holds no backtick (CommonMark 4.5). */
		bool is_fence = run >= 3 && (s[j] == '~' || !memchr(s + j + run, '`', eol - j - run));
		if (fence_char) {
			if (run >= fence_len && s[j] == fence_char && is_blank_range(s, j + run, eol)) {
				fence_char = 0;
				start = next;
			}
		} else if (is_fence) {
			fence_char = s[j];
			fence_len = run;
			start = next;
		} else if (j == eol || is_blank_range(s, j, eol)) {
			start = next;
		} else if (after_heading || s[j] == '#' || s[j] == '|' || is_list_marker(s, eol, j)) {
			start = j;
		}
		after_heading = !fence_char && j < eol && s[j] == '#';
		i = next;
	}
	*in_fence = fence_char != 0;
	return start;
}

struct delim {
	char c;
	size_t count; /* marker characters still open */
	size_t pos;   /* where the opening run starts */
	size_t after; /* first byte after the opening run */
};

struct delim_stack {
	struct delim *d;
	size_t n, cap;
	size_t n_of[3]; /* openers of '*', '_', '~' in the stack, so a closer without one costs nothing */
};

static size_t delim_index(char c)
{
	return c == '*' ? 0 : c == '_' ? 1 : 2;
}

static int push_delim(struct delim_stack *st, struct delim d)
{
	if (st->n == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 16;
		struct delim *p = realloc(st->d, cap * sizeof *p);
		if (!p)
			return -1;
		st->d = p;
		st->cap = cap;
	}
	st->d[st->n++] = d;
	st->n_of[delim_index(d.c)]++;
	return 0;
}

static void pop_delim(struct delim_stack *st)
{
	st->n_of[delim_index(st->d[--st->n].c)]--;
}

/*
 * Matches an emphasis run of s[i..i+run) against the open ones, CommonMark's
 * flanking rules simplified: a run can open when followed by a non-space, and
 * close when preceded by one ("_" also not inside a word). Sets *is_used when
 * the run opened or closed something.
 */
static int scan_emphasis_run(const char *s, size_t len, size_t seg, size_t i, size_t run,
                             struct delim_stack *st, bool *is_used)
{
	char c = s[i];
	char prev = i > seg ? s[i - 1] : ' ', next = i + run < len ? s[i + run] : ' ';
	bool prev_space = is_space(prev), next_space = is_space(next);
	bool left = !next_space && (!is_ascii_punct(next) || prev_space || is_ascii_punct(prev));
	bool right = !prev_space && (!is_ascii_punct(prev) || next_space || is_ascii_punct(next));
	bool can_open = left, can_close = right;
	if (c == '_') {
		can_open = left && (!right || is_ascii_punct(prev));
		can_close = right && (!left || is_ascii_punct(next));
	}
	*is_used = false;
	if (c == '~' && run > 2)
		return 0;
	size_t left_over = run;
	if (can_close && st->n_of[delim_index(c)] > 0) {
		size_t k = st->n;
		while (st->d[k - 1].c != c)
			k--;
		if (c != '~' || st->d[k - 1].count == run) {
			/* Openers above the match can no longer close: they stay literal. */
			while (st->n > k)
				pop_delim(st);
			while (left_over > 0 && st->n > 0 && st->d[st->n - 1].c == c) {
				struct delim *d = &st->d[st->n - 1];
				size_t m = d->count < left_over ? d->count : left_over;
				d->count -= m;
				left_over -= m;
				if (d->count == 0)
					pop_delim(st);
			}
			*is_used = true;
		}
	}
	if (left_over > 0 && can_open) {
		*is_used = true;
		return push_delim(st, (struct delim){c, left_over, i + run - left_over, i + run});
	}
	return 0;
}

static void trim_trailing_space(struct buf *b)
{
	while (b->len > 0 && is_space(b->data[b->len - 1]))
		b->len--;
	if (b->data)
		b->data[b->len] = '\0';
}

static void truncate_buf(struct buf *b, size_t len)
{
	if (len < b->len) {
		b->len = len;
		b->data[len] = '\0';
	}
}

/*
 * A streamed answer stops anywhere. So that its tail shows formatted rather
 * than as literal markers, the inline markup left open in the last block is
 * closed: an unclosed `code` gets its backticks, then **, *, _, ~~ theirs,
 * innermost first; a marker with nothing after it yet is dropped.
 */
static int close_open_inlines(struct buf *md)
{
	const char *s = md->data;
	size_t len = md->len;
	if (len == 0)
		return 0;
	bool in_fence;
	size_t seg = last_block_start(s, len, &in_fence);
	if (in_fence)
		return 0;

	struct delim_stack st = {NULL, 0, 0, {0, 0, 0}};
	bool in_code = false;
	size_t code_run = 0, code_pos = 0;
	size_t unused_tail = len; /* a marker run at the very end that neither opened nor closed */
	size_t tail = len;
	while (tail > seg && is_space(s[tail - 1]))
		tail--;
	int rc = -1;
	for (size_t i = seg; i < len;) {
		char c = s[i];
		if (in_code) {
			size_t run = c == '`' ? run_length(s, len, i) : 1;
			if (c == '`' && run == code_run)
				in_code = false;
			i += run;
			continue;
		}
		if (c == '\\' && i + 1 < len && is_ascii_punct(s[i + 1])) {
			i += 2;
			continue;
		}
		if (c == '`') {
			code_run = run_length(s, len, i);
			code_pos = i;
			in_code = true;
			i += code_run;
			continue;
		}
		if (c == '*' || c == '_' || c == '~') {
			size_t run = run_length(s, len, i);
			bool is_used;
			if (scan_emphasis_run(s, len, seg, i, run, &st, &is_used) != 0)
				goto out;
			if (!is_used && i + run == tail)
				unused_tail = i;
			i += run;
			continue;
		}
		i++;
	}

	truncate_buf(md, unused_tail);
	if (in_code) {
		if (is_blank_range(md->data, code_pos + code_run, md->len)) {
			truncate_buf(md, code_pos);
		} else {
			/* A backtick right before the closer would lengthen it: a space keeps them apart. */
			if (md->data[md->len - 1] == '`' && buf_append_str(md, " ") != BUF_OK)
				goto out;
			for (size_t k = 0; k < code_run; k++)
				if (buf_append_str(md, "`") != BUF_OK)
					goto out;
		}
	}
	while (st.n > 0) {
		struct delim *d = &st.d[--st.n];
		if (d->after >= md->len || is_blank_range(md->data, d->after, md->len)) {
			truncate_buf(md, d->pos);
			continue;
		}
		/* A closer after a space would not be right-flanking. */
		trim_trailing_space(md);
		for (size_t k = 0; k < d->count; k++)
			if (buf_append(md, &d->c, 1) != BUF_OK)
				goto out;
	}
	rc = 0;
out:
	free(st.d);
	return rc;
}

/* --- HTML entities and attributes --- */

static int append_code_point(struct buf *b, uint32_t cp)
{
	unsigned char u[4];
	/* CommonMark: NUL, surrogates and values past U+10FFFF become U+FFFD. */
	if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
		cp = 0xFFFD;
	return buf_append(b, u, utf8_write(cp, u)) == BUF_OK ? 0 : -1;
}

/*
 * The entities models actually write. md4c passes any &name; through
 * undecoded (it has no table); unknown names stay literal text.
 */
/* clang-format off */
static const struct {
	const char *name;
	const char *text;
} named_entities[] = {
    {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}, {"nbsp", "\xC2\xA0"},
    {"copy", "©"}, {"reg", "®"}, {"trade", "™"}, {"hellip", "…"}, {"mdash", "—"}, {"ndash", "–"},
    {"laquo", "«"}, {"raquo", "»"}, {"ldquo", "“"}, {"rdquo", "”"}, {"lsquo", "‘"}, {"rsquo", "’"},
    {"bull", "•"}, {"middot", "·"}, {"times", "×"}, {"divide", "÷"}, {"deg", "°"}, {"plusmn", "±"},
    {"minus", "−"}, {"le", "≤"}, {"ge", "≥"}, {"ne", "≠"}, {"asymp", "≈"}, {"infin", "∞"},
    {"larr", "←"}, {"rarr", "→"}, {"uarr", "↑"}, {"darr", "↓"}, {"harr", "↔"}, {"rArr", "⇒"},
    {"euro", "€"}, {"pound", "£"}, {"yen", "¥"}, {"cent", "¢"}, {"sect", "§"}, {"para", "¶"},
    {"micro", "µ"}, {"frac12", "½"}, {"frac14", "¼"}, {"frac34", "¾"}, {"sup2", "²"}, {"sup3", "³"},
    {"alpha", "α"}, {"beta", "β"}, {"gamma", "γ"}, {"delta", "δ"}, {"pi", "π"}, {"sigma", "σ"},
    {"omega", "ω"}, {"lambda", "λ"}, {"mu", "μ"}, {"theta", "θ"}, {"Delta", "Δ"}, {"Sigma", "Σ"},
    {"check", "✓"}, {"shy", "\xC2\xAD"}, {"zwj", "\xE2\x80\x8D"}, {"zwnj", "\xE2\x80\x8C"},
};
/* clang-format on */

/* Decodes the entity s[0..n) ("&amp;", "&#1234;", "&#x1F600;") into b. */
static int append_entity(struct buf *b, const char *s, size_t n)
{
	if (n >= 4 && s[1] == '#') {
		bool is_hex = s[2] == 'x' || s[2] == 'X';
		uint32_t cp = 0;
		/* md4c allows at most 7 decimal or 6 hex digits: no overflow. */
		for (size_t i = is_hex ? 3 : 2; i + 1 < n; i++) {
			char c = s[i];
			uint32_t d = c >= '0' && c <= '9'   ? (uint32_t)(c - '0')
			             : c >= 'a' && c <= 'f' ? (uint32_t)(c - 'a' + 10)
			                                    : (uint32_t)(c - 'A' + 10);
			cp = cp * (is_hex ? 16 : 10) + d;
		}
		return append_code_point(b, cp);
	}
	if (n >= 3) {
		for (size_t i = 0; i < sizeof named_entities / sizeof named_entities[0]; i++) {
			size_t nl = strlen(named_entities[i].name);
			if (nl == n - 2 && memcmp(s + 1, named_entities[i].name, nl) == 0)
				return buf_append_str(b, named_entities[i].text) == BUF_OK ? 0 : -1;
		}
	}
	return buf_append(b, s, n) == BUF_OK ? 0 : -1;
}

/* An md4c attribute (link destination, code language) as a C string: owned, NULL on OOM. */
static char *attribute_string(const MD_ATTRIBUTE *a)
{
	struct buf b;
	buf_init(&b, (size_t)a->size * 4 + 16);
	for (unsigned i = 0; a->substr_offsets[i] < a->size; i++) {
		const char *s = a->text + a->substr_offsets[i];
		size_t n = a->substr_offsets[i + 1] - a->substr_offsets[i];
		int rc;
		if (a->substr_types[i] == MD_TEXT_ENTITY)
			rc = append_entity(&b, s, n);
		else if (a->substr_types[i] == MD_TEXT_NULLCHAR)
			rc = buf_append_str(&b, REPLACEMENT_CHAR) == BUF_OK ? 0 : -1;
		else
			rc = buf_append(&b, s, n) == BUF_OK ? 0 : -1;
		if (rc != 0) {
			buf_free(&b);
			return NULL;
		}
	}
	return buf_take(&b);
}

/*
 * Whether Telegram takes url as a text_link. It refuses the whole message
 * when a text_link's URL does not parse ("Wrong message entity"), and its
 * parser (tdlib's LinkManager::check_link) wants a scheme it knows and a host
 * with a dot ("http://localhost" fails). Only plain http(s) URLs with an
 * ASCII host pass here; anything else keeps its text, unlinked.
 */
static bool is_telegram_url(const char *url)
{
	size_t len = strlen(url);
	size_t i;
	if (len > MAX_URL_LEN)
		return false;
	if (len >= 7 && strncasecmp(url, "http://", 7) == 0)
		i = 7;
	else if (len >= 8 && strncasecmp(url, "https://", 8) == 0)
		i = 8;
	else
		return false;
	size_t host = i;
	while (i < len && url[i] != ':' && url[i] != '/' && url[i] != '?' && url[i] != '#') {
		char c = url[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_'))
			return false;
		i++;
	}
	size_t host_end = i;
	if (host_end == host || url[host] == '.' || url[host_end - 1] == '.' ||
	    !memchr(url + host, '.', host_end - host))
		return false;
	if (i < len && url[i] == ':') {
		unsigned long port = 0;
		size_t digits = 0;
		for (i++; i < len && url[i] >= '0' && url[i] <= '9'; i++, digits++)
			if (digits < 6)
				port = port * 10 + (unsigned long)(url[i] - '0');
		if (digits == 0 || digits > 5 || port == 0 || port > 65535)
			return false;
		if (i < len && url[i] != '/' && url[i] != '?' && url[i] != '#')
			return false;
	}
	for (; i < len; i++)
		if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7F)
			return false;
	return true;
}

/* --- the renderer --- */

enum sep { SEP_NONE, SEP_LINE, SEP_PARA };

/* Entity types, compared by address. */
static const char TYPE_BOLD[] = "bold", TYPE_ITALIC[] = "italic", TYPE_STRIKE[] = "strikethrough",
                  TYPE_UNDERLINE[] = "underline", TYPE_CODE[] = "code", TYPE_PRE[] = "pre",
                  TYPE_LINK[] = "text_link", TYPE_QUOTE[] = "blockquote",
                  TYPE_LONG_QUOTE[] = "expandable_blockquote";

/* A finished entity, in bytes and UTF-16 units of the whole text. */
struct ent {
	const char *type;
	size_t b0, b1;
	size_t u0, u1;
	size_t seq; /* order of completion: among equal ranges the outer one completes later */
	char *url;  /* owned */
	char *lang; /* owned */
};

enum open_kind {
	OPEN_NONE,  /* a span or block that makes no entity */
	OPEN_STYLE, /* bold, italic, strikethrough: split around code spans */
	OPEN_LINK,  /* link or image */
	OPEN_CODE,  /* code span */
	OPEN_QUOTE, /* blockquote */
};

/* A span or block whose entity is still open. */
struct open {
	enum open_kind kind;
	const char *type; /* NULL: no entity */
	size_t b0, u0;
	bool is_pending;   /* starts at the next content */
	bool is_suspended; /* interrupted by a code span (Telegram nests nothing with code) */
	bool is_line;      /* starts before the line's indentation and marker (blockquotes) */
	bool is_block;     /* opened by a block (blockquote, heading), not a span */
	char *url;         /* owned: the link destination (even when not a valid text_link) */
};

/* Lists and blockquotes, for list markers, indentation and the spacing between blocks. */
struct container {
	MD_BLOCKTYPE type;
	bool is_tight;
	unsigned long long number; /* ordered lists: the next item's number */
};

struct cell {
	size_t off, len; /* in table.text */
	size_t width;    /* characters (code points) */
	size_t row;
};

struct table {
	struct buf text;
	struct cell *cells;
	size_t n_cells, cap_cells;
	size_t n_rows, n_head_rows;
	unsigned n_cols;
	MD_ALIGN *align; /* n_cols */
	bool in_head, in_cell;
	size_t col; /* column of the current cell */
};

enum raw_kind { RAW_NONE, RAW_CODE, RAW_HTML };

struct renderer {
	struct buf text;
	size_t units; /* UTF-16 units of text */

	struct ent *ents;
	size_t n_ents, cap_ents;

	struct open *open;
	size_t n_open, cap_open, n_pending;
	/*
	 * The open entries that can make an entity (or, for the outermost link,
	 * show its URL), as indices into open: at most one of each style, one
	 * link, one code span and one blockquote, however deep the nesting, so
	 * work per span or text stays constant.
	 */
	size_t live[MAX_LIVE];
	size_t n_live;

	struct container *cont;
	size_t n_cont, cap_cont;
	size_t list_level; /* list items open */
	size_t quote_depth;
	size_t link_depth;

	enum sep sep;
	bool at_line_start;
	char marker[48]; /* the pending list item's marker, "" when none */

	enum raw_kind raw;
	struct buf raw_text; /* the code or HTML block being read */
	size_t raw_col;      /* column in raw_text, for tab stops */
	char *raw_lang;

	struct table *table;
};

/*
 * UTF-16 units of text known to be valid UTF-8 (everything after
 * sanitize_input): one per lead byte, one more per 4-byte sequence.
 */
static size_t valid_utf16_len(const char *s, size_t n)
{
	size_t units = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		units += ((c & 0xC0) != 0x80) + (c >= 0xF0);
	}
	return units;
}

/* Bytes of the code point at the lead byte c of valid UTF-8, and its UTF-16 units. */
static size_t valid_char_len(unsigned char c, size_t *units)
{
	*units = c >= 0xF0 ? 2 : 1;
	return c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
}

static int put(struct renderer *r, const char *s, size_t n)
{
	if (buf_append(&r->text, s, n) != BUF_OK)
		return -1;
	r->units += valid_utf16_len(s, n);
	return 0;
}

static int put_str(struct renderer *r, const char *s)
{
	return put(r, s, strlen(s));
}

static int put_spaces(struct renderer *r, size_t n)
{
	static const char spaces[] = "                                ";
	while (n > 0) {
		size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
		if (put(r, spaces, k) != 0)
			return -1;
		n -= k;
	}
	return 0;
}

static int add_ent(struct renderer *r, const char *type, size_t b0, size_t u0, char *url, char *lang)
{
	if (r->n_ents == r->cap_ents) {
		size_t cap = r->cap_ents ? r->cap_ents * 2 : 64;
		struct ent *p = realloc(r->ents, cap * sizeof *p);
		if (!p) {
			free(url);
			free(lang);
			return -1;
		}
		r->ents = p;
		r->cap_ents = cap;
	}
	r->ents[r->n_ents] = (struct ent){type, b0, r->text.len, u0, r->units, r->n_ents, url, lang};
	r->n_ents++;
	return 0;
}

static struct open *push_open(struct renderer *r, enum open_kind kind, const char *type)
{
	if (r->n_open == r->cap_open) {
		size_t cap = r->cap_open ? r->cap_open * 2 : 16;
		struct open *p = realloc(r->open, cap * sizeof *p);
		if (!p)
			return NULL;
		r->open = p;
		r->cap_open = cap;
	}
	bool is_live = (type || (kind == OPEN_LINK && r->link_depth == 0)) && r->n_live < MAX_LIVE;
	struct open *o = &r->open[r->n_open];
	*o = (struct open){kind, is_live ? type : NULL, 0, 0, is_live, false, false, false, NULL};
	if (is_live) {
		r->live[r->n_live++] = r->n_open;
		r->n_pending++;
	}
	r->n_open++;
	return o;
}

static bool is_style_open(const struct renderer *r, const char *type)
{
	for (size_t i = 0; i < r->n_live; i++)
		if (r->open[r->live[i]].type == type)
			return true;
	return false;
}

/* Starts the pending entities here: the line ones (blockquotes) or the others. */
static void resolve_pending(struct renderer *r, bool is_line)
{
	if (r->n_pending == 0)
		return;
	for (size_t i = 0; i < r->n_live; i++) {
		struct open *o = &r->open[r->live[i]];
		if (o->is_pending && !o->is_suspended && o->is_line == is_line) {
			o->is_pending = false;
			o->b0 = r->text.len;
			o->u0 = r->units;
			r->n_pending--;
		}
	}
}

static size_t indent_level(const struct renderer *r)
{
	return r->list_level < MAX_INDENT_LEVEL ? r->list_level : MAX_INDENT_LEVEL;
}

/*
 * The pending separator, then the line's indentation and list marker as
 * needed. Before a raw block (code, table) the marker goes on a line of its
 * own and the block's lines are not indented: indentation inside a pre
 * block would be part of the code.
 */
static int begin_line(struct renderer *r, bool is_raw)
{
	if (r->sep != SEP_NONE) {
		if (r->text.len > 0 && put_str(r, r->sep == SEP_PARA ? "\n\n" : "\n") != 0)
			return -1;
		r->sep = SEP_NONE;
		r->at_line_start = true;
	}
	resolve_pending(r, true);
	if (!r->at_line_start)
		return 0;
	r->at_line_start = false;
	size_t level = indent_level(r);
	if (r->marker[0]) {
		if (put_spaces(r, 2 * (level - 1)) != 0 || put_str(r, r->marker) != 0)
			return -1;
		r->marker[0] = '\0';
		if (is_raw) {
			r->sep = SEP_LINE;
			return 0;
		}
		return put_str(r, " ");
	}
	return is_raw ? 0 : put_spaces(r, 2 * level);
}

/* Writes what must precede new content, then starts the entities waiting for it. */
static int begin_content(struct renderer *r)
{
	if ((r->sep != SEP_NONE || r->at_line_start || r->n_pending) && begin_line(r, false) != 0)
		return -1;
	resolve_pending(r, false);
	return 0;
}

static bool in_cell(const struct renderer *r)
{
	return r->table && r->table->in_cell;
}

static int cell_append(struct renderer *r, const char *s, size_t n)
{
	struct table *t = r->table;
	if (buf_append(&t->text, s, n) != BUF_OK)
		return -1;
	t->cells[t->n_cells - 1].len += n;
	return 0;
}

/* Inline text: into the table cell being read, or onto the output. */
static int emit_text(struct renderer *r, const char *s, size_t n)
{
	if (n == 0)
		return 0;
	if (r->table) {
		if (!in_cell(r))
			return 0;
		/* Tabs would break the columns' alignment. */
		size_t start = 0;
		for (size_t i = 0; i < n; i++)
			if (s[i] == '\t' || s[i] == '\n') {
				if (cell_append(r, s + start, i - start) != 0 || cell_append(r, " ", 1) != 0)
					return -1;
				start = i + 1;
			}
		return cell_append(r, s + start, n - start);
	}
	if (begin_content(r) != 0)
		return -1;
	return put(r, s, n);
}

static int emit_line_break(struct renderer *r)
{
	if (r->table)
		return emit_text(r, " ", 1);
	if (begin_content(r) != 0 || put_str(r, "\n") != 0)
		return -1;
	/* The next line's indentation is written with its content, so no line ends in spaces. */
	r->at_line_start = true;
	return 0;
}

static int emit_entity_ref(struct renderer *r, const char *s, size_t n)
{
	struct buf b;
	buf_init(&b, 64);
	int rc = append_entity(&b, s, n);
	if (rc == 0)
		rc = emit_text(r, b.data, b.len);
	buf_free(&b);
	return rc;
}

/* Code block text, with tabs expanded to 4-column stops: Telegram shows a tab as one space. */
static int raw_append_code(struct renderer *r, const char *s, size_t n)
{
	size_t start = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\t') {
			static const char spaces[] = "    ";
			if (buf_append(&r->raw_text, s + start, i - start) != BUF_OK ||
			    buf_append(&r->raw_text, spaces, 4 - r->raw_col % 4) != BUF_OK)
				return -1;
			r->raw_col += 4 - r->raw_col % 4;
			start = i + 1;
		} else if (c == '\n') {
			r->raw_col = 0;
		} else if ((c & 0xC0) != 0x80) {
			r->raw_col++;
		}
	}
	return buf_append(&r->raw_text, s + start, n - start) == BUF_OK ? 0 : -1;
}

static bool is_tight_item(const struct renderer *r)
{
	return r->n_cont >= 2 && r->cont[r->n_cont - 1].type == MD_BLOCK_LI &&
	       r->cont[r->n_cont - 2].is_tight;
}

/* After a block: a blank line before the next, a line break between tight list items' blocks. */
static void end_block(struct renderer *r)
{
	r->sep = is_tight_item(r) ? SEP_LINE : SEP_PARA;
}

static void start_block(struct renderer *r)
{
	if (r->sep == SEP_NONE && r->text.len > 0)
		r->sep = SEP_LINE;
}

/* A list item whose marker is still unwritten gets it on a line of its own. */
static int flush_marker(struct renderer *r)
{
	if (!r->marker[0])
		return 0;
	return begin_line(r, true); /* leaves the marker alone on its line */
}

/*
 * A whole block of preformatted text (code, table, raw HTML, reasoning) as
 * one entity of type (none when NULL), on lines of its own. lang is owned.
 */
static int emit_block(struct renderer *r, const char *s, size_t n, const char *type, char *lang)
{
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	while (n > 0 && s[0] == '\n') {
		s++;
		n--;
	}
	if (n == 0 || is_blank_range(s, 0, n)) {
		free(lang);
		return 0;
	}
	start_block(r);
	/* flush_marker leaves a separator pending, so the block starts on the next line. */
	if (flush_marker(r) != 0 || begin_line(r, true) != 0) {
		free(lang);
		return -1;
	}
	resolve_pending(r, false);
	size_t b0 = r->text.len, u0 = r->units;
	if (put(r, s, n) != 0) {
		free(lang);
		return -1;
	}
	if (!type) {
		free(lang);
		return 0;
	}
	return add_ent(r, type, b0, u0, NULL, lang);
}

static bool is_long_quote(const struct renderer *r, const struct open *o)
{
	if (r->units - o->u0 > LONG_QUOTE_UNITS)
		return true;
	size_t lines = 1;
	for (size_t i = o->b0; i < r->text.len; i++)
		if (r->text.data[i] == '\n' && ++lines > LONG_QUOTE_LINES)
			return true;
	return false;
}

/* Closes the innermost open span or block, making its entity. */
static int pop_open(struct renderer *r)
{
	struct open o = r->open[--r->n_open];
	if (r->n_live > 0 && r->live[r->n_live - 1] == r->n_open)
		r->n_live--;
	if (o.is_pending)
		r->n_pending--;
	int rc = 0;
	bool is_empty = o.is_pending || o.is_suspended || r->text.len == o.b0;
	if (o.kind == OPEN_LINK) {
		r->link_depth--;
		if (r->link_depth == 0 && !r->table && is_empty && o.url && o.url[0]) {
			/* [](url), ![](url): nothing to click on, so the address itself is shown. */
			rc = emit_text(r, o.url, strlen(o.url));
		} else if (o.type && !is_empty) {
			/* An autolink shows its own URL: Telegram links that text by itself. */
			size_t n = r->text.len - o.b0;
			bool is_autolink = strlen(o.url) == n && memcmp(r->text.data + o.b0, o.url, n) == 0;
			if (!is_autolink) {
				rc = add_ent(r, o.type, o.b0, o.u0, o.url, NULL);
				o.url = NULL;
			}
		}
		free(o.url);
		return rc;
	}
	if (o.kind == OPEN_CODE) {
		/* Bold, italic, strikethrough around the code span resume after it. */
		for (size_t i = 0; i < r->n_live; i++) {
			struct open *s = &r->open[r->live[i]];
			if (s->is_suspended) {
				s->is_suspended = false;
				s->is_pending = true;
				r->n_pending++;
			}
		}
	}
	if (o.kind == OPEN_QUOTE)
		r->quote_depth--;
	if (o.type && !is_empty) {
		const char *type = o.type;
		if (o.kind == OPEN_QUOTE && is_long_quote(r, &o))
			type = TYPE_LONG_QUOTE;
		rc = add_ent(r, type, o.b0, o.u0, NULL, NULL);
	}
	free(o.url);
	return rc;
}

static int open_style(struct renderer *r, const char *type)
{
	/* Telegram refuses an entity nested in one of its own type; the inner one adds nothing. */
	bool is_dup = r->table || is_style_open(r, type);
	return push_open(r, is_dup ? OPEN_NONE : OPEN_STYLE, is_dup ? NULL : type) ? 0 : -1;
}

static int open_link(struct renderer *r, const MD_ATTRIBUTE *href)
{
	char *url = attribute_string(href);
	if (!url)
		return -1;
	/* A link holds no other link, and a table is one pre block. */
	bool is_linked = !r->table && r->link_depth == 0 && is_telegram_url(url);
	struct open *o = push_open(r, OPEN_LINK, is_linked ? TYPE_LINK : NULL);
	if (!o) {
		free(url);
		return -1;
	}
	o->url = url;
	r->link_depth++;
	return 0;
}

static int open_code_span(struct renderer *r)
{
	/* Telegram allows code inside nothing but a blockquote: in a link it stays plain text. */
	if (r->table || r->link_depth > 0)
		return push_open(r, OPEN_NONE, NULL) ? 0 : -1;
	/* Innermost first: of equal ranges the outer entity completes later (see compare_ents). */
	for (size_t i = r->n_live; i-- > 0;) {
		struct open *o = &r->open[r->live[i]];
		if (o->kind != OPEN_STYLE || o->is_suspended)
			continue;
		if (!o->is_pending && r->text.len > o->b0 &&
		    add_ent(r, o->type, o->b0, o->u0, NULL, NULL) != 0)
			return -1;
		if (o->is_pending)
			r->n_pending--;
		o->is_pending = false;
		o->is_suspended = true;
	}
	return push_open(r, OPEN_CODE, TYPE_CODE) ? 0 : -1;
}

static int on_enter_span(MD_SPANTYPE type, void *detail, void *userdata)
{
	struct renderer *r = userdata;
	/* Nothing nests in code; md4c should not try, this holds if it does. */
	if (r->n_live > 0 && r->open[r->live[r->n_live - 1]].kind == OPEN_CODE)
		return push_open(r, OPEN_NONE, NULL) ? 0 : -1;
	switch (type) {
	case MD_SPAN_EM:
		return open_style(r, TYPE_ITALIC);
	case MD_SPAN_STRONG:
		return open_style(r, TYPE_BOLD);
	case MD_SPAN_DEL:
		return open_style(r, TYPE_STRIKE);
	case MD_SPAN_U:
		return open_style(r, TYPE_UNDERLINE);
	case MD_SPAN_A:
		return open_link(r, &((MD_SPAN_A_DETAIL *)detail)->href);
	case MD_SPAN_IMG:
		return open_link(r, &((MD_SPAN_IMG_DETAIL *)detail)->src);
	case MD_SPAN_CODE:
		return open_code_span(r);
	default:
		return push_open(r, OPEN_NONE, NULL) ? 0 : -1;
	}
}

static int on_leave_span(MD_SPANTYPE type, void *detail, void *userdata)
{
	struct renderer *r = userdata;
	(void)type;
	(void)detail;
	/* md4c 0.4.8 can leave a span it never entered (seen with emphasis around a table cell's code). */
	if (r->n_open == 0 || r->open[r->n_open - 1].is_block)
		return 0;
	return pop_open(r);
}

/*
 * Closes spans md4c left open. Spans never outlive their block, but md4c
 * 0.4.8 sometimes enters a span it never leaves (and leaves spans it never
 * entered); closing them at every block boundary keeps entities in their
 * block and properly nested.
 */
static int close_spans(struct renderer *r)
{
	while (r->n_open > 0 && !r->open[r->n_open - 1].is_block)
		if (pop_open(r) != 0)
			return -1;
	return 0;
}

/* Closes the block's entity, and any span md4c left open inside it. */
static int pop_block(struct renderer *r)
{
	if (close_spans(r) != 0)
		return -1;
	return r->n_open > 0 ? pop_open(r) : 0;
}

/* --- tables --- */

static void table_free(struct table *t)
{
	if (!t)
		return;
	buf_free(&t->text);
	free(t->cells);
	free(t->align);
	free(t);
}

static int table_new(struct renderer *r, const MD_BLOCK_TABLE_DETAIL *d)
{
	struct table *t = calloc(1, sizeof *t);
	if (!t)
		return -1;
	buf_init(&t->text, r->text.max);
	t->n_cols = d->col_count ? d->col_count : 1;
	t->align = calloc(t->n_cols, sizeof *t->align);
	if (!t->align) {
		table_free(t);
		return -1;
	}
	r->table = t;
	return 0;
}

static int table_add_cell(struct table *t, MD_ALIGN align)
{
	if (t->n_cells == t->cap_cells) {
		size_t cap = t->cap_cells ? t->cap_cells * 2 : 32;
		struct cell *p = realloc(t->cells, cap * sizeof *p);
		if (!p)
			return -1;
		t->cells = p;
		t->cap_cells = cap;
	}
	t->cells[t->n_cells++] = (struct cell){t->text.len, 0, 0, t->n_rows - 1};
	if (t->in_head && t->col < t->n_cols)
		t->align[t->col] = align;
	t->in_cell = true;
	return 0;
}

static size_t count_chars(const char *s, size_t n)
{
	size_t chars = 0;
	for (size_t i = 0; i < n; i++)
		if (((unsigned char)s[i] & 0xC0) != 0x80)
			chars++;
	return chars;
}

/* The bytes of one table row written out (its cells cells[first..end)), padded or not. */
static int table_write_row(const struct table *t, struct buf *out, size_t first, size_t end,
                           const size_t *widths, bool is_padded)
{
	/* Empty cells at the end of a row are left out, so no line ends in padding. */
	while (end > first && t->cells[end - 1].len == 0)
		end--;
	for (size_t i = first; i < end; i++) {
		const struct cell *c = &t->cells[i];
		size_t col = i - first;
		size_t pad = is_padded && widths[col] > c->width ? widths[col] - c->width : 0;
		size_t before = 0;
		if (t->align[col] == MD_ALIGN_RIGHT)
			before = pad;
		else if (t->align[col] == MD_ALIGN_CENTER)
			before = pad / 2;
		size_t after = i + 1 < end ? pad - before : 0;
		if (col > 0 && buf_append_str(out, " │ ") != BUF_OK)
			return -1;
		for (size_t k = 0; k < before; k++)
			if (buf_append_str(out, " ") != BUF_OK)
				return -1;
		if (buf_append(out, t->text.data + c->off, c->len) != BUF_OK)
			return -1;
		for (size_t k = 0; k < after; k++)
			if (buf_append_str(out, " ") != BUF_OK)
				return -1;
	}
	return 0;
}

static int table_write_rule(const struct table *t, struct buf *out, const size_t *widths, bool is_padded)
{
	if (!is_padded)
		return buf_append_str(out, "───") == BUF_OK ? 0 : -1;
	for (size_t col = 0; col < t->n_cols; col++) {
		if (col > 0 && buf_append_str(out, "─┼─") != BUF_OK)
			return -1;
		for (size_t k = 0; k < (widths[col] ? widths[col] : 1); k++)
			if (buf_append_str(out, "─") != BUF_OK)
				return -1;
	}
	return 0;
}

static int table_write(const struct table *t, struct buf *out, const size_t *widths, bool is_padded)
{
	size_t first = 0;
	for (size_t row = 0; row < t->n_rows; row++) {
		size_t end = first;
		while (end < t->n_cells && t->cells[end].row == row)
			end++;
		if (row > 0 && buf_append_str(out, "\n") != BUF_OK)
			return -1;
		if (row == t->n_head_rows && row > 0 &&
		    (table_write_rule(t, out, widths, is_padded) != 0 || buf_append_str(out, "\n") != BUF_OK))
			return -1;
		if (table_write_row(t, out, first, end > first + t->n_cols ? first + t->n_cols : end, widths,
		                    is_padded) != 0)
			return -1;
		first = end;
	}
	return 0;
}

/*
 * A table becomes one pre block (Telegram has no tables): columns padded to
 * equal width in characters, " │ " between them, a rule under the header.
 * md4c fills short rows with empty cells, so a wide header over many short
 * rows could make the padded table grow with rows × columns; when padding
 * would make it more than 4 times the unpadded size, it is left unpadded.
 */
static int table_finish(struct renderer *r)
{
	struct table *t = r->table;
	r->table = NULL;
	int rc = -1;
	struct buf padded, compact;
	buf_init(&padded, r->text.max);
	buf_init(&compact, r->text.max);
	size_t *widths = calloc(t->n_cols, sizeof *widths);
	if (!widths)
		goto out;
	size_t first = 0;
	for (size_t i = 0; i < t->n_cells; i++) {
		if (i > 0 && t->cells[i].row != t->cells[i - 1].row)
			first = i;
		struct cell *c = &t->cells[i];
		c->width = count_chars(t->text.data + c->off, c->len);
		size_t col = i - first;
		if (col < t->n_cols) {
			size_t w = c->width < MAX_COLUMN_WIDTH ? c->width : MAX_COLUMN_WIDTH;
			if (w > widths[col])
				widths[col] = w;
		}
	}
	if (table_write(t, &compact, widths, false) != 0)
		goto out;
	/* Padding adds at most a column's width to each cell, and the rule is one more row. */
	size_t row_pad = 0;
	for (size_t col = 0; col < t->n_cols; col++)
		row_pad += widths[col] + strlen(" │ ");
	size_t estimate = t->text.len + t->n_rows * (row_pad + 1) + 3 * row_pad;
	bool is_padded = estimate <= 4 * compact.len + 256;
	if (is_padded && table_write(t, &padded, widths, true) != 0)
		goto out;
	const struct buf *b = is_padded ? &padded : &compact;
	rc = emit_block(r, b->data ? b->data : "", b->len, TYPE_PRE, NULL);
out:
	free(widths);
	buf_free(&padded);
	buf_free(&compact);
	table_free(t);
	return rc;
}

/* --- blocks --- */

static int push_container(struct renderer *r, MD_BLOCKTYPE type, bool is_tight, unsigned long long number)
{
	if (r->n_cont == r->cap_cont) {
		size_t cap = r->cap_cont ? r->cap_cont * 2 : 16;
		struct container *p = realloc(r->cont, cap * sizeof *p);
		if (!p)
			return -1;
		r->cont = p;
		r->cap_cont = cap;
	}
	r->cont[r->n_cont++] = (struct container){type, is_tight, number};
	return 0;
}

static int enter_item(struct renderer *r, const MD_BLOCK_LI_DETAIL *d)
{
	/* "- - x": the outer item's marker goes on its own line above. */
	if (flush_marker(r) != 0)
		return -1;
	start_block(r);
	/* The list, copied: pushing the item may move the container array. */
	struct container list = r->n_cont ? r->cont[r->n_cont - 1] : (struct container){MD_BLOCK_UL, true, 0};
	if (r->n_cont)
		r->cont[r->n_cont - 1].number++;
	if (push_container(r, MD_BLOCK_LI, false, 0) != 0)
		return -1;
	r->list_level++;
	static const char *const bullets[] = {"•", "◦", "▪"};
	const char *box = d->is_task ? (d->task_mark == ' ' ? "☐" : "☑") : NULL;
	int n;
	if (list.type == MD_BLOCK_OL)
		n = snprintf(r->marker, sizeof r->marker, "%llu.%s%s", list.number, box ? " " : "",
		             box ? box : "");
	else
		n = snprintf(r->marker, sizeof r->marker, "%s",
		             box ? box : bullets[(r->list_level - 1) % (sizeof bullets / sizeof bullets[0])]);
	/* The marker is at most 20 digits, ". " and a box: it always fits. */
	if (n < 0 || (size_t)n >= sizeof r->marker)
		r->marker[0] = '\0';
	return 0;
}

static int leave_item(struct renderer *r)
{
	/* An empty item still shows its marker. */
	if (flush_marker(r) != 0)
		return -1;
	if (r->n_cont == 0 || r->list_level == 0)
		return 0;
	r->n_cont--;
	r->list_level--;
	r->sep = r->n_cont && r->cont[r->n_cont - 1].is_tight ? SEP_LINE : SEP_PARA;
	return 0;
}

static int on_enter_block(MD_BLOCKTYPE type, void *detail, void *userdata)
{
	struct renderer *r = userdata;
	if (close_spans(r) != 0)
		return -1;
	switch (type) {
	case MD_BLOCK_DOC:
		return 0;
	case MD_BLOCK_QUOTE: {
		start_block(r);
		if (flush_marker(r) != 0 || push_container(r, MD_BLOCK_QUOTE, false, 0) != 0)
			return -1;
		/* Telegram does not nest blockquotes: an inner one is part of the outer. */
		struct open *o = push_open(r, OPEN_QUOTE, r->quote_depth == 0 ? TYPE_QUOTE : NULL);
		if (!o)
			return -1;
		o->is_line = true;
		o->is_block = true;
		r->quote_depth++;
		return 0;
	}
	case MD_BLOCK_UL:
		start_block(r);
		return push_container(r, type, ((MD_BLOCK_UL_DETAIL *)detail)->is_tight, 0);
	case MD_BLOCK_OL: {
		const MD_BLOCK_OL_DETAIL *d = detail;
		start_block(r);
		return push_container(r, type, d->is_tight, d->start);
	}
	case MD_BLOCK_LI:
		return enter_item(r, detail);
	case MD_BLOCK_HR:
		start_block(r);
		return emit_text(r, "———", strlen("———"));
	case MD_BLOCK_H:
		start_block(r);
		if (open_style(r, TYPE_BOLD) != 0)
			return -1;
		r->open[r->n_open - 1].is_block = true;
		return 0;
	case MD_BLOCK_CODE: {
		const MD_BLOCK_CODE_DETAIL *d = detail;
		r->raw = RAW_CODE;
		r->raw_col = 0;
		buf_reset(&r->raw_text);
		free(r->raw_lang);
		r->raw_lang = NULL;
		if (d->lang.size > 0 && !(r->raw_lang = attribute_string(&d->lang)))
			return -1;
		return 0;
	}
	case MD_BLOCK_HTML:
		r->raw = RAW_HTML;
		buf_reset(&r->raw_text);
		return 0;
	case MD_BLOCK_P:
		start_block(r);
		return 0;
	case MD_BLOCK_TABLE:
		if (r->table)
			return 0;
		return table_new(r, detail);
	case MD_BLOCK_THEAD:
		if (r->table)
			r->table->in_head = true;
		return 0;
	case MD_BLOCK_TBODY:
		if (r->table)
			r->table->in_head = false;
		return 0;
	case MD_BLOCK_TR:
		if (r->table) {
			r->table->n_rows++;
			r->table->col = 0;
			if (r->table->in_head)
				r->table->n_head_rows++;
		}
		return 0;
	case MD_BLOCK_TH:
	case MD_BLOCK_TD:
		if (r->table && r->table->n_rows > 0)
			return table_add_cell(r->table, ((MD_BLOCK_TD_DETAIL *)detail)->align);
		return 0;
	}
	return 0;
}

static int on_leave_block(MD_BLOCKTYPE type, void *detail, void *userdata)
{
	struct renderer *r = userdata;
	(void)detail;
	int rc = 0;
	if (type != MD_BLOCK_QUOTE && type != MD_BLOCK_H && close_spans(r) != 0)
		return -1;
	switch (type) {
	case MD_BLOCK_DOC:
		return 0;
	case MD_BLOCK_QUOTE:
		rc = pop_block(r);
		if (r->n_cont > 0)
			r->n_cont--;
		break;
	case MD_BLOCK_UL:
	case MD_BLOCK_OL:
		if (r->n_cont > 0)
			r->n_cont--;
		break;
	case MD_BLOCK_LI:
		return leave_item(r);
	case MD_BLOCK_H:
		rc = pop_block(r);
		break;
	case MD_BLOCK_CODE: {
		char *lang = r->raw_lang;
		r->raw_lang = NULL;
		r->raw = RAW_NONE;
		rc = emit_block(r, buf_str(&r->raw_text), r->raw_text.len, TYPE_PRE, lang);
		break;
	}
	case MD_BLOCK_HTML:
		r->raw = RAW_NONE;
		rc = emit_block(r, buf_str(&r->raw_text), r->raw_text.len, NULL, NULL);
		break;
	case MD_BLOCK_TABLE:
		if (!r->table)
			return 0;
		rc = table_finish(r);
		break;
	case MD_BLOCK_TH:
	case MD_BLOCK_TD:
		if (r->table) {
			r->table->in_cell = false;
			r->table->col++;
		}
		return 0;
	case MD_BLOCK_THEAD:
	case MD_BLOCK_TBODY:
	case MD_BLOCK_TR:
		return 0;
	case MD_BLOCK_HR:
	case MD_BLOCK_P:
		break;
	}
	end_block(r);
	return rc;
}

static int on_text(MD_TEXTTYPE type, const MD_CHAR *s, MD_SIZE n, void *userdata)
{
	struct renderer *r = userdata;
	if (r->raw != RAW_NONE) {
		if (type == MD_TEXT_NULLCHAR)
			return buf_append_str(&r->raw_text, REPLACEMENT_CHAR) == BUF_OK ? 0 : -1;
		if (r->raw == RAW_CODE)
			return raw_append_code(r, s, n);
		return buf_append(&r->raw_text, s, n) == BUF_OK ? 0 : -1;
	}
	switch (type) {
	case MD_TEXT_NULLCHAR:
		return emit_text(r, REPLACEMENT_CHAR, strlen(REPLACEMENT_CHAR));
	case MD_TEXT_BR:
	case MD_TEXT_SOFTBR:
		return emit_line_break(r);
	case MD_TEXT_ENTITY:
		return emit_entity_ref(r, s, n);
	default:
		/* Normal text, code span text, raw inline HTML (shown as written). */
		return emit_text(r, s, n);
	}
}

/* --- splitting into messages --- */

static int compare_ents(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;
	if (x->b0 != y->b0)
		return x->b0 < y->b0 ? -1 : 1;
	if (x->b1 != y->b1)
		return x->b1 > y->b1 ? -1 : 1;
	/* Equal ranges: the one completed later encloses the other. */
	return x->seq > y->seq ? -1 : x->seq < y->seq ? 1 : 0;
}

static char *dup_or_null(const char *s, bool *failed)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		*failed = true;
	return d;
}

static void message_free(struct render_message *m)
{
	for (size_t i = 0; i < m->n_entities; i++) {
		free(m->entities[i].url);
		free(m->entities[i].language);
	}
	free(m->entities);
	free(m->text);
}

/* Appends e, cut to the part's units [u_start, u_end), unless nothing of it is left. */
static int message_add_entity(struct render_message *m, size_t cap, const struct ent *e, size_t u_start,
                              size_t u_end)
{
	size_t u0 = e->u0 > u_start ? e->u0 : u_start, u1 = e->u1 < u_end ? e->u1 : u_end;
	if (u1 <= u0 || m->n_entities == cap)
		return 0;
	bool failed = false;
	struct render_entity *re = &m->entities[m->n_entities];
	*re = (struct render_entity){e->type, u0 - u_start, u1 - u0, dup_or_null(e->url, &failed),
	                             dup_or_null(e->lang, &failed)};
	m->n_entities++;
	return failed ? -1 : 0;
}

struct splitter {
	const struct renderer *r;
	size_t max_units, max_ents;
	size_t *active; /* entities begun before the part and still running, in sorted order */
	size_t n_active, cap_active;
	size_t next; /* the first entity not yet begun */
};

/* Moves the entities begun before pos into the active set and drops the finished ones. */
static int splitter_advance(struct splitter *sp, size_t pos)
{
	const struct renderer *r = sp->r;
	size_t kept = 0;
	for (size_t i = 0; i < sp->n_active; i++)
		if (r->ents[sp->active[i]].b1 > pos)
			sp->active[kept++] = sp->active[i];
	sp->n_active = kept;
	for (; sp->next < r->n_ents && r->ents[sp->next].b0 < pos; sp->next++) {
		if (r->ents[sp->next].b1 <= pos)
			continue;
		if (sp->n_active == sp->cap_active) {
			size_t cap = sp->cap_active ? sp->cap_active * 2 : 16;
			size_t *p = realloc(sp->active, cap * sizeof *p);
			if (!p)
				return -1;
			sp->active = p;
			sp->cap_active = cap;
		}
		sp->active[sp->n_active++] = sp->next;
	}
	return 0;
}

/* Whether a pre entity covers text[from..to], looking at the entities begun before to. */
static bool is_in_pre(const struct splitter *sp, size_t from, size_t to)
{
	const struct renderer *r = sp->r;
	for (size_t i = 0; i < sp->n_active; i++) {
		const struct ent *e = &r->ents[sp->active[i]];
		if (e->type == TYPE_PRE && e->b0 <= from && e->b1 > to)
			return true;
	}
	for (size_t k = sp->next; k < r->n_ents && r->ents[k].b0 <= from; k++)
		if (r->ents[k].type == TYPE_PRE && r->ents[k].b1 > to)
			return true;
	return false;
}

/*
 * Where the part whose first visible character is text[p] starts. Inside a
 * code block or table it keeps that line's indentation: indentation is
 * meaning in code and alignment in tables, and Telegram trims leading
 * whitespace only before the first entity, here the pre at offset 0. The
 * indentation must leave room for a character, so the part is never blank.
 */
static size_t part_start(const struct splitter *sp, const char *text, size_t pos, size_t p)
{
	size_t ls = p;
	while (ls > pos && (text[ls - 1] == ' ' || text[ls - 1] == '\t'))
		ls--;
	if (ls == p || p - ls + 2 > sp->max_units || !is_in_pre(sp, ls, p))
		return p;
	return ls;
}

static int add_message(struct render_output *out, size_t *cap, struct render_message m)
{
	if (out->n_parts == *cap) {
		size_t new_cap = *cap ? *cap * 2 : 4;
		struct render_message *p = realloc(out->parts, new_cap * sizeof *p);
		if (!p)
			return -1;
		out->parts = p;
		*cap = new_cap;
	}
	out->parts[out->n_parts++] = m;
	return 0;
}

/*
 * Cuts the rendered text into messages as render_split_plain does, with one
 * more limit: the entities a part touches. Entities crossing a cut are cut
 * with it, so each part's entities are whole within the part.
 */
static int split_messages(struct splitter *sp, struct render_output *out)
{
	const struct renderer *r = sp->r;
	const char *text = buf_str(&r->text);
	size_t len = r->text.len, cap = 0;
	size_t pos = 0, upos = 0;
	for (;;) {
		/* Whitespace at a cut is dropped: one unit a byte. */
		size_t p = pos;
		while (p < len && is_space(text[p]))
			p++;
		if (p == len)
			return 0;
		size_t start = part_start(sp, text, pos, p);
		upos += start - pos;
		pos = start;
		if (splitter_advance(sp, pos) != 0)
			return -1;

		size_t limit = pos, units = 0;
		while (limit < len) {
			size_t u;
			size_t step = valid_char_len((unsigned char)text[limit], &u);
			if (units + u > sp->max_units)
				break;
			units += u;
			limit += step;
		}
		/* The part must end before the entity that would be one too many. */
		size_t room = sp->n_active < sp->max_ents ? sp->max_ents - sp->n_active : 0;
		if (sp->next + room < r->n_ents) {
			size_t s = r->ents[sp->next + room].b0;
			if (s > p && s < limit)
				limit = s;
		}
		/* Cut after the first visible character, never inside the kept indentation. */
		size_t end = limit == len ? len : find_cut(text, len, p, limit);
		size_t part_end = end;
		while (part_end > pos && is_space(text[part_end - 1]))
			part_end--;
		size_t uend = upos + valid_utf16_len(text + pos, part_end - pos);

		struct render_message m = {0};
		m.len = part_end - pos;
		m.text = malloc(m.len + 1);
		size_t n_cand = sp->n_active;
		for (size_t k = sp->next; k < r->n_ents && r->ents[k].b0 < part_end; k++)
			n_cand++;
		size_t ecap = n_cand < sp->max_ents ? n_cand : sp->max_ents;
		m.entities = ecap ? calloc(ecap, sizeof *m.entities) : NULL;
		if (!m.text || (ecap && !m.entities)) {
			message_free(&m);
			return -1;
		}
		memcpy(m.text, text + pos, m.len);
		m.text[m.len] = '\0';
		int rc = 0;
		for (size_t i = 0; i < sp->n_active && rc == 0; i++)
			rc = message_add_entity(&m, ecap, &r->ents[sp->active[i]], upos, uend);
		for (size_t k = sp->next; k < r->n_ents && r->ents[k].b0 < part_end && rc == 0; k++)
			rc = message_add_entity(&m, ecap, &r->ents[k], upos, uend);
		if (rc != 0 || add_message(out, &cap, m) != 0) {
			message_free(&m);
			return -1;
		}
		/* What lies between part_end and end is whitespace: one unit a byte. */
		upos = uend + (end - part_end);
		pos = end;
	}
}

/* --- the whole --- */

static void renderer_free(struct renderer *r)
{
	buf_free(&r->text);
	for (size_t i = 0; i < r->n_ents; i++) {
		free(r->ents[i].url);
		free(r->ents[i].lang);
	}
	free(r->ents);
	for (size_t i = 0; i < r->n_open; i++)
		free(r->open[i].url);
	free(r->open);
	free(r->cont);
	buf_free(&r->raw_text);
	free(r->raw_lang);
	table_free(r->table);
}

void render_output_free(struct render_output *out)
{
	if (!out)
		return;
	for (size_t i = 0; i < out->n_parts; i++)
		message_free(&out->parts[i]);
	free(out->parts);
	out->parts = NULL;
	out->n_parts = 0;
}

static int render_answer(struct renderer *r, const char *md, size_t len)
{
	/* Autolinks are found so they can be told apart from written links and left as text. */
	const MD_PARSER parser = {
	    .abi_version = 0,
	    .flags =
	        MD_FLAG_STRIKETHROUGH | MD_FLAG_TABLES | MD_FLAG_TASKLISTS | MD_FLAG_PERMISSIVEURLAUTOLINKS,
	    .enter_block = on_enter_block,
	    .leave_block = on_leave_block,
	    .enter_span = on_enter_span,
	    .leave_span = on_leave_span,
	    .text = on_text,
	    .debug_log = NULL,
	    .syntax = NULL,
	};
	return md_parse(md, (MD_SIZE)len, &parser, r) == 0 ? 0 : -1;
}

int render_markdown(const char *md, size_t len, const struct render_options *opt, struct render_output *out)
{
	out->parts = NULL;
	out->n_parts = 0;
	if (len > RENDER_MAX_INPUT)
		return -1;
	struct render_options o = opt ? *opt : (struct render_options){0};
	if (o.max_units == 0)
		o.max_units = RENDER_MAX_UNITS;
	if (o.max_units < 2)
		o.max_units = 2;
	if (o.max_entities == 0)
		o.max_entities = RENDER_MAX_ENTITIES;

	int rc = -1;
	struct buf src, answer;
	buf_init(&src, 3 * len + 16);
	/* Room for what closing open markup appends: at most one closer per input byte. */
	buf_init(&answer, 6 * len + 16);
	/*
	 * The output grows at most a small multiple of the input (list markers
	 * and indentation, U+FFFD for bad bytes, table padding, bounded above);
	 * the limit only guards against a mistake in that reckoning.
	 */
	struct renderer r = {0};
	buf_init(&r.text, 64 * len + 65536);
	buf_init(&r.raw_text, 12 * len + 64);
	r.at_line_start = true;
	struct splitter sp = {&r, o.max_units, o.max_entities, NULL, 0, 0, 0};

	if (sanitize_input(md, len, &src) != 0)
		goto out;
	const char *s = buf_str(&src);
	struct think_split t = split_think(s, src.len, o.is_partial);
	if (o.think == RENDER_THINK_QUOTE && t.think_end > t.think_start) {
		if (emit_block(&r, s + t.think_start, t.think_end - t.think_start, TYPE_LONG_QUOTE, NULL) !=
		    0)
			goto out;
		r.sep = SEP_PARA;
	}
	if (buf_append(&answer, s + t.answer_start, src.len - t.answer_start) != BUF_OK)
		goto out;
	if (o.is_partial && close_open_inlines(&answer) != 0)
		goto out;
	if (render_answer(&r, buf_str(&answer), answer.len) != 0)
		goto out;
	if (r.n_ents > 1)
		qsort(r.ents, r.n_ents, sizeof *r.ents, compare_ents);
	if (split_messages(&sp, out) != 0) {
		render_output_free(out);
		goto out;
	}
	rc = 0;
out:
	free(sp.active);
	renderer_free(&r);
	buf_free(&src);
	buf_free(&answer);
	return rc;
}

int render_write_entities(struct buf *b, const struct render_message *m)
{
	int rc = buf_append(b, "[", 1);
	for (size_t i = 0; i < m->n_entities && rc == BUF_OK; i++) {
		const struct render_entity *e = &m->entities[i];
		if ((rc = jsonw_member(b, NULL)) || (rc = buf_append(b, "{", 1)) ||
		    (rc = jsonw_member_string(b, "type", e->type, strlen(e->type))) ||
		    (rc = jsonw_member_int(b, "offset", (long long)e->offset)) ||
		    (rc = jsonw_member_int(b, "length", (long long)e->length)) ||
		    (e->url && (rc = jsonw_member_string(b, "url", e->url, strlen(e->url)))) ||
		    (e->language && (rc = jsonw_member_string(b, "language", e->language, strlen(e->language)))))
			break;
		rc = buf_append(b, "}", 1);
	}
	return rc == BUF_OK ? buf_append(b, "]", 1) : rc;
}

enum render_blank render_blank(const char *md, size_t len)
{
	struct think_split t = split_think(md, len, false);
	bool is_thinking = t.think_start > 0 && t.think_end == len; /* no </think> */
	/* An answer that starts with a letter or digit is a paragraph, list or table: text, without rendering it. */
	size_t p = t.answer_start;
	while (p < len && is_space(md[p]))
		p++;
	if (p < len && isalnum((unsigned char)md[p]))
		return RENDER_SHOWS_TEXT;
	struct render_output out = {0};
	if (render_markdown(md + t.answer_start, len - t.answer_start, NULL, &out) != 0)
		return RENDER_SHOWS_TEXT;
	size_t n = out.n_parts;
	render_output_free(&out);
	return n > 0 ? RENDER_SHOWS_TEXT : is_thinking ? RENDER_BLANK_THINKING : RENDER_BLANK;
}
