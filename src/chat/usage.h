/*
 * usage: what each user spent (/usage) and what is left of their budgets
 * (DAILY_TOKENS, MONTHLY_TOKENS). Pure: no I/O.
 *
 * A user's count of one UTC month is one setting of the user,
 * "usage-YYYY-MM", whose value is a small JSON object:
 *
 *   {"name":"@alice","days":{"2026-12-07":{"gpt-4o":
 *       {"prompt":120,"completion":300,"reserved":0,"estimated":true}}}}
 *
 * "reserved" is what answers being written may still spend: a budget is
 * checked and the answer's share reserved in one store_setting_change
 * before the model is asked, and given back when the real count is added,
 * so two messages raced by one user cannot both spend what is left.
 * "estimated" says some of the count is tokenizer-free guesswork (the
 * provider reported no usage).
 */
#ifndef TGLLM_USAGE_H
#define TGLLM_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "lib/buf.h"

#define USAGE_DAY_LEN 11 /* "YYYY-MM-DD" and its NUL */
#define USAGE_KEY_LEN 14 /* "usage-YYYY-MM" and its NUL */

struct usage_count {
	long long prompt, completion, reserved;
	bool is_estimated;
};

/* 0: unlimited. */
struct usage_budget {
	long long daily, monthly;
};

/* The UTC day of t ("2026-12-07") and the key of its month's setting ("usage-2026-12"). */
void usage_day(time_t t, char day[USAGE_DAY_LEN]);
void usage_key(time_t t, char key[USAGE_KEY_LEN]);

/* What value (NULL: nothing yet) counts for day, or for the whole month when day is NULL. */
struct usage_count usage_total(const char *value, const char *day);

/*
 * value (NULL: nothing yet) with add added to day's count of model (a
 * negative reserved gives a reservation back, never below 0) and the
 * user's name set when name is not NULL. A new string; NULL when out of
 * memory. A value that is not such an object counts as nothing yet.
 */
char *usage_add(const char *value, const char *day, const char *model, const char *name,
                const struct usage_count *add);

/* Tokens the user may still spend today (counting reservations); LLONG_MAX when unlimited. */
long long usage_left(const char *value, const char *day, const struct usage_budget *b, bool *is_daily);

/* When the budget that binds starts again: the next UTC midnight, or the first of the next month. */
time_t usage_resets(time_t now, bool is_daily);

/*
 * /usage: the user's count of day and of the month, per model, and what is
 * left of each budget, in lang. BUF_OK or a buf_error.
 */
int usage_report(struct buf *out, const char *value, const char *day, const struct usage_budget *b,
                 const char *lang);

/* One user in /usage all. */
struct usage_user {
	long long user_id;
	char name[72];
	long long day, month; /* tokens */
};

/* Reads a user's name and totals from their value; false when it is not a count. */
bool usage_user_read(const char *value, const char *day, long long user_id, struct usage_user *u);

/* /usage all: the top users of the day and of the month. BUF_OK or a buf_error. */
int usage_report_all(struct buf *out, struct usage_user *users, size_t n, const char *lang);

#endif
