/*
 * linux.seccomp: build a libseccomp filter from the flat profile that
 * migrate/runtime/seccomp.py planned, and load it.
 *
 * Two calls, not one, so a profile libseccomp refuses fails while the init
 * can still report to the parent (before "ready"), and loading, which must
 * come as late as possible, is a single syscall (see runtime/process.py for
 * where each init loads it). Names, actions and operators were checked in
 * Python; here only libseccomp's own answers can fail.
 */
#include <errno.h>
#include <seccomp.h>
#include <stddef.h>
#include <stdint.h>

#include "nsexec.h"

/* SCMP_ACT_ERRNO/TRACE without a return value: EPERM, as runc. */
#define DEFAULT_RET EPERM

static uint32_t to_action(int action, int ret)
{
	switch (action) {
	case SECCOMP_ACTION_KILL_THREAD:
		return SCMP_ACT_KILL_THREAD;
	case SECCOMP_ACTION_KILL_PROCESS:
		return SCMP_ACT_KILL_PROCESS;
	case SECCOMP_ACTION_TRAP:
		return SCMP_ACT_TRAP;
	case SECCOMP_ACTION_ERRNO:
		return SCMP_ACT_ERRNO(ret < 0 ? DEFAULT_RET : ret);
	case SECCOMP_ACTION_TRACE:
		return SCMP_ACT_TRACE(ret < 0 ? DEFAULT_RET : ret);
	case SECCOMP_ACTION_ALLOW:
		return SCMP_ACT_ALLOW;
	case SECCOMP_ACTION_LOG:
		return SCMP_ACT_LOG;
	}
	/* Not reached: Python only passes the values above. */
	return SCMP_ACT_KILL_PROCESS;
}

static int set_flags(scmp_filter_ctx ctx, unsigned int flags)
{
	int ret;

	/*
	 * libseccomp sets no_new_privs itself on load unless told not to. The
	 * spec's process.noNewPrivileges decides that, not the profile: runc
	 * turns this off too, and loads while it still has CAP_SYS_ADMIN when
	 * noNewPrivileges is false.
	 */
	ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	/* Errors as the kernel gave them, not libseccomp's -ECANCELED. */
	if (!ret)
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_API_SYSRAWRC, 1);
	if (!ret && (flags & SECCOMP_PROFILE_TSYNC))
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (!ret && (flags & SECCOMP_PROFILE_LOG))
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_LOG, 1);
	if (!ret && (flags & SECCOMP_PROFILE_SPEC_ALLOW))
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_SSB, 1);
	return ret;
}

static int add_rule(scmp_filter_ctx ctx, const struct seccomp_rule *r, int *skipped)
{
	struct scmp_arg_cmp cmp[SECCOMP_MAX_ARGS];
	int nr, i;

	/* A name this libseccomp or arch does not know: skipped, as runc does. */
	nr = seccomp_syscall_resolve_name(r->name);
	if (nr == __NR_SCMP_ERROR) {
		(*skipped)++;
		return 0;
	}
	if (r->nargs < 0 || r->nargs > SECCOMP_MAX_ARGS)
		return -EINVAL;
	for (i = 0; i < r->nargs; i++) {
		cmp[i].arg = r->args[i].index;
		cmp[i].op = (enum scmp_compare)r->args[i].op;
		cmp[i].datum_a = r->args[i].value;
		cmp[i].datum_b = r->args[i].value_two;
	}
	return seccomp_rule_add_array(ctx, to_action(r->action, r->ret), nr,
				      (unsigned int)r->nargs, cmp);
}

int seccomp_filter_build(struct seccomp_profile *p, void **filter)
{
	scmp_filter_ctx ctx;
	int i, ret;

	*filter = NULL;
	p->failed = -1;
	p->skipped = 0;
	ctx = seccomp_init(to_action(p->default_action, p->default_ret));
	if (!ctx)
		return -ENOMEM;
	ret = set_flags(ctx, p->flags);
	if (ret)
		goto fail;
	for (i = 0; i < p->narches; i++) {
		uint32_t arch = seccomp_arch_resolve_name(p->arches[i]);

		if (!arch) {
			p->failed = i;
			ret = -EINVAL;
			goto fail;
		}
		/* The native arch is already in a new filter: -EEXIST is fine. */
		ret = seccomp_arch_add(ctx, arch);
		if (ret && ret != -EEXIST) {
			p->failed = i;
			goto fail;
		}
	}
	for (i = 0; i < p->nrules; i++) {
		ret = add_rule(ctx, &p->rules[i], &p->skipped);
		if (ret) {
			p->failed = p->narches + i;
			goto fail;
		}
	}
	*filter = ctx;
	return 0;
fail:
	seccomp_release(ctx);
	return ret < 0 ? ret : -EINVAL;
}

int seccomp_filter_load(void *filter)
{
	int ret = seccomp_load((scmp_filter_ctx)filter);

	seccomp_release((scmp_filter_ctx)filter);
	return ret;
}

void seccomp_filter_release(void *filter)
{
	if (filter)
		seccomp_release((scmp_filter_ctx)filter);
}
