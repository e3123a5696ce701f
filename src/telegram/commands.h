/*
 * commands: the bot's command menu (the "/" button in Telegram's clients),
 * https://core.telegram.org/bots/api#setmycommands. One list for the
 * default language (no language_code) and one for each language with texts
 * of its own; each is set only when getMyCommands says it differs, so a
 * restart costs one read, and a bot whose owner edits nothing writes nothing.
 */
#ifndef TGLLM_COMMANDS_H
#define TGLLM_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>

#include "telegram/tg.h"

struct tg_command {
	const char *command; /* without '/': 1-32 of a-z, 0-9 and _ */
	const char *description;
};

struct tg_menu_sync;

/*
 * Makes the menu for language ("" for the default) the n commands (borrowed
 * until done). done(arg, ok) runs once from the loop, unless cancelled;
 * NULL when the calls cannot start (done does not run).
 */
struct tg_menu_sync *tg_menu_sync(struct tg_client *tg, const char *language,
                                  const struct tg_command *commands, size_t n,
                                  void (*done)(void *arg, bool ok), void *arg);
/* Stops it; done never runs. NULL is a no-op. Not from done. */
void tg_menu_cancel(struct tg_menu_sync *s);

#endif
