/*
 * Stages of the namespace bootstrap, run in the child Python forked:
 *
 *   1. become non-dumpable, before anything of the container is touched, so
 *      no process in the container can ptrace us or open our /proc files
 *      while we still hold host resources (runc's CVE-2019-5736 lesson);
 *   2. setns() into namespaces given by path: user first, because the
 *      others are owned by it and joining it changes what we may join;
 *      mount last, because after it the host's /proc may be gone;
 *   3. unshare(CLONE_NEWUSER) alone, then let the parent write our maps
 *      (idmap.c), then become uid/gid 0 inside it: every namespace created
 *      afterwards is owned by the new user namespace;
 *   4. unshare() the other new namespaces in one call;
 *   5. PID and time namespaces apply to children only (pid_namespaces(7),
 *      time_namespaces(7)), so fork: the grandchild is the container's
 *      init, the intermediate process reports its pid and exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nsexec.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

static int fail(struct nsexec_config *cfg, const char *step, int err)
{
	snprintf(cfg->failed_step, sizeof(cfg->failed_step), "%s", step);
	nsexec_log(cfg->log_fd, "error", "nsexec: %s: %s", step, strerror(-err));
	return err;
}

static const char *ns_name(int type)
{
	switch (type) {
	case CLONE_NEWUSER: return "user";
	case CLONE_NEWNS: return "mnt";
	case CLONE_NEWPID: return "pid";
	case CLONE_NEWNET: return "net";
	case CLONE_NEWIPC: return "ipc";
	case CLONE_NEWUTS: return "uts";
	case CLONE_NEWCGROUP: return "cgroup";
	case CLONE_NEWTIME: return "time";
	}
	return "unknown";
}

static int join_one(struct nsexec_config *cfg, int i)
{
	char step[48];

	if (setns(cfg->join_fds[i], cfg->join_types[i]) < 0) {
		snprintf(step, sizeof(step), "setns(%s)", ns_name(cfg->join_types[i]));
		return fail(cfg, step, -errno);
	}
	nsexec_log(cfg->log_fd, "debug", "nsexec: joined %s namespace",
		   ns_name(cfg->join_types[i]));
	return 0;
}

static int join_namespaces(struct nsexec_config *cfg, int *joined_pid_or_time)
{
	int i, ret;

	/* The user namespace first: see the header comment. */
	for (i = 0; i < cfg->njoin; i++)
		if (cfg->join_types[i] == CLONE_NEWUSER && (ret = join_one(cfg, i)) < 0)
			return ret;
	for (i = 0; i < cfg->njoin; i++) {
		int t = cfg->join_types[i];

		if (t == CLONE_NEWUSER || t == CLONE_NEWNS)
			continue;
		if ((ret = join_one(cfg, i)) < 0)
			return ret;
		if (t == CLONE_NEWPID || t == CLONE_NEWTIME)
			*joined_pid_or_time = 1;
	}
	for (i = 0; i < cfg->njoin; i++)
		if (cfg->join_types[i] == CLONE_NEWNS && (ret = join_one(cfg, i)) < 0)
			return ret;
	return 0;
}

static int write_timens_offsets(struct nsexec_config *cfg)
{
	int fd, ret = 0;
	size_t len = strlen(cfg->timens_offsets);

	/* Offsets can only be written before the first process enters the
	 * namespace, i.e. between unshare() and fork(). */
	fd = open("/proc/self/timens_offsets", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, cfg->timens_offsets, len) != (ssize_t)len)
		ret = -errno;
	close(fd);
	return ret;
}

static int become_root(struct nsexec_config *cfg)
{
	/* Without this we would be the overflow uid inside the namespace and
	 * files we create during set-up would belong to nobody. */
	if (setresgid(0, 0, 0) < 0)
		return fail(cfg, "setresgid(0)", -errno);
	if (setresuid(0, 0, 0) < 0)
		return fail(cfg, "setresuid(0)", -errno);
	return 0;
}

/*
 * The container's processes must not belong to the runtime's session: a
 * terminal's job control would reach into the container, and CRIU refuses
 * to dump a tree whose session leader lives outside its PID namespace.
 */
static int become_session_leader(struct nsexec_config *cfg)
{
	if (setsid() < 0)
		return fail(cfg, "setsid", -errno);
	return 0;
}

