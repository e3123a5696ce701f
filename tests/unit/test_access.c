/* Unit tests for src/access.c: the TG_BOT_CHATS allowlist. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "gate/access.h"

static struct access_list *parse_ok(const char *spec)
{
	struct access_list *l = NULL;
	char err[256] = "";
	if (access_parse(spec, &l, err, sizeof err) != 0)
		fail_msg("access_parse(\"%s\"): expected success, got error \"%s\"", spec, err);
	if (!l)
		fail_msg("access_parse(\"%s\"): expected a list, got NULL", spec);
	return l;
}

/* Parses spec expecting an error whose text contains want. */
static void expect_parse_error(const char *spec, const char *want)
{
	struct access_list *l = (struct access_list *)&l; /* must be reset to NULL */
	char err[256] = "";
	if (access_parse(spec, &l, err, sizeof err) != -1)
		fail_msg("access_parse(\"%s\"): expected -1, got success", spec);
	if (l != NULL)
		fail_msg("access_parse(\"%s\"): expected *out NULL on error", spec);
	if (!strstr(err, want))
		fail_msg("access_parse(\"%s\"): expected a reason containing \"%s\", got \"%s\"", spec, want,
		         err);
}

static void expect_allowed(const struct access_list *l, int64_t user, const char *name, int64_t chat,
                           bool want, const char *why)
{
	bool got = access_allows(l, user, name, chat);
	if (got != want)
		fail_msg("%s: user %lld @%s in chat %lld: expected %s, got %s", why, (long long)user,
		         name ? name : "(none)", (long long)chat, want ? "allowed" : "refused",
		         got ? "allowed" : "refused");
}

static void test_username_matches_case_insensitively_with_or_without_at(void **state)
{
	(void)state;
	struct access_list *l = parse_ok("@Alice, bob");
	expect_allowed(l, 1, "alice", 1, true, "'@Alice' listed, 'alice' writes");
	expect_allowed(l, 2, "ALICE", 2, true, "'@Alice' listed, 'ALICE' writes");
	expect_allowed(l, 3, "Bob", 3, true, "'bob' listed, 'Bob' writes");
	expect_allowed(l, 4, "@bob", 4, true, "'bob' listed, '@bob' given");
	expect_allowed(l, 5, "carol", 5, false, "carol is not listed");
	expect_allowed(l, 6, "alic", 6, false, "a prefix of a listed name");
	expect_allowed(l, 7, "alicee", 7, false, "a listed name as prefix");
	if (access_allows_everyone(l))
		fail_msg("expected a list of names not to allow everyone");
	access_free(l);
}

static void test_user_without_username_matched_by_id(void **state)
{
	(void)state;
	struct access_list *l = parse_ok("alice,123456789");
	expect_allowed(l, 123456789, NULL, 123456789, true, "listed id, no username");
	expect_allowed(l, 987, NULL, 987, false, "unlisted id, no username");
	expect_allowed(l, 987, "", 987, false, "unlisted id, empty username");
	access_free(l);
}

static void test_numeric_entry_matches_user_or_chat(void **state)
{
	(void)state;
	struct access_list *l = parse_ok("42");
	expect_allowed(l, 42, "x", -100, true, "listed user writes in an unlisted group");
	expect_allowed(l, 7, "x", 42, true, "unlisted user writes in a listed chat");
	expect_allowed(l, 7, "x", 8, false, "neither listed");
	access_free(l);
}

static void test_negative_group_id_allows_every_member(void **state)
{
	(void)state;
	struct access_list *l = parse_ok("-1001234567890");
	expect_allowed(l, 5, NULL, -1001234567890LL, true, "any member of the listed group");
	expect_allowed(l, 5, NULL, -1001234567891LL, false, "a member of another group");
	expect_allowed(l, 1001234567890LL, NULL, 1001234567890LL, false, "the positive id is not the group");
	access_free(l);
}

