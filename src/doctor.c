#include "doctor.h"

#include "bot.h"

#include <dirent.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/history.h"
#include "lib/http.h"
#include "lib/jsonw.h"
#include "lib/log.h"
#include "store/s3_client.h"
#include "store/store.h"
#include "telegram/tg.h"

#define CALL_TIMEOUT_S   15
#define RECENT_ERROR_S   3600 /* a webhook delivery error younger than this is a failure */
#define PROBE_CHAT       0    /* no Telegram chat has id 0: the test record's */
#define PROBE_TEXT       "tgllm doctor: a test record, deleted at once"
#define MAX_MODELS_NAMED 5
#define CONDITIONS_KEY   "tgllm/doctor-conditional-write" /* under the store's prefix */

enum step {
	STEP_TELEGRAM,
	STEP_WEBHOOK,
	STEP_MODELS,
	STEP_STORE,
	STEP_CONDITIONS,
	STEP_DONE,
};

struct doctor {
	const struct config *cfg;
	struct event_base *base;
	struct http_client *http;
	struct tg_client *tg;
	struct store *store;
	struct http_call *call;
	struct s3_client *s3; /* the conditional-write check's */
	struct s3_call *s3_call;
	char *s3_bucket, *s3_key;
	bool has_no_conditions; /* the server answered 501 to If-None-Match */
	bool is_store_ok;
	char store_shown[512]; /* STORE as shown: without a PostgreSQL password */
	enum step step;
	int failures;
	char *url, *body, *auth;
	const char *headers[3];
};

static void next(struct doctor *d);

/* One check's line: ✓, or ✗ with what to do (counted). */
__attribute__((format(printf, 3, 4))) static void report(struct doctor *d, bool ok, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	log_print(stdout, "%s %s", ok ? "✓" : "✗", line);
	d->failures += !ok;
}

#define pass(d, ...) report(d, true, __VA_ARGS__)
#define fail(d, ...) report(d, false, __VA_ARGS__)

int doctor_config_failed(const char *why)
{
	log_print(stdout, "✗ configuration: %s", why);
	return 1;
}

/* Certificates in a PEM file: the lines that begin one. */
static int certificates_in(FILE *f)
{
	char line[256];
	int n = 0;
	while (fgets(line, sizeof line, f))
		n += strncmp(line, "-----BEGIN CERTIFICATE-----", 27) == 0;
	return n;
}

/* A hashed directory (openssl rehash): the certificates named <8 hex digits>.<n>. */
static int certificates_named_in(DIR *dir)
{
	int n = 0;
	for (struct dirent *e; (e = readdir(dir));)
		n += strlen(e->d_name) >= 10 && strspn(e->d_name, "0123456789abcdef") == 8 && e->d_name[8] == '.';
	return n;
}

static void check_ca(struct doctor *d)
{
	const char *path = d->cfg->ca_bundle;
	if (!path) {
		pass(d, "CA certificates: the system's");
		return;
	}
	DIR *dir = opendir(path);
	FILE *f = dir ? NULL : fopen(path, "r");
	if (!dir && !f) {
		fail(d, "CA_BUNDLE %s cannot be read: point it at a PEM file of certificate authorities, or a "
		        "directory of them hashed by openssl rehash",
		     path);
		return;
	}
	int n = dir ? certificates_named_in(dir) : certificates_in(f);
	if (dir)
		closedir(dir);
	else
		fclose(f);
	if (n == 0) {
		fail(d, "CA_BUNDLE %s holds no certificate: it must be a PEM bundle, or a directory hashed by "
		        "openssl rehash",
		     path);
		return;
	}
	pass(d, "CA certificates: %s (%d)", path, n);
}

/* ---- Telegram ---- */

