/* Unit tests for src/render.c: UTF-16 accounting, plain-text splitting, Markdown rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "telegram/render.h"

#include "expect.h"

static size_t units_of(const char *s)
{
	return render_utf16_len(s, strlen(s));
}

/* s repeated n times; the caller frees. */
static char *repeat(const char *s, size_t n)
{
	size_t len = strlen(s);
	char *out = malloc(len * n + 1);
	if (!out)
		fail_msg("out of memory in the test");
	for (size_t i = 0; i < n; i++)
		memcpy(out + i * len, s, len);
	out[len * n] = '\0';
	return out;
}

static char *concat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *out = malloc(la + lb + 1);
	if (!out)
		fail_msg("out of memory in the test");
	memcpy(out, a, la);
	memcpy(out + la, b, lb + 1);
	return out;
}

/* Splits text and checks the parts are exactly want (NULL-terminated list of strings). */
static void expect_split(const char *text, size_t max_units, const char *const *want)
{
	struct render_part *parts = NULL;
	long n = render_split_plain(text, strlen(text), max_units, &parts);
	long n_want = 0;
	while (want[n_want])
		n_want++;
	if (n != n_want)
		fail_msg("split of \"%.60s\" at %zu units: expected %ld parts, got %ld", text, max_units,
		         n_want, n);
	for (long i = 0; i < n; i++) {
		size_t wl = strlen(want[i]);
		if (parts[i].len != wl || memcmp(text + parts[i].offset, want[i], wl) != 0)
			fail_msg("split of \"%.60s\" at %zu units: part %ld: expected \"%s\", "
			         "got \"%.*s\"",
			         text, max_units, i, want[i], (int)parts[i].len, text + parts[i].offset);
	}
	free(parts);
}

/* Splits text and checks the byte length of each part against want_lens (0-terminated). */
static void expect_part_lens(const char *text, size_t max_units, const size_t *want_lens, const char *what)
{
	struct render_part *parts = NULL;
	long n = render_split_plain(text, strlen(text), max_units, &parts);
	long n_want = 0;
	while (want_lens[n_want])
		n_want++;
	if (n != n_want)
		fail_msg("%s: expected %ld parts, got %ld", what, n_want, n);
	for (long i = 0; i < n; i++)
		if (parts[i].len != want_lens[i])
			fail_msg("%s: part %ld: expected %zu bytes, got %zu", what, i, want_lens[i],
			         parts[i].len);
	free(parts);
}

static void test_utf16_len_counts_surrogate_pairs_as_two(void **state)
{
	(void)state;
	expect_int("empty", 0, units_of(""));
	expect_int("ASCII", 3, units_of("abc"));
	expect_int("Cyrillic, 2 bytes each", 6, units_of("Привет"));
	expect_int("CJK, 3 bytes each", 2, units_of("家族"));
	expect_int("emoji, 4 bytes", 2, units_of("😀"));
	expect_int("emoji with skin tone", 4, units_of("👍🏽"));
	expect_int("mixed", 4, units_of("a😀б"));
}

static void test_utf16_len_counts_invalid_bytes_one_each(void **state)
{
	(void)state;
	expect_int("stray bytes", 2, units_of("\xff\xfe"));
	expect_int("lone continuation", 1, units_of("\x80"));
	expect_int("cut 4-byte sequence then a letter", 4,
	           units_of("\xf0\x9f\x98"
	                    "a"));
	expect_int("overlong NUL", 2, units_of("\xc0\x80"));
	expect_int("encoded surrogate", 3, units_of("\xed\xa0\x80"));
	expect_int("above U+10FFFF", 4, units_of("\xf4\x90\x80\x80"));
	expect_int("U+10FFFF is a pair", 2, units_of("\xf4\x8f\xbf\xbf"));
	expect_int("cut at the end of the text", 2, render_utf16_len("😀", 2));
}

static void test_short_text_is_one_part(void **state)
{
	(void)state;
	expect_split("Hello, world!", RENDER_MAX_UNITS, (const char *const[]){"Hello, world!", NULL});
}

static void test_empty_and_blank_text_give_no_parts(void **state)
{
	(void)state;
	static const char *const texts[] = {"", " ", "\n\n", " \t\r\n \n"};
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		struct render_part *parts = (struct render_part *)&parts;
		long n = render_split_plain(texts[i], strlen(texts[i]), RENDER_MAX_UNITS, &parts);
		expect_int("parts of blank text", 0, n);
		if (parts)
			fail_msg("blank text %zu: expected *out NULL", i);
	}
}

static void test_text_of_exactly_max_units_is_one_part(void **state)
{
	(void)state;
	char *text = repeat("a", RENDER_MAX_UNITS);
	expect_part_lens(text, RENDER_MAX_UNITS, (const size_t[]){4096, 0}, "4096 letters");
	free(text);
	text = repeat("a", RENDER_MAX_UNITS + 1);
	expect_part_lens(text, RENDER_MAX_UNITS, (const size_t[]){4096, 1, 0}, "4097 letters");
	free(text);
}

static void test_cyrillic_counts_one_unit_per_letter(void **state)
{
	(void)state;
	char *text = repeat("ж", RENDER_MAX_UNITS);
	expect_part_lens(text, RENDER_MAX_UNITS, (const size_t[]){8192, 0},
	                 "4096 Cyrillic letters (8192 bytes)");
	free(text);
	text = repeat("ж", 5000);
	expect_part_lens(text, RENDER_MAX_UNITS, (const size_t[]){8192, 1808, 0}, "5000 Cyrillic letters");
	free(text);
}

static void test_emoji_at_the_boundary_is_not_split(void **state)
{
	(void)state;
	char *as = repeat("a", RENDER_MAX_UNITS - 2);
	char *text = concat(as, "😀");
	expect_part_lens(text, RENDER_MAX_UNITS, (const size_t[]){4098, 0},
	                 "4094 letters + emoji = 4096 units");
	free(text);
	free(as);

	/* The emoji's pair would take units 4096 and 4097: it moves to the next part. */
	as = repeat("a", RENDER_MAX_UNITS - 1);
	text = concat(as, "😀");
	expect_part_lens(text, RENDER_MAX_UNITS, (const size_t[]){4095, 4, 0}, "4095 letters + emoji");
	free(text);
	free(as);

	text = repeat("😀", 3000);
	expect_part_lens(text, RENDER_MAX_UNITS, (const size_t[]){8192, 3808, 0}, "3000 emoji");
	free(text);
}

static void test_paragraph_break_preferred_over_line_and_space(void **state)
{
	(void)state;
	expect_split("aaa bbb\nccc\n\nddd eee\nfff", 20,
	             (const char *const[]){"aaa bbb\nccc", "ddd eee\nfff", NULL});
	/* The paragraph break wins even far from the limit. */
	expect_split("ab\n\ncd ef\ngh ij kl mn", 17, (const char *const[]){"ab", "cd ef\ngh ij kl mn", NULL});
}

static void test_line_break_preferred_over_space(void **state)
{
	(void)state;
	expect_split("aaa bbb\nccc ddd", 12, (const char *const[]){"aaa bbb", "ccc ddd", NULL});
	expect_split("one\ntwo three four", 14, (const char *const[]){"one", "two three four", NULL});
}

static void test_space_used_when_no_line_break(void **state)
{
	(void)state;
	expect_split("aaa bbb ccc", 9, (const char *const[]){"aaa bbb", "ccc", NULL});
	expect_split("Привет мир как дела", 10, (const char *const[]){"Привет мир", "как дела", NULL});
}

