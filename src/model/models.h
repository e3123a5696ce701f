/*
 * models: the chat models a chat may choose from (/model).
 *
 * OPENAI_MODELS (comma-separated) when set; else what the provider lists
 * at GET <base_url>/models, without the models that do not chat
 * (embeddings, speech, images, moderation…), asked once a process and
 * kept; else, for a provider without that endpoint, the default model
 * alone. The default model is always in the list.
 */
#ifndef TGLLM_MODELS_H
#define TGLLM_MODELS_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "lib/http.h"

#define MODELS_MAX 40 /* a keyboard's worth; the rest can still be named */

struct model_list;

struct model_list_options {
	const char *base_url;   /* the API's, without a trailing slash */
	const char *key;        /* a secret: the bearer token */
	const char *configured; /* OPENAI_MODELS, or NULL */
	const char *fallback;   /* OPENAI_MODEL */
};

/* NULL when out of memory. */
struct model_list *model_list_new(struct event_base *base, struct http_client *http,
                                  const struct model_list_options *o);
void model_list_free(struct model_list *ml);

/* names[0..n), sorted, the default among them; borrowed for the call. */
typedef void (*model_list_cb)(void *arg, const char *const *names, size_t n);
/* Answers from the loop, never inside the call; -1 when out of memory (cb does not run). */
int model_list_get(struct model_list *ml, model_list_cb cb, void *arg);
/* The callbacks waiting with arg will not run. */
void model_list_forget(struct model_list *ml, void *arg);
/* Whether a model id is one that chats, by the provider's naming. */
bool model_is_chat(const char *id);

#endif
