/*
 * Unit tests for src/chunk.c: the reader of one streamed chat-completion
 * chunk. A chunk it reads must mean exactly what llm.c's jansson decoding
 * (on_event, read_usage, read_error) makes of it; ref_read below is that
 * decoding, written again with jansson, and is the judge. The reader may
 * refuse a chunk it is not sure about (the caller then decodes it with
 * jansson), but never one jansson could not decode as a plain object.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "model/chunk.h"

#include "chunk_reference.h"
#include "expect.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define BIG      ((size_t)1 << 24) /* a content buffer no test chunk can fill */

/* --- Running chunk_read and comparing ----------------------------------------- */

struct attempt {
	enum chunk_result result;
	struct chunk chunk;
	struct buf content;
};

/* chunk_read on a content buffer of max bytes already holding prefix. */
static void try_read(const char *json, size_t len, const char *prefix, size_t max, const struct chunk *poison,
                     struct attempt *a)
{
	buf_init(&a->content, max);
	if (buf_append_str(&a->content, prefix) != BUF_OK)
		fail_msg("the prefix \"%s\" does not fit a content buffer of %zu bytes", prefix, max);
	a->chunk = *poison;
	a->result = chunk_read(json, len, &a->chunk, &a->content);
}

/* The bytes as a C string literal writes them, cut after about 1500, for failure messages. */
static const char *escaped(const char *s, size_t n, char *out, size_t cap)
{
	static const char hex[] = "0123456789abcdefABCDEF";
	size_t o = 0;
	bool was_hex_escape = false;
	for (size_t i = 0; i < n; i++) {
		if (o + 12 > cap) {
			snprintf(out + o, cap - o, "...");
			return out;
		}
		unsigned char c = (unsigned char)s[i];
		/* "\xc3" "a" and not "\xc3a", which C reads as one escape. */
		if (was_hex_escape && c && strchr(hex, c))
			o += (size_t)snprintf(out + o, cap - o, "\" \"");
		was_hex_escape = false;
		if (c == '"' || c == '\\')
			o += (size_t)snprintf(out + o, cap - o, "\\%c", c);
		else if (c == '\n')
			o += (size_t)snprintf(out + o, cap - o, "\\n");
		else if (c >= 0x20 && c < 0x7f)
			out[o++] = (char)c;
		else {
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
			was_hex_escape = true;
		}
	}
	out[o] = '\0';
	return out;
}

static const char *result_name(enum chunk_result r)
{
	switch (r) {
	case CHUNK_READ:
		return "CHUNK_READ";
	case CHUNK_OTHER:
		return "CHUNK_OTHER";
	case CHUNK_NO_MEMORY:
		return "CHUNK_NO_MEMORY";
	}
	return "an unknown chunk_result";
}

static const char *outcome_name(enum ref_outcome o)
{
	switch (o) {
	case REF_READ:
		return "a plain object";
	case REF_ERROR:
		return "an error chunk";
	case REF_NOT_OBJECT:
		return "invalid JSON or not an object";
	}
	return "?";
}

#define ESCAPED 1600

/*
 * Fails with the input, what chunk_read made of it and what the reference
 * did. The details go to stderr first: cmocka cuts its messages at 1024 bytes.
 */
static void fail_disagreement(const char *why, const char *json, size_t len, const struct attempt *a,
                              size_t prefix_len, const struct reading *ref)
{
	char in[ESCAPED], got[ESCAPED], want[ESCAPED];
	escaped(json, len, in, sizeof in);
	/* What chunk_read added after the prefix; all of the buffer when the prefix is gone. */
	size_t kept = a->content.len >= prefix_len ? prefix_len : 0;
	escaped(buf_str(&a->content) + kept, a->content.len - kept, got, sizeof got);
	escaped(buf_str(&ref->content), ref->content.len, want, sizeof want);
	fprintf(
	    stderr,
	    "  input: \"%s\"\n  chunk_read: %s {is_finished %d, prompt_tokens %ld, completion_tokens %ld, "
	    "content \"%s\"}\n  reference: %s {is_finished %d, prompt_tokens %ld, completion_tokens %ld, "
	    "content \"%s\"}\n",
	    in, result_name(a->result), a->chunk.is_finished, a->chunk.prompt_tokens,
	    a->chunk.completion_tokens, got, outcome_name(ref->outcome), ref->chunk.is_finished,
	    ref->chunk.prompt_tokens, ref->chunk.completion_tokens, want);
	fail_msg("%s (input and both readings above)", why);
}

static bool same_reading(const struct attempt *a, const char *prefix, const struct reading *ref)
{
	size_t p = strlen(prefix);
	return a->chunk.is_finished == ref->chunk.is_finished &&
	       a->chunk.prompt_tokens == ref->chunk.prompt_tokens &&
	       a->chunk.completion_tokens == ref->chunk.completion_tokens &&
	       a->content.len == p + ref->content.len && memcmp(buf_str(&a->content), prefix, p) == 0 &&
	       memcmp(buf_str(&a->content) + p, buf_str(&ref->content), ref->content.len) == 0;
}

/*
 * Reads json with chunk_read (content buffer without a practical limit,
 * already holding prefix) and with the reference. A CHUNK_READ must be the
 * reference's reading, with the content appended after prefix; anything else
 * must be CHUNK_OTHER with prefix left in place. Returns chunk_read's result.
 */
static enum chunk_result check_agreement(const char *json, size_t len, const char *prefix)
{
	struct reading ref;
	if (!ref_read(json, len, BIG, &ref))
		fail_msg("the reference reader ran out of memory");
	/* Fields chunk_read leaves alone would keep values no reading has. */
	struct chunk poison = {!ref.chunk.is_finished, ~ref.chunk.prompt_tokens,
	                       ~ref.chunk.completion_tokens};
	struct attempt a;
	try_read(json, len, prefix, BIG, &poison, &a);
	size_t p = strlen(prefix);
	if (a.result == CHUNK_READ && ref.outcome != REF_READ)
		fail_disagreement("chunk_read read a chunk jansson decodes otherwise", json, len, &a, p,
		                  &ref);
	if (a.result == CHUNK_READ && !same_reading(&a, prefix, &ref))
		fail_disagreement("chunk_read read the chunk differently from jansson", json, len, &a, p,
		                  &ref);
	if (a.result == CHUNK_NO_MEMORY)
		fail_disagreement("chunk_read ran out of room in a 16 MiB content buffer", json, len, &a, p,
		                  &ref);
	if (a.result == CHUNK_OTHER && (a.content.len < p || memcmp(buf_str(&a.content), prefix, p) != 0))
		fail_disagreement("chunk_read refused the chunk but changed the content before it", json, len,
		                  &a, p, &ref);
	if (a.result != CHUNK_READ && a.result != CHUNK_OTHER)
		fail_disagreement("chunk_read returned a value outside enum chunk_result", json, len, &a, p,
		                  &ref);
	buf_free(&a.content);
	buf_free(&ref.content);
	return a.result;
}

/* --- Real chunks: read, and read as jansson reads them ------------------------- */

struct known_chunk {
	const char *name;
	const char *json;
	bool is_finished;
	long prompt_tokens;
	long completion_tokens;
	const char *content;
};