static void test_separator_right_at_the_limit_is_used(void **state)
{
	(void)state;
	expect_split("aaaa\n\nbbbb", 4, (const char *const[]){"aaaa", "bbbb", NULL});
	expect_split("aaaa\nbbbb", 4, (const char *const[]){"aaaa", "bbbb", NULL});
	expect_split("aaaa bbbb", 4, (const char *const[]){"aaaa", "bbbb", NULL});
}

static void test_long_text_without_spaces_is_cut_hard(void **state)
{
	(void)state;
	char *text = repeat("x", 10000);
	expect_part_lens(text, RENDER_MAX_UNITS, (const size_t[]){4096, 4096, 1808, 0},
	                 "10000 letters, no spaces");
	free(text);
	expect_split("abcdef ghijklmnop", 4, (const char *const[]){"abcd", "ef", "ghij", "klmn", "op", NULL});
}

static void test_whitespace_at_cuts_and_ends_is_dropped(void **state)
{
	(void)state;
	expect_split("  hello  \n\n  world  \n", 100, (const char *const[]){"hello  \n\n  world", NULL});
	expect_split("  hello  \n\n  world  \n", 8, (const char *const[]){"hello", "world", NULL});
	expect_split("a\n\n\n\n\n\n\n\nb", 1, (const char *const[]){"a", "b", NULL});
}

static void test_max_units_below_two_is_raised_to_two(void **state)
{
	(void)state;
	expect_split("😀😀", 1, (const char *const[]){"😀", "😀", NULL});
	expect_split("😀😀", 0, (const char *const[]){"😀", "😀", NULL});
	expect_split("abc", 0, (const char *const[]){"ab", "c", NULL});
}

static void test_invalid_bytes_are_cut_like_characters(void **state)
{
	(void)state;
	expect_split("\xff\xfe\xfd", 2, (const char *const[]){"\xff\xfe", "\xfd", NULL});
}

/* Deterministic pseudo-random numbers (xorshift64): the same texts on every run. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint32_t rng(uint32_t bound)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % bound);
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_continuation(char c)
{
	return ((unsigned char)c & 0xC0) == 0x80;
}

/* The non-whitespace bytes of s[0..len) appended at out[*n]. */
static void keep_visible(const char *s, size_t len, char *out, size_t *n)
{
	for (size_t i = 0; i < len; i++)
		if (!is_ws(s[i]))
			out[(*n)++] = s[i];
}

static void check_split(const char *text, size_t len, size_t max_units, size_t iteration)
{
	struct render_part *parts = NULL;
	long n = render_split_plain(text, len, max_units, &parts);
	if (n < 0)
		fail_msg("text %zu: render_split_plain failed", iteration);
	size_t limit = max_units < 2 ? 2 : max_units;
	char *want = malloc(len + 1), *got = malloc(len + 1);
	if (!want || !got)
		fail_msg("out of memory in the test");
	size_t n_want = 0, n_got = 0, prev_end = 0;
	keep_visible(text, len, want, &n_want);
	for (long i = 0; i < n; i++) {
		size_t off = parts[i].offset, plen = parts[i].len;
		if (off < prev_end || off + plen > len || plen == 0)
			fail_msg("text %zu part %ld: expected a non-empty range after byte %zu "
			         "within %zu, got [%zu, +%zu)",
			         iteration, i, prev_end, len, off, plen);
		size_t units = render_utf16_len(text + off, plen);
		if (units > limit)
			fail_msg("text %zu part %ld: expected at most %zu UTF-16 units, got %zu", iteration,
			         i, limit, units);
		if (is_ws(text[off]) || is_ws(text[off + plen - 1]))
			fail_msg("text %zu part %ld: expected no whitespace at its ends", iteration, i);
		if (is_continuation(text[off]) || (off + plen < len && is_continuation(text[off + plen])))
			fail_msg("text %zu part %ld: expected ends on UTF-8 sequence boundaries", iteration,
			         i);
		for (size_t k = prev_end; k < off; k++)
			if (!is_ws(text[k]))
				fail_msg("text %zu: expected only whitespace dropped before part "
				         "%ld, "
				         "byte %zu is 0x%02x",
				         iteration, i, k, (unsigned char)text[k]);
		keep_visible(text + off, plen, got, &n_got);
		prev_end = off + plen;
	}
	if (n_got != n_want || memcmp(got, want, n_want) != 0)
		fail_msg("text %zu at %zu units: expected the parts to hold the text's %zu visible "
		         "bytes in order, got %zu",
		         iteration, max_units, n_want, n_got);
	free(want);
	free(got);
	free(parts);
}

static void test_property_parts_fit_and_keep_every_visible_character(void **state)
{
	(void)state;
	static const char *const pieces[] = {
	    "a", "b",  "Z",  "word", "ж",      "Ё",  "家",   "😀", "👍🏽",   " ",
	    " ", "  ", "\n", "\n\n", "\n\n\n", "\t", "\r\n", ".", "longerword",
	};
	size_t n_pieces = sizeof pieces / sizeof pieces[0];
	char text[4096];
	for (size_t iteration = 0; iteration < 3000; iteration++) {
		size_t len = 0, n = rng(200);
		for (size_t i = 0; i < n; i++) {
			const char *p = pieces[rng((uint32_t)n_pieces)];
			size_t pl = strlen(p);
			if (len + pl >= sizeof text)
				break;
			memcpy(text + len, p, pl);
			len += pl;
		}
		text[len] = '\0';
		size_t max_units = iteration % 10 == 0 ? RENDER_MAX_UNITS : 1 + rng(40);
		check_split(text, len, max_units, iteration);
	}
}

/* --- Markdown rendering --- */

/* Entities of m as "type offset length[ url|language]" joined by "; " (the caller frees). */
static char *describe_entities(const struct render_message *m)
{
	size_t cap = 64 + m->n_entities * 64, len = 0;
	for (size_t i = 0; i < m->n_entities; i++)
		cap += (m->entities[i].url ? strlen(m->entities[i].url) : 0) +
		       (m->entities[i].language ? strlen(m->entities[i].language) : 0);
	char *out = malloc(cap);
	if (!out)
		fail_msg("out of memory in the test");
	out[0] = '\0';
	for (size_t i = 0; i < m->n_entities; i++) {
		const struct render_entity *e = &m->entities[i];
		const char *extra = e->url ? e->url : e->language;
		int n = snprintf(out + len, cap - len, "%s%s %zu %zu%s%s", i ? "; " : "", e->type, e->offset,
		                 e->length, extra ? " " : "", extra ? extra : "");
		if (n < 0 || (size_t)n >= cap - len)
			fail_msg("entity description does not fit");
		len += (size_t)n;
	}
	return out;
}

static struct render_output render_or_fail(const char *md, const struct render_options *opt)
{
	struct render_output out;
	if (render_markdown(md, strlen(md), opt, &out) != 0)
		fail_msg("render of \"%.80s\": expected success, got -1", md);
	return out;
}

/* Renders md and checks the single message's text and entities (described as describe_entities does). */
static void expect_render_with(const char *md, const struct render_options *opt, const char *want_text,
                               const char *want_entities)
{
	struct render_output out = render_or_fail(md, opt);
	if (out.n_parts != 1)
		fail_msg("render of \"%.80s\": expected 1 message, got %zu", md, out.n_parts);
	const struct render_message *m = &out.parts[0];
	if (strcmp(m->text, want_text) != 0)
		fail_msg("render of \"%.80s\": expected text\n\"%s\"\ngot\n\"%s\"", md, want_text, m->text);
	if (m->len != strlen(m->text))
		fail_msg("render of \"%.80s\": expected len %zu, got %zu", md, strlen(m->text), m->len);
	char *got = describe_entities(m);
	if (strcmp(got, want_entities) != 0)
		fail_msg("render of \"%.80s\": expected entities\n\"%s\"\ngot\n\"%s\"", md, want_entities,
		         got);
	free(got);
	render_output_free(&out);
}

