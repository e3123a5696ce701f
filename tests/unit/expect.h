/*
 * expect: assertion macros for the unit tests that say what was checked,
 * what was expected and what came instead (cmocka's assert_* only print values).
 * Include after <cmocka.h> and <string.h>.
 */
#ifndef TGLLM_TEST_EXPECT_H
#define TGLLM_TEST_EXPECT_H

#define expect_int(what, expected, actual)                                                                   \
	do {                                                                                                 \
		long long e_ = (expected), a_ = (actual);                                                    \
		if (e_ != a_)                                                                                \
			fail_msg("%s: expected %lld, got %lld", (what), e_, a_);                             \
	} while (0)

#define expect_str(what, expected, actual)                                                                   \
	do {                                                                                                 \
		const char *e_ = (expected), *a_ = (actual);                                                 \
		if (!a_)                                                                                     \
			fail_msg("%s: expected \"%s\", got NULL", (what), e_);                               \
		if (strcmp(e_, a_) != 0)                                                                     \
			fail_msg("%s: expected \"%s\", got \"%s\"", (what), e_, a_);                         \
	} while (0)

#define expect_null(what, actual)                                                                            \
	do {                                                                                                 \
		const char *a_ = (actual);                                                                   \
		if (a_)                                                                                      \
			fail_msg("%s: expected NULL, got \"%s\"", (what), a_);                               \
	} while (0)

#endif
