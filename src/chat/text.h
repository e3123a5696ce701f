/*
 * text: every sentence the bot says to a person, in English and Russian.
 *
 * The language follows the sender's Telegram language_code: codes starting
 * with "ru" (and the languages of people who mostly read Russian: be, uk, kk)
 * get Russian, everything else English.
 */
#ifndef TGLLM_TEXT_H
#define TGLLM_TEXT_H

enum text_id {
	TEXT_START,
	TEXT_HELP,
	TEXT_NEW_DONE,
	TEXT_REFUSED,          /* %lld: the user's numeric id */
	TEXT_CONTEXT_DROPPED,  /* older turns were left out to fit the context */
	TEXT_TOO_LONG,         /* the message alone does not fit the context */
	TEXT_MODEL_BUSY,       /* rate limited / overloaded after retries */
	TEXT_MODEL_DOWN,       /* 5xx, timeouts, network errors after retries */
	TEXT_MODEL_QUOTA,      /* insufficient quota / billing */
	TEXT_MODEL_AUTH,       /* the API key is rejected */
	TEXT_MODEL_REJECTED,   /* other 4xx: the request was refused */
	TEXT_MODEL_EMPTY,      /* the model answered nothing */
	TEXT_MODEL_THINKING,   /* the model's reasoning used up its room: no answer after it */
	TEXT_ANSWER_CUT,       /* the stream broke off; appended to the partial answer */
	TEXT_STORE_FAILED,     /* history could not be read or written */
	TEXT_STORE_UNSAVED,    /* the answer went but cannot be stored yet: tried again meanwhile */
	TEXT_STORE_SAVING,     /* the answer is ready but cannot be stored yet: it follows once it is */
	TEXT_HISTORY_ASIDE,    /* the stored history was unreadable: kept aside, a new chat begins */
	TEXT_DEADLINE_CUT,     /* serverless time ran out; appended to the partial answer */
	TEXT_DEADLINE,         /* serverless time ran out before any answer */
	TEXT_CHAT_BUSY,        /* too many messages waiting in this chat: later ones are skipped */
	TEXT_MODEL_SHOW,       /* %s: the chat's model; above /model's keyboard */
	TEXT_MODEL_SET,        /* %s: the model chosen */
	TEXT_MODEL_UNKNOWN,    /* %s: a name /model NAME does not offer */
	TEXT_MODEL_GONE,       /* %s, %s: the chosen model the provider no longer has, the default */
	TEXT_MODEL_PICKED,     /* %s: a button's answer */
	TEXT_SYSTEM_SHOW,      /* %s: the chat's system prompt */
	TEXT_SYSTEM_NONE,      /* no system prompt at all */
	TEXT_SYSTEM_SET,
	TEXT_SYSTEM_RESET,
	TEXT_SYSTEM_TOO_LONG, /* %s: the limit in characters */
	TEXT_NOT_PERMITTED,   /* a group member who may talk but not steer */
	TEXT_BUTTON_STALE,    /* a button whose data this bot no longer knows */
	TEXT_STOP_BUTTON,     /* the label of the button that stops an answer */
	TEXT_STOPPED,         /* appended to an answer the user stopped */
	TEXT_STOPPED_EMPTY,   /* stopped before the model said anything */
	TEXT_STOP_NOTHING,    /* a Stop for an answer that is over */
	TEXT_STOP_NOT_YOURS,  /* a Stop pressed by someone else than the asker */
	TEXT_RETRY_NOTHING,   /* /retry with no answer in the history */
	TEXT_OVER_DAILY,      /* %s, %s: the daily budget in tokens, when it resets (HH:MM UTC) */
	TEXT_OVER_MONTHLY,    /* %s, %s: the monthly budget in tokens, the day it resets (YYYY-MM-DD) */
	TEXT_BUDGET_CUT,      /* appended to an answer cut where the budget ran out */
	TEXT_USAGE_TODAY,     /* /usage's headings */
	TEXT_USAGE_MONTH,
	TEXT_USAGE_NONE,      /* no tokens spent in the period */
	TEXT_USAGE_LEFT_DAY,  /* %s, %s: tokens left today, of the daily budget */
	TEXT_USAGE_LEFT_MONTH, /* %s, %s: tokens left this month, of the monthly budget */
	TEXT_USAGE_ESTIMATED, /* some counts are estimates */
	TEXT_USAGE_ALL_DAY,   /* /usage all's headings */
	TEXT_USAGE_ALL_MONTH,
	TEXT_USAGE_ALL_ONLY_ADMINS, /* /usage all from someone who is no admin */
	/* files (chat/media.c) */
	TEXT_FILE_TOO_BIG,     /* over Telegram's 20 MB download limit */
	TEXT_FILE_FAILED,      /* the file could not be downloaded */
	TEXT_PICTURE_TOO_BIG,  /* a picture or PDF over what a conversation keeps (MEDIA.md) */
	TEXT_FILE_UNSUPPORTED, /* a kind of file the bot cannot read */
	TEXT_FILE_TOO_LONG,    /* %s: the most text (in KB) that fits the prompt budget */
	TEXT_PHOTO_QUESTION,   /* the question asked of a photo without a caption */
	TEXT_PDF_QUESTION,     /* the question asked of a PDF without a caption */
	TEXT_NO_VISION,        /* the model refused a picture or a file */
	TEXT_VOICE_HEARD,      /* %s: the transcript, shown before the answer */
	TEXT_VOICE_EMPTY,      /* no words in the recording */
	TEXT_VOICE_FAILED,     /* the transcription service failed */
	TEXT_IMAGE_USAGE,      /* /image without a prompt */
	TEXT_IMAGE_REFUSED,    /* the picture model refused the prompt */
	TEXT_IMAGE_FAILED,     /* no picture came, or it could not be sent */
	TEXT_COUNT
};

#include <stdbool.h>
#include <stddef.h>

#include "telegram/commands.h"

/* The command menu (setMyCommands), in English (the default) or Russian; *n commands. */
const struct tg_command *text_commands(bool is_russian, size_t *n);

/* The text in the language for language_code (may be NULL); never NULL. */
const char *text_get(enum text_id id, const char *language_code);

#endif
