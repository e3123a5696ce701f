/* Unit tests for src/sse.c: the Server-Sent Events parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "model/sse.h"

#include "expect.h"

#define MAX_EVENTS 32

struct recorded {
	char *event;
	char *data;
	size_t len;
};

struct recorder {
	struct recorded ev[MAX_EVENTS];
	size_t n;
	size_t stop_after; /* return STOP_VALUE from the callback for this event (1-based); 0: never
	                    */
};

#define STOP_VALUE 7

static int record(void *arg, const char *event, const char *data, size_t len)
{
	struct recorder *r = arg;
	if (r->n == MAX_EVENTS)
		fail_msg("expected at most %d events, got more", MAX_EVENTS);
	if (data[len] != '\0')
		fail_msg("expected data NUL-terminated at data_len %zu", len);
	struct recorded *e = &r->ev[r->n++];
	e->event = strdup(event);
	e->data = malloc(len + 1);
	if (!e->event || !e->data)
		fail_msg("out of memory in the test recorder");
	memcpy(e->data, data, len + 1);
	e->len = len;
	return r->stop_after == r->n ? STOP_VALUE : 0;
}

static void recorder_free(struct recorder *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->ev[i].event);
		free(r->ev[i].data);
	}
	r->n = 0;
}

struct outcome {
	int feed_rc;
	int finish_rc;
};

/* Feeds s in pieces of chunk bytes (0: all at once), stopping at the first non-zero result. */
static struct outcome parse_in_chunks(const char *s, size_t n, size_t chunk, size_t max_event,
                                      struct recorder *r)
{
	struct outcome o = {0, 0};
	struct sse_parser *p = sse_new(max_event, record, r);
	if (!p)
		fail_msg("sse_new: expected a parser, got NULL");
	if (chunk == 0)
		chunk = n ? n : 1;
	for (size_t i = 0; i < n && o.feed_rc == 0; i += chunk)
		o.feed_rc = sse_feed(p, s + i, n - i < chunk ? n - i : chunk);
	if (o.feed_rc == 0)
		o.finish_rc = sse_finish(p);
	sse_free(p);
	return o;
}

static struct outcome parse(const char *s, size_t chunk, struct recorder *r)
{
	return parse_in_chunks(s, strlen(s), chunk, 1 << 16, r);
}

static void expect_event(const struct recorder *r, size_t i, const char *event, const char *data)
{
	if (i >= r->n)
		fail_msg("expected event %zu (\"%s\"), got only %zu events", i, data, r->n);
	expect_str("event name", event, r->ev[i].event);
	expect_str("event data", data, r->ev[i].data);
	expect_int("event data_len", strlen(data), r->ev[i].len);
}

static const char openai_stream[] =
    "data: "
    "{\"id\":\"c1\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n"
    "\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Привет\"}}]}\n"
    "\n"
    ": keep-alive\n"
    "\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n"
    "\n"
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,"
    "\"completion_tokens\":3,\"total_tokens\":12}}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

static void test_openai_stream_yields_each_chunk_then_done(void **state)
{
	(void)state;
	struct recorder r = {0};
	struct outcome o = parse(openai_stream, 0, &r);
	expect_int("sse_feed result", 0, o.feed_rc);
	expect_int("sse_finish result (stream complete)", 0, o.finish_rc);
	expect_int("number of events", 5, r.n);
	expect_event(&r, 0, "message",
	             "{\"id\":\"c1\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":"
	             "\"\"}}]}");
	expect_event(&r, 1, "message", "{\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Привет\"}}]}");
	expect_event(&r, 4, "message", "[DONE]");
	recorder_free(&r);
}

static void test_usage_chunk_arrives_intact(void **state)
{
	(void)state;
	struct recorder r = {0};
	parse(openai_stream, 0, &r);
	expect_event(&r, 3, "message",
	             "{\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,"
	             "\"completion_tokens\":3,\"total_tokens\":12}}");
	recorder_free(&r);
}

static void expect_same_events(const struct recorder *want, const struct recorder *got, const char *how)
{
	if (want->n != got->n)
		fail_msg("%s: expected %zu events, got %zu", how, want->n, got->n);
	for (size_t i = 0; i < want->n; i++) {
		expect_str(how, want->ev[i].event, got->ev[i].event);
		if (want->ev[i].len != got->ev[i].len ||
		    memcmp(want->ev[i].data, got->ev[i].data, want->ev[i].len) != 0)
			fail_msg("%s: event %zu: expected \"%s\", got \"%s\"", how, i, want->ev[i].data,
			         got->ev[i].data);
	}
}

