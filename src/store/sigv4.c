#include "store/sigv4.h"

#include <ctype.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/buf.h"

#define SIGV4_HEADERS_MAX 16
#define SIGV4_CANONICAL_MAX (16u << 10)

static void hex(const unsigned char *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Fetches SHA-256 and HMAC-SHA256 the first time. */
static int fetched(struct sigv4_signer *s)
{
	if (s->hmac)
		return 0;
	char digest[] = "SHA256";
	OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
	                       OSSL_PARAM_construct_end()};
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!s->sha256)
		s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	s->hmac = mac ? EVP_MAC_CTX_new(mac) : NULL;
	EVP_MAC_free(mac); /* the context holds its own reference */
	if (!s->sha256 || !s->hmac || EVP_MAC_CTX_set_params(s->hmac, params) != 1) {
		EVP_MAC_CTX_free(s->hmac);
		s->hmac = NULL;
		return -1;
	}
	return 0;
}

static int hmac(struct sigv4_signer *s, const unsigned char *key, size_t key_len, const char *data, size_t len,
                unsigned char out[32])
{
	size_t n = 0;
	return fetched(s) == 0 && EVP_MAC_init(s->hmac, key, key_len, NULL) == 1 &&
	               EVP_MAC_update(s->hmac, (const unsigned char *)data, len) == 1 &&
	               EVP_MAC_final(s->hmac, out, &n, 32) == 1 && n == 32
	           ? 0
	           : -1;
}

static int sha256(struct sigv4_signer *s, const char *data, size_t len, unsigned char out[32])
{
	unsigned int n = 0;
	return fetched(s) == 0 && EVP_Digest(data, len, out, &n, s->sha256, NULL) == 1 && n == 32 ? 0 : -1;
}

int sigv4_sha256_hex(struct sigv4_signer *s, const char *data, size_t len, char out[65])
{
	unsigned char md[32];
	if (sha256(s, data ? data : "", len, md) != 0)
		return -1;
	hex(md, 32, out);
	return 0;
}

void sigv4_signer_free(struct sigv4_signer *s)
{
	EVP_MAC_CTX_free(s->hmac);
	EVP_MD_free(s->sha256);
	OPENSSL_cleanse(s, sizeof *s);
}

void sigv4_date(long long t, char out[SIGV4_DATE_LEN])
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, SIGV4_DATE_LEN, "%Y%m%dT%H%M%SZ", &tm);
}

int sigv4_key_for(struct sigv4_signer *k, const char *secret, const char *region, const char *amz_date)
{
	if (strncmp(k->day, amz_date, 8) == 0 && k->day[8] == '\0')
		return 0;
	char first[256];
	int n = snprintf(first, sizeof first, "AWS4%s", secret);
	char day[9];
	memcpy(day, amz_date, 8);
	day[8] = '\0';
	unsigned char a[32], b[32];
	int rc = n > 0 && (size_t)n < sizeof first ? 0 : -1;
	if (rc == 0)
		rc = hmac(k, (unsigned char *)first, (size_t)n, day, 8, a);
	if (rc == 0)
		rc = hmac(k, a, 32, region, strlen(region), b);
	if (rc == 0)
		rc = hmac(k, b, 32, "s3", 2, a);
	if (rc == 0)
		rc = hmac(k, a, 32, "aws4_request", 12, k->key);
	OPENSSL_cleanse(first, sizeof first);
	OPENSSL_cleanse(a, sizeof a);
	OPENSSL_cleanse(b, sizeof b);
	memcpy(k->day, day, 9);
	if (rc != 0)
		k->day[0] = '\0';
	return rc;
}

struct header {
	const char *name, *value;
	size_t name_len, value_len;
};

