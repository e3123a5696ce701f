/*
 * sigv4: the AWS Signature Version 4 of one S3 request
 * (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
 *
 * Ours rather than libcurl's CURLOPT_AWS_SIGV4: libcurl re-parses and
 * re-formats every header and the URL for each request (~0.3 M
 * instructions a request, a quarter of a cold `handle` with the S3 store),
 * and derives the signing key anew each time; here the request is signed as
 * it is built and the key kept for its day. No I/O; OpenSSL's SHA-256 and
 * HMAC.
 */
#ifndef TGLLM_SIGV4_H
#define TGLLM_SIGV4_H

#include <stddef.h>

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

/* The key that signs a day's requests: derived from the secret, kept for the day. */
struct sigv4_key {
	char day[9]; /* YYYYMMDD */
	unsigned char key[32];
};

/* Derives k for the day of amz_date, unless it is that day's already. -1 when OpenSSL fails. */
int sigv4_key_for(struct sigv4_key *k, const char *secret, const char *region, const char *amz_date);

/*
 * The Authorization header line ("Authorization: AWS4-HMAC-SHA256
 * Credential=…, SignedHeaders=…, Signature=…") into out. -1 when it does
 * not fit, a header has no ':', or memory ran out.
 */
int sigv4_authorization(const struct sigv4_request *r, const struct sigv4_key *k, const char *key_id,
                        const char *region, char *out, size_t outlen);

/* x-amz-date's value for t (UTC). */
void sigv4_date(long long t, char out[SIGV4_DATE_LEN]);

#endif
