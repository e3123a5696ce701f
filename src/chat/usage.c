#include "chat/usage.h"

#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/text.h"

#define USAGE_TOP 10 /* users in each list of /usage all */

void usage_day(time_t t, char day[USAGE_DAY_LEN])
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(day, USAGE_DAY_LEN, "%Y-%m-%d", &tm);
}

void usage_key(time_t t, char key[USAGE_KEY_LEN])
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(key, USAGE_KEY_LEN, "usage-%Y-%m", &tm);
}

/* The object value holds, or a new empty one when it holds none; NULL when out of memory. */
static json_t *load(const char *value)
{
	json_t *root = value ? json_loads(value, 0, NULL) : NULL;
	if (!json_is_object(root)) {
		json_decref(root);
		root = json_object();
	}
	return root;
}

static long long member(const json_t *count, const char *name)
{
	json_int_t v = json_integer_value(json_object_get(count, name));
	return v > 0 ? (long long)v : 0;
}

static void count_add(struct usage_count *t, const json_t *count)
{
	t->prompt += member(count, "prompt");
	t->completion += member(count, "completion");
	t->reserved += member(count, "reserved");
	t->is_estimated |= json_is_true(json_object_get(count, "estimated"));
}

/* Adds up the models of one day's object. */
static void day_add(struct usage_count *t, const json_t *models)
{
	const char *model;
	json_t *count;
	json_object_foreach((json_t *)models, model, count) count_add(t, count);
}

static struct usage_count total_of(const json_t *root, const char *day)
{
	struct usage_count t = {0};
	json_t *days = json_object_get(root, "days");
	if (day) {
		day_add(&t, json_object_get(days, day));
		return t;
	}
	const char *d;
	json_t *models;
	json_object_foreach(days, d, models) day_add(&t, models);
	return t;
}

struct usage_count usage_total(const char *value, const char *day)
{
	json_t *root = load(value);
	struct usage_count t = total_of(root, day);
	json_decref(root);
	return t;
}

/* obj[name], created empty when missing; NULL when out of memory. */
static json_t *object_at(json_t *obj, const char *name)
{
	json_t *o = json_object_get(obj, name);
	if (json_is_object(o))
		return o;
	o = json_object();
	return o && json_object_set_new(obj, name, o) == 0 ? o : NULL;
}

static int add_to(json_t *count, const char *name, long long n)
{
	long long v = member(count, name) + n;
	return json_object_set_new(count, name, json_integer(v > 0 ? v : 0));
}

char *usage_add(const char *value, const char *day, const char *model, const char *name,
                const struct usage_count *add)
{
	json_t *root = load(value), *days, *models, *count;
	char *out = NULL;
	if (root && (days = object_at(root, "days")) && (models = object_at(days, day)) &&
	    (count = object_at(models, model)) && add_to(count, "prompt", add->prompt) == 0 &&
	    add_to(count, "completion", add->completion) == 0 && add_to(count, "reserved", add->reserved) == 0 &&
	    (!add->is_estimated || json_object_set_new(count, "estimated", json_true()) == 0) &&
	    (!name || json_object_set_new(root, "name", json_string(name)) == 0))
		out = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return out;
}

static long long spent(const struct usage_count *t)
{
	return t->prompt + t->completion + t->reserved;
}

long long usage_left(const char *value, const char *day, const struct usage_budget *b, bool *is_daily)
{
	*is_daily = false;
	if (!b->daily && !b->monthly)
		return LLONG_MAX;
	json_t *root = load(value);
	struct usage_count today = total_of(root, day), month = total_of(root, NULL);
	json_decref(root);
	long long left = LLONG_MAX;
	if (b->monthly)
		left = b->monthly - spent(&month);
	if (b->daily && b->daily - spent(&today) <= left) {
		left = b->daily - spent(&today);
		*is_daily = true;
	}
	return left > 0 ? left : 0;
}

time_t usage_resets(time_t now, bool is_daily)
{
	struct tm tm;
	gmtime_r(&now, &tm);
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	if (is_daily) {
		tm.tm_mday++;
	} else {
		tm.tm_mday = 1;
		tm.tm_mon++;
	}
	return timegm(&tm); /* normalises the 32nd day and the 13th month */
}

/* 1234567 -> "1 234 567": counts are read at a glance. */
static void thousands(long long n, char out[32])
{
	char digits[24];
	int len = snprintf(digits, sizeof digits, "%lld", n < 0 ? 0 : n);
	size_t at = 0;
	for (int i = 0; i < len; i++) {
		if (i && (len - i) % 3 == 0)
			out[at++] = ' ';
		out[at++] = digits[i];
	}
	out[at] = '\0';
}