static void expect_render(const char *md, const char *want_text, const char *want_entities)
{
	expect_render_with(md, NULL, want_text, want_entities);
}

static void expect_partial(const char *md, const char *want_text, const char *want_entities)
{
	struct render_options opt = {.is_partial = true};
	expect_render_with(md, &opt, want_text, want_entities);
}

static void expect_no_messages(const char *md, const struct render_options *opt)
{
	struct render_output out = render_or_fail(md, opt);
	if (out.n_parts != 0 || out.parts)
		fail_msg("render of \"%.80s\": expected no messages, got %zu, the first \"%s\"", md,
		         out.n_parts, out.parts ? out.parts[0].text : "");
	render_output_free(&out);
}

/* Renders md and checks each message's text and entities: want holds pairs, NULL-terminated. */
static void expect_messages(const char *md, const struct render_options *opt, const char *const *want)
{
	struct render_output out = render_or_fail(md, opt);
	size_t n_want = 0;
	while (want[2 * n_want])
		n_want++;
	if (out.n_parts != n_want)
		fail_msg("render of \"%.60s\": expected %zu messages, got %zu", md, n_want, out.n_parts);
	for (size_t i = 0; i < n_want; i++) {
		if (strcmp(out.parts[i].text, want[2 * i]) != 0)
			fail_msg("render of \"%.60s\": message %zu: expected \"%s\", got \"%s\"", md, i,
			         want[2 * i], out.parts[i].text);
		char *got = describe_entities(&out.parts[i]);
		if (strcmp(got, want[2 * i + 1]) != 0)
			fail_msg("render of \"%.60s\": message %zu: expected entities \"%s\", got \"%s\"", md,
			         i, want[2 * i + 1], got);
		free(got);
	}
	render_output_free(&out);
}

static void test_bold_italic_strikethrough_become_entities(void **state)
{
	(void)state;
	expect_render("a **b** *c* _d_ __e__ ~~f~~ ~g~", "a b c d e f g",
	              "bold 2 1; italic 4 1; italic 6 1; bold 8 1; strikethrough 10 1; strikethrough 12 1");
	expect_render("***both***", "both", "italic 0 4; bold 0 4");
	expect_render("**bold *and italic* here**", "bold and italic here", "bold 0 20; italic 5 10");
}

static void test_inline_code_becomes_code_entity(void **state)
{
	(void)state;
	expect_render("run `ls -la` now", "run ls -la now", "code 4 6");
	expect_render("``a ` b``", "a ` b", "code 0 5");
	expect_render("`**not bold**`", "**not bold**", "code 0 12");
}

static void test_fenced_code_becomes_pre_with_language(void **state)
{
	(void)state;
	expect_render("```python\nprint(1)\n```", "print(1)", "pre 0 8 python");
	expect_render("~~~\nx = 1\n\ny = 2\n~~~", "x = 1\n\ny = 2", "pre 0 12");
	expect_render("text\n\n```c\n*p = 0;\n```\n\nafter", "text\n\n*p = 0;\n\nafter", "pre 6 7 c");
	expect_render("```\n\n```\n\nonly this", "only this", "");
}

static void test_code_block_tabs_expand_to_four_columns(void **state)
{
	(void)state;
	expect_render("```go\nfunc f() {\n\treturn\n}\n```", "func f() {\n    return\n}", "pre 0 23 go");
	expect_render("```\nab\tc\n```", "ab  c", "pre 0 5");
}

static void test_indented_code_becomes_pre_without_language(void **state)
{
	(void)state;
	expect_render("para\n\n    indented code\n    more", "para\n\nindented code\nmore", "pre 6 18");
}

static void test_link_becomes_text_link(void **state)
{
	(void)state;
	expect_render("see [the docs](https://example.com/a?b=1&c=2#x)", "see the docs",
	              "text_link 4 8 https://example.com/a?b=1&c=2#x");
	expect_render("[esc](https://example.com/a\\_b)", "esc", "text_link 0 3 https://example.com/a_b");
	expect_render("[ent](https://example.com/?a=1&amp;b=2)", "ent",
	              "text_link 0 3 https://example.com/?a=1&b=2");
	expect_render("[port](http://10.0.0.1:8080/x)", "port", "text_link 0 4 http://10.0.0.1:8080/x");
}

static void test_autolink_stays_plain_text(void **state)
{
	(void)state;
	expect_render("go to https://example.com/x now", "go to https://example.com/x now", "");
	expect_render("<https://example.com>", "https://example.com", "");
	expect_render("[https://example.com](https://example.com)", "https://example.com", "");
	expect_render("mail <me@example.com>", "mail me@example.com", "");
}

static void test_link_telegram_would_refuse_stays_plain_text(void **state)
{
	(void)state;
	static const char *const mds[] = {
	    "[a](relative/path)",          "[a](#anchor)",
	    "[a](mailto:x@example.com)",   "[a](javascript:alert(1))",
	    "[a](http://localhost)",       "[a](https://.)",
	    "[a](ftp://example.com)",      "[a](<https://exa mple.com>)",
	    "[a](https://example.com:0/)", "[a](https://user@example.com/)",
	};
	for (size_t i = 0; i < sizeof mds / sizeof mds[0]; i++)
		expect_render(mds[i], "a", "");
}

static void test_image_becomes_link_on_its_alt_text(void **state)
{
	(void)state;
	expect_render("![a cat](https://example.com/cat.png)", "a cat",
	              "text_link 0 5 https://example.com/cat.png");
	expect_render("![](https://example.com/cat.png)", "https://example.com/cat.png", "");
	expect_render("[](https://example.com/)", "https://example.com/", "");
}

static void test_blockquote_becomes_blockquote(void **state)
{
	(void)state;
	expect_render("before\n\n> quoted **text**\n> second line\n\nafter",
	              "before\n\nquoted text\nsecond line\n\nafter", "blockquote 8 23; bold 15 4");
}

static void test_long_blockquote_becomes_expandable(void **state)
{
	(void)state;
	expect_render("> 1\n> 2\n> 3\n> 4\n> 5", "1\n2\n3\n4\n5", "blockquote 0 9");
	expect_render("> 1\n> 2\n> 3\n> 4\n> 5\n> 6", "1\n2\n3\n4\n5\n6", "expandable_blockquote 0 11");
	char *words = repeat("word ", 101);
	char *md = concat("> ", words);
	struct render_output out = render_or_fail(md, NULL);
	if (out.n_parts != 1 || out.parts[0].n_entities != 1 ||
	    strcmp(out.parts[0].entities[0].type, "expandable_blockquote") != 0)
		fail_msg("a 504-character quote: expected one expandable_blockquote");
	render_output_free(&out);
	free(md);
	free(words);
}

static void test_nested_blockquotes_make_one_entity(void **state)
{
	(void)state;
	expect_render("> outer\n>\n> > inner\n>\n> outer again", "outer\n\ninner\n\nouter again",
	              "blockquote 0 25");
}

