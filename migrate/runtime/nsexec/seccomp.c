/*
 * linux.seccomp: build a filter from the flat profile that
 * migrate/runtime/seccomp.py planned, and load it.
 *
 * Two calls, not one, so a profile libseccomp refuses fails while the init
 * can still report to the parent (before "ready"), and loading, which must
 * come as late as possible, is a single syscall (see runtime/process.py for
 * where each init loads it). Names, actions and operators were checked in
 * Python; here only libseccomp's own answers can fail.
 *
 * libseccomp only compiles the rules: the program is exported as classic
 * BPF and loaded with seccomp(2) by us, because
 *   - a profile's default action (say EPERM) would otherwise also answer
 *     syscalls newer than the profile, and programs (glibc's fallbacks
 *     first) take EPERM as "forbidden" where ENOSYS means "try the old
 *     way": a short stub in front of the program answers ENOSYS for any
 *     number above the highest one the profile names, per architecture,
 *     as runc does (libcontainer/seccomp/patchbpf);
 *   - SCMP_ACT_NOTIFY needs the listener fd that seccomp(2) returns with
 *     SECCOMP_FILTER_FLAG_NEW_LISTENER, and the profile's other flags
 *     (log, spec_allow, wait_killable_recv) are plain seccomp(2) flags.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "nsexec.h"

/* SCMP_ACT_ERRNO/TRACE without a return value: EPERM, as runc. */
#define DEFAULT_RET EPERM
/* Set in the number of every x32 syscall (arch/x86/include/uapi/asm/unistd.h). */
#define X32_SYSCALL_BIT 0x40000000U
#define MAX_GROUPS 16
#define MAX_STUB 160

/* What seccomp_filter_build hands out and seccomp_filter_load consumes. */
struct prepared_filter {
	struct sock_filter *insns;
	unsigned short len;
	unsigned int flags;          /* SECCOMP_FILTER_FLAG_* */
};

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
	case SECCOMP_ACTION_NOTIFY:
		return SCMP_ACT_NOTIFY;
	}
	/* Not reached: Python only passes the values above. */
	return SCMP_ACT_KILL_PROCESS;
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

/* -- the -ENOSYS stub ------------------------------------------------------ */

/*
 * One group per AUDIT_ARCH_* value the kernel puts in seccomp_data.arch:
 * x86_64 and x32 share AUDIT_ARCH_X86_64 and differ only by
 * X32_SYSCALL_BIT in the number, so that group may carry two limits.
 * libseccomp's arch tokens are the AUDIT_ARCH_* values except x32's.
 */
struct arch_group {
	uint32_t audit;
	long max;                    /* highest number named; -1: none */
	long max_x32;                /* the same for x32 (x86_64 group only) */
};

static long highest_syscall(const struct seccomp_profile *p, uint32_t arch)
{
	long max = -1;
	int i, nr;

	for (i = 0; i < p->nrules; i++) {
		/* Negative: unknown here, or a pseudo number libseccomp uses
		 * for syscalls this arch lacks. */
		nr = seccomp_syscall_resolve_name_arch(arch, p->rules[i].name);
		if (nr >= 0 && nr > max)
			max = nr;
	}
	return max;
}

static int collect_groups(const struct seccomp_profile *p, struct arch_group *g)
{
	int n = 0, i, j;

	for (i = 0; i < p->narches; i++) {
		uint32_t arch = seccomp_arch_resolve_name(p->arches[i]);
		uint32_t audit = arch == SCMP_ARCH_X32 ? SCMP_ARCH_X86_64 : arch;
		long max;

		if (!arch)
			continue;
		/* An arch whose syscalls the profile never names gets no
		 * stub: libseccomp's rules alone decide there (runc too). */
		max = highest_syscall(p, arch);
		if (max < 0)
			continue;
		for (j = 0; j < n && g[j].audit != audit; j++)
			;
		if (j == n) {
			if (n == MAX_GROUPS)
				return -E2BIG;
			g[n].audit = audit;
			g[n].max = g[n].max_x32 = -1;
			n++;
		}
		if (arch == SCMP_ARCH_X32)
			g[j].max_x32 = max;
		else
			g[j].max = max;
	}
	return n;
}

/*
 * A tiny assembler: targets are absolute instruction indexes or one of the
 * labels below, turned into the relative 8-bit offsets classic BPF wants
 * once the layout is known. Every jump goes forward (BPF allows nothing
 * else), and the stub is short enough for 8-bit offsets.
 */
enum { T_NEXT = -1, T_ENOSYS = -2, T_FILTER = -3, T_SECTION = -100 };

struct stub {
	struct sock_filter ins[MAX_STUB];
	int jt[MAX_STUB], jf[MAX_STUB];
	int n;
};

