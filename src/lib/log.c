#include "lib/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/utf8.h"

#define MAX_SECRETS    8
#define LINE_MAX_BYTES 4096 /* of a message: longer ones are cut, after masking */
/*
 * A piece of a secret this long is masked on its own: text quoted by others
 * may hold a secret cut short (an error body truncated mid-key).
 */
#define PIECE 8

static enum log_level min_level = LOG_LEVEL_INFO;
static enum log_format format = LOG_FORMAT_TEXT;
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

void log_set_format(enum log_format f)
{
	format = f;
}

int log_format_parse(const char *name, enum log_format *out)
{
	if (strcasecmp(name, "text") == 0)
		*out = LOG_FORMAT_TEXT;
	else if (strcasecmp(name, "json") == 0)
		*out = LOG_FORMAT_JSON;
	else
		return -1;
	return 0;
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
	/* A store opened again (waiting for PostgreSQL) registers its password again. */
	for (size_t i = 0; i < n_secrets; i++)
		if (strcmp(secrets[i], s) == 0)
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

/* s[0..n) as the body of a JSON string: quotes, backslashes and controls escaped, invalid UTF-8 as U+FFFD. */
static void put_json_text(FILE *to, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		size_t len = utf8_seq_len(p + i, n - i);
		if (len == 0) {
			fputs("\ufffd", to);
			i++;
		} else if (p[i] == '"' || p[i] == '\\') {
			fprintf(to, "\\%c", p[i++]);
		} else if (p[i] < 0x20 || p[i] == 0x7f) {
			fprintf(to, "\\u%04x", p[i++]);
		} else {
			fwrite(p + i, 1, len, to);
			i += len;
		}
	}
}

static bool is_key_char(char c)
{
	return (c >= 'a' && c <= 'z') || c == '_';
}

/* "key=value" words of the message as members (the first of each key), numbers as numbers. */
static void put_json_fields(FILE *to, const char *text)
{
	enum { MAX_FIELDS = 8 };
	const char *seen[MAX_FIELDS];
	size_t seen_len[MAX_FIELDS], n = 0;
	for (const char *w = text; *w && n < MAX_FIELDS; w += strcspn(w, " "), w += strspn(w, " ")) {
		size_t key = 0;
		while (is_key_char(w[key]))
			key++;
		if (key == 0 || w[key] != '=' || w[key + 1] == ' ' || w[key + 1] == '\0')
			continue;
		bool is_dup = false;
		for (size_t i = 0; i < n; i++)
			is_dup |= seen_len[i] == key && memcmp(seen[i], w, key) == 0;
		static const char *const reserved[] = {"time", "level", "component", "msg"};
		for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
			is_dup |= strlen(reserved[i]) == key && memcmp(reserved[i], w, key) == 0;
		if (is_dup)
			continue;
		seen[n] = w;
		seen_len[n++] = key;
		const char *v = w + key + 1;
		size_t vlen = strcspn(v, " ");
		while (vlen > 1 && strchr(":,;", v[vlen - 1])) /* "chat=7: answered" */
			vlen--;
		size_t digits = strspn(v + (v[0] == '-'), "0123456789");
		bool is_number = digits > 0 && digits <= 18 && digits + (v[0] == '-') == vlen &&
		                 (v[v[0] == '-'] != '0' || digits == 1);
		fprintf(to, ",\"%.*s\":", (int)key, w);
		if (is_number) {
			fwrite(v, 1, vlen, to);
		} else {
			fputc('"', to);
			put_json_text(to, v, vlen);
			fputc('"', to);
		}
	}
}

/*
 * A log line as one JSON object: time, level, the component (the message's
 * leading "serve:", "tg:"…), the message, and its key=value words as members.
 */
static void put_json_line(FILE *to, const char *stamp, enum log_level level, const char *text, bool is_cut)
{
	fprintf(to, "{\"time\":\"%s\",\"level\":\"%s\"", stamp, level_names[level]);
	size_t comp = 0;
	while (is_key_char(text[comp]) || (text[comp] >= '0' && text[comp] <= '9'))
		comp++;
	if (comp > 0 && text[comp] == ':' && text[comp + 1] == ' ')
		fprintf(to, ",\"component\":\"%.*s\"", (int)comp, text);
	fputs(",\"msg\":\"", to);
	put_json_text(to, text, strlen(text));
	fputs(is_cut ? "…\"" : "\"", to);
	put_json_fields(to, text);
	fputs("}\n", to);
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
		snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	}
	if (is_log && format == LOG_FORMAT_JSON)
		put_json_line(to, stamp, level, text, is_cut);
	else if (is_log)
		fprintf(to, "%s level=%s %s%s\n", stamp, level_names[level], text, is_cut ? "…" : "");
	else
		fprintf(to, "%s%s\n", text, is_cut ? "…" : "");
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
