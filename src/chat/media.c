/*
 * A file a chat sent, from its download to a user turn. The decisions
 * (what kind of file, how big, where its bytes go) are MEDIA.md's.
 */
#include "chat/media.h"

#include <jansson.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chat/text.h"
#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/jsonw.h"
#include "lib/log.h"
#include "lib/utf8.h"
#include "model/images.h"
#include "model/tokens.h"
#include "model/transcribe.h"
#include "telegram/send.h"
#include "telegram/tg.h"

/* A text file read into the prompt: the download stops here; the prompt budget decides below it. */
#define MEDIA_TEXT_MAX (4u << 20)
/*
 * A picture or a PDF lives in its turn, base64 (4/3 of it): within the 8 MB
 * a history object may have (S3) and a history load reads (SQLite), with
 * room for the answer. MEDIA.md.
 */
#define MEDIA_INLINE_MAX (5u << 20)
/* The transcript as shown above the answer; the whole of it is asked and stored. */
#define HEARD_SHOWN_MAX 3500

enum media_kind { MEDIA_IMAGE, MEDIA_PDF, MEDIA_AUDIO, MEDIA_TEXT, MEDIA_UNSUPPORTED };

struct media_job {
	enum media_kind kind;
	struct tg_download *download;
	struct transcribe_call *transcribe;
	struct images_call *images;
	char *prompt; /* /image's, the caption unless the model reworded it */
	char *mime;   /* what the bytes are said to be */
};

static long long chat_of(const struct conversation *c)
{
	return (long long)c->u.message.chat_id;
}

static bool is_group(const struct tg_message *m)
{
	return m->chat_type == TG_CHAT_GROUP || m->chat_type == TG_CHAT_SUPERGROUP;
}

