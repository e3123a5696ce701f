/*
 * doctor: `tgllm doctor` checks, in one command, what the bot needs, and
 * prints a line per check with ✓ or ✗ and, for ✗, what to do: the CA
 * certificates, the bot token (getMe), the webhook (getWebhookInfo), the
 * model API with its key and the configured model (GET /models, or a
 * 1-token completion where there is no such endpoint), and the store (a
 * test record written, read and deleted; on S3, whether the server
 * enforces conditional writes). No secret is printed.
 */
#ifndef TGLLM_DOCTOR_H
#define TGLLM_DOCTOR_H

#include "config.h"

/* Prints the configuration's failure as a check; returns the exit status (1). */
int doctor_config_failed(const char *why);
/* Runs the checks in order; returns 0 when every one passed, else 1. */
int doctor_run(const struct config *cfg);

#endif