static int emit(struct stub *s, uint16_t code, uint32_t k, int jt, int jf)
{
	if (s->n == MAX_STUB)
		return -E2BIG;
	s->ins[s->n] = (struct sock_filter)BPF_STMT(code, k);
	s->jt[s->n] = jt;
	s->jf[s->n] = jf;
	s->n++;
	return 0;
}

#define LD_NR   (BPF_LD | BPF_W | BPF_ABS), offsetof(struct seccomp_data, nr)
#define LD_ARCH (BPF_LD | BPF_W | BPF_ABS), offsetof(struct seccomp_data, arch)
#define JEQ (BPF_JMP | BPF_JEQ | BPF_K)
#define JGT (BPF_JMP | BPF_JGT | BPF_K)
#define JSET (BPF_JMP | BPF_JSET | BPF_K)
#define JA (BPF_JMP | BPF_JA)

/* The checks of one group, entered with any value in the accumulator. */
static int emit_section(struct stub *s, const struct arch_group *g)
{
	int ret = emit(s, LD_NR, T_NEXT, T_NEXT);

	if (!ret && g->audit == AUDIT_ARCH_X86_64) {
		if (g->max >= 0 && g->max_x32 >= 0) {
			/* x32 numbers to the second limit, the rest to the first. */
			ret = emit(s, JSET, X32_SYSCALL_BIT, s->n + 2, T_NEXT);
			if (!ret)
				ret = emit(s, JGT, (uint32_t)g->max, T_ENOSYS, T_FILTER);
			if (!ret)
				ret = emit(s, JGT, (uint32_t)g->max_x32, T_ENOSYS, T_FILTER);
			return ret;
		}
		/* Only one of the two ABIs is in the profile: the other's
		 * calls are left to the filter (its bad-arch action). */
		if (g->max >= 0)
			ret = emit(s, JSET, X32_SYSCALL_BIT, T_FILTER, T_NEXT);
		else
			ret = emit(s, JSET, X32_SYSCALL_BIT, T_NEXT, T_FILTER);
	}
	if (!ret)
		ret = emit(s, JGT, (uint32_t)(g->max >= 0 ? g->max : g->max_x32),
			   T_ENOSYS, T_FILTER);
	return ret;
}

static int resolve(struct stub *s, const int *section, int enosys, int filter)
{
	int i;

	for (i = 0; i < s->n; i++) {
		int t[2] = { s->jt[i], s->jf[i] }, k;

		for (k = 0; k < 2; k++) {
			if (t[k] == T_NEXT)
				t[k] = i + 1;
			else if (t[k] == T_ENOSYS)
				t[k] = enosys;
			else if (t[k] == T_FILTER)
				t[k] = filter;
			else if (t[k] <= T_SECTION)
				t[k] = section[T_SECTION - t[k]];
			t[k] -= i + 1;
			if (t[k] < 0 || t[k] > 255)
				return -E2BIG;
		}
		if (s->ins[i].code == JA)
			s->ins[i].k = (uint32_t)t[0];
		else if (BPF_CLASS(s->ins[i].code) == BPF_JMP) {
			s->ins[i].jt = (uint8_t)t[0];
			s->ins[i].jf = (uint8_t)t[1];
		}
	}
	return 0;
}

/*
 * Layout (all jumps forward):
 *     ld arch; jeq A1 -> section 1; ...; ja filter
 *     section i: ld nr; [x32 split]; jgt max -> enosys, else -> filter
 *     enosys: ret ERRNO(ENOSYS)
 *     filter: libseccomp's program, which loads what it needs itself
 */
static int build_stub(const struct seccomp_profile *p, struct stub *s)
{
	struct arch_group g[MAX_GROUPS];
	int section[MAX_GROUPS];
	int n, i, ret;

	s->n = 0;
	n = collect_groups(p, g);
	if (n <= 0)
		return n;
	ret = emit(s, LD_ARCH, T_NEXT, T_NEXT);
	for (i = 0; !ret && i < n; i++)
		ret = emit(s, JEQ, g[i].audit, T_SECTION - i, T_NEXT);
	if (!ret)
		ret = emit(s, JA, 0, T_FILTER, T_FILTER);
	for (i = 0; !ret && i < n; i++) {
		section[i] = s->n;
		ret = emit_section(s, &g[i]);
	}
	if (!ret)
		ret = emit(s, BPF_RET | BPF_K, SCMP_ACT_ERRNO(ENOSYS), T_NEXT, T_NEXT);
	if (ret)
		return ret;
	return resolve(s, section, s->n - 1, s->n);
}

/* -- building and loading -------------------------------------------------- */