/* Shapes as each server sends them (captured streams, ids shortened). */
static const struct known_chunk real_chunks[] = {
    {"OpenAI: the first chunk, role and an empty content",
     "{\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\","
     "\"created\":1741569952,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\","
     "\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
     "\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}",
     false, -1, -1, ""},
    {"OpenAI: the first chunk, role only",
     "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,"
     "\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[{\"index\":0,"
     "\"delta\":{\"role\":\"assistant\"},\"logprobs\":null,\"finish_reason\":null}]}",
     false, -1, -1, ""},
    {"OpenAI: a piece of the answer",
     "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,"
     "\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_eb9dce56a8\","
     "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}],"
     "\"usage\":null,\"obfuscation\":\"kxI3Uo\"}",
     false, -1, -1, "Hello"},
    {"OpenAI: finish_reason stop with an empty delta",
     "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,"
     "\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_eb9dce56a8\",\"choices\":[{\"index\":0,"
     "\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}",
     true, -1, -1, ""},
    {"OpenAI: the usage chunk with empty choices",
     "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,"
     "\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_eb9dce56a8\","
     "\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29,"
     "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_details\":"
     "{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,"
     "\"rejected_prediction_tokens\":0}}}",
     false, 19, 10, ""},
    {"OpenAI: logprobs with a \"content\" key of their own",
     "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":"
     "[{\"index\":0,\"logprobs\":{\"content\":[{\"token\":\" world\",\"logprob\":-0.0012,\"bytes\":"
     "[32,119,111,114,108,100],\"top_logprobs\":[]}],\"refusal\":null},\"delta\":{\"content\":\" world\"},"
     "\"finish_reason\":null}]}",
     false, -1, -1, " world"},
    {"OpenAI: a tool call",
     "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-"
     "4o\","
     "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{"
     "\"index\":0,"
     "\"id\":\"call_DdmO9pD3xa9XTPNJ32zg2hcA\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
     "\"arguments\":\"{\\\"city\\\":\"}}]},\"logprobs\":null,\"finish_reason\":null}]}",
     false, -1, -1, ""},
    {"OpenAI: finish_reason length",
     "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-"
     "4o\","
     "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"length\"}]}",
     true, -1, -1, ""},
    {"OpenAI with n=2: choice 1's chunk is still choices[0]",
     "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-"
     "4o\","
     "\"choices\":[{\"index\":1,\"delta\":{\"content\":\"B\"},\"logprobs\":null,\"finish_reason\":null}]}",
     false, -1, -1, "B"},
    {"OpenRouter: a piece with provider and native_finish_reason",
     "{\"id\":\"gen-1741569952-abcDEF\",\"provider\":\"OpenAI\",\"model\":\"openai/gpt-4o\","
     "\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"choices\":[{\"index\":0,\"delta\":"
     "{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null,\"native_finish_reason\":null,"
     "\"logprobs\":null}]}",
     false, -1, -1, "Hi"},
    {"OpenRouter: the last chunk with usage and cost",
     "{\"id\":\"gen-1741569952-abcDEF\",\"provider\":\"Google\",\"model\":\"google/gemini-2.0-flash-001\","
     "\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"choices\":[{\"index\":0,\"delta\":"
     "{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":\"stop\",\"native_finish_reason\":\"STOP\","
     "\"logprobs\":null}],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":48,\"total_tokens\":60,"
     "\"cost\":0.0000222,\"is_byok\":false,\"prompt_tokens_details\":{\"cached_tokens\":0},"
     "\"completion_tokens_details\":{\"reasoning_tokens\":0}}}",
     true, 12, 48, ""},
    {"OpenRouter: reasoning details",
     "{\"id\":\"gen-2\",\"provider\":\"DeepInfra\",\"model\":\"deepseek/deepseek-r1\","
     "\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"choices\":[{\"index\":0,\"delta\":"
     "{\"role\":\"assistant\",\"content\":\"\",\"reasoning\":\"Let me think\",\"reasoning_details\":"
     "[{\"type\":\"reasoning.text\",\"text\":\"Let me think\",\"format\":\"unknown\",\"index\":0}]},"
     "\"finish_reason\":null,\"native_finish_reason\":null,\"logprobs\":null}]}",
     false, -1, -1, ""},
    {"Ollama: a piece of the answer",
     "{\"id\":\"chatcmpl-425\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,"
     "\"model\":\"llama3.2\",\"system_fingerprint\":\"fp_ollama\",\"choices\":[{\"index\":0,\"delta\":"
     "{\"role\":\"assistant\",\"content\":\"Why\"},\"finish_reason\":null}]}",
     false, -1, -1, "Why"},
    {"Ollama: the last chunk",
     "{\"id\":\"chatcmpl-425\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,"
     "\"model\":\"llama3.2\",\"system_fingerprint\":\"fp_ollama\",\"choices\":[{\"index\":0,\"delta\":"
     "{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":\"stop\"}]}",
     true, -1, -1, ""},
    {"Ollama: the usage chunk",
     "{\"id\":\"chatcmpl-425\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,"
     "\"model\":\"llama3.2\",\"system_fingerprint\":\"fp_ollama\",\"choices\":[],\"usage\":"
     "{\"prompt_tokens\":26,\"completion_tokens\":8,\"total_tokens\":34}}",
     false, 26, 8, ""},
    {"llama.cpp: the first chunk, content null, choices before id",
     "{\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}]"
     ","
     "\"created\":1741569952,\"id\":\"chatcmpl-x7pQ\",\"model\":\"gpt-3.5-turbo\","
     "\"system_fingerprint\":\"b4800-a1b2c3d4\",\"object\":\"chat.completion.chunk\"}",
     false, -1, -1, ""},
    {"llama.cpp: a piece, finish_reason before delta",
     "{\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\" there\"}}],"
     "\"created\":1741569952,\"id\":\"chatcmpl-x7pQ\",\"model\":\"gpt-3.5-turbo\","
     "\"system_fingerprint\":\"b4800-a1b2c3d4\",\"object\":\"chat.completion.chunk\"}",
     false, -1, -1, " there"},
    {"llama.cpp: the last chunk with usage and timings",
     "{\"choices\":[{\"finish_reason\":\"stop\",\"index\":0,\"delta\":{}}],\"created\":1741569952,"
     "\"id\":\"chatcmpl-x7pQ\",\"model\":\"gpt-3.5-turbo\",\"system_fingerprint\":\"b4800-a1b2c3d4\","
     "\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":12,\"prompt_tokens\":5,"
     "\"total_tokens\":17},\"timings\":{\"prompt_n\":5,\"prompt_ms\":20.123,\"prompt_per_token_ms\":4.0246,"
     "\"prompt_per_second\":248.472891,\"predicted_n\":12,\"predicted_ms\":150.5,"
     "\"predicted_per_token_ms\":12.541667,\"predicted_per_second\":79.734219}}",
     true, 5, 12, ""},
    {"YandexGPT (OpenAI compatible): a piece in Russian",
     "{\"id\":\"3c7c4b43-0b62-4c2e-bd29-8b7e4e6a1a6e\",\"object\":\"chat.completion.chunk\","
     "\"created\":1741569952,\"model\":\"gpt://b1gabcdefghijklmnop/yandexgpt/latest\",\"choices\":"
     "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Привет! Чем могу помочь?\"},"
     "\"finish_reason\":null}]}",
     false, -1, -1, "Привет! Чем могу помочь?"},
    {"YandexGPT (OpenAI compatible): the last chunk with usage",
     "{\"id\":\"3c7c4b43-0b62-4c2e-bd29-8b7e4e6a1a6e\",\"object\":\"chat.completion.chunk\","
     "\"created\":1741569952,\"model\":\"gpt://b1gabcdefghijklmnop/yandexgpt/latest\",\"choices\":"
     "[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":18,"
     "\"completion_tokens\":7,\"total_tokens\":25}}",
     true, 18, 7, ""},
    {"token counts written as strings (YandexGPT's own API does) are not integers",
     "{\"id\":\"y\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":"
     "{\"prompt_tokens\":\"18\",\"completion_tokens\":\"7\",\"total_tokens\":\"25\"}}",
     true, -1, -1, ""},
    {"YandexGPT's own API: an object without choices",
     "{\"result\":{\"alternatives\":[{\"message\":{\"role\":\"assistant\",\"text\":\"Привет\"},"
     "\"status\":\"ALTERNATIVE_STATUS_PARTIAL\"}],\"usage\":{\"inputTextTokens\":\"18\","
     "\"completionTokens\":\"1\",\"totalTokens\":\"19\"},\"modelVersion\":\"23.10.2024\"}}",
     false, -1, -1, ""},
    {"DeepSeek: the first chunk, content null beside reasoning_content",
     "{\"id\":\"0f6d9a77-5d1c-4b0e-9e1a-2f6b4f3c8d11\",\"object\":\"chat.completion.chunk\","
     "\"created\":1738000000,\"model\":\"deepseek-reasoner\",\"system_fingerprint\":\"fp_7e73fd9a08_"
     "prod0225\","
     "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":"
     "\"\"},"
     "\"logprobs\":null,\"finish_reason\":null}]}",
     false, -1, -1, ""},
    {"DeepSeek: reasoning, content null",
     "{\"id\":\"0f6d9a77\",\"object\":\"chat.completion.chunk\",\"created\":1738000000,"
     "\"model\":\"deepseek-reasoner\",\"system_fingerprint\":\"fp_7e73fd9a08_prod0225\",\"choices\":"
     "[{\"index\":0,\"delta\":{\"content\":null,\"reasoning_content\":\"Okay, the user says \\\"hi\\\"\"},"
     "\"logprobs\":null,\"finish_reason\":null}]}",
     false, -1, -1, ""},
    {"DeepSeek: the answer, reasoning_content null",
     "{\"id\":\"0f6d9a77\",\"object\":\"chat.completion.chunk\",\"created\":1738000000,"
     "\"model\":\"deepseek-reasoner\",\"system_fingerprint\":\"fp_7e73fd9a08_prod0225\",\"choices\":"
     "[{\"index\":0,\"delta\":{\"content\":\"Hello\",\"reasoning_content\":null},\"logprobs\":null,"
     "\"finish_reason\":null}]}",
     false, -1, -1, "Hello"},
    {"DeepSeek: the last chunk with usage",
     "{\"id\":\"0f6d9a77\",\"object\":\"chat.completion.chunk\",\"created\":1738000000,"
     "\"model\":\"deepseek-reasoner\",\"system_fingerprint\":\"fp_7e73fd9a08_prod0225\",\"choices\":"
     "[{\"index\":0,\"delta\":{\"content\":\"\",\"reasoning_content\":null},\"logprobs\":null,"
     "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":13,\"completion_tokens\":120,"
     "\"total_tokens\":133,\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":"
     "{\"reasoning_tokens\":100},\"prompt_cache_hit_tokens\":0,\"prompt_cache_miss_tokens\":13}}",
     true, 13, 120, ""},
    {"Groq: usage inside x_groq is not the top-level usage",
     "{\"id\":\"chatcmpl-8a1b\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,"
     "\"model\":\"llama-3.3-70b-versatile\",\"system_fingerprint\":\"fp_c5f20b5bb1\",\"choices\":"
     "[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"x_groq\":"
     "{\"id\":\"req_01jp0abc\",\"usage\":{\"queue_time\":0.021,\"prompt_tokens\":44,\"prompt_time\":0.003,"
     "\"completion_tokens\":9,\"completion_time\":0.03,\"total_tokens\":53,\"total_time\":0.033}}}",
     true, -1, -1, ""},
    {"Mistral: a piece",
     "{\"id\":\"cmpl-e5cc70bb28c444948073e77776eb30ef\",\"object\":\"chat.completion.chunk\","
     "\"created\":1702256327,\"model\":\"mistral-small-latest\",\"choices\":[{\"index\":0,\"delta\":"
     "{\"content\":\"Bonjour\"},\"finish_reason\":null}]}",
     false, -1, -1, "Bonjour"},
    {"Mistral: usage in the finishing chunk, total before completion",
     "{\"id\":\"cmpl-e5cc\",\"object\":\"chat.completion.chunk\",\"created\":1702256327,"
     "\"model\":\"mistral-small-latest\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},"
     "\"finish_reason\":\"stop\",\"logprobs\":null}],\"usage\":{\"prompt_tokens\":10,\"total_tokens\":20,"
     "\"completion_tokens\":10}}",
     true, 10, 10, ""},
    {"keys in unusual order: usage first, finish_reason before delta, id last",
     "{\"usage\":{\"completion_tokens\":3,\"prompt_tokens\":4},\"choices\":[{\"finish_reason\":\"stop\","
     "\"delta\":{\"content\":\"!\"},\"index\":0}],\"id\":\"x\",\"object\":\"chat.completion.chunk\"}",
     true, 4, 3, "!"},
    {"whitespace and newlines between all tokens",
     "{\n  \"id\" : \"c1\" ,\n\t\"choices\" :\r\n [ { \"delta\" : { \"content\" : \"a b\" } ,"
     "\"finish_reason\"\t:\tnull } ] ,\n  \"usage\" : { \"prompt_tokens\" : 7 ,\r\n"
     "\"completion_tokens\":2\t}\n}",
     false, 7, 2, "a b"},
    {"content with every escape",
     "{\"choices\":[{\"delta\":{\"content\":\"\\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t \\u00e9\\u00C9 "
     "\\ud83d\\ude00 \\uD83D\\uDE00 \\u2028\\u0041\\u007f\"}}]}",
     false, -1, -1,
     "\"q\" \\ / \b\f\n\r\t \xc3\xa9\xc3\x89 \xf0\x9f\x98\x80 \xf0\x9f\x98\x80 \xe2\x80\xa8"
     "A\x7f"},
    {"raw UTF-8: Cyrillic, emoji with a skin tone, a ZWJ family",
     "{\"choices\":[{\"delta\":{\"content\":\"Привет, мир! 👋🏽 👨‍👩‍👧 ёЁ\"}}]}",
     false, -1, -1, "Привет, мир! 👋🏽 👨‍👩‍👧 ёЁ"},
    {"empty content", "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":null}]}",
     false, -1, -1, ""},
    {"an answer that is itself JSON",
     "{\"choices\":[{\"delta\":{\"content\":\"{\\\"choices\\\":[],\\\"content\\\":\\\"x\\\"}\"}}]}", false,
     -1, -1, "{\"choices\":[],\"content\":\"x\"}"},
    {"brackets inside strings of skipped fields",
     "{\"id\":\"}{][\\\"\",\"choices\":[{\"delta\":{\"role\":\"]}\",\"content\":\"]}\"}}]}", false, -1, -1,
     "]}"},
};

