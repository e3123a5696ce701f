#include "store/store.h"

#include <stdio.h>
#include <string.h>

int store_open(const char *spec, struct event_base *base, struct http_client *http,
	       struct store **out, char *err, size_t errlen)
{
	if (strncmp(spec, "sqlite:", 7) == 0)
		return store_sqlite_open(spec + 7, out, err, errlen);
	if (strncmp(spec, "s3://", 5) == 0)
		return store_s3_open(spec, base, http, out, err, errlen);
	snprintf(err, errlen, "unknown store '%s'", spec);
	return -1;
}

void store_free(struct store *s)
{
	if (s)
		s->ops->free(s);
}
