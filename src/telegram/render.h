/*
 * render: turning the model's answer into Telegram messages.
 *
 * Models answer in Markdown (CommonMark + GFM). render_markdown parses it
 * with md4c and produces plain text plus a list of MessageEntity ranges
 * (https://core.telegram.org/bots/api#messageentity), cut into messages that
 * each fit Telegram's limits. Entities are sent as such, never as parse_mode,
 * so no reply can fail with "can't parse entities".
 *
 * Telegram rejects a message longer than 4096 characters, counted in UTF-16
 * code units (https://core.telegram.org/bots/api#sendmessage), and keeps at
 * most 100 entities of one message, so an answer is cut into parts. This
 * module works on UTF-8 text and never cuts inside a UTF-8 sequence.
 *
 * Ownership: a render_output owns its parts, each part its text and entity
 * array, each entity its url and language strings; render_output_free frees
 * them all. The type strings are static.
 */
#ifndef TGLLM_RENDER_H
#define TGLLM_RENDER_H

#include "lib/buf.h"
#include <stdbool.h>
#include <stddef.h>

#define RENDER_MAX_UNITS    4096
#define RENDER_MAX_ENTITIES 100
/* Larger inputs are refused (-1): rendering needs memory in proportion to the input. */
#define RENDER_MAX_INPUT (16u << 20)

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

struct render_entity {
	const char *type; /* static: "bold", "italic", "strikethrough", "code", "pre", "text_link",
	                     "blockquote", "expandable_blockquote" */
	size_t offset;    /* UTF-16 code units from the start of its message */
	size_t length;    /* UTF-16 code units, never 0 */
	char *url;        /* text_link only, else NULL (owned) */
	char *language;   /* pre only, NULL when none (owned) */
};

/* One message: UTF-8 text (owned, NUL-terminated, len bytes) and its entities (owned). */
struct render_message {
	char *text;
	size_t len;
	struct render_entity *entities;
	size_t n_entities;
};

struct render_output {
	struct render_message *parts; /* owned, in order */
	size_t n_parts;
};

/* What becomes of the model's reasoning, <think>...</think> at the start of the answer. */
enum render_think {
	RENDER_THINK_HIDE,  /* left out */
	RENDER_THINK_QUOTE, /* shown first, as an expandable blockquote of plain text */
};

struct render_options {
	size_t max_units;    /* UTF-16 units per message; 0 = RENDER_MAX_UNITS, below 2 taken as 2 */
	size_t max_entities; /* entities per message; 0 = RENDER_MAX_ENTITIES */
	enum render_think think;
	bool is_partial; /* the answer is still streaming: close what is open at its end */
};

/*
 * Renders the Markdown answer md[0..len) into Telegram messages.
 *
 * Mapping: bold, italic, strikethrough, inline code; fenced and indented
 * code -> pre (with the fence's language); links and images -> text_link on
 * the link text or the image's alt text (autolinks and links whose URL
 * Telegram would refuse stay plain text); blockquotes -> blockquote, or
 * expandable_blockquote when longer than 5 lines or 500 units; headings -> a
 * bold line; lists -> "• "/"◦ "/"▪ " by level, "N. " from the list's start
 * number, "☐ "/"☑ " for tasks, indented 2 spaces per level; rules -> "———";
 * tables -> a pre block with aligned columns; escapes, entities and raw HTML
 * -> their literal text. Blocks are separated by a blank line (tight list
 * items by a line break).
 *
 * Entities nest only as Telegram allows: nothing inside pre or code (a code
 * span inside a link loses its code entity; bold/italic/strikethrough around
 * a code span are split around it), blockquotes never nest, a text_link
 * never holds another. Each part's entities are sorted by offset, then
 * longer first.
 *
 * Parts are cut as render_split_plain cuts, also so that no part holds more
 * than max_entities entities; an entity crossing a cut becomes one entity in
 * each part (a code block cut in two is two pre entities with the same
 * language). Whitespace at cuts and at both ends is dropped, and with it any
 * entity covering only that whitespace. At most 5 entities cover any one
 * character (blockquote, text_link, bold, italic, strikethrough), so with
 * max_entities >= 5 no entity is ever lost; below that, a part that cannot
 * hold all entities of its first character leaves out the innermost.
 *
 * With is_partial, an unclosed `code`, **bold**, _italic_ or ~~strike~~ at
 * the end is closed, an opening marker with nothing after it yet is left out,
 * and an unclosed code fence runs to the end.
 *
 * Returns 0 on success (n_parts may be 0 for empty or blank input), -1 when
 * out of memory or when len > RENDER_MAX_INPUT; *out is then empty. Never fails
 * on any other input: invalid UTF-8 and NUL become U+FFFD, CR LF becomes LF.
 * opt may be NULL for the defaults (think hidden, not partial).
 */
int render_markdown(const char *md, size_t len, const struct render_options *opt, struct render_output *out);

/* Why a complete answer would show nothing (render_blank). */
enum render_blank {
	RENDER_SHOWS_TEXT,     /* its answer renders to some text */
	RENDER_BLANK,          /* empty, whitespace, or markup around nothing (">", an empty code fence…) */
	RENDER_BLANK_THINKING, /* nothing after reasoning that never ended: <think> without </think> */
};

/*
 * Whether the complete answer md[0..len) renders to nothing once its
 * reasoning is set aside (shown as a quote or not, it is not an answer), so
 * that a person is told so rather than sent nothing. RENDER_SHOWS_TEXT when
 * out of memory: the delivery then says what it can.
 */
enum render_blank render_blank(const char *md, size_t len);

/* Frees what out owns and empties it; a no-op on an empty output. */
void render_output_free(struct render_output *out);

/*
 * Appends the entities of one part as a JSON array of MessageEntity
 * objects, for sendMessage's "entities". BUF_OK or a buf_error.
 */
int render_write_entities(struct buf *b, const struct render_message *m);

#endif