static bool has_prefix(const char *s, const char *prefix)
{
	return s && strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* Extensions of files that are text whatever their MIME type says (Telegram often says octet-stream). */
static bool is_text_name(const char *name)
{
	static const char *const exts[] = {
	    "txt",  "md",         "markdown", "csv",   "tsv",  "json", "jsonl", "xml",   "yaml", "yml",
	    "toml", "ini",        "cfg",      "conf",  "log",  "py",   "c",     "h",     "cc",   "cpp",
	    "hpp",  "js",         "ts",       "jsx",   "tsx",  "java", "kt",    "go",    "rs",   "rb",
	    "php",  "sh",         "bash",     "sql",   "html", "htm",  "css",   "scss",  "tex",  "srt",
	    "vtt",  "swift",      "cs",       "lua",   "pl",   "r",    "m",     "scala", "dart", "vue",
	    "env",  "properties", "gradle",   "cmake", "mk",
	};
	const char *dot = name ? strrchr(name, '.') : NULL;
	if (!dot)
		return false;
	for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
		if (strcasecmp(dot + 1, exts[i]) == 0)
			return true;
	return false;
}

static bool is_text_mime(const char *mime)
{
	static const char *const types[] = {
	    "application/json", "application/xml",        "application/x-yaml",
	    "application/yaml", "application/javascript", "application/x-sh",
	    "application/sql",  "application/toml",       "application/x-tex"};
	if (has_prefix(mime, "text/"))
		return true;
	for (size_t i = 0; mime && i < sizeof types / sizeof types[0]; i++)
		if (strcasecmp(mime, types[i]) == 0)
			return true;
	return false;
}

/* The picture formats the vision models take (https://platform.openai.com/docs/guides/images-vision). */
static bool is_image_mime(const char *mime)
{
	return mime && (strcasecmp(mime, "image/jpeg") == 0 || strcasecmp(mime, "image/png") == 0 ||
	                strcasecmp(mime, "image/webp") == 0 || strcasecmp(mime, "image/gif") == 0);
}

static enum media_kind kind_of(const struct tg_media *f)
{
	switch (f->kind) {
	case TG_MEDIA_VOICE:
	case TG_MEDIA_AUDIO:
	case TG_MEDIA_VIDEO_NOTE:
		return MEDIA_AUDIO;
	case TG_MEDIA_PHOTO:
		return MEDIA_IMAGE;
	case TG_MEDIA_DOCUMENT:
		if (is_image_mime(f->mime_type))
			return MEDIA_IMAGE;
		if (f->mime_type && strcasecmp(f->mime_type, "application/pdf") == 0)
			return MEDIA_PDF;
		if (has_prefix(f->mime_type, "audio/"))
			return MEDIA_AUDIO;
		/* A file of no known type may still be text: its bytes say (any UTF-8 is read). */
		if (is_text_mime(f->mime_type) || is_text_name(f->file_name) || !f->mime_type ||
		    strcasecmp(f->mime_type, "application/octet-stream") == 0)
			return MEDIA_TEXT;
		return MEDIA_UNSUPPORTED;
	case TG_MEDIA_NONE:
		break;
	}
	return MEDIA_UNSUPPORTED;
}

/* ---- building the user turn ---- */

/* The question: the caption, or the default one; "Name: " before it in groups, as for text. */
static int append_question(struct buf *b, const struct conversation *c, const char *fallback)
{
	const struct tg_message *m = &c->u.message;
	const char *q = m->caption && m->caption[0] ? m->caption : fallback;
	struct buf t;
	buf_init(&t, MEDIA_TEXT_MAX);
	int rc = 0;
	if (is_group(m))
		rc = buf_append_str(&t, m->from.first_name) != BUF_OK || buf_append_str(&t, ": ") != BUF_OK;
	if (rc == 0 && q)
		rc = buf_append_str(&t, q) != BUF_OK;
	if (rc == 0)
		rc = jsonw_string(b, t.data ? t.data : "", t.len) != BUF_OK;
	buf_free(&t);
	return rc ? -1 : 0;
}

/*
 * [{"type":"text","text":QUESTION},{"type":"image_url","image_url":{"url":"data:MIME;base64,..."}}],
 * or the "file" part of a PDF
 * (https://platform.openai.com/docs/guides/pdf-files): compact, as
 * tokens_estimate_turn reads it.
 */
static int build_parts(struct conversation *c, const char *data, size_t len)
{
	struct media_job *job = c->media;
	const struct tg_message *m = &c->u.message;
	struct buf b;
	buf_init(&b, SIZE_MAX - 1);
	bool is_pdf = job->kind == MEDIA_PDF;
	int rc =
	    buf_append_str(&b, "[{\"type\":\"text\",\"text\":") != BUF_OK ||
	    append_question(&b, c, text_get(is_pdf ? TEXT_PDF_QUESTION : TEXT_PHOTO_QUESTION, c->lang)) != 0;
	if (rc == 0 && is_pdf)
		rc = buf_append_str(&b, "},{\"type\":\"file\",\"file\":{\"filename\":") != BUF_OK ||
		     jsonw_string(&b, m->media.file_name ? m->media.file_name : "document.pdf",
		                  strlen(m->media.file_name ? m->media.file_name : "document.pdf")) !=
		         BUF_OK ||
		     buf_append_str(&b, ",\"file_data\":\"data:application/pdf;base64,") != BUF_OK;
	else if (rc == 0)
		rc = buf_append_str(&b, "},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:") !=
		         BUF_OK ||
		     buf_append_str(&b, job->mime) != BUF_OK || buf_append_str(&b, ";base64,") != BUF_OK;
	if (rc == 0)
		rc = base64_append(&b, data, len) != BUF_OK || buf_append_str(&b, "\"}}]") != BUF_OK;
	if (rc != 0) {
		buf_free(&b);
		return -1;
	}
	c->user.len = b.len;
	c->user.content = buf_take(&b);
	c->user.is_parts = true;
	return 0;
}

/* The file's signature agrees with its type: a corrupt or disguised file is not sent on. */
static bool looks_like(const char *mime, const unsigned char *d, size_t n)
{
	if (strcasecmp(mime, "image/jpeg") == 0)
		return n > 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF;
	if (strcasecmp(mime, "image/png") == 0)
		return n > 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0;
	if (strcasecmp(mime, "image/gif") == 0)
		return n > 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0);
	if (strcasecmp(mime, "image/webp") == 0)
		return n > 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0;
	if (strcasecmp(mime, "application/pdf") == 0)
		return n > 5 && memcmp(d, "%PDF-", 5) == 0;
	return true;
}

