/*
 * transcribe: speech to text through the same OpenAI-compatible API.
 *
 * POST <base_url>/audio/transcriptions as multipart/form-data: "file" (the
 * bytes, named with an extension the API accepts) and "model"
 * (TRANSCRIBE_MODEL, whisper-1 by default); the JSON answer's "text" is the
 * transcript (https://platform.openai.com/docs/api-reference/audio/createTranscription).
 * One attempt, and one more after a 5xx, a 429 or a failed connection.
 */
#ifndef TGLLM_TRANSCRIBE_H
#define TGLLM_TRANSCRIBE_H

#include <stddef.h>

#include "model/llm.h"

struct transcript {
	enum llm_status status; /* LLM_OK with the text (maybe empty), or what went wrong */
	const char *text;       /* borrowed for the callback; "" unless LLM_OK */
	size_t len;
	const char *detail; /* for the log: status and the API's message */
};

typedef void (*transcribe_cb)(void *arg, const struct transcript *t);
struct transcribe_call;

/*
 * Sends len bytes (copied) as file_name of type mime (NULL: none given).
 * NULL when the request cannot start (done is not called); done runs once
 * unless cancelled.
 */
struct transcribe_call *transcribe(struct llm_client *llm, const char *data, size_t len,
                                   const char *file_name, const char *mime, transcribe_cb done, void *arg);
/* NULL is a no-op; done is not called. */
void transcribe_cancel(struct transcribe_call *call);

/*
 * The name to send a Telegram file under: the API knows a format by its
 * extension, and a voice note's .oga (Ogg Opus) goes as "voice.ogg".
 * into out (at most n bytes).
 */
void transcribe_file_name(const char *file_path, const char *mime, char *out, size_t n);

#endif
