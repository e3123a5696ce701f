/*
 * sse: a Server-Sent Events parser, as the model API streams its answers.
 *
 * Implements the event-stream interpretation of the WHATWG HTML standard
 * (section 9.2.6): lines end in CRLF, LF or CR; lines starting with ':' are
 * comments; "data:" lines of one event are joined with '\n'; a blank line
 * dispatches the event; an optional single space after the colon is dropped;
 * a UTF-8 BOM at the very start is skipped. Bytes arrive in arbitrary pieces
 * (a CRLF may be split between two feeds).
 *
 * The parser owns its buffers; each event's strings are borrowed by the
 * callback for the duration of the call only.
 */
#ifndef TGLLM_SSE_H
#define TGLLM_SSE_H

#include <stddef.h>

enum sse_error {
	SSE_OK = 0,
	SSE_TOO_BIG = -1,   /* a line or event exceeded max_event bytes */
	SSE_NO_MEMORY = -2, /* allocation failed */
	/* a positive value is what the callback returned to stop parsing */
};

/*
 * Called once per dispatched event. event is the "event:" field or "message"
 * when absent; data is NUL-terminated (data_len excludes the NUL). Events with
 * no data field are not dispatched (per the standard). Return 0 to go on, a
 * positive value to stop: sse_feed then returns that value.
 */
typedef int (*sse_event_cb)(void *arg, const char *event, const char *data, size_t data_len);

struct sse_parser;

/* max_event bounds one line and one event's data; NULL on allocation failure. */
struct sse_parser *sse_new(size_t max_event, sse_event_cb cb, void *arg);
/* Feeds n bytes. After a non-zero return the parser must not be fed again. */
int sse_feed(struct sse_parser *p, const char *bytes, size_t n);
/*
 * Call at end of stream. Returns 1 when the stream ended inside an event
 * (some field lines were received after the last dispatch, or a line was
 * unterminated): that event is discarded, as the standard says, and the
 * caller learns the stream was cut. Returns 0 otherwise.
 */
int sse_finish(struct sse_parser *p);
void sse_free(struct sse_parser *p);

#endif
