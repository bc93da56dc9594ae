/*
 * The in-container test helper, built static into the test rootfs as
 * /bin/ctrhelper. One binary, a few subcommands that report facts the
 * tests cannot read from outside:
 *
 *   ctrhelper notify MESSAGE          send MESSAGE to $NOTIFY_SOCKET
 *   ctrhelper memhold MIB FILE [DIRTY_PAGES_PER_SEC [same|new]]
 *       fill MIB MiB with a known pattern, then every 100 ms write
 *       "<counter> <checksum> <pattern-ok>" to FILE; optionally dirty
 *       pages at a fixed rate: "same" (default) rewrites the same values
 *       (dirty for soft-dirty, unchanged for a content hash), "new" writes
 *       new values and keeps the running sum in step, so <pattern-ok> still
 *       proves no page was lost or stale (the checksum then moves)
 *   ctrhelper tcppair PORT FILE
 *       connect to itself over 127.0.0.1:PORT and keep one connection
 *       established: every 100 ms the client sends a counter, the server
 *       checks it follows the previous one and writes "<n> <ok>" to FILE
 *   ctrhelper exewatch SECONDS SECRET FILE
 *       the CVE-2019-5736 attacker: for SECONDS (or until /var/watch.stop
 *       exists), watch /proc for processes
 *       whose executable is not busybox/ctrhelper (the runtime joining the
 *       container); open their /proc/PID/exe with O_PATH and keep trying to
 *       reopen it for writing through /proc/self/fd/N and write one byte;
 *       read their environ (looking for SECRET) and mem. One line per
 *       finding in FILE: "seen PID TARGET", "denied PID ERRNO" (exe not
 *       even openable), "exe PID open=ERRNO write=ERRNO",
 *       "environ PID ERRNO secret=0|1", "mem PID ERRNO"
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int notify(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (!path || strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "ctrhelper: NOTIFY_SOCKET unset\n");
		return 1;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (fd < 0 || sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("ctrhelper: notify");
		return 1;
	}
	return 0;
}

static uint64_t pattern(uint64_t i)
{
	/* splitmix64: a cheap, position-dependent, reproducible pattern */
	uint64_t z = i + 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int memhold(long mib, const char *file, long dirty_per_sec, int change)
{
	size_t n = (size_t)mib * 1024 * 1024 / 8, page_words = 4096 / 8, pages = n / page_words;
	uint64_t *buf = malloc(n * 8), sum = 0, counter = 0;
	size_t next_dirty = 0;

	if (!buf) {
		perror("ctrhelper: malloc");
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		buf[i] = pattern(i);
		sum += buf[i];
	}
	for (;;) {
		uint64_t check = 0;
		int ok = 1;
		char tmp[4096];
		FILE *f;

		/* dirty pages at the requested rate: the same values, or new
		 * ones with the sum kept in step */
		for (long k = 0; k < dirty_per_sec / 10 && pages; k++) {
			size_t p = next_dirty++ % pages;
			uint64_t v = pattern(p * page_words);

			if (change)
				v ^= counter + 1;
			sum += v - buf[p * page_words];
			buf[p * page_words] = v;
		}
		if (counter % 10 == 0) {
			for (size_t i = 0; i < n; i++)
				check += buf[i];
			ok = check == sum;
		} else {
			check = sum;
		}
		counter++;
		snprintf(tmp, sizeof(tmp), "%s.tmp", file);
		f = fopen(tmp, "w");
		if (f) {
			fprintf(f, "%llu %016llx %d\n", (unsigned long long)counter,
				(unsigned long long)check, ok);
			fclose(f);
			rename(tmp, file);
		}
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

static void write_status(const char *file, unsigned long n, int ok)
{
	char tmp[4096];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", file);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "%lu %d\n", n, ok);
	fclose(f);
	rename(tmp, file);
}

static int tcppair(int port, const char *file)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, lfd, cfd, sfd;
	unsigned long n = 0, expect = 1, got;
	int ok = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 1)) {
		perror("ctrhelper: listen");
		return 1;
	}
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(cfd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("ctrhelper: connect");
		return 1;
	}
	sfd = accept(lfd, NULL, NULL);
	close(lfd);
	for (;;) {
		n++;
		if (write(cfd, &n, sizeof(n)) != sizeof(n) || read(sfd, &got, sizeof(got)) != sizeof(got)) {
			write_status(file, n, 0);
			return 1;
		}
		ok = ok && got == expect;
		expect = got + 1;
		write_status(file, got, ok);
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

#define WATCH_MAX 64

static int exewatch(int seconds, const char *secret, const char *file)
{
	FILE *out = fopen(file, "w");
	int fds[WATCH_MAX], pids[WATCH_MAX], done[WATCH_MAX], n = 0, i;
	char seen[32768] = { 0 };
	time_t end = time(NULL) + seconds;

	if (!out)
		return 1;
	setvbuf(out, NULL, _IOLBF, 0);
	while (time(NULL) < end && access("/var/watch.stop", F_OK) != 0) {
		DIR *d = opendir("/proc");
		struct dirent *e;

		while (d && (e = readdir(d))) {
			int pid = atoi(e->d_name);
			char path[64], target[256], buf[65536];
			ssize_t len;
			int fd;

			if (pid <= 1 || pid == getpid() || pid >= (int)sizeof(seen) || seen[pid])
				continue;
			snprintf(path, sizeof(path), "/proc/%d/exe", pid);
			fd = open(path, O_PATH | O_CLOEXEC);
			if (fd < 0 && errno != EACCES && errno != EPERM)
				continue;
			if (fd < 0) {
				/* A fence (Landlock) keeps us out: say so once. */
				fprintf(out, "denied %d %d\n", pid, errno);
			} else {
				len = readlink(path, target, sizeof(target) - 1);
				target[len > 0 ? len : 0] = 0;
				if (!strcmp(target, "/bin/busybox") || !strcmp(target, "/bin/ctrhelper")) {
					close(fd);
					continue;
				}
				if (n < WATCH_MAX) {
					fds[n] = fd, pids[n] = pid, done[n] = 0, n++;
					fprintf(out, "seen %d %s\n", pid, target);
				} else {
					close(fd);
				}
			}
			seen[pid] = 1;
			snprintf(path, sizeof(path), "/proc/%d/environ", pid);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				fprintf(out, "environ %d %d secret=0\n", pid, errno);
			} else {
				len = read(fd, buf, sizeof(buf) - 1);
				buf[len > 0 ? len : 0] = 0;
				for (i = 0; i < len; i++)
					if (!buf[i])
						buf[i] = '\n';
				fprintf(out, "environ %d %d secret=%d\n", pid, len < 0 ? errno : 0,
					len > 0 && strstr(buf, secret) != NULL);
				close(fd);
			}
			snprintf(path, sizeof(path), "/proc/%d/mem", pid);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			fprintf(out, "mem %d %d\n", pid, fd < 0 ? errno : 0);
			if (fd >= 0)
				close(fd);
		}
		if (d)
			closedir(d);
		/* Keep trying: "Text file busy" lasts only while a host process
		 * still runs the file. */
		for (i = 0; i < n; i++) {
			char path[64];
			int w, werr = 0, oerr = 0;

			if (done[i])
				continue;
			snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[i]);
			w = open(path, O_WRONLY | O_CLOEXEC);
			if (w < 0) {
				oerr = errno;
			} else {
				if (pwrite(w, "", 0, 0) < 0 || pwrite(w, "\x7f", 1, 0) != 1)
					werr = errno ? errno : EIO;
				close(w);
				done[i] = 1;
			}
			if (oerr != ETXTBSY || time(NULL) + 1 >= end ||
			    access("/var/watch.stop", F_OK) == 0) {
				done[i] = 1;
				fprintf(out, "exe %d open=%d write=%d\n", pids[i], oerr, werr);
			}
		}
	}
	fprintf(out, "end\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 5 && !strcmp(argv[1], "exewatch"))
		return exewatch(atoi(argv[2]), argv[3], argv[4]);
	if (argc >= 3 && !strcmp(argv[1], "notify"))
		return notify(argv[2]);
	if (argc >= 4 && !strcmp(argv[1], "memhold"))
		return memhold(atol(argv[2]), argv[3], argc > 4 ? atol(argv[4]) : 0,
			       argc > 5 && !strcmp(argv[5], "new"));
	if (argc >= 4 && !strcmp(argv[1], "tcppair"))
		return tcppair(atoi(argv[2]), argv[3]);
	fprintf(stderr, "usage: ctrhelper notify MSG | memhold MIB FILE [DIRTY_PAGES_PER_SEC "
			"[same|new]] | "
			"tcppair PORT FILE\n");
	return 2;
}
