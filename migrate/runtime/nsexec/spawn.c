/*
 * exec's fast path: start a process in a running container without
 * forking the Python runtime (issue 16).
 *
 * os.fork() of the runtime copies the page tables of a ~20 MB interpreter
 * and the child then faults in every page it touches; the old path forked
 * twice (once more into the PID namespace) and ran the process's set-up in
 * Python. Here the runtime plans everything (runtime/spawn.py) and this
 * file does the rest with syscalls only, in a child made by
 * clone(CLONE_VM | CLONE_VFORK): it borrows the runtime's memory (no copy)
 * while the runtime is suspended, and gets its own with execve.
 *
 * The order, and why:
 *   parent: the mm is made non-dumpable before the child exists (the flag
 *     belongs to the mm the child shares), so from its first instant until
 *     execve nothing in the container can ptrace it or open its /proc files
 *     without CAP_SYS_PTRACE (CVE-2019-5736; for that capability see
 *     runtime/exe_guard.py); the previous value is put back once the child
 *     has exec'd (its new mm no longer shares ours), as the forking path's
 *     child was non-dumpable from before its joins to its execve too;
 *   parent: setns(CLONE_NEWPID) changes only the namespace of our future
 *     children (pid_namespaces(7)), so the child is born in the
 *     container's PID namespace and no second fork is needed; the parent
 *     goes back to its own namespace right after clone();
 *   parent: every signal blocked across clone(): the child must not run
 *     the runtime's handlers on the runtime's memory;
 *   parent: the initial environment block zeroed across clone() (and put
 *     back after): it is what /proc/PID/environ of the child shows;
 *   child: join the cgroups ("0": the writer) while still in the host's
 *     cgroup namespace, then oom_score_adj through the host's /proc, the
 *     rlimits, the other namespaces with the mount namespace last (after it
 *     the host's files are out of sight), setsid;
 *   child, inside the container's root: cwd, HOME from the container's
 *     /etc/passwd, the executable found on the container's PATH, stdio
 *     owner, then user and capabilities and no_new_privs in
 *     runtime/process.py's order (seccomp first without no_new_privs, last
 *     with it), umask, fds >= keep_fds close-on-exec, signal dispositions
 *     to default, mask cleared, execve.
 * A user namespace cannot be joined by a process that shares its mm
 * (setns(2): EINVAL), and a console needs the fd passed back: those
 * (and a few other rare cases, runtime/spawn.py) keep the forking path.
 *
 * In the child: no malloc, no FILE streams, no locks (the memory is the
 * runtime's); credentials change through raw syscalls, since glibc's
 * wrappers would broadcast the change to the runtime's threads. On failure
 * the child records the step, errno and index in the shared struct and
 * exits; vfork guarantees the parent reads it after that.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nsexec.h"

#define STACK_SIZE (256 * 1024)
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static int fail(struct nsexec_spawn *s, const char *step, int index)
{
	size_t n = strlen(step);

	s->err = errno ? errno : EIO;
	s->index = index;
	if (n >= sizeof(s->failed_step))
		n = sizeof(s->failed_step) - 1;
	memcpy(s->failed_step, step, n);
	s->failed_step[n] = '\0';
	return 127;
}

static int join_cgroups(struct nsexec_spawn *s)
{
	for (int i = 0; i < s->ncgroups; i++)
		if (write(s->cgroup_fds[i], "0", 1) != 1)
			return fail(s, "cgroup", i);
	return 0;
}

static int set_limits(struct nsexec_spawn *s)
{
	if (s->oom_score_adj_set) {
		char text[16];
		int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
		int len = snprintf(text, sizeof(text), "%d", s->oom_score_adj);

		if (fd < 0 || write(fd, text, len) != len)
			return fail(s, "oom_score_adj", 0);
		close(fd);
	}
	for (int i = 0; i < s->nrlimits; i++) {
		struct rlimit lim = { s->rlimit_cur[i], s->rlimit_max[i] };

		if (setrlimit(s->rlimit_res[i], &lim) < 0)
			return fail(s, "rlimit", i);
	}
	return 0;
}

static int join_namespaces(struct nsexec_spawn *s)
{
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < s->njoin; i++) {
			/* the mount namespace in the second pass: see the header */
			if ((s->join_types[i] == CLONE_NEWNS) != pass)
				continue;
			if (setns(s->join_fds[i], s->join_types[i]) < 0)
				return fail(s, "setns", i);
		}
	if (setsid() < 0)
		return fail(s, "setsid", 0);
	return 0;
}

