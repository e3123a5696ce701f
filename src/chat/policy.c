#include "chat/policy.h"

#include <math.h>
#include <string.h>

#include "model/tokens.h"

static size_t cost(const struct turn *t, bool with_images, double scale)
{
	return (size_t)((double)tokens_estimate_turn(t, with_images) * scale) + 1;
}

int policy_plan_prompt(const struct history *h, size_t min_from, const char *system, const struct turn *user,
                       size_t budget, double scale, struct prompt_plan *out)
{
	size_t fixed = cost(user, true, scale);
	if (system)
		fixed +=
		    cost(&(struct turn){TURN_SYSTEM, (char *)system, strlen(system), false}, false, scale);
	if (fixed > budget)
		return -1;
	/* As tokens_fit counts: the scaled estimates, unrounded, newest first. */
	double fit_scale = scale > 0 && isfinite(scale) ? scale : 1.0;
	double room = (double)(budget - fixed), used = 0;
	size_t from = h->len, images_from = 0;
	bool has_images = true;
	while (from > min_from) {
		const struct turn *t = &h->turns[from - 1];
		if (has_images && used + (double)tokens_estimate_turn(t, true) * fit_scale <= room) {
			used += (double)tokens_estimate_turn(t, true) * fit_scale;
			from--;
			continue;
		}
		if (has_images && t->is_parts) {
			has_images =
			    false; /* this picture and every older one stay out; their words may fit */
			images_from = from;
		}
		double text = (double)tokens_estimate_turn(t, false) * fit_scale;
		if (has_images || used + text > room)
			break;
		used += text;
		from--;
	}
	/* A reply without its question confuses models. */
	while (from < h->len && h->turns[from].role == TURN_ASSISTANT)
		from++;
	if (images_from < from)
		images_from = from;
	size_t estimated = fixed;
	for (size_t i = from; i < h->len; i++)
		estimated += cost(&h->turns[i], i >= images_from, scale);
	*out = (struct prompt_plan){from, estimated, images_from};
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
