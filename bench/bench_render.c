/*
 * Benchmark for src/render.c: how fast a large Markdown answer becomes
 * Telegram messages. The answer (~1 MB) is generated deterministically:
 * paragraphs with bold, italic, code and links in English, Russian and
 * emoji, nested and task lists, fenced code blocks, tables, quotes.
 *
 *   bench_render [MB]    (default 1)
 *
 * Prints one line per figure: the median of 11 timed runs after a warm-up.
 */
#include "lib/buf.h"
#include "telegram/render.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 11

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint32_t rng(uint32_t bound)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % bound);
}

static const char *const words[] = {
    "the",    "model",     "answer", "Telegram", "message",   "entity",   "offset", "render",
    "split",  "limit",     "код",    "ответ",    "сообщение", "разметка", "пример", "длинный",
    "текст",  "список",    "😀",      "🚀",        "👍🏽",  "data",     "stream", "buffer",
    "UTF-16", "surrogate", "café",   "naïve",    "東京",      "ok",
};

static int add(struct buf *b, const char *s)
{
	return buf_append_str(b, s) == BUF_OK ? 0 : -1;
}

static int add_words(struct buf *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && add(b, " ") != 0)
			return -1;
		const char *w = words[rng(sizeof words / sizeof words[0])];
		int rc;
		switch (rng(12)) {
		case 0:
			rc = add(b, "**") || add(b, w) || add(b, "**");
			break;
		case 1:
			rc = add(b, "*") || add(b, w) || add(b, "*");
			break;
		case 2:
			rc = add(b, "`") || add(b, w) || add(b, "`");
			break;
		case 3:
			rc = add(b, "[") || add(b, w) || add(b, "](https://example.com/") || add(b, w) ||
			     add(b, ")");
			break;
		case 4:
			rc = add(b, "~~") || add(b, w) || add(b, "~~");
			break;
		default:
			rc = add(b, w);
		}
		if (rc != 0)
			return -1;
	}
	return 0;
}

static int add_block(struct buf *b)
{
	int rc = 0;
	switch (rng(8)) {
	case 0:
		rc = add(b, "## ") || add_words(b, 4);
		break;
	case 1:
		for (int i = 0; i < 6 && rc == 0; i++)
			rc = add(b, i % 3 == 2 ? "  - "
			            : i == 4   ? "- [x] "
			                       : "- ") ||
			     add_words(b, 8) || add(b, "\n");
		break;
	case 2:
		for (int i = 0; i < 4 && rc == 0; i++) {
			char num[16];
			snprintf(num, sizeof num, "%d. ", i + 1);
			rc = add(b, num) || add_words(b, 10) || add(b, "\n");
		}
		break;
	case 3:
		rc = add(b, "```python\n");
		for (int i = 0; i < 12 && rc == 0; i++)
			rc = add(b, "def f(x):\n\treturn x * 2  # комментарий 😀\n");
		rc = rc || add(b, "```");
		break;
	case 4:
		rc = add(b, "| Name | Значение | Note |\n|:-----|-----:|:----:|\n");
		for (int i = 0; i < 8 && rc == 0; i++)
			rc = add(b, "| ") || add_words(b, 2) || add(b, " | 42 | ") || add_words(b, 1) ||
			     add(b, " |\n");
		break;
	case 5:
		rc = add(b, "> ") || add_words(b, 30);
		break;
	default:
		rc = add_words(b, 60);
	}
	return rc ? -1 : add(b, "\n\n");
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y ? 1 : 0;
}

/* Median seconds of RUNS renders of md with opt; out_parts/out_entities from the last run. */
static int time_render(const char *md, size_t len, const struct render_options *opt, double *median,
                       size_t *out_parts, size_t *out_entities)
{
	double t[RUNS];
	for (int run = -1; run < RUNS; run++) {
		struct render_output out;
		double t0 = now();
		if (render_markdown(md, len, opt, &out) != 0)
			return -1;
		double t1 = now();
		if (run >= 0)
			t[run] = t1 - t0;
		*out_parts = out.n_parts;
		*out_entities = 0;
		for (size_t i = 0; i < out.n_parts; i++)
			*out_entities += out.parts[i].n_entities;
		render_output_free(&out);
	}
	qsort(t, RUNS, sizeof t[0], compare_doubles);
	*median = t[RUNS / 2];
	return 0;
}

int main(int argc, char **argv)
{
	double mb = argc > 1 ? atof(argv[1]) : 1.0;
	if (mb <= 0 || mb > 16) {
		fprintf(stderr, "usage: bench_render [MB, up to 16]\n");
		return 2;
	}
	size_t target = (size_t)(mb * 1024 * 1024);
	struct buf md;
	buf_init(&md, target + (1u << 16));
	while (md.len < target)
		if (add_block(&md) != 0) {
			fprintf(stderr, "bench_render: out of memory generating the answer\n");
			buf_free(&md);
			return 1;
		}

	static const struct {
		const char *what;
		bool is_partial;
	} cases[] = {
	    {"render_markdown, finished answer", false},
	    {"render_markdown, is_partial (a streaming draft)", true},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct render_options opt = {.is_partial = cases[i].is_partial};
		double secs;
		size_t parts, entities;
		if (time_render(md.data, md.len, &opt, &secs, &parts, &entities) != 0) {
			fprintf(stderr, "bench_render: render_markdown failed\n");
			buf_free(&md);
			return 1;
		}
		printf("%s: %.2f MB of Markdown -> %zu messages, %zu entities: %.1f MB/s (median of %d, %.1f "
		       "ms)\n",
		       cases[i].what, (double)md.len / (1024 * 1024), parts, entities,
		       (double)md.len / (1024 * 1024) / secs, RUNS, secs * 1e3);
	}
	buf_free(&md);
	return 0;
}
