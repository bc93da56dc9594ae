/*
 * migrate's namespace bootstrap: the only C in the runtime.
 *
 * Python forks the process that becomes the container (or joins one, for
 * exec) and calls nsexec_bootstrap() in that child. Everything here returns
 * 0 or -errno and never prints: log lines go to the parent over log_fd as
 * JSON, protocol messages over sync_fd (a SOCK_SEQPACKET socket).
 */
#ifndef MIGRATE_NSEXEC_H
#define MIGRATE_NSEXEC_H

#include <sys/types.h>

#define NSEXEC_MAX_JOIN 8

struct nsexec_config {
	int sync_fd;                 /* SOCK_SEQPACKET to the parent */
	int log_fd;                  /* -1: no logging */
	int clone_flags;             /* CLONE_NEW* namespaces to create */
	int join_fds[NSEXEC_MAX_JOIN];   /* open namespace fds to setns() into */
	int join_types[NSEXEC_MAX_JOIN]; /* their CLONE_NEW* type */
	int njoin;
	int dumpable_for_idmap;      /* unprivileged parent must write our maps */
	const char *timens_offsets;  /* written to /proc/self/timens_offsets, or NULL */
	char failed_step[64];        /* out: which step failed */
};

/*
 * Returns 0 in the process that must continue as the container's init (the
 * grandchild when a PID or time namespace needs a fork), -errno on failure.
 * The intermediate process reports the grandchild's pid and _exit()s here.
 */
int nsexec_bootstrap(struct nsexec_config *cfg);

/*
 * spawn.c: exec's fast path. Everything planned by runtime/spawn.py; the
 * child joins the container and execs without the runtime forking itself.
 */
#define NSEXEC_SPAWN_MAX_CGROUPS 16
#define NSEXEC_SPAWN_MAX_RLIMITS 16

struct nsexec_spawn {
	int pidns_fd;                /* the container's PID namespace, or -1 */
	int own_pidns_fd;            /* ours, to go back to after clone() */
	int join_fds[NSEXEC_MAX_JOIN];   /* the other namespaces, joined by the child */
	int join_types[NSEXEC_MAX_JOIN];
	int njoin;
	int cgroup_fds[NSEXEC_SPAWN_MAX_CGROUPS];  /* cgroup.procs, open for writing */
	int ncgroups;
	int oom_score_adj_set;
	int oom_score_adj;
	int rlimit_res[NSEXEC_SPAWN_MAX_RLIMITS];
	unsigned long long rlimit_cur[NSEXEC_SPAWN_MAX_RLIMITS];
	unsigned long long rlimit_max[NSEXEC_SPAWN_MAX_RLIMITS];
	int nrlimits;
	const char *cwd;
	const char **argv;
	char **envp;                 /* nenv entries, then room for HOME, then NULL */
	int nenv;
	int need_home;               /* HOME from the container's /etc/passwd */
	const char *path_var;        /* the process's PATH, or NULL: the default */
	unsigned int uid;
	unsigned int gid;
	const unsigned int *groups;
	int ngroups;
	int set_groups;              /* 0: the user namespace denies setgroups */
	int has_caps;                /* 0: the process has no capabilities object */
	int last_cap;
	unsigned long long bounding, effective, permitted, inheritable, ambient;
	int no_new_privs;
	int umask;                   /* -1: leave it */
	void *seccomp;               /* seccomp_filter_build's, no listener; or NULL */
	int keep_fds;                /* fds 0 .. keep_fds-1 survive execve */
	/* out, written by the child on failure */
	char home[4096 + 8];
	char path[4096];             /* the executable found */
	char failed_step[64];
	int err;
	int index;
	int pid;                     /* the child that failed, reaped (for messages) */
};

/* The new process's pid (in our PID namespace), or -errno with failed_step set. */
int nsexec_spawn(struct nsexec_spawn *s);

