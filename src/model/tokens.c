#include "model/tokens.h"

#include <math.h>
#include <string.h>

/*
 * 4 + ceil(len / 3). English runs at ~4 bytes of UTF-8 per token and Cyrillic
 * at ~2-3 (each letter is 2 bytes), so 3 errs on the side of sending less. The
 * text is not inspected yet; it is passed so a better estimate can be dropped
 * in without touching callers.
 */
size_t tokens_estimate(const char *content, size_t len)
{
	(void)content; /* see above */
	return 4 + len / 3 + (len % 3 != 0);
}

/*
 * A turn of parts is the compact JSON we (or jansson) wrote: a picture is a
 * "data:" URL in a string, which base64 keeps free of quotes; a file is a
 * "file_data" string alike. Counting them needs no parse.
 */
size_t tokens_estimate_turn(const struct turn *t, bool with_images)
{
	if (!t->is_parts)
		return tokens_estimate(t->content, t->len);
	static const char data[] = "\"data:";
	size_t text = 0, media = 0;
	const char *p = t->content, *end = t->content + t->len;
	while (p < end) {
		const char *q = memmem(p, (size_t)(end - p), data, sizeof data - 1);
		if (!q) {
			text += (size_t)(end - p);
			break;
		}
		text += (size_t)(q - p) + 1;
		media++;
		const char *close = memchr(q + 1, '"', (size_t)(end - q - 1));
		p = close ? close : end;
	}
	size_t sum = tokens_estimate(t->content, text);
	return with_images ? sum + media * TOKENS_PER_IMAGE : sum;
}

size_t tokens_estimate_turns(const struct turn *turns, size_t n)
{
	size_t sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += tokens_estimate_turn(&turns[i], true);
	return sum;
}

size_t tokens_fit(const struct turn *turns, size_t n, size_t budget, double scale)
{
	/* A calibration factor that is not a positive number is no calibration. */
	if (!(scale > 0) || !isfinite(scale))
		scale = 1.0;
	double used = 0;
	size_t first = n;
	while (first > 0) {
		const struct turn *t = &turns[first - 1];
		used += (double)tokens_estimate_turn(t, true) * scale;
		if (used > (double)budget)
			break;
		first--;
	}
	/* A reply without its question confuses models. */
	while (first < n && turns[first].role == TURN_ASSISTANT)
		first++;
	return first;
}

double tokens_calibrate(double scale, size_t estimated, long reported)
{
	if (reported <= 0 || estimated == 0)
		return scale;
	double ratio = (double)reported / (double)estimated;
	if (ratio < 0.25)
		ratio = 0.25;
	if (ratio > 4.0)
		ratio = 4.0;
	return 0.8 * scale + 0.2 * ratio;
}
