/*
 * utf8: the one place that decides what well-formed UTF-8 is (Unicode 15,
 * table 3-7), for the modules that must repair or count text byte by byte
 * (Telegram and jansson both refuse invalid UTF-8).
 */
#ifndef TGLLM_UTF8_H
#define TGLLM_UTF8_H

#include <stddef.h>

/*
 * Bytes of the well-formed sequence at s (n bytes available), or 0 when s
 * starts with an invalid byte. Surrogates and overlong forms are invalid, so
 * a 4-byte sequence is exactly a code point outside the BMP: two UTF-16 units.
 */
size_t utf8_seq_len(const unsigned char *s, size_t n);
/* Writes the code point cp (a scalar value: no surrogate, at most U+10FFFF) to u; returns its bytes. */
size_t utf8_write(unsigned long cp, unsigned char u[4]);

#endif