/* Text is text when all of it is UTF-8 and none of it NUL. */
static bool is_text(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq_len((const unsigned char *)s + i, n - i);
		if (k == 0 || s[i] == '\0')
			return false;
		i += k;
	}
	return true;
}

static int build_text(struct conversation *c, const char *data, size_t len)
{
	const struct tg_message *m = &c->u.message;
	const char *name = m->media.file_name ? m->media.file_name : "file";
	char *s = NULL;
	int n = asprintf(&s, "%s%s%s%s--- %s ---\n%.*s\n--- end of %s ---",
	                 is_group(m) ? m->from.first_name : "", is_group(m) ? ": " : "",
	                 m->caption ? m->caption : "", m->caption ? "\n\n" : "", name, (int)len, data, name);
	if (n < 0)
		return -1;
	c->user.content = s;
	c->user.len = (size_t)n;
	return 0;
}

/* ---- text files ---- */

/* What the prompt budget holds of text, in bytes (tokens_estimate's 3 bytes a token), with room for a
 * question. */
static size_t text_room(const struct conversation *c)
{
	double scale = llm_token_scale(c->env->llm);
	if (!(scale > 0))
		scale = 1;
	return (size_t)((double)c->env->context_tokens * 0.9 * 3 / scale);
}

static bool fits_prompt(const struct conversation *c, size_t len)
{
	return len <= text_room(c) && len <= MEDIA_TEXT_MAX;
}

static void fail_too_long(struct conversation *c)
{
	size_t room = text_room(c);
	char kb[32], text[512];
	snprintf(kb, sizeof kb, "%zu", (room < MEDIA_TEXT_MAX ? room : MEDIA_TEXT_MAX) / 1024);
	/* The format is ours: TEXT_FILE_TOO_LONG takes one %s. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	snprintf(text, sizeof text, text_get(TEXT_FILE_TOO_LONG, c->lang), kb);
#pragma GCC diagnostic pop
	conversation_fail_text(c, text);
}

/* ---- voice ---- */

static void on_heard_shown(void *arg, const struct tg_result *res)
{
	struct conversation *c = arg;
	c->send_call = NULL;
	if (!res->ok)
		log_warn("chat=%lld: the transcript could not be shown: %ld %s", chat_of(c), res->error_code,
		         res->description);
	conversation_reply(c);
}

/* How much of s (len bytes) fits in max bytes without cutting a character. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	size_t n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	return n;
}

static void on_transcript(void *arg, const struct transcript *t)
{
	struct conversation *c = arg;
	c->media->transcribe = NULL;
	if (t->status != LLM_OK) {
		log_error("chat=%lld: the transcription failed (%s): %s", chat_of(c),
		          llm_status_name(t->status), t->detail);
		conversation_fail(c, TEXT_VOICE_FAILED);
		return;
	}
	size_t start = strspn(t->text, " \t\r\n");
	size_t len = t->len - start;
	while (len > 0 && strchr(" \t\r\n", t->text[start + len - 1]))
		len--;
	if (len == 0) {
		log_info("chat=%lld: the recording has no words", chat_of(c));
		conversation_fail(c, TEXT_VOICE_EMPTY);
		return;
	}
	const char *text = t->text + start;
	const struct tg_message *m = &c->u.message;
	int n = is_group(m) ? asprintf(&c->user.content, "%s: %.*s", m->from.first_name, (int)len, text)
	                    : asprintf(&c->user.content, "%.*s", (int)len, text);
	char *shown = NULL;
	size_t shown_len = utf8_cut(text, len, HEARD_SHOWN_MAX);
	if (n < 0 || asprintf(&shown, "%.*s%s", (int)shown_len, text, shown_len < len ? "…" : "") < 0) {
		if (n < 0)
			c->user.content = NULL;
		free(shown);
		conversation_fail(c, TEXT_MODEL_DOWN);
		return;
	}
	c->user.len = (size_t)n;
	log_info("chat=%lld: heard %zu bytes", chat_of(c), len);
	char *heard = NULL;
	/* The format is ours: TEXT_VOICE_HEARD takes one %s. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	int k = asprintf(&heard, text_get(TEXT_VOICE_HEARD, c->lang), shown);
#pragma GCC diagnostic pop
	free(shown);
	struct tg_target target = tg_target_of(m);
	if (k >= 0)
		c->send_call = tg_send_text(c->env->tg, &target, heard, (size_t)k, on_heard_shown, c);
	free(heard);
	if (!c->send_call) /* the answer matters more than the echo */
		conversation_reply(c);
}