/* log.c */
void nsexec_log(int fd, const char *level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* idmap.c: the child's half of the uid/gid map handshake */
int nsexec_request_idmap(int sync_fd, int log_fd);

/* sync messages: small JSON objects, one per packet */
int nsexec_send(int sync_fd, const char *msg);
int nsexec_expect(int sync_fd, const char *type);

/* syscalls.c: thin wrappers without glibc counterparts; 0 or -errno */
int sys_mount(const char *source, const char *target, const char *fstype,
	      unsigned long flags, const char *data);
int sys_umount2(const char *target, int flags);
int sys_pivot_root(const char *new_root, const char *put_old);
int sys_setns(int fd, int nstype);
int sys_unshare(int flags);
int sys_sethostname(const char *name);
int sys_setdomainname(const char *name);
int sys_prctl(int option, unsigned long arg2, unsigned long arg3,
	      unsigned long arg4, unsigned long arg5);
int sys_capget_bounding(int cap);
int sys_capset(unsigned int eff_lo, unsigned int eff_hi, unsigned int prm_lo,
	       unsigned int prm_hi, unsigned int inh_lo, unsigned int inh_hi);
int sys_capget(unsigned int out[6]);
int sys_keyctl_join_session(const char *name);
int sys_open_tree(int dfd, const char *path, unsigned int flags);
int sys_move_mount(int from_dfd, const char *from_path, int to_dfd,
		   const char *to_path, unsigned int flags);
int sys_mount_setattr(int dfd, const char *path, unsigned int flags,
		      unsigned long long attr_set, unsigned long long attr_clr,
		      unsigned long long propagation, int userns_fd);
int sys_close_range_cloexec(unsigned int first);
int sys_personality(unsigned long persona);
int sys_ro_overlay_open(const char *lowerdirs, const char *name);
int sys_landlock_scope(unsigned long long scoped);

/*
 * seccomp.c: linux.seccomp as a flat profile planned by Python
 * (runtime/seccomp.py, whose enums mirror these values).
 */
#define SECCOMP_MAX_ARGS 6

enum seccomp_action {
	SECCOMP_ACTION_KILL_THREAD = 1,
	SECCOMP_ACTION_KILL_PROCESS = 2,
	SECCOMP_ACTION_TRAP = 3,
	SECCOMP_ACTION_ERRNO = 4,
	SECCOMP_ACTION_TRACE = 5,
	SECCOMP_ACTION_ALLOW = 6,
	SECCOMP_ACTION_LOG = 7,
	SECCOMP_ACTION_NOTIFY = 8,
};

struct seccomp_arg {
	unsigned int index;
	unsigned long long value;
	unsigned long long value_two;
	int op;                      /* libseccomp's enum scmp_compare */
};

struct seccomp_rule {
	const char *name;            /* syscall name; unknown here: skipped */
	int action;                  /* enum seccomp_action */
	int ret;                     /* errno for ERRNO/TRACE, -1: EPERM */
	int nargs;
	struct seccomp_arg args[SECCOMP_MAX_ARGS];
};

struct seccomp_profile {
	int default_action;
	int default_ret;
	unsigned int flags;          /* SECCOMP_FILTER_FLAG_* for seccomp(2) */
	int enosys_stub;             /* answer ENOSYS above the highest syscall named */
	const char **arches;         /* libseccomp names: "x86_64", "x86", ... */
	int narches;
	struct seccomp_rule *rules;
	int nrules;
	int failed;                  /* out: index (arches, then rules) that failed */
	int skipped;                 /* out: rules whose syscall is unknown here */
	int stub_len;                /* out: instructions of the ENOSYS stub */
};

/* Build the program into *filter (opaque: the BPF and its load flags); 0 or -errno. */
int seccomp_filter_build(struct seccomp_profile *p, void **filter);
/* Load and release it: the listener fd (NEW_LISTENER), else 0, or -errno. */
int seccomp_filter_load(void *filter);
/* Load without releasing (a vfork child must not free the runtime's memory). */
int seccomp_filter_install(void *filter);
void seccomp_filter_release(void *filter);
struct sock_filter;
int seccomp_filter_dump(void *filter, struct sock_filter *out, int max);

#endif
