/*
 * The system-call probe of gateway/tests/runtime.rs: run as a service inside a
 * personality (as confined as any service), it makes the calls listed in a spec
 * file and reports whether the kernel (that is, the personality's seccomp filters)
 * answered as expected: every check to /run/syscall-probe.log, failures also to
 * standard output (relayed to the console, which is rate-limited), then a summary:
 *
 *   PROBE sys-<name> FAIL: <what happened>
 *   PROBE sys-done <n> checks, <k> failed
 *
 * Spec lines: <name> <nr> <a0> <a1> <a2> <a3> <a4> <a5> <expect>
 *   <nr>      a number (0x40000000 | n for x32), or int80:<eax> for the i386 ABI;
 *   <aN>      a number, or S (a fresh AF_INET datagram socket), or P (a fresh
 *             AF_PACKET socket, where the compartment may open one);
 *   <expect>  errno:<n> (the call fails with errno n), ok (it succeeds), or
 *             kill (the process is killed by SIGSYS; the call runs in a child).
 *
 * Built by the test with `cc -static`; not part of any image.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static long int80(long nr, long a, long b, long c)
{
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return r;
}

static FILE *logf;
static int checks, failed;

static void report(const char *name, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	checks++;
	if (logf)
		fprintf(logf, "PROBE sys-%s %s\n", name, msg);
	if (strcmp(msg, "ok")) {
		failed++;
		printf("PROBE sys-%s FAIL: %s\n", name, msg);
		fflush(stdout);
	}
}

static int arg(const char *s, unsigned long long *out)
{
	if (!strcmp(s, "S")) {
		int fd = socket(AF_INET, SOCK_DGRAM, 0);
		*out = (unsigned long long)fd;
		return fd >= 0;
	}
	if (!strcmp(s, "P")) {
		int fd = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
		*out = (unsigned long long)fd;
		return fd >= 0;
	}
	*out = strtoull(s, NULL, 0);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: syscall-probe <spec>\n");
		return 2;
	}
	FILE *f = fopen(argv[1], "r");
	if (!f) {
		printf("PROBE sys-spec FAIL: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	logf = fopen("/run/syscall-probe.log", "w");
	char name[128], nrs[64], as[6][64], expect[64];
	while (fscanf(f, "%127s %63s %63s %63s %63s %63s %63s %63s %63s", name, nrs, as[0], as[1],
		      as[2], as[3], as[4], as[5], expect) == 9) {
		unsigned long long a[6];
		int setup = 1;
		for (int i = 0; i < 6; i++)
			setup &= arg(as[i], &a[i]);
		if (!setup) {
			report(name, "setup: %s", strerror(errno));
			continue;
		}
		int is80 = !strncmp(nrs, "int80:", 6);
		long nr = strtol(is80 ? nrs + 6 : nrs, NULL, 0);
		if (!strcmp(expect, "kill")) {
			fflush(stdout);
			pid_t pid = fork();
			if (pid == 0) {
				struct rlimit none = {0, 0};
				setrlimit(RLIMIT_CORE, &none);
				if (is80)
					int80(nr, (long)a[0], (long)a[1], (long)a[2]);
				else
					syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
				_exit(0);
			}
			int st = 0;
			if (pid < 0 || waitpid(pid, &st, 0) != pid)
				report(name, "fork/wait: %s", strerror(errno));
			else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS)
				report(name, "ok");
			else if (WIFSIGNALED(st))
				report(name, "killed by signal %d, not SIGSYS",
				       WTERMSIG(st));
			else
				report(name, "the call returned (exit %d)",
				       WEXITSTATUS(st));
		} else {
			errno = 0;
			long r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
			int e = errno;
			if (!strcmp(expect, "ok")) {
				if (r >= 0)
					report(name, "ok");
				else
					report(name, "errno %d (%s)", e, strerror(e));
			} else if (!strncmp(expect, "errno:", 6)) {
				int want = atoi(expect + 6);
				if (r == -1 && e == want)
					report(name, "ok");
				else if (r == -1)
					report(name, "errno %d (%s), want %d (%s)", e,
					       strerror(e), want, strerror(want));
				else
					report(name, "returned %ld, want errno %d (%s)",
					       r, want, strerror(want));
			} else {
				report(name, "bad expectation %s", expect);
			}
		}
	}
	if (logf)
		fclose(logf);
	printf("PROBE sys-done %d checks, %d failed\n", checks, failed);
	return 0;
}
