#include "model/sse.h"

#include "lib/buf.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation */

static const unsigned char utf8_bom[3] = {0xEF, 0xBB, 0xBF};

struct sse_parser {
	size_t max_event;
	sse_event_cb cb;
	void *arg;
	struct buf line;  /* an unterminated line carried over to the next feed */
	struct buf data;  /* the event's data lines, each followed by '\n' */
	struct buf event; /* the "event:" field of the event being read */
	size_t bom_seen;  /* bytes of the BOM matched so far, while is_bom_done is false */
	bool is_bom_done;
	bool was_cr;     /* the last byte was CR: a following LF ends no further line */
	bool has_fields; /* field lines were read since the last dispatch */
	int status;      /* the first non-zero result of sse_feed, returned ever after */
};

struct sse_parser *sse_new(size_t max_event, sse_event_cb cb, void *arg)
{
	struct sse_parser *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	p->max_event = max_event;
	p->cb = cb;
	p->arg = arg;
	buf_init(&p->line, max_event);
	/* Room for the '\n' that follows the last data line until dispatch removes it. */
	buf_init(&p->data, max_event < SIZE_MAX ? max_event + 1 : max_event);
	buf_init(&p->event, max_event);
	return p;
}

void sse_free(struct sse_parser *p)
{
	if (!p)
		return;
	buf_free(&p->line);
	buf_free(&p->data);
	buf_free(&p->event);
	free(p);
}

static int from_buf_error(int rc)
{
	return rc == BUF_NO_MEMORY ? SSE_NO_MEMORY : SSE_TOO_BIG;
}

static int dispatch(struct sse_parser *p)
{
	p->has_fields = false;
	if (p->data.len == 0) {
		/* No data field: the standard drops the event, "event:" included. */
		buf_reset(&p->event);
		return SSE_OK;
	}
	/* Every data line appended a '\n'; the last one is not part of the data. */
	p->data.len--;
	p->data.data[p->data.len] = '\0';
	const char *name = p->event.len ? buf_str(&p->event) : "message";
	int rc = p->cb(p->arg, name, buf_str(&p->data), p->data.len);
	buf_reset(&p->data);
	buf_reset(&p->event);
	return rc;
}

/* One line without its line end. */
static int process_line(struct sse_parser *p, const char *line, size_t len)
{
	if (len == 0)
		return dispatch(p);
	if (line[0] == ':')
		return SSE_OK; /* a comment, e.g. ": keep-alive" */

	/* "name: value"; a line without a colon is a field name with an empty value. */
	const char *colon = memchr(line, ':', len);
	size_t name_len = colon ? (size_t)(colon - line) : len;
	const char *value = colon ? colon + 1 : line + len;
	size_t value_len = (size_t)(line + len - value);
	if (value_len > 0 && value[0] == ' ') {
		value++;
		value_len--;
	}
	p->has_fields = true;

	int rc = BUF_OK;
	if (name_len == 4 && memcmp(line, "data", 4) == 0) {
		rc = buf_append(&p->data, value, value_len);
		if (rc == BUF_OK)
			rc = buf_append(&p->data, "\n", 1);
	} else if (name_len == 5 && memcmp(line, "event", 5) == 0) {
		buf_reset(&p->event);
		rc = buf_append(&p->event, value, value_len);
	}
	/* "id" and "retry" matter to reconnecting browsers, not to one HTTP response;
	 * unknown fields are ignored, as the standard says. */
	return rc == BUF_OK ? SSE_OK : from_buf_error(rc);
}

/* Consumes a leading UTF-8 BOM, which may arrive split across feeds. */
static int skip_bom(struct sse_parser *p, const char **bytes, size_t *n)
{
	while (!p->is_bom_done && *n > 0) {
		if ((unsigned char)**bytes == utf8_bom[p->bom_seen]) {
			(*bytes)++;
			(*n)--;
			if (++p->bom_seen == sizeof utf8_bom)
				p->is_bom_done = true;
			continue;
		}
		/* Not a BOM after all: the bytes matched so far begin the first line. */
		p->is_bom_done = true;
		int rc = buf_append(&p->line, utf8_bom, p->bom_seen);
		if (rc != BUF_OK)
			return from_buf_error(rc);
	}
	return SSE_OK;
}

/* Where the line starting at s ends: its CR or LF, or end when the line goes on. */
static const char *line_end(const char *s, const char *end)
{
	/* memchr, which reads a vector at a time, for the LF; a CR is rare and only looked for before it. */
	const char *lf = memchr(s, '\n', (size_t)(end - s));
	const char *stop = lf ? lf : end;
	const char *cr = memchr(s, '\r', (size_t)(stop - s));
	return cr ? cr : stop;
}

static int feed(struct sse_parser *p, const char *bytes, size_t n)
{
	int rc = skip_bom(p, &bytes, &n);
	if (rc != SSE_OK)
		return rc;

	size_t i = 0;
	while (i < n) {
		/* The LF of a CRLF whose CR ended the previous line, maybe in the previous feed. */
		if (p->was_cr) {
			p->was_cr = false;
			if (bytes[i] == '\n') {
				i++;
				continue;
			}
		}
		size_t j = (size_t)(line_end(bytes + i, bytes + n) - bytes);
		if (j == n) {
			rc = buf_append(&p->line, bytes + i, n - i);
			return rc == BUF_OK ? SSE_OK : from_buf_error(rc);
		}

		if (p->line.len == 0) {
			/* The whole line is in this feed: no copy needed. */
			if (j - i > p->max_event)
				return SSE_TOO_BIG;
			rc = process_line(p, bytes + i, j - i);
		} else {
			rc = buf_append(&p->line, bytes + i, j - i);
			if (rc != BUF_OK)
				return from_buf_error(rc);
			rc = process_line(p, p->line.data, p->line.len);
			buf_reset(&p->line);
		}
		if (rc != SSE_OK)
			return rc;
		p->was_cr = bytes[j] == '\r';
		i = j + 1;
	}
	return SSE_OK;
}

int sse_feed(struct sse_parser *p, const char *bytes, size_t n)
{
	if (p->status == SSE_OK)
		p->status = feed(p, bytes, n);
	return p->status;
}

int sse_finish(struct sse_parser *p)
{
	bool is_cut = p->has_fields || p->line.len > 0 || (!p->is_bom_done && p->bom_seen > 0);
	buf_reset(&p->line);
	buf_reset(&p->data);
	buf_reset(&p->event);
	p->has_fields = false;
	p->was_cr = false;
	p->is_bom_done = true;
	return is_cut ? 1 : 0;
}
