/*
 * media: the files a chat sends the bot, made into a user turn
 * (docs/internals/MEDIA.md). Private to the chat stage: a conversation of
 * job CHAT_MEDIA starts here, downloads its file (telegram/tg.h,
 * tg_download), and becomes a reply (conversation_reply) once the file is
 * a turn:
 *
 *   voice, audio, video note -> transcribe (model/transcribe.h) -> the
 *     transcript shown, then asked as text;
 *   photo, image document    -> text and image_url content parts;
 *   PDF                      -> text and file content parts;
 *   text document            -> its text, named, with the caption;
 *   anything else, or over 20 MB: a short reply, nothing stored.
 */
#ifndef TGLLM_MEDIA_H
#define TGLLM_MEDIA_H

#include <stddef.h>

#include "chat/conversation.h"
#include "lib/history.h"

void media_start(struct conversation *c);
/*
 * CHAT_IMAGE: /image PROMPT draws a picture (model/images.h) and sends it as
 * a photo with the prompt (or the model's rewording) as its caption,
 * "upload_photo" showing meanwhile. Nothing is stored in the history.
 */
void media_draw(struct conversation *c);
/* Stops what c's file is doing (download, transcription) and frees it; no callback runs. */
void media_clear(struct conversation *c);
/*
 * A job that held a file is over (all freed): the memory its megabytes took
 * goes back to the system, so that an idle daemon is as small after a burst
 * of photos as before it.
 */
void media_release_memory(void);
/*
 * The turns [from, images_from) of h lose their pictures and files: a turn
 * of parts becomes its text with "[picture]" or "[file NAME]" where they
 * were (the prompt's budget went to newer ones, chat/policy.h). Only the
 * conversation's copy changes: the store keeps them. A turn that cannot be
 * rewritten (out of memory) is left as it is.
 */
void media_drop_images(struct history *h, size_t from, size_t images_from);

#endif
