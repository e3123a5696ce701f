/*
 * Unit tests for src/store/s3_client.c: the pure helpers (s3_xml_take,
 * s3_append_encoded, s3_where) byte by byte, and the client on the loop:
 * its callback never runs inside s3_send, a cancelled call never calls back,
 * and retries end with the last answer (against an evhttp server on
 * 127.0.0.1 in this process).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/http.h"
#include "store/s3_client.h"

#include "expect.h"

/* "41 C3 A9" for failure messages. */
static void hex_of(const char *s, size_t n, char *out, size_t out_len)
{
	size_t o = 0;
	out[0] = '\0';
	for (size_t i = 0; i < n && o + 4 < out_len; i++)
		o += (size_t)snprintf(out + o, out_len - o, "%s%02X", i ? " " : "", (unsigned char)s[i]);
}

static void expect_bytes(const char *what, const char *expected, size_t expected_len, const char *actual)
{
	if (!actual)
		fail_msg("%s: expected %zu bytes, got NULL", what, expected_len);
	size_t actual_len = strlen(actual);
	if (actual_len != expected_len || memcmp(expected, actual, expected_len) != 0) {
		char e[256], a[256];
		hex_of(expected, expected_len, e, sizeof e);
		hex_of(actual, actual_len, a, sizeof a);
		fail_msg("%s: expected bytes [%s], got [%s]", what, e, a);
	}
}

/* ---- s3_xml_take ---- */

/* The decoded text of <V>content</V>; the caller frees it. */
static char *decode(const char *content)
{
	char xml[512];
	snprintf(xml, sizeof xml, "<V>%s</V>", content);
	const char *from = xml;
	char *out = s3_xml_take(&from, xml + strlen(xml), "V");
	if (!out)
		fail_msg("s3_xml_take(<V>%s</V>): expected the text, got NULL", content);
	if (from != xml + strlen(xml))
		fail_msg("s3_xml_take(<V>%s</V>): expected *from at the end, got %td bytes short", content,
		         xml + strlen(xml) - from);
	return out;
}

static void expect_decoded(const char *content, const char *expected, size_t expected_len)
{
	char *out = decode(content);
	char what[128];
	snprintf(what, sizeof what, "<V>%s</V>", content);
	char copy[512];
	snprintf(copy, sizeof copy, "%s", out);
	free(out);
	expect_bytes(what, expected, expected_len, copy);
}

#define EXPECT_DECODED(content, expected) expect_decoded((content), (expected), sizeof(expected) - 1)

/* A reference that is not decoded stays exactly as written. */
static void expect_kept(const char *content)
{
	expect_decoded(content, content, strlen(content));
}

static void test_xml_take_finds_the_first_element_and_moves_past_it(void **state)
{
	(void)state;
	const char *xml = "<Error><Code>NoSuchKey</Code><Message>The key &amp; more</Message>"
	                  "<Code>Second</Code></Error>";
	const char *end = xml + strlen(xml), *from = xml;

	char *code = s3_xml_take(&from, end, "Code");
	expect_str("first <Code>", "NoSuchKey", code);
	free(code);
	const char *after_first = strstr(xml, "</Code>") + strlen("</Code>");
	expect_int("*from after the first <Code>: offset", after_first - xml, from - xml);

	char *second = s3_xml_take(&from, end, "Code");
	expect_str("second <Code>", "Second", second);
	free(second);
	const char *after_second = strstr(after_first, "</Code>") + strlen("</Code>");
	expect_int("*from after the second <Code>: offset", after_second - xml, from - xml);

	const char *before = from;
	char *third = s3_xml_take(&from, end, "Code");
	expect_null("a third <Code>", third);
	expect_int("*from when nothing is found: offset", before - xml, from - xml);

	/* <Message> lies before *from now: only what follows *from is searched. */
	expect_null("<Message> before *from", s3_xml_take(&from, end, "Message"));
	from = xml;
	char *message = s3_xml_take(&from, end, "Message");
	expect_str("<Message> from the start", "The key & more", message);
	free(message);
}

