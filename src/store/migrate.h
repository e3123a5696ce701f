/*
 * migrate: `tgllm migrate --from sqlite:PATH --to postgres://...`, a
 * command run once by an operator moving a bot from its SQLite file to
 * PostgreSQL (docs/internals/STORE.md, "Moving to PostgreSQL").
 *
 * It copies every chat's history (in order, with role, content, is_parts
 * and created_at), every setting and the update journal (pending updates
 * with their bodies, done ones as done) in one PostgreSQL transaction: all
 * of it or nothing. The SQLite file is only read. The target's schema is
 * made by the PostgreSQL store's own open (store_postgres_connect). A target
 * that already holds history is refused, so a second run cannot double a
 * conversation. Blocking: it is a command, not the bot.
 */
#ifndef TGLLM_STORE_MIGRATE_H
#define TGLLM_STORE_MIGRATE_H

/*
 * from is "sqlite:PATH"; to is a PostgreSQL STORE value (store_is_postgres_spec).
 * Prints one summary line on stdout; the exit status: 0, 1 (a failure, said on
 * stderr in one line without the password; nothing written), 2 (a malformed
 * argument).
 */
int migrate_run(const char *from, const char *to);

#endif
