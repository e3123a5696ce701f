#include "model/transcribe.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/http.h"
#include "lib/log.h"

#define TRANSCRIBE_TIMEOUT_S 120
#define TRANSCRIPT_MAX       (1u << 20)
#define TRANSCRIBE_ATTEMPTS  2

struct transcribe_call {
	struct llm_client *llm;
	struct http_form_field form[2];
	char *data;
	char *file_name;
	char *mime;
	char *url;
	struct http_call *http;
	int attempts;
	transcribe_cb done;
	void *arg;
};

void transcribe_cancel(struct transcribe_call *call)
{
	if (!call)
		return;
	if (call->http)
		http_cancel(call->http);
	free(call->data);
	free(call->file_name);
	free(call->mime);
	free(call->url);
	free(call);
}

static int start(struct transcribe_call *call);

static void finish(struct transcribe_call *call, enum llm_status status, const char *text, size_t len,
                   const char *detail)
{
	struct transcript t = {status, text ? text : "", text ? len : 0, detail};
	call->done(call->arg, &t);
	transcribe_cancel(call);
}

static void on_done(void *arg, const struct http_response *resp)
{
	struct transcribe_call *call = arg;
	call->http = NULL;
	call->attempts++;
	char detail[256];
	json_t *root = resp->body_len ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
	const char *message = json_string_value(json_object_get(json_object_get(root, "error"), "message"));
	snprintf(detail, sizeof detail, "HTTP %ld%s%.200s", resp->status,
	         resp->is_transport_error ? ": "
	         : message                ? ": "
	                                  : "",
	         resp->is_transport_error ? resp->error
	         : message                ? message
	                                  : "");
	bool may_retry = resp->is_transport_error || resp->status == 429 || resp->status >= 500;
	if (may_retry && call->attempts < TRANSCRIBE_ATTEMPTS) {
		json_decref(root);
		log_warn("transcribe: %s; trying once more", detail);
		if (start(call) != 0)
			finish(call, LLM_DOWN, NULL, 0, "the request could not start");
		return;
	}
	const json_t *text = json_object_get(root, "text");
	enum llm_status status = resp->is_transport_error                     ? LLM_DOWN
	                         : resp->status == 401 || resp->status == 403 ? LLM_AUTH
	                         : resp->status == 402                        ? LLM_QUOTA
	                         : resp->status == 404                        ? LLM_NO_MODEL
	                         : resp->status == 429                        ? LLM_BUSY
	                         : resp->status >= 500                        ? LLM_DOWN
	                         : resp->status != 200                        ? LLM_REJECTED
	                         : !json_is_string(text)                      ? LLM_DOWN
	                                                                      : LLM_OK;
	if (status == LLM_OK)
		finish(call, LLM_OK, json_string_value(text), json_string_length(text), detail);
	else
		finish(call, status, NULL, 0, resp->status == 200 ? "the answer has no \"text\"" : detail);
	json_decref(root);
}

static int start(struct transcribe_call *call)
{
	const char *headers[] = {llm_auth_header(call->llm), NULL};
	struct http_request req = {
	    .method = "POST",
	    .url = call->url,
	    .headers = headers,
	    .form = call->form,
	    .n_form = 2,
	    .timeout_ms = TRANSCRIBE_TIMEOUT_S * 1000L,
	    .max_body = TRANSCRIPT_MAX,
	    .on_done = on_done,
	    .arg = call,
	};
	call->http = http_start(llm_http(call->llm), &req);
	return call->http ? 0 : -1;
}

struct transcribe_call *transcribe(struct llm_client *llm, const char *data, size_t len,
                                   const char *file_name, const char *mime, transcribe_cb done, void *arg)
{
	struct transcribe_call *call = calloc(1, sizeof *call);
	if (!call)
		return NULL;
	call->llm = llm;
	call->done = done;
	call->arg = arg;
	call->data = malloc(len ? len : 1);
	call->file_name = strdup(file_name);
	call->mime = mime ? strdup(mime) : NULL;
	call->url = llm_endpoint(llm, "audio/transcriptions");
	if (!call->data || !call->file_name || (mime && !call->mime) || !call->url)
		goto fail;
	memcpy(call->data, data, len);
	const char *model = llm_transcribe_model(llm);
	call->form[0] = (struct http_form_field){
	    .name = "file", .data = call->data, .len = len, .filename = call->file_name, .type = call->mime};
	call->form[1] = (struct http_form_field){.name = "model", .data = model, .len = strlen(model)};
	if (start(call) != 0)
		goto fail;
	return call;
fail:
	transcribe_cancel(call);
	return NULL;
}

/* The formats https://platform.openai.com/docs/guides/speech-to-text names, by extension. */
static bool is_known_extension(const char *ext)
{
	static const char *const known[] = {"flac", "mp3", "mp4", "mpeg", "mpga",
	                                    "m4a",  "ogg", "wav", "webm"};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		if (strcasecmp(ext, known[i]) == 0)
			return true;
	return false;
}

void transcribe_file_name(const char *file_path, const char *mime, char *out, size_t n)
{
	const char *slash = file_path ? strrchr(file_path, '/') : NULL;
	const char *base = slash ? slash + 1 : file_path ? file_path : "";
	const char *dot = strrchr(base, '.');
	const char *ext = dot ? dot + 1 : "";
	if (is_known_extension(ext)) {
		snprintf(out, n, "audio.%s", ext);
		return;
	}
	/* .oga and .opus are Ogg; a video note is MP4; otherwise guess from the MIME type. */
	if (strcasecmp(ext, "oga") == 0 || strcasecmp(ext, "opus") == 0 || (mime && strstr(mime, "ogg")))
		snprintf(out, n, "voice.ogg");
	else if (mime && strstr(mime, "mpeg"))
		snprintf(out, n, "audio.mp3");
	else if (mime && (strstr(mime, "wav") || strstr(mime, "wave")))
		snprintf(out, n, "audio.wav");
	else
		snprintf(out, n, "audio.mp4");
}
