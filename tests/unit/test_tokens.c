/* Unit tests for src/model/tokens.c: the token estimate, what fits the budget, calibration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokens.h"

#include "expect.h"

static void push(struct history *h, enum turn_role role, const char *content)
{
	if (history_push(h, role, content, strlen(content)) != 0)
		fail_msg("history_push(\"%s\"): expected 0", content);
}

static void test_estimate_is_four_plus_a_third_of_the_bytes(void **state)
{
	(void)state;
	expect_int("empty", 4, tokens_estimate("", 0));
	expect_int("1 byte", 5, tokens_estimate("a", 1));
	expect_int("3 bytes", 5, tokens_estimate("abc", 3));
	expect_int("4 bytes", 6, tokens_estimate("abcd", 4));
	/* 12 bytes of Cyrillic: 6 letters, about 3-6 real tokens. */
	expect_int("\"Привет\"", 8, tokens_estimate("Привет", strlen("Привет")));
	expect_int("SIZE_MAX bytes", 4 + SIZE_MAX / 3, tokens_estimate("", SIZE_MAX));
}

/* U A U A U, each turn 6 bytes, so each costs 4 + 2 = 6 estimated tokens. */
static void make_five_turns(struct history *h)
{
	push(h, TURN_USER, "u1----");
	push(h, TURN_ASSISTANT, "a1----");
	push(h, TURN_USER, "u2----");
	push(h, TURN_ASSISTANT, "a2----");
	push(h, TURN_USER, "u3----");
}

static void test_fit_keeps_newest_turns_within_budget(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	make_five_turns(&h);
	static const struct {
		size_t budget;
		size_t first;
	} cases[] = {
	    {1000, 0}, {30, 0}, /* everything fits, exactly at 30 */
	    {29, 2},            /* 4 turns fit, but they would start with a1 */
	    {24, 2},   {18, 2}, /* u2 a2 u3 */
	    {17, 4},   {12, 4}, /* a2 u3 fit; a2 is dropped */
	    {6, 4},             /* u3 alone */
	    {5, 5},    {0, 5},  /* not even the last turn */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t got = tokens_fit(h.turns, h.len, cases[i].budget, 1.0);
		if (got != cases[i].first)
			fail_msg("history_fit(budget %zu): expected first turn %zu, got %zu", cases[i].budget,
			         cases[i].first, got);
	}
	history_free(&h);
}

static void test_fit_scales_each_turn_cost(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	make_five_turns(&h);
	expect_int("scale 2, budget 24: two turns, a2 dropped", 4, tokens_fit(h.turns, h.len, 24, 2.0));
	expect_int("scale 2, budget 36: three turns", 2, tokens_fit(h.turns, h.len, 36, 2.0));
	expect_int("scale 0.5, budget 15: all five", 0, tokens_fit(h.turns, h.len, 15, 0.5));
	expect_int("scale 1.5, budget 8: nothing", 5, tokens_fit(h.turns, h.len, 8, 1.5));
	expect_int("scale NaN counts as 1", 2, tokens_fit(h.turns, h.len, 18, NAN));
	expect_int("scale 0 counts as 1", 2, tokens_fit(h.turns, h.len, 18, 0.0));
	expect_int("scale -1 counts as 1", 2, tokens_fit(h.turns, h.len, 18, -1.0));
	expect_int("scale infinity counts as 1", 2, tokens_fit(h.turns, h.len, 18, INFINITY));
	history_free(&h);
}

static void test_fit_never_starts_with_an_assistant_turn(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	push(&h, TURN_ASSISTANT, "a");
	push(&h, TURN_ASSISTANT, "b");
	push(&h, TURN_USER, "c");
	expect_int("two leading assistant turns are skipped", 2, tokens_fit(h.turns, h.len, 1000, 1.0));
	push(&h, TURN_ASSISTANT, "d");
	expect_int("a history of only a trailing assistant turn sends nothing", 4,
	           tokens_fit(h.turns, h.len, 5, 1.0));
	history_free(&h);

	struct history empty = HISTORY_INIT;
	expect_int("empty history", 0, tokens_fit(empty.turns, empty.len, 100, 1.0));
}

