/*
 * postgres_lead: store_lead for the PostgreSQL store. Of the processes
 * sharing a database, the one whose session holds an advisory lock leads
 * (polls Telegram). The lock lives as long as its session, so it has a
 * connection of its own (application_name tgllm-lead), apart from the pool:
 * a process that dies or loses that connection loses the lock with it, and
 * a standby's next try takes it. docs/internals/STORE.md, "Leading".
 */
#ifndef TGLLM_STORE_POSTGRES_LEAD_H
#define TGLLM_STORE_POSTGRES_LEAD_H

#include <event2/event.h>
#include <stdbool.h>

struct pg_lead;

/* conninfo is the store's libpq string (copied); nothing connects until asked. NULL when out of memory. */
struct pg_lead *pg_lead_new(struct event_base *base, const char *conninfo);
/* store_lead's contract (store/store.h): cb NULL gives the lead up and closes the connection. */
void pg_lead_ask(struct pg_lead *l, void (*cb)(void *arg, bool is_leading), void *arg);
/* NULL is a no-op. The lock goes with the connection; cb is not called. */
void pg_lead_free(struct pg_lead *l);

#endif