static void test_xml_take_is_null_when_absent_or_unclosed(void **state)
{
	(void)state;
	static const char *const cases[] = {
	    "<Error><Message>m</Message></Error>", /* absent */
	    "<Error><Code>NoSuchKey</Error>",      /* unclosed */
	    "<Error><Code>NoSuchKey</Cod",         /* cut off */
	    "<Error><CodeX>a</CodeX></Error>",     /* another tag that begins alike */
	    "",
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *from = cases[i];
		char *got = s3_xml_take(&from, cases[i] + strlen(cases[i]), "Code");
		if (got) {
			char copy[128];
			snprintf(copy, sizeof copy, "%s", got);
			free(got);
			fail_msg("<Code> in \"%s\": expected NULL, got \"%s\"", cases[i], copy);
		}
		if (from != cases[i])
			fail_msg("<Code> in \"%s\": expected *from unchanged, moved by %td", cases[i],
			         from - cases[i]);
	}
	/* end bounds the search: a closing tag past it does not count. */
	const char *xml = "<Code>abc</Code>";
	const char *from = xml;
	expect_null("<Code> with end before </Code>", s3_xml_take(&from, xml + 12, "Code"));
	expect_int("*from unchanged", 0, from - xml);
}

static void test_xml_take_keeps_plain_text_and_empty_elements(void **state)
{
	(void)state;
	EXPECT_DECODED("", "");
	EXPECT_DECODED("plain text 123", "plain text 123");
	EXPECT_DECODED("Привет, мир 👋", "Привет, мир 👋");
}

static void test_xml_take_decodes_the_five_entities(void **state)
{
	(void)state;
	EXPECT_DECODED("&lt;&gt;&amp;&quot;&apos;", "<>&\"'");
	EXPECT_DECODED("a&lt;b&gt;c", "a<b>c");
	/* Decoded once: "&amp;lt;" is the text "&lt;". */
	EXPECT_DECODED("&amp;lt;", "&lt;");
	EXPECT_DECODED("&amp;amp;", "&amp;");
}

static void test_xml_take_decodes_decimal_references_to_utf8(void **state)
{
	(void)state;
	EXPECT_DECODED("&#65;", "A");
	EXPECT_DECODED("&#127;", "\x7F");
	EXPECT_DECODED("&#128;", "\xC2\x80");
	EXPECT_DECODED("&#233;", "\xC3\xA9"); /* é */
	EXPECT_DECODED("&#2047;", "\xDF\xBF");
	EXPECT_DECODED("&#2048;", "\xE0\xA0\x80");
	EXPECT_DECODED("&#8364;", "\xE2\x82\xAC"); /* € */
	EXPECT_DECODED("&#65535;", "\xEF\xBF\xBF");
	EXPECT_DECODED("&#65536;", "\xF0\x90\x80\x80");
	EXPECT_DECODED("&#128512;", "\xF0\x9F\x98\x80");  /* 😀 */
	EXPECT_DECODED("&#1114111;", "\xF4\x8F\xBF\xBF"); /* U+10FFFF */
	EXPECT_DECODED("x&#65;y&#66;z", "xAyBz");
}

static void test_xml_take_decodes_hex_references_to_utf8(void **state)
{
	(void)state;
	EXPECT_DECODED("&#x41;", "A");
	EXPECT_DECODED("&#x7f;", "\x7F");
	EXPECT_DECODED("&#x80;", "\xC2\x80");
	EXPECT_DECODED("&#xE9;", "\xC3\xA9");
	EXPECT_DECODED("&#xe9;", "\xC3\xA9");
	EXPECT_DECODED("&#x7FF;", "\xDF\xBF");
	EXPECT_DECODED("&#x800;", "\xE0\xA0\x80");
	EXPECT_DECODED("&#x20AC;", "\xE2\x82\xAC");
	EXPECT_DECODED("&#xD7FF;", "\xED\x9F\xBF"); /* just below the surrogates */
	EXPECT_DECODED("&#xE000;", "\xEE\x80\x80"); /* just above them */
	EXPECT_DECODED("&#xFFFF;", "\xEF\xBF\xBF");
	EXPECT_DECODED("&#x10000;", "\xF0\x90\x80\x80");
	EXPECT_DECODED("&#x1F600;", "\xF0\x9F\x98\x80");
	EXPECT_DECODED("&#x10FFFF;", "\xF4\x8F\xBF\xBF");
	EXPECT_DECODED("&#x0041;", "A");
}

