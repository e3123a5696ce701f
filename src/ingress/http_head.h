/* http_head: reading an HTTP/1.x request head (RFC 9112) in place, for httpd. */
#ifndef TGLLM_HTTP_HEAD_H
#define TGLLM_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_HEAD_MAX_FIELDS 64

/* A request head; its strings point into the text it was read from. */
struct http_head {
	const char *method, *path; /* path: the target without its query */
	int minor;                 /* HTTP/1.minor */
	long long content_length;  /* -1: none */
	bool has_transfer_encoding;
	bool wants_close; /* Connection: close, or HTTP/1.0 without keep-alive */
	bool expects_continue;
	size_t n_fields;
	struct {
		const char *name, *value;
	} fields[HTTP_HEAD_MAX_FIELDS];
};

/*
 * Reads the request line and header lines (up to the empty line, without
 * it): head holds len bytes and a NUL after them, and is cut in place, so it
 * must outlive out. Returns 0, or the 4xx/5xx status to refuse it with.
 */
int http_head_parse(char *head, size_t len, struct http_head *out);

#endif