static void test_real_chunks_are_read_as_jansson_reads_them(void **state)
{
	(void)state;
	for (size_t i = 0; i < COUNT(real_chunks); i++) {
		const struct known_chunk *k = &real_chunks[i];
		size_t len = strlen(k->json);
		/* The reference must itself say what the case says, or the case is wrong. */
		struct reading ref;
		if (!ref_read(k->json, len, BIG, &ref))
			fail_msg("the reference reader ran out of memory");
		if (ref.outcome != REF_READ || ref.chunk.is_finished != k->is_finished ||
		    ref.chunk.prompt_tokens != k->prompt_tokens ||
		    ref.chunk.completion_tokens != k->completion_tokens ||
		    strcmp(buf_str(&ref.content), k->content))
			fail_msg("%s: the jansson reference does not read the case as written", k->name);
		buf_free(&ref.content);

		enum chunk_result r = check_agreement(k->json, len, "");
		if (r != CHUNK_READ)
			fail_msg("%s: expected CHUNK_READ, got %s", k->name, result_name(r));
		r = check_agreement(k->json, len, "Earlier text. ");
		if (r != CHUNK_READ)
			fail_msg("%s, after earlier text: expected CHUNK_READ, got %s", k->name,
			         result_name(r));
	}
}

/* --- Chunks that must be refused --------------------------------------------- */

enum refusal {
	REFUSE_ERROR,   /* an "error" key: jansson's reading ends the stream */
	REFUSE_INVALID, /* jansson rejects it, or it is not an object */
	REFUSE_UNSURE,  /* valid, but outside what the reader promises to be sure of */
};

struct refused_chunk {
	const char *name;
	const char *json;
	size_t len; /* 0: strlen(json) */
	enum refusal why;
};

#define NUL_AFTER  "{\"choices\":[]}\0"
#define NUL_INSIDE "{\"choices\":[{\"delta\":{\"content\":\"a\0b\"}}]}"