static void test_xml_take_keeps_unknown_and_malformed_references(void **state)
{
	(void)state;
	static const char *const kept[] = {
	    "&nbsp;", "&foo;", "&AMP;", "a & b", "&amp",   "&lt",
	    "&#;",    "&#x;",  "&#0;",  "&#x0;", "&#X41;", /* XML's hex marker is a lower-case x */
	    "&#65",   "&",     "&;",    "&#x41", "tail &",
	};
	for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
		expect_kept(kept[i]);
	/* A stray '&' does not swallow a real reference after it. */
	EXPECT_DECODED("& &amp;", "& &");
}

/* UTF-8 has no form for U+D800..U+DFFF: encoding one would write the invalid bytes ED A0 80 and so on. */
static void test_xml_take_keeps_surrogate_references_as_text(void **state)
{
	(void)state;
	static const char *const surrogates[] = {"&#xD800;", "&#xDFFF;", "&#xdbff;",        "&#xDC00;",
	                                         "&#55296;", "&#57343;", "&#xD83D;&#xDE00;"};
	for (size_t i = 0; i < sizeof surrogates / sizeof surrogates[0]; i++) {
		char *out = decode(surrogates[i]);
		bool has_ed = strchr(out, '\xED') != NULL;
		char copy[64];
		snprintf(copy, sizeof copy, "%s", out);
		free(out);
		if (has_ed)
			fail_msg("<V>%s</V>: expected the reference kept as text, got a surrogate encoded "
			         "(byte ED)",
			         surrogates[i]);
		expect_bytes(surrogates[i], surrogates[i], strlen(surrogates[i]), copy);
	}
}

static void test_xml_take_keeps_references_beyond_unicode_as_text(void **state)
{
	(void)state;
	expect_kept("&#x110000;");
	expect_kept("&#1114112;");
	expect_kept("&#xFFFFFFFF;");
	expect_kept("&#x100000041;"); /* 0x41 in its low bits */
	expect_kept("&#99999999999999999999999;");
	expect_kept("&#-65;");
}

/*
 * A reference's number is digits only up to the ';': strtoul's leniency
 * (trailing junk, leading blanks and sign, a second "0x") would decode
 * references XML calls malformed, "&#65abc;" as "A".
 */
static void test_xml_take_keeps_references_with_junk_in_the_number(void **state)
{
	(void)state;
	static const char *const malformed[] = {"&#65abc;", "&#x41zz;", "&# 65;",
	                                        "&#+65;",   "&#x0x41;", "&#x 41;"};
	for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
		expect_kept(malformed[i]);
}

/* ---- s3_append_encoded ---- */

static char *encoded(const char *s, bool is_path)
{
	struct buf b;
	buf_init(&b, 4096);
	int rc = s3_append_encoded(&b, s, is_path);
	if (rc != BUF_OK) {
		buf_free(&b);
		fail_msg("s3_append_encoded(\"%s\"): expected BUF_OK, got %d", s, rc);
	}
	return buf_take(&b);
}

static void expect_encoded(const char *s, bool is_path, const char *expected)
{
	char *got = encoded(s, is_path);
	char what[128], copy[512];
	snprintf(what, sizeof what, "s3_append_encoded(\"%s\", is_path=%d)", s, is_path);
	snprintf(copy, sizeof copy, "%s", got ? got : "");
	free(got);
	expect_str(what, expected, copy);
}

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '.' || c == '_' || c == '~';
}

static void test_encoding_keeps_unreserved_characters(void **state)
{
	(void)state;
	const char *unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
	expect_encoded(unreserved, false, unreserved);
	expect_encoded(unreserved, true, unreserved);
	expect_encoded("", false, "");
}

