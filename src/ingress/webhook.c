#include "ingress/webhook.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ingress/ingress.h"
#include "lib/http.h"
#include "lib/log.h"
#include "telegram/tg.h"

#define CALL_TIMEOUT_S 30

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

/* A command's one Bot API call, on a loop of its own. */
struct command {
	const char *method;
	struct event_base *base;
	struct tg_client *tg;
	struct ingress_menu menu;
	bool with_menu; /* set-webhook: the command menu follows, as poll and serve do it at start */
	void (*on_ok)(const struct config *cfg, const struct tg_result *res, void *arg);
	const struct config *cfg;
	void *arg;
	int status;
};

static void on_menu(void *arg)
{
	event_base_loopbreak(((struct command *)arg)->base);
}

static void on_answer(void *arg, const struct tg_result *res)
{
	struct command *c = arg;
	if (res->ok) {
		c->on_ok(c->cfg, res, c->arg);
		c->status = 0;
		if (c->with_menu) {
			ingress_menu_start(&c->menu, c->tg, on_menu, c);
			return;
		}
	} else if (res->error_code) {
		log_print(stderr, "tgllm: %s failed: %ld %s", c->method, res->error_code, res->description);
	} else {
		/* The description never holds the URL, where the token is. */
		log_print(stderr, "tgllm: %s: cannot reach Telegram: %s", c->method, res->description);
	}
	event_base_loopbreak(c->base);
}

/*
 * Calls method once (a person reads the outcome: no retries) with multipart
 * fields; on success on_ok prints what happened. Returns the exit status.
 */
static int run_call(const struct config *cfg, const char *method, const struct http_form_field *form,
                    size_t n, void (*on_ok)(const struct config *cfg, const struct tg_result *res, void *arg),
                    void *arg)
{
	struct command c = {.method = method,
	                    .with_menu = strcmp(method, "setWebhook") == 0,
	                    .on_ok = on_ok,
	                    .cfg = cfg,
	                    .arg = arg,
	                    .status = 1};
	struct http_client *http = NULL;
	struct tg_client *tg = NULL;
	struct tg_call *call = NULL;
	if (!(c.base = event_base_new()) || !(http = http_client_new(c.base)) ||
	    http_client_set_ca_bundle(http, cfg->ca_bundle) != 0 ||
	    !(c.tg = tg = tg_client_new(c.base, http, cfg->tg_api_base, cfg->tg_token, &cfg->tg_pacing)) ||
	    !(call = tg_call_form(tg, method, form, n, 0, TG_CALL_ONCE, CALL_TIMEOUT_S, on_answer, &c))) {
		log_print(stderr, "tgllm: %s: cannot start the call (out of memory?)", method);
	} else if (event_base_dispatch(c.base) < 0) {
		log_print(stderr, "tgllm: the event loop failed");
		tg_call_cancel(call);
	}
	ingress_menu_cancel(&c.menu);
	tg_client_free(tg);
	http_client_free(http);
	if (c.base)
		event_base_free(c.base);
	return c.status;
}

static struct http_form_field field(const char *name, const char *value)
{
	return (struct http_form_field){.name = name, .data = value, .len = strlen(value)};
}

static void print_set(const struct config *cfg, const struct tg_result *res, void *arg)
{
	(void)res;
	log_print(stdout, "Webhook set: %s%s", (const char *)arg,
	          cfg->webhook_secret ? " (with the secret token from WEBHOOK_SECRET)"
	                              : " (no WEBHOOK_SECRET: anyone who learns the URL can post updates)");
}

int webhook_set(const struct config *cfg, const char *url, const char *certificate, bool drop_pending)
{
	struct http_form_field form[5];
	size_t n = 0;
	form[n++] = field("url", url);
	/* Only what the bot reads: other updates would cost a request each for nothing. */
	form[n++] = field("allowed_updates", INGRESS_ALLOWED_UPDATES);
	if (cfg->webhook_secret)
		form[n++] = field("secret_token", cfg->webhook_secret);
	if (drop_pending)
		form[n++] = field("drop_pending_updates", "true");
	if (certificate) {
		if (access(certificate, R_OK) != 0) {
			log_print(stderr, "tgllm: --certificate %s: cannot read the file", certificate);
			return 1;
		}
		form[n++] = (struct http_form_field){.name = "certificate", .path = certificate};
	}
	if (strncmp(url, "https://", 8) != 0)
		log_print(stderr, "tgllm: warning: Telegram only delivers to https:// URLs");
	return run_call(cfg, "setWebhook", form, n, print_set, (void *)url);
}

static void print_deleted(const struct config *cfg, const struct tg_result *res, void *arg)
{
	(void)cfg;
	(void)res;
	log_print(stdout, "Webhook deleted%s; the bot can now run with 'tgllm poll'.",
	          arg ? " and pending updates dropped" : "");
}

int webhook_delete(const struct config *cfg, bool drop_pending)
{
	struct http_form_field form[] = {field("drop_pending_updates", drop_pending ? "true" : "false")};
	return run_call(cfg, "deleteWebhook", form, 1, print_deleted, drop_pending ? (void *)"" : NULL);
}

static void print_info(const struct config *cfg, const struct tg_result *res, void *arg)
{
	(void)cfg;
	(void)arg;
	const json_t *info = res->result;
	const char *url = json_string_value(json_object_get(info, "url"));
	json_int_t pending = json_integer_value(json_object_get(info, "pending_update_count"));
	const char *last_error = json_string_value(json_object_get(info, "last_error_message"));
	json_int_t last_error_date = json_integer_value(json_object_get(info, "last_error_date"));
	if (!url || !*url) {
		log_print(stdout, "No webhook is set: the bot gets updates by long polling ('tgllm poll').");
	} else {
		log_print(stdout, "Webhook: %s", url);
		if (json_is_true(json_object_get(info, "has_custom_certificate")))
			log_print(stdout, "It uses an uploaded (self-signed) certificate.");
	}
	log_print(stdout, "Updates waiting to be delivered: %lld", (long long)pending);
	if (last_error) {
		time_t when = (time_t)last_error_date;
		struct tm tm;
		char stamp[32] = "";
		if (gmtime_r(&when, &tm))
			strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S UTC", &tm);
		log_print(stdout, "The last delivery failed at %s: %s", stamp, last_error);
	} else if (url && *url) {
		log_print(stdout, "No delivery errors reported.");
	}
}

int webhook_info(const struct config *cfg)
{
	return run_call(cfg, "getWebhookInfo", NULL, 0, print_info, NULL);
}
