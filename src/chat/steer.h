/*
 * steer: the jobs that change how a chat is answered (/model, its buttons,
 * /system) and the refusal of those who may not. Private to the chat
 * stage: a conversation (chat/conversation.h) of job CHAT_MODEL,
 * CHAT_SYSTEM, CHAT_PICK or CHAT_NOT_PERMITTED starts here and ends with
 * conversation_done.
 */
#ifndef TGLLM_STEER_H
#define TGLLM_STEER_H

#include "chat/conversation.h"

void steer_start(struct conversation *c);

#endif
