/*
 * sigv4: the AWS Signature Version 4 of one S3 request
 * (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
 *
 * Ours rather than libcurl's CURLOPT_AWS_SIGV4: libcurl re-parses and
 * re-formats every header and the URL for each request (~0.3 M
 * instructions a request, a quarter of a cold `handle` with the S3 store),
 * and derives the signing key anew each time; here the request is signed as
 * it is built and the key kept for its day. No I/O; OpenSSL's SHA-256 and
 * HMAC, fetched once.
 */
#ifndef TGLLM_SIGV4_H
#define TGLLM_SIGV4_H

#include <stddef.h>

#include <openssl/types.h>

#define SIGV4_DATE_LEN 17 /* "20130524T000000Z" and its NUL */

struct sigv4_request {
	const char *method;
	const char *path;  /* as sent: percent-encoded */
	const char *query; /* as sent: sorted and encoded, "" for none */
	/* every header sent, "Name: value" (host, x-amz-date and x-amz-content-sha256 among them) */
	const char *const *headers;
	size_t n_headers;
	const char *payload_sha256; /* hex */
	const char *amz_date;       /* x-amz-date's value */
};

/*
 * What signs the requests: the key derived from the secret, kept for its
 * day, and OpenSSL's SHA-256 and HMAC fetched once. OpenSSL 3 fetches
 * EVP_sha256() again at every digest, and HMAC() the MAC and its digest at
 * every call: ~0.3 M of a cold handle's 4.6 M instructions. Zeroed to
 * start; sigv4_signer_free releases it.
 */
struct sigv4_signer {
	char day[9]; /* YYYYMMDD */
	unsigned char key[32];
	EVP_MD *sha256;
	EVP_MAC_CTX *hmac; /* HMAC-SHA256, keyed anew for each use */
};

/* Derives the key for the day of amz_date, unless it is that day's already. -1 when OpenSSL fails. */
int sigv4_key_for(struct sigv4_signer *s, const char *secret, const char *region, const char *amz_date);

/* The hex SHA-256 of data (x-amz-content-sha256). -1 when OpenSSL fails. */
int sigv4_sha256_hex(struct sigv4_signer *s, const char *data, size_t len, char out[65]);

/*
 * The Authorization header line ("Authorization: AWS4-HMAC-SHA256
 * Credential=…, SignedHeaders=…, Signature=…") into out, signed with the
 * key of sigv4_key_for. -1 when it does not fit, a header has no ':',
 * memory ran out or OpenSSL failed.
 */
int sigv4_authorization(const struct sigv4_request *r, struct sigv4_signer *s, const char *key_id,
                        const char *region, char *out, size_t outlen);

/* Forgets the key (cleansed) and releases what was fetched; s is zeroed, ready again. */
void sigv4_signer_free(struct sigv4_signer *s);

/* x-amz-date's value for t (UTC). */
void sigv4_date(long long t, char out[SIGV4_DATE_LEN]);

#endif
