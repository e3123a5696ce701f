#include "chat/policy.h"

#include <string.h>

#include "model/tokens.h"

static size_t cost(const char *text, size_t len, double scale)
{
	return (size_t)((double)tokens_estimate(text, len) * scale) + 1;
}

int policy_plan_prompt(const struct history *h, size_t min_from, const char *system, const struct turn *user,
                       size_t budget, double scale, struct prompt_plan *out)
{
	size_t fixed = cost(user->content, user->len, scale);
	if (system)
		fixed += cost(system, strlen(system), scale);
	if (fixed > budget)
		return -1;
	size_t from = tokens_fit(h->turns, h->len, budget - fixed, scale);
	if (from < min_from)
		from = min_from;
	/* tokens_fit never starts with an answer; neither does a cut made here. */
	while (from < h->len && h->turns[from].role == TURN_ASSISTANT)
		from++;
	size_t estimated = fixed;
	for (size_t i = from; i < h->len; i++)
		estimated += cost(h->turns[i].content, h->turns[i].len, scale);
	*out = (struct prompt_plan){from, estimated};
	return 0;
}

bool policy_drop_half(size_t from, size_t len, size_t *min_from)
{
	if (from >= len)
		return false;
	*min_from = from + (len - from + 1) / 2;
	return true;
}

bool policy_refusal_is_due(long long last, long long now)
{
	return now - last >= POLICY_REFUSAL_INTERVAL_S;
}