static void test_byte_at_a_time_feeding_gives_identical_events(void **state)
{
	(void)state;
	static const char *const streams[] = {
	    openai_stream,
	    "data: a\r\n\r\ndata: b\r\rdata: c\n\ndata: d\r\n\n",
	    "\xEF\xBB\xBF"
	    "event: x\ndata: 1\ndata: 2\n\n: c\r\ndata\n\n",
	};
	for (size_t s = 0; s < sizeof streams / sizeof streams[0]; s++) {
		struct recorder whole = {0};
		struct outcome ow = parse(streams[s], 0, &whole);
		for (size_t chunk = 1; chunk <= 7; chunk++) {
			struct recorder pieces = {0};
			struct outcome op = parse(streams[s], chunk, &pieces);
			expect_int("feed result, pieces vs whole", ow.feed_rc, op.feed_rc);
			expect_int("finish result, pieces vs whole", ow.finish_rc, op.finish_rc);
			expect_same_events(&whole, &pieces, "events fed in pieces");
			recorder_free(&pieces);
		}
		recorder_free(&whole);
	}
}

static void test_crlf_split_across_feeds(void **state)
{
	(void)state;
	struct recorder r = {0};
	struct sse_parser *p = sse_new(1024, record, &r);
	/* Were the LF taken as a line of its own, the blank line would dispatch "a" alone. */
	expect_int("feed 1", 0, sse_feed(p, "data: a\r", 8));
	expect_int("feed 2", 0, sse_feed(p, "\ndata: b\r", 9));
	expect_int("feed 3", 0, sse_feed(p, "\n\r", 2));
	expect_int("feed 4", 0, sse_feed(p, "\n", 1));
	expect_int("events after CRLF CRLF", 1, r.n);
	expect_event(&r, 0, "message", "a\nb");
	expect_int("sse_finish", 0, sse_finish(p));
	sse_free(p);
	recorder_free(&r);
}

static void test_cr_lf_and_crlf_all_end_lines(void **state)
{
	(void)state;
	struct recorder r = {0};
	parse("data: cr\r\rdata: lf\n\ndata: crlf\r\n\r\ndata: x\ndata: y\r\n\r", 0, &r);
	expect_int("number of events", 4, r.n);
	expect_event(&r, 0, "message", "cr");
	expect_event(&r, 1, "message", "lf");
	expect_event(&r, 2, "message", "crlf");
	expect_event(&r, 3, "message", "x\ny");
	recorder_free(&r);
}

static void test_comment_lines_are_ignored(void **state)
{
	(void)state;
	struct recorder r = {0};
	struct outcome o = parse(": keep-alive\n\n:\ndata: 1\n: inside an event\ndata: 2\n\n"
	                         ": trailing\n",
	                         0, &r);
	expect_int("number of events", 1, r.n);
	expect_event(&r, 0, "message", "1\n2");
	expect_int("sse_finish after a trailing comment", 0, o.finish_rc);
	recorder_free(&r);
}

static void test_multi_line_data_joined_with_newline(void **state)
{
	(void)state;
	struct recorder r = {0};
	parse("data: line one\ndata: line two\ndata:\ndata: line four\n\n", 0, &r);
	expect_int("number of events", 1, r.n);
	expect_event(&r, 0, "message", "line one\nline two\n\nline four");
	recorder_free(&r);
}

static void test_event_field_names_the_event_until_dispatch(void **state)
{
	(void)state;
	struct recorder r = {0};
	parse("event: error\ndata: {\"error\":1}\n\ndata: next\n\nevent:\ndata: empty name\n\n", 0, &r);
	expect_int("number of events", 3, r.n);
	expect_event(&r, 0, "error", "{\"error\":1}");
	expect_event(&r, 1, "message", "next");
	expect_event(&r, 2, "message", "empty name");
	recorder_free(&r);
}