static void test_encoding_keeps_slash_only_in_paths(void **state)
{
	(void)state;
	expect_encoded("tgllm/updates/42.json", true, "tgllm/updates/42.json");
	expect_encoded("tgllm/updates/42.json", false, "tgllm%2Fupdates%2F42.json");
	expect_encoded("/", true, "/");
	expect_encoded("/", false, "%2F");
}

static void test_encoding_escapes_everything_else_in_upper_case_hex(void **state)
{
	(void)state;
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {" ", "%20"},
	    {"+", "%2B"},
	    {"=", "%3D"},
	    {"%", "%25"},
	    {"&", "%26"},
	    {"?", "%3F"},
	    {"#", "%23"},
	    {":", "%3A"},
	    {"*", "%2A"},
	    {"\x01", "%01"},
	    {"\x7F", "%7F"},
	    {"\xFF", "%FF"},
	    {"é", "%C3%A9"},
	    {"€", "%E2%82%AC"},
	    {"😀", "%F0%9F%98%80"},
	    {"a b+c=d", "a%20b%2Bc%3Dd"},
	    {"Привет", "%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		expect_encoded(cases[i].in, false, cases[i].out);
		expect_encoded(cases[i].in, true, cases[i].out);
	}
}

/* Every byte: kept exactly when unreserved (or '/' in a path), else %XX with upper-case hex. */
static void test_encoding_of_every_byte(void **state)
{
	(void)state;
	for (int path = 0; path < 2; path++) {
		for (int c = 1; c < 256; c++) {
			char in[2] = {(char)c, '\0'}, expected[4];
			if (is_unreserved((unsigned char)c) || (path && c == '/'))
				snprintf(expected, sizeof expected, "%c", c);
			else
				snprintf(expected, sizeof expected, "%%%02X", c);
			char *got = encoded(in, path);
			bool same = strcmp(got, expected) == 0;
			char copy[16];
			snprintf(copy, sizeof copy, "%s", got);
			free(got);
			if (!same)
				fail_msg("byte 0x%02X (is_path=%d): expected \"%s\", got \"%s\"", c, path,
				         expected, copy);
		}
	}
}

static void test_encoding_appends_and_respects_the_buffer_limit(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 16);
	if (buf_append_str(&b, "k=") != BUF_OK)
		fail_msg("buf_append_str: expected BUF_OK");
	expect_int("s3_append_encoded after \"k=\"", BUF_OK, s3_append_encoded(&b, "a b", false));
	expect_str("buffer after appending", "k=a%20b", buf_str(&b));
	expect_int("s3_append_encoded past the limit of 16", BUF_TOO_BIG,
	           s3_append_encoded(&b, "é é é", false));
	buf_free(&b);
}

/* ---- the client ---- */

struct loop {
	struct event_base *base;
	struct http_client *http;
	struct s3_client *s3;
	struct event *watchdog;
	bool has_timed_out;
};

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct loop *l = arg;
	l->has_timed_out = true;
	event_base_loopbreak(l->base);
}

static void loop_open(struct loop *l)
{
	memset(l, 0, sizeof *l);
	if (!(l->base = event_base_new()) || !(l->http = http_client_new(l->base)) ||
	    !(l->watchdog = evtimer_new(l->base, on_watchdog, l)))
		fail_msg("cannot set up the event loop and the http client");
}

/* The loop's S3 client, for the bucket "bucket" at endpoint. */
static void loop_client(struct loop *l, const char *endpoint)
{
	struct s3_client_options o = {
	    .endpoint = endpoint,
	    .region = "ru-central1",
	    .bucket = "bucket",
	    .key_id = "test-key-id",
	    .secret = "test-secret",
	};
	char err[256] = "";
	if (!(l->s3 = s3_client_new(l->base, l->http, &o, err, sizeof err)))
		fail_msg("s3_client_new(%s): expected a client, got NULL: %s", endpoint, err);
}

