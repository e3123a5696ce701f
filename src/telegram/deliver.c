#include "telegram/deliver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/jsonw.h"
#include "lib/log.h"
#include "telegram/render.h"
#include "telegram/tg.h"

#define SEND_TIMEOUT_S 30
#define MIN_FRAME_GAP_S 0.25 /* even with budget to spare, no faster than this */
/*
 * Where the answer is shown by editing a message, every edit costs a slot of
 * the chat's budget (3 s in groups): the first frame waits a moment, so an
 * answer that comes quickly arrives whole, as one message, instead of as a
 * stub that stays for seconds. A draft costs nothing visible and takes no
 * message slot (drafts are paced among themselves, tg.h): it goes at once,
 * and the final message never waits for a draft.
 */
#define FIRST_EDIT_DELAY_S 1.0

/* A message of the answer that is in the chat. */
struct shown {
	int64_t message_id;
	char *body; /* text + entities as sent, to skip edits that change nothing; NULL: unknown */
};

struct delivery {
	struct tg_client *tg;
	enum render_think think;
	struct tg_target target;
	const struct buf *text; /* the Markdown so far: the caller's */
	size_t rendered_len;    /* text.len at the last frame */
	bool is_draft;          /* streaming as a draft (else by edits) */
	bool is_finishing;
	bool is_stopped;        /* 403: nothing more reaches this chat */
	bool has_failed_part;   /* a part could not be sent even as plain text */
	bool is_visible;
	struct event *timer;    /* the next frame, or the next step of finishing */
	struct tg_call *call;   /* one call at a time, frames and final parts alike */
	struct tg_call *draft;  /* a draft still in flight when the answer finished (see delivery_finish) */
	struct pending *part;   /* the part that call sends, when it sends one */
	struct shown *shown;    /* parts sent as real messages, in order */
	size_t n_shown;
	size_t n_final;         /* leading parts of shown that are complete */
	struct render_output out; /* the final rendering, while finishing */
	size_t next_final;      /* the next final part to send or edit */
	bool is_plain_retry;    /* the current final part goes again without entities */
	delivery_visible_cb visible;
	delivery_done_cb done;
	void *arg;
	char stop_label[32]; /* the Stop button of frames shown by edits; "" for none */
	char stop_data[65];
	bool can_stop;       /* drafts carry Telegram's own stop control */
};

static void tick(struct delivery *d);

static void on_timer(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	tick(arg);
}

static void schedule(struct delivery *d, double seconds)
{
	if (evtimer_pending(d->timer, NULL))
		return;
	long us = seconds > 0 ? (long)(seconds * 1e6) : 0;
	struct timeval tv = {us / 1000000, us % 1000000};
	if (evtimer_add(d->timer, &tv) != 0)
		log_error("chat=%lld: cannot schedule delivery", (long long)d->target.chat_id);
}

/* The method the next frame calls: the chat's budget for drafts and for messages are apart (tg.h). */
static const char *frame_method(const struct delivery *d)
{
	return d->is_draft ? "sendMessageDraft" : "editMessageText";
}

/* After a call: final parts go on at once (the rate limiter spaces them); frames wait their turn. */
static void next_step(struct delivery *d)
{
	if (d->is_finishing) {
		tick(d);
		return;
	}
	double wait = tg_chat_wait(d->tg, d->target.chat_id, frame_method(d));
	schedule(d, wait > MIN_FRAME_GAP_S ? wait : MIN_FRAME_GAP_S);
}

static struct render_options options(const struct delivery *d, bool is_partial)
{
	struct render_options o = {
		.max_units = RENDER_MAX_UNITS,
		.max_entities = RENDER_MAX_ENTITIES,
		.think = d->think,
		.is_partial = is_partial,
	};
	return o;
}

/* What a part shows, as members of its request: text and entities (unless plain). */
static char *part_content(const struct render_message *m, bool is_plain)
{
	struct buf b;
	buf_init(&b, SIZE_MAX - 1);
	int rc = jsonw_member_string(&b, "text", m->text, m->len);
	if (rc == BUF_OK && !is_plain && m->n_entities) {
		rc = jsonw_member(&b, "entities");
		if (rc == BUF_OK)
			rc = render_write_entities(&b, m);
	}
	char *content = rc == BUF_OK ? buf_take(&b) : NULL;
	buf_free(&b);
	return content;
}

