/* Unit tests for src/render.c: UTF-16 accounting and plain-text splitting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "render.h"

#define expect_int(what, expected, actual)                                                                   \
	do {                                                                                                 \
		long long e_ = (expected), a_ = (actual);                                                    \
		if (e_ != a_)                                                                                \
			fail_msg("%s: expected %lld, got %lld", (what), e_, a_);                             \
	} while (0)

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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