static void test_heading_becomes_bold_line(void **state)
{
	(void)state;
	expect_render("# Title\n\ntext", "Title\n\ntext", "bold 0 5");
	expect_render("Setext\n======\n### Three *it*", "Setext\n\nThree it",
	              "bold 0 6; bold 8 8; italic 14 2");
	expect_render("## **Bold** heading", "Bold heading", "bold 0 12");
}

static void test_bullet_lists_nest_with_markers_and_indentation(void **state)
{
	(void)state;
	expect_render("- one\n- two\n  - inner\n    - deeper\n      - deepest\n- three",
	              "• one\n• two\n  ◦ inner\n    ▪ deeper\n      • deepest\n• three", "");
	expect_render("* a\n+ b", "• a\n\n• b", "");
	expect_render("- first line\n  continued", "• first line\n  continued", "");
	expect_render("- **bold** item", "• bold item", "bold 2 4");
}

static void test_ordered_list_honors_start_number(void **state)
{
	(void)state;
	expect_render("1. a\n2. b\n3. c", "1. a\n2. b\n3. c", "");
	expect_render("7) seven\n8) eight", "7. seven\n8. eight", "");
	expect_render("1. outer\n   - inner\n2. next", "1. outer\n  ◦ inner\n2. next", "");
}

static void test_task_list_items_show_boxes(void **state)
{
	(void)state;
	expect_render("- [ ] todo\n- [x] done\n- [X] also", "☐ todo\n☑ done\n☑ also", "");
	expect_render("1. [x] first", "1. ☑ first", "");
}

static void test_loose_list_items_are_separated_by_blank_lines(void **state)
{
	(void)state;
	expect_render("- a\n\n- b", "• a\n\n• b", "");
	expect_render("1. a\n\n   second para\n2. b", "1. a\n\n  second para\n\n2. b", "");
}

static void test_list_item_starting_with_a_block_puts_its_marker_above(void **state)
{
	(void)state;
	expect_render("- ```sh\n  ls\n  ```\n- > quoted", "•\nls\n•\n  quoted", "pre 2 2 sh; blockquote 7 8");
	expect_render("- - nested", "•\n  ◦ nested", "");
	expect_render("-\n- b", "•\n• b", "");
}

static void test_horizontal_rule_is_a_line_of_dashes(void **state)
{
	(void)state;
	expect_render("above\n\n---\n\nbelow", "above\n\n———\n\nbelow", "");
	expect_render("***", "———", "");
}

static void test_table_becomes_pre_with_aligned_columns(void **state)
{
	(void)state;
	expect_render("| Name | Qty |\n|---|---|\n| apple | 3 |\n| kiwi | 12 |",
	              "Name  │ Qty\n──────┼────\napple │ 3\nkiwi  │ 12", "pre 0 44");
	/* Widths count characters: Cyrillic letters are 2 bytes but one column. */
	expect_render("| Имя | x |\n|---|---|\n| Борис | 1 |", "Имя   │ x\n──────┼──\nБорис │ 1", "pre 0 29");
	/* Formatting inside cells becomes its plain text. */
	expect_render("| **b** | `c` | [l](https://example.com) |\n|---|---|---|\n| 1 | 2 | 3 |",
	              "b │ c │ l\n──┼───┼──\n1 │ 2 │ 3", "pre 0 29");
}

static void test_table_columns_follow_their_alignment(void **state)
{
	(void)state;
	expect_render("| left | center | right |\n|:--|:-:|--:|\n| a | b | c |",
	              "left │ center │ right\n─────┼────────┼──────\na    │   b    │     c", "pre 0 65");
}

static void test_table_of_many_empty_cells_stays_small(void **state)
{
	(void)state;
	/* 500 columns over 2000 rows of "|": padded, 1 million cells. */
	char *head = repeat("|h", 500);
	char *rule = repeat("|-", 500);
	char *rows = repeat("|x\n", 2000);
	size_t n = strlen(head) + strlen(rule) + strlen(rows) + 8;
	char *md = malloc(n);
	if (!md)
		fail_msg("out of memory in the test");
	snprintf(md, n, "%s\n%s\n%s", head, rule, rows);
	struct render_output out = render_or_fail(md, NULL);
	size_t total = 0;
	for (size_t i = 0; i < out.n_parts; i++)
		total += out.parts[i].len;
	if (total > 10 * strlen(md))
		fail_msg("a wide table over short rows: expected at most %zu bytes of text, got %zu",
		         10 * strlen(md), total);
	render_output_free(&out);
	free(md);
	free(rows);
	free(rule);
	free(head);
}

static void test_escapes_and_html_come_out_as_literal_text(void **state)
{
	(void)state;
	expect_render("\\*not italic\\* \\`x\\` 1\\. \\# \\[a\\](b)", "*not italic* `x` 1. # [a](b)", "");
	expect_render("a <b>bold?</b> <span class=\"x\">s</span> c",
	              "a <b>bold?</b> <span class=\"x\">s</span> c", "");
	expect_render("<div>\n*x*\n</div>\n\nafter", "<div>\n*x*\n</div>\n\nafter", "");
	expect_render("<!-- note -->", "<!-- note -->", "");
	expect_render("x <think>inline</think> y", "x <think>inline</think> y", "");
}

static void test_html_entities_are_decoded(void **state)
{
	(void)state;
	expect_render("&amp; &lt;b&gt; &quot; &copy; &mdash; &#1046; &#x1F600; &#0; &unknown;",
	              "& <b> \" © — Ж 😀 \xEF\xBF\xBD &unknown;", "");
}

static void test_blocks_are_separated_by_one_blank_line(void **state)
{
	(void)state;
	expect_render("\n\n# H\npara one\nline two\n\n\n\npara two\n- a\n- b\n\n> q\n\n\n",
	              "H\n\npara one\nline two\n\npara "
	              "two\n\n• a\n• b\n\nq",
	              "bold 0 1; blockquote 41 1");
	expect_render("hard  \nbreak\\\nhere", "hard\nbreak\nhere", "");
}

static void test_bold_around_code_is_split_around_it(void **state)
{
	(void)state;
	expect_render("**bold `code` more**", "bold code more", "bold 0 5; code 5 4; bold 9 5");
	expect_render("***a `c` b***", "a c b", "italic 0 2; bold 0 2; code 2 1; italic 3 2; bold 3 2");
	expect_render("# Use `make`", "Use make", "bold 0 4; code 4 4");
	expect_render("**`all code`**", "all code", "code 0 8");
}

static void test_code_inside_link_stays_plain_link_text(void **state)
{
	(void)state;
	expect_render("[`api`](https://example.com)", "api", "text_link 0 3 https://example.com");
	expect_render("**[`x` y](https://example.com)**", "x y",
	              "bold 0 3; text_link 0 3 https://example.com");
}

static void test_styles_nest_with_links(void **state)
{
	(void)state;
	expect_render("**see [this](https://example.com) now**", "see this now",
	              "bold 0 12; text_link 4 4 https://example.com");
	expect_render("[**bold** link](https://example.com)", "bold link",
	              "text_link 0 9 https://example.com; bold 0 4");
	expect_render("![[inner](https://a.example)](https://b.example)", "inner",
	              "text_link 0 5 https://b.example");
}

static void test_same_style_nested_makes_one_entity(void **state)
{
	(void)state;
	expect_render("**a **b** c**", "a b c", "bold 0 5");
	expect_render("*a *b* c*", "a b c", "italic 0 5");
}