static void on_webhook_info(void *arg, const struct tg_result *res)
{
	struct doctor *d = arg;
	if (!res->ok) {
		fail(d, "webhook: getWebhookInfo failed: %s", res->description);
		next(d);
		return;
	}
	const json_t *r = res->result;
	const char *url = json_string_value(json_object_get(r, "url"));
	json_int_t pending = json_integer_value(json_object_get(r, "pending_update_count"));
	const char *error = json_string_value(json_object_get(r, "last_error_message"));
	json_int_t error_date = json_integer_value(json_object_get(r, "last_error_date"));
	if (!url || !*url) {
		pass(
		    d,
		    "webhook: none set (%lld pending): fits `tgllm poll`; `serve` and serverless need `tgllm "
		    "set-webhook URL`",
		    (long long)pending);
	} else if (error && error_date > 0 && time(NULL) - error_date < RECENT_ERROR_S) {
		fail(d,
		     "webhook: %s: Telegram's last delivery failed %lld min ago (%s; %lld pending): check "
		     "that "
		     "the URL reaches `tgllm serve` or the function",
		     url, (long long)(time(NULL) - error_date) / 60, error, (long long)pending);
	} else {
		pass(d,
		     "webhook: %s (%lld pending): fits `serve` and serverless; `poll` refuses to start while "
		     "it is "
		     "set (`tgllm poll --delete-webhook`)",
		     url, (long long)pending);
	}
	next(d);
}

static void on_me(void *arg, const struct tg_result *res)
{
	struct doctor *d = arg;
	if (res->ok) {
		const char *name = json_string_value(json_object_get(res->result, "username"));
		pass(d, "Telegram: the token works: @%s", name ? name : "?");
		next(d);
		return;
	}
	if (res->error_code)
		fail(d, "Telegram: the token is rejected (%ld %s): check TG_BOT_TOKEN (from @BotFather)",
		     res->error_code, res->description);
	else
		fail(d, "Telegram: cannot reach %s (%s): check the network, or TELEGRAM_API_BASE",
		     d->cfg->tg_api_base, res->description);
	d->step = STEP_MODELS; /* the webhook cannot be asked about either */
	next(d);
}

/* ---- the model API ---- */

static void on_completion(void *arg, const struct http_response *resp)
{
	struct doctor *d = arg;
	d->call = NULL;
	const char *model = d->cfg->llm_model;
	if (resp->status == 200)
		pass(d, "model API: the key works and %s answers (the API lists no models)", model);
	else if (resp->status == 401 || resp->status == 403)
		fail(d, "model API: the key is rejected (%ld): check OPENAI_API_KEY", resp->status);
	else if (resp->status == 404)
		fail(d, "model API: %s is not found (404: %.200s): check OPENAI_MODEL and OPENAI_BASE_URL",
		     model, resp->body ? resp->body : "");
	else if (resp->status)
		fail(d, "model API: a 1-token request to %s answered %ld: %.200s", model, resp->status,
		     resp->body ? resp->body : "");
	else
		fail(d, "model API: cannot reach %s (%s): check OPENAI_BASE_URL and the network",
		     d->cfg->llm_base_url, resp->error);
	next(d);
}

/* A request to d->url with the key: GET, or POST of body; done takes the answer. */
static void ask_model(struct doctor *d, const char *body, http_done_cb done)
{
	struct http_request req = {.method = body ? "POST" : "GET",
	                           .url = d->url,
	                           .headers = d->headers,
	                           .body = body,
	                           .body_len = body ? strlen(body) : 0,
	                           .timeout_ms = CALL_TIMEOUT_S * 1000L,
	                           .max_body = 4u << 20,
	                           .on_done = done,
	                           .arg = d};
	if (!(d->call = http_start(d->http, &req))) {
		fail(d, "model API: cannot start a request");
		next(d);
	}
}

/* Where there is no GET /models: the smallest completion tells whether key and model work. */
static void ask_completion(struct doctor *d)
{
	struct buf b;
	buf_init(&b, 1u << 16);
	int rc = buf_append_str(&b, "{");
	if (rc == BUF_OK)
		rc = jsonw_member_string(&b, "model", d->cfg->llm_model, strlen(d->cfg->llm_model));
	if (rc == BUF_OK)
		rc = buf_append_str(
		    &b, ",\"messages\":[{\"role\":\"user\",\"content\":\"Say OK.\"}],\"max_tokens\":1");
	free(d->body);
	d->body = jsonw_finish_object(&b, rc);
	free(d->url);
	d->url = NULL;
	if (!d->body || asprintf(&d->url, "%s/chat/completions", d->cfg->llm_base_url) < 0) {
		fail(d, "model API: out of memory");
		next(d);
		return;
	}
	ask_model(d, d->body, on_completion);
}