static void test_only_one_space_after_colon_is_dropped(void **state)
{
	(void)state;
	struct recorder r = {0};
	parse("data:tight\n\ndata:  two spaces\n\ndata:\tTab\n\ndata: a:b: c\n\n", 0, &r);
	expect_int("number of events", 4, r.n);
	expect_event(&r, 0, "message", "tight");
	expect_event(&r, 1, "message", " two spaces");
	expect_event(&r, 2, "message", "\tTab");
	expect_event(&r, 3, "message", "a:b: c");
	recorder_free(&r);
}

static void test_field_without_colon_has_empty_value(void **state)
{
	(void)state;
	struct recorder r = {0};
	parse("data\n\ndata\ndata\n\nevent\ndata: x\n\n", 0, &r);
	expect_int("number of events", 3, r.n);
	expect_event(&r, 0, "message", "");
	expect_event(&r, 1, "message", "\n");
	expect_event(&r, 2, "message", "x");
	recorder_free(&r);
}

static void test_event_without_data_is_not_dispatched(void **state)
{
	(void)state;
	struct recorder r = {0};
	struct outcome o = parse("event: ping\n\nid: 5\nretry: 100\nfoo: bar\n\n", 0, &r);
	expect_int("number of events", 0, r.n);
	expect_int("sse_finish", 0, o.finish_rc);
	recorder_free(&r);
}

static void test_bom_at_start_is_skipped_even_split(void **state)
{
	(void)state;
	struct recorder r = {0};
	struct sse_parser *p = sse_new(1024, record, &r);
	expect_int("feed BOM byte 1", 0, sse_feed(p, "\xEF", 1));
	expect_int("feed BOM bytes 2-3", 0, sse_feed(p, "\xBB\xBF", 2));
	/* Only the first BOM is skipped: the second makes an unknown field name. */
	const char *rest = "data: x\n\n\xEF\xBB\xBF"
	                   "data: y\n\n";
	expect_int("feed rest", 0, sse_feed(p, rest, strlen(rest)));
	expect_int("number of events", 1, r.n);
	expect_event(&r, 0, "message", "x");
	sse_free(p);
	recorder_free(&r);
}

static void test_broken_bom_bytes_stay_in_the_first_line(void **state)
{
	(void)state;
	struct recorder r = {0};
	/* "\xEF\xBB" then "data": the first line's field is "\xEF\xBB" "data", not "data". */
	struct outcome o = parse("\xEF\xBB"
	                         "data: x\n\ndata: y\n\n",
	                         1, &r);
	expect_int("number of events", 1, r.n);
	expect_event(&r, 0, "message", "y");
	expect_int("sse_finish", 0, o.finish_rc);
	recorder_free(&r);
}

static void test_stream_cut_mid_event_is_reported(void **state)
{
	(void)state;
	static const char *const cut[] = {
	    "data: {\"choices\":[{\"delta\":{\"content\":\"Hel", /* unterminated line */
	    "data: {\"id\":1}\n",                                /* no blank line */
	    "data: 1\n\nevent: x\n",                             /* field after dispatch */
	    "\xEF\xBB",                                          /* half a BOM */
	};
	for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
		struct recorder r = {0};
		struct outcome o = parse(cut[i], 0, &r);
		if (o.finish_rc != 1)
			fail_msg("sse_finish on cut stream %zu: expected 1, got %d", i, o.finish_rc);
		for (size_t e = 0; e < r.n; e++)
			expect_str("only complete events are dispatched", "1", r.ev[e].data);
		recorder_free(&r);
	}
	struct recorder r = {0};
	struct outcome o = parse("", 0, &r);
	expect_int("sse_finish on an empty stream", 0, o.finish_rc);
	recorder_free(&r);
}

static void test_line_of_exactly_max_event_is_accepted(void **state)
{
	(void)state;
	char line[40];
	memset(line, 'x', sizeof line);
	memcpy(line, "data: ", 6);
	line[38] = '\n';
	line[39] = '\n';
	for (size_t chunk = 0; chunk <= 3; chunk++) {
		struct recorder r = {0};
		struct outcome o = parse_in_chunks(line, sizeof line, chunk, 38, &r);
		expect_int("sse_feed with a 38-byte line and max_event 38", 0, o.feed_rc);
		expect_int("number of events", 1, r.n);
		expect_int("data_len", 32, r.ev[0].len);
		recorder_free(&r);
	}
}

