#include "model/models.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

#define LIST_TIMEOUT_MS 10000
#define LIST_MAX_BODY   (4u << 20) /* OpenRouter lists some 300 models with their descriptions */

struct waiter {
	struct waiter *next;
	model_list_cb cb;
	void *arg;
};

struct model_list {
	struct event_base *base;
	struct http_client *http;
	char *url, *auth, *fallback;
	char *names[MODELS_MAX];
	size_t n;
	bool is_known; /* names hold the answer; else the provider is still to be (or being) asked */
	struct http_call *call;
	struct event *kick; /* answers the waiters from the loop */
	struct waiter *waiters;
};

/* Model ids that do not chat, by the names OpenAI, OpenRouter and the local servers give them. */
bool model_is_chat(const char *id)
{
	static const char *const not_chat[] = {
	    "embed", "whisper",  "tts",        "dall-e", "davinci", "babbage", "moderation",   "image",
	    "audio", "realtime", "transcribe", "search", "sora",    "rerank",  "computer-use",
	};
	for (size_t i = 0; i < sizeof not_chat / sizeof not_chat[0]; i++)
		if (strstr(id, not_chat[i]))
			return false;
	return id[0] != '\0';
}

static bool has(const struct model_list *ml, const char *name)
{
	for (size_t i = 0; i < ml->n; i++)
		if (strcmp(ml->names[i], name) == 0)
			return true;
	return false;
}

/* Adds a copy of name unless there already or the list is full; -1 when out of memory. */
static int add(struct model_list *ml, const char *name, size_t len)
{
	char *copy = strndup(name, len);
	if (!copy)
		return -1;
	if (ml->n == MODELS_MAX || has(ml, copy) || !copy[0])
		free(copy);
	else
		ml->names[ml->n++] = copy;
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The list is complete: the default in it (replacing the last name if full), sorted; the waiters told. */
static void settle(struct model_list *ml)
{
	if (!has(ml, ml->fallback)) {
		if (ml->n == MODELS_MAX)
			free(ml->names[--ml->n]);
		if (add(ml, ml->fallback, strlen(ml->fallback)) != 0)
			log_error("models: out of memory");
	}
	qsort(ml->names, ml->n, sizeof ml->names[0], by_name);
	ml->is_known = true;
	event_active(ml->kick, 0, 0);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct model_list *ml = arg;
	while (ml->waiters) {
		struct waiter *w = ml->waiters;
		ml->waiters = w->next;
		w->cb(w->arg, (const char *const *)ml->names, ml->n);
		free(w);
	}
}

static void on_listed(void *arg, const struct http_response *resp)
{
	struct model_list *ml = arg;
	ml->call = NULL;
	json_t *root = resp->status == 200 ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
	const json_t *data = json_object_get(root, "data");
	if (!json_is_array(data))
		log_info("models: the provider lists no models at GET /models (%ld%s%s); offering %s alone",
		         resp->status, resp->is_transport_error ? ": " : "", resp->error, ml->fallback);
	for (size_t i = 0; json_is_array(data) && i < json_array_size(data); i++) {
		const char *id = json_string_value(json_object_get(json_array_get(data, i), "id"));
		if (id && model_is_chat(id) && add(ml, id, strlen(id)) != 0)
			log_error("models: out of memory");
	}
	json_decref(root);
	settle(ml);
}

static void ask_provider(struct model_list *ml)
{
	const char *headers[] = {ml->auth, NULL};
	struct http_request req = {
	    .method = "GET",
	    .url = ml->url,
	    .headers = headers,
	    .timeout_ms = LIST_TIMEOUT_MS,
	    .max_body = LIST_MAX_BODY,
	    .on_done = on_listed,
	    .arg = ml,
	};
	if (!(ml->call = http_start(ml->http, &req)))
		settle(ml);
}

int model_list_get(struct model_list *ml, model_list_cb cb, void *arg)
{
	struct waiter *w = malloc(sizeof *w);
	if (!w)
		return -1;
	*w = (struct waiter){.next = ml->waiters, .cb = cb, .arg = arg};
	ml->waiters = w;
	if (ml->is_known)
		event_active(ml->kick, 0, 0);
	else if (!ml->call)
		ask_provider(ml);
	return 0;
}

void model_list_forget(struct model_list *ml, void *arg)
{
	for (struct waiter **p = &ml->waiters; *p;) {
		struct waiter *w = *p;
		if (w->arg == arg) {
			*p = w->next;
			free(w);
		} else {
			p = &w->next;
		}
	}
}

/* OPENAI_MODELS: names separated by commas, spaces around them ignored. */
static int add_configured(struct model_list *ml, const char *spec)
{
	for (const char *p = spec; *p;) {
		p += strspn(p, " \t,");
		size_t len = strcspn(p, ",");
		size_t end = len;
		while (end && (p[end - 1] == ' ' || p[end - 1] == '\t'))
			end--;
		if (end && add(ml, p, end) != 0)
			return -1;
		p += len;
	}
	return 0;
}

struct model_list *model_list_new(struct event_base *base, struct http_client *http,
                                  const struct model_list_options *o)
{
	struct model_list *ml = calloc(1, sizeof *ml);
	if (!ml)
		return NULL;
	ml->base = base;
	ml->http = http;
	if (asprintf(&ml->url, "%s/models", o->base_url) < 0)
		ml->url = NULL;
	if (asprintf(&ml->auth, "Authorization: Bearer %s", o->key) < 0)
		ml->auth = NULL;
	ml->fallback = strdup(o->fallback);
	ml->kick = event_new(base, -1, 0, on_kick, ml);
	if (!ml->url || !ml->auth || !ml->fallback || !ml->kick ||
	    (o->configured && add_configured(ml, o->configured) != 0)) {
		model_list_free(ml);
		return NULL;
	}
	if (o->configured)
		settle(ml);
	return ml;
}

void model_list_free(struct model_list *ml)
{
	if (!ml)
		return;
	if (ml->call)
		http_cancel(ml->call);
	while (ml->waiters) {
		struct waiter *w = ml->waiters;
		ml->waiters = w->next;
		free(w);
	}
	for (size_t i = 0; i < ml->n; i++)
		free(ml->names[i]);
	if (ml->kick)
		event_free(ml->kick);
	free(ml->url);
	free(ml->auth);
	free(ml->fallback);
	free(ml);
}
