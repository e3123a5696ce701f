/*
 * bench_exec: runs a command n times, each with stdin from a file and stdout
 * discarded, after an untimed preparation command; prints the median wall
 * time (CLOCK_MONOTONIC around fork .. wait4) and the median and maximum peak
 * RSS (wait4's ru_maxrss) as JSON, and every sample on stderr.
 *
 *   bench_exec N INPUT PREP_SHELL_COMMAND -- COMMAND [ARGS...]
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 6 || strcmp(argv[4], "--") != 0) {
		fprintf(stderr, "usage: bench_exec N INPUT PREP_SHELL_COMMAND -- COMMAND [ARGS...]\n");
		return 2;
	}
	int n = atoi(argv[1]);
	if (n < 1)
		return 2;
	double *wall = calloc((size_t)n, sizeof *wall), *rss = calloc((size_t)n, sizeof *rss);
	int failures = 0;
	for (int i = 0; i < n; i++) {
		if (*argv[3] && system(argv[3]) != 0) {
			fprintf(stderr, "bench_exec: the preparation failed\n");
			return 1;
		}
		double t0 = now();
		pid_t pid = fork();
		if (pid == 0) {
			int in = open(argv[2], O_RDONLY), out = open("/dev/null", O_WRONLY);
			if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0)
				_exit(127);
			execvp(argv[5], argv + 5);
			_exit(127);
		}
		int status;
		struct rusage ru;
		if (pid < 0 || wait4(pid, &status, 0, &ru) != pid)
			return 1;
		wall[i] = (now() - t0) * 1e3;
		rss[i] = (double)ru.ru_maxrss / 1024.0;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failures++;
		fprintf(stderr, "run %d: %.2f ms, %.2f MB, status %d\n", i + 1, wall[i], rss[i], status);
	}
	qsort(wall, (size_t)n, sizeof *wall, cmp);
	qsort(rss, (size_t)n, sizeof *rss, cmp);
	printf("{\"runs\":%d,\"failures\":%d,\"wall_median_ms\":%.2f,\"wall_min_ms\":%.2f,\"wall_max_ms\":%.2f,"
	       "\"rss_median_mb\":%.2f,\"rss_max_mb\":%.2f}\n",
	       n, failures, wall[(n - 1) / 2], wall[0], wall[n - 1], rss[(n - 1) / 2], rss[n - 1]);
	return failures ? 1 : 0;
}