static void on_models(void *arg, const struct http_response *resp)
{
	struct doctor *d = arg;
	d->call = NULL;
	const char *model = d->cfg->llm_model;
	if (resp->status == 404 || resp->status == 405) {
		ask_completion(d);
		return;
	}
	if (resp->status == 401 || resp->status == 403) {
		fail(d, "model API: the key is rejected (%ld): check OPENAI_API_KEY", resp->status);
	} else if (resp->status == 200) {
		json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
		json_t *data = json_object_get(root, "data");
		size_t i, n = json_array_size(data);
		bool found = false;
		char names[256] = "";
		for (i = 0; i < n; i++) {
			const char *id = json_string_value(json_object_get(json_array_get(data, i), "id"));
			found |= id && strcmp(id, model) == 0;
			if (id && i < MAX_MODELS_NAMED)
				snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
				         i ? ", " : "", id);
		}
		if (!json_is_array(data))
			fail(d, "model API: GET /models answered something else than a list of models: check "
			        "OPENAI_BASE_URL");
		else if (found)
			pass(d, "model API: the key works and %s is offered", model);
		else
			fail(d,
			     "model API: %s is not among the %zu models offered (%s%s): check OPENAI_MODEL",
			     model, n, names, n > MAX_MODELS_NAMED ? ", …" : "");
		json_decref(root);
	} else if (resp->status) {
		fail(d, "model API: GET /models answered %ld: %.200s", resp->status,
		     resp->body ? resp->body : "");
	} else {
		fail(d, "model API: cannot reach %s (%s): check OPENAI_BASE_URL and the network",
		     d->cfg->llm_base_url, resp->error);
	}
	next(d);
}

static void check_models(struct doctor *d)
{
	if (asprintf(&d->auth, "Authorization: Bearer %s", d->cfg->llm_key) < 0 ||
	    asprintf(&d->url, "%s/models", d->cfg->llm_base_url) < 0) {
		d->auth = d->url = NULL;
		fail(d, "model API: out of memory");
		next(d);
		return;
	}
	d->headers[0] = d->auth;
	d->headers[1] = "Content-Type: application/json";
	ask_model(d, NULL, on_models);
}

/* ---- the store: a record written, read and deleted ---- */

static const char *store_hint(const struct doctor *d)
{
	if (store_is_postgres_spec(d->cfg->store))
		return "check that the server runs, and the user, password and database in STORE";
	return strncmp(d->cfg->store, "sqlite:", 7) == 0
	           ? "check that the bot's user may write the database file and its folder"
	           : "check the bucket, S3_ENDPOINT, S3_REGION and the keys";
}

static void on_probe_deleted(void *arg, int err)
{
	struct doctor *d = arg;
	if (err)
		fail(d, "store %s: the test record was written and read but cannot be deleted: %s",
		     d->store_shown, store_hint(d));
	else
		pass(d, "store %s: a test record written, read and deleted", d->store_shown);
	d->is_store_ok = !err;
	next(d);
}

static void on_probe_read(void *arg, int err, struct history *h)
{
	struct doctor *d = arg;
	bool is_there = !err && h->len >= 2 && strcmp(h->turns[h->len - 2].content, PROBE_TEXT) == 0;
	if (!is_there) {
		fail(d, "store %s: the test record written cannot be read back: %s", d->store_shown,
		     store_hint(d));
		next(d);
		return;
	}
	store_history_clear(d->store, PROBE_CHAT, on_probe_deleted, d);
}

static void on_probe_written(void *arg, int err)
{
	struct doctor *d = arg;
	if (err) {
		fail(d, "store %s: a test record cannot be written: %s", d->store_shown, store_hint(d));
		next(d);
		return;
	}
	store_history_load(d->store, PROBE_CHAT, on_probe_read, d);
}

