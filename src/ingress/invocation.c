#include "ingress/invocation.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/base64.h"

static const char *header(const json_t *headers, const char *name)
{
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)headers, key, value) {
		if (strcasecmp(key, name) == 0) {
			/* multiValueHeaders hold arrays; the first value counts. */
			if (json_is_array(value))
				value = json_array_get(value, 0);
			return json_string_value(value);
		}
	}
	return NULL;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

int invocation_parse(const char *input, size_t len, struct invocation *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	json_error_t jerr;
	json_t *ev = json_loadb(input, len, 0, &jerr);
	if (!json_is_object(ev)) {
		snprintf(err, errlen, "the event is not a JSON object (%s)", ev ? "other JSON" : jerr.text);
		json_decref(ev);
		return -1;
	}
	if (json_is_integer(json_object_get(ev, "update_id"))) {
		/* Not strndup: body_len bytes must be there even past a NUL byte jansson let by. */
		json_decref(ev);
		if (!(out->body = malloc(len + 1))) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		memcpy(out->body, input, len);
		out->body[len] = '\0';
		out->body_len = len;
		return 0;
	}

	const json_t *method = json_object_get(ev, "httpMethod");
	if (!method)
		method = json_object_get(json_object_get(json_object_get(ev, "requestContext"), "http"), "method");
	const json_t *body = json_object_get(ev, "body");
	if (!json_is_string(method) && !json_is_string(body)) {
		snprintf(err, errlen, "the event is neither an HTTP event nor a Telegram Update");
		json_decref(ev);
		return -1;
	}
	out->is_http = true;
	out->method = dup_or_null(json_string_value(method));
	const char *secret = header(json_object_get(ev, "headers"), "X-Telegram-Bot-Api-Secret-Token");
	if (!secret)
		secret = header(json_object_get(ev, "multiValueHeaders"), "X-Telegram-Bot-Api-Secret-Token");
	out->secret = dup_or_null(secret);

	const char *text = json_is_string(body) ? json_string_value(body) : "";
	size_t text_len = json_is_string(body) ? json_string_length(body) : 0;
	int rc = 0;
	if (json_is_true(json_object_get(ev, "isBase64Encoded"))) {
		if (!(out->body = base64_decode(text, text_len, &out->body_len))) {
			snprintf(err, errlen, "the event's body is not valid base64");
			rc = -1;
		}
	} else if ((out->body = malloc(text_len + 1))) {
		memcpy(out->body, text, text_len);
		out->body[text_len] = '\0';
		out->body_len = text_len;
	}
	if (rc == 0 && (!out->body || (method && !out->method) || (secret && !out->secret))) {
		snprintf(err, errlen, "out of memory");
		rc = -1;
	}
	json_decref(ev);
	if (rc != 0)
		invocation_clear(out);
	return rc;
}

void invocation_clear(struct invocation *inv)
{
	free(inv->method);
	free(inv->secret);
	free(inv->body);
	memset(inv, 0, sizeof *inv);
}

char *invocation_response(int status, const char *text)
{
	json_t *r = json_pack("{s:i, s:{s:s}, s:s, s:b}", "statusCode", status, "headers", "Content-Type",
			      "text/plain; charset=utf-8", "body", text, "isBase64Encoded", 0);
	char *s = r ? json_dumps(r, JSON_COMPACT) : NULL;
	json_decref(r);
	return s;
}
