#include "lib/metrics.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The closed label lists: anything else is "other", the last entry. */
static const char *const kinds[] = {
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "callback_query",
    "inline_query",
    "chosen_inline_result",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "message_reaction",
    "business_message",
    "poll",
    "stopped_message_generation",
    "other",
};
static const char *const outcomes[] = {"answered", "refused", "ignored", "duplicate", "failed"};
static const char *const model_outcomes[] = {"ok",   "cut",      "context", "quota",     "auth", "busy",
                                             "down", "rejected", "empty",   "no_model", "cancelled", "other"};
static const char *const methods[] = {
    "getUpdates",
    "getMe",
    "getWebhookInfo",
    "setWebhook",
    "deleteWebhook",
    "sendMessage",
    "sendMessageDraft",
    "editMessageText",
    "editMessageReplyMarkup",
    "deleteMessage",
    "sendChatAction",
    "sendPhoto",
    "getFile",
    "answerCallbackQuery",
    "setMyCommands",
    "getMyCommands",
    "other",
};
static const char *const tg_outcomes[] = {"ok", "error", "network"};
static const char *const store_ops[] = {"history_load",   "history_append", "history_clear",
                                        "update_claim",   "update_done",    "update_release",
                                        "update_pending", "setting_get",    "setting_set",
                                        "setting_change", "setting_scan",   "update_begin"};
_Static_assert(COUNT(outcomes) == METRICS_OUTCOMES, "an outcome without a name");
_Static_assert(COUNT(store_ops) == METRICS_STORE_OPS, "a store operation without a name");

/* Upper bounds in seconds; a last, implicit bucket is +Inf. */
static const double model_first_bounds[] = {0.25, 0.5, 1, 2, 4, 8, 15, 30, 60};
static const double model_total_bounds[] = {0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300};
static const double store_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                      0.05,   0.1,   0.25,   0.5,   1,    2.5};
#define MAX_BOUNDS 12

struct histogram {
	uint64_t buckets[MAX_BOUNDS + 1]; /* each its own bucket, not yet cumulative */
	uint64_t count;
	double sum;
};

static struct {
	uint64_t updates[COUNT(kinds)][METRICS_OUTCOMES];
	uint64_t model_calls[COUNT(model_outcomes)];
	uint64_t tokens_prompt, tokens_completion;
	struct histogram model_first, model_total;
	uint64_t tg_calls[COUNT(methods)][COUNT(tg_outcomes)];
	uint64_t tg_floods[COUNT(methods)];
	struct histogram store[METRICS_STORE_OPS];
} m;

static size_t index_of(const char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; i + 1 < n; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return n - 1;
}

static void observe(struct histogram *h, const double *bounds, size_t n, double v)
{
	size_t i = 0;
	while (i < n && v > bounds[i])
		i++;
	h->buckets[i]++;
	h->count++;
	h->sum += v;
}

double metrics_clock(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void metrics_update(const char *kind, enum metrics_outcome outcome)
{
	if ((unsigned)outcome < METRICS_OUTCOMES)
		m.updates[index_of(kinds, COUNT(kinds), kind)][outcome]++;
}

void metrics_model_call(const char *outcome, double first_token_s, double total_s, long prompt_tokens,
                        long completion_tokens)
{
	m.model_calls[index_of(model_outcomes, COUNT(model_outcomes), outcome)]++;
	if (first_token_s >= 0)
		observe(&m.model_first, model_first_bounds, COUNT(model_first_bounds), first_token_s);
	observe(&m.model_total, model_total_bounds, COUNT(model_total_bounds), total_s);
	if (prompt_tokens > 0)
		m.tokens_prompt += (uint64_t)prompt_tokens;
	if (completion_tokens > 0)
		m.tokens_completion += (uint64_t)completion_tokens;
}

void metrics_telegram_call(const char *method, int is_ok, long error_code)
{
	size_t outcome = is_ok ? 0 : error_code ? 1 : 2;
	m.tg_calls[index_of(methods, COUNT(methods), method)][outcome]++;
}

void metrics_telegram_flood(const char *method)
{
	m.tg_floods[index_of(methods, COUNT(methods), method)]++;
}

void metrics_store_op(enum metrics_store_op op, double seconds)
{
	if ((unsigned)op < METRICS_STORE_OPS)
		observe(&m.store[op], store_bounds, COUNT(store_bounds), seconds);
}

/* ---- the exposition ---- */

__attribute__((format(printf, 2, 3))) static int put(struct buf *out, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof line)
		return -1; /* our own formats, far shorter: a bug, not a truncated metric */
	return buf_append(out, line, (size_t)n) == BUF_OK ? 0 : -1;
}