static void test_span_md4c_leaves_open_ends_with_its_paragraph(void **state)
{
	(void)state;
	/* md4c 0.4.8 enters the strikethrough, lets the autolink swallow its closer, and never leaves it. */
	expect_render("~~http://a.b~~c~~ next\n\nafter **b**", "http://a.b~~c~~ next\n\nafter b",
	              "strikethrough 0 20; bold 28 1");
}

static void test_code_block_inside_blockquote_nests(void **state)
{
	(void)state;
	expect_render("> ```sh\n> ls\n> ```", "ls", "blockquote 0 2; pre 0 2 sh");
	expect_render("> say `hi`", "say hi", "blockquote 0 6; code 4 2");
}

static void test_cyrillic_offsets_count_one_unit_per_letter(void **state)
{
	(void)state;
	expect_render("Привет, **мир**! [Ссылка](https://пример.example.com)", "Привет, мир! Ссылка",
	              "bold 8 3");
	expect_render("Ёж *ёлка* `код` [сайт](https://example.com/путь)", "Ёж ёлка код сайт",
	              "italic 3 4; code 8 3; text_link 12 4 https://example.com/путь");
}

static void test_emoji_offsets_count_two_units(void **state)
{
	(void)state;
	expect_render("😀 **bold** 👍🏽 *x*", "😀 bold 👍🏽 x", "bold 3 4; italic 13 1");
	expect_render("**😀**", "😀", "bold 0 2");
	expect_render("`𝔘` Ж", "𝔘 Ж", "code 0 2");
}

static void test_invalid_utf8_and_nul_become_replacement_characters(void **state)
{
	(void)state;
	expect_render("a\xff"
	              "b **\xc0\x80**",
	              "a\xEF\xBF\xBD"
	              "b \xEF\xBF\xBD\xEF\xBF\xBD",
	              "bold 4 2");
	struct render_output out;
	const char md[] = "x\0y";
	if (render_markdown(md, 3, NULL, &out) != 0 || out.n_parts != 1 ||
	    strcmp(out.parts[0].text, "x\xEF\xBF\xBDy") != 0)
		fail_msg("NUL: expected \"x\\uFFFDy\", got \"%s\"",
		         out.n_parts ? out.parts[0].text : "(nothing)");
	render_output_free(&out);
	expect_render("line one\r\nline two\rthree", "line one\nline two\nthree", "");
}

static void test_empty_and_blank_markdown_give_no_messages(void **state)
{
	(void)state;
	expect_no_messages("", NULL);
	expect_no_messages(" \n\t\n", NULL);
	expect_no_messages("```\n```", NULL);
	expect_no_messages("<think>only reasoning</think>", NULL);
	expect_no_messages("> ", NULL);
}

static void test_think_is_hidden_by_default(void **state)
{
	(void)state;
	expect_render("<think>\nLet me see.\n</think>\n\nThe **answer**.", "The answer.", "bold 4 6");
	expect_render("  \n<think>x</think>after", "after", "");
}

static void test_think_can_be_shown_as_expandable_blockquote(void **state)
{
	(void)state;
	struct render_options opt = {.think = RENDER_THINK_QUOTE};
	expect_render_with("<think>\nStep *one*\n</think>\nDone", &opt, "Step *one*\n\nDone",
	                   "expandable_blockquote 0 10");
	expect_render_with("<think></think>Done", &opt, "Done", "");
	expect_render_with("Intro <think>not reasoning</think>", &opt, "Intro <think>not reasoning</think>",
	                   "");
}

static void test_think_while_streaming(void **state)
{
	(void)state;
	struct render_options quote = {.think = RENDER_THINK_QUOTE, .is_partial = true};
	struct render_options hide = {.is_partial = true};
	expect_render_with("<think>still thinking", &quote, "still thinking", "expandable_blockquote 0 14");
	expect_render_with("<think>almost done</thi", &quote, "almost done", "expandable_blockquote 0 11");
	expect_no_messages("<think>still thinking", &hide);
	expect_no_messages("<thi", &hide);
	/* A finished answer cut off mid-tag shows what it has. */
	expect_render("<thi", "<thi", "");
}

static void test_partial_unclosed_markup_at_the_end_is_closed(void **state)
{
	(void)state;
	expect_partial("Hello **wor", "Hello wor", "bold 6 3");
	expect_partial("an *ital", "an ital", "italic 3 4");
	expect_partial("an _ital", "an ital", "italic 3 4");
	expect_partial("a ~~gone", "a gone", "strikethrough 2 4");
	expect_partial("run `ls -l", "run ls -l", "code 4 5");
	expect_partial("**bold and `code", "bold and code", "bold 0 9; code 9 4");
	expect_partial("**bold *both", "bold both", "bold 0 9; italic 5 4");
	expect_partial("**done** and *open ", "done and open", "bold 0 4; italic 9 4");
	expect_partial("- a\n- **b", "• a\n• b", "bold 6 1");
	expect_partial("# Title **x", "Title x", "bold 0 7");
	expect_partial("> quoted **x", "quoted x", "blockquote 0 8; bold 7 1");
}

static void test_partial_marker_with_nothing_after_it_is_dropped(void **state)
{
	(void)state;
	expect_partial("Hello **", "Hello", "");
	expect_partial("Hello ** ", "Hello", "");
	expect_partial("word`", "word", "");
	expect_partial("a **b** c *", "a b c", "bold 2 1");
	expect_partial("end**", "end", "");
}

static void test_partial_unclosed_fence_is_code_to_the_end(void **state)
{
	(void)state;
	expect_partial("Look:\n\n```python\nx = 1\ny = **2", "Look:\n\nx = 1\ny = **2", "pre 7 13 python");
	expect_partial("```\nx\n```\nafter **b", "x\n\nafter b", "pre 0 1; bold 9 1");
	expect_partial("~~~\n**not closed\n", "**not closed", "pre 0 12");
	struct render_options opt = {.is_partial = true};
	expect_no_messages("```", &opt);
}

static void test_partial_leaves_closed_and_literal_markup_alone(void **state)
{
	(void)state;
	expect_partial("snake_case_name", "snake_case_name", "");
	expect_partial("2 * 3 * 4", "2 * 3 * 4", "");
	expect_partial("\\*not\\*", "*not*", "");
	expect_partial("**a** `b` ~~c~~", "a b c", "bold 0 1; code 2 1; strikethrough 4 1");
	expect_partial("**x\n\nnew para", "**x\n\nnew para", "");
}

static void test_finished_answer_keeps_unclosed_markers_literal(void **state)
{
	(void)state;
	expect_render("Hello **wor", "Hello **wor", "");
	expect_render("x `y", "x `y", "");
}

static void test_messages_are_cut_at_paragraph_then_line_then_word(void **state)
{
	(void)state;
	struct render_options opt = {.max_units = 20};
	expect_messages("aaa bbb\nccc\n\nddd eee\nfff", &opt,
	                (const char *const[]){"aaa bbb\nccc", "", "ddd eee\nfff", "", NULL});
	opt.max_units = 12;
	expect_messages("aaa bbb\nccc ddd", &opt, (const char *const[]){"aaa bbb", "", "ccc ddd", "", NULL});
	opt.max_units = 9;
	expect_messages("aaa bbb ccc", &opt, (const char *const[]){"aaa bbb", "", "ccc", "", NULL});
	opt.max_units = 4;
	expect_messages("abcdefgh", &opt, (const char *const[]){"abcd", "", "efgh", "", NULL});
}