/* libseccomp's program, read back from a memfd (2.5 exports to an fd only). */
static int export_program(scmp_filter_ctx ctx, struct sock_filter **out, size_t *count)
{
	int fd, ret = 0;
	off_t size;
	char *buf = NULL;

	fd = memfd_create("migrate-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = seccomp_export_bpf(ctx, fd);
	if (ret)
		goto out;
	size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % sizeof(struct sock_filter)) {
		ret = size < 0 ? -errno : -EINVAL;
		goto out;
	}
	buf = malloc((size_t)size);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	if (pread(fd, buf, (size_t)size, 0) != size) {
		ret = -EIO;
		free(buf);
		goto out;
	}
	*out = (struct sock_filter *)buf;
	*count = (size_t)size / sizeof(struct sock_filter);
out:
	close(fd);
	return ret;
}

static int compile(struct seccomp_profile *p, scmp_filter_ctx ctx)
{
	int i, ret;

	/* Errors as the kernel gave them, not libseccomp's -ECANCELED. */
	ret = seccomp_attr_set(ctx, SCMP_FLTATR_API_SYSRAWRC, 1);
	if (ret)
		return ret;
	for (i = 0; i < p->narches; i++) {
		uint32_t arch = seccomp_arch_resolve_name(p->arches[i]);

		if (!arch) {
			p->failed = i;
			return -EINVAL;
		}
		/* The native arch is already in a new filter: -EEXIST is fine. */
		ret = seccomp_arch_add(ctx, arch);
		if (ret && ret != -EEXIST) {
			p->failed = i;
			return ret;
		}
	}
	for (i = 0; i < p->nrules; i++) {
		ret = add_rule(ctx, &p->rules[i], &p->skipped);
		if (ret) {
			p->failed = p->narches + i;
			return ret;
		}
	}
	return 0;
}

int seccomp_filter_build(struct seccomp_profile *p, void **filter)
{
	struct prepared_filter *f = NULL;
	struct sock_filter *prog = NULL;
	struct stub *stub = NULL;
	scmp_filter_ctx ctx;
	size_t count = 0;
	int ret;

	*filter = NULL;
	p->failed = -1;
	p->skipped = 0;
	p->stub_len = 0;
	ctx = seccomp_init(to_action(p->default_action, p->default_ret));
	if (!ctx)
		return -ENOMEM;
	ret = compile(p, ctx);
	if (!ret)
		ret = export_program(ctx, &prog, &count);
	seccomp_release(ctx);
	if (ret)
		return ret < 0 ? ret : -EINVAL;
	stub = calloc(1, sizeof(*stub));
	f = calloc(1, sizeof(*f));
	if (!stub || !f) {
		ret = -ENOMEM;
		goto fail;
	}
	if (p->enosys_stub) {
		ret = build_stub(p, stub);
		if (ret < 0)
			goto fail;
	}
	if (count + (size_t)stub->n > BPF_MAXINSNS) {
		ret = -E2BIG;
		goto fail;
	}
	f->insns = malloc((count + (size_t)stub->n) * sizeof(struct sock_filter));
	if (!f->insns) {
		ret = -ENOMEM;
		goto fail;
	}
	memcpy(f->insns, stub->ins, (size_t)stub->n * sizeof(struct sock_filter));
	memcpy(f->insns + stub->n, prog, count * sizeof(struct sock_filter));
	f->len = (unsigned short)(count + (size_t)stub->n);
	f->flags = p->flags;
	p->stub_len = stub->n;
	free(stub);
	free(prog);
	*filter = f;
	return 0;
fail:
	free(stub);
	free(prog);
	free(f);
	return ret;
}

/*
 * Returns the listener fd (SECCOMP_FILTER_FLAG_NEW_LISTENER), else 0, or
 * -errno. Without no_new_privs this needs CAP_SYS_ADMIN (seccomp(2)).
 */
int seccomp_filter_install(void *filter)
{
	struct prepared_filter *f = filter;
	struct sock_fprog prog = { .len = f->len, .filter = f->insns };
	long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, f->flags, &prog);

	return r < 0 ? -errno : (int)r;
}

int seccomp_filter_load(void *filter)
{
	int r = seccomp_filter_install(filter);

	seccomp_filter_release(filter);
	return r;
}

void seccomp_filter_release(void *filter)
{
	struct prepared_filter *f = filter;

	if (f) {
		free(f->insns);
		free(f);
	}
}

/* The program as it would be loaded, for tests: copies up to max
 * instructions into out, returns the total count. */
int seccomp_filter_dump(void *filter, struct sock_filter *out, int max)
{
	struct prepared_filter *f = filter;
	int n = f->len < max ? f->len : max;

	if (n > 0)
		memcpy(out, f->insns, (size_t)n * sizeof(struct sock_filter));
	return f->len;
}
