/*
 * log: leveled log lines on stderr, one event per line.
 *
 * Format: "2026-11-25T21:17:26.123Z level=warn <message>". Messages use
 * key=value pairs where it helps grep (chat=123 update=456).
 * Secrets registered with log_add_secret() are replaced by "***" in every
 * line, as a safety net: the bot token is part of every Bot API URL, and a
 * library error message might quote one. So is every run of 8 bytes or more
 * of a secret (a quoted text cut mid-secret), and a line is cut to 4 KB only
 * after masking.
 */
#ifndef TGLLM_LOG_H
#define TGLLM_LOG_H

#include <stdio.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/*
 * LOG_FORMAT=json: one JSON object a line for log collectors, e.g.
 * {"time":"…Z","level":"info","component":"bot","msg":"bot: update=5 chat=7: …","update":5,"chat":7}
 * (the message's key=value words as members, numbers as numbers; masked
 * and cut as the text line is, before it is escaped).
 */
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

void log_set_level(enum log_level level);
void log_set_format(enum log_format format);
/* Parses "text" or "json"; -1 when unknown. */
int log_format_parse(const char *name, enum log_format *out);
/* Parses "debug", "info", "warn", "error"; returns -1 when unknown. */
int log_level_parse(const char *name, enum log_level *out);
/* Copies s; strings shorter than 4 bytes are ignored (masking them would mangle logs). */
void log_add_secret(const char *s);
void log_forget_secrets(void);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * A command's output to a person (set-webhook, webhook-info…): one line, with
 * the same masking as the log (Telegram's error descriptions may quote the
 * token), without the log's prefix. The newline is added.
 */
void log_print(FILE *to, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