static int by_name(const struct header *x, const struct header *y)
{
	size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
	for (size_t i = 0; i < n; i++) {
		int a = tolower((unsigned char)x->name[i]), b = tolower((unsigned char)y->name[i]);
		if (a != b)
			return a - b;
	}
	return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static int append_lower(struct buf *b, const char *s, size_t n)
{
	int rc = BUF_OK;
	for (size_t i = 0; i < n && rc == BUF_OK; i++) {
		char c = (char)tolower((unsigned char)s[i]);
		rc = buf_append(b, &c, 1);
	}
	return rc;
}

/* The headers split, trimmed and sorted by name (a handful: insertion sort). */
static int split(const struct sigv4_request *r, struct header *h)
{
	if (r->n_headers > SIGV4_HEADERS_MAX)
		return -1;
	for (size_t i = 0; i < r->n_headers; i++) {
		const char *line = r->headers[i], *colon = strchr(line, ':');
		if (!colon || colon == line)
			return -1;
		struct header x = {line, colon + 1, (size_t)(colon - line), 0};
		while (*x.value == ' ' || *x.value == '\t')
			x.value++;
		x.value_len = strlen(x.value);
		while (x.value_len && (x.value[x.value_len - 1] == ' ' || x.value[x.value_len - 1] == '\t'))
			x.value_len--;
		size_t j = i;
		for (; j > 0 && by_name(&h[j - 1], &x) > 0; j--)
			h[j] = h[j - 1];
		h[j] = x;
	}
	return 0;
}

/* The canonical request's names line ("host;x-amz-date") and the request itself. */
static int canonical(const struct sigv4_request *r, const struct header *h, struct buf *req, struct buf *names)
{
	const char *parts[] = {r->method, "\n", r->path, "\n", r->query, "\n"};
	int rc = BUF_OK;
	for (size_t i = 0; i < sizeof parts / sizeof parts[0] && rc == BUF_OK; i++)
		rc = buf_append_str(req, parts[i]);
	for (size_t i = 0; i < r->n_headers && rc == BUF_OK; i++) {
		/* Values are ours: no runs of spaces inside to fold. */
		rc = append_lower(req, h[i].name, h[i].name_len);
		if (rc == BUF_OK)
			rc = buf_append(req, ":", 1);
		if (rc == BUF_OK)
			rc = buf_append(req, h[i].value, h[i].value_len);
		if (rc == BUF_OK)
			rc = buf_append(req, "\n", 1);
		if (rc == BUF_OK && i)
			rc = buf_append(names, ";", 1);
		if (rc == BUF_OK)
			rc = append_lower(names, h[i].name, h[i].name_len);
	}
	if (rc == BUF_OK)
		rc = buf_append(req, "\n", 1);
	if (rc == BUF_OK)
		rc = buf_append(req, names->data ? names->data : "", names->len);
	if (rc == BUF_OK)
		rc = buf_append(req, "\n", 1);
	if (rc == BUF_OK)
		rc = buf_append_str(req, r->payload_sha256);
	return rc;
}

int sigv4_authorization(const struct sigv4_request *r, struct sigv4_signer *k, const char *key_id,
                        const char *region, char *out, size_t outlen)
{
	struct header h[SIGV4_HEADERS_MAX];
	if (split(r, h) != 0)
		return -1;
	struct buf req, names;
	buf_init(&req, SIGV4_CANONICAL_MAX);
	buf_init(&names, SIGV4_CANONICAL_MAX);
	int rc = canonical(r, h, &req, &names);
	unsigned char digest[32], signature[32];
	char digest_hex[65], signature_hex[65], to_sign[256];
	if (rc == BUF_OK && sha256(k, req.data, req.len, digest) != 0)
		rc = -1;
	int len = -1;
	if (rc == BUF_OK) {
		hex(digest, 32, digest_hex);
		len = snprintf(to_sign, sizeof to_sign, "AWS4-HMAC-SHA256\n%s\n%.8s/%s/s3/aws4_request\n%s", r->amz_date,
		               r->amz_date, region, digest_hex);
	}
	if (len > 0 && (size_t)len < sizeof to_sign && hmac(k, k->key, 32, to_sign, (size_t)len, signature) == 0) {
		hex(signature, 32, signature_hex);
		len = snprintf(out, outlen,
		               "Authorization: AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/s3/aws4_request, "
		               "SignedHeaders=%s, Signature=%s",
		               key_id, r->amz_date, region, buf_str(&names), signature_hex);
		rc = len > 0 && (size_t)len < outlen ? 0 : -1;
	} else {
		rc = -1;
	}
	buf_free(&req);
	buf_free(&names);
	return rc;
}
