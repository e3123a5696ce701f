/*
 * tokens: how many tokens a conversation costs, by estimate, and what of it
 * fits the model's context window. Pure functions: the model client keeps
 * the calibration they learn from (llm_token_scale), the conversation asks
 * them what to send.
 */
#ifndef TGLLM_TOKENS_H
#define TGLLM_TOKENS_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/history.h"

/*
 * A cheap estimate for one message of the chat API: its UTF-8 text plus the
 * per-message overhead (about 4 tokens). Deliberately pessimistic about bytes
 * per token (counts ~3 bytes of UTF-8 as one token) so that Cyrillic text is
 * not underestimated: 4 + ceil(len / 3). Callers scale it with the factor
 * learned from the API's reported usage.
 */
size_t tokens_estimate(const char *content, size_t len);

/*
 * What a picture (or a file part) costs in a prompt, whatever its bytes: a
 * fixed figure near what a 512x512 tile plus a low-detail view cost with
 * OpenAI's vision models. Its base64 bytes are not text and count nothing.
 */
#define TOKENS_PER_IMAGE 800

/*
 * One turn: tokens_estimate of its text; a turn of content parts
 * (turn.is_parts) counts its JSON text but the data: URLs, plus
 * TOKENS_PER_IMAGE for each picture or file, or only the text when
 * with_images is false (the turn sent without them, media_prompt_turn).
 */
size_t tokens_estimate_turn(const struct turn *t, bool with_images);

/* The estimates of n turns added up, unscaled. */
size_t tokens_estimate_turns(const struct turn *turns, size_t n);

/*
 * Index of the first turn to send so that turns [index, n) fit within budget
 * tokens, each costing tokens_estimate() * scale. Keeps the newest turns;
 * never starts the kept part with an assistant turn (a reply without its
 * question confuses models), so the index may go one further. Returns n when
 * not even the last turn fits. A scale that is not a positive finite number
 * is taken as 1.
 */
size_t tokens_fit(const struct turn *turns, size_t n, size_t budget, double scale);

/*
 * The scale after one answer: the API counted `reported` prompt tokens where
 * the estimate (unscaled) said `estimated`. A moving average (0.8 of the old
 * scale, 0.2 of the new ratio, which is held within 0.25..4), so one odd
 * answer does not swing the budget. Without a report (reported <= 0) or an
 * estimate, the scale stays.
 */
double tokens_calibrate(double scale, size_t estimated, long reported);

#endif