static void check_store(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	struct store_options so = bot_store_options(cfg);
	char why[256];
	if (store_open(&so, d->base, d->http, &d->store, why, sizeof why) != 0) {
		fail(d, "store %s: cannot open it: %s: %s", d->store_shown, why, store_hint(d));
		next(d);
		return;
	}
	struct turn probe[2] = {
	    {TURN_USER, PROBE_TEXT, sizeof PROBE_TEXT - 1, false},
	    {TURN_ASSISTANT, "ok", 2, false},
	};
	store_history_append(d->store, PROBE_CHAT, probe, 2, 0, on_probe_written, d);
}

/*
 * ---- S3: whether the server enforces conditional writes ----
 *
 * The journal's claims and the history's writes rest on If-None-Match and
 * If-Match being enforced. A server that answers 501 to them is known to
 * the store, which writes unconditionally (and says so); one that ignores
 * them silently would let two invocations both claim an update. So an
 * object is created with If-None-Match: *, then created again the same way:
 * that second PUT must be refused (412).
 */

static void on_conditions_cleaned(void *arg, const struct http_response *resp)
{
	struct doctor *d = arg;
	d->s3_call = NULL;
	if (resp->is_transport_error || (resp->status != 204 && resp->status != 200))
		log_warn("doctor: the test object %s could not be deleted (%ld)", d->s3_key, resp->status);
	next(d);
}

static void clean_conditions(struct doctor *d)
{
	struct s3_request req = {.what = "deleting the test object", .method = "DELETE", .key = d->s3_key};
	if (!(d->s3_call = s3_send(d->s3, &req, on_conditions_cleaned, d)))
		next(d);
}

static void on_second_put(void *arg, const struct http_response *resp)
{
	struct doctor *d = arg;
	d->s3_call = NULL;
	if (resp->status == 412 || resp->status == 409)
		pass(d, "S3 conditional writes: enforced (a second If-None-Match: * create was refused)");
	else if (!resp->is_transport_error && resp->status / 100 == 2)
		fail(d, "S3 conditional writes: ignored: the server let an If-None-Match: * PUT overwrite an "
		        "object, "
		        "so two invocations could both answer one update; use a server that enforces them "
		        "(AWS S3, Yandex Object Storage, MinIO), or run a single poll or serve instance");
	else
		fail(d, "S3 conditional writes: cannot tell: the second PUT failed (%ld %s)", resp->status,
		     resp->is_transport_error ? resp->error : "");
	clean_conditions(d);
}

static struct s3_call *put_if_new(struct doctor *d, s3_done_cb done)
{
	struct s3_request req = {
	    .what = "checking conditional writes",
	    .method = "PUT",
	    .key = d->s3_key,
	    .body = strdup("tgllm doctor: a test object, deleted at once"),
	    .content_type = "text/plain",
	    .condition = "If-None-Match: *",
	    .max_body = 64u << 10,
	};
	if (!req.body)
		return NULL;
	req.body_len = strlen(req.body);
	return s3_send(d->s3, &req, done, d);
}

static void on_first_put(void *arg, const struct http_response *resp)
{
	struct doctor *d = arg;
	d->s3_call = NULL;
	if (resp->is_transport_error || resp->status / 100 != 2) {
		fail(d, "S3 conditional writes: cannot tell: a test object cannot be created (%ld %s)",
		     resp->status, resp->is_transport_error ? resp->error : "");
		next(d);
		return;
	}
	if (d->has_no_conditions) {
		pass(
		    d,
		    "S3 conditional writes: not supported (501); the store writes unconditionally, which is "
		    "safe for one poll or serve instance, not for parallel serverless invocations of a chat");
		clean_conditions(d);
		return;
	}
	if (!(d->s3_call = put_if_new(d, on_second_put))) {
		fail(d, "S3 conditional writes: cannot start a request");
		clean_conditions(d);
	}
}

