/*
 * policy: the conversation's decisions that need no I/O, as pure functions:
 * what of the history goes into a request, what to leave out when the model
 * says the prompt is too long, and when a stranger is told again that the
 * bot is private.
 */
#ifndef TGLLM_POLICY_H
#define TGLLM_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/history.h"

#define POLICY_REFUSAL_INTERVAL_S 3600 /* a stranger is told "no" once an hour, not at every message */

struct prompt_plan {
	size_t from;        /* the first history turn to send */
	size_t estimated;   /* tokens of the whole prompt, by the scaled estimate */
	size_t images_from; /* turns before this one go without their pictures (media_prompt_turn) */
};

/*
 * Plans a request of the system prompt (NULL for none), the newest history
 * turns that fit the budget (none before min_from, and never an assistant
 * turn first) and the user's turn, each turn costing tokens_estimate_turn() *
 * scale (rounded down) + 1. Pictures go before text: from the newest turn
 * whose picture does not fit, older turns are sent without theirs, and
 * their text is kept while it fits. Returns -1 when the system prompt and
 * the user's turn alone do not fit.
 */
int policy_plan_prompt(const struct history *h, size_t min_from, const char *system, const struct turn *user,
                       size_t budget, double scale, struct prompt_plan *out);

/*
 * The model said the prompt is over its context although the estimate said
 * it fits: the estimate was low. Leaves out the older half of the history
 * turns sent (from..len): *min_from is where the next request starts. False
 * when no history turn was sent, so nothing is left to leave out.
 */
bool policy_drop_half(size_t from, size_t len, size_t *min_from);

/* Whether a stranger last refused at `last` (Unix seconds; 0: never) is told again at `now`. */
bool policy_refusal_is_due(long long last, long long now);

#endif
