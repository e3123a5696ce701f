/*
 * libFuzzer target for s3_xml_take (src/store/s3_client.c): any bytes as an
 * S3 answer, read the way the store reads listings and errors. What it
 * decodes is valid UTF-8 whenever the input's text is (a reference never
 * becomes an invalid sequence), never longer than the text it came from,
 * and each take moves past what it took.
 */
#include "lib/utf8.h"
#include "store/s3_client.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_utf8(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq_len((const unsigned char *)s + i, n - i);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data, *end = text + size;
	bool is_valid = is_utf8(text, size) && !memchr(text, '\0', size);
	static const char *const tags[] = {"Key", "Code", "Contents", "IsTruncated"};
	for (size_t t = 0; t < sizeof tags / sizeof tags[0]; t++) {
		const char *from = text;
		for (int takes = 0; takes < 64; takes++) {
			const char *before = from;
			char *value = s3_xml_take(&from, end, tags[t]);
			if (!value) {
				if (from != before)
					abort(); /* nothing taken, nothing passed */
				break;
			}
			size_t n = strlen(value);
			if (from <= before || from > end || n > (size_t)(from - before))
				abort();
			if (is_valid && !is_utf8(value, n))
				abort(); /* a reference decoded to invalid UTF-8 */
			free(value);
		}
	}
	return 0;
}