static void loop_close(struct loop *l)
{
	s3_client_free(l->s3);
	http_client_free(l->http);
	if (l->watchdog)
		event_free(l->watchdog);
	if (l->base)
		event_base_free(l->base);
}

/* Runs the loop until *done or ms pass; returns whether *done came. */
static bool run_until(struct loop *l, const bool *done, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	l->has_timed_out = false;
	evtimer_add(l->watchdog, &tv);
	while (!*done && !l->has_timed_out)
		if (event_base_loop(l->base, EVLOOP_ONCE) < 0)
			break;
	evtimer_del(l->watchdog);
	return *done;
}

struct answer {
	bool has_returned; /* set by the test once s3_send returned */
	bool has_come;
	bool came_inside_send;
	int calls;
	long status;
	bool is_transport_error;
	char body[256];
};

static void on_answer(void *arg, const struct http_response *resp)
{
	struct answer *a = arg;
	a->calls++;
	a->has_come = true;
	a->came_inside_send = !a->has_returned;
	a->status = resp->status;
	a->is_transport_error = resp->is_transport_error;
	snprintf(a->body, sizeof a->body, "%.*s", (int)resp->body_len, resp->body ? resp->body : "");
}

static void test_where_names_bucket_and_key(void **state)
{
	(void)state;
	struct loop l;
	loop_open(&l);
	loop_client(&l, "https://storage.yandexcloud.net/");
	char out[128];
	s3_where(l.s3, "chats/42.json", out, sizeof out);
	expect_str("s3_where(chats/42.json)", "s3://bucket/chats/42.json", out);
	s3_where(l.s3, NULL, out, sizeof out);
	expect_str("s3_where(NULL), the bucket", "s3://bucket/", out);
	char small[10];
	s3_where(l.s3, "chats/42.json", small, sizeof small);
	expect_str("s3_where into 10 bytes", "s3://buck", small);
	loop_close(&l);
}

/*
 * A request that cannot even be set up (its URL passes S3_URL_MAX, 8192)
 * is answered as a transport error, from the loop, not inside s3_send.
 */
static void test_request_that_cannot_be_set_up_fails_from_the_loop(void **state)
{
	(void)state;
	struct loop l;
	loop_open(&l);
	loop_client(&l, "http://127.0.0.1:9");
	char *key = malloc(9001);
	if (!key)
		fail_msg("out of memory");
	memset(key, 'k', 9000);
	key[9000] = '\0';
	struct answer a = {0};
	struct s3_request req = {.what = "reading a huge key", .method = "GET", .key = key, .max_body = 1024};
	struct s3_call *call = s3_send(l.s3, &req, on_answer, &a);
	a.has_returned = true;
	free(key); /* copied by s3_send */
	if (!call)
		fail_msg("s3_send: expected a call, got NULL");
	if (a.has_come)
		fail_msg("s3_send: expected no callback inside the call, got one");
	if (!run_until(&l, &a.has_come, 5000))
		fail_msg("a request with a 9000-byte key: expected a callback within 5 s, got none");
	if (a.came_inside_send)
		fail_msg("expected the callback from the loop, got it inside s3_send");
	expect_int("is_transport_error", 1, a.is_transport_error);
	expect_int("status", 0, a.status);
	expect_int("callbacks", 1, a.calls);
	loop_close(&l);
}

/* stderr into a pipe read on the loop: the client's log lines tell when a try has failed. */
struct log_tap {
	int saved_stderr;
	int fds[2];
	struct event *ev;
	char text[8192];
	size_t len;
	bool has_retry;
	int retries;
};

static void on_log(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct log_tap *t = arg;
	ssize_t n = read(fd, t->text + t->len, sizeof t->text - 1 - t->len);
	if (n <= 0)
		return;
	t->len += (size_t)n;
	t->text[t->len] = '\0';
	t->retries = 0;
	for (const char *p = strstr(t->text, "retrying in"); p; p = strstr(p + 1, "retrying in"))
		t->retries++;
	t->has_retry = t->retries > 0;
}

