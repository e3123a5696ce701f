/*
 * invocation: the events serverless platforms hand a function, and the
 * response they expect back.
 *
 * Understood: Yandex Cloud Functions HTTP events (direct invocation, and API
 * Gateway payload 0.1 and 1.0: "httpMethod", "headers", "body",
 * "isBase64Encoded"), AWS Lambda Function URL / API Gateway v2.0 events
 * ("requestContext.http.method"), and a bare Telegram Update (Yandex's
 * ?integration=raw). Header names match case-insensitively.
 */
#ifndef TGLLM_INVOCATION_H
#define TGLLM_INVOCATION_H

#include <stdbool.h>
#include <stddef.h>

struct invocation {
	bool is_http;  /* an HTTP event; false for a bare Update */
	char *method;  /* "POST", ...; NULL when the event does not say */
	char *secret;  /* the X-Telegram-Bot-Api-Secret-Token header; NULL when absent */
	char *body;    /* the request body, base64-decoded if need be; owned, NUL-terminated */
	size_t body_len;
};

/* -1 with a reason in err when input is none of the events above. */
int invocation_parse(const char *input, size_t len, struct invocation *out, char *err, size_t errlen);
void invocation_clear(struct invocation *inv);
/* {"statusCode":status,"headers":{...},"body":text,"isBase64Encoded":false}; malloc'd, NULL on OOM. */
char *invocation_response(int status, const char *text);

#endif