/* The home directory of uid in /etc/passwd (runtime/process.py home_of). */
static void find_home(struct nsexec_spawn *s)
{
	char buf[8192], uid[16], *line, *end, *field[7];
	size_t have = 0, len;
	int fd, eof = 0, skipping = 0;
	ssize_t n;

	snprintf(s->home, sizeof(s->home), "HOME=/");
	snprintf(uid, sizeof(uid), "%u", s->uid);
	fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	while (!eof) {
		n = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			eof = 1;
			n = 0;
			if (have)
				buf[have++] = '\n';  /* the last line, unterminated */
		}
		have += n;
		line = buf;
		while ((end = memchr(line, '\n', buf + have - line))) {
			int k = 0;

			*end = '\0';
			if (skipping) {         /* the rest of a line too long to keep */
				skipping = 0;
				line = end + 1;
				continue;
			}
			field[k++] = line;
			for (char *p = line; *p && k < 7; p++)
				if (*p == ':') {
					*p = '\0';
					field[k++] = p + 1;
				}
			if (k >= 6 && !strcmp(field[2], uid)) {
				snprintf(s->home, sizeof(s->home), "HOME=%s",
					 field[5][0] ? field[5] : "/");
				close(fd);
				return;
			}
			line = end + 1;
		}
		len = buf + have - line;
		if (len == sizeof(buf) - 1) {   /* no newline in a full buffer */
			skipping = 1;
			len = 0;
		}
		memmove(buf, line, len);
		have = len;
	}
	close(fd);
}

static int is_executable_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Like execvp's search, in the container's root (process.py resolve_executable). */
static int find_executable(struct nsexec_spawn *s)
{
	const char *arg0 = s->argv[0], *dir, *end;
	size_t n0 = strlen(arg0);
	struct stat st;

	if (strchr(arg0, '/')) {
		if (stat(arg0, &st) < 0)
			return fail(s, "executable", 0);
		if (S_ISDIR(st.st_mode)) {
			errno = EACCES;
			return fail(s, "executable", 1);
		}
		if (!(st.st_mode & 0111)) {
			errno = EACCES;
			return fail(s, "executable", 2);
		}
		if (n0 >= sizeof(s->path)) {
			errno = ENAMETOOLONG;
			return fail(s, "executable", 0);
		}
		memcpy(s->path, arg0, n0 + 1);
		return 0;
	}
	for (dir = s->path_var ? s->path_var : DEFAULT_PATH;; dir = end + 1) {
		size_t len;

		end = strchrnul(dir, ':');
		len = end - dir;
		if (len == 0) {
			dir = ".";
			len = 1;
		}
		if (len + 1 + n0 < sizeof(s->path)) {
			memcpy(s->path, dir, len);
			s->path[len] = '/';
			memcpy(s->path + len + 1, arg0, n0 + 1);
			if (is_executable_file(s->path))
				return 0;
		}
		if (!*end)
			break;
	}
	errno = ENOENT;
	return fail(s, "executable", 3);
}

/* Give the process's user its stdio (process.py fix_stdio_owner). */
static int fix_stdio_owner(struct nsexec_spawn *s)
{
	struct stat null, st;
	int have_null = stat("/dev/null", &null) == 0;

	for (int fd = 0; fd < 3; fd++) {
		if (fstat(fd, &st) < 0)
			return fail(s, "fstat", fd);
		if (st.st_uid == s->uid ||
		    (have_null && S_ISCHR(st.st_mode) && st.st_rdev == null.st_rdev))
			continue;
		if (fchown(fd, s->uid, st.st_gid) < 0 &&
		    errno != EINVAL && errno != EPERM && errno != EROFS)
			return fail(s, "fchown", fd);
	}
	return 0;
}

static int load_seccomp(struct nsexec_spawn *s)
{
	int r = seccomp_filter_install(s->seccomp);

	if (r < 0) {
		errno = -r;
		return fail(s, "seccomp", 0);
	}
	return 0;
}

