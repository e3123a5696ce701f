/*
 * metrics: the process's counters and histograms, for Prometheus to scrape
 * (GET /metrics, see README.md "Metrics").
 *
 * Every series is a slot of a fixed table made at compile time: counting
 * is an addition, never an allocation or a lookup in a growing map, so it
 * costs the same on the thousandth update as on the first. Labels come from
 * closed lists (an update kind or a Bot API method outside them counts as
 * "other"), so no sender can grow the output. One thread runs the loop, so
 * the counters need no atomics.
 */
#ifndef TGLLM_METRICS_H
#define TGLLM_METRICS_H

#include <stddef.h>

#include "lib/buf.h"

enum metrics_outcome {
	METRICS_ANSWERED,  /* the bot answered (a model reply, a command) */
	METRICS_REFUSED,   /* not on the allowlist, or the chat's queue was full */
	METRICS_IGNORED,   /* not for the bot (a group message not addressed to it, an unknown kind) */
	METRICS_DUPLICATE, /* delivered again after it was taken: not answered twice */
	METRICS_FAILED,    /* the model, the store or the update itself failed; the user was told */
	METRICS_OUTCOMES,
};

enum metrics_store_op {
	METRICS_HISTORY_LOAD,
	METRICS_HISTORY_APPEND,
	METRICS_HISTORY_CLEAR,
	METRICS_UPDATE_CLAIM,
	METRICS_UPDATE_DONE,
	METRICS_UPDATE_RELEASE,
	METRICS_UPDATE_PENDING,
	METRICS_SETTING_GET,
	METRICS_SETTING_SET,
	METRICS_SETTING_CHANGE,
	METRICS_SETTING_SCAN,
	METRICS_UPDATE_BEGIN, /* a shared store's turn in a chat (store_update_begin), and lease renewals */
	METRICS_STORE_OPS,
};

/* Seconds on a monotonic clock, for durations. */
double metrics_clock(void);

/* An update is over. kind: the Update's field name ("message", "edited_message"…). */
void metrics_update(const char *kind, enum metrics_outcome outcome);

/*
 * A model call ended: outcome is llm_status_name()'s word or "cancelled";
 * first_token_s < 0 when no text came; tokens < 0 when the API did not say.
 */
void metrics_model_call(const char *outcome, double first_token_s, double total_s, long prompt_tokens,
                        long completion_tokens);

/* A Bot API call ended: ok, or error_code (0 for a network failure). */
void metrics_telegram_call(const char *method, int is_ok, long error_code);
/* Telegram answered 429 (the call may wait and go again). */
void metrics_telegram_flood(const char *method);

void metrics_store_op(enum metrics_store_op op, double seconds);

/* What the scraper's ingress knows at the moment of the scrape. */
struct metrics_gauges {
	size_t conversations; /* jobs running: one per chat at most */
	size_t queued;        /* jobs waiting behind them */
};

/* Appends the Prometheus text exposition (version 0.0.4) to out. 0, or -1 when out of memory. */
int metrics_render(struct buf *out, const struct metrics_gauges *g);

#endif