static void test_star_anywhere_allows_everyone(void **state)
{
	(void)state;
	struct access_list *l = parse_ok("alice, * ,42");
	expect_allowed(l, 999, NULL, 999, true, "'*' in the middle of the list");
	if (!access_allows_everyone(l))
		fail_msg("expected access_allows_everyone for \"alice, * ,42\"");
	access_free(l);
}

static void test_whitespace_and_empty_entries_are_ignored(void **state)
{
	(void)state;
	struct access_list *l = parse_ok(" ,\talice ,, \n 42 ,");
	expect_allowed(l, 1, "alice", 1, true, "alice amid whitespace");
	expect_allowed(l, 42, NULL, 42, true, "42 amid whitespace");
	access_free(l);
}

static void test_junk_entries_are_rejected_with_the_entry_named(void **state)
{
	(void)state;
	expect_parse_error("alice, bad name!", "entry 'bad name!' is neither a username");
	expect_parse_error("@", "entry '@' is neither a username");
	expect_parse_error("ali-ce", "entry 'ali-ce'");
	expect_parse_error("-", "entry '-'");
	expect_parse_error("12-3", "entry '12-3'");
	expect_parse_error("+42", "entry '+42'");
	expect_parse_error("**", "entry '**'");
	expect_parse_error("имя", "neither a username");
	expect_parse_error("a1234567890123456789012345678901234567890123456789012345678901234",
	                   "neither a username");
}

static void test_out_of_range_and_zero_ids_are_rejected(void **state)
{
	(void)state;
	expect_parse_error("9223372036854775808", "too large for a Telegram id");
	expect_parse_error("-99999999999999999999999999", "too large for a Telegram id");
	expect_parse_error("0", "entry '0' is not a Telegram id");
	struct access_list *l = parse_ok("9223372036854775807,-9223372036854775808");
	expect_allowed(l, INT64_MAX, NULL, 1, true, "largest id");
	expect_allowed(l, 1, NULL, INT64_MIN, true, "smallest id");
	access_free(l);
}

static void test_longest_username_is_accepted(void **state)
{
	(void)state;
	const char *name = "a123456789012345678901234567890123456789012345678901234567890123";
	struct access_list *l = parse_ok(name);
	expect_allowed(l, 1, name, 1, true, "a 64-character username");
	access_free(l);
}

static void test_empty_list_is_an_error(void **state)
{
	(void)state;
	expect_parse_error("", "TG_BOT_CHATS is empty");
	expect_parse_error(" , ,\t", "TG_BOT_CHATS is empty");
	expect_parse_error(NULL, "TG_BOT_CHATS is empty");
}

static void test_error_text_fits_a_small_buffer(void **state)
{
	(void)state;
	struct access_list *l = NULL;
	char err[8];
	memset(err, 'x', sizeof err);
	if (access_parse("bad name!", &l, err, sizeof err) != -1)
		fail_msg("expected -1 for a junk entry");
	if (strlen(err) != sizeof err - 1)
		fail_msg("expected the reason truncated to %zu bytes, got \"%s\"", sizeof err - 1, err);
	if (access_parse("bad name!", &l, NULL, 0) != -1)
		fail_msg("expected -1 for a junk entry with no error buffer");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_username_matches_case_insensitively_with_or_without_at),
	    cmocka_unit_test(test_user_without_username_matched_by_id),
	    cmocka_unit_test(test_numeric_entry_matches_user_or_chat),
	    cmocka_unit_test(test_negative_group_id_allows_every_member),
	    cmocka_unit_test(test_star_anywhere_allows_everyone),
	    cmocka_unit_test(test_whitespace_and_empty_entries_are_ignored),
	    cmocka_unit_test(test_junk_entries_are_rejected_with_the_entry_named),
	    cmocka_unit_test(test_out_of_range_and_zero_ids_are_rejected),
	    cmocka_unit_test(test_longest_username_is_accepted),
	    cmocka_unit_test(test_empty_list_is_an_error),
	    cmocka_unit_test(test_error_text_fits_a_small_buffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