static int head(struct buf *out, const char *name, const char *type, const char *help)
{
	return put(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* label: the series' own `name="value"`, or "". */
static int put_histogram(struct buf *out, const char *name, const char *label, const struct histogram *h,
                         const double *bounds, size_t n)
{
	const char *comma = *label ? "," : "", *open = *label ? "{" : "", *close = *label ? "}" : "";
	uint64_t below = 0;
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		below += h->buckets[i];
		rc = put(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, label, comma, bounds[i],
		         (unsigned long long)below);
	}
	if (rc == 0)
		rc = put(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, label, comma,
		         (unsigned long long)h->count);
	if (rc == 0)
		rc = put(out, "%s_sum%s%s%s %.9g\n", name, open, label, close, h->sum);
	if (rc == 0)
		rc =
		    put(out, "%s_count%s%s%s %llu\n", name, open, label, close, (unsigned long long)h->count);
	return rc;
}

static int render_updates(struct buf *out, const struct metrics_gauges *g)
{
	int rc = head(out, "tgllm_updates_total", "counter", "Updates that are over, by kind and outcome.");
	for (size_t k = 0; k < COUNT(kinds) && rc == 0; k++)
		for (size_t o = 0; o < METRICS_OUTCOMES && rc == 0; o++)
			if (m.updates[k][o] || k == 0)
				rc = put(out, "tgllm_updates_total{kind=\"%s\",outcome=\"%s\"} %llu\n",
				         kinds[k], outcomes[o], (unsigned long long)m.updates[k][o]);
	if (rc == 0)
		rc = head(out, "tgllm_conversations_in_flight", "gauge",
		          "Updates being handled now (one per chat at most).");
	if (rc == 0)
		rc = put(out, "tgllm_conversations_in_flight %zu\n", g->conversations);
	if (rc == 0)
		rc = head(out, "tgllm_updates_queued", "gauge",
		          "Updates waiting for their chat's earlier updates.");
	if (rc == 0)
		rc = put(out, "tgllm_updates_queued %zu\n", g->queued);
	return rc;
}

static int render_model(struct buf *out)
{
	int rc = head(out, "tgllm_model_calls_total", "counter", "Model calls, by outcome.");
	for (size_t i = 0; i < COUNT(model_outcomes) && rc == 0; i++)
		rc = put(out, "tgllm_model_calls_total{outcome=\"%s\"} %llu\n", model_outcomes[i],
		         (unsigned long long)m.model_calls[i]);
	if (rc == 0)
		rc = head(out, "tgllm_model_first_token_seconds", "histogram",
		          "From a model call's start to the first text of its answer.");
	if (rc == 0)
		rc = put_histogram(out, "tgllm_model_first_token_seconds", "", &m.model_first,
		                   model_first_bounds, COUNT(model_first_bounds));
	if (rc == 0)
		rc = head(out, "tgllm_model_call_seconds", "histogram",
		          "A model call's whole time, retries included.");
	if (rc == 0)
		rc = put_histogram(out, "tgllm_model_call_seconds", "", &m.model_total, model_total_bounds,
		                   COUNT(model_total_bounds));
	if (rc == 0)
		rc = head(out, "tgllm_model_tokens_total", "counter",
		          "Tokens the API reported, by direction (prompt: in, completion: out).");
	if (rc == 0)
		rc = put(out,
		         "tgllm_model_tokens_total{direction=\"prompt\"} %llu\n"
		         "tgllm_model_tokens_total{direction=\"completion\"} %llu\n",
		         (unsigned long long)m.tokens_prompt, (unsigned long long)m.tokens_completion);
	return rc;
}

static int render_telegram(struct buf *out)
{
	int rc = head(out, "tgllm_telegram_calls_total", "counter",
	              "Bot API calls, by method and outcome (network: no answer from Telegram).");
	for (size_t i = 0; i < COUNT(methods) && rc == 0; i++)
		for (size_t o = 0; o < COUNT(tg_outcomes) && rc == 0; o++)
			if (m.tg_calls[i][o])
				rc = put(out,
				         "tgllm_telegram_calls_total{method=\"%s\",outcome=\"%s\"} %llu\n",
				         methods[i], tg_outcomes[o], (unsigned long long)m.tg_calls[i][o]);
	if (rc == 0)
		rc = head(out, "tgllm_telegram_429_total", "counter",
		          "Flood-limit answers (429) from Telegram, by method.");
	for (size_t i = 0; i < COUNT(methods) && rc == 0; i++)
		if (m.tg_floods[i])
			rc = put(out, "tgllm_telegram_429_total{method=\"%s\"} %llu\n", methods[i],
			         (unsigned long long)m.tg_floods[i]);
	return rc;
}

static int render_store(struct buf *out)
{
	int rc = head(out, "tgllm_store_operation_seconds", "histogram", "Store operations, by operation.");
	for (size_t i = 0; i < METRICS_STORE_OPS && rc == 0; i++) {
		char label[48];
		snprintf(label, sizeof label, "op=\"%s\"", store_ops[i]);
		if (m.store[i].count)
			rc = put_histogram(out, "tgllm_store_operation_seconds", label, &m.store[i],
			                   store_bounds, COUNT(store_bounds));
	}
	return rc;
}

/* The names Prometheus's own client libraries use, so dashboards find them. */
static int render_process(struct buf *out)
{
	struct rusage ru;
	double cpu = 0;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		      (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	unsigned long long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "re");
	if (f) {
		if (fscanf(f, "%llu %llu", &size, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	long page = sysconf(_SC_PAGESIZE);
	int rc =
	    head(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
	if (rc == 0)
		rc = put(out, "process_cpu_seconds_total %.6f\n", cpu);
	if (rc == 0)
		rc = head(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
	if (rc == 0)
		rc = put(out, "process_resident_memory_bytes %llu\n",
		         resident * (unsigned long long)(page > 0 ? page : 4096));
	return rc;
}

int metrics_render(struct buf *out, const struct metrics_gauges *g)
{
	if (render_updates(out, g) || render_model(out) || render_telegram(out) || render_store(out) ||
	    render_process(out))
		return -1;
	return 0;
}
