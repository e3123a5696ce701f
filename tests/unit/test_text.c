/* Unit tests for src/chat/text.c: every sentence in English and Russian, chosen by language_code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "chat/text.h"

#include "expect.h"

/* Cyrillic letters are U+0400..U+04FF: UTF-8 lead bytes 0xD0..0xD3. */
static bool has_cyrillic(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p >= 0xD0 && *p <= 0xD3 && (p[1] & 0xC0) == 0x80)
			return true;
	return false;
}

static void test_every_text_has_english_and_russian(void **state)
{
	(void)state;
	for (int id = 0; id < TEXT_COUNT; id++) {
		const char *en = text_get((enum text_id)id, "en"), *ru = text_get((enum text_id)id, "ru");
		if (!en || !*en)
			fail_msg("text %d in English: expected a sentence, got %s", id, en ? "\"\"" : "NULL");
		if (!ru || !*ru)
			fail_msg("text %d in Russian: expected a sentence, got %s", id, ru ? "\"\"" : "NULL");
		if (has_cyrillic(en))
			fail_msg("text %d in English: expected no Cyrillic, got \"%s\"", id, en);
		if (!has_cyrillic(ru))
			fail_msg("text %d in Russian: expected Cyrillic, got \"%s\"", id, ru);
	}
}

static void test_russian_for_ru_and_its_neighbours(void **state)
{
	(void)state;
	static const char *const codes[] = {"ru", "ru-RU", "be", "uk", "kk", "uk-UA"};
	const char *ru = text_get(TEXT_HELP, "ru");
	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
		char what[64];
		snprintf(what, sizeof what, "TEXT_HELP for language_code \"%s\" (Russian)", codes[i]);
		expect_str(what, ru, text_get(TEXT_HELP, codes[i]));
	}
}

static void test_english_for_everything_else(void **state)
{
	(void)state;
	static const char *const codes[] = {"en", "en-GB", "de", "", "rus", "r", "kz", "ukr"};
	const char *en = text_get(TEXT_HELP, "en");
	for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
		char what[64];
		snprintf(what, sizeof what, "TEXT_HELP for language_code \"%s\" (English)", codes[i]);
		expect_str(what, en, text_get(TEXT_HELP, codes[i]));
	}
	expect_str("TEXT_HELP for language_code NULL (English)", en, text_get(TEXT_HELP, NULL));
}

/* conversation.c uses TEXT_REFUSED as a printf format with one long long: anything else is undefined. */
static void test_refused_has_exactly_one_lld_in_each_language(void **state)
{
	(void)state;
	static const char *const langs[] = {"en", "ru"};
	for (size_t i = 0; i < 2; i++) {
		const char *t = text_get(TEXT_REFUSED, langs[i]);
		int conversions = 0, lld = 0;
		for (const char *p = strchr(t, '%'); p; p = strchr(p + 1, '%')) {
			conversions++;
			lld += strncmp(p, "%lld", 4) == 0;
		}
		if (conversions != 1 || lld != 1)
			fail_msg("TEXT_REFUSED in %s: expected exactly one %%lld and no other %%, got %d %% "
			         "and %d "
			         "%%lld in \"%s\"",
			         langs[i], conversions, lld, t);
	}
}

/* The texts formatted with one string (%s) or two; the rest are sent as they are. */
static int strings_of(int id)
{
	switch (id) {
	case TEXT_MODEL_SHOW:
	case TEXT_MODEL_SET:
	case TEXT_MODEL_UNKNOWN:
	case TEXT_MODEL_PICKED:
	case TEXT_SYSTEM_SHOW:
	case TEXT_SYSTEM_TOO_LONG:
	case TEXT_FILE_TOO_LONG:
	case TEXT_VOICE_HEARD:
		return 1;
	case TEXT_MODEL_GONE:
	case TEXT_OVER_DAILY:
	case TEXT_OVER_MONTHLY:
	case TEXT_USAGE_LEFT_DAY:
	case TEXT_USAGE_LEFT_MONTH:
		return 2;
	default:
		return 0;
	}
}

/* Exactly the %s a text is formatted with, no other %: a stray one would turn into a bug the day it is formatted. */
static void test_other_texts_have_exactly_their_conversions(void **state)
{
	(void)state;
	for (int id = 0; id < TEXT_COUNT; id++) {
		if (id == TEXT_REFUSED)
			continue;
		const char *texts[2] = {text_get((enum text_id)id, "en"), text_get((enum text_id)id, "ru")};
		for (int i = 0; i < 2; i++) {
			int percents = 0, strings = 0;
			for (const char *p = strchr(texts[i], '%'); p; p = strchr(p + 1, '%')) {
				percents++;
				strings += p[1] == 's';
			}
			if (percents != strings_of(id) || strings != strings_of(id))
				fail_msg("text %d: expected %d %%s and no other %%, got \"%s\"", id, strings_of(id),
				         texts[i]);
		}
	}
}

static void test_unknown_id_is_empty_not_null(void **state)
{
	(void)state;
	expect_str("text_get(TEXT_COUNT)", "", text_get(TEXT_COUNT, "en"));
	expect_str("text_get(-1)", "", text_get((enum text_id) - 1, "ru"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_text_has_english_and_russian),
	    cmocka_unit_test(test_russian_for_ru_and_its_neighbours),
	    cmocka_unit_test(test_english_for_everything_else),
	    cmocka_unit_test(test_refused_has_exactly_one_lld_in_each_language),
	    cmocka_unit_test(test_other_texts_have_exactly_their_conversions),
	    cmocka_unit_test(test_unknown_id_is_empty_not_null),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
