/*
 * Unit tests for src/ingress/httpd.c: the request head parser, and the
 * listener pausing when accept() fails instead of retrying at every turn of
 * the loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "expect.h"
#include "ingress/httpd.h"
#include "loop.h"

static int parse(const char *text, struct http_head *h, char *copy, size_t size)
{
	snprintf(copy, size, "%s", text);
	return http_head_parse(copy, strlen(copy), h);
}

static void test_a_webhook_post_is_read(void **state)
{
	(void)state;
	struct http_head h;
	char buf[512];
	expect_int("status", 0,
	           parse("POST /hook?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length:  42 \r\n"
	                 "X-Telegram-Bot-Api-Secret-Token: s3cret",
	                 &h, buf, sizeof buf));
	expect_str("method", "POST", h.method);
	expect_str("path without the query", "/hook", h.path);
	expect_int("content length", 42, (int)h.content_length);
	expect_int("fields", 3, (int)h.n_fields);
	expect_str("a field's value, trimmed", "s3cret", h.fields[2].value);
	expect_int("keep-alive by default in 1.1", 0, h.wants_close);
}

static void test_connection_close_and_http_1_0(void **state)
{
	(void)state;
	struct http_head h;
	char buf[512];
	expect_int("status", 0,
	           parse("GET / HTTP/1.1\r\nConnection: keep-alive, Close", &h, buf, sizeof buf));
	expect_int("close asked", 1, h.wants_close);
	expect_int("status", 0, parse("GET / HTTP/1.0", &h, buf, sizeof buf));
	expect_int("1.0 closes by default", 1, h.wants_close);
	expect_int("status", 0, parse("GET / HTTP/1.0\r\nConnection: keep-alive", &h, buf, sizeof buf));
	expect_int("1.0 keep-alive asked", 0, h.wants_close);
}

static void test_bad_heads_are_refused(void **state)
{
	(void)state;
	static const struct {
		const char *head;
		int status;
	} cases[] = {
	    {"", 400},
	    {"GET", 400},
	    {"GET /", 400},
	    {"GET  / HTTP/1.1", 400},
	    {"GET / HTTP/1.1 extra", 400},
	    {"GET http://a/ HTTP/1.1", 400},
	    {"G(T / HTTP/1.1", 400},
	    {"GET / HTTP/2.0", 505},
	    {"GET / FTP/1.1", 400},
	    {"GET / HTTP/1.1\r\nNo-Colon", 400},
	    {"GET / HTTP/1.1\r\n: empty name", 400},
	    {"GET / HTTP/1.1\r\nName : space before the colon", 400},
	    {"GET / HTTP/1.1\r\nA: b\r\n folded", 400},
	    {"POST / HTTP/1.1\r\nContent-Length: 1x", 400},
	    {"POST / HTTP/1.1\r\nContent-Length: -1", 400},
	    {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999", 400},
	    {"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2", 400},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct http_head h;
		char buf[256];
		char what[300];
		snprintf(what, sizeof what, "status for %s", cases[i].head);
		expect_int(what, cases[i].status, parse(cases[i].head, &h, buf, sizeof buf));
	}
	/* A NUL inside the head. */
	char nul[] = "GET / HTTP/1.1\r\nA: b\0c";
	struct http_head h;
	expect_int("status for a NUL byte", 400, http_head_parse(nul, sizeof nul - 1, &h));
	/* More fields than kept. */
	char many[8192] = "GET / HTTP/1.1";
	for (int i = 0; i < 70; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many), "\r\nF%d: v", i);
	expect_int("status for 70 fields", 431, http_head_parse(many, strlen(many), &h));
}

/* --- the listener when accept() fails --------------------------------------- */

static void answer(void *arg, struct httpd_request *req)
{
	(void)arg;
	httpd_reply(req, 200, "ok", NULL);
}

static void on_elapsed(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(bool *)arg = true;
}

/* Reads the client's answer once it is there (WAIT_FOR evaluates its condition again). */
static bool client_has_answer(int fd, char *got, size_t size)
{
	if (got[0])
		return true;
	ssize_t n = recv(fd, got, size - 1, MSG_DONTWAIT);
	if (n <= 0)
		return false;
	got[n] = '\0';
	return true;
}

static void test_failing_accepts_pause_the_listener_instead_of_spinning(void **state)
{
	(void)state;
	struct test_loop loop;
	assert_int_equal(test_loop_init(&loop, TEST_LOOP_BUDGET_S), 0);
	struct httpd_options o = {
	    .host = "127.0.0.1", .max_head = 1024, .max_body = 1024, .deadline_s = 5, .max_connections = 16};
	struct httpd *h = httpd_new(loop.base, &o, answer, NULL);
	assert_non_null(h);
	bool is_loopback = false;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	sa.sin_port = htons((uint16_t)httpd_port(h, &is_loopback));
	expect_int("loopback", 1, is_loopback);
	int client = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(client >= 0);
	assert_int_equal(connect(client, (struct sockaddr *)&sa, sizeof sa), 0); /* in the backlog */
	const char request[] = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
	assert_int_equal(send(client, request, sizeof request - 1, 0), (ssize_t)(sizeof request - 1));

	/* No file descriptor left for accept(): the lowest free one is the limit. */
	int lowest = dup(0);
	assert_true(lowest >= 0);
	close(lowest);
	struct rlimit saved;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	struct rlimit tight = {(rlim_t)lowest, saved.rlim_max};
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &tight), 0);
	bool has_elapsed = false;
	struct event *t = evtimer_new(loop.base, on_elapsed, &has_elapsed);
	struct timeval quarter = {0, 300000};
	evtimer_add(t, &quarter);
	int turns = 0;
	while (!has_elapsed && test_loop_turn(&loop))
		turns++;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
	if (turns > 10)
		fail_msg("expected the loop to wait while accept() fails; it turned %d times in 0.3 s",
		         turns);

	/* With descriptors again, the waiting client is served after the pause. */
	char got[256] = "";
	WAIT_FOR(&loop, client_has_answer(client, got, sizeof got), "the answer once accept() works again");
	if (strncmp(got, "HTTP/1.1 200 OK\r\n", 17) != 0)
		fail_msg("expected a 200, got %s", got);
	close(client);
	event_free(t);
	httpd_free(h);
	test_loop_free(&loop);
}

int main(void)
{
	test_net_init();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_webhook_post_is_read),
	    cmocka_unit_test(test_connection_close_and_http_1_0),
	    cmocka_unit_test(test_bad_heads_are_refused),
	    cmocka_unit_test(test_failing_accepts_pause_the_listener_instead_of_spinning),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	test_net_cleanup();
	return failed;
}