/* A growing part shown by edits carries the Stop button; complete and final parts do not. */
static char *with_stop_button(const struct delivery *d, char *content)
{
	struct buf b;
	buf_init(&b, SIZE_MAX - 1);
	int rc = buf_append_str(&b, content);
	if (rc == BUF_OK)
		rc = jsonw_member(&b, "reply_markup");
	if (rc == BUF_OK)
		rc = buf_append_str(&b, "{\"inline_keyboard\":[[{");
	if (rc == BUF_OK)
		rc = jsonw_member_string(&b, "text", d->stop_label, strlen(d->stop_label));
	if (rc == BUF_OK)
		rc = jsonw_member_string(&b, "callback_data", d->stop_data, strlen(d->stop_data));
	if (rc == BUF_OK)
		rc = buf_append_str(&b, "}]]}");
	free(content);
	char *out = rc == BUF_OK ? buf_take(&b) : NULL;
	buf_free(&b);
	return out;
}

/* Appends a part's content (members written by part_content) to a request body. */
static int add_content(struct buf *b, int rc, const char *content)
{
	if (rc == BUF_OK)
		rc = jsonw_member(b, NULL);
	if (rc == BUF_OK)
		rc = buf_append_str(b, content);
	return rc;
}

static void became_visible(struct delivery *d)
{
	if (d->is_visible)
		return;
	d->is_visible = true;
	if (d->visible)
		d->visible(d->arg);
}

/* Telegram says an edit changed nothing: that is success. */
static bool is_not_modified(const struct tg_result *res)
{
	return res->error_code == 400 && strstr(res->description, "message is not modified");
}

static void note_failure(struct delivery *d, const char *method, const struct tg_result *res)
{
	if (res->error_code == 403) {
		log_warn("chat=%lld: Telegram refuses messages to this chat (%s); dropping the answer",
			 (long long)d->target.chat_id, res->description);
		d->is_stopped = true;
		return;
	}
	if (res->is_maybe_delivered)
		log_warn("chat=%lld: %s may have reached the chat (%s); it is not sent again",
		         (long long)d->target.chat_id, method, res->description);
	else
		log_warn("chat=%lld: %s failed: %ld %s", (long long)d->target.chat_id, method,
		         res->error_code, res->description);
}

/* ---- sending and editing real messages ---- */

struct pending {
	struct delivery *d;
	size_t index;  /* the part */
	char *body;    /* what it will show; NULL for a final new message, never compared */
	bool is_complete; /* the part will not change any more */
	bool is_final;    /* sent while finishing */
	bool is_edit;
};

static void pending_free(struct pending *pd)
{
	if (pd)
		free(pd->body);
	free(pd);
}

static void on_part_done(void *arg, const struct tg_result *res)
{
	struct pending *pd = arg;
	struct delivery *d = pd->d;
	d->call = NULL;
	d->part = NULL;
	bool ok = res->ok || (pd->is_edit && is_not_modified(res));
	if (ok && !pd->is_edit) {
		struct shown *grown = realloc(d->shown, (d->n_shown + 1) * sizeof *grown);
		if (grown) {
			d->shown = grown;
			d->shown[d->n_shown].message_id = res->message_id;
			d->shown[d->n_shown].body = pd->body;
			pd->body = NULL;
			d->n_shown++;
		}
	} else if (ok) {
		free(d->shown[pd->index].body);
		d->shown[pd->index].body = pd->body;
		pd->body = NULL;
	}
	if (ok) {
		became_visible(d);
		if (pd->is_complete && d->n_final < pd->index + 1)
			d->n_final = pd->index + 1;
		if (pd->is_final) {
			d->next_final = pd->index + 1;
			d->is_plain_retry = false;
		}
	} else {
		note_failure(d, pd->is_edit ? "editMessageText" : "sendMessage", res);
		if (pd->is_final && !d->is_stopped) {
			/* Rejected formatting must not cost the user the text: again, plain. */
			if (res->error_code == 400 && !d->is_plain_retry) {
				d->is_plain_retry = true;
			} else {
				d->has_failed_part = true;
				d->next_final = pd->index + 1;
				d->is_plain_retry = false;
			}
		}
	}
	pending_free(pd);
	next_step(d);
}

