/*
 * Unit tests for src/invocation.c: the events serverless platforms hand
 * `tgllm handle` (Yandex Cloud Functions HTTP events, API Gateway payload
 * 0.1/1.0, AWS Function URL / API Gateway v2.0, a bare Update) and the
 * response JSON printed back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ingress/invocation.h"

#define UPDATE                                                                                               \
	"{\"update_id\":7,\"message\":{\"message_id\":1,\"date\":1,\"chat\":{\"id\":5,\"type\":\"private\"}" \
	"}}"
/* UPDATE as a JSON string literal inside an event. */
#define UPDATE_IN_JSON                                                                                       \
	"{\\\"update_id\\\":7,\\\"message\\\":{\\\"message_id\\\":1,\\\"date\\\":1,\\\"chat\\\":{"           \
	"\\\"id\\\":5,"                                                                                      \
	"\\\"type\\\":\\\"private\\\"}}}"

#include "expect.h"

static void parse_ok(const char *event, struct invocation *inv)
{
	char err[256] = "";
	if (invocation_parse(event, strlen(event), inv, err, sizeof err) != 0)
		fail_msg("invocation_parse: expected success, got error \"%s\" for %s", err, event);
	if (!inv->body)
		fail_msg("invocation_parse: expected a body (at least \"\"), got NULL for %s", event);
	if (inv->body[inv->body_len] != '\0')
		fail_msg("invocation_parse: expected the body to be NUL-terminated at body_len %zu",
		         inv->body_len);
}

/* The body is exactly these len bytes. */
static void expect_body(const struct invocation *inv, const char *want, size_t len)
{
	if (inv->body_len != len || memcmp(inv->body, want, len) != 0)
		fail_msg("body: expected %zu bytes \"%.*s\", got %zu bytes \"%.*s\"", len, (int)len, want,
		         inv->body_len, (int)inv->body_len, inv->body);
}

static void expect_parse_error(const char *input, size_t len, const char *want_reason)
{
	struct invocation inv;
	char err[256] = "";
	memset(&inv, 0xAB, sizeof inv); /* whatever was there before */
	if (invocation_parse(input, len, &inv, err, sizeof err) != -1)
		fail_msg("invocation_parse: expected -1 for \"%.*s\"", (int)len, input);
	if (!strstr(err, want_reason))
		fail_msg("invocation_parse: expected a reason containing \"%s\" for \"%.*s\", got \"%s\"",
		         want_reason, (int)len, input, err);
	if (inv.body || inv.method || inv.secret || inv.is_http || inv.body_len)
		fail_msg("invocation_parse: expected a cleared invocation after an error for \"%.*s\"",
		         (int)len, input);
	invocation_clear(&inv); /* safe on a cleared invocation */
}

/* ---- event shapes ------------------------------------------------------- */

static void test_bare_update_is_the_body_itself(void **state)
{
	(void)state;
	struct invocation inv;
	parse_ok(UPDATE, &inv);
	if (inv.is_http)
		fail_msg("is_http: expected false for a bare Update (Yandex ?integration=raw)");
	expect_null("method", inv.method);
	expect_null("secret", inv.secret);
	expect_body(&inv, UPDATE, strlen(UPDATE));
	invocation_clear(&inv);
}

/* jansson lets a NUL byte by after a number: the body must still be all len bytes (found by fuzz_invocation). */
static void test_bare_update_with_a_nul_byte_is_the_body_itself(void **state)
{
	(void)state;
	static const char event[] = "{\"update_id\":5,\"message\":{\"message_id\":1,\"chat\":{\"id\":1,"
	                            "\"type\":\"private\"},\"date\":14\0,\"text\":\"x\"}}";
	struct invocation inv;
	char err[256] = "";
	if (invocation_parse(event, sizeof event - 1, &inv, err, sizeof err) != 0)
		return; /* a jansson that refuses it is as good */
	expect_body(&inv, event, sizeof event - 1);
	if (inv.body[inv.body_len] != '\0')
		fail_msg("expected the body NUL-terminated at body_len %zu", inv.body_len);
	invocation_clear(&inv);
}