static const struct refused_chunk refused_chunks[] = {
    {"an error object",
     "{\"error\":{\"message\":\"Rate limit "
     "reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}",
     0, REFUSE_ERROR},
    {"OpenRouter's mid-stream error beside choices",
     "{\"id\":\"cmpl-abc123\",\"object\":\"chat.completion.chunk\",\"created\":1234567890,"
     "\"model\":\"gpt-3.5-turbo\",\"provider\":\"openai\",\"error\":{\"code\":\"server_error\","
     "\"message\":\"Provider disconnected unexpectedly\"},\"choices\":[{\"index\":0,\"delta\":"
     "{\"content\":\"\"},\"finish_reason\":\"error\"}]}",
     0, REFUSE_ERROR},
    {"an error string", "{\"error\":\"overloaded\"}", 0, REFUSE_ERROR},
    {"an error null", "{\"error\":null}", 0, REFUSE_ERROR},
    {"an error false", "{\"error\":false,\"choices\":[]}", 0, REFUSE_ERROR},
    {"an empty error object", "{\"error\":{}}", 0, REFUSE_ERROR},
    {"an error after content and usage",
     "{\"choices\":[{\"delta\":{\"content\":\"partial\"},\"finish_reason\":\"stop\"}],"
     "\"usage\":{\"prompt_tokens\":1},\"error\":[]}",
     0, REFUSE_ERROR},
    {"an error key written with an escape", "{\"\\u0065rror\":1,\"choices\":[]}", 0, REFUSE_ERROR},

    {"a trailing comma in an object", "{\"choices\":[],}", 0, REFUSE_INVALID},
    {"a trailing comma in an array", "{\"choices\":[{\"delta\":{\"content\":\"a\"}},]}", 0, REFUSE_INVALID},
    {"a missing colon", "{\"choices\"[]}", 0, REFUSE_INVALID},
    {"a missing comma", "{\"id\":1 \"choices\":[]}", 0, REFUSE_INVALID},
    {"a missing value", "{\"choices\":}", 0, REFUSE_INVALID},
    {"a missing key", "{:1}", 0, REFUSE_INVALID},
    {"a number key", "{1:2}", 0, REFUSE_INVALID},
    {"a lone comma", "{,}", 0, REFUSE_INVALID},
    {"array items without a comma", "{\"x\":[1 2],\"choices\":[]}", 0, REFUSE_INVALID},
    {"an array starting with a comma", "{\"x\":[,1]}", 0, REFUSE_INVALID},
    {"single-quoted keys", "{'choices':[]}", 0, REFUSE_INVALID},
    {"a single-quoted content", "{\"choices\":[{\"delta\":{\"content\":'hi'}}]}", 0, REFUSE_INVALID},
    {"an unterminated content", "{\"choices\":[{\"delta\":{\"content\":\"hi}}]}", 0, REFUSE_INVALID},
    {"an unterminated object", "{\"choices\":[{\"delta\":{\"content\":\"hi\"}}]", 0, REFUSE_INVALID},
    {"a letter after the object", "{\"choices\":[]}x", 0, REFUSE_INVALID},
    {"a second object", "{\"choices\":[]}{}", 0, REFUSE_INVALID},
    {"a number after the object", "{\"choices\":[]} 1", 0, REFUSE_INVALID},
    {"a NUL byte after the object", NUL_AFTER, sizeof NUL_AFTER - 1, REFUSE_INVALID},
    {"a closing bracket too many", "{\"choices\":[]}}", 0, REFUSE_INVALID},
    {"a leading zero", "{\"created\":01,\"choices\":[]}", 0, REFUSE_INVALID},
    {"leading zeros in a token count", "{\"usage\":{\"prompt_tokens\":007}}", 0, REFUSE_INVALID},
    {"a negative leading zero", "{\"x\":-01}", 0, REFUSE_INVALID},
    {"a bare minus", "{\"x\":-}", 0, REFUSE_INVALID},
    {"a plus sign", "{\"x\":+1}", 0, REFUSE_INVALID},
    {"a point without digits after", "{\"x\":1.}", 0, REFUSE_INVALID},
    {"a point without digits before", "{\"x\":.5}", 0, REFUSE_INVALID},
    {"an exponent without digits", "{\"x\":1e}", 0, REFUSE_INVALID},
    {"two points", "{\"x\":1.5.2}", 0, REFUSE_INVALID},
    {"hexadecimal", "{\"x\":0x10}", 0, REFUSE_INVALID},
    {"NaN", "{\"x\":NaN}", 0, REFUSE_INVALID},
    {"Infinity", "{\"x\":-Infinity}", 0, REFUSE_INVALID},
    {"an integer too big for jansson", "{\"usage\":{\"prompt_tokens\":12345678901234567890}}", 0,
     REFUSE_INVALID},
    {"19 nines, above LONG_MAX and jansson's integers", "{\"usage\":{\"prompt_tokens\":9999999999999999999}}",
     0, REFUSE_INVALID},
    {"19 nines, negative", "{\"x\":-9999999999999999999,\"choices\":[]}", 0, REFUSE_INVALID},
    {"a short null", "{\"finish_reason\":nul}", 0, REFUSE_INVALID},
    {"a long null", "{\"choices\":[{\"finish_reason\":nulll}]}", 0, REFUSE_INVALID},
    {"a capital True", "{\"x\":True}", 0, REFUSE_INVALID},
    {"a control byte in content", "{\"choices\":[{\"delta\":{\"content\":\"a\x01z\"}}]}", 0, REFUSE_INVALID},
    {"a raw newline in content", "{\"choices\":[{\"delta\":{\"content\":\"a\nb\"}}]}", 0, REFUSE_INVALID},
    {"a raw tab in a skipped string", "{\"id\":\"a\tb\",\"choices\":[]}", 0, REFUSE_INVALID},
    {"a raw NUL byte in content", NUL_INSIDE, sizeof NUL_INSIDE - 1, REFUSE_INVALID},
    {"the escape \\x", "{\"choices\":[{\"delta\":{\"content\":\"\\x41\"}}]}", 0, REFUSE_INVALID},
    {"the escape \\a", "{\"id\":\"\\a\",\"choices\":[]}", 0, REFUSE_INVALID},
    {"the escape \\'", "{\"choices\":[{\"delta\":{\"content\":\"\\'\"}}]}", 0, REFUSE_INVALID},
    {"the escape \\U", "{\"choices\":[{\"delta\":{\"content\":\"\\U00e9\"}}]}", 0, REFUSE_INVALID},
    {"a \\u with two digits", "{\"choices\":[{\"delta\":{\"content\":\"\\u12\"}}]}", 0, REFUSE_INVALID},
    {"a \\u with a non-hex digit", "{\"choices\":[{\"delta\":{\"content\":\"\\u12G4\"}}]}", 0,
     REFUSE_INVALID},
    {"a backslash at the end of the text", "{\"choices\":[{\"delta\":{\"content\":\"\\", 0, REFUSE_INVALID},
    {"a lone high surrogate", "{\"choices\":[{\"delta\":{\"content\":\"\\ud800\"}}]}", 0, REFUSE_INVALID},
    {"a high surrogate before a letter", "{\"choices\":[{\"delta\":{\"content\":\"\\ud83dx\"}}]}", 0,
     REFUSE_INVALID},
    {"a high surrogate before a non-surrogate escape",
     "{\"choices\":[{\"delta\":{\"content\":\"\\ud800\\u0041\"}}]}", 0, REFUSE_INVALID},
    {"two high surrogates", "{\"choices\":[{\"delta\":{\"content\":\"\\ud83d\\ud83d\"}}]}", 0,
     REFUSE_INVALID},
    {"a lone low surrogate", "{\"choices\":[{\"delta\":{\"content\":\"\\udc00\"}}]}", 0, REFUSE_INVALID},
    {"a surrogate pair reversed", "{\"choices\":[{\"delta\":{\"content\":\"\\ude00\\ud83d\"}}]}", 0,
     REFUSE_INVALID},
    {"a lone surrogate in a skipped field", "{\"model\":\"\\udfff\",\"choices\":[]}", 0, REFUSE_INVALID},
    {"\\u0000 in content", "{\"choices\":[{\"delta\":{\"content\":\"a\\u0000b\"}}]}", 0, REFUSE_INVALID},
    {"\\u0000 in a skipped field", "{\"model\":\"\\u0000\",\"choices\":[]}", 0, REFUSE_INVALID},
    {"\\u0000 in a key", "{\"a\\u0000\":1,\"choices\":[]}", 0, REFUSE_INVALID},
    {"byte FF in content", "{\"choices\":[{\"delta\":{\"content\":\"\xff\"}}]}", 0, REFUSE_INVALID},
    {"a lone continuation byte in content", "{\"choices\":[{\"delta\":{\"content\":\"a\x80z\"}}]}", 0,
     REFUSE_INVALID},
    {"a cut two-byte sequence in content", "{\"choices\":[{\"delta\":{\"content\":\"\xd0\"}}]}", 0,
     REFUSE_INVALID},
    {"a cut four-byte sequence in content", "{\"choices\":[{\"delta\":{\"content\":\"\xf0\x9f\x98\"}}]}", 0,
     REFUSE_INVALID},
    {"an overlong slash in content", "{\"choices\":[{\"delta\":{\"content\":\"\xc0\xaf\"}}]}", 0,
     REFUSE_INVALID},
    {"an overlong three-byte form in content", "{\"choices\":[{\"delta\":{\"content\":\"\xe0\x80\xaf\"}}]}",
     0, REFUSE_INVALID},
    {"a UTF-8 surrogate in content", "{\"choices\":[{\"delta\":{\"content\":\"\xed\xa0\x80\"}}]}", 0,
     REFUSE_INVALID},
    {"a code point above U+10FFFF in content",
     "{\"choices\":[{\"delta\":{\"content\":\"\xf4\x90\x80\x80\"}}]}", 0, REFUSE_INVALID},
    {"byte FF in a skipped field", "{\"model\":\"\xff\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}", 0,
     REFUSE_INVALID},
    {"a UTF-8 surrogate in a skipped field",
     "{\"model\":\"\xed\xbf\xbf\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}", 0, REFUSE_INVALID},
    {"an overlong form in a skipped field",
     "{\"choices\":[{\"delta\":{\"role\":\"\xc1\xbf\",\"content\":\"a\"}}]}", 0, REFUSE_INVALID},
    {"invalid UTF-8 in a key", "{\"\xfe\":1,\"choices\":[]}", 0, REFUSE_INVALID},
    {"a UTF-8 byte outside strings", "{\"choices\":[]\xc3\xa9}", 0, REFUSE_INVALID},
    {"a byte order mark", "\xef\xbb\xbf{\"choices\":[]}", 0, REFUSE_INVALID},
    {"a form feed between tokens", "{\f\"choices\":[]}", 0, REFUSE_INVALID},
    {"a vertical tab between tokens", "{\"choices\":\v[]}", 0, REFUSE_INVALID},
    {"a top-level array", "[{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}]", 0, REFUSE_INVALID},
    {"an empty top-level array", "[]", 0, REFUSE_INVALID},
    {"a top-level string", "\"content\"", 0, REFUSE_INVALID},
    {"a top-level number", "42", 0, REFUSE_INVALID},
    {"a top-level null", "null", 0, REFUSE_INVALID},
    {"[DONE]", "[DONE]", 0, REFUSE_INVALID},
    {"nothing", "", 0, REFUSE_INVALID},
    {"only whitespace", " \n", 0, REFUSE_INVALID},

    {"content written with an escape in its key", "{\"choices\":[{\"delta\":{\"con\\u0074ent\":\"x\"}}]}", 0,
     REFUSE_UNSURE},
    {"choices written with an escape in its key", "{\"\\u0063hoices\":[{\"delta\":{\"content\":\"x\"}}]}", 0,
     REFUSE_UNSURE},
    {"delta written with an escape in its key", "{\"choices\":[{\"delt\\u0061\":{\"content\":\"x\"}}]}", 0,
     REFUSE_UNSURE},
    {"finish_reason written with an escape in its key",
     "{\"choices\":[{\"delta\":{},\"finish\\u005freason\":\"stop\"}]}", 0, REFUSE_UNSURE},
    {"usage written with an escape in its key", "{\"\\u0075sage\":{\"prompt_tokens\":3}}", 0, REFUSE_UNSURE},
    {"prompt_tokens written with an escape in its key", "{\"usage\":{\"prompt\\u005ftokens\":3}}", 0,
     REFUSE_UNSURE},
    {"content given twice", "{\"choices\":[{\"delta\":{\"content\":\"a\",\"content\":\"b\"}}]}", 0,
     REFUSE_UNSURE},
    {"content given twice, the second null",
     "{\"choices\":[{\"delta\":{\"content\":\"a\",\"content\":null}}]}", 0, REFUSE_UNSURE},
    {"choices given twice", "{\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"choices\":[]}", 0,
     REFUSE_UNSURE},
    {"choices given twice, both with content",
     "{\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"choices\":[{\"delta\":{\"content\":\"b\"}}]}", 0,
     REFUSE_UNSURE},
    {"an exponent in a token count", "{\"usage\":{\"prompt_tokens\":1e5}}", 0, REFUSE_UNSURE},
    {"a capital exponent in a skipped field", "{\"created\":1E9,\"choices\":[]}", 0, REFUSE_UNSURE},
    {"a negative exponent in a skipped field", "{\"x\":2.5e-3,\"choices\":[]}", 0, REFUSE_UNSURE},
    {"a signed exponent in a skipped array", "{\"x\":[1e+2],\"choices\":[]}", 0, REFUSE_UNSURE},
    {"19 digits in a skipped field", "{\"created\":1234567890123456789,\"choices\":[]}", 0, REFUSE_UNSURE},
    {"19 digits, negative", "{\"x\":-1234567890123456789,\"choices\":[]}", 0, REFUSE_UNSURE},
    {"the largest 64-bit integer as a token count", "{\"usage\":{\"prompt_tokens\":9223372036854775807}}", 0,
     REFUSE_UNSURE},
    {"a real whose 19 integer digits are above LONG_MAX", "{\"x\":9999999999999999999.5,\"choices\":[]}", 0,
     REFUSE_UNSURE},
};