static void on_no_conditions(void *arg, const char *condition)
{
	(void)condition;
	((struct doctor *)arg)->has_no_conditions = true;
}

static void check_conditions(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	if (strncmp(cfg->store, "s3://", 5) != 0 || !d->is_store_ok) {
		next(d); /* only S3 has them; with the store failing, there is nothing to learn */
		return;
	}
	const char *bucket = cfg->store + 5, *slash = strchr(bucket, '/'), *prefix = slash ? slash + 1 : "";
	size_t plen = strlen(prefix);
	d->s3_bucket = slash ? strndup(bucket, (size_t)(slash - bucket)) : strdup(bucket);
	if (d->s3_bucket && asprintf(&d->s3_key, "%s%s%s", prefix, plen && prefix[plen - 1] != '/' ? "/" : "",
	                             CONDITIONS_KEY) < 0)
		d->s3_key = NULL;
	struct s3_client_options o = {
	    .endpoint = cfg->s3_endpoint,
	    .region = cfg->s3_region,
	    .bucket = d->s3_bucket,
	    .key_id = cfg->s3_key_id,
	    .secret = cfg->s3_secret,
	    .session_token = cfg->s3_session_token,
	    .on_no_conditions = on_no_conditions,
	    .arg = d,
	};
	char why[256] = "out of memory";
	if (!d->s3_key || !(d->s3 = s3_client_new(d->base, d->http, &o, why, sizeof why)) ||
	    !(d->s3_call = put_if_new(d, on_first_put))) {
		fail(d, "S3 conditional writes: cannot check: %s", why);
		next(d);
	}
}

/* ---- the order of the checks ---- */

static void next(struct doctor *d)
{
	switch (d->step++) {
	case STEP_TELEGRAM:
		if (!tg_call(d->tg, "getMe", NULL, 0, TG_CALL_ONCE, CALL_TIMEOUT_S, on_me, d)) {
			fail(d, "Telegram: cannot start a request");
			next(d);
		}
		return;
	case STEP_WEBHOOK:
		if (!tg_call(d->tg, "getWebhookInfo", NULL, 0, TG_CALL_ONCE, CALL_TIMEOUT_S, on_webhook_info,
		             d)) {
			fail(d, "webhook: cannot start a request");
			next(d);
		}
		return;
	case STEP_MODELS:
		check_models(d);
		return;
	case STEP_STORE:
		check_store(d);
		return;
	case STEP_CONDITIONS:
		check_conditions(d);
		return;
	case STEP_DONE:
		event_base_loopbreak(d->base);
		return;
	}
}

int doctor_run(const struct config *cfg)
{
	struct doctor d = {.cfg = cfg, .step = STEP_TELEGRAM};
	store_spec_shown(cfg->store, d.store_shown, sizeof d.store_shown);
	pass(&d, "configuration: model %s at %s, store %s", cfg->llm_model, cfg->llm_base_url, d.store_shown);
	check_ca(&d);
	if (!(d.base = event_base_new()) || !(d.http = http_client_new(d.base)) ||
	    http_client_set_ca_bundle(d.http, cfg->ca_bundle) != 0 ||
	    !(d.tg = tg_client_new(d.base, d.http, cfg->tg_api_base, cfg->tg_token, &cfg->tg_pacing))) {
		fail(&d, "cannot set up the checks: out of memory");
	} else {
		next(&d);
		if (d.step <= STEP_DONE && event_base_dispatch(d.base) < 0)
			fail(&d, "the event loop failed");
	}
	if (d.call)
		http_cancel(d.call);
	s3_cancel(d.s3_call);
	s3_client_free(d.s3);
	free(d.s3_bucket);
	free(d.s3_key);
	store_free(d.store);
	tg_client_free(d.tg);
	http_client_free(d.http);
	if (d.base)
		event_base_free(d.base);
	free(d.url);
	free(d.body);
	free(d.auth);
	if (d.failures)
		log_print(stdout, "%d check%s failed", d.failures, d.failures == 1 ? "" : "s");
	else
		log_print(stdout, "all checks passed");
	return d.failures ? 1 : 0;
}