static void test_yandex_function_http_event(void **state)
{
	(void)state;
	/* As Yandex Cloud Functions hands a direct HTTP invocation. */
	const char *event =
	    "{\"httpMethod\":\"POST\",\"url\":\"\",\"params\":{},\"pathParams\":{},"
	    "\"headers\":{\"Accept-Encoding\":\"gzip, deflate\",\"Content-Length\":\"90\","
	    "\"Content-Type\":\"application/json\",\"X-Telegram-Bot-Api-Secret-Token\":\"s3cret-Token_1\"},"
	    "\"multiValueHeaders\":{\"Content-Type\":[\"application/json\"],"
	    "\"X-Telegram-Bot-Api-Secret-Token\":[\"s3cret-Token_1\"]},"
	    "\"queryStringParameters\":{},\"multiValueQueryStringParameters\":{},"
	    "\"requestContext\":{\"identity\":{\"sourceIp\":\"91.108.6.1\",\"userAgent\":\"\"},"
	    "\"httpMethod\":\"POST\",\"requestId\":\"5bb0bd1d\",\"requestTime\":\"1/Jan/2024:00:00:00 "
	    "+0000\","
	    "\"requestTimeEpoch\":1704067200},"
	    "\"body\":\"" UPDATE_IN_JSON "\",\"isBase64Encoded\":false}";
	struct invocation inv;
	parse_ok(event, &inv);
	if (!inv.is_http)
		fail_msg("is_http: expected true for a Yandex HTTP event");
	expect_str("method", "POST", inv.method);
	expect_str("secret", "s3cret-Token_1", inv.secret);
	expect_body(&inv, UPDATE, strlen(UPDATE));
	invocation_clear(&inv);
}

static void test_yandex_api_gateway_payload_1_0(void **state)
{
	(void)state;
	const char *event =
	    "{\"version\":\"1.0\",\"resource\":\"/hook\",\"path\":\"/hook\",\"httpMethod\":\"POST\","
	    "\"headers\":{\"content-type\":\"application/json\"},"
	    "\"multiValueHeaders\":{\"content-type\":[\"application/json\"],"
	    "\"x-telegram-bot-api-secret-token\":[\"gw-secret\"]},"
	    "\"queryStringParameters\":null,\"multiValueQueryStringParameters\":null,"
	    "\"requestContext\":{\"httpMethod\":\"POST\",\"path\":\"/hook\",\"stage\":\"$default\"},"
	    "\"pathParameters\":null,\"stageVariables\":null,"
	    "\"body\":\"" UPDATE_IN_JSON "\",\"isBase64Encoded\":false}";
	struct invocation inv;
	parse_ok(event, &inv);
	expect_str("method", "POST", inv.method);
	expect_str("secret (only in multiValueHeaders)", "gw-secret", inv.secret);
	expect_body(&inv, UPDATE, strlen(UPDATE));
	invocation_clear(&inv);
}

static void test_aws_function_url_v2_event(void **state)
{
	(void)state;
	const char *event =
	    "{\"version\":\"2.0\",\"routeKey\":\"$default\",\"rawPath\":\"/\",\"rawQueryString\":\"\","
	    "\"headers\":{\"content-type\":\"application/json\",\"host\":\"abc.lambda-url.eu-west-1.on.aws\","
	    "\"x-telegram-bot-api-secret-token\":\"aws-secret\",\"x-forwarded-proto\":\"https\"},"
	    "\"requestContext\":{\"accountId\":\"anonymous\",\"apiId\":\"abc\",\"domainName\":\"abc.lambda-"
	    "url."
	    "eu-west-1.on.aws\",\"http\":{\"method\":\"POST\",\"path\":\"/\",\"protocol\":\"HTTP/1.1\","
	    "\"sourceIp\":\"91.108.6.1\",\"userAgent\":\"\"},\"requestId\":\"r1\",\"routeKey\":\"$default\","
	    "\"stage\":\"$default\",\"time\":\"01/Jan/2024:00:00:00 +0000\",\"timeEpoch\":1704067200000},"
	    "\"body\":\"" UPDATE_IN_JSON "\",\"isBase64Encoded\":false}";
	struct invocation inv;
	parse_ok(event, &inv);
	if (!inv.is_http)
		fail_msg("is_http: expected true for an AWS v2.0 event");
	expect_str("method (requestContext.http.method)", "POST", inv.method);
	expect_str("secret", "aws-secret", inv.secret);
	expect_body(&inv, UPDATE, strlen(UPDATE));
	invocation_clear(&inv);
}

