"""cffi build script: compiled at install time (API mode), so run time only
imports the generated ``_nsexec`` extension."""

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["nsexec.c", "idmap.c", "log.c", "syscalls.c", "seccomp.c", "spawn.c"]

ffibuilder = FFI()
ffibuilder.cdef(
    """
    #define NSEXEC_MAX_JOIN 8
    struct nsexec_config {
        int sync_fd;
        int log_fd;
        int clone_flags;
        int join_fds[8];
        int join_types[8];
        int njoin;
        int dumpable_for_idmap;
        const char *timens_offsets;
        char failed_step[64];
    };
    int nsexec_bootstrap(struct nsexec_config *cfg);

    struct nsexec_spawn {
        int pidns_fd;
        int own_pidns_fd;
        int join_fds[8];
        int join_types[8];
        int njoin;
        int cgroup_fds[16];
        int ncgroups;
        int oom_score_adj_set;
        int oom_score_adj;
        int rlimit_res[16];
        unsigned long long rlimit_cur[16];
        unsigned long long rlimit_max[16];
        int nrlimits;
        const char *cwd;
        const char **argv;
        char **envp;
        int nenv;
        int need_home;
        const char *path_var;
        unsigned int uid;
        unsigned int gid;
        const unsigned int *groups;
        int ngroups;
        int set_groups;
        int has_caps;
        int last_cap;
        unsigned long long bounding, effective, permitted, inheritable, ambient;
        int no_new_privs;
        int umask;
        void *seccomp;
        int keep_fds;
        char home[4104];
        char path[4096];
        char failed_step[64];
        int err;
        int index;
        int pid;
    };
    int nsexec_spawn(struct nsexec_spawn *s);

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

    #define SECCOMP_MAX_ARGS 6
    struct seccomp_arg {
        unsigned int index;
        unsigned long long value;
        unsigned long long value_two;
        int op;
    };
    struct seccomp_rule {
        const char *name;
        int action;
        int ret;
        int nargs;
        struct seccomp_arg args[6];
    };
    struct seccomp_profile {
        int default_action;
        int default_ret;
        unsigned int flags;
        int enosys_stub;
        const char **arches;
        int narches;
        struct seccomp_rule *rules;
        int nrules;
        int failed;
        int skipped;
        int stub_len;
    };
    int seccomp_filter_build(struct seccomp_profile *p, void **filter);
    int seccomp_filter_load(void *filter);
    void seccomp_filter_release(void *filter);
    struct sock_filter { unsigned short code; unsigned char jt; unsigned char jf; unsigned int k; };
    int seccomp_filter_dump(void *filter, struct sock_filter *out, int max);
    """
)
ffibuilder.set_source(
    "migrate.runtime.nsexec._nsexec",
    '#include <linux/filter.h>\n#include "nsexec.h"',
    sources=[os.path.relpath(os.path.join(HERE, s)) for s in SOURCES],
    include_dirs=[HERE],
    libraries=["seccomp"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
