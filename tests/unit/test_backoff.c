/* Unit tests for src/lib/backoff.c: the wait before the next try, doubled at each failure, capped, jittered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lib/backoff.h"

#include "expect.h"

/* Draws enough for a jitter that never moves the wait to be noticed (a range of 51 values or more). */
#define DRAWS 2000

static void test_wait_doubles_from_first_at_each_failure(void **state)
{
	(void)state;
	const struct backoff b = {100, 1000000, false};
	long expected = 100;
	for (int failures = 1; failures <= 12; failures++) {
		char what[64];
		snprintf(what, sizeof what, "wait after %d failures of {100, 1000000}", failures);
		expect_int(what, expected, backoff_ms(&b, failures));
		expected *= 2;
	}
}

static void test_wait_never_passes_max(void **state)
{
	(void)state;
	/* 300 doubles to 600, then 1200, which the cap of 1000 cuts; it stays there however long it fails. */
	const struct backoff b = {300, 1000, false};
	expect_int("wait after 1 failure of {300, 1000}", 300, backoff_ms(&b, 1));
	expect_int("wait after 2 failures of {300, 1000}", 600, backoff_ms(&b, 2));
	expect_int("wait after 3 failures of {300, 1000}", 1000, backoff_ms(&b, 3));
	expect_int("wait after 40 failures of {300, 1000}", 1000, backoff_ms(&b, 40));
	expect_int("wait after 1000000 failures of {300, 1000}", 1000, backoff_ms(&b, 1000000));
	/* A first wait above the cap is cut too. */
	const struct backoff big = {5000, 1000, false};
	expect_int("wait after 1 failure of {5000, 1000}", 1000, backoff_ms(&big, 1));
}

static void test_no_failure_or_one_gives_first_wait(void **state)
{
	(void)state;
	const struct backoff b = {250, 10000, false};
	expect_int("wait after 1 failure", 250, backoff_ms(&b, 1));
	expect_int("wait after 0 failures", 250, backoff_ms(&b, 0));
	expect_int("wait after -5 failures", 250, backoff_ms(&b, -5));
}

static void test_jitter_stays_within_half_of_the_wait_and_moves_it(void **state)
{
	(void)state;
	const struct backoff b = {200, 1000000, true};
	for (int failures = 1; failures <= 6; failures++) {
		long w = 200L << (failures - 1), lo = -1, hi = -1;
		for (int i = 0; i < DRAWS; i++) {
			long ms = backoff_ms(&b, failures);
			if (ms < w || ms > w + w / 2)
				fail_msg(
				    "jittered wait after %d failures: expected within [%ld, %ld], got %ld",
				    failures, w, w + w / 2, ms);
			if (lo < 0 || ms < lo)
				lo = ms;
			if (ms > hi)
				hi = ms;
		}
		/* Jitter that never moves the wait would let colliding writers collide again. */
		if (lo == hi)
			fail_msg("jittered wait after %d failures: expected %d draws to differ, all were %ld",
			         failures, DRAWS, lo);
	}
}

static void test_jitter_is_capped_at_max(void **state)
{
	(void)state;
	/* 800 jittered reaches up to 1200; 1600 up to 2400: the cap of 1000 holds both. */
	const struct backoff b = {800, 1000, true};
	int at_max = 0;
	for (int i = 0; i < DRAWS; i++) {
		long first = backoff_ms(&b, 1), later = backoff_ms(&b, 2);
		if (first < 800 || first > 1000)
			fail_msg("jittered wait after 1 failure of {800, 1000}: expected within [800, 1000], "
			         "got %ld",
			         first);
		if (later != 1000)
			fail_msg("jittered wait after 2 failures of {800, 1000}: expected 1000, got %ld",
			         later);
		at_max += first == 1000;
	}
	if (at_max == 0)
		fail_msg(
		    "jittered wait after 1 failure of {800, 1000}: expected some draws cut to 1000, got none "
		    "in %d",
		    DRAWS);
}

static void test_a_wait_asked_for_is_clamped_to_a_day(void **state)
{
	(void)state;
	expect_int("asked 120 s", 120, backoff_asked_s(120));
	expect_int("asked 0 s", 0, backoff_asked_s(0));
	expect_int("asked -5 s", 0, backoff_asked_s(-5));
	expect_int("asked a day", 86400, backoff_asked_s(86400));
	expect_int("asked INT64_MAX s", 86400, backoff_asked_s(INT64_MAX));
	expect_int("asked INT64_MIN s", 0, backoff_asked_s(INT64_MIN));
	expect_int("a clamped wait in ms", 86400000, backoff_asked_s(INT64_MAX) * 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_wait_doubles_from_first_at_each_failure),
	    cmocka_unit_test(test_wait_never_passes_max),
	    cmocka_unit_test(test_no_failure_or_one_gives_first_wait),
	    cmocka_unit_test(test_jitter_stays_within_half_of_the_wait_and_moves_it),
	    cmocka_unit_test(test_jitter_is_capped_at_max),
	    cmocka_unit_test(test_a_wait_asked_for_is_clamped_to_a_day),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
