/*
 * Wrappers for calls the Python standard library lacks. Each returns 0 (or
 * a non-negative result) or -errno; the Python side turns -errno into an
 * OSError that names the call and path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/keyctl.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "nsexec.h"

#define RET(expr) return (expr) < 0 ? -errno : 0

int sys_mount(const char *source, const char *target, const char *fstype,
	      unsigned long flags, const char *data)
{
	RET(mount(source, target, fstype, flags, data));
}

int sys_umount2(const char *target, int flags)
{
	RET(umount2(target, flags));
}

int sys_pivot_root(const char *new_root, const char *put_old)
{
	RET(syscall(SYS_pivot_root, new_root, put_old));
}

int sys_setns(int fd, int nstype)
{
	RET(setns(fd, nstype));
}

int sys_unshare(int flags)
{
	RET(unshare(flags));
}

int sys_sethostname(const char *name)
{
	RET(sethostname(name, strlen(name)));
}

int sys_setdomainname(const char *name)
{
	RET(setdomainname(name, strlen(name)));
}

int sys_prctl(int option, unsigned long arg2, unsigned long arg3,
	      unsigned long arg4, unsigned long arg5)
{
	int r = prctl(option, arg2, arg3, arg4, arg5);

	return r < 0 ? -errno : r;
}

int sys_capget_bounding(int cap)
{
	return sys_prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
}

int sys_capset(unsigned int eff_lo, unsigned int eff_hi, unsigned int prm_lo,
	       unsigned int prm_hi, unsigned int inh_lo, unsigned int inh_hi)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2] = {
		{ eff_lo, prm_lo, inh_lo },
		{ eff_hi, prm_hi, inh_hi },
	};

	RET(syscall(SYS_capset, &hdr, data));
}

int sys_capget(unsigned int out[6])
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];

	if (syscall(SYS_capget, &hdr, data) < 0)
		return -errno;
	out[0] = data[0].effective;   out[1] = data[1].effective;
	out[2] = data[0].permitted;   out[3] = data[1].permitted;
	out[4] = data[0].inheritable; out[5] = data[1].inheritable;
	return 0;
}

int sys_keyctl_join_session(const char *name)
{
	long r = syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name, 0, 0, 0);

	return r < 0 ? -errno : (int)r;
}

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

int sys_open_tree(int dfd, const char *path, unsigned int flags)
{
	long r = syscall(SYS_open_tree, dfd, path, flags);

	return r < 0 ? -errno : (int)r;
}

int sys_move_mount(int from_dfd, const char *from_path, int to_dfd,
		   const char *to_path, unsigned int flags)
{
	RET(syscall(SYS_move_mount, from_dfd, from_path, to_dfd, to_path, flags));
}

int sys_mount_setattr(int dfd, const char *path, unsigned int flags,
		      unsigned long long attr_set, unsigned long long attr_clr,
		      unsigned long long propagation, int userns_fd)
{
	struct {
		unsigned long long attr_set, attr_clr, propagation, userns_fd;
	} attr = { attr_set, attr_clr, propagation, (unsigned long long)userns_fd };

	RET(syscall(SYS_mount_setattr, dfd, path, flags, &attr, sizeof(attr)));
}

int sys_close_range_cloexec(unsigned int first)
{
	/* CLOSE_RANGE_CLOEXEC (Linux 5.11): mark, don't close, so fds the
	 * init still needs until execve stay usable. */
	RET(syscall(SYS_close_range, first, ~0U, 4));
}

int sys_personality(unsigned long persona)
{
	int r = personality(persona);

	return r < 0 ? -errno : r;
}

#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif

/*
 * A read-only overlayfs of `lowerdirs` ("a:b", no upper layer) made with
 * the new mount API and never attached anywhere: returns an O_PATH fd of
 * `name` in it. The mount lives as long as that fd (and whatever runs from
 * it); it has no path, so nobody can remount it read-write, and an overlay
 * without an upper layer cannot be written at all (EROFS). That is where
 * the runtime's interpreter runs from while it joins a container (see
 * runtime/exe_guard.py; runc 1.2 does the same for its own binary).
 */
int sys_ro_overlay_open(const char *lowerdirs, const char *name)
{
	long fsfd, mfd;
	int fd, err;

	fsfd = syscall(SYS_fsopen, "overlay", 1 /* FSOPEN_CLOEXEC */);
	if (fsfd < 0)
		return -errno;
	if (syscall(SYS_fsconfig, fsfd, 1 /* FSCONFIG_SET_STRING */, "lowerdir", lowerdirs, 0) < 0 ||
	    syscall(SYS_fsconfig, fsfd, 6 /* FSCONFIG_CMD_CREATE */, NULL, NULL, 0) < 0) {
		err = -errno;
		close(fsfd);
		return err;
	}
	/* MOUNT_ATTR_RDONLY | NOSUID | NODEV */
	mfd = syscall(SYS_fsmount, fsfd, 1 /* FSMOUNT_CLOEXEC */, 0x1 | 0x2 | 0x4);
	err = -errno;
	close(fsfd);
	if (mfd < 0)
		return err;
	fd = openat(mfd, name, O_PATH | O_CLOEXEC | O_NOFOLLOW);
	err = -errno;
	close(mfd);
	return fd < 0 ? err : fd;
}

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif

/*
 * Put the caller (and every descendant) into a new Landlock domain that
 * handles no file system or network access, only the IPC `scoped` bits
 * (LANDLOCK_SCOPE_*, ABI 6, Linux 6.12). What matters is a side effect of
 * any domain: its processes may not ptrace, nor open /proc/PID/mem or
 * /proc/PID/exe of, a process outside it (Documentation/userspace-api/
 * landlock.rst, "Ptrace restrictions") -- even with CAP_SYS_PTRACE. Needs
 * CAP_SYS_ADMIN or no_new_privs. 0 or -errno (-E2BIG/-EINVAL: too old).
 */
int sys_landlock_scope(unsigned long long scoped)
{
	struct {
		unsigned long long handled_access_fs, handled_access_net, scoped;
	} attr = { 0, 0, scoped };
	long fd = syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
	int err = 0;

	if (fd < 0)
		return -errno;
	if (syscall(SYS_landlock_restrict_self, fd, 0) < 0)
		err = -errno;
	close(fd);
	return err;
}