static void test_aws_v2_get_reports_the_method(void **state)
{
	(void)state;
	struct invocation inv;
	parse_ok(
	    "{\"version\":\"2.0\",\"rawPath\":\"/\",\"headers\":{},"
	    "\"requestContext\":{\"http\":{\"method\":\"GET\",\"path\":\"/\"}},\"isBase64Encoded\":false}",
	    &inv);
	if (!inv.is_http)
		fail_msg("is_http: expected true for an AWS v2.0 GET without a body");
	expect_str("method", "GET", inv.method);
	expect_null("secret", inv.secret);
	expect_body(&inv, "", 0);
	invocation_clear(&inv);
}

static void test_yandex_get_without_body(void **state)
{
	(void)state;
	struct invocation inv;
	parse_ok("{\"httpMethod\":\"GET\",\"headers\":{},\"body\":\"\",\"isBase64Encoded\":false}", &inv);
	expect_str("method", "GET", inv.method);
	expect_body(&inv, "", 0);
	invocation_clear(&inv);
	parse_ok("{\"httpMethod\":\"PUT\",\"headers\":{}}", &inv);
	expect_str("method", "PUT", inv.method);
	expect_body(&inv, "", 0);
	invocation_clear(&inv);
}

static void test_event_with_body_but_no_method(void **state)
{
	(void)state;
	/* Some gateways leave the method out; the body still counts. */
	struct invocation inv;
	parse_ok("{\"headers\":{},\"body\":\"" UPDATE_IN_JSON "\"}", &inv);
	if (!inv.is_http)
		fail_msg("is_http: expected true for an event with a body");
	expect_null("method", inv.method);
	expect_body(&inv, UPDATE, strlen(UPDATE));
	invocation_clear(&inv);
}

/* ---- headers ------------------------------------------------------------ */

static void test_secret_header_name_is_case_insensitive(void **state)
{
	(void)state;
	static const char *const names[] = {
	    "X-Telegram-Bot-Api-Secret-Token", "x-telegram-bot-api-secret-token",
	    "X-TELEGRAM-BOT-API-SECRET-TOKEN", "x-Telegram-BOT-api-Secret-token"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		char event[512];
		snprintf(event, sizeof event,
		         "{\"httpMethod\":\"POST\",\"headers\":{\"Content-Type\":\"application/"
		         "json\",\"%s\":\"tok-%zu\"},"
		         "\"body\":\"{}\"}",
		         names[i], i);
		char want[16];
		snprintf(want, sizeof want, "tok-%zu", i);
		struct invocation inv;
		parse_ok(event, &inv);
		if (!inv.secret || strcmp(inv.secret, want) != 0)
			fail_msg("secret with header name %s: expected \"%s\", got \"%s\"", names[i], want,
			         inv.secret ? inv.secret : "(NULL)");
		invocation_clear(&inv);
	}
}

static void test_secret_from_multi_value_headers_takes_the_first_value(void **state)
{
	(void)state;
	struct invocation inv;
	parse_ok("{\"httpMethod\":\"POST\",\"headers\":{},"
	         "\"multiValueHeaders\":{\"X-Telegram-Bot-Api-Secret-Token\":[\"first\",\"second\"]},"
	         "\"body\":\"{}\"}",
	         &inv);
	expect_str("secret", "first", inv.secret);
	invocation_clear(&inv);
}

static void test_headers_win_over_multi_value_headers(void **state)
{
	(void)state;
	struct invocation inv;
	parse_ok("{\"httpMethod\":\"POST\",\"headers\":{\"x-telegram-bot-api-secret-token\":\"single\"},"
	         "\"multiValueHeaders\":{\"X-Telegram-Bot-Api-Secret-Token\":[\"multi\"]},\"body\":\"{}\"}",
	         &inv);
	expect_str("secret", "single", inv.secret);
	invocation_clear(&inv);
}

