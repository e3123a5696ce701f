/*
 * Unit tests for src/lib/metrics.c: counting allocates nothing however many
 * updates come; labels outside the closed lists count as "other" (no sender
 * grows the output); histograms come out cumulative, ending in +Inf = count;
 * the gauges and the process's figures are there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/metrics.h"

static char *render(void)
{
	static struct buf out;
	buf_free(&out);
	buf_init(&out, 1u << 20);
	struct metrics_gauges g = {3, 7};
	assert_int_equal(metrics_render(&out, &g), 0);
	return out.data;
}

static void assert_line(const char *text, const char *line)
{
	char want[256];
	snprintf(want, sizeof want, "\n%s\n", line);
	if (!strstr(text, want))
		fail_msg("expected the line %s in:\n%s", line, text);
}

static void test_counting_allocates_nothing(void **state)
{
	(void)state;
	metrics_update("message", METRICS_ANSWERED); /* anything lazily set up, set up now */
	size_t before = mallinfo2().uordblks;
	char kind[32];
	for (int i = 0; i < 100000; i++) {
		snprintf(kind, sizeof kind, "kind_%d", i); /* 100000 kinds nobody knows */
		metrics_update(kind, (enum metrics_outcome)(i % METRICS_OUTCOMES));
		metrics_model_call(i % 2 ? "ok" : kind, 0.5, 1.5, 10, 20);
		metrics_telegram_call(i % 2 ? "sendMessage" : kind, i % 3 == 0, i % 3 == 1 ? 400 : 0);
		metrics_telegram_flood(kind);
		metrics_store_op((enum metrics_store_op)(i % METRICS_STORE_OPS), 0.001);
	}
	assert_int_equal(mallinfo2().uordblks, before);
	char *text = render();
	/* The unknown kinds are one series, not 100000. */
	assert_line(text, "tgllm_updates_total{kind=\"other\",outcome=\"answered\"} 20000");
	assert_null(strstr(text, "kind_1"));
	assert_line(text, "tgllm_telegram_429_total{method=\"other\"} 100000");
}

static void test_histograms_are_cumulative(void **state)
{
	(void)state;
	metrics_store_op(METRICS_SETTING_SET, 0.003);
	metrics_store_op(METRICS_SETTING_SET, 0.02);
	metrics_store_op(METRICS_SETTING_SET, 99);
	char *text = render();
	assert_line(text, "tgllm_store_operation_seconds_bucket{op=\"setting_set\",le=\"0.0025\"} 0");
	assert_line(text, "tgllm_store_operation_seconds_bucket{op=\"setting_set\",le=\"0.005\"} 1");
	assert_line(text, "tgllm_store_operation_seconds_bucket{op=\"setting_set\",le=\"0.025\"} 2");
	assert_line(text, "tgllm_store_operation_seconds_bucket{op=\"setting_set\",le=\"2.5\"} 2");
	assert_line(text, "tgllm_store_operation_seconds_bucket{op=\"setting_set\",le=\"+Inf\"} 3");
	assert_line(text, "tgllm_store_operation_seconds_count{op=\"setting_set\"} 3");
	assert_line(text, "tgllm_store_operation_seconds_sum{op=\"setting_set\"} 99.023");
}

static void test_model_calls_tokens_and_first_token(void **state)
{
	(void)state;
	/* test_counting_allocates_nothing ran first: 100000 calls of 10 + 20 tokens. */
	char *text = render();
	const char *p = strstr(text, "\ntgllm_model_first_token_seconds_count ");
	assert_non_null(p);
	long long first_before = atoll(p + strlen("\ntgllm_model_first_token_seconds_count "));
	metrics_model_call("cancelled", -1, 2.0, -1, -1); /* no text came, no usage */
	text = render();
	p = strstr(text, "\ntgllm_model_first_token_seconds_count ");
	assert_int_equal(atoll(p + strlen("\ntgllm_model_first_token_seconds_count ")), first_before);
	assert_line(text, "tgllm_model_calls_total{outcome=\"cancelled\"} 1");
	assert_line(text, "tgllm_model_tokens_total{direction=\"prompt\"} 1000000");
	assert_line(text, "tgllm_model_tokens_total{direction=\"completion\"} 2000000");
}

static void test_gauges_and_process(void **state)
{
	(void)state;
	char *text = render();
	assert_line(text, "tgllm_conversations_in_flight 3");
	assert_line(text, "tgllm_updates_queued 7");
	assert_line(text, "# TYPE process_resident_memory_bytes gauge");
	const char *rss = strstr(text, "\nprocess_resident_memory_bytes ");
	assert_non_null(rss);
	assert_true(atoll(rss + strlen("\nprocess_resident_memory_bytes ")) > 100000);
	/* Every line ends; the exposition ends with a newline. */
	assert_int_equal(text[strlen(text) - 1], '\n');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_histograms_are_cumulative), /* first: on counters still at 0 */
	    cmocka_unit_test(test_counting_allocates_nothing),
	    cmocka_unit_test(test_model_calls_tokens_and_first_token),
	    cmocka_unit_test(test_gauges_and_process),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
