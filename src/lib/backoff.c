#include "lib/backoff.h"

#include <stdlib.h>
#include <time.h>
#include <unistd.h>

long backoff_asked_s(long long seconds)
{
	return seconds < 0 ? 0 : seconds > BACKOFF_MAX_ASKED_S ? BACKOFF_MAX_ASKED_S : (long)seconds;
}

long backoff_ms(const struct backoff *b, int failures)
{
	static unsigned seed;
	if (!seed)
		seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ 1u;
	long ms = b->first_ms;
	for (int i = 1; i < failures && ms < b->max_ms; i++)
		ms *= 2;
	if (b->has_jitter)
		ms += (long)((unsigned long)rand_r(&seed) % (unsigned long)(ms / 2 + 1));
	return ms < b->max_ms ? ms : b->max_ms;
}