static void test_refused_chunks_are_other(void **state)
{
	(void)state;
	static const enum ref_outcome expected_ref[] = {
	    [REFUSE_ERROR] = REF_ERROR, [REFUSE_INVALID] = REF_NOT_OBJECT, [REFUSE_UNSURE] = REF_READ};
	for (size_t i = 0; i < COUNT(refused_chunks); i++) {
		const struct refused_chunk *k = &refused_chunks[i];
		size_t len = k->len ? k->len : strlen(k->json);
		struct reading ref;
		if (!ref_read(k->json, len, BIG, &ref))
			fail_msg("the reference reader ran out of memory");
		if (ref.outcome != expected_ref[k->why])
			fail_msg("%s: the jansson reference finds %s, the case says %s", k->name,
			         outcome_name(ref.outcome), outcome_name(expected_ref[k->why]));
		buf_free(&ref.content);
		enum chunk_result r = check_agreement(k->json, len, "Kept. ");
		if (r != CHUNK_OTHER)
			fail_msg("%s: expected CHUNK_OTHER, got %s", k->name, result_name(r));
	}
}

/* {"x": then depth levels of [ or {"a": then 1 then their ends, then a usual choices member. */
static void make_nested(struct buf *b, size_t depth, bool is_object)
{
	buf_reset(b);
	int rc = buf_append_str(b, "{\"x\":");
	for (size_t i = 0; i < depth && rc == BUF_OK; i++)
		rc = buf_append_str(b, is_object ? "{\"a\":" : "[");
	rc = rc == BUF_OK ? buf_append_str(b, "1") : rc;
	for (size_t i = 0; i < depth && rc == BUF_OK; i++)
		rc = buf_append_str(b, is_object ? "}" : "]");
	rc = rc == BUF_OK ? buf_append_str(b, ",\"choices\":[{\"delta\":{\"content\":\"deep\"}}]}") : rc;
	if (rc != BUF_OK)
		fail_msg("cannot build a chunk nested %zu deep", depth);
}

static void test_nesting_deeper_than_32_is_refused(void **state)
{
	(void)state;
	/* 33 levels inside the top object: deeper than 32 however the top one is counted. */
	static const size_t depths[] = {33, 40, 100, 2047, 2048, 5000};
	struct buf b;
	buf_init(&b, BIG);
	for (size_t i = 0; i < COUNT(depths); i++) {
		for (int is_object = 0; is_object < 2; is_object++) {
			make_nested(&b, depths[i], is_object);
			enum chunk_result r = check_agreement(b.data, b.len, "");
			if (r != CHUNK_OTHER)
				fail_msg(
				    "%s nested %zu deep in a skipped field: expected CHUNK_OTHER, got %s",
				    is_object ? "objects" : "arrays", depths[i], result_name(r));
		}
	}
	buf_free(&b);
}

static void test_shallow_nesting_is_read(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, BIG);
	/* choices[0].delta is 4 levels down already; a tool call's arguments go about as deep. */
	for (size_t depth = 0; depth <= 4; depth++) {
		for (int is_object = 0; is_object < 2; is_object++) {
			make_nested(&b, depth, is_object);
			enum chunk_result r = check_agreement(b.data, b.len, "");
			if (r != CHUNK_READ)
				fail_msg("%s nested %zu deep in a skipped field: expected CHUNK_READ, got %s",
				         is_object ? "objects" : "arrays", depth, result_name(r));
		}
	}
	buf_free(&b);
}

/* A real too large for a double is not JSON jansson accepts, with or without an exponent. */
static void test_real_too_big_for_a_double_is_refused(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, BIG);
	int rc = buf_append_str(&b, "{\"x\":1");
	for (int i = 0; i < 400 && rc == BUF_OK; i++)
		rc = buf_append_str(&b, "0");
	rc = rc == BUF_OK ? buf_append_str(&b, ".5,\"choices\":[{\"delta\":{\"content\":\"a\"}}]}") : rc;
	if (rc != BUF_OK)
		fail_msg("cannot build a chunk with a 400-digit real");
	struct reading ref;
	if (!ref_read(b.data, b.len, BIG, &ref))
		fail_msg("the reference reader ran out of memory");
	expect_int("the reference on a 400-digit real (REF_NOT_OBJECT)", REF_NOT_OBJECT, ref.outcome);
	buf_free(&ref.content);
	enum chunk_result r = check_agreement(b.data, b.len, "");
	if (r != CHUNK_OTHER)
		fail_msg("a 400-digit real in a skipped field: expected CHUNK_OTHER, got %s", result_name(r));
	buf_free(&b);
}

/* --- Edge cases: a reading must agree; refusing them is allowed ---------------- */

