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
		return store_postgres_open(o->spec, o->lease_ms, base, out, err, errlen);
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

/* The end of the value at v of libpq's keyword form: 'quoted' (\\ escapes), else up to a space or '&'. */
static const char *value_end(const char *v)
{
	if (*v != '\'')
		return v + strcspn(v, " &");
	const char *e = v + 1;
	while (*e && *e != '\'')
		e += (*e == '\\' && e[1]) ? 2 : 1;
	return *e ? e + 1 : e;
}

void store_spec_shown(const char *spec, char *out, size_t n)
{
	if (n == 0)
		return;
	out[0] = '\0';
	/* The bytes to hide: a URI's user:PASSWORD@, and every password=VALUE. */
	const char *from[9], *to[9];
	size_t k = 0;
	const char *scheme = store_is_postgres_spec(spec) ? strstr(spec, "://") : NULL;
	if (scheme) {
		const char *auth = scheme + 3, *end = auth + strcspn(auth, "/?"), *at = NULL;
		for (const char *q = auth; q < end; q++)
			if (*q == '@')
				at = q;
		const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
		if (colon && at > colon + 1) {
			from[k] = colon + 1;
			to[k++] = at;
		}
	}
	for (const char *q = spec; store_is_postgres_spec(spec) && k < 9 && (q = strstr(q, "password=")) != NULL;) {
		from[k] = q + 9;
		to[k] = value_end(q + 9);
		q = to[k++];
	}
	size_t w = 0;
	const char *p = spec;
	for (size_t i = 0; i <= k; i++) {
		const char *stop = i < k ? from[i] : spec + strlen(spec);
		int len = snprintf(out + w, n - w, "%.*s%s", (int)(stop - p), p, i < k ? "***" : "");
		if (len < 0 || (size_t)len >= n - w)
			return; /* cut: what was written is whole up to there */
		w += (size_t)len;
		p = i < k ? to[i] : stop;
	}
}

void store_free(struct store *s)
{
	if (s)
		s->ops->free(s);
}