static void log_tap_start(struct log_tap *t, struct event_base *base)
{
	memset(t, 0, sizeof *t);
	fflush(stderr);
	if (pipe(t->fds) != 0 || (t->saved_stderr = dup(STDERR_FILENO)) < 0 ||
	    dup2(t->fds[1], STDERR_FILENO) < 0 || evutil_make_socket_nonblocking(t->fds[0]) != 0 ||
	    !(t->ev = event_new(base, t->fds[0], EV_READ | EV_PERSIST, on_log, t)) ||
	    event_add(t->ev, NULL) != 0)
		fail_msg("cannot redirect stderr to a pipe");
}

static void log_tap_stop(struct log_tap *t)
{
	fflush(stderr);
	dup2(t->saved_stderr, STDERR_FILENO);
	close(t->saved_stderr);
	event_free(t->ev);
	close(t->fds[0]);
	close(t->fds[1]);
}

/*
 * A closed port: every try is a transport error, retried S3_TRIES (6) times
 * with backoff from 200 ms: at least 6.2 s to the final callback, too long
 * for a unit test. So: no callback inside s3_send; the first try fails and a
 * retry is scheduled; s3_cancel then stops it for good (no callback, no
 * further try, across the time the retry would have taken).
 */
static void test_closed_port_call_is_answered_from_the_loop_and_cancel_stops_it(void **state)
{
	(void)state;
	struct loop l;
	loop_open(&l);
	loop_client(&l, "http://127.0.0.1:9");
	struct log_tap tap;
	log_tap_start(&tap, l.base);
	struct answer a = {0};
	struct s3_request req = {
	    .what = "reading history", .method = "GET", .key = "chats/1.json", .max_body = 1024};
	struct s3_call *call = s3_send(l.s3, &req, on_answer, &a);
	a.has_returned = true;
	bool came_inside = a.has_come;
	bool has_retry = call && run_until(&l, &tap.has_retry, 5000);
	int retries_at_cancel = tap.retries;
	s3_cancel(call);
	/*
	 * The retry was due at most 300 ms after the failure was logged (200 ms
	 * and up to half more of jitter): proving it never comes takes waiting
	 * past that, bounded.
	 */
	bool never = false;
	run_until(&l, &never, 450);
	int retries_after = tap.retries;
	log_tap_stop(&tap);
	loop_close(&l);
	if (!call)
		fail_msg("s3_send: expected a call, got NULL");
	if (came_inside)
		fail_msg("s3_send to a closed port: expected no callback inside the call, got one");
	if (!has_retry)
		fail_msg(
		    "a closed port: expected a failed try and \"retrying in\" logged within 5 s, got none");
	if (a.has_come)
		fail_msg("after s3_cancel: expected no callback, got one (transport error %d)",
		         a.is_transport_error);
	if (retries_after != retries_at_cancel)
		fail_msg("after s3_cancel: expected no more tries, got %d more",
		         retries_after - retries_at_cancel);
}

/* ---- against a server: evhttp on 127.0.0.1 in this process ---- */

struct fake_s3 {
	struct evhttp *http;
	int port;
	int requests;
	int conditional_requests;
	int status;              /* answered to every request */
	const char *retry_after; /* a Retry-After header, or NULL */
	bool refuses_conditions; /* 501 to a request with If-None-Match or If-Match */
	char uri[256], method[8], sha[80], auth[512], condition[64];
};

