/*
 * base64 (RFC 4648, the standard alphabet with padding): pictures and PDFs
 * travel to the model as data: URLs, and pictures come back from it as
 * b64_json.
 */
#ifndef TGLLM_BASE64_H
#define TGLLM_BASE64_H

#include <stddef.h>

#include "lib/buf.h"

/* Appends the encoding of n bytes to b. BUF_OK or a buf_error. */
int base64_append(struct buf *b, const void *data, size_t n);
/*
 * Decodes n characters (the standard or the URL-safe alphabet, whitespace
 * skipped, padding optional) into a new
 * buffer of *out_len bytes (malloc'd, NUL-terminated); NULL when the text
 * is not base64 or memory ran out.
 */
char *base64_decode(const char *s, size_t n, size_t *out_len);

#endif
