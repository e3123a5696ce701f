/*
 * loop: the event loop of one network test, with a watchdog.
 *
 * A test that talks HTTP runs its client and its fake server (fake_http.h)
 * on one event_base and turns the loop until the thing it waits for has
 * happened: WAIT_FOR(loop, condition, "what, %s", ...). Nothing sleeps.
 * The watchdog, armed when the loop is made, bounds the whole test: once it
 * fires, every wait fails at once with what was awaited, so a broken client
 * fails the test instead of hanging it.
 */
#ifndef TGLLM_TEST_LOOP_H
#define TGLLM_TEST_LOOP_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>

/* A test's budget: each takes a few seconds at most, the slowest waits out a 1 s backoff twice. */
#define TEST_LOOP_BUDGET_S 10.0

struct test_loop {
	struct event_base *base;
	struct event *watchdog;
	double started; /* test_now() when made */
	bool has_expired;
};

/* Seconds on the monotonic clock. */
double test_now(void);

/* Makes the base and arms the watchdog; 0, or -1 when out of memory. */
int test_loop_init(struct test_loop *l, double budget_s);
void test_loop_free(struct test_loop *l);

/* Runs the loop until some event has been handled; false once the watchdog has fired. */
bool test_loop_turn(struct test_loop *l);

/* Seconds since the loop was made. */
double test_loop_elapsed(const struct test_loop *l);

/* Process-wide setup for network tests: curl's global state, SIGPIPE ignored, quiet logs. */
void test_net_init(void);
void test_net_cleanup(void);

/*
 * Turns the loop until cond holds; fails the test when the watchdog fires
 * first, naming what it waited for (printf arguments, evaluated at the
 * failure, so they can show what came instead).
 */
#define WAIT_FOR(loop, cond, ...)                                                                            \
	do {                                                                                                 \
		while (!(cond) && test_loop_turn(loop))                                                      \
			;                                                                                    \
		if (!(cond)) {                                                                               \
			char what_[512];                                                                     \
			snprintf(what_, sizeof what_, __VA_ARGS__);                                          \
			fail_msg("timed out after %.1f s waiting for %s", test_loop_elapsed(loop), what_);   \
		}                                                                                            \
	} while (0)

#endif