static void on_fake_request(struct evhttp_request *req, void *arg)
{
	struct fake_s3 *f = arg;
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *sha = evhttp_find_header(in, "x-amz-content-sha256");
	const char *auth = evhttp_find_header(in, "Authorization");
	const char *cond = evhttp_find_header(in, "If-None-Match");
	if (!cond)
		cond = evhttp_find_header(in, "If-Match");
	f->requests++;
	snprintf(f->uri, sizeof f->uri, "%s", evhttp_request_get_uri(req));
	snprintf(f->method, sizeof f->method, "%s",
	         evhttp_request_get_command(req) == EVHTTP_REQ_PUT ? "PUT" : "GET");
	snprintf(f->sha, sizeof f->sha, "%s", sha ? sha : "");
	snprintf(f->auth, sizeof f->auth, "%s", auth ? auth : "");
	snprintf(f->condition, sizeof f->condition, "%s", cond ? cond : "");
	f->conditional_requests += cond != NULL;

	struct evbuffer *body = evbuffer_new();
	int status = f->status;
	if (cond && f->refuses_conditions)
		status = 501;
	evbuffer_add_printf(body, "<Error><Code>%s</Code><Message>try %d</Message></Error>",
	                    status == 200 ? "None" : "SlowDown", f->requests);
	if (f->retry_after)
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", f->retry_after);
	evhttp_send_reply(req, status, "Test", body);
	evbuffer_free(body);
}

static void fake_s3_start(struct fake_s3 *f, struct event_base *base)
{
	struct evhttp_bound_socket *sock;
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;
	if (!(f->http = evhttp_new(base)) ||
	    !(sock = evhttp_bind_socket_with_handle(f->http, "127.0.0.1", 0)) ||
	    getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&sin, &len) != 0)
		fail_msg("cannot start the fake S3 server on 127.0.0.1");
	evhttp_set_allowed_methods(f->http, EVHTTP_REQ_GET | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_gencb(f->http, on_fake_request, f);
	f->port = ntohs(sin.sin_port);
}

/* The SHA-256 of nothing: what x-amz-content-sha256 carries for a GET. */
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void test_throttled_request_is_tried_six_times_then_answered(void **state)
{
	(void)state;
	struct loop l;
	struct fake_s3 f = {.status = 503, .retry_after = "0"};
	char endpoint[64];
	loop_open(&l);
	fake_s3_start(&f, l.base);
	snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d/", f.port);
	loop_client(&l, endpoint);

	struct answer a = {0};
	struct s3_request req = {
	    .what = "reading history", .method = "GET", .key = "chats/a b+c.json", .max_body = 4096};
	struct log_tap tap;
	log_tap_start(&tap, l.base); /* the retries log warnings: keep them out of the test's output */
	struct s3_call *call = s3_send(l.s3, &req, on_answer, &a);
	a.has_returned = true;
	bool came = call && run_until(&l, &a.has_come, 5000);
	log_tap_stop(&tap);
	evhttp_free(f.http);
	loop_close(&l);
	if (!came)
		fail_msg("503 with Retry-After: 0: expected the final answer within 5 s, got none after %d "
		         "requests",
		         f.requests);
	if (a.came_inside_send)
		fail_msg("expected the callback from the loop, got it inside s3_send");
	expect_int("requests the server got (S3_TRIES)", 6, f.requests);
	expect_int("callbacks", 1, a.calls);
	expect_int("final status", 503, a.status);
	expect_int("is_transport_error", 0, a.is_transport_error);
	expect_str("final body: the last try's",
	           "<Error><Code>SlowDown</Code><Message>try 6</Message></Error>", a.body);
	/* Path-style, the key percent-encoded with '/' kept. */
	expect_str("request URI", "/bucket/chats/a%20b%2Bc.json", f.uri);
	expect_str("x-amz-content-sha256 of an empty body", EMPTY_SHA256, f.sha);
	if (strncmp(f.auth, "AWS4-HMAC-SHA256 Credential=test-key-id/", 40) != 0 ||
	    !strstr(f.auth, "/ru-central1/s3/aws4_request") || !strstr(f.auth, "x-amz-content-sha256"))
		fail_msg(
		    "Authorization: expected a SigV4 signature by test-key-id for ru-central1/s3 signing "
		    "x-amz-content-sha256, got \"%s\"",
		    f.auth);
	if (strstr(f.auth, "test-secret"))
		fail_msg("Authorization: expected no secret in it, got \"%s\"", f.auth);
}