static void test_missing_secret_header_is_null(void **state)
{
	(void)state;
	struct invocation inv;
	parse_ok("{\"httpMethod\":\"POST\",\"headers\":{\"X-Telegram-Bot-Api-Secret\":\"near-miss\"},"
	         "\"multiValueHeaders\":{\"Content-Type\":[\"application/json\"]},\"body\":\"{}\"}",
	         &inv);
	expect_null("secret (no such header)", inv.secret);
	invocation_clear(&inv);
	parse_ok("{\"httpMethod\":\"POST\",\"headers\":null,\"multiValueHeaders\":null,\"body\":\"{}\"}",
	         &inv);
	expect_null("secret (null headers)", inv.secret);
	invocation_clear(&inv);
	parse_ok("{\"httpMethod\":\"POST\",\"body\":\"{}\"}", &inv);
	expect_null("secret (no headers at all)", inv.secret);
	invocation_clear(&inv);
}

/* ---- base64 bodies -------------------------------------------------------- */

/* A body of three '?' and three '>': its base64 has '/' and '+' (URL-safe: '_' and '-'). */
#define B64_BODY "{\"update_id\":7,\"t\":\"?\?\?>>>\"}"

static void expect_base64_body(const char *encoded, const char *want, size_t want_len)
{
	char event[512];
	snprintf(event, sizeof event,
	         "{\"httpMethod\":\"POST\",\"headers\":{},\"body\":\"%s\",\"isBase64Encoded\":true}",
	         encoded);
	struct invocation inv;
	parse_ok(event, &inv);
	if (inv.body_len != want_len || memcmp(inv.body, want, want_len) != 0)
		fail_msg("base64 body \"%s\": expected %zu bytes \"%.*s\", got %zu bytes \"%.*s\"", encoded,
		         want_len, (int)want_len, want, inv.body_len, (int)inv.body_len, inv.body);
	invocation_clear(&inv);
}

static void test_base64_standard_with_padding(void **state)
{
	(void)state;
	expect_base64_body("eyJ1cGRhdGVfaWQiOjcsInQiOiI/Pz8+Pj4ifQ==", B64_BODY, strlen(B64_BODY));
	expect_base64_body("eyJ1IjoxfQ==", "{\"u\":1}", 7);
}

static void test_base64_standard_without_padding(void **state)
{
	(void)state;
	expect_base64_body("eyJ1cGRhdGVfaWQiOjcsInQiOiI/Pz8+Pj4ifQ", B64_BODY, strlen(B64_BODY));
	expect_base64_body("eyJ1IjoxfQ", "{\"u\":1}", 7);
}

static void test_base64_url_safe_with_and_without_padding(void **state)
{
	(void)state;
	expect_base64_body("eyJ1cGRhdGVfaWQiOjcsInQiOiI_Pz8-Pj4ifQ==", B64_BODY, strlen(B64_BODY));
	expect_base64_body("eyJ1cGRhdGVfaWQiOjcsInQiOiI_Pz8-Pj4ifQ", B64_BODY, strlen(B64_BODY));
}

static void test_base64_with_line_breaks(void **state)
{
	(void)state;
	/* MIME-style line breaks (as JSON escapes) are ignored. */
	expect_base64_body("eyJ1cGRhdGVfaWQiOjcs\\r\\nInQiOiI/Pz8+Pj4ifQ==\\n", B64_BODY, strlen(B64_BODY));
}

static void test_base64_body_may_hold_a_nul_byte(void **state)
{
	(void)state;
	/* "a\0b": body_len counts every byte, not up to the NUL. */
	expect_base64_body("YQBi", "a\0b", 3);
}

static void test_base64_empty_body(void **state)
{
	(void)state;
	expect_base64_body("", "", 0);
}

static void test_body_not_marked_base64_is_taken_literally(void **state)
{
	(void)state;
	struct invocation inv;
	parse_ok("{\"httpMethod\":\"POST\",\"body\":\"eyJ1IjoxfQ==\",\"isBase64Encoded\":false}", &inv);
	expect_body(&inv, "eyJ1IjoxfQ==", 12);
	invocation_clear(&inv);
	parse_ok("{\"httpMethod\":\"POST\",\"body\":\"eyJ1IjoxfQ==\"}", &inv);
	expect_body(&inv, "eyJ1IjoxfQ==", 12);
	invocation_clear(&inv);
}

