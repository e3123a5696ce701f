/*
 * render: turning the model's answer into Telegram messages.
 *
 * Telegram rejects a message longer than 4096 characters, counted in UTF-16
 * code units (https://core.telegram.org/bots/api#sendmessage), so an answer
 * is cut into parts. This module works on UTF-8 text and never cuts inside a
 * UTF-8 sequence.
 */
#ifndef TGLLM_RENDER_H
#define TGLLM_RENDER_H

#include <stddef.h>

#define RENDER_MAX_UNITS 4096

/* A byte range of the text. */
struct render_part {
	size_t offset;
	size_t len;
};

/* UTF-16 code units of UTF-8 text (4-byte sequences count 2; invalid bytes count 1). */
size_t render_utf16_len(const char *text, size_t len);

/*
 * Cuts text into parts of at most max_units UTF-16 units each: at the last
 * paragraph break ("\n\n") that fits, else the last line break, else the last
 * space, else hard at the limit (on a code point boundary, so a surrogate
 * pair is never split). A separator may start right at the limit: it is not
 * part of either side. Whitespace (ASCII space, tab, CR, LF, VT, FF) at a cut
 * and at both ends of the text is dropped, so no part starts or ends with
 * whitespace (Telegram trims message text anyway), and parts that would be
 * empty or all whitespace are skipped. max_units below 2 is taken as 2, the
 * size of one surrogate pair. Returns the number of parts written to *out
 * (malloc'd, the caller frees; NULL when 0), 0 for empty/blank text, or -1
 * when out of memory.
 */
long render_split_plain(const char *text, size_t len, size_t max_units, struct render_part **out);

#endif
