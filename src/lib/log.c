#include "lib/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAX_SECRETS 8
#define LINE_MAX_BYTES 4096 /* of a message: longer ones are cut, after masking */
/*
 * A piece of a secret this long is masked on its own: text quoted by others
 * may hold a secret cut short (an error body truncated mid-key).
 */
#define PIECE 8

static enum log_level min_level = LOG_LEVEL_INFO;
static char *secrets[MAX_SECRETS];
static size_t n_secrets;
/* One bit per hash of every PIECE bytes of every secret: most text is passed over without a search. */
static uint64_t piece_bits[64];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
	min_level = level;
}

int log_level_parse(const char *name, enum log_level *out)
{
	for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

static unsigned piece_hash(const char *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof v);
	return (unsigned)((v * 0x9E3779B97F4A7C15ull) >> 52); /* 12 bits */
}

static bool is_piece_of_a_secret(const char *p)
{
	unsigned h = piece_hash(p);
	if (!(piece_bits[h / 64] & (1ull << (h % 64))))
		return false;
	for (size_t i = 0; i < n_secrets; i++)
		if (memmem(secrets[i], strlen(secrets[i]), p, PIECE))
			return true;
	return false;
}

void log_add_secret(const char *s)
{
	if (!s || strlen(s) < 4 || n_secrets == MAX_SECRETS)
		return;
	char *copy = strdup(s);
	if (!copy)
		return;
	secrets[n_secrets++] = copy;
	for (size_t i = 0; i + PIECE <= strlen(copy); i++) {
		unsigned h = piece_hash(copy + i);
		piece_bits[h / 64] |= 1ull << (h % 64);
	}
}

void log_forget_secrets(void)
{
	for (size_t i = 0; i < n_secrets; i++)
		free(secrets[i]);
	n_secrets = 0;
	memset(piece_bits, 0, sizeof piece_bits);
}

/* Replaces each registered secret in line, and every run of its pieces, by "***" (in place: never longer). */
static void mask_secrets(char *line)
{
	for (size_t i = 0; i < n_secrets; i++) {
		size_t n = strlen(secrets[i]);
		char *p;
		while ((p = strstr(line, secrets[i])) != NULL) {
			memcpy(p, "***", 3);
			memmove(p + 3, p + n, strlen(p + n) + 1);
		}
	}
	if (!n_secrets)
		return;
	/*
	 * A byte is masked when a piece of a secret covers it. The "***" of a run
	 * is written when the run ends: the run's bytes are read until then.
	 */
	size_t len = strlen(line), w = 0, masked_to = 0;
	for (size_t r = 0; r < len; r++) {
		if (r + PIECE <= len && is_piece_of_a_secret(line + r))
			masked_to = r + PIECE;
		if (r < masked_to)
			continue;
		if (r > 0 && r == masked_to) {
			memcpy(line + w, "***", 3);
			w += 3;
		}
		line[w++] = line[r];
	}
	if (len > 0 && masked_to == len) {
		memcpy(line + w, "***", 3);
		w += 3;
	}
	line[w] = '\0';
}

/*
 * The message formatted whole (into line when it fits, else into an
 * allocation) and masked, then cut at LINE_MAX_BYTES (at a character's
 * start): cutting first could leave the head of a secret, which masking no
 * longer recognises. NULL when out of memory.
 */
__attribute__((format(printf, 2, 0))) static char *format_masked(char line[static LINE_MAX_BYTES + 1],
                                                                const char *fmt, va_list ap, bool *is_cut)
{
	va_list again;
	va_copy(again, ap);
	int n = vsnprintf(line, LINE_MAX_BYTES + 1, fmt, ap);
	char *text = line;
	if (n > LINE_MAX_BYTES && (text = malloc((size_t)n + 1)) != NULL)
		vsnprintf(text, (size_t)n + 1, fmt, again);
	va_end(again);
	if (n < 0 || !text)
		return NULL;
	/* One event per line: a newline inside a message would forge another. */
	for (char *p = text; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	mask_secrets(text);
	size_t len = strlen(text);
	*is_cut = len > LINE_MAX_BYTES;
	if (*is_cut) {
		len = LINE_MAX_BYTES;
		while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
			len--;
		text[len] = '\0';
	}
	return text;
}

/* Writes one masked line to `to`: a log line with its time and level (is_log), or a command's output. */
__attribute__((format(printf, 4, 0))) static void write_line(FILE *to, bool is_log, enum log_level level,
                                                             const char *fmt, va_list ap)
{
	char line[LINE_MAX_BYTES + 1];
	bool is_cut = false;
	char *text = format_masked(line, fmt, ap, &is_cut);
	if (!text)
		return;
	char stamp[64] = "";
	if (is_log) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s ", tm.tm_year + 1900,
		         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
		         level_names[level]);
	}
	fprintf(to, "%s%s%s\n", stamp, text, is_cut ? "…" : "");
	if (text != line)
		free(text);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (level < min_level)
		return;
	va_list ap;
	va_start(ap, fmt);
	write_line(stderr, true, level, fmt, ap);
	va_end(ap);
}

void log_print(FILE *to, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	write_line(to, false, LOG_LEVEL_INFO, fmt, ap);
	va_end(ap);
}
