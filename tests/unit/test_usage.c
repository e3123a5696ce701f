/* Unit tests for src/chat/usage.c: counts per day and month, budgets and when they start again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "chat/usage.h"

#include "expect.h"

/* 2026-12-31T23:59:59Z and the second after: a day, a month and a year end at once. */
#define LAST_SECOND_OF_2026 ((time_t)1798761599)

static char *add(char *value, const char *day, const char *model, long long p, long long c, long long r)
{
	struct usage_count n = {.prompt = p, .completion = c, .reserved = r};
	char *out = usage_add(value, day, model, "@alice", &n);
	if (!out)
		fail_msg("usage_add: out of memory");
	free(value);
	return out;
}

static void test_days_and_months_are_utc(void **state)
{
	(void)state;
	char day[USAGE_DAY_LEN], key[USAGE_KEY_LEN];
	usage_day(LAST_SECOND_OF_2026, day);
	usage_key(LAST_SECOND_OF_2026, key);
	expect_str("the last day of 2026", "2026-12-31", day);
	expect_str("its month's setting", "usage-2026-12", key);
	usage_day(LAST_SECOND_OF_2026 + 1, day);
	usage_key(LAST_SECOND_OF_2026 + 1, key);
	expect_str("a second later", "2027-01-01", day);
	expect_str("a second later, the month", "usage-2027-01", key);
}

static void test_counts_add_up_per_day_and_over_the_month(void **state)
{
	(void)state;
	char *v = add(NULL, "2026-12-06", "gpt-4o", 100, 20, 0);
	v = add(v, "2026-12-07", "gpt-4o", 10, 5, 0);
	v = add(v, "2026-12-07", "o3-mini", 1, 2, 0);
	struct usage_count today = usage_total(v, "2026-12-07"), month = usage_total(v, NULL);
	expect_int("prompt today", 11, today.prompt);
	expect_int("completion today", 7, today.completion);
	expect_int("prompt this month", 111, month.prompt);
	expect_int("completion this month", 27, month.completion);
	expect_int("a day with nothing", 0, usage_total(v, "2026-12-08").prompt);
	free(v);
}

static void test_a_reservation_counts_until_it_is_given_back(void **state)
{
	(void)state;
	struct usage_budget b = {.daily = 1000};
	bool is_daily;
	char *v = add(NULL, "2026-12-07", "gpt-4o", 0, 0, 300);
	expect_int("left while 300 are held", 700, usage_left(v, "2026-12-07", &b, &is_daily));
	v = add(v, "2026-12-07", "gpt-4o", 50, 70, -300); /* the answer spent 120 */
	expect_int("left once counted", 880, usage_left(v, "2026-12-07", &b, &is_daily));
	expect_int("nothing stays held", 0, usage_total(v, NULL).reserved);
	v = add(v, "2026-12-07", "gpt-4o", 0, 0, -5); /* given back twice: never below 0 */
	expect_int("a reservation never goes negative", 0, usage_total(v, NULL).reserved);
	free(v);
}

static void test_the_budget_that_binds_is_the_smaller_remainder(void **state)
{
	(void)state;
	bool is_daily;
	char *v = add(NULL, "2026-12-01", "m", 900, 0, 0); /* earlier this month */
	v = add(v, "2026-12-07", "m", 50, 0, 0);
	struct usage_budget both = {.daily = 200, .monthly = 1000};
	expect_int("the month has 50 left", 50, usage_left(v, "2026-12-07", &both, &is_daily));
	expect_int("the monthly budget binds", 0, is_daily);
	struct usage_budget day_only = {.daily = 200};
	expect_int("the day has 150 left", 150, usage_left(v, "2026-12-07", &day_only, &is_daily));
	expect_int("the daily budget binds", 1, is_daily);
	expect_int("a new day starts afresh", 200, usage_left(v, "2026-12-08", &day_only, &is_daily));
	struct usage_budget none = {0};
	expect_int("unlimited", LLONG_MAX, usage_left(v, "2026-12-07", &none, &is_daily));
	struct usage_budget spent = {.daily = 40};
	expect_int("spent past it: nothing left, not less", 0, usage_left(v, "2026-12-07", &spent, &is_daily));
	/* Next month's setting is another: a new month starts afresh. */
	expect_int("next month", 200, usage_left(NULL, "2027-01-01", &both, &is_daily));
	free(v);
}