/* Sends part index as a new message, or edits the message already showing it. */
static int put_part(struct delivery *d, size_t index, const struct render_message *m, bool is_complete,
		    unsigned flags)
{
	bool is_final = d->is_finishing;
	bool is_plain = is_final && d->is_plain_retry;
	char *content = part_content(m, is_plain);
	/* The button is part of what the message shows: the final edit, without it, differs and removes it. */
	if (content && !is_final && !is_complete && d->stop_label[0])
		content = with_stop_button(d, content);
	struct pending *pd = calloc(1, sizeof *pd);
	if (!content || !pd)
		goto fail;
	pd->d = d;
	pd->index = index;
	pd->is_complete = is_complete;
	pd->is_final = is_final;
	pd->is_edit = index < d->n_shown;
	if (pd->is_edit && d->shown[index].body && strcmp(d->shown[index].body, content) == 0) {
		/* Already showing exactly this. */
		pd->body = content;
		struct tg_result same = {.ok = true, .description = ""};
		d->call = NULL;
		on_part_done(pd, &same);
		return 0;
	}
	struct buf b;
	int rc;
	if (pd->is_edit) {
		/* An edit names the message; its chat is enough of the target. */
		struct tg_target chat = {.chat_id = d->target.chat_id};
		rc = tg_open_target(&b, &chat, false);
		if (rc == BUF_OK)
			rc = jsonw_member_int(&b, "message_id", d->shown[index].message_id);
	} else {
		rc = tg_open_target(&b, &d->target, index == 0);
	}
	char *params = jsonw_finish_object(&b, add_content(&b, rc, content));
	/* What a message shows is kept only when an edit may be compared with it. */
	if (pd->is_edit || !is_final)
		pd->body = content;
	else
		free(content);
	content = NULL;
	if (!params)
		goto fail;
	const char *method = pd->is_edit ? "editMessageText" : "sendMessage";
	d->call = tg_call(d->tg, method, params, d->target.chat_id, flags, SEND_TIMEOUT_S,
			  on_part_done, pd);
	if (!d->call)
		goto fail;
	d->part = pd;
	return 0;
fail:
	free(content);
	pending_free(pd);
	return -1;
}

/* ---- frames while streaming ---- */

static void on_draft_done(void *arg, const struct tg_result *res)
{
	struct delivery *d = arg;
	if (d->is_finishing) {
		/* The draft let go when the answer finished: the final message supersedes it. */
		d->draft = NULL;
		if (res->error_code == 404)
			tg_note_no_drafts(d->tg);
		return;
	}
	d->call = NULL;
	if (res->ok) {
		became_visible(d);
	} else if (res->error_code != 429) {
		/*
		 * Drafts are new (Bot API 9.5): this answer goes on by edits, which
		 * work everywhere. A server without the method (404) has none for
		 * any chat; a refusal for this chat (400) says nothing of others.
		 */
		log_warn("chat=%lld: sendMessageDraft failed (%ld %s); streaming by edits instead",
			 (long long)d->target.chat_id, res->error_code, res->description);
		d->is_draft = false;
		if (res->error_code == 404)
			tg_note_no_drafts(d->tg);
		else if (res->error_code == 403)
			d->is_stopped = true;
	}
	next_step(d);
}

static int put_draft(struct delivery *d, const struct render_message *m)
{
	char *content = part_content(m, false);
	if (!content)
		return -1;
	struct buf b;
	int rc = tg_open_target(&b, &d->target, false);
	if (rc == BUF_OK)
		rc = jsonw_member_int(&b, "draft_id", delivery_draft_id(d));
	if (rc == BUF_OK && d->can_stop)
		rc = buf_append_str(&b, ",\"can_stop\":true");
	char *params = jsonw_finish_object(&b, add_content(&b, rc, content));
	free(content);
	if (!params)
		return -1;
	d->call = tg_call(d->tg, "sendMessageDraft", params, d->target.chat_id, TG_CALL_DROPPABLE,
			  SEND_TIMEOUT_S, on_draft_done, d);
	return d->call ? 0 : -1;
}

/* Shows the answer so far: completes a finished part, or updates the growing one. */
static void send_frame(struct delivery *d)
{
	struct render_output out = {0};
	struct render_options o = options(d, true);
	if (render_markdown(buf_str(d->text), d->text->len, &o, &out) != 0 || out.n_parts == 0) {
		render_output_free(&out);
		return;
	}
	d->rendered_len = d->text->len;
	size_t last = out.n_parts - 1;
	int rc;
	if (d->n_final < last)
		/* A part filled up: it will not change any more. */
		rc = put_part(d, d->n_final, &out.parts[d->n_final], true, TG_CALL_DROPPABLE);
	else if (d->is_draft)
		rc = put_draft(d, &out.parts[last]);
	else
		rc = put_part(d, last, &out.parts[last], false, TG_CALL_DROPPABLE);
	if (rc != 0)
		log_warn("chat=%lld: a frame could not be sent", (long long)d->target.chat_id);
	render_output_free(&out);
}

