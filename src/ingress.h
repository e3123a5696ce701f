/*
 * ingress: the ways updates reach the bot. Each runs the event loop until it
 * is told to stop and returns the process exit status.
 *
 *  - poll: getUpdates long polling (ingress_poll.c).
 */
#ifndef TGLLM_INGRESS_H
#define TGLLM_INGRESS_H

#include "bot.h"

/*
 * Learns the bot's identity (getMe), resumes unfinished updates, then long
 * polls until SIGINT or SIGTERM; then lets running jobs finish (bounded) and
 * returns 0. Returns 1 when Telegram rejects the token.
 */
int ingress_poll_run(struct bot *b);

#endif
