/* Unit tests for src/chat/policy.c: what goes into a request, what a context overflow leaves out, refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/policy.h"
#include "model/tokens.h"

#include "expect.h"

static void push(struct history *h, enum turn_role role, const char *content)
{
	if (history_push(h, role, content, strlen(content)) != 0)
		fail_msg("history_push(\"%s\"): expected 0", content);
}

/* U A U A U, each 6 bytes: 6 estimated tokens, 7 with the planner's +1 per turn at scale 1. */
static void make_five_turns(struct history *h)
{
	push(h, TURN_USER, "u1----");
	push(h, TURN_ASSISTANT, "a1----");
	push(h, TURN_USER, "u2----");
	push(h, TURN_ASSISTANT, "a2----");
	push(h, TURN_USER, "u3----");
}

static const struct turn user = {TURN_USER, "new---", 6, false}; /* 7 tokens */

static void push_picture(struct history *h, const char *text)
{
	char parts[256];
	snprintf(
	    parts, sizeof parts,
	    "[{\"type\":\"text\",\"text\":\"%s\"},{\"type\":\"image_url\",\"image_url\":{\"url\":"
	    "\"data:image/jpeg;base64,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}}]",
	    text);
	if (history_push_parts(h, TURN_USER, parts, strlen(parts)) != 0)
		fail_msg("history_push_parts: expected 0");
}

/* A picture costs TOKENS_PER_IMAGE; when two do not fit, the older loses its picture, not its words. */
static void test_old_pictures_go_before_text(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	push_picture(&h, "first");
	push(&h, TURN_ASSISTANT, "a1----");
	push_picture(&h, "second");
	push(&h, TURN_ASSISTANT, "a2----");
	size_t picture = tokens_estimate_turn(&h.turns[0], true);
	size_t words = tokens_estimate_turn(&h.turns[0], false);
	if (picture != words + TOKENS_PER_IMAGE || words > 40)
		fail_msg("a picture turn: expected its words (%zu, not its base64) and %d more, got %zu",
		         words, TOKENS_PER_IMAGE, picture);
	struct prompt_plan plan;
	expect_int("a big budget", 0, policy_plan_prompt(&h, 0, NULL, &user, 100000, 1.0, &plan));
	expect_int("everything sent", 0, plan.from);
	expect_int("every picture sent", 0, plan.images_from);

	/* Room for one picture: the newest keeps it, the older one goes as words. */
	expect_int("room for one picture", 0,
	           policy_plan_prompt(&h, 0, NULL, &user, 2 * picture, 1.0, &plan));
	expect_int("every turn sent", 0, plan.from);
	expect_int("the first picture left out", 1, plan.images_from);

	/* Room for no picture at all: words only, the newest first. */
	expect_int("room for words", 0, policy_plan_prompt(&h, 0, NULL, &user, 100, 1.0, &plan));
	expect_int("every turn sent", 0, plan.from);
	expect_int("no picture", 3, plan.images_from);
	history_free(&h);
}

static void test_the_newest_turns_that_fit_are_sent(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	make_five_turns(&h);
	struct prompt_plan plan;
	expect_int("a big budget", 0, policy_plan_prompt(&h, 0, NULL, &user, 1000, 1.0, &plan));
	expect_int("everything goes", 0, plan.from);
	expect_int("6 turns of 7 tokens", 42, plan.estimated);
	/* 7 for the new turn leaves 18: u2 a2 u3 (18 by tokens_fit's count). */
	expect_int("budget 25", 0, policy_plan_prompt(&h, 0, NULL, &user, 25, 1.0, &plan));
	expect_int("budget 25: from u2", 2, plan.from);
	expect_int("budget 25: u2 a2 u3 and the new turn", 28, plan.estimated);
	history_free(&h);
}

static void test_the_system_prompt_counts_against_the_budget(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	make_five_turns(&h);
	struct prompt_plan plan;
	/* "sys" is 5 tokens (+1): budget 25 - 7 - 6 leaves 12: a2 u3, and a2 cannot come first. */
	expect_int("with a system prompt", 0, policy_plan_prompt(&h, 0, "sys", &user, 25, 1.0, &plan));
	expect_int("only u3 is left", 4, plan.from);
	expect_int("system, u3 and the new turn", 6 + 7 + 7, plan.estimated);
	history_free(&h);
}