/* ---- the state machine ---- */

static void finish_done(struct delivery *d)
{
	delivery_done_cb done = d->done;
	d->done = NULL;
	if (done)
		done(d->arg, !d->has_failed_part && !d->is_stopped);
}

static void tick(struct delivery *d)
{
	if (d->call)
		return; /* its callback carries on */
	if (!d->is_finishing) {
		if (d->is_stopped || d->text->len == d->rendered_len)
			return;
		double wait = tg_chat_wait(d->tg, d->target.chat_id, frame_method(d));
		if (wait > 0.001) {
			schedule(d, wait);
			return;
		}
		send_frame(d);
		return;
	}
	/* Finishing: the final parts, one at a time, in order; parts already showing them cost nothing. */
	while (!d->is_stopped && d->next_final < d->out.n_parts) {
		if (put_part(d, d->next_final, &d->out.parts[d->next_final], true, 0) == 0)
			return;
		log_error("chat=%lld: a part of the answer could not be sent", (long long)d->target.chat_id);
		d->has_failed_part = true;
		d->next_final++;
	}
	finish_done(d);
}

struct delivery *delivery_new(struct tg_client *tg, struct event_base *base, enum render_think think,
			      const struct tg_target *t, const struct buf *text, delivery_visible_cb visible,
			      void *arg)
{
	struct delivery *d = calloc(1, sizeof *d);
	if (!d)
		return NULL;
	d->tg = tg;
	d->think = think;
	d->target = *t;
	d->is_draft = t->is_private && tg_has_drafts(tg);
	d->visible = visible;
	d->arg = arg;
	d->text = text;
	d->timer = evtimer_new(base, on_timer, d);
	if (!d->timer) {
		free(d);
		return NULL;
	}
	return d;
}

void delivery_offer_stop(struct delivery *d, const char *label, const char *data)
{
	snprintf(d->stop_label, sizeof d->stop_label, "%s", label);
	snprintf(d->stop_data, sizeof d->stop_data, "%s", data);
	d->can_stop = true;
}

int64_t delivery_draft_id(const struct delivery *d)
{
	return d->target.reply_to ? d->target.reply_to : 1;
}

void delivery_progress(struct delivery *d)
{
	if (d->is_finishing)
		return;
	/* Called from inside the HTTP layer's callbacks: send from the loop, not from here. */
	if (!d->call)
		schedule(d, d->rendered_len ? MIN_FRAME_GAP_S : d->is_draft ? 0 : FIRST_EDIT_DELAY_S);
}

void delivery_finish(struct delivery *d, const char *text, size_t len, delivery_done_cb done)
{
	d->is_finishing = true;
	d->done = done;
	if (d->call && !d->part) {
		/*
		 * A draft is never worth delaying the final message: one waiting for
		 * its slot is dropped (it would only go after the message), one in
		 * flight is let go, its answer not waited for. It left first, so
		 * Telegram almost surely has it before the message, which ends the
		 * draft; a draft is only an ephemeral preview anyway
		 * (https://core.telegram.org/bots/api#sendmessagedraft).
		 */
		if (tg_call_is_sent(d->call))
			d->draft = d->call;
		else
			tg_call_cancel(d->call);
		d->call = NULL;
	}
	struct render_options o = options(d, false);
	if (render_markdown(text, len, &o, &d->out) != 0) {
		log_error("chat=%lld: out of memory rendering an answer", (long long)d->target.chat_id);
		d->has_failed_part = true;
	}
	/* Every part is checked again; one already showing its final text is skipped without a call. */
	d->next_final = 0;
	/* From the loop, so done never runs inside this call. */
	evtimer_del(d->timer);
	schedule(d, 0);
}

void delivery_free(struct delivery *d)
{
	if (!d)
		return;
	tg_call_cancel(d->call);
	tg_call_cancel(d->draft);
	pending_free(d->part);
	event_free(d->timer);
	for (size_t i = 0; i < d->n_shown; i++)
		free(d->shown[i].body);
	free(d->shown);
	render_output_free(&d->out);
	free(d);
}
