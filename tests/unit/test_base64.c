/* lib/base64.c: the data: URLs of pictures and PDFs, and the b64_json of drawn pictures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "lib/base64.h"

#include "expect.h"

static void expect_encoding(const char *data, size_t n, const char *want)
{
	struct buf b;
	buf_init(&b, 1u << 20);
	expect_int("base64_append", BUF_OK, base64_append(&b, data, n));
	expect_str("encoding", want, buf_str(&b));
	buf_free(&b);
}

static void test_rfc_4648_vectors_encode_and_decode(void **state)
{
	(void)state;
	static const struct {
		const char *plain, *coded;
	} vectors[] = {{"", ""},
	               {"f", "Zg=="},
	               {"fo", "Zm8="},
	               {"foo", "Zm9v"},
	               {"foob", "Zm9vYg=="},
	               {"fooba", "Zm9vYmE="},
	               {"foobar", "Zm9vYmFy"}};
	for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
		expect_encoding(vectors[i].plain, strlen(vectors[i].plain), vectors[i].coded);
		size_t len = 99;
		char *back = base64_decode(vectors[i].coded, strlen(vectors[i].coded), &len);
		if (!back)
			fail_msg("base64_decode(\"%s\"): expected \"%s\", got NULL", vectors[i].coded,
			         vectors[i].plain);
		expect_int("decoded length", strlen(vectors[i].plain), len);
		expect_str("decoded", vectors[i].plain, back);
		free(back);
	}
}

static void test_every_byte_survives_a_round_trip_over_buffer_chunks(void **state)
{
	(void)state;
	size_t n = 5000; /* more than the encoder's 1024-character chunks */
	unsigned char *data = malloc(n);
	for (size_t i = 0; i < n; i++)
		data[i] = (unsigned char)(i * 7 + 3);
	struct buf b;
	buf_init(&b, 1u << 20);
	expect_int("base64_append", BUF_OK, base64_append(&b, data, n));
	expect_int("encoded length", (n + 2) / 3 * 4, b.len);
	size_t len = 0;
	char *back = base64_decode(b.data, b.len, &len);
	if (!back || len != n || memcmp(back, data, n) != 0)
		fail_msg("expected the %zu bytes back, got %zu", n, back ? len : 0);
	free(back);
	buf_free(&b);
	free(data);
}

static void test_bad_text_is_refused_and_unpadded_or_wrapped_text_is_read(void **state)
{
	(void)state;
	size_t len;
	static const char *const bad[] = {"Zm9v!", "Zg==Zg==", "Z",
	                                  "Zm9vY", "Zg===",    "Zm9" /* bits left over */};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char *out = base64_decode(bad[i], strlen(bad[i]), &len);
		if (out)
			fail_msg("base64_decode(\"%s\"): expected NULL, got %zu bytes", bad[i], len);
	}
	char *out = base64_decode("Zm9v\nYmE", 8, &len);
	expect_str("unpadded, wrapped", "fooba", out);
	free(out);
	struct buf b;
	buf_init(&b, 4);
	expect_int("a bounded buffer says so", BUF_TOO_BIG, base64_append(&b, "foobar", 6));
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc_4648_vectors_encode_and_decode),
	    cmocka_unit_test(test_every_byte_survives_a_round_trip_over_buffer_chunks),
	    cmocka_unit_test(test_bad_text_is_refused_and_unpadded_or_wrapped_text_is_read),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