/* ---- the download ---- */

static void on_downloaded(void *arg, const struct tg_file *f)
{
	struct conversation *c = arg;
	struct media_job *job = c->media;
	job->download = NULL;
	if (!f->ok) {
		log_warn("chat=%lld: the file could not be downloaded: %s", chat_of(c), f->detail);
		if (f->is_too_big && job->kind == MEDIA_TEXT)
			fail_too_long(c);
		else
			conversation_fail(c, !f->is_too_big             ? TEXT_FILE_FAILED
			                     : job->kind == MEDIA_AUDIO ? TEXT_FILE_TOO_BIG
			                                                : TEXT_PICTURE_TOO_BIG);
		return;
	}
	log_info("chat=%lld: downloaded a file of %zu bytes", chat_of(c), f->len);
	int rc = 0;
	switch (job->kind) {
	case MEDIA_AUDIO: {
		char name[32];
		transcribe_file_name(f->file_path, job->mime, name, sizeof name);
		job->transcribe = transcribe(c->env->llm, f->data, f->len, name, job->mime, on_transcript, c);
		if (!job->transcribe)
			conversation_fail(c, TEXT_VOICE_FAILED);
		return;
	}
	case MEDIA_IMAGE:
	case MEDIA_PDF:
		if (!looks_like(job->mime, (const unsigned char *)f->data, f->len)) {
			log_warn("chat=%lld: a file said to be %s is not", chat_of(c), job->mime);
			conversation_fail(c, TEXT_FILE_UNSUPPORTED);
			return;
		}
		rc = build_parts(c, f->data, f->len);
		break;
	case MEDIA_TEXT: {
		if (!is_text(f->data, f->len)) {
			log_info("chat=%lld: a document of %zu bytes is not text", chat_of(c), f->len);
			conversation_fail(c, TEXT_FILE_UNSUPPORTED);
			return;
		}
		/* Too big for the prompt is told with the limit, not as a message too long. */
		if (!fits_prompt(c, f->len)) {
			log_warn("chat=%lld: a text file of %zu bytes is over the prompt budget", chat_of(c),
			         f->len);
			fail_too_long(c);
			return;
		}
		rc = build_text(c, f->data, f->len);
		break;
	}
	case MEDIA_UNSUPPORTED:
		break;
	}
	if (rc != 0) {
		log_error("chat=%lld: out of memory building a turn of a file", chat_of(c));
		conversation_fail(c, TEXT_MODEL_DOWN);
		return;
	}
	conversation_reply(c);
}

