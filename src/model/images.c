#include "model/images.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base64.h"
#include "lib/http.h"
#include "lib/log.h"

#define IMAGES_TIMEOUT_S  180         /* gpt-image-1 takes up to a minute or two at high quality */
#define IMAGES_ANSWER_MAX (32u << 20) /* b64_json of a 20 MB picture */

struct images_call {
	struct llm_client *llm;
	char *body;
	char *url;
	char *revised_prompt;
	struct http_call *http;
	images_cb done;
	void *arg;
};

void images_cancel(struct images_call *call)
{
	if (!call)
		return;
	if (call->http)
		http_cancel(call->http);
	free(call->body);
	free(call->url);
	free(call->revised_prompt);
	free(call);
}

static void finish(struct images_call *call, enum llm_status status, const char *data, size_t len,
                   const char *detail)
{
	struct picture p = {status, data, len, call->revised_prompt, detail};
	call->done(call->arg, &p);
	images_cancel(call);
}

static void on_picture(void *arg, const struct http_response *resp)
{
	struct images_call *call = arg;
	call->http = NULL;
	if (resp->is_transport_error || resp->status != 200) {
		char detail[160];
		snprintf(detail, sizeof detail, "downloading the picture: HTTP %ld %s", resp->status,
		         resp->error);
		finish(call, LLM_DOWN, NULL, 0, detail);
		return;
	}
	finish(call, LLM_OK, resp->body, resp->body_len, "");
}

/* The provider gave a URL: the bytes are fetched here (without our key: it is not ours to send). */
static void fetch(struct images_call *call, const char *url)
{
	if (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) {
		finish(call, LLM_DOWN, NULL, 0, "data[0].url is not an http(s) URL");
		return;
	}
	struct http_request req = {
	    .method = "GET",
	    .url = url,
	    .timeout_ms = 60000,
	    .max_body = IMAGES_MAX_BYTES,
	    .on_done = on_picture,
	    .arg = call,
	};
	if (!(call->http = http_start(llm_http(call->llm), &req)))
		finish(call, LLM_DOWN, NULL, 0, "the picture's download could not start");
}

static enum llm_status status_of(long status, const char *code)
{
	if (status == 401 || status == 403)
		return LLM_AUTH;
	if (status == 402 || (code && strcmp(code, "insufficient_quota") == 0))
		return LLM_QUOTA;
	if (status == 404 || (code && strcmp(code, "model_not_found") == 0))
		return LLM_NO_MODEL;
	if (status == 429)
		return LLM_BUSY;
	if (status >= 500 || status == 408)
		return LLM_DOWN;
	return LLM_REJECTED; /* content_policy_violation, a size the model does not draw… */
}

static void on_done(void *arg, const struct http_response *resp)
{
	struct images_call *call = arg;
	call->http = NULL;
	char detail[320];
	if (resp->is_transport_error) {
		snprintf(detail, sizeof detail, "%s", resp->error);
		finish(call, LLM_DOWN, NULL, 0, detail);
		return;
	}
	json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
	json_t *error = json_object_get(root, "error");
	if (resp->status != 200 || error) {
		const char *message = json_string_value(json_object_get(error, "message"));
		const char *code = json_string_value(json_object_get(error, "code"));
		snprintf(detail, sizeof detail, "HTTP %ld%s%.200s%s%.60s", resp->status, message ? ": " : "",
		         message ? message : "", code ? " code=" : "", code ? code : "");
		enum llm_status status = status_of(resp->status == 200 ? 400 : resp->status, code);
		json_decref(root);
		finish(call, status, NULL, 0, detail);
		return;
	}
	json_t *first = json_array_get(json_object_get(root, "data"), 0);
	const char *b64 = json_string_value(json_object_get(first, "b64_json"));
	const char *url = json_string_value(json_object_get(first, "url"));
	const char *revised = json_string_value(json_object_get(first, "revised_prompt"));
	if (revised && revised[0] && !(call->revised_prompt = strdup(revised)))
		log_warn("images: out of memory keeping the revised prompt");
	if (b64) {
		size_t len = 0;
		char *data = base64_decode(b64, json_string_length(json_object_get(first, "b64_json")), &len);
		json_decref(root);
		if (!data || len == 0) {
			free(data);
			finish(call, LLM_DOWN, NULL, 0, "data[0].b64_json is not base64");
			return;
		}
		finish(call, LLM_OK, data, len, "");
		free(data);
		return;
	}
	if (url) {
		char *copy = strdup(url);
		json_decref(root);
		if (!copy) {
			finish(call, LLM_DOWN, NULL, 0, "out of memory");
			return;
		}
		fetch(call, copy);
		free(copy);
		return;
	}
	json_decref(root);
	finish(call, LLM_EMPTY, NULL, 0, "the answer has no data[0].b64_json nor data[0].url");
}

struct images_call *images_generate(struct llm_client *llm, const char *prompt, images_cb done, void *arg)
{
	struct images_call *call = calloc(1, sizeof *call);
	if (!call)
		return NULL;
	*call = (struct images_call){.llm = llm, .done = done, .arg = arg};
	const char *model = llm_image_model(llm);
	json_t *body =
	    json_pack("{sssssiss}", "model", model, "prompt", prompt, "n", 1, "size", llm_image_size(llm));
	/* dall-e-2 and dall-e-3 answer a URL unless told; gpt-image-1 refuses the parameter. */
	if (body && strncmp(model, "dall-e", 6) == 0 &&
	    json_object_set_new(body, "response_format", json_string("b64_json")) != 0) {
		json_decref(body);
		body = NULL;
	}
	call->body = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	call->url = llm_endpoint(llm, "images/generations");
	if (!call->body || !call->url)
		goto fail;
	const char *headers[] = {llm_auth_header(llm), "Content-Type: application/json", NULL};
	struct http_request req = {
	    .method = "POST",
	    .url = call->url,
	    .headers = headers,
	    .body = call->body,
	    .body_len = strlen(call->body),
	    .timeout_ms = IMAGES_TIMEOUT_S * 1000L,
	    .max_body = IMAGES_ANSWER_MAX,
	    .on_done = on_done,
	    .arg = call,
	};
	if (!(call->http = http_start(llm_http(llm), &req)))
		goto fail;
	return call;
fail:
	images_cancel(call);
	return NULL;
}