static void test_entity_crossing_a_cut_becomes_one_in_each_message(void **state)
{
	(void)state;
	struct render_options opt = {.max_units = 12};
	expect_messages("**one two three four**", &opt,
	                (const char *const[]){"one two", "bold 0 7", "three four", "bold 0 10", NULL});
	opt.max_units = 10;
	expect_messages("[a b c d e f g h](https://example.com)", &opt,
	                (const char *const[]){"a b c d e", "text_link 0 9 https://example.com", "f g h",
	                                      "text_link 0 5 https://example.com", NULL});
	opt.max_units = 8;
	expect_messages(
	    "> aaa bbb\n> ccc ddd", &opt,
	    (const char *const[]){"aaa bbb", "blockquote 0 7", "ccc ddd", "blockquote 0 7", NULL});
}

static void test_code_block_cut_is_reopened_with_its_language(void **state)
{
	(void)state;
	struct render_options opt = {.max_units = 16};
	expect_messages("```rust\nlet a = 1;\nlet b = 2;\nlet c = 3;\n```", &opt,
	                (const char *const[]){"let a = 1;", "pre 0 10 rust", "let b = 2;", "pre 0 10 rust",
	                                      "let c = 3;", "pre 0 10 rust", NULL});
}

static void test_code_block_cut_keeps_the_next_lines_indentation(void **state)
{
	(void)state;
	struct render_options opt = {.max_units = 14};
	expect_messages("```py\ndef f():\n    return 1\n```", &opt,
	                (const char *const[]){"def f():", "pre 0 8 py", "    return 1", "pre 0 12 py", NULL});
	expect_render("```\n    indented first\n```", "    indented first", "pre 0 18");
	opt.max_units = 9;
	expect_messages("| a | n |\n|---|--:|\n| x | 100 |\n| y | 7 |", &opt,
	                (const char *const[]){"a │   n", "pre 0 7", "──┼────", "pre 0 7", "x │ 100",
	                                      "pre 0 7", "y │   7", "pre 0 7", NULL});
	/* Outside code, leading spaces at a cut go. */
	opt.max_units = 6;
	expect_messages("aaaa\n    bb", &opt, (const char *const[]){"aaaa", "", "bb", "", NULL});
}

static void test_entity_limit_starts_a_new_message(void **state)
{
	(void)state;
	struct render_options opt = {.max_entities = 2};
	expect_messages("*a* *b* *c* *d* *e*", &opt,
	                (const char *const[]){"a b", "italic 0 1; italic 2 1", "c d",
	                                      "italic 0 1; italic 2 1", "e", "italic 0 1", NULL});
	/* The default allows 100 entities a message. */
	char *md = repeat("*x* ", 250);
	struct render_output out = render_or_fail(md, NULL);
	if (out.n_parts != 3 || out.parts[0].n_entities != 100 || out.parts[1].n_entities != 100 ||
	    out.parts[2].n_entities != 50)
		fail_msg("250 entities: expected messages of 100, 100, 50, got %zu messages", out.n_parts);
	render_output_free(&out);
	free(md);
}

static void test_entity_limit_below_nesting_keeps_the_outer_entities(void **state)
{
	(void)state;
	struct render_options opt = {.max_entities = 1};
	expect_messages("***x*** y", &opt, (const char *const[]){"x y", "italic 0 1", NULL});
	opt.max_units = 1; /* taken as 2, one surrogate pair */
	expect_messages("😀😀", &opt, (const char *const[]){"😀", "", "😀", "", NULL});
}

static void test_long_answer_fits_4096_units_a_message(void **state)
{
	(void)state;
	char *para = repeat("Слово **😀жирный** текст ", 200);
	struct render_output out = render_or_fail(para, NULL);
	if (out.n_parts < 2)
		fail_msg("a long answer: expected several messages, got %zu", out.n_parts);
	for (size_t i = 0; i < out.n_parts; i++) {
		size_t u = render_utf16_len(out.parts[i].text, out.parts[i].len);
		if (u > RENDER_MAX_UNITS)
			fail_msg("message %zu: expected at most 4096 units, got %zu", i, u);
		for (size_t k = 0; k < out.parts[i].n_entities; k++) {
			const struct render_entity *e = &out.parts[i].entities[k];
			if (e->offset + e->length > u)
				fail_msg("message %zu entity %zu: expected within %zu units, got %zu+%zu", i,
				         k, u, e->offset, e->length);
		}
	}
	render_output_free(&out);
	free(para);
}

static void test_entities_json_lists_message_entities(void **state)
{
	(void)state;
	struct render_output out = render_or_fail("**b** [l](https://example.com)\n\n```c\nx\n```", NULL);
	struct buf b;
	buf_init(&b, SIZE_MAX - 1);
	const char *got = render_write_entities(&b, &out.parts[0]) == BUF_OK ? buf_str(&b) : NULL;
	const char *want =
	    "[{\"type\":\"bold\",\"offset\":0,\"length\":1},"
	    "{\"type\":\"text_link\",\"offset\":2,\"length\":1,\"url\":\"https://example.com\"},"
	    "{\"type\":\"pre\",\"offset\":5,\"length\":1,\"language\":\"c\"}]";
	if (!got || strcmp(got, want) != 0)
		fail_msg("entities JSON: expected %s, got %s", want, got ? got : "NULL");
	buf_free(&b);
	render_output_free(&out);
}

/* --- property checks over generated Markdown --- */

/* The UTF-16 units of text[0..len) at each byte, or SIZE_MAX inside a sequence; the caller frees. */
static size_t *unit_offsets(const char *text, size_t len)
{
	size_t *at = malloc((len + 1) * sizeof *at);
	if (!at)
		fail_msg("out of memory in the test");
	size_t u = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];
		if ((c & 0xC0) == 0x80) {
			at[i] = SIZE_MAX;
			continue;
		}
		at[i] = u;
		u += c >= 0xF0 ? 2 : 1;
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

