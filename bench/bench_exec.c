/*
 * bench_exec: runs a command n times, each with stdin from a file and stdout
 * discarded, after an untimed preparation command; prints the median wall
 * time (CLOCK_MONOTONIC around posix_spawn .. wait4) and the median and
 * maximum peak RSS (wait4's ru_maxrss) as JSON, and every sample on stderr.
 *
 * posix_spawn, not fork: a platform starts a function's process the way
 * glibc's posix_spawn does (clone with CLONE_VFORK: Go's os/exec, Python's
 * subprocess), without copying the starter's page tables. On a virtual
 * machine where page faults are dear a fork costs the starter ~2 ms more,
 * which is the harness's time, not the measured program's (bench/README.md).
 *
 *   bench_exec N INPUT PREP_SHELL_COMMAND -- COMMAND [ARGS...]
 */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

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
		posix_spawn_file_actions_t io;
		pid_t pid;
		if (posix_spawn_file_actions_init(&io) != 0 ||
		    posix_spawn_file_actions_addopen(&io, 0, argv[2], O_RDONLY, 0) != 0 ||
		    posix_spawn_file_actions_addopen(&io, 1, "/dev/null", O_WRONLY, 0) != 0 ||
		    posix_spawnp(&pid, argv[5], &io, NULL, argv + 5, environ) != 0) {
			fprintf(stderr, "bench_exec: cannot start %s\n", argv[5]);
			return 1;
		}
		posix_spawn_file_actions_destroy(&io);
		int status;
		struct rusage ru;
		if (wait4(pid, &status, 0, &ru) != pid)
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