static int append_fmt(struct buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int append_fmt(struct buf *out, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0)
		return BUF_NO_MEMORY;
	return buf_append(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* "Today (UTC): 1 234 tokens" and a line per model. */
static int report_period(struct buf *out, const json_t *root, const char *day, enum text_id heading,
                         const char *lang)
{
	struct usage_count t = total_of(root, day);
	char all[32], p[32], c[32];
	thousands(t.prompt + t.completion, all);
	int rc = t.prompt + t.completion == 0
	             ? append_fmt(out, "%s: %s\n", text_get(heading, lang), text_get(TEXT_USAGE_NONE, lang))
	             : append_fmt(out, "%s: %s%s\n", text_get(heading, lang), t.is_estimated ? "~" : "", all);
	/* Per model: a day's models, or the month's added up over its days. */
	json_t *per_model = json_object();
	json_t *days = json_object_get(root, "days");
	const char *d, *model;
	json_t *models, *count;
	json_object_foreach(days, d, models)
	{
		if (day && strcmp(d, day) != 0)
			continue;
		json_object_foreach(models, model, count)
		{
			json_t *sum = object_at(per_model, model);
			if (!sum || add_to(sum, "prompt", member(count, "prompt")) != 0 ||
			    add_to(sum, "completion", member(count, "completion")) != 0) {
				json_decref(per_model);
				return BUF_NO_MEMORY;
			}
		}
	}
	json_object_foreach(per_model, model, count)
	{
		if (rc != BUF_OK || member(count, "prompt") + member(count, "completion") == 0)
			continue;
		thousands(member(count, "prompt"), p);
		thousands(member(count, "completion"), c);
		rc = append_fmt(out, "  %s: %s + %s\n", model, p, c);
	}
	json_decref(per_model);
	return rc;
}

static int report_left(struct buf *out, long long budget, long long used, enum text_id id, const char *lang)
{
	if (!budget)
		return BUF_OK;
	char left[32], of[32];
	thousands(budget > used ? budget - used : 0, left);
	thousands(budget, of);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	return append_fmt(out, text_get(id, lang), left, of); /* each language's text takes two %s */
#pragma GCC diagnostic pop
}

int usage_report(struct buf *out, const char *value, const char *day, const struct usage_budget *b,
                 const char *lang)
{
	json_t *root = load(value);
	if (!root)
		return BUF_NO_MEMORY;
	struct usage_count today = total_of(root, day), month = total_of(root, NULL);
	int rc = report_period(out, root, day, TEXT_USAGE_TODAY, lang);
	if (rc == BUF_OK)
		rc = report_period(out, root, NULL, TEXT_USAGE_MONTH, lang);
	if (rc == BUF_OK && (b->daily || b->monthly))
		rc = buf_append_str(out, "\n");
	if (rc == BUF_OK)
		rc = report_left(out, b->daily, spent(&today), TEXT_USAGE_LEFT_DAY, lang);
	if (rc == BUF_OK && b->daily && b->monthly)
		rc = buf_append_str(out, "\n");
	if (rc == BUF_OK)
		rc = report_left(out, b->monthly, spent(&month), TEXT_USAGE_LEFT_MONTH, lang);
	if (rc == BUF_OK && (today.is_estimated || month.is_estimated))
		rc = append_fmt(out, "\n%s", text_get(TEXT_USAGE_ESTIMATED, lang));
	json_decref(root);
	return rc;
}

bool usage_user_read(const char *value, const char *day, long long user_id, struct usage_user *u)
{
	json_t *root = value ? json_loads(value, 0, NULL) : NULL;
	if (!json_is_object(root)) {
		json_decref(root);
		return false;
	}
	struct usage_count today = total_of(root, day), month = total_of(root, NULL);
	const char *name = json_string_value(json_object_get(root, "name"));
	*u = (struct usage_user){.user_id = user_id,
	                         .day = today.prompt + today.completion,
	                         .month = month.prompt + month.completion};
	if (name)
		snprintf(u->name, sizeof u->name, "%s", name);
	json_decref(root);
	return true;
}

static int by_day(const void *a, const void *b)
{
	const struct usage_user *x = a, *y = b;
	return (y->day > x->day) - (y->day < x->day);
}

static int by_month(const void *a, const void *b)
{
	const struct usage_user *x = a, *y = b;
	return (y->month > x->month) - (y->month < x->month);
}

static int report_top(struct buf *out, struct usage_user *users, size_t n, bool is_day, const char *lang)
{
	qsort(users, n, sizeof *users, is_day ? by_day : by_month);
	int rc = append_fmt(out, "%s:\n", text_get(is_day ? TEXT_USAGE_ALL_DAY : TEXT_USAGE_ALL_MONTH, lang));
	size_t shown = 0;
	for (size_t i = 0; rc == BUF_OK && i < n && shown < USAGE_TOP; i++) {
		long long tokens = is_day ? users[i].day : users[i].month;
		if (!tokens)
			break;
		char t[32];
		thousands(tokens, t);
		rc = append_fmt(out, "%zu. %s (%lld): %s\n", ++shown, users[i].name[0] ? users[i].name : "?",
		                users[i].user_id, t);
	}
	if (rc == BUF_OK && !shown)
		rc = append_fmt(out, "%s\n", text_get(TEXT_USAGE_NONE, lang));
	return rc;
}

int usage_report_all(struct buf *out, struct usage_user *users, size_t n, const char *lang)
{
	int rc = report_top(out, users, n, true, lang);
	if (rc == BUF_OK)
		rc = buf_append_str(out, "\n");
	if (rc == BUF_OK)
		rc = report_top(out, users, n, false, lang);
	return rc;
}
