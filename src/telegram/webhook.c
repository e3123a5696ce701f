#include "telegram/webhook.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "telegram/tg.h"

#define CALL_TIMEOUT_S 30
#define MAX_ANSWER (1u << 20)

bool webhook_secret_matches(const char *expected, const char *given)
{
	if (!expected)
		return true;
	if (!given)
		return false;
	size_t n = strlen(expected), m = strlen(given);
	unsigned char diff = n != m;
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)expected[i] ^ (unsigned char)(i < m ? given[i] : 0);
	return diff == 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	return buf_append(arg, data, size * n) == BUF_OK ? size * n : 0;
}

/*
 * One multipart/form-data Bot API call (fields: name, value pairs; a value
 * starting with '@' names a file to upload). Decodes the answer into a; 0 when
 * Telegram answered ok, -1 otherwise (reported on stderr).
 */
static int call(const struct config *cfg, const char *method, const char *const *fields, struct tg_answer *a)
{
	struct buf body;
	buf_init(&body, MAX_ANSWER);
	char *url = NULL;
	CURL *easy = curl_easy_init();
	curl_mime *mime = easy ? curl_mime_init(easy) : NULL;
	char error[CURL_ERROR_SIZE] = "";
	int rc = -1;
	memset(a, 0, sizeof *a);
	if (!mime || asprintf(&url, "%s/bot%s/%s", cfg->tg_api_base, cfg->tg_token, method) < 0) {
		url = NULL;
		fprintf(stderr, "tgllm: out of memory\n");
		goto out;
	}
	for (size_t i = 0; fields[i]; i += 2) {
		curl_mimepart *part = curl_mime_addpart(mime);
		CURLcode c = part ? curl_mime_name(part, fields[i]) : CURLE_OUT_OF_MEMORY;
		if (c == CURLE_OK)
			c = fields[i + 1][0] == '@' ? curl_mime_filedata(part, fields[i + 1] + 1)
						    : curl_mime_data(part, fields[i + 1], CURL_ZERO_TERMINATED);
		if (c != CURLE_OK) {
			fprintf(stderr, "tgllm: %s: %s\n", fields[i], curl_easy_strerror(c));
			goto out;
		}
	}
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_MIMEPOST, mime);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT, (long)CALL_TIMEOUT_S);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	CURLcode c = curl_easy_perform(easy);
	if (c != CURLE_OK) {
		/* The error buffer never holds the URL path, where the token is. */
		fprintf(stderr, "tgllm: %s: cannot reach Telegram: %s\n", method, error[0] ? error : curl_easy_strerror(c));
		goto out;
	}
	long status = 0;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	tg_answer_decode(a, buf_str(&body), body.len, status);
	if (!a->result.ok) {
		fprintf(stderr, "tgllm: %s failed: %ld %s\n", method, a->result.error_code, a->result.description);
		goto out;
	}
	rc = 0;
out:
	curl_mime_free(mime);
	curl_easy_cleanup(easy);
	free(url);
	buf_free(&body);
	return rc;
}

int webhook_set(const struct config *cfg, const char *url, const char *certificate, bool drop_pending)
{
	char cert_field[4096 + 2];
	const char *fields[16];
	size_t n = 0;
	fields[n++] = "url";
	fields[n++] = url;
	/* Only what the bot reads: other updates would cost a request each for nothing. */
	fields[n++] = "allowed_updates";
	fields[n++] = "[\"message\"]";
	if (cfg->webhook_secret) {
		fields[n++] = "secret_token";
		fields[n++] = cfg->webhook_secret;
	}
	if (drop_pending) {
		fields[n++] = "drop_pending_updates";
		fields[n++] = "true";
	}
	if (certificate) {
		snprintf(cert_field, sizeof cert_field, "@%s", certificate);
		fields[n++] = "certificate";
		fields[n++] = cert_field;
	}
	fields[n] = NULL;
	if (strncmp(url, "https://", 8) != 0)
		fprintf(stderr, "tgllm: warning: Telegram only delivers to https:// URLs\n");
	struct tg_answer a;
	int rc = call(cfg, "setWebhook", fields, &a);
	if (rc == 0)
		printf("Webhook set: %s%s\n", url,
		       cfg->webhook_secret ? " (with the secret token from WEBHOOK_SECRET)"
					   : " (no WEBHOOK_SECRET: anyone who learns the URL can post updates)");
	tg_answer_free(&a);
	return rc == 0 ? 0 : 1;
}

int webhook_delete(const struct config *cfg, bool drop_pending)
{
	const char *fields[] = {"drop_pending_updates", drop_pending ? "true" : "false", NULL};
	struct tg_answer a;
	int rc = call(cfg, "deleteWebhook", fields, &a);
	if (rc == 0)
		printf("Webhook deleted%s; the bot can now run with 'tgllm poll'.\n",
		       drop_pending ? " and pending updates dropped" : "");
	tg_answer_free(&a);
	return rc == 0 ? 0 : 1;
}

int webhook_info(const struct config *cfg)
{
	const char *fields[] = {NULL};
	struct tg_answer a;
	if (call(cfg, "getWebhookInfo", fields, &a) != 0) {
		tg_answer_free(&a);
		return 1;
	}
	const json_t *info = a.result.result;
	const char *url = json_string_value(json_object_get(info, "url"));
	json_int_t pending = json_integer_value(json_object_get(info, "pending_update_count"));
	const char *last_error = json_string_value(json_object_get(info, "last_error_message"));
	json_int_t last_error_date = json_integer_value(json_object_get(info, "last_error_date"));
	if (!url || !*url) {
		printf("No webhook is set: the bot gets updates by long polling ('tgllm poll').\n");
	} else {
		printf("Webhook: %s\n", url);
		if (json_is_true(json_object_get(info, "has_custom_certificate")))
			printf("It uses an uploaded (self-signed) certificate.\n");
	}
	printf("Updates waiting to be delivered: %lld\n", (long long)pending);
	if (last_error) {
		time_t when = (time_t)last_error_date;
		struct tm tm;
		char stamp[32] = "";
		if (gmtime_r(&when, &tm))
			strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S UTC", &tm);
		printf("The last delivery failed at %s: %s\n", stamp, last_error);
	} else if (url && *url) {
		printf("No delivery errors reported.\n");
	}
	tg_answer_free(&a);
	return 0;
}