static const char *const edge_chunks[] = {
    "{}",
    "  {\"choices\":[{\"delta\":{\"content\":\"ws\"}}]} \r\n",
    "{\"usage\":{\"prompt_tokens\":-0,\"completion_tokens\":-5}}",
    "{\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":-1}}",
    "{\"usage\":{\"prompt_tokens\":9.0,\"completion_tokens\":0.5}}",
    "{\"usage\":{\"prompt_tokens\":-0.0,\"completion_tokens\":100.25}}",
    "{\"usage\":{\"prompt_tokens\":\"9\",\"completion_tokens\":true}}",
    "{\"usage\":{\"prompt_tokens\":null,\"completion_tokens\":{}}}",
    "{\"usage\":{\"prompt_tokens\":[3],\"completion_tokens\":false}}",
    "{\"usage\":[1,2]}",
    "{\"usage\":\"none\"}",
    "{\"usage\":{\"prompt_tokens\":123456789012345678,\"completion_tokens\":-123456789012345678}}",
    "{\"usage\":{\"prompt_tokens\":999999999999999999}}",
    "{\"usage\":{\"prompt_tokens\":0.1234567890123456789}}",
    "{\"prompt_tokens\":5,\"completion_tokens\":6,\"choices\":[{\"usage\":{\"prompt_tokens\":5}}]}",
    "{\"usage\":{\"usage\":{\"prompt_tokens\":5},\"completion_tokens\":6}}",
    "{\"usage\":{\"prompt_tokens_details\":{\"prompt_tokens\":5},\"completion_tokens\":6}}",
    "{\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"\"}]}",
    "{\"choices\":[{\"delta\":{},\"finish_reason\":0}]}",
    "{\"choices\":[{\"delta\":{},\"finish_reason\":{}}]}",
    "{\"choices\":[{\"delta\":{},\"finish_reason\":[\"stop\"]}]}",
    "{\"choices\":[{\"delta\":{},\"finish_reason\":false}]}",
    "{\"choices\":[{\"delta\":{},\"finish_reason\":true}]}",
    "{\"choices\":[{\"delta\":{},\"finish_reason\":\"\\u00e9\"}]}",
    "{\"choices\":{\"0\":{\"delta\":{\"content\":\"a\"}}}}",
    "{\"choices\":[null,{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}",
    "{\"choices\":[[{\"delta\":{\"content\":\"a\"}}]]}",
    "{\"choices\":\"stop\"}",
    "{\"choices\":null}",
    "{\"choices\":[1,2,3]}",
    "{\"choices\":[{\"delta\":\"content\"}]}",
    "{\"choices\":[{\"delta\":null,\"finish_reason\":\"stop\"}]}",
    "{\"choices\":[{\"delta\":[{\"content\":\"a\"}]}]}",
    "{\"choices\":[{\"delta\":{\"content\":5}}]}",
    "{\"choices\":[{\"delta\":{\"content\":[\"a\"]}}]}",
    "{\"choices\":[{\"delta\":{\"content\":{\"text\":\"a\"}}}]}",
    "{\"choices\":[{\"delta\":{\"content\":true}}]}",
    "{\"choices\":[{\"message\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}",
    "{\"choices\":[{\"delta\":{\"content\":\"a\"}},{\"delta\":{\"content\":\"b\"},\"finish_reason\":\"stop\"}"
    "]}",
    "{\"choices\":[{\"delta\":{\"x\":{\"content\":\"nested\"}}}]}",
    "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"content\":\"nested\",\"finish_reason\":\"stop\"}]}}]}",
    "{\"delta\":{\"content\":\"top\"},\"finish_reason\":\"stop\",\"content\":\"x\"}",
    "{\"choices\":[{\"error\":{\"message\":\"x\"},\"delta\":{\"content\":\"a\"}}]}",
    "{\"choices\":[{\"delta\":{\"content\":\"a\",\"error\":1}}],\"x\":{\"error\":1}}",
    "{\"errors\":[],\"err\":1,\"Error\":1,\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
    "{\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"finish_reason\":null}]}",
    "{\"choices\":[{\"delta\":{},\"finish_reason\":null,\"finish_reason\":\"stop\"}]}",
    "{\"usage\":{\"prompt_tokens\":1},\"usage\":null}",
    "{\"usage\":null,\"usage\":{\"prompt_tokens\":1}}",
    "{\"usage\":{\"prompt_tokens\":1,\"prompt_tokens\":2,\"completion_tokens\":3,\"completion_tokens\":4.0}}",
    "{\"choices\":[{\"delta\":{\"content\":\"a\"},\"delta\":{}}]}",
    "{\"choices\":[{\"delta\":{},\"delta\":{\"content\":\"b\"}}]}",
    "{\"id\":1,\"id\":2,\"choices\":[{\"index\":0,\"index\":0,\"delta\":{\"content\":\"a\"}}]}",
    "{\"choices\":[{\"delta\":{\"content\":\"a\"}},{\"delta\":{\"content\":\"b\",\"content\":\"c\"}}]}",
    "{\"i\\u0064\":\"x\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
    "{\"\\u00e9t\\u00e9\":1,\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
    "{\"choices_\":[{\"delta\":{\"content\":\"a\"}}],\"choice\":[{\"delta\":{\"content\":\"b\"}}]}",
    "{\"choices\":[{\"delta\":{\"contents\":\"a\",\"conten\":\"b\",\"Content\":\"c\"}}]}",
    "{\"choices\":[{\"deltas\":{\"content\":\"a\"},\"delt\":{\"content\":\"b\"},\"finish_reasons\":\"x\"}]}",
    "{\"usages\":{\"prompt_tokens\":1},\"usage\":{\"prompt_token\":2,\"prompt_tokens_\":3}}",
    "{\"CHOICES\":[{\"delta\":{\"content\":\"a\"}}]}",
    "{\"\":\"empty key\",\"choices\":[{\"\":1,\"delta\":{\"\":\"\",\"content\":\"a\"}}]}",
    "{\"choices\":[{\"delta\":{\"content\":\"\\uffff\\ufffe\\ufdd0\"}}]}",
    "{\"choices\":[{\"delta\":{\"content\":\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\xf0\x90\x80\x80\"}}]}",
    "{\"choices\":[{\"delta\":{\"content\":\"\\udbff\\udfff\\ud800\\udc00\"}}]}",
    "{\"choices\":[{\"delta\":{\"content\":\"\x7f and \\u007f\"}}]}",
    "{\"choices\":[{\"delta\":{\"content\":\"\\\\u0000 is text\"}}]}",
    "{\"x\":-0.0,\"y\":123.456,\"z\":0.000001,\"w\":[0,-0,1.0],\"choices\":[{\"delta\":{\"content\":\"a\"}}]"
    "}",
    "{\"x\":true,\"y\":false,\"z\":null,\"w\":[true,false,null,{}],\"choices\":[{\"delta\":{\"content\":"
    "\"a\"}}]}",
    "{\"x\":{},\"y\":[],\"z\":[{}],\"w\":[[]],\"choices\":[{\"delta\":{}}]}",
};

static void test_edge_chunks_agree_when_read(void **state)
{
	(void)state;
	size_t refused = 0;
	for (size_t i = 0; i < COUNT(edge_chunks); i++) {
		if (check_agreement(edge_chunks[i], strlen(edge_chunks[i]), "Kept. ") == CHUNK_READ)
			continue;
		char in[ESCAPED];
		print_message("[ NOTE     ] refused (allowed): \"%s\"\n",
		              escaped(edge_chunks[i], strlen(edge_chunks[i]), in, sizeof in));
		refused++;
	}
	print_message("[ NOTE     ] %zu of %zu edge chunks refused\n", refused, COUNT(edge_chunks));
}

/* A long content and many small escapes: nothing about the reader is sized for short answers. */
static void test_long_content_is_read_whole(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, BIG);
	int rc = buf_append_str(&b, "{\"choices\":[{\"delta\":{\"content\":\"");
	for (int i = 0; i < 8192 && rc == BUF_OK; i++)
		rc = buf_append_str(&b, i % 3 ? "Ёж \\n" : "\\ud83d\\ude00\\\"");
	rc = rc == BUF_OK ? buf_append_str(&b, "\"},\"finish_reason\":\"stop\"}]}") : rc;
	if (rc != BUF_OK)
		fail_msg("cannot build a chunk with a long content");
	enum chunk_result r = check_agreement(b.data, b.len, "");
	if (r != CHUNK_READ)
		fail_msg("a %zu-byte chunk with a long content: expected CHUNK_READ, got %s", b.len,
		         result_name(r));
	buf_free(&b);
}

/* --- The content buffer -------------------------------------------------------- */

static void test_content_is_appended_after_what_the_buffer_holds(void **state)
{
	(void)state;
	static const char *const pieces[] = {
	    "{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}",
	    "{\"choices\":[{\"delta\":{\"content\":\"При\"}}]}",
	    "{\"choices\":[{\"delta\":{\"content\":\"вет\"}}]}",
	    "{\"choices\":[{\"delta\":{\"content\":\", \\u043c\\u0438\\u0440\"}}]}",
	    "{\"choices\":[{\"delta\":{}}]}",
	    "{\"choices\":[{\"delta\":{\"content\":\"!\"},\"finish_reason\":\"stop\"}]}",
	    "{\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}",
	};
	struct buf content;
	buf_init(&content, 1024);
	struct chunk c = {false, -1, -1};
	for (size_t i = 0; i < COUNT(pieces); i++) {
		enum chunk_result r = chunk_read(pieces[i], strlen(pieces[i]), &c, &content);
		if (r != CHUNK_READ)
			fail_msg("piece %zu of a streamed answer: expected CHUNK_READ, got %s", i,
			         result_name(r));
		if (i == 5)
			expect_int("is_finished after the finish_reason chunk", 1, c.is_finished);
	}
	expect_str("the answer put together from the pieces", "Привет, мир!", buf_str(&content));
	expect_int("prompt_tokens of the usage chunk", 9, c.prompt_tokens);
	expect_int("completion_tokens of the usage chunk", 4, c.completion_tokens);
	expect_int("is_finished of the usage chunk (it has no choices)", 0, c.is_finished);
	buf_free(&content);
}

