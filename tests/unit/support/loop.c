#include "loop.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "lib/log.h"

double test_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_watchdog(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	struct test_loop *l = arg;
	l->has_expired = true;
	event_base_loopbreak(l->base);
}

int test_loop_init(struct test_loop *l, double budget_s)
{
	*l = (struct test_loop){.started = test_now()};
	l->base = event_base_new();
	if (!l->base)
		return -1;
	l->watchdog = evtimer_new(l->base, on_watchdog, l);
	long us = (long)(budget_s * 1e6);
	struct timeval tv = {us / 1000000, us % 1000000};
	if (!l->watchdog || evtimer_add(l->watchdog, &tv) != 0) {
		test_loop_free(l);
		return -1;
	}
	return 0;
}

void test_loop_free(struct test_loop *l)
{
	if (l->watchdog)
		event_free(l->watchdog);
	if (l->base)
		event_base_free(l->base);
	*l = (struct test_loop){0};
}

bool test_loop_turn(struct test_loop *l)
{
	if (l->has_expired)
		return false;
	/* EVLOOP_ONCE blocks until something happens; the watchdog is always pending. */
	event_base_loop(l->base, EVLOOP_ONCE);
	return !l->has_expired;
}

double test_loop_elapsed(const struct test_loop *l)
{
	return test_now() - l->started;
}

void test_net_init(void)
{
	/* The fake server writes to sockets the client under test may have closed. */
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		abort();
	/* The retries the tests cause on purpose would fill the output with warnings. */
	log_set_level(getenv("TEST_LOG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
}

void test_net_cleanup(void)
{
	curl_global_cleanup();
}
