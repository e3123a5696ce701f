/* Which backend a STORE value names: the one place a new store is added. */
#include <stdio.h>
#include <string.h>

#include "store/backend.h"

int store_open(const struct store_options *o, struct event_base *base, struct http_client *http,
               struct store **out, char *err, size_t errlen)
{
	if (strncmp(o->spec, "sqlite:", 7) == 0)
		return store_sqlite_open(o->spec + 7, base, out, err, errlen);
	if (strncmp(o->spec, "s3://", 5) == 0)
		return store_s3_open(o, base, http, out, err, errlen);
	snprintf(err, errlen, "unknown store '%s'", o->spec);
	return -1;
}

void store_free(struct store *s)
{
	if (s)
		s->ops->free(s);
}