static void test_a_message_that_cannot_fit_is_refused(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	struct prompt_plan plan;
	expect_int("budget 6 for a turn of 7", -1, policy_plan_prompt(&h, 0, NULL, &user, 6, 1.0, &plan));
	expect_int("budget 7 for a turn of 7", 0, policy_plan_prompt(&h, 0, NULL, &user, 7, 1.0, &plan));
	expect_int("budget 12 with a system prompt of 6", -1,
	           policy_plan_prompt(&h, 0, "sys", &user, 12, 1.0, &plan));
}

static void test_the_scale_makes_turns_dearer(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	make_five_turns(&h);
	struct prompt_plan plan;
	/* At scale 2 a turn costs 13: budget 42 - 13 leaves 29 for the history: u2? no, 2 turns of 12: a2 u3.
	 */
	expect_int("scale 2", 0, policy_plan_prompt(&h, 0, NULL, &user, 42, 2.0, &plan));
	expect_int("scale 2: only u3, as a2 cannot come first", 4, plan.from);
	expect_int("scale 1 holds more", 0, policy_plan_prompt(&h, 0, NULL, &user, 42, 1.0, &plan));
	expect_int("scale 1: all of it", 0, plan.from);
	history_free(&h);
}

static void test_min_from_leaves_out_what_the_model_refused(void **state)
{
	(void)state;
	struct history h = HISTORY_INIT;
	make_five_turns(&h);
	struct prompt_plan plan;
	expect_int("min_from 1", 0, policy_plan_prompt(&h, 1, NULL, &user, 1000, 1.0, &plan));
	expect_int("min_from 1 lands on a1, an answer: u2 starts", 2, plan.from);
	expect_int("min_from 5", 0, policy_plan_prompt(&h, 5, NULL, &user, 1000, 1.0, &plan));
	expect_int("min_from 5: no history", 5, plan.from);
	expect_int("only the new turn", 7, plan.estimated);
	history_free(&h);
}

static void test_a_context_overflow_drops_the_older_half_of_what_was_sent(void **state)
{
	(void)state;
	size_t min_from = 0;
	if (!policy_drop_half(0, 10, &min_from))
		fail_msg("10 turns sent: expected something to drop");
	expect_int("10 sent from 0: start at 5", 5, min_from);
	if (!policy_drop_half(4, 9, &min_from))
		fail_msg("5 turns sent: expected something to drop");
	expect_int("5 sent from 4: start at 7 (the older 3 go)", 7, min_from);
	if (!policy_drop_half(8, 9, &min_from))
		fail_msg("1 turn sent: expected it dropped");
	expect_int("1 sent from 8: none left", 9, min_from);
	min_from = 42;
	if (policy_drop_half(9, 9, &min_from))
		fail_msg("no history sent: expected nothing to drop");
	expect_int("min_from untouched", 42, min_from);
}

static void test_a_stranger_is_told_again_only_after_an_hour(void **state)
{
	(void)state;
	long long now = 1767225600;
	if (!policy_refusal_is_due(0, now))
		fail_msg("never refused: expected to be told");
	if (policy_refusal_is_due(now - 10, now))
		fail_msg("refused 10 s ago: expected not to be told again");
	if (policy_refusal_is_due(now - POLICY_REFUSAL_INTERVAL_S + 1, now))
		fail_msg("refused just under an hour ago: expected not to be told again");
	if (!policy_refusal_is_due(now - POLICY_REFUSAL_INTERVAL_S, now))
		fail_msg("refused an hour ago: expected to be told again");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_the_newest_turns_that_fit_are_sent),
	    cmocka_unit_test(test_old_pictures_go_before_text),
	    cmocka_unit_test(test_the_system_prompt_counts_against_the_budget),
	    cmocka_unit_test(test_a_message_that_cannot_fit_is_refused),
	    cmocka_unit_test(test_the_scale_makes_turns_dearer),
	    cmocka_unit_test(test_min_from_leaves_out_what_the_model_refused),
	    cmocka_unit_test(test_a_context_overflow_drops_the_older_half_of_what_was_sent),
	    cmocka_unit_test(test_a_stranger_is_told_again_only_after_an_hour),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