static void test_budgets_start_again_at_midnight_and_on_the_first(void **state)
{
	(void)state;
	expect_int("the day after the last second of the year", LAST_SECOND_OF_2026 + 1,
	           usage_resets(LAST_SECOND_OF_2026, true));
	expect_int("the month after it", LAST_SECOND_OF_2026 + 1, usage_resets(LAST_SECOND_OF_2026, false));
	time_t feb28 = 1803772800; /* 2027-02-28T00:00:00Z */
	expect_int("after February 28th, March 1st", feb28 + 86400, usage_resets(feb28 + 3600, true));
	expect_int("the month after February", feb28 + 86400, usage_resets(feb28, false));
}

static void test_what_is_not_a_count_counts_as_nothing(void **state)
{
	(void)state;
	const char *bad[] = {"", "[]", "not json", "{\"days\":[]}", "{\"days\":{\"2026-12-07\":{\"m\":{\"prompt\":-5}}}}"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct usage_count t = usage_total(bad[i], "2026-12-07");
		expect_int(bad[i], 0, t.prompt + t.completion + t.reserved);
		char *v = add(strdup(bad[i]), "2026-12-07", "m", 1, 2, 0);
		expect_int("added to what was not a count", 3, usage_total(v, NULL).prompt + usage_total(v, NULL).completion);
		free(v);
	}
}

static void test_the_report_shows_models_budgets_and_estimates(void **state)
{
	(void)state;
	char *v = add(NULL, "2026-12-06", "gpt-4o", 1000, 234, 0);
	v = add(v, "2026-12-07", "gpt-4o", 10, 5, 0);
	struct usage_count est = {.prompt = 3, .completion = 4, .is_estimated = true};
	char *e = usage_add(v, "2026-12-07", "llama3", NULL, &est);
	free(v);
	struct buf out;
	buf_init(&out, 4096);
	struct usage_budget b = {.daily = 100, .monthly = 5000};
	expect_int("usage_report", BUF_OK, usage_report(&out, e, "2026-12-07", &b, "en"));
	const char *want[] = {"Today (UTC): ~22\n", "  gpt-4o: 10 + 5\n", "  llama3: 3 + 4\n", "This month: ~1 256\n",
	                      "  gpt-4o: 1 010 + 239\n", "Left today: 78 of 100 tokens.",
	                      "Left this month: 3 744 of 5 000 tokens.", "~ an estimate"};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		if (!strstr(buf_str(&out), want[i]))
			fail_msg("expected \"%s\" in the report:\n%s", want[i], buf_str(&out));
	buf_free(&out);
	free(e);
}

static void test_everyones_report_ranks_the_top_users(void **state)
{
	(void)state;
	struct usage_user u[3];
	char *a = add(NULL, "2026-12-07", "m", 10, 0, 0);
	char *b = add(NULL, "2026-12-01", "m", 500, 0, 0);
	expect_int("a count", 1, usage_user_read(a, "2026-12-07", 1, &u[0]));
	expect_int("another", 1, usage_user_read(b, "2026-12-07", 2, &u[1]));
	expect_int("not a count", 0, usage_user_read("[1]", "2026-12-07", 3, &u[2]));
	struct buf out;
	buf_init(&out, 4096);
	expect_int("usage_report_all", BUF_OK, usage_report_all(&out, u, 2, "en"));
	const char *text = buf_str(&out);
	const char *today = strstr(text, "Top users today"), *month = strstr(text, "Top users this month");
	if (!today || !month || !strstr(today, "1. @alice (1): 10\n") || strstr(today, "(2)") < month ||
	    !strstr(month, "1. @alice (2): 500\n2. @alice (1): 10\n"))
		fail_msg("unexpected report:\n%s", text);
	buf_free(&out);
	free(a);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_days_and_months_are_utc),
	    cmocka_unit_test(test_counts_add_up_per_day_and_over_the_month),
	    cmocka_unit_test(test_a_reservation_counts_until_it_is_given_back),
	    cmocka_unit_test(test_the_budget_that_binds_is_the_smaller_remainder),
	    cmocka_unit_test(test_budgets_start_again_at_midnight_and_on_the_first),
	    cmocka_unit_test(test_what_is_not_a_count_counts_as_nothing),
	    cmocka_unit_test(test_the_report_shows_models_budgets_and_estimates),
	    cmocka_unit_test(test_everyones_report_ranks_the_top_users),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
