/*
 * buf: a growable byte buffer with a hard size limit.
 *
 * Every buffer fed from the network (response bodies, SSE events, model
 * answers) has a maximum; growing past it is an error the caller handles,
 * never unbounded growth (the idea of curl's dynbuf). The data is always
 * NUL-terminated so text can be used as a C string. The buffer owns its data.
 */
#ifndef TGLLM_BUF_H
#define TGLLM_BUF_H

#include <stddef.h>

struct buf {
	char *data; /* NULL until the first append */
	size_t len;
	size_t cap;
	size_t max; /* largest len allowed */
};

enum buf_error { BUF_OK = 0, BUF_TOO_BIG = -1, BUF_NO_MEMORY = -2 };

void buf_init(struct buf *b, size_t max);
/* Appends n bytes; on failure the buffer is unchanged. */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_append_str(struct buf *b, const char *s);
/* The contents as a C string ("" when empty); borrowed. */
const char *buf_str(const struct buf *b);
/* Hands the data to the caller (who frees it) and empties the buffer. */
char *buf_take(struct buf *b);
void buf_reset(struct buf *b);
void buf_free(struct buf *b);

#endif