static void test_content_beyond_the_buffer_max_is_no_memory(void **state)
{
	(void)state;
	static const char json[] = "{\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}";
	struct chunk poison = {true, 99, 99};
	struct attempt a;

	try_read(json, strlen(json), "ab", 7, &poison, &a);
	expect_int("\"ab\" + \"Hello\" in a buffer of max 7 (CHUNK_READ)", CHUNK_READ, a.result);
	expect_str("content filling the buffer exactly", "abHello", buf_str(&a.content));
	buf_free(&a.content);

	try_read(json, strlen(json), "ab", 6, &poison, &a);
	expect_int("\"ab\" + \"Hello\" in a buffer of max 6 (CHUNK_NO_MEMORY)", CHUNK_NO_MEMORY, a.result);
	if (a.content.len > 6)
		fail_msg("the buffer of max 6 holds %zu bytes", a.content.len);
	buf_free(&a.content);

	try_read(json, strlen(json), "", 4, &poison, &a);
	expect_int("\"Hello\" in an empty buffer of max 4 (CHUNK_NO_MEMORY)", CHUNK_NO_MEMORY, a.result);
	buf_free(&a.content);

	/* A full buffer still takes chunks that add nothing. */
	static const char *const nothing_to_add[] = {
	    "{\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"stop\"}]}",
	    "{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null}}]}",
	    "{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
	};
	for (size_t i = 0; i < COUNT(nothing_to_add); i++) {
		try_read(nothing_to_add[i], strlen(nothing_to_add[i]), "full", 4, &poison, &a);
		if (a.result != CHUNK_READ)
			fail_msg(
			    "a chunk without content into a full buffer (%s): expected CHUNK_READ, got %s",
			    nothing_to_add[i], result_name(a.result));
		expect_str("the full buffer after a chunk without content", "full", buf_str(&a.content));
		buf_free(&a.content);
	}
}

/* --- Property: mutated and generated chunks are never read differently ---------- */

struct rng {
	uint64_t state;
};

/* Knuth's MMIX LCG; the high bits, the good ones. Deterministic, so a failure replays. */
static uint32_t rng_next(struct rng *r)
{
	r->state = r->state * 6364136223846793005u + 1442695040888963407u;
	return (uint32_t)(r->state >> 33);
}

static size_t rng_below(struct rng *r, size_t n)
{
	return n ? rng_next(r) % n : 0;
}

#define PICK(r, a) ((a)[rng_below((r), COUNT(a))])

struct gen {
	struct rng *rng;
	struct buf *out;
};

static void put(struct gen *g, const char *s)
{
	if (buf_append_str(g->out, s) != BUF_OK)
		fail_msg("a generated chunk outgrew %zu bytes", g->out->max);
}

static void put_space(struct gen *g)
{
	static const char *const spaces[] = {"", "", "", "", "", "", " ", "\n", "\t", "\r\n  "};
	put(g, PICK(g->rng, spaces));
}

static const char *const strings[] = {
    "\"\"",
    "\"Hi\"",
    "\" world\"",
    "\"Привет\"",
    "\"😀 ok\"",
    "\"\\u00e9\\ud83d\\ude00\"",
    "\"\\n\\t\\\"\\\\\\/\\b\\f\\r\"",
    "\"stop\"",
    "\"content\"",
    "\"{\\\"choices\\\":[]}\"",
    "\"]}\"",
    "\"\\u043f\\u0440\\u0438\"",
};

static const char *const numbers[] = {
    "0",
    "-0",
    "7",
    "-1",
    "42",
    "1741569952",
    "9.0",
    "0.5",
    "-12.25",
    "123456789012345678",
    "-99999999999999999",
};

/* Numbers the reader refuses: rarer, or few generated chunks would be read. */
static const char *const unsure_numbers[] = {"1234567890123456789", "1e5", "2E-3", "1.5e+2"};

static const char *pick_number(struct rng *r)
{
	return rng_below(r, 48) ? PICK(r, numbers) : PICK(r, unsure_numbers);
}

static const char *const literals[] = {"null", "true", "false"};

static const char *const keys[] = {
    "\"id\"",    "\"content\"",       "\"choices\"",       "\"delta\"", "\"usage\"",
    "\"index\"", "\"finish_reason\"", "\"prompt_tokens\"", "\"x\"",     "\"\"",
};

static void put_value(struct gen *g, int depth);

static void put_member(struct gen *g, bool *is_first, const char *key)
{
	if (!*is_first)
		put(g, ",");
	*is_first = false;
	put_space(g);
	put(g, key);
	put_space(g);
	put(g, ":");
	put_space(g);
}

static void put_value(struct gen *g, int depth)
{
	bool is_first = true;
	/* Containers get rarer deeper down, as in real chunks. */
	size_t kind = rng_below(g->rng, depth < 4 ? 3 + (size_t)(4 - depth) : 3);
	switch (kind) {
	case 0:
		put(g, PICK(g->rng, strings));
		break;
	case 1:
		put(g, pick_number(g->rng));
		break;
	case 2:
		put(g, PICK(g->rng, literals));
		break;
	case 3:
	case 4:
		put(g, "[");
		for (size_t n = rng_below(g->rng, 4); n > 0; n--) {
			if (!is_first)
				put(g, ",");
			is_first = false;
			put_space(g);
			put_value(g, depth + 1);
			put_space(g);
		}
		put(g, "]");
		break;
	default:
		put(g, "{");
		for (size_t n = rng_below(g->rng, 4); n > 0; n--) {
			put_member(g, &is_first, PICK(g->rng, keys));
			put_value(g, depth + 1);
			put_space(g);
		}
		put(g, "}");
		break;
	}
}