static void test_fit_on_huge_turn_returns_len(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	push(&h, TURN_USER, "short");
	size_t n = 100000;
	char *big = malloc(n + 1);
	if (!big)
		fail_msg("out of memory in the test");
	memset(big, 'x', n);
	big[n] = '\0';
	push(&h, TURN_USER, big);
	free(big);
	expect_int("a 100000-byte message with budget 1000", 2, tokens_fit(h.turns, h.len, 1000, 1.0));
	history_free(&h);
}

static void test_calibration_moves_a_fifth_of_the_way_to_the_reported_ratio(void **state)
{
	(void)state;
	/* The API counted 300 where the estimate said 100: ratio 3. */
	double scale = tokens_calibrate(1.0, 100, 300);
	if (fabs(scale - 1.4) > 1e-9)
		fail_msg("from 1 toward 3: expected 0.8 * 1 + 0.2 * 3 = 1.4, got %g", scale);
	for (int i = 0; i < 50; i++)
		scale = tokens_calibrate(scale, 100, 300);
	if (fabs(scale - 3.0) > 1e-3)
		fail_msg("after many answers of ratio 3: expected the scale near 3, got %g", scale);
	scale = tokens_calibrate(2.0, 400, 100);
	if (fabs(scale - (0.8 * 2 + 0.2 * 0.25)) > 1e-9)
		fail_msg("ratio 0.25 from 2: expected %g, got %g", 0.8 * 2 + 0.2 * 0.25, scale);
}

static void test_calibration_holds_one_odd_answer_within_bounds(void **state)
{
	(void)state;
	/* A ratio beyond 0.25..4 counts as the bound: one odd answer cannot swing the budget. */
	double up = tokens_calibrate(1.0, 10, 100000);
	if (fabs(up - (0.8 + 0.2 * 4)) > 1e-9)
		fail_msg("ratio 10000: expected it held at 4 (scale %g), got %g", 0.8 + 0.2 * 4, up);
	double down = tokens_calibrate(1.0, 100000, 1);
	if (fabs(down - (0.8 + 0.2 * 0.25)) > 1e-9)
		fail_msg("ratio 0.00001: expected it held at 0.25 (scale %g), got %g", 0.8 + 0.2 * 0.25,
		         down);
}

static void test_calibration_without_a_report_keeps_the_scale(void **state)
{
	(void)state;
	if (tokens_calibrate(1.7, 100, -1) != 1.7)
		fail_msg("no usage reported (-1): expected the scale kept at 1.7");
	if (tokens_calibrate(1.7, 100, 0) != 1.7)
		fail_msg("0 prompt tokens: expected the scale kept at 1.7");
	if (tokens_calibrate(1.7, 0, 50) != 1.7)
		fail_msg("no estimate: expected the scale kept at 1.7");
}

static void test_a_calibrated_scale_leaves_out_more_turns(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	make_five_turns(&h);
	/* Budget 30 holds all five turns at scale 1; after answers that counted 3x, only the last. */
	double scale = 1.0;
	expect_int("scale 1, budget 30: all five turns", 0, tokens_fit(h.turns, h.len, 30, scale));
	for (int i = 0; i < 20; i++)
		scale = tokens_calibrate(scale, 30, 90);
	expect_int("scale ~3, budget 30: only u3", 4, tokens_fit(h.turns, h.len, 30, scale));
	history_free(&h);
}

static void test_estimate_of_turns_adds_them_up(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	make_five_turns(&h);
	expect_int("five turns of 6 estimated tokens", 30, tokens_estimate_turns(h.turns, h.len));
	expect_int("no turns", 0, tokens_estimate_turns(h.turns, 0));
	history_free(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_estimate_is_four_plus_a_third_of_the_bytes),
	    cmocka_unit_test(test_fit_keeps_newest_turns_within_budget),
	    cmocka_unit_test(test_fit_scales_each_turn_cost),
	    cmocka_unit_test(test_fit_never_starts_with_an_assistant_turn),
	    cmocka_unit_test(test_fit_on_huge_turn_returns_len),
	    cmocka_unit_test(test_calibration_moves_a_fifth_of_the_way_to_the_reported_ratio),
	    cmocka_unit_test(test_calibration_holds_one_odd_answer_within_bounds),
	    cmocka_unit_test(test_calibration_without_a_report_keeps_the_scale),
	    cmocka_unit_test(test_a_calibrated_scale_leaves_out_more_turns),
	    cmocka_unit_test(test_estimate_of_turns_adds_them_up),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