void media_start(struct conversation *c)
{
	const struct tg_message *m = &c->u.message;
	const struct tg_media *f = &m->media;
	enum media_kind kind = kind_of(f);
	log_info("chat=%lld update=%lld: a file (%s, %lld bytes)", chat_of(c), (long long)c->u.update_id,
	         f->mime_type ? f->mime_type : "no type", (long long)f->file_size);
	if (kind == MEDIA_UNSUPPORTED) {
		conversation_fail(c, TEXT_FILE_UNSUPPORTED);
		return;
	}
	if (f->file_size > TG_FILE_MAX) {
		conversation_fail(c, TEXT_FILE_TOO_BIG);
		return;
	}
	size_t max = kind == MEDIA_TEXT    ? MEDIA_TEXT_MAX
	             : kind == MEDIA_AUDIO ? TG_FILE_MAX
	                                   : MEDIA_INLINE_MAX;
	if (kind == MEDIA_TEXT && f->file_size > 0 && !fits_prompt(c, (size_t)f->file_size)) {
		fail_too_long(c);
		return;
	}
	if (f->file_size > (int64_t)max) {
		conversation_fail(c, TEXT_PICTURE_TOO_BIG);
		return;
	}
	c->media = calloc(1, sizeof *c->media);
	const char *mime = f->mime_type          ? f->mime_type
	                   : kind == MEDIA_IMAGE ? "image/jpeg"
	                                         : "application/octet-stream";
	if (!c->media || !(c->media->mime = strdup(mime))) {
		conversation_fail(c, TEXT_MODEL_DOWN);
		return;
	}
	c->media->kind = kind;
	struct tg_target t = tg_target_of(m);
	tg_typing_start(&c->typing, c->env->tg, c->env->base, &t);
	c->media->download = tg_download(c->env->tg, f->file_id, max, on_downloaded, c);
	if (!c->media->download)
		conversation_fail(c, TEXT_FILE_FAILED);
}

void media_clear(struct conversation *c)
{
	struct media_job *job = c->media;
	if (!job)
		return;
	tg_download_cancel(job->download);
	transcribe_cancel(job->transcribe);
	images_cancel(job->images);
	free(job->prompt);
	free(job->mime);
	free(job);
	c->media = NULL;
}

/* ---- /image ---- */

static void on_photo_sent(void *arg, const struct tg_result *res)
{
	struct conversation *c = arg;
	c->send_call = NULL;
	if (res->ok) {
		log_info("chat=%lld: sent a picture", chat_of(c));
		conversation_done(c);
		return;
	}
	log_error("chat=%lld: sendPhoto failed: %ld %s", chat_of(c), res->error_code, res->description);
	if (res->is_maybe_delivered) /* it may be in the chat: a notice could contradict it */
		conversation_done(c);
	else
		conversation_fail(c, TEXT_IMAGE_FAILED);
}

static void on_picture(void *arg, const struct picture *p)
{
	struct conversation *c = arg;
	c->media->images = NULL;
	if (p->status != LLM_OK) {
		log_error("chat=%lld: no picture (%s): %s", chat_of(c), llm_status_name(p->status),
		          p->detail);
		conversation_fail(c, p->status == LLM_REJECTED ? TEXT_IMAGE_REFUSED
		                     : p->status == LLM_AUTH   ? TEXT_MODEL_AUTH
		                     : p->status == LLM_QUOTA  ? TEXT_MODEL_QUOTA
		                     : p->status == LLM_BUSY   ? TEXT_MODEL_BUSY
		                                               : TEXT_IMAGE_FAILED);
		return;
	}
	const char *caption = p->revised_prompt ? p->revised_prompt : c->media->prompt;
	struct tg_target t = tg_target_of(&c->u.message);
	log_info("chat=%lld: drew a picture of %zu bytes", chat_of(c), p->len);
	if (!(c->send_call = tg_send_photo(c->env->tg, &t, p->data, p->len, caption, on_photo_sent, c)))
		conversation_fail(c, TEXT_IMAGE_FAILED);
}

