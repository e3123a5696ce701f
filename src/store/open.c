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
	if (store_is_postgres_spec(o->spec)) {
#ifdef TGLLM_POSTGRES
		return store_postgres_open(o->spec, base, out, err, errlen);
#else
		snprintf(err, errlen, "this tgllm is built without PostgreSQL (the lean static build): "
		                      "use the one built with libpq");
		return -1;
#endif
	}
	snprintf(err, errlen, "unknown store '%s'", o->spec);
	return -1;
}

bool store_is_postgres_spec(const char *spec)
{
	/* A URI, or libpq's keyword form ("host=... dbname=..."): a word, then '='. */
	if (strncmp(spec, "postgres://", 11) == 0 || strncmp(spec, "postgresql://", 13) == 0)
		return true;
	size_t word = strspn(spec, "abcdefghijklmnopqrstuvwxyz_");
	return word > 0 && spec[word + strspn(spec + word, " ")] == '=';
}

void store_free(struct store *s)
{
	if (s)
		s->ops->free(s);
}