/* process.py apply_user_and_caps, step for step. */
static int become_user(struct nsexec_spawn *s)
{
	if (s->seccomp && !s->no_new_privs && load_seccomp(s))
		return 127;
	if (s->has_caps)
		for (int cap = 0; cap <= s->last_cap; cap++)
			if (!(s->bounding >> cap & 1) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
				return fail(s, "capbset", cap);
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		return fail(s, "prctl(PR_SET_KEEPCAPS)", 0);
	if (s->set_groups && syscall(SYS_setgroups, s->ngroups, s->groups) < 0)
		return fail(s, "setgroups", 0);
	if (syscall(SYS_setresgid, s->gid, s->gid, s->gid) < 0 ||
	    syscall(SYS_setresuid, s->uid, s->uid, s->uid) < 0)
		return fail(s, "setresuid", 0);
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
		return fail(s, "prctl(PR_SET_KEEPCAPS)", 0);
	if (s->has_caps) {
		struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
		struct __user_cap_data_struct data[2] = {
			{ s->effective, s->permitted, s->inheritable },
			{ s->effective >> 32, s->permitted >> 32, s->inheritable >> 32 },
		};

		if (syscall(SYS_capset, &hdr, data) < 0)
			return fail(s, "capset", 0);
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
			return fail(s, "prctl(PR_CAP_AMBIENT)", 0);
		/* refusals ignored, as runc 1.1 does (process.py) */
		for (int cap = 0; cap <= s->last_cap; cap++)
			if (s->ambient >> cap & 1)
				prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
	}
	if (s->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return fail(s, "prctl(PR_SET_NO_NEW_PRIVS)", 0);
	if (s->umask >= 0)
		umask(s->umask);
	return 0;
}

/* process.py prepare_exec: only fds 0 .. keep_fds-1 survive execve. */
static int prepare_fds(struct nsexec_spawn *s)
{
	if (syscall(SYS_close_range, s->keep_fds, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */) < 0)
		return fail(s, "close_range", 0);
	for (int fd = 3; fd < s->keep_fds; fd++)
		if (fcntl(fd, F_SETFD, 0) < 0)
			return fail(s, "preserve fd", fd);
	return 0;
}

static int spawn_child(void *arg)
{
	struct nsexec_spawn *s = arg;
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t none;

	if (join_cgroups(s) || set_limits(s) || join_namespaces(s))
		return 127;
	if (chdir(s->cwd) < 0)
		return fail(s, "cwd", 0);
	if (s->need_home) {
		find_home(s);
		s->envp[s->nenv] = s->home;
	}
	if (find_executable(s) || fix_stdio_owner(s) || become_user(s) || prepare_fds(s))
		return 127;
	/* Everything still blocked (the parent's mask): defaults first, then unblock. */
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &dfl, NULL);   /* glibc's own two refuse: fine */
	if (s->seccomp && s->no_new_privs && load_seccomp(s))
		return 127;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(s->path, (char *const *)s->argv, s->envp);
	return fail(s, "execve", 0);
}

/*
 * Our initial environment block (what /proc/PID/environ shows: fields 50
 * and 51 of /proc/self/stat), or 0. The child shares it until execve, so
 * the parent hides it meanwhile, as the forking path's scrub_environ does
 * in its child (runtime/exe_guard.py); Python's os.environ is a copy.
 */
static size_t environ_block(char **start)
{
	char buf[2048], *p;
	unsigned long begin = 0, end = 0;
	ssize_t n;
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC), field = 2;   /* after ")" */

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	while (p && field < 51) {
		p = strchr(p + 1, ' ');
		if (p && ++field == 50)
			begin = strtoul(p + 1, NULL, 10);
		else if (p && field == 51)
			end = strtoul(p + 1, NULL, 10);
	}
	if (!begin || end <= begin)
		return 0;
	*start = (char *)begin;
	return end - begin;
}

int nsexec_spawn(struct nsexec_spawn *s)
{
	sigset_t all, old;
	int dumpable, pid, err, back = 0;
	char *stack, *env = NULL, *saved = NULL;
	size_t env_len;

	s->err = 0;
	s->pid = 0;
	s->failed_step[0] = '\0';
	stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED)
		return -errno;
	dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	if (dumpable < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
		err = errno;
		munmap(stack, STACK_SIZE);
		return -err;
	}
	if (s->pidns_fd >= 0 && setns(s->pidns_fd, CLONE_NEWPID) < 0) {
		fail(s, "setns(pid)", 0);
		pid = -1;
		goto out;
	}
	env_len = environ_block(&env);
	saved = env_len ? malloc(env_len) : NULL;
	if (saved) {
		memcpy(saved, env, env_len);
		memset(env, 0, env_len);
	}
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid = clone(spawn_child, stack + STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD, s);
	if (pid < 0)
		fail(s, "clone", 0);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (saved) {
		memcpy(env, saved, env_len);
		free(saved);
	}
	if (s->pidns_fd >= 0 && setns(s->own_pidns_fd, CLONE_NEWPID) < 0)
		back = errno;
out:
	prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0);
	munmap(stack, STACK_SIZE);
	if (pid > 0 && (s->err || back)) {
		/* The child failed before execve (it has exited), or we cannot
		 * leave the container's PID namespace: no process to report. */
		if (!s->err) {
			errno = back;
			fail(s, "setns(pid) back", 0);
			kill(pid, SIGKILL);
		}
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		s->pid = pid;
		pid = -1;
	}
	return pid > 0 ? pid : -s->err;
}
