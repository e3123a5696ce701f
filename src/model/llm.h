/*
 * llm: the OpenAI-compatible chat completions client.
 *
 * POST <base>/chat/completions with "stream": true; the answer arrives as
 * Server-Sent Events of chat.completion.chunk objects, ended by "[DONE]"
 * (https://platform.openai.com/docs/api-reference/chat-streaming). A server
 * that ignores "stream" and answers one JSON object is accepted too.
 *
 * Transient failures (429 rate limits, 5xx, timeouts, a stream cut before any
 * text) are retried here with backoff, obeying Retry-After. Everything else
 * is classified for the caller, who words it for the user: only the caller
 * can trim the history on LLM_CONTEXT. The client also learns how the
 * model counts tokens (llm_token_scale), which the caller's budget needs.
 */
#ifndef TGLLM_LLM_H
#define TGLLM_LLM_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "lib/history.h"
#include "lib/http.h"

enum llm_status {
	LLM_OK,
	LLM_CONTEXT,  /* 400 context_length_exceeded: the prompt is too long */
	LLM_QUOTA,    /* insufficient_quota / 402: the account has no credit */
	LLM_AUTH,     /* 401/403: the key is rejected */
	LLM_BUSY,     /* 429 rate limit, still after retries */
	LLM_DOWN,     /* 5xx, timeouts, network errors, still after retries */
	LLM_REJECTED, /* any other 4xx, or an error object in the stream */
	LLM_CUT,      /* the stream broke after some text: text holds the part */
	LLM_EMPTY,    /* a complete answer with no text */
	LLM_NO_MODEL, /* 404 / model_not_found: the provider has no such model */
};

struct llm_result {
	enum llm_status status; /* the answer (or its part, for LLM_CUT) is in the caller's buffer */
	long prompt_tokens; /* from the usage chunk, -1 when not reported */
	long completion_tokens;
	bool is_at_limit;   /* LLM_CUT: the answer reached the caller's limit (llm_limit), the transfer ended */
	const char *detail; /* for the operator's log: status and the API's message */
};

typedef void (*llm_done_cb)(void *arg, const struct llm_result *res);
/* The answer grew (for live display). */
typedef void (*llm_progress_cb)(void *arg);

struct llm_client;
struct llm_call;

struct llm_options {
	const char *base_url; /* requests go to <base_url>/chat/completions */
	const char *key;      /* a secret: sent as the bearer token, never logged */
	const char *model;
	long timeout_s;       /* a whole answer */
	const char *transcribe_model; /* model/transcribe.c (TRANSCRIBE_MODEL); NULL: whisper-1 */
	const char *image_model;      /* model/images.c (IMAGE_MODEL); NULL: gpt-image-1 */
	const char *image_size;       /* IMAGE_SIZE; NULL: 1024x1024 */
};

struct llm_client *llm_client_new(struct event_base *base, struct http_client *http,
				  const struct llm_options *o);
void llm_client_free(struct llm_client *llm);

/*
 * Real tokens per estimated token (model/tokens.h), learned from the usage
 * the API reports with every answer; 1 until then.
 */
double llm_token_scale(const struct llm_client *llm);
/* The model asked when a call names none (OPENAI_MODEL). */
const char *llm_model(const struct llm_client *llm);

/*
 * Asks model (NULL: the client's, OPENAI_MODEL) for a completion of the n
 * turns (read during the call only). The
 * answer's text is written into *answer, which the caller owns and keeps
 * until done has run or the call is cancelled: it is the one copy of a
 * streaming answer, read live by whoever shows it (emptied before each
 * attempt; its limit is set here). progress may be NULL. done runs exactly
 * once unless cancelled. NULL when the request cannot be started.
 */
struct llm_call *llm_complete(struct llm_client *llm, const char *model, const struct turn *turns, size_t n,
			      struct buf *answer, llm_progress_cb progress, llm_done_cb done,
			      void *arg);
/*
 * Ends the answer once its text would pass max bytes (below the client's own
 * limit): the transfer stops there and done gets LLM_CUT with is_at_limit.
 * What a usage budget leaves an answer.
 */
void llm_limit(struct llm_call *call, size_t max);
void llm_cancel(struct llm_call *call);

/*
 * For the API's other endpoints (model/transcribe.c, model/images.c): <base_url>/<path>
 * (malloc'd; NULL when out of memory; a secret for the log as any URL), the
 * "Authorization: Bearer ..." header, the HTTP client and the options' models.
 */
char *llm_endpoint(const struct llm_client *llm, const char *path);
const char *llm_auth_header(const struct llm_client *llm);
struct http_client *llm_http(const struct llm_client *llm);
const char *llm_transcribe_model(const struct llm_client *llm);
const char *llm_image_model(const struct llm_client *llm);
const char *llm_image_size(const struct llm_client *llm);

/* "ok", "context", ... for log lines. */
const char *llm_status_name(enum llm_status status);

#endif