static void test_aws_v2_base64_body(void **state)
{
	(void)state;
	struct invocation inv;
	parse_ok("{\"version\":\"2.0\",\"rawPath\":\"/\",\"headers\":{\"content-type\":\"application/json\"},"
	         "\"requestContext\":{\"http\":{\"method\":\"POST\"}},"
	         "\"body\":\"eyJ1cGRhdGVfaWQiOjcsInQiOiI/Pz8+Pj4ifQ==\",\"isBase64Encoded\":true}",
	         &inv);
	expect_str("method", "POST", inv.method);
	expect_body(&inv, B64_BODY, strlen(B64_BODY));
	invocation_clear(&inv);
}

static void test_body_with_unicode_escapes_is_utf8(void **state)
{
	(void)state;
	struct invocation inv;
	parse_ok("{\"httpMethod\":\"POST\",\"body\":\"\\u041f\\u0440\\u0438\\u0432\\u0435\\u0442 "
	         "\\ud83d\\ude00\"}",
	         &inv);
	expect_body(&inv, "Привет 😀", strlen("Привет 😀"));
	invocation_clear(&inv);
}

/* ---- bad input ------------------------------------------------------------ */

static void test_bad_input_is_refused_with_a_reason(void **state)
{
	(void)state;
	expect_parse_error("", strlen(""), "JSON");
	expect_parse_error("not json at all", strlen("not json at all"), "JSON");
	expect_parse_error("{\"httpMethod\":\"POST\",", strlen("{\"httpMethod\":\"POST\","), "JSON");
	expect_parse_error("[1,2,3]", strlen("[1,2,3]"), "not a JSON object");
	expect_parse_error("\"a string\"", strlen("\"a string\""), "not a JSON object");
	expect_parse_error("42", strlen("42"), "not a JSON object");
	expect_parse_error("null", strlen("null"), "not a JSON object");
	expect_parse_error("{}", strlen("{}"), "neither");
	expect_parse_error("{\"foo\":1,\"headers\":{}}", strlen("{\"foo\":1,\"headers\":{}}"), "neither");
	/* A string or fractional update_id is no Update. */
	expect_parse_error("{\"update_id\":\"7\",\"message\":{}}",
	                   strlen("{\"update_id\":\"7\",\"message\":{}}"), "neither");
	expect_parse_error("{\"update_id\":7.5}", strlen("{\"update_id\":7.5}"), "neither");
	/* Method and body of the wrong types. */
	expect_parse_error("{\"httpMethod\":1,\"body\":2}", strlen("{\"httpMethod\":1,\"body\":2}"),
	                   "neither");
}

