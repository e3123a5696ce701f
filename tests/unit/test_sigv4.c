/* Unit tests for src/store/sigv4.c: AWS's own example of a signed S3 request, and the key kept for its day. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "store/sigv4.h"

#include "expect.h"

/* "GET Object" in AWS's "Signature Calculations for the Authorization Header" (S3 API reference). */
#define KEY_ID   "AKIAIOSFODNN7EXAMPLE"
#define SECRET   "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void test_awss_get_object_example(void **state)
{
	(void)state;
	/* In any order and case: signed sorted and lower-cased. */
	const char *headers[] = {"x-amz-date: 20130524T000000Z", "Range: bytes=0-9",
	                         "x-amz-content-sha256: " EMPTY_SHA, "Host: examplebucket.s3.amazonaws.com"};
	struct sigv4_request r = {"GET", "/test.txt", "", headers, 4, EMPTY_SHA, "20130524T000000Z"};
	struct sigv4_signer k = {0};
	expect_int("sigv4_key_for", 0, sigv4_key_for(&k, SECRET, "us-east-1", r.amz_date));
	char out[512];
	expect_int("sigv4_authorization", 0, sigv4_authorization(&r, &k, KEY_ID, "us-east-1", out, sizeof out));
	expect_str("the example's Authorization",
	           "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
	           "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
	           "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
	           out);
	/* The same signer signs again, and hashes a payload, with what it fetched the first time. */
	expect_int("again", 0, sigv4_authorization(&r, &k, KEY_ID, "us-east-1", out, sizeof out));
	expect_int("the same signature", 1, strstr(out, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41") != NULL);
	char sha[65];
	expect_int("sigv4_sha256_hex", 0, sigv4_sha256_hex(&k, NULL, 0, sha));
	expect_str("the empty payload's hash", EMPTY_SHA, sha);
	expect_int("sigv4_sha256_hex", 0, sigv4_sha256_hex(&k, "abc", 3, sha));
	expect_str("SHA-256 of abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", sha);
	sigv4_signer_free(&k);
	expect_int("freed: zeroed", 1, k.hmac == NULL && k.sha256 == NULL && k.day[0] == '\0');
}

static void test_the_key_is_derived_once_a_day(void **state)
{
	(void)state;
	struct sigv4_signer k = {0};
	expect_int("first", 0, sigv4_key_for(&k, SECRET, "us-east-1", "20130524T000000Z"));
	unsigned char first[32];
	memcpy(first, k.key, 32);
	expect_int("same day", 0, sigv4_key_for(&k, "another secret: not looked at", "us-east-1", "20130524T235959Z"));
	expect_int("kept for the day", 0, memcmp(first, k.key, 32));
	expect_int("next day", 0, sigv4_key_for(&k, SECRET, "us-east-1", "20130525T000000Z"));
	expect_int("derived again", 1, memcmp(first, k.key, 32) != 0);
	expect_str("its day", "20130525", k.day);
	char date[SIGV4_DATE_LEN];
	sigv4_date(1369353600, date);
	expect_str("x-amz-date", "20130524T000000Z", date);
	sigv4_signer_free(&k);
}

static void test_a_header_without_a_colon_is_refused(void **state)
{
	(void)state;
	const char *headers[] = {"Host: h", "broken"};
	struct sigv4_request r = {"GET", "/", "", headers, 2, EMPTY_SHA, "20130524T000000Z"};
	struct sigv4_signer k = {0};
	sigv4_key_for(&k, SECRET, "us-east-1", r.amz_date);
	char out[512];
	expect_int("refused", -1, sigv4_authorization(&r, &k, KEY_ID, "us-east-1", out, sizeof out));
	expect_int("too small a buffer", -1, sigv4_authorization(&(struct sigv4_request){"GET", "/", "", headers, 1,
	                                                         EMPTY_SHA, "20130524T000000Z"},
	                                                         &k, KEY_ID, "us-east-1", out, 40));
	sigv4_signer_free(&k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_awss_get_object_example),
	    cmocka_unit_test(test_the_key_is_derived_once_a_day),
	    cmocka_unit_test(test_a_header_without_a_colon_is_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