/* Checks one message against what Telegram accepts and what render_markdown promises. */
static void check_message(const struct render_message *m, const struct render_options *opt, const char *what,
                          size_t index)
{
	if (m->len == 0 || strlen(m->text) != m->len)
		fail_msg("%s message %zu: expected non-empty text of len bytes", what, index);
	if (is_ws(m->text[m->len - 1]))
		fail_msg("%s message %zu: expected no whitespace at its end, got \"%s\"", what, index,
		         m->text);
	/* Only a code block or table keeps its first line's indentation. */
	size_t indent = 0;
	while (m->text[indent] == ' ' || m->text[indent] == '\t')
		indent++;
	bool is_pre_indent = false;
	for (size_t k = 0; k < m->n_entities && m->entities[k].offset == 0; k++)
		is_pre_indent =
		    is_pre_indent || (is_type(&m->entities[k], "pre") && m->entities[k].length > indent);
	if (is_ws(m->text[indent]) || (indent > 0 && !is_pre_indent))
		fail_msg("%s message %zu: expected no whitespace at its start outside pre, got \"%s\"", what,
		         index, m->text);
	for (size_t i = 0; i < m->len;) {
		unsigned char c = (unsigned char)m->text[i];
		size_t n = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
		if ((c >= 0x80 && c < 0xC2) || i + n > m->len ||
		    render_utf16_len(m->text + i, n) != (n == 4 ? 2 : 1))
			fail_msg("%s message %zu: expected valid UTF-8 at byte %zu", what, index, i);
		i += n;
	}
	size_t *at = unit_offsets(m->text, m->len);
	size_t units = at[m->len];
	if (units > opt->max_units)
		fail_msg("%s message %zu: expected at most %zu units, got %zu", what, index, opt->max_units,
		         units);
	if (m->n_entities > opt->max_entities)
		fail_msg("%s message %zu: expected at most %zu entities, got %zu", what, index,
		         opt->max_entities, m->n_entities);
	for (size_t k = 0; k < m->n_entities; k++) {
		const struct render_entity *e = &m->entities[k];
		if (e->length == 0 || e->offset + e->length > units)
			fail_msg(
			    "%s message %zu entity %zu (%s): expected a non-empty range within %zu units, "
			    "got %zu+%zu",
			    what, index, k, e->type, units, e->offset, e->length);
		bool starts_ok = false, ends_ok = false;
		for (size_t i = 0; i <= m->len; i++) {
			starts_ok = starts_ok || at[i] == e->offset;
			ends_ok = ends_ok || at[i] == e->offset + e->length;
		}
		if (!starts_ok || !ends_ok)
			fail_msg("%s message %zu entity %zu: expected ends on character boundaries", what,
			         index, k);
		if ((e->url != NULL) != is_type(e, "text_link") || (e->language && !is_type(e, "pre")))
			fail_msg(
			    "%s message %zu entity %zu (%s): url only on text_link, language only on pre",
			    what, index, k, e->type);
		if (k > 0) {
			const struct render_entity *p = &m->entities[k - 1];
			if (p->offset > e->offset || (p->offset == e->offset && p->length < e->length))
				fail_msg("%s message %zu: expected entities sorted by offset, longer first, "
				         "at %zu",
				         what, index, k);
		}
		/* Every earlier entity that overlaps this one must contain it, and may. */
		for (size_t j = 0; j < k; j++) {
			const struct render_entity *o = &m->entities[j];
			if (o->offset + o->length <= e->offset)
				continue;
			if (e->offset + e->length > o->offset + o->length)
				fail_msg("%s message %zu: %s %zu+%zu overlaps %s %zu+%zu without nesting",
				         what, index, e->type, e->offset, e->length, o->type, o->offset,
				         o->length);
			if (is_type(o, "pre") || is_type(o, "code"))
				fail_msg("%s message %zu: %s nested inside %s", what, index, e->type,
				         o->type);
			if (is_quote(o) && is_quote(e))
				fail_msg("%s message %zu: blockquotes nested", what, index);
			if ((is_type(e, "pre") || is_type(e, "code")) && !is_quote(o))
				fail_msg("%s message %zu: %s inside %s", what, index, e->type, o->type);
			if (is_type(e, "text_link") && is_type(o, "text_link"))
				fail_msg("%s message %zu: text_link inside text_link", what, index);
			if (strcmp(e->type, o->type) == 0)
				fail_msg("%s message %zu: %s inside %s", what, index, e->type, o->type);
		}
	}
	free(at);
}

/* Entity types as bits, for comparing what covers each visible character. */
static unsigned type_bit(const char *type)
{
	static const char *const types[] = {
	    "bold",      "italic",     "strikethrough",         "code",      "pre",
	    "text_link", "blockquote", "expandable_blockquote", "underline", "spoiler"};
	for (unsigned i = 0; i < sizeof types / sizeof types[0]; i++)
		if (strcmp(type, types[i]) == 0)
			return 1u << i;
	fail_msg("unexpected entity type \"%s\"", type);
	return 0;
}

/*
 * The visible (non-whitespace) bytes of all messages in order, and for each
 * the entity types covering it: split and unsplit renders must agree on both.
 */
static void visible_coverage(const struct render_output *out, char **chars, unsigned **types, size_t *n)
{
	size_t total = 0;
	for (size_t i = 0; i < out->n_parts; i++)
		total += out->parts[i].len;
	*chars = malloc(total + 1);
	*types = calloc(total + 1, sizeof **types);
	if (!*chars || !*types)
		fail_msg("out of memory in the test");
	*n = 0;
	for (size_t i = 0; i < out->n_parts; i++) {
		const struct render_message *m = &out->parts[i];
		size_t *at = unit_offsets(m->text, m->len);
		size_t u = 0;
		for (size_t b = 0; b < m->len; b++) {
			if (at[b] != SIZE_MAX)
				u = at[b];
			if (is_ws(m->text[b]))
				continue;
			unsigned bits = 0;
			for (size_t k = 0; k < m->n_entities; k++)
				if (u >= m->entities[k].offset &&
				    u < m->entities[k].offset + m->entities[k].length)
					bits |= type_bit(m->entities[k].type);
			(*chars)[*n] = m->text[b];
			(*types)[*n] = bits;
			(*n)++;
		}
		free(at);
	}
}

/* How many generated inputs were split, and how many entities they had: the generator must exercise both. */
static size_t n_split_inputs, n_entities_seen;

static void check_render(const char *md, size_t len, const struct render_options *opt, size_t iteration)
{
	char what[64];
	snprintf(what, sizeof what, "input %zu", iteration);
	struct render_output split, whole;
	if (render_markdown(md, len, opt, &split) != 0)
		fail_msg("%s: expected success, got -1", what);
	struct render_options unlimited = *opt;
	unlimited.max_units = SIZE_MAX / 4;
	unlimited.max_entities = SIZE_MAX / 4;
	if (render_markdown(md, len, &unlimited, &whole) != 0)
		fail_msg("%s: expected success unsplit, got -1", what);
	if (whole.n_parts > 1)
		fail_msg("%s: expected at most one message without limits, got %zu", what, whole.n_parts);
	n_split_inputs += split.n_parts > 1;
	for (size_t i = 0; i < split.n_parts; i++) {
		check_message(&split.parts[i], opt, what, i);
		n_entities_seen += split.parts[i].n_entities;
	}
	for (size_t i = 0; i < whole.n_parts; i++)
		check_message(&whole.parts[i], &unlimited, what, i);

	/* Each message is a piece of the whole text, in order, with only whitespace between. */
	const char *full = whole.n_parts ? whole.parts[0].text : "";
	size_t pos = 0, full_len = strlen(full);
	for (size_t i = 0; i < split.n_parts; i++) {
		const struct render_message *m = &split.parts[i];
		size_t indent = 0;
		while (is_ws(m->text[indent]))
			indent++;
		while (pos < full_len && is_ws(full[pos]))
			pos++;
		size_t n = m->len - indent;
		if (pos < indent || memcmp(full + pos - indent, m->text, indent) != 0 || full_len - pos < n ||
		    memcmp(full + pos, m->text + indent, n) != 0)
			fail_msg(
			    "%s: message %zu \"%.40s\" is not the next piece of the whole text at byte %zu",
			    what, i, m->text, pos);
		pos += n;
	}
	while (pos < full_len && is_ws(full[pos]))
		pos++;
	if (pos != full_len)
		fail_msg("%s: expected the messages to hold the whole text, %zu bytes left", what,
		         full_len - pos);

	char *c1, *c2;
	unsigned *t1, *t2;
	size_t n1, n2;
	visible_coverage(&split, &c1, &t1, &n1);
	visible_coverage(&whole, &c2, &t2, &n2);
	if (n1 != n2 || memcmp(c1, c2, n1) != 0)
		fail_msg("%s: expected the same visible characters split and unsplit", what);
	for (size_t i = 0; i < n1; i++)
		if (t1[i] != t2[i])
			fail_msg("%s: visible byte %zu: expected entity types 0x%x as unsplit, got 0x%x",
			         what, i, t2[i], t1[i]);
	free(c1);
	free(c2);
	free(t1);
	free(t2);
	render_output_free(&split);
	render_output_free(&whole);
}