/* Writes an object of the given members in a random order, each maybe twice, some left out. */
static void put_object(struct gen *g, int n_members,
                       void (*put_one)(struct gen *g, bool *is_first, int member))
{
	int order[16];
	for (int i = 0; i < n_members; i++)
		order[i] = i;
	for (int i = n_members - 1; i > 0; i--) {
		int j = (int)rng_below(g->rng, (size_t)i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	bool is_first = true;
	put(g, "{");
	for (int i = 0; i < n_members; i++) {
		if (rng_below(g->rng, 4) == 0)
			continue;
		put_one(g, &is_first, order[i]);
		if (rng_below(g->rng, 24) == 0)
			put_one(g, &is_first, order[i]);
	}
	put_space(g);
	put(g, "}");
}

static void put_usage_member(struct gen *g, bool *is_first, int member)
{
	static const char *const names[] = {"\"prompt_tokens\"", "\"completion_tokens\"", "\"total_tokens\"",
	                                    "\"cost\""};
	put_member(g, is_first, names[member]);
	if (rng_below(g->rng, 6) == 0)
		put_value(g, 3);
	else
		put(g, pick_number(g->rng));
}

static void put_delta_member(struct gen *g, bool *is_first, int member)
{
	static const char *const names[] = {"\"role\"", "\"content\"", "\"reasoning_content\"",
	                                    "\"refusal\""};
	put_member(g, is_first, names[member]);
	if (rng_below(g->rng, 4) == 0)
		put_value(g, 3);
	else
		put(g, PICK(g->rng, strings));
}

static void put_choice_member(struct gen *g, bool *is_first, int member)
{
	static const char *const finish[] = {"null", "null", "\"stop\"", "\"\"", "\"length\"", "0", "{}"};
	static const char *const names[] = {"\"index\"", "\"delta\"", "\"finish_reason\"", "\"logprobs\"",
	                                    "\"native_finish_reason\""};
	put_member(g, is_first, names[member]);
	if (member == 1 && rng_below(g->rng, 8))
		put_object(g, 4, put_delta_member);
	else if (member == 2)
		put(g, PICK(g->rng, finish));
	else
		put_value(g, 2);
}

static void put_chunk_member(struct gen *g, bool *is_first, int member)
{
	static const char *const names[] = {
	    "\"id\"",      "\"object\"", "\"created\"", "\"model\"",
	    "\"choices\"", "\"usage\"",  "\"x_groq\"",  "\"system_fingerprint\"",
	    "\"error\""};
	if (member == 8 && rng_below(g->rng, 6))
		return; /* error chunks are rare in streams, and in the generated ones */
	put_member(g, is_first, names[member]);
	switch (member) {
	case 4:
		if (rng_below(g->rng, 10) == 0) {
			put_value(g, 1);
			break;
		}
		put(g, "[");
		for (size_t n = rng_below(g->rng, 3) + (rng_below(g->rng, 4) != 0), i = 0; i < n; i++) {
			if (i)
				put(g, ",");
			put_space(g);
			if (rng_below(g->rng, 12) == 0)
				put_value(g, 2);
			else
				put_object(g, 5, put_choice_member);
		}
		put(g, "]");
		break;
	case 5:
	case 6:
		if (rng_below(g->rng, 8) == 0)
			put_value(g, 1);
		else
			put_object(g, 4, put_usage_member);
		break;
	default:
		put_value(g, 1);
	}
}

static void put_chunk(struct gen *g)
{
	put_space(g);
	put_object(g, 9, put_chunk_member);
	put_space(g);
}

/* Pieces of JSON, right and wrong, that mutations insert. */
static const char *const tokens[] = {
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    " ",
    "\n",
    "0",
    "-",
    ".",
    "e",
    "E",
    "+",
    "\"content\"",
    "\"choices\"",
    "\"delta\"",
    "\"error\"",
    "\"usage\"",
    "\"finish_reason\"",
    "\"prompt_tokens\"",
    "\"completion_tokens\"",
    "null",
    "true",
    "false",
    "nul",
    "01",
    "-0",
    "1.5",
    "1e5",
    "12345678901234567890",
    "1234567890123456789",
    "9999999999999999999",
    "\\u00e9",
    "\\ud83d\\ude00",
    "\\ud800",
    "\\udc00",
    "\\u0000",
    "\\x",
    "\\u",
    "\\\"",
    "\xc3\xa9",
    "\xff",
    "\xc3",
    "\xed\xa0\x80",
    "\xf0\x9f\x98\x80",
    "\xef\xbb\xbf",
    "\x01",
    "\t",
    "\f",
    "\"con\\u0074ent\"",
    "{\"content\":\"x\"}",
    "[{\"delta\":{\"content\":\"y\"}}]",
    "{\"prompt_tokens\":3}",
    "\"stop\"",
    ",\"content\":\"z\"",
    ",\"choices\":[]",
    ",\"error\":null",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
};

static const unsigned char bytes[] = {'"',  '\\', '{',  '}',  '[',  ']',  ':',  ',', '0',
                                      '9',  '-',  'e',  '.',  ' ',  'u',  'n',  't', 0,
                                      0x1f, 0x7f, 0x80, 0xbf, 0xc3, 0xed, 0xf0, 0xff};

#define DOC_MAX 16384

/* Applies one random mutation to doc (len bytes, DOC_MAX room); returns the new length. */
static size_t mutate(struct rng *r, char *doc, size_t len, const char *other, size_t other_len)
{
	size_t at = rng_below(r, len + 1), n;
	const char *piece;
	switch (rng_below(r, 9)) {
	case 0: /* flip a bit */
		if (len)
			doc[at % len] ^= (char)(1u << rng_below(r, 8));
		return len;
	case 1: /* change a byte */
		if (len)
			doc[at % len] = (char)PICK(r, bytes);
		return len;
	case 2: /* insert a byte */
		if (len == DOC_MAX)
			return len;
		memmove(doc + at + 1, doc + at, len - at);
		doc[at] = rng_below(r, 2) ? (char)PICK(r, bytes) : (char)rng_below(r, 256);
		return len + 1;
	case 3: /* delete a few bytes */
		n = rng_below(r, 8) + 1;
		if (n > len - at)
			n = len - at;
		memmove(doc + at, doc + at + n, len - at - n);
		return len - n;
	case 4: /* cut the end off */
		return at;
	case 5: /* replace a few bytes with a token */
		n = rng_below(r, 6);
		if (n > len - at)
			n = len - at;
		memmove(doc + at, doc + at + n, len - at - n);
		len -= n;
		/* fall through */
	case 6: /* insert a token */
		piece = PICK(r, tokens);
		n = strlen(piece);
		break;
	case 7: /* repeat a piece of the chunk itself: keys given twice, nesting */
		if (!len)
			return len;
		{
			size_t from = rng_below(r, len);
			n = rng_below(r, len - from) + 1;
			char copy[DOC_MAX];
			memcpy(copy, doc + from, n);
			if (len + n > DOC_MAX)
				return len;
			memmove(doc + at + n, doc + at, len - at);
			memcpy(doc + at, copy, n);
			return len + n;
		}
	default: /* splice in a piece of another chunk */
		if (!other_len)
			return len;
		{
			size_t from = rng_below(r, other_len);
			piece = other + from;
			n = rng_below(r, other_len - from) + 1;
		}
		break;
	}
	if (at > len)
		at = len;
	if (len + n > DOC_MAX)
		return len;
	memmove(doc + at + n, doc + at, len - at);
	memcpy(doc + at, piece, n);
	return len + n;
}

struct tally {
	size_t read, refused_valid, refused_error, refused_invalid;
};

/*
 * Checks chunk_read against the reference on json: a reading agrees with it
 * (content appended after a prefix); with the content buffer cut to fit
 * exactly it still reads, and one byte shorter it is CHUNK_NO_MEMORY.
 */
static void check_case(const char *json, size_t len, size_t case_no, struct tally *t)
{
	static const char prefix[] = "» ";
	struct reading ref;
	if (!ref_read(json, len, BIG, &ref))
		fail_msg("the reference reader ran out of memory");
	enum chunk_result r = check_agreement(json, len, prefix);
	if (r == CHUNK_READ) {
		t->read++;
		struct chunk poison = {!ref.chunk.is_finished, ~ref.chunk.prompt_tokens,
		                       ~ref.chunk.completion_tokens};
		struct attempt a;
		size_t fit = strlen(prefix) + ref.content.len;
		try_read(json, len, prefix, fit, &poison, &a);
		if (a.result != CHUNK_READ || !same_reading(&a, prefix, &ref)) {
			print_message(
			    "[ CASE     ] %zu, content buffer max %zu (exactly the prefix and content)\n",
			    case_no, fit);
			fail_disagreement(
			    "chunk_read read it differently in a buffer of exactly the needed size", json,
			    len, &a, strlen(prefix), &ref);
		}
		buf_free(&a.content);
		if (ref.content.len) {
			try_read(json, len, prefix, fit - 1, &poison, &a);
			if (a.result != CHUNK_NO_MEMORY) {
				print_message("[ CASE     ] %zu, content buffer max %zu (one byte short)\n",
				              case_no, fit - 1);
				fail_disagreement("expected CHUNK_NO_MEMORY with a buffer one byte too small",
				                  json, len, &a, strlen(prefix), &ref);
			}
			buf_free(&a.content);
		}
	} else if (ref.outcome == REF_READ) {
		t->refused_valid++;
	} else if (ref.outcome == REF_ERROR) {
		t->refused_error++;
	} else {
		t->refused_invalid++;
	}
	buf_free(&ref.content);
}

#define CASES 12000

static void test_mutated_chunks_are_never_read_differently(void **state)
{
	(void)state;
	struct rng rng = {20250311};
	static char doc[DOC_MAX];
	struct buf generated;
	buf_init(&generated, DOC_MAX);
	struct gen g = {&rng, &generated};
	struct tally t = {0, 0, 0, 0};
	for (size_t i = 0; i < CASES; i++) {
		const char *other = real_chunks[rng_below(&rng, COUNT(real_chunks))].json;
		size_t len;
		/* Half start from a real chunk, half from a generated one. */
		if (i % 2) {
			const char *real = real_chunks[rng_below(&rng, COUNT(real_chunks))].json;
			len = strlen(real);
			memcpy(doc, real, len);
		} else {
			buf_reset(&generated);
			put_chunk(&g);
			len = generated.len;
			memcpy(doc, generated.data, len);
		}
		/* A quarter (all generated) unmutated: valid, they exercise the meaning; the rest 1-4
		 * mutations. */
		size_t mutations = i % 4 == 0 ? 0 : rng_below(&rng, 4) + 1;
		for (size_t m = 0; m < mutations; m++)
			len = mutate(&rng, doc, len, other, strlen(other));
		check_case(doc, len, i, &t);
	}
	buf_free(&generated);
	print_message("[ NOTE     ] %d cases: %zu read, refused: %zu valid, %zu error chunks, %zu invalid\n",
	              CASES, t.read, t.refused_valid, t.refused_error, t.refused_invalid);
	/* A reader that refuses everything agrees with anything: it must have read a good share. */
	if (t.read < CASES / 8)
		fail_msg("expected at least %d of %d cases read, got %zu: the agreement proves little",
		         CASES / 8, CASES, t.read);
	if (t.refused_invalid < CASES / 10)
		fail_msg("expected at least %d invalid cases, got %zu: the mutations are too gentle",
		         CASES / 10, t.refused_invalid);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_real_chunks_are_read_as_jansson_reads_them),
	    cmocka_unit_test(test_refused_chunks_are_other),
	    cmocka_unit_test(test_nesting_deeper_than_32_is_refused),
	    cmocka_unit_test(test_shallow_nesting_is_read),
	    cmocka_unit_test(test_real_too_big_for_a_double_is_refused),
	    cmocka_unit_test(test_edge_chunks_agree_when_read),
	    cmocka_unit_test(test_long_content_is_read_whole),
	    cmocka_unit_test(test_content_is_appended_after_what_the_buffer_holds),
	    cmocka_unit_test(test_content_beyond_the_buffer_max_is_no_memory),
	    cmocka_unit_test(test_mutated_chunks_are_never_read_differently),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
