/*
 * webhook: managing the bot's webhook from the command line (set-webhook,
 * delete-webhook, webhook-info: https://core.telegram.org/bots/api#setwebhook),
 * and checking the secret token Telegram sends with every webhook request.
 * Each command makes one Bot API call, through the Telegram client on a loop
 * of its own, tried once: the person who typed it reads the outcome.
 */
#ifndef TGLLM_WEBHOOK_H
#define TGLLM_WEBHOOK_H

#include <stdbool.h>

#include "config.h"

/*
 * True when given matches expected, in time that does not depend on where
 * they differ. A NULL expected (no secret configured) matches anything.
 */
bool webhook_secret_matches(const char *expected, const char *given);

/*
 * setWebhook with url, the secret token from WEBHOOK_SECRET, allowed_updates,
 * and an uploaded certificate (a self-signed PEM) when certificate is not
 * NULL. Prints the outcome; returns the exit status.
 */
int webhook_set(const struct config *cfg, const char *url, const char *certificate, bool drop_pending);
int webhook_delete(const struct config *cfg, bool drop_pending);
/* Prints the URL, pending update count and last error in plain words. */
int webhook_info(const struct config *cfg);

#endif
