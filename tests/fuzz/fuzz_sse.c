/*
 * libFuzzer target for src/sse.c. The first byte picks max_event, the second
 * the size of the pieces; the rest is the stream. The stream is parsed twice,
 * whole and in pieces, and both must give the same events and results.
 */
#include "lib/buf.h"
#include "model/sse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every event, serialized: name, NUL, data length, data. */
static int record(void *arg, const char *event, const char *d, size_t len)
{
	struct buf *trace = arg;
	if (d[len] != '\0')
		abort();
	if (buf_append(trace, event, strlen(event) + 1) != BUF_OK ||
	    buf_append(trace, &len, sizeof len) != BUF_OK || buf_append(trace, d, len) != BUF_OK)
		abort(); /* the trace is bounded by a few times the input: never full */
	return 0;
}

struct result {
	int feed_rc;
	int finish_rc;
};

static struct result parse(const char *s, size_t n, size_t chunk, size_t max_event, struct buf *trace)
{
	struct result r = {0, -1};
	struct sse_parser *p = sse_new(max_event, record, trace);
	if (!p)
		abort();
	for (size_t i = 0; i < n && r.feed_rc == 0; i += chunk)
		r.feed_rc = sse_feed(p, s + i, n - i < chunk ? n - i : chunk);
	if (r.feed_rc == 0)
		r.finish_rc = sse_finish(p);
	if (r.feed_rc != SSE_OK && r.feed_rc != SSE_TOO_BIG)
		abort(); /* the callback never stops, and memory does not run out here */
	sse_free(p);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t max_event = data[0] < 250 ? (size_t)data[0] : (size_t)1 << 20;
	size_t chunk = 1 + data[1] % 16;
	const char *s = (const char *)data + 2;
	size_t n = size - 2;

	struct buf whole, pieces;
	buf_init(&whole, (size_t)1 << 28);
	buf_init(&pieces, (size_t)1 << 28);
	struct result rw = parse(s, n, n ? n : 1, max_event, &whole);
	struct result rp = parse(s, n, chunk, max_event, &pieces);
	if (rw.feed_rc != rp.feed_rc || rw.finish_rc != rp.finish_rc || whole.len != pieces.len ||
	    memcmp(buf_str(&whole), buf_str(&pieces), whole.len) != 0)
		abort();
	buf_free(&whole);
	buf_free(&pieces);
	return 0;
}
