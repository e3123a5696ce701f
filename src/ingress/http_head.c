#include "ingress/http_head.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool has_token(const char *list, const char *token)
{
	size_t n = strlen(token);
	for (const char *p = list; *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		size_t len = strcspn(p, ", \t");
		if (len == n && strncasecmp(p, token, n) == 0)
			return true;
		p += len;
	}
	return false;
}

static int parse_field(struct http_head *out, char *line)
{
	char *colon = strchr(line, ':');
	if (!colon || colon == line)
		return 400;
	for (char *p = line; p < colon; p++)
		if (!is_tchar((unsigned char)*p))
			return 400; /* obs-fold, or space before the colon */
	*colon = '\0';
	char *value = colon + 1;
	value += strspn(value, " \t");
	size_t len = strlen(value);
	while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
		value[--len] = '\0';
	if (out->n_fields == HTTP_HEAD_MAX_FIELDS)
		return 431;
	out->fields[out->n_fields].name = line;
	out->fields[out->n_fields++].value = value;

	if (strcasecmp(line, "Content-Length") == 0) {
		if (!*value || strspn(value, "0123456789") != len || len > 15)
			return 400;
		long long n = strtoll(value, NULL, 10);
		if (out->content_length >= 0 && out->content_length != n)
			return 400;
		out->content_length = n;
	} else if (strcasecmp(line, "Transfer-Encoding") == 0) {
		out->has_transfer_encoding = true;
	} else if (strcasecmp(line, "Connection") == 0) {
		if (has_token(value, "close"))
			out->wants_close = true;
		else if (out->minor == 0 && has_token(value, "keep-alive"))
			out->wants_close = false;
	} else if (strcasecmp(line, "Expect") == 0) {
		out->expects_continue = strcasecmp(value, "100-continue") == 0;
	}
	return 0;
}

int http_head_parse(char *head, size_t len, struct http_head *out)
{
	*out = (struct http_head){.content_length = -1};
	if (strlen(head) != len)
		return 400; /* a NUL byte */
	char *end = strstr(head, "\r\n");
	char *line = head;
	if (end)
		*end = '\0';
	/* The request line: METHOD SP target SP HTTP/1.x */
	char *sp1 = strchr(line, ' ');
	char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	if (!sp1 || !sp2 || sp1 == line || sp1 - line > 16 || strchr(sp2 + 1, ' '))
		return 400;
	*sp1 = *sp2 = '\0';
	for (char *p = line; *p; p++)
		if (!is_tchar((unsigned char)*p))
			return 400;
	char *target = sp1 + 1, *version = sp2 + 1;
	if (target[0] != '/')
		return 400;
	target[strcspn(target, "?#")] = '\0';
	if (strncmp(version, "HTTP/", 5) != 0)
		return 400;
	if (strcmp(version + 5, "1.1") == 0)
		out->minor = 1;
	else if (strcmp(version + 5, "1.0") == 0)
		out->minor = 0;
	else
		return 505;
	out->method = line;
	out->path = target;
	out->wants_close = out->minor == 0;
	while (end) {
		line = end + 2;
		end = strstr(line, "\r\n");
		if (end)
			*end = '\0';
		int status = parse_field(out, line);
		if (status)
			return status;
	}
	return 0;
}