static void test_property_rendered_messages_are_well_formed_and_complete(void **state)
{
	(void)state;
	static const char *const pieces[] = {
	    "word",    " ",
	    "  ",      "\n",
	    "\n\n",    "**",
	    "*",       "_",
	    "~~",      "`",
	    "```py\n", "\n```\n",
	    "[",       "](https://example.com/x)",
	    "](rel)",  "![",
	    "> ",      "- ",
	    "1. ",     "- [ ] ",
	    "# ",      "слово",
	    "😀",       "👍🏽",
	    "|",       "| a | b |\n|---|--:|\n",
	    "<b>",     "&amp;",
	    "\\*",     "https://auto.example.com/y ",
	    "\t",      "---\n",
	    "<think>", "</think>",
	    "\xff",    "    ",
	    "Ж",       "x",
	    ".",       "~~~\n",
	    "***",     "\r\n",
	};
	size_t n_pieces = sizeof pieces / sizeof pieces[0];
	char md[2048];
	for (size_t iteration = 0; iteration < 3000; iteration++) {
		size_t len = 0, n = 1 + rng(60);
		for (size_t i = 0; i < n; i++) {
			const char *p = pieces[rng((uint32_t)n_pieces)];
			size_t pl = strlen(p);
			if (len + pl >= sizeof md)
				break;
			memcpy(md + len, p, pl);
			len += pl;
		}
		md[len] = '\0';
		struct render_options opt = {
		    .max_units = iteration % 10 == 0 ? RENDER_MAX_UNITS : 2 + rng(60),
		    .max_entities = 5 + rng(10),
		    .think = rng(2) ? RENDER_THINK_QUOTE : RENDER_THINK_HIDE,
		    .is_partial = rng(2) == 1,
		};
		check_render(md, len, &opt, iteration);
	}
	if (n_split_inputs < 500 || n_entities_seen < 3000)
		fail_msg(
		    "the generator: expected at least 500 split inputs and 3000 entities, got %zu and %zu",
		    n_split_inputs, n_entities_seen);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_utf16_len_counts_surrogate_pairs_as_two),
	    cmocka_unit_test(test_utf16_len_counts_invalid_bytes_one_each),
	    cmocka_unit_test(test_short_text_is_one_part),
	    cmocka_unit_test(test_empty_and_blank_text_give_no_parts),
	    cmocka_unit_test(test_text_of_exactly_max_units_is_one_part),
	    cmocka_unit_test(test_cyrillic_counts_one_unit_per_letter),
	    cmocka_unit_test(test_emoji_at_the_boundary_is_not_split),
	    cmocka_unit_test(test_paragraph_break_preferred_over_line_and_space),
	    cmocka_unit_test(test_line_break_preferred_over_space),
	    cmocka_unit_test(test_space_used_when_no_line_break),
	    cmocka_unit_test(test_separator_right_at_the_limit_is_used),
	    cmocka_unit_test(test_long_text_without_spaces_is_cut_hard),
	    cmocka_unit_test(test_whitespace_at_cuts_and_ends_is_dropped),
	    cmocka_unit_test(test_max_units_below_two_is_raised_to_two),
	    cmocka_unit_test(test_invalid_bytes_are_cut_like_characters),
	    cmocka_unit_test(test_property_parts_fit_and_keep_every_visible_character),
	    cmocka_unit_test(test_bold_italic_strikethrough_become_entities),
	    cmocka_unit_test(test_inline_code_becomes_code_entity),
	    cmocka_unit_test(test_fenced_code_becomes_pre_with_language),
	    cmocka_unit_test(test_code_block_tabs_expand_to_four_columns),
	    cmocka_unit_test(test_indented_code_becomes_pre_without_language),
	    cmocka_unit_test(test_link_becomes_text_link),
	    cmocka_unit_test(test_autolink_stays_plain_text),
	    cmocka_unit_test(test_link_telegram_would_refuse_stays_plain_text),
	    cmocka_unit_test(test_image_becomes_link_on_its_alt_text),
	    cmocka_unit_test(test_blockquote_becomes_blockquote),
	    cmocka_unit_test(test_long_blockquote_becomes_expandable),
	    cmocka_unit_test(test_nested_blockquotes_make_one_entity),
	    cmocka_unit_test(test_heading_becomes_bold_line),
	    cmocka_unit_test(test_bullet_lists_nest_with_markers_and_indentation),
	    cmocka_unit_test(test_ordered_list_honors_start_number),
	    cmocka_unit_test(test_task_list_items_show_boxes),
	    cmocka_unit_test(test_loose_list_items_are_separated_by_blank_lines),
	    cmocka_unit_test(test_list_item_starting_with_a_block_puts_its_marker_above),
	    cmocka_unit_test(test_horizontal_rule_is_a_line_of_dashes),
	    cmocka_unit_test(test_table_becomes_pre_with_aligned_columns),
	    cmocka_unit_test(test_table_columns_follow_their_alignment),
	    cmocka_unit_test(test_table_of_many_empty_cells_stays_small),
	    cmocka_unit_test(test_escapes_and_html_come_out_as_literal_text),
	    cmocka_unit_test(test_html_entities_are_decoded),
	    cmocka_unit_test(test_blocks_are_separated_by_one_blank_line),
	    cmocka_unit_test(test_bold_around_code_is_split_around_it),
	    cmocka_unit_test(test_code_inside_link_stays_plain_link_text),
	    cmocka_unit_test(test_styles_nest_with_links),
	    cmocka_unit_test(test_same_style_nested_makes_one_entity),
	    cmocka_unit_test(test_span_md4c_leaves_open_ends_with_its_paragraph),
	    cmocka_unit_test(test_code_block_inside_blockquote_nests),
	    cmocka_unit_test(test_cyrillic_offsets_count_one_unit_per_letter),
	    cmocka_unit_test(test_emoji_offsets_count_two_units),
	    cmocka_unit_test(test_invalid_utf8_and_nul_become_replacement_characters),
	    cmocka_unit_test(test_empty_and_blank_markdown_give_no_messages),
	    cmocka_unit_test(test_think_is_hidden_by_default),
	    cmocka_unit_test(test_think_can_be_shown_as_expandable_blockquote),
	    cmocka_unit_test(test_think_while_streaming),
	    cmocka_unit_test(test_partial_unclosed_markup_at_the_end_is_closed),
	    cmocka_unit_test(test_partial_marker_with_nothing_after_it_is_dropped),
	    cmocka_unit_test(test_partial_unclosed_fence_is_code_to_the_end),
	    cmocka_unit_test(test_partial_leaves_closed_and_literal_markup_alone),
	    cmocka_unit_test(test_finished_answer_keeps_unclosed_markers_literal),
	    cmocka_unit_test(test_messages_are_cut_at_paragraph_then_line_then_word),
	    cmocka_unit_test(test_entity_crossing_a_cut_becomes_one_in_each_message),
	    cmocka_unit_test(test_code_block_cut_is_reopened_with_its_language),
	    cmocka_unit_test(test_code_block_cut_keeps_the_next_lines_indentation),
	    cmocka_unit_test(test_entity_limit_starts_a_new_message),
	    cmocka_unit_test(test_entity_limit_below_nesting_keeps_the_outer_entities),
	    cmocka_unit_test(test_long_answer_fits_4096_units_a_message),
	    cmocka_unit_test(test_entities_json_lists_message_entities),
	    cmocka_unit_test(test_property_rendered_messages_are_well_formed_and_complete),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