/* A server without conditional writes (501) gets the write again without its condition, and from then on. */
static void test_501_to_a_condition_writes_without_it_from_then_on(void **state)
{
	(void)state;
	struct loop l;
	struct fake_s3 f = {.status = 200, .refuses_conditions = true};
	char endpoint[64];
	loop_open(&l);
	fake_s3_start(&f, l.base);
	snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", f.port);
	loop_client(&l, endpoint);
	expect_int("s3_has_conditions before any write", 1, s3_has_conditions(l.s3));

	struct log_tap tap;
	log_tap_start(&tap, l.base);
	struct answer a = {0}, b = {0};
	static const char text[] = "hello";
	char *body = strdup(text);
	struct s3_request req = {.what = "claiming an update",
	                         .method = "PUT",
	                         .key = "tgllm/updates/1.json",
	                         .body = body,
	                         .body_len = strlen(text),
	                         .condition = "If-None-Match: *",
	                         .max_body = 4096};
	struct s3_call *call = s3_send(l.s3, &req, on_answer, &a);
	a.has_returned = true;
	bool came = call && run_until(&l, &a.has_come, 5000);
	int conditional_first = f.conditional_requests, requests_first = f.requests;
	bool has_conditions = s3_has_conditions(l.s3);

	char *body2 = strdup(text);
	struct s3_request req2 = req;
	req2.body = body2;
	call = s3_send(l.s3, &req2, on_answer, &b);
	b.has_returned = true;
	bool came2 = call && run_until(&l, &b.has_come, 5000);
	log_tap_stop(&tap);
	evhttp_free(f.http);
	loop_close(&l);

	if (!came || !came2)
		fail_msg("conditional PUTs: expected two answers within 5 s each, got %d and %d", came,
		         came2);
	expect_int("first PUT: requests (501, then the write without condition)", 2, requests_first);
	expect_int("first PUT: requests with a condition", 1, conditional_first);
	expect_int("first PUT: final status", 200, a.status);
	expect_int("s3_has_conditions after a 501", 0, has_conditions);
	expect_int("second PUT: requests in all (no condition any more)", 3, f.requests);
	expect_int("requests with a condition in all", 1, f.conditional_requests);
	expect_int("second PUT: status", 200, b.status);
	expect_str("PUT method", "PUT", f.method);
}

static int global_setup(void **state)
{
	(void)state;
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static int global_teardown(void **state)
{
	(void)state;
	curl_global_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_xml_take_finds_the_first_element_and_moves_past_it),
	    cmocka_unit_test(test_xml_take_is_null_when_absent_or_unclosed),
	    cmocka_unit_test(test_xml_take_keeps_plain_text_and_empty_elements),
	    cmocka_unit_test(test_xml_take_decodes_the_five_entities),
	    cmocka_unit_test(test_xml_take_decodes_decimal_references_to_utf8),
	    cmocka_unit_test(test_xml_take_decodes_hex_references_to_utf8),
	    cmocka_unit_test(test_xml_take_keeps_unknown_and_malformed_references),
	    cmocka_unit_test(test_xml_take_keeps_surrogate_references_as_text),
	    cmocka_unit_test(test_xml_take_keeps_references_beyond_unicode_as_text),
	    cmocka_unit_test(test_xml_take_keeps_references_with_junk_in_the_number),
	    cmocka_unit_test(test_encoding_keeps_unreserved_characters),
	    cmocka_unit_test(test_encoding_keeps_slash_only_in_paths),
	    cmocka_unit_test(test_encoding_escapes_everything_else_in_upper_case_hex),
	    cmocka_unit_test(test_encoding_of_every_byte),
	    cmocka_unit_test(test_encoding_appends_and_respects_the_buffer_limit),
	    cmocka_unit_test(test_where_names_bucket_and_key),
	    cmocka_unit_test(test_request_that_cannot_be_set_up_fails_from_the_loop),
	    cmocka_unit_test(test_closed_port_call_is_answered_from_the_loop_and_cancel_stops_it),
	    cmocka_unit_test(test_throttled_request_is_tried_six_times_then_answered),
	    cmocka_unit_test(test_501_to_a_condition_writes_without_it_from_then_on),
	};
	return cmocka_run_group_tests(tests, global_setup, global_teardown);
}
