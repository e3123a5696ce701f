/*
 * Benchmark for src/lib/metrics.c: what the metrics cost.
 *
 *   bench_metrics [UPDATES]    (default 1000000)
 *
 * - per update: the counting one answered update does on its way through
 *   the pipeline (the outcome, one model call, four Bot API calls, four
 *   store operations and the clock readings that time them), in ns;
 * - a scrape: rendering the whole exposition with every series in use, in
 *   µs, median of 1001.
 */
#include "lib/buf.h"
#include "lib/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define SCRAPES 1001

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* What src/ counts for one answered update (store.c, llm.c, tg.c, gate.c, conversation.c). */
static void one_update(void)
{
	static const char *const calls[] = {"sendChatAction", "sendMessageDraft", "sendMessage",
	                                    "sendMessage"};
	static const enum metrics_store_op ops[] = {METRICS_UPDATE_CLAIM, METRICS_HISTORY_LOAD,
	                                            METRICS_HISTORY_APPEND, METRICS_UPDATE_DONE};
	for (int i = 0; i < 4; i++) {
		double started = metrics_clock();
		metrics_store_op(ops[i], metrics_clock() - started);
	}
	double started = metrics_clock(), first = metrics_clock();
	metrics_model_call("ok", first - started, metrics_clock() - started, 900, 120);
	for (int i = 0; i < 4; i++)
		metrics_telegram_call(calls[i], 1, 0);
	metrics_update("message", METRICS_ANSWERED);
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	if (n <= 0) {
		fprintf(stderr, "usage: bench_metrics [UPDATES]\n");
		return 2;
	}
	for (long i = 0; i < n / 10; i++) /* warm-up */
		one_update();
	double t0 = now();
	for (long i = 0; i < n; i++)
		one_update();
	double per_update = (now() - t0) / (double)n;

	static double times[SCRAPES];
	struct metrics_gauges g = {10, 3};
	size_t bytes = 0;
	for (int i = 0; i < SCRAPES; i++) {
		struct buf out;
		buf_init(&out, 1u << 20);
		double s = now();
		if (metrics_render(&out, &g) != 0) {
			fprintf(stderr, "bench_metrics: out of memory\n");
			return 1;
		}
		times[i] = now() - s;
		bytes = out.len;
		buf_free(&out);
	}
	qsort(times, SCRAPES, sizeof times[0], cmp);
	printf("per update: %.0f ns (%ld updates)\n", per_update * 1e9, n);
	printf("scrape: %.1f us (median of %d, %zu bytes)\n", times[SCRAPES / 2] * 1e6, SCRAPES, bytes);
	return 0;
}