static void on_usage_sent(void *arg, const struct tg_result *res)
{
	struct conversation *c = arg;
	c->send_call = NULL;
	if (!res->ok)
		log_warn("chat=%lld: could not explain /image: %ld %s", chat_of(c), res->error_code,
		         res->description);
	conversation_done(c);
}

void media_draw(struct conversation *c)
{
	const char *text = c->u.message.text ? c->u.message.text : "";
	const char *prompt = text + strcspn(text, " \t\n"); /* after the command */
	prompt += strspn(prompt, " \t\n");
	if (!*prompt) {
		const char *usage = text_get(TEXT_IMAGE_USAGE, c->lang);
		struct tg_target t = tg_target_of(&c->u.message);
		if (!(c->send_call = tg_send_text(c->env->tg, &t, usage, strlen(usage), on_usage_sent, c)))
			conversation_done(c);
		return;
	}
	c->media = calloc(1, sizeof *c->media);
	if (!c->media || !(c->media->prompt = strdup(prompt))) {
		conversation_fail(c, TEXT_IMAGE_FAILED);
		return;
	}
	struct tg_target t = tg_target_of(&c->u.message);
	tg_action_start(&c->typing, c->env->tg, c->env->base, &t, "upload_photo");
	log_info("chat=%lld update=%lld: drawing a picture (%zu bytes of prompt)", chat_of(c),
	         (long long)c->u.update_id, strlen(prompt));
	if (!(c->media->images = images_generate(c->env->llm, prompt, on_picture, c)))
		conversation_fail(c, TEXT_IMAGE_FAILED);
}

void media_release_memory(void)
{
	/*
	 * glibc raises its mmap threshold each time a big block is freed, so the
	 * next pictures come from the heap, whose freed top it keeps: without a
	 * trim a burst of 100 photos left the daemon at its peak (bench/README.md).
	 */
	(void)malloc_trim(0); /* returns whether memory was released: either is fine */
}

/* ---- older turns without their pictures ---- */

/* The text of a turn of parts, a mark where a picture or a file was; NULL when out of memory. */
static char *parts_text(const struct turn *t, size_t *len)
{
	json_t *parts = json_loadb(t->content, t->len, 0, NULL);
	struct buf b;
	buf_init(&b, SIZE_MAX - 1);
	int rc = BUF_OK;
	for (size_t i = 0; rc == BUF_OK && i < json_array_size(parts); i++) {
		json_t *p = json_array_get(parts, i);
		const char *type = json_string_value(json_object_get(p, "type"));
		const char *text = json_string_value(json_object_get(p, "text"));
		const char *file = json_string_value(json_object_get(json_object_get(p, "file"), "filename"));
		if (b.len)
			rc = buf_append_str(&b, "\n");
		if (rc != BUF_OK || !type)
			continue;
		if (strcmp(type, "text") == 0 && text)
			rc = buf_append_str(&b, text);
		else if (strcmp(type, "file") == 0)
			rc = buf_append_str(&b, "[file ") == BUF_OK &&
			             buf_append_str(&b, file ? file : "") == BUF_OK
			         ? buf_append_str(&b, "]")
			         : BUF_NO_MEMORY;
		else
			rc = buf_append_str(&b, "[picture]");
	}
	if (!parts && rc == BUF_OK)
		rc = buf_append_str(&b, "[picture]"); /* not ours after all: what it was cannot be said */
	json_decref(parts);
	if (rc != BUF_OK || buf_append(&b, "", 0) != BUF_OK) {
		buf_free(&b);
		return NULL;
	}
	*len = b.len;
	return b.data ? buf_take(&b) : strdup("");
}

void media_drop_images(struct history *h, size_t from, size_t images_from)
{
	for (size_t i = from; i < images_from && i < h->len; i++) {
		struct turn *t = &h->turns[i];
		size_t len = 0;
		char *text = t->is_parts ? parts_text(t, &len) : NULL;
		if (!text)
			continue;
		free(t->content);
		t->content = text;
		t->len = len;
		t->is_parts = false;
	}
}