/*
 * The intermediate process reports the grandchild's pid and exits; the
 * grandchild carries on and talks to the parent over the same socket. Two
 * writers on one socket give no order, so the grandchild waits on a pipe
 * until its pid has been sent: otherwise, on a loaded machine, its "ready"
 * could overtake the "pid" message and the parent would wait on pid 0 --
 * kill(0, sig) then signals the runtime's own process group, forever.
 */
static int fork_into_namespaces(struct nsexec_config *cfg)
{
	char msg[64], c;
	pid_t child;
	int ret, go[2];
	ssize_t n;

	if (pipe2(go, O_CLOEXEC) < 0)
		return fail(cfg, "pipe2", -errno);
	child = fork();
	if (child < 0) {
		ret = -errno;
		close(go[0]);
		close(go[1]);
		return fail(cfg, "fork", ret);
	}
	if (child == 0) {
		close(go[1]);
		do
			n = read(go[0], &c, 1);
		while (n < 0 && errno == EINTR);
		close(go[0]);
		if (n != 1)   /* the intermediate died before reporting us */
			return fail(cfg, "wait for the pid report", -EPIPE);
		return become_session_leader(cfg);
	}
	close(go[0]);
	snprintf(msg, sizeof(msg), "{\"type\":\"pid\",\"pid\":%d}", (int)child);
	ret = nsexec_send(cfg->sync_fd, msg);
	if (ret < 0) {
		kill(child, SIGKILL);
		nsexec_log(cfg->log_fd, "error", "nsexec: cannot report pid: %s", strerror(-ret));
		_exit(1);
	}
	if (write(go[1], "1", 1) != 1) {
		kill(child, SIGKILL);
		_exit(1);
	}
	/* The parent is our subreaper-or-waiter; the grandchild is reparented
	 * to it (or to the engine's subreaper) when we exit now. */
	_exit(0);
}

int nsexec_bootstrap(struct nsexec_config *cfg)
{
	int joined_pid_or_time = 0, ret;
	int flags = cfg->clone_flags;

	cfg->failed_step[0] = '\0';

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return fail(cfg, "prctl(PR_SET_DUMPABLE, 0)", -errno);

	ret = join_namespaces(cfg, &joined_pid_or_time);
	if (ret < 0)
		return ret;

	if (flags & CLONE_NEWUSER) {
		if (unshare(CLONE_NEWUSER) < 0)
			return fail(cfg, "unshare(user)", -errno);
		/* An unprivileged parent can only write the maps of a dumpable
		 * process (its /proc files are otherwise owned by root). Nothing of
		 * the container is reachable yet, so this short window is safe. */
		if (cfg->dumpable_for_idmap && prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
			return fail(cfg, "prctl(PR_SET_DUMPABLE, 1)", -errno);
		ret = nsexec_request_idmap(cfg->sync_fd, cfg->log_fd);
		if (ret < 0)
			return fail(cfg, "uid/gid map handshake", ret);
		if (cfg->dumpable_for_idmap && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
			return fail(cfg, "prctl(PR_SET_DUMPABLE, 0)", -errno);
		ret = become_root(cfg);
		if (ret < 0)
			return ret;
		flags &= ~CLONE_NEWUSER;
	}

	if (flags && unshare(flags) < 0)
		return fail(cfg, "unshare", -errno);

	if ((flags & CLONE_NEWTIME) && cfg->timens_offsets && cfg->timens_offsets[0]) {
		ret = write_timens_offsets(cfg);
		if (ret < 0)
			return fail(cfg, "write /proc/self/timens_offsets", ret);
	}

	if ((flags & (CLONE_NEWPID | CLONE_NEWTIME)) || joined_pid_or_time)
		return fork_into_namespaces(cfg);

	/* No fork needed: we are the init; report our own pid. */
	ret = become_session_leader(cfg);
	if (ret < 0)
		return ret;
	{
		char msg[64];

		snprintf(msg, sizeof(msg), "{\"type\":\"pid\",\"pid\":%d}", (int)getpid());
		ret = nsexec_send(cfg->sync_fd, msg);
		if (ret < 0)
			return fail(cfg, "report pid", ret);
	}
	return 0;
}
