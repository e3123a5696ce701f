/*
 * images: pictures drawn by the same OpenAI-compatible API (/image).
 *
 * POST <base_url>/images/generations with {"model": IMAGE_MODEL, "prompt",
 * "n": 1, "size": IMAGE_SIZE}; the picture is data[0].b64_json, or
 * data[0].url, which is then downloaded (bounded) so that the bot uploads the
 * bytes and never hands a provider's URL on. Only dall-e models take
 * "response_format": the others refuse it, so it is sent to those alone
 * (https://platform.openai.com/docs/api-reference/images/create).
 */
#ifndef TGLLM_IMAGES_H
#define TGLLM_IMAGES_H

#include <stddef.h>

#include "model/llm.h"

#define IMAGES_MAX_BYTES (20u << 20) /* a drawn picture; PNGs of 1536x1024 are ~3 MB */

struct picture {
	enum llm_status status; /* LLM_OK with the bytes; LLM_REJECTED for a prompt refused */
	const char *data;       /* the picture's bytes, borrowed for the callback */
	size_t len;
	const char *revised_prompt; /* the model's rewording, NULL when it gave none */
	const char *detail;         /* for the log */
};

typedef void (*images_cb)(void *arg, const struct picture *p);
struct images_call;

/* NULL when it cannot start (done is not called); done runs once unless cancelled. */
struct images_call *images_generate(struct llm_client *llm, const char *prompt, images_cb done, void *arg);
/* NULL is a no-op; done is not called. */
void images_cancel(struct images_call *call);

#endif