static void test_invalid_base64_is_refused(void **state)
{
	(void)state;
	const char *bad[] = {
	    "{\"httpMethod\":\"POST\",\"body\":\"not base64!\",\"isBase64Encoded\":true}",
	    "{\"httpMethod\":\"POST\",\"body\":\"eyJ1Ijox*Q==\",\"isBase64Encoded\":true}",
	    "{\"httpMethod\":\"POST\",\"body\":\"{\\\"update_id\\\":1}\",\"isBase64Encoded\":true}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		expect_parse_error(bad[i], strlen(bad[i]), "base64");
}

static void test_only_len_bytes_are_read(void **state)
{
	(void)state;
	/* The input need not be NUL-terminated: what follows len is not part of it. */
	const char input[] = UPDATE "garbage that would make it invalid";
	struct invocation inv;
	char err[256] = "";
	if (invocation_parse(input, strlen(UPDATE), &inv, err, sizeof err) != 0)
		fail_msg("invocation_parse: expected success on the first %zu bytes, got \"%s\"",
		         strlen(UPDATE), err);
	expect_body(&inv, UPDATE, strlen(UPDATE));
	invocation_clear(&inv);
	expect_parse_error(input, sizeof input - 1, "JSON");
}

static void test_clear_is_idempotent(void **state)
{
	(void)state;
	struct invocation inv;
	parse_ok("{\"httpMethod\":\"POST\",\"headers\":{\"X-Telegram-Bot-Api-Secret-Token\":\"s\"},\"body\":"
	         "\"{}\"}",
	         &inv);
	invocation_clear(&inv);
	if (inv.body || inv.method || inv.secret || inv.body_len || inv.is_http)
		fail_msg("invocation_clear: expected every field reset");
	invocation_clear(&inv);
}

/* ---- the response --------------------------------------------------------- */

static void expect_response(int status, const char *text)
{
	char *s = invocation_response(status, text);
	if (!s)
		fail_msg("invocation_response(%d, \"%s\"): expected JSON, got NULL", status, text);
	if (strchr(s, '\n'))
		fail_msg("invocation_response: expected one line (the platform reads one JSON), got \"%s\"",
		         s);
	json_error_t jerr;
	json_t *r = json_loads(s, 0, &jerr);
	if (!json_is_object(r))
		fail_msg("invocation_response: expected a JSON object, got \"%s\" (%s)", s, jerr.text);
	json_t *code = json_object_get(r, "statusCode");
	if (!json_is_integer(code))
		fail_msg("statusCode: expected an integer in \"%s\"", s);
	expect_int("statusCode", status, json_integer_value(code));
	expect_str("body", text, json_string_value(json_object_get(r, "body")));
	json_t *b64 = json_object_get(r, "isBase64Encoded");
	if (!json_is_false(b64))
		fail_msg("isBase64Encoded: expected false in \"%s\"", s);
	json_t *headers = json_object_get(r, "headers");
	if (!json_is_object(headers))
		fail_msg("headers: expected an object in \"%s\"", s);
	const char *ctype = json_string_value(json_object_get(headers, "Content-Type"));
	if (!ctype || strncmp(ctype, "text/plain", 10) != 0)
		fail_msg("headers.Content-Type: expected text/plain..., got \"%s\"",
		         ctype ? ctype : "(none)");
	expect_int("number of top-level keys", 4, (long long)json_object_size(r));
	json_decref(r);
	free(s);
}

static void test_response_shapes(void **state)
{
	(void)state;
	expect_response(200, "ok");
	expect_response(400, "not a Telegram update");
	expect_response(401, "unauthorized");
	expect_response(405, "use POST");
	expect_response(500, "");
	/* Quotes, backslashes, control characters and non-ASCII are escaped, never break the line. */
	expect_response(200, "say \"hi\"\\ \n\t\r новая строка 😀");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bare_update_is_the_body_itself),
	    cmocka_unit_test(test_bare_update_with_a_nul_byte_is_the_body_itself),
	    cmocka_unit_test(test_yandex_function_http_event),
	    cmocka_unit_test(test_yandex_api_gateway_payload_1_0),
	    cmocka_unit_test(test_aws_function_url_v2_event),
	    cmocka_unit_test(test_aws_v2_get_reports_the_method),
	    cmocka_unit_test(test_yandex_get_without_body),
	    cmocka_unit_test(test_event_with_body_but_no_method),
	    cmocka_unit_test(test_secret_header_name_is_case_insensitive),
	    cmocka_unit_test(test_secret_from_multi_value_headers_takes_the_first_value),
	    cmocka_unit_test(test_headers_win_over_multi_value_headers),
	    cmocka_unit_test(test_missing_secret_header_is_null),
	    cmocka_unit_test(test_base64_standard_with_padding),
	    cmocka_unit_test(test_base64_standard_without_padding),
	    cmocka_unit_test(test_base64_url_safe_with_and_without_padding),
	    cmocka_unit_test(test_base64_with_line_breaks),
	    cmocka_unit_test(test_base64_body_may_hold_a_nul_byte),
	    cmocka_unit_test(test_base64_empty_body),
	    cmocka_unit_test(test_body_not_marked_base64_is_taken_literally),
	    cmocka_unit_test(test_aws_v2_base64_body),
	    cmocka_unit_test(test_body_with_unicode_escapes_is_utf8),
	    cmocka_unit_test(test_bad_input_is_refused_with_a_reason),
	    cmocka_unit_test(test_invalid_base64_is_refused),
	    cmocka_unit_test(test_only_len_bytes_are_read),
	    cmocka_unit_test(test_clear_is_idempotent),
	    cmocka_unit_test(test_response_shapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
