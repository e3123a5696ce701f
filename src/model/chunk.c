#include "model/chunk.h"

#include "lib/jsonr.h"

/* What the member functions below fill in. */
struct reading {
	struct chunk *out;
	struct buf *content;
};

static bool usage_integer(struct jsonr *r, long *to, int depth)
{
	if (!jsonr_at(r, '-') && !(r->p < r->end && *r->p >= '0' && *r->p <= '9'))
		return jsonr_skip(r, depth);
	int64_t v;
	bool is_integer;
	if (!jsonr_number(r, &v, &is_integer))
		return false;
	if (is_integer)
		*to = (long)v;
	return true;
}

enum { PROMPT_TOKENS = 1, COMPLETION_TOKENS = 2 };

static bool usage_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
			 unsigned *seen)
{
	struct chunk *out = ((struct reading *)ctx)->out;
	if (jsonr_is_key(key, len, "prompt_tokens"))
		return jsonr_first_time(seen, PROMPT_TOKENS) && usage_integer(r, &out->prompt_tokens, depth);
	if (jsonr_is_key(key, len, "completion_tokens"))
		return jsonr_first_time(seen, COMPLETION_TOKENS) &&
		       usage_integer(r, &out->completion_tokens, depth);
	return jsonr_skip(r, depth);
}

enum { CONTENT = 1 };

static bool delta_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
			 unsigned *seen)
{
	if (jsonr_is_key(key, len, "content")) {
		if (!jsonr_first_time(seen, CONTENT))
			return false;
		return jsonr_at(r, '"') ? jsonr_string(r, ((struct reading *)ctx)->content)
					: jsonr_skip(r, depth);
	}
	return jsonr_skip(r, depth);
}

enum { DELTA = 1, FINISH_REASON = 2 };

static bool choice_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
			  unsigned *seen)
{
	if (jsonr_is_key(key, len, "delta")) {
		if (!jsonr_first_time(seen, DELTA))
			return false;
		return jsonr_at(r, '{') ? jsonr_object(r, depth, delta_member, ctx) : jsonr_skip(r, depth);
	}
	if (jsonr_is_key(key, len, "finish_reason")) {
		if (!jsonr_first_time(seen, FINISH_REASON))
			return false;
		if (!jsonr_at(r, '"'))
			return jsonr_skip(r, depth);
		((struct reading *)ctx)->out->is_finished = true;
		return jsonr_string(r, NULL);
	}
	return jsonr_skip(r, depth);
}

/* "choices": the first element is the answer; the others are only checked. */
static bool read_choices(struct jsonr *r, void *ctx, int depth)
{
	if (depth > JSONR_MAX_DEPTH || !jsonr_take(r, '['))
		return false;
	if (jsonr_take(r, ']'))
		return true;
	bool ok = jsonr_at(r, '{') ? jsonr_object(r, depth + 1, choice_member, ctx)
				   : jsonr_skip(r, depth + 1);
	while (ok && jsonr_take(r, ','))
		ok = jsonr_skip(r, depth + 1);
	return ok && jsonr_take(r, ']');
}

enum { USAGE = 1, CHOICES = 2 };

static bool root_member(struct jsonr *r, void *ctx, const unsigned char *key, size_t len, int depth,
			unsigned *seen)
{
	if (jsonr_is_key(key, len, "error"))
		return false;
	if (jsonr_is_key(key, len, "usage")) {
		if (!jsonr_first_time(seen, USAGE))
			return false;
		return jsonr_at(r, '{') ? jsonr_object(r, depth, usage_member, ctx) : jsonr_skip(r, depth);
	}
	if (jsonr_is_key(key, len, "choices")) {
		if (!jsonr_first_time(seen, CHOICES))
			return false;
		return jsonr_at(r, '[') ? read_choices(r, ctx, depth) : jsonr_skip(r, depth);
	}
	return jsonr_skip(r, depth);
}

enum chunk_result chunk_read(const char *json, size_t len, struct chunk *out, struct buf *content)
{
	*out = (struct chunk){false, -1, -1};
	struct reading reading = {out, content};
	struct jsonr r;
	jsonr_init(&r, json, len);
	bool ok = jsonr_object(&r, 1, root_member, &reading) && jsonr_is_end(&r);
	if (r.is_out_of_memory)
		return CHUNK_NO_MEMORY;
	if (!ok) {
		*out = (struct chunk){false, -1, -1};
		return CHUNK_OTHER;
	}
	return CHUNK_READ;
}
