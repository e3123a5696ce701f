/*
 * backoff: how long to wait before trying again, for everything that retries
 * (the model, Telegram, S3, getUpdates, getMe): the first wait doubles at
 * each failure up to a ceiling, with optional random jitter so that many
 * writers that failed together do not collide again together.
 */
#ifndef TGLLM_BACKOFF_H
#define TGLLM_BACKOFF_H

#include <stdbool.h>

struct backoff {
	long first_ms;   /* the wait after the first failure */
	long max_ms;     /* no wait is longer */
	bool has_jitter; /* add up to half of the wait at random */
};

/* The wait in milliseconds after `failures` failures in a row (1 for the first). */
long backoff_ms(const struct backoff *b, int failures);

#endif
