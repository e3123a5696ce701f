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

/*
 * The longest wait a server may ask for (Retry-After, Telegram's
 * retry_after). Beyond a day a number is garbage or an attack, and every
 * wait in milliseconds computed from a clamped one fits a long.
 */
#define BACKOFF_MAX_ASKED_S 86400L

/* A wait a server asked for, clamped to 0..BACKOFF_MAX_ASKED_S seconds: every such number goes through here.
 */
long backoff_asked_s(long long seconds);

#endif
