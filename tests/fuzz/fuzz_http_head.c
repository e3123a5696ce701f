/*
 * libFuzzer target for http_head_parse (src/ingress/http_head.c): any bytes
 * as the head of a request to the webhook server. What it accepts must hold
 * together: a method of token characters, a path starting with '/', fields
 * within the array, and a Content-Length that is a count.
 */
#include "ingress/http_head.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *head = malloc(size + 1);
	if (!head)
		return 0;
	memcpy(head, data, size);
	head[size] = '\0';
	struct http_head h;
	int status = http_head_parse(head, size, &h);
	if (status == 0) {
		if (!h.method || !*h.method || !h.path || h.path[0] != '/' || strpbrk(h.path, "?# "))
			abort();
		if (h.n_fields > HTTP_HEAD_MAX_FIELDS || h.content_length < -1 ||
		    (h.minor != 0 && h.minor != 1))
			abort();
		for (size_t i = 0; i < h.n_fields; i++)
			if (!*h.fields[i].name || strchr(h.fields[i].name, ':') ||
			    strstr(h.fields[i].value, "\r\n"))
				abort();
	} else if (status < 400 || status > 599) {
		abort();
	}
	free(head);
	return 0;
}