static void test_oversize_line_is_too_big(void **state)
{
	(void)state;
	char line[41];
	memset(line, 'x', sizeof line);
	memcpy(line, "data: ", 6);
	line[39] = '\n';
	line[40] = '\n';
	for (size_t chunk = 0; chunk <= 3; chunk++) {
		struct recorder r = {0};
		struct outcome o = parse_in_chunks(line, sizeof line, chunk, 38, &r);
		expect_int("sse_feed with a 39-byte line and max_event 38", SSE_TOO_BIG, o.feed_rc);
		expect_int("number of events", 0, r.n);
		recorder_free(&r);
	}
	/* An unterminated line is bounded too, before its end arrives. */
	struct recorder r = {0};
	struct sse_parser *p = sse_new(10, record, &r);
	expect_int("feed 10 bytes", 0, sse_feed(p, "data: 1234", 10));
	expect_int("feed the 11th byte", SSE_TOO_BIG, sse_feed(p, "5", 1));
	expect_int("feed after an error", SSE_TOO_BIG, sse_feed(p, "\n\n", 2));
	sse_free(p);
	recorder_free(&r);
}

static void test_oversize_event_of_short_lines_is_too_big(void **state)
{
	(void)state;
	struct recorder r = {0};
	/* Each line fits in 12 bytes; the joined data "aaaaa\nbbbbb\nccccc" (17) does not. */
	struct outcome o = parse_in_chunks("data: aaaaa\ndata: bbbbb\ndata: ccccc\n\n", 37, 0, 12, &r);
	expect_int("sse_feed", SSE_TOO_BIG, o.feed_rc);
	expect_int("number of events", 0, r.n);
	recorder_free(&r);
}

static void test_callback_stop_value_is_returned_and_sticks(void **state)
{
	(void)state;
	struct recorder r = {0};
	r.stop_after = 2;
	struct sse_parser *p = sse_new(1024, record, &r);
	const char *s = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
	expect_int("sse_feed stopped by the callback", STOP_VALUE, sse_feed(p, s, strlen(s)));
	expect_int("events before the stop", 2, r.n);
	expect_int("sse_feed after the stop", STOP_VALUE, sse_feed(p, "data: 4\n\n", 9));
	expect_int("events after the stop", 2, r.n);
	sse_free(p);
	recorder_free(&r);
}

static void test_nul_bytes_in_data_are_kept(void **state)
{
	(void)state;
	struct recorder r = {0};
	static const char s[] = "data: a\0b\n\n";
	parse_in_chunks(s, sizeof s - 1, 0, 1024, &r);
	expect_int("number of events", 1, r.n);
	expect_int("data_len counts the NUL", 3, r.ev[0].len);
	if (memcmp(r.ev[0].data, "a\0b", 4) != 0)
		fail_msg("expected data \"a\\0b\"");
	recorder_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_openai_stream_yields_each_chunk_then_done),
	    cmocka_unit_test(test_usage_chunk_arrives_intact),
	    cmocka_unit_test(test_byte_at_a_time_feeding_gives_identical_events),
	    cmocka_unit_test(test_crlf_split_across_feeds),
	    cmocka_unit_test(test_cr_lf_and_crlf_all_end_lines),
	    cmocka_unit_test(test_comment_lines_are_ignored),
	    cmocka_unit_test(test_multi_line_data_joined_with_newline),
	    cmocka_unit_test(test_event_field_names_the_event_until_dispatch),
	    cmocka_unit_test(test_only_one_space_after_colon_is_dropped),
	    cmocka_unit_test(test_field_without_colon_has_empty_value),
	    cmocka_unit_test(test_event_without_data_is_not_dispatched),
	    cmocka_unit_test(test_bom_at_start_is_skipped_even_split),
	    cmocka_unit_test(test_broken_bom_bytes_stay_in_the_first_line),
	    cmocka_unit_test(test_stream_cut_mid_event_is_reported),
	    cmocka_unit_test(test_line_of_exactly_max_event_is_accepted),
	    cmocka_unit_test(test_oversize_line_is_too_big),
	    cmocka_unit_test(test_oversize_event_of_short_lines_is_too_big),
	    cmocka_unit_test(test_callback_stop_value_is_returned_and_sticks),
	    cmocka_unit_test(test_nul_bytes_in_data_are_kept),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
