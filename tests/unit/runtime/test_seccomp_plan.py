"""linux.seccomp: the plan (runtime/seccomp.py) and where the inits load it."""

import errno
import json
import os
import pathlib

import pytest

from migrate.errors import KernelError, UsageError
from migrate.oci import Process, User
from migrate.runtime import process as proc
from migrate.runtime.features import runtime_features
from migrate.runtime.seccomp import (ACTIONS, ARCHES, FLAGS, OPERATORS, Action, Flag, Op,
                                     SeccompArg, SeccompPlan, SeccompRule, plan_seccomp)
from migrate.runtime.syscalls import PR
from migrate.testing import FakeSyscalls, Prctl, SeccompLoad, SeccompPrepare

PODMAN_LIKE = pathlib.Path(__file__).parent.parent / "oci" / "data" / "podman-like.json"
HEADER = pathlib.Path(proc.__file__).parent / "nsexec" / "nsexec.h"


def _plan(**raw):
    return plan_seccomp({"defaultAction": "SCMP_ACT_ALLOW", **raw})


# -- the plan ------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, {}, {"architectures": ["SCMP_ARCH_X86_64"]},
                                 {"defaultAction": "", "syscalls": []}])
def test_no_default_action_and_no_syscalls_means_no_filter(raw):
    assert plan_seccomp(raw) is None


def test_one_rule_per_name_with_its_action_and_errno():
    plan = _plan(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X86"],
                 flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                 syscalls=[{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                            "errnoRet": 38},
                           {"names": ["reboot"], "action": "SCMP_ACT_KILL"}])
    assert plan == SeccompPlan(
        default_action=Action.ALLOW, arches=("x86_64", "x86"),
        flags=Flag.LOG | Flag.SPEC_ALLOW,
        rules=(SeccompRule(name="mkdir", action=Action.ERRNO, ret=38),
               SeccompRule(name="mkdirat", action=Action.ERRNO, ret=38),
               SeccompRule(name="reboot", action=Action.KILL_THREAD)))


def test_default_errno_ret_is_kept():
    plan = plan_seccomp({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38})
    assert (plan.default_action, plan.default_ret, plan.rules) == (Action.ERRNO, 38, ())


@pytest.mark.parametrize("default, rule, kept", [
    ({"defaultAction": "SCMP_ACT_ALLOW"}, {"action": "SCMP_ACT_ALLOW"}, False),
    # ERRNO without errnoRet is EPERM (1): the same as an explicit 1
    ({"defaultAction": "SCMP_ACT_ERRNO"}, {"action": "SCMP_ACT_ERRNO", "errnoRet": 1}, False),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38},
     {"action": "SCMP_ACT_ERRNO", "errnoRet": 38}, False),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38},
     {"action": "SCMP_ACT_ERRNO"}, True),
    # the errno of other actions does not count (runc ignores it)
    ({"defaultAction": "SCMP_ACT_LOG"}, {"action": "SCMP_ACT_LOG", "errnoRet": 5}, False),
    ({"defaultAction": "SCMP_ACT_KILL"}, {"action": "SCMP_ACT_KILL_PROCESS"}, True),
])
def test_a_rule_that_repeats_the_default_action_is_dropped(default, rule, kept):
    plan = plan_seccomp({**default, "syscalls": [{"names": ["read"], **rule}]})
    assert bool(plan.rules) is kept


def test_conditions_on_distinct_arguments_make_one_rule():
    plan = _plan(syscalls=[{"names": ["clone"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 0, "value": 0x10000000, "valueTwo": 0x10000000, "op": "SCMP_CMP_MASKED_EQ"},
        {"index": 2, "value": 7, "op": "SCMP_CMP_NE"}]}])
    assert plan.rules == (SeccompRule(name="clone", action=Action.ERRNO, args=(
        SeccompArg(index=0, value=0x10000000, value_two=0x10000000, op=Op.MASKED_EQ),
        SeccompArg(index=2, value=7, op=Op.NE))),)


def test_conditions_on_one_argument_become_one_rule_each():
    # Docker/Podman write personality's allowed values this way (runc's fallback)
    plan = _plan(syscalls=[{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 0, "value": 0, "op": "SCMP_CMP_NE"},
        {"index": 0, "value": 8, "op": "SCMP_CMP_NE"}]}])
    assert [r.args for r in plan.rules] == [(SeccompArg(index=0, value=0, op=Op.NE),),
                                            (SeccompArg(index=0, value=8, op=Op.NE),)]


def test_podman_profile_plans():
    raw = json.loads(PODMAN_LIKE.read_text())["linux"]["seccomp"]
    plan = plan_seccomp(raw)
    assert plan.default_action is ACTIONS[raw["defaultAction"]]
    names = {n for entry in raw["syscalls"] for n in entry["names"]}
    assert {r.name for r in plan.rules} <= names and plan.rules


@pytest.mark.parametrize("raw, where", [
    ({"defaultAction": "SCMP_ACT_FOO"}, "linux.seccomp.defaultAction: unknown action 'SCMP_ACT_FOO'"),
    ({"syscalls": [{"names": ["read"]}]}, "linux.seccomp.defaultAction: is required"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "NOPE"}]},
     "linux.seccomp.syscalls[0].action: unknown action 'NOPE'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]},
     "linux.seccomp.architectures[0]: unknown architecture 'SCMP_ARCH_Z80'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FAST"]},
     "linux.seccomp.flags[0]: unknown flag 'SECCOMP_FILTER_FLAG_FAST'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"],
      "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_LIKE"}]}]},
     "linux.seccomp.syscalls[0].args[0].op: unknown operator 'SCMP_CMP_LIKE'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"],
      "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 9, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].index: must be an integer from 0 to 5"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"],
      "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].value: is required"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill", ""],
      "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names[1]: must be a non-empty string"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1},
     "linux.seccomp.defaultErrnoRet: must be an integer from 0 to 65535"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {"names": ["read"]}},
     "linux.seccomp.syscalls: must be an array"),
])
def test_what_cannot_be_applied_is_an_error_naming_the_json_path(raw, where):
    with pytest.raises(UsageError) as exc:
        plan_seccomp(raw, source="config.json")
    assert str(exc.value) == f"config.json: {where}"


NOTIFY_MKDIR = {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}


def test_notify_rules_ask_for_a_listener_and_keep_the_agent():
    plan = _plan(listenerPath="/run/agent.sock", listenerMetadata="bar",
                 syscalls=[NOTIFY_MKDIR])
    assert plan.rules == (SeccompRule(name="mkdir", action=Action.NOTIFY),)
    assert plan.notifies and plan.flags == Flag.NEW_LISTENER
    assert (plan.listener_path, plan.listener_metadata) == ("/run/agent.sock", "bar")


def test_tsync_with_a_listener_needs_tsync_esrch():
    plan = _plan(listenerPath="/a", flags=["SECCOMP_FILTER_FLAG_TSYNC"],
                 syscalls=[NOTIFY_MKDIR])
    assert plan.flags == Flag.TSYNC | Flag.NEW_LISTENER | Flag.TSYNC_ESRCH


def test_a_listener_path_without_notify_rules_changes_nothing():
    # runc runs this (seccomp-notify.bats "empty listener path")
    plan = _plan(listenerPath="/run/agent.sock")
    assert not plan.notifies and plan.flags == Flag(0)


@pytest.mark.parametrize("raw, where", [
    ({"defaultAction": "SCMP_ACT_NOTIFY"},
     "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be used as default action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [NOTIFY_MKDIR]},
     "linux.seccomp.listenerPath: is not set: SCMP_ACT_NOTIFY needs a seccomp agent"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a",
      "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.syscalls[0].names[1]: SCMP_ACT_NOTIFY cannot be used for the write "
     "syscall"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]},
     "linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs SCMP_ACT_NOTIFY rules"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": 5},
     "linux.seccomp.listenerPath: must be a string"),
], ids=["default", "no-listener", "write", "killable-alone", "not-a-string"])
def test_notify_profiles_runc_refuses(raw, where):
    with pytest.raises(UsageError) as exc:
        plan_seccomp(raw, source="config.json")
    assert str(exc.value) == f"config.json: {where}"


@pytest.mark.parametrize("default, ret, enosys", [
    ("SCMP_ACT_ERRNO", None, True), ("SCMP_ACT_KILL", None, True),
    ("SCMP_ACT_KILL_PROCESS", None, True), ("SCMP_ACT_TRAP", None, True),
    ("SCMP_ACT_ERRNO", 38, False),      # unknown calls get ENOSYS anyway
    ("SCMP_ACT_ALLOW", None, False), ("SCMP_ACT_LOG", None, False),
    ("SCMP_ACT_TRACE", None, False),    # a tracer handles new syscalls itself (runc)
])
def test_the_enosys_stub_only_where_the_default_refuses(default, ret, enosys):
    raw = {"defaultAction": default, "syscalls": [{"names": ["read"], "action":
                                                    "SCMP_ACT_ALLOW" if default != "SCMP_ACT_ALLOW"
                                                    else "SCMP_ACT_KILL"}]}
    if ret is not None:
        raw["defaultErrnoRet"] = ret
    assert plan_seccomp(raw).enosys is enosys


def test_describe_names_what_libseccomp_refused():
    plan = _plan(architectures=["SCMP_ARCH_X86"],
                 syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}])
    assert plan.describe(0) == "architecture x86"
    assert plan.describe(1) == "rule mkdir (SCMP_ACT_ERRNO)"
    assert plan.describe(7) == "filter"


def test_python_enums_mirror_the_c_header():
    text = HEADER.read_text()
    for action in Action:
        assert f"SECCOMP_ACTION_{action.name} = {int(action)}," in text
    # Flag is seccomp(2)'s SECCOMP_FILTER_FLAG_* (stable kernel ABI), passed
    # through to the kernel as they are.
    assert [int(f) for f in (Flag.TSYNC, Flag.LOG, Flag.SPEC_ALLOW, Flag.NEW_LISTENER,
                             Flag.TSYNC_ESRCH, Flag.WAIT_KILLABLE_RECV)] == [1 << i for i in range(6)]
    # libseccomp's enum scmp_compare (seccomp.h), stable ABI
    assert [int(op) for op in (Op.NE, Op.LT, Op.LE, Op.EQ, Op.GE, Op.GT, Op.MASKED_EQ)] == \
        list(range(1, 8))


def test_features_list_what_the_plan_accepts():
    sec = runtime_features()["linux"]["seccomp"]
    assert sec["enabled"] is True
    assert set(sec["actions"]) == set(ACTIONS) and "SCMP_ACT_NOTIFY" in sec["actions"]
    assert set(sec["operators"]) == set(OPERATORS)
    assert set(sec["archs"]) == set(ARCHES)
    assert set(sec["supportedFlags"]) == set(FLAGS)


# -- where the inits load it (runtime/process.py) ------------------------------


@pytest.fixture
def ids(monkeypatch):
    monkeypatch.setattr(os, "setgroups", lambda g: None)
    monkeypatch.setattr(os, "setresgid", lambda *a: None)
    monkeypatch.setattr(os, "setresuid", lambda *a: None)
    monkeypatch.setattr(proc, "_last_cap", lambda proc_root="/proc": 40)


PLAN = SeccompPlan(default_action=Action.ALLOW,
                   rules=(SeccompRule(name="mkdir", action=Action.ERRNO),))


def test_without_no_new_privs_the_filter_goes_in_before_privileges_drop(ids):
    sys = FakeSyscalls()
    filt = proc.prepare_seccomp(sys, PLAN)
    proc.apply_user_and_caps(sys, Process(args=("sh",), user=User(uid=1000)), seccomp=filt)
    assert sys.calls[:2] == [SeccompPrepare(PLAN), SeccompLoad(filt)]
    assert Prctl(PR.SET_KEEPCAPS, 1) in sys.calls[2:]
    assert Prctl(PR.SET_NO_NEW_PRIVS, 1) not in sys.calls


def test_with_no_new_privs_the_filter_is_left_to_the_caller(ids):
    sys = FakeSyscalls()
    filt = proc.prepare_seccomp(sys, PLAN)
    p = Process(args=("sh",), user=User(uid=1000), no_new_privileges=True)
    proc.apply_user_and_caps(sys, p, seccomp=filt)
    assert SeccompLoad(filt) not in sys.calls
    assert sys.calls[-1] == Prctl(PR.SET_NO_NEW_PRIVS, 1)


NOTIFY_PLAN = SeccompPlan(default_action=Action.ALLOW, flags=Flag.NEW_LISTENER,
                          listener_path="/run/agent.sock",
                          rules=(SeccompRule(name="mkdir", action=Action.NOTIFY),))


def test_a_listener_fd_is_handed_over_then_closed(ids):
    sys = FakeSyscalls()
    got = []

    def hand_over(fd):
        os.fstat(fd)            # still open while the runtime takes it
        got.append(fd)

    proc.load_seccomp(sys, proc.prepare_seccomp(sys, NOTIFY_PLAN), hand_over)
    assert len(got) == 1
    with pytest.raises(OSError):
        os.fstat(got[0])         # closed afterwards: the agent's copy is the only one


def test_a_listener_fd_is_closed_when_the_hand_over_fails(ids):
    sys = FakeSyscalls()
    got = []

    def hand_over(fd):
        got.append(fd)
        raise KernelError("connect", "/run/agent.sock", errno.ENOENT)

    with pytest.raises(KernelError):
        proc.load_seccomp(sys, proc.prepare_seccomp(sys, NOTIFY_PLAN), hand_over)
    with pytest.raises(OSError):
        os.fstat(got[0])


def test_the_no_new_privs_case_runs_in_order_in_the_new_container_init():
    # The standard init: caps and nnp, then fds and signals, then the filter
    # (after what the profile need not allow), then "ready".
    import inspect

    from migrate.runtime.init import standard

    src = inspect.getsource(standard.run_standard_init)
    order = [src.index(s) for s in ("proc.become_process(", "proc.prepare_exec(",
                                    "proc.load_seccomp(", '{"type": "ready"}', "_start_container_hooks(",
                                    "proc.exec_process(")]
    assert order == sorted(order)


def test_no_plan_no_calls():
    sys = FakeSyscalls()
    assert proc.prepare_seccomp(sys, None) is None
    assert sys.calls == []


def test_build_and_load_errors_name_the_step():
    sys = FakeSyscalls()
    sys.fail_on(SeccompPrepare, errno=errno.EINVAL)
    with pytest.raises(KernelError, match="seccomp: Invalid argument"):
        proc.prepare_seccomp(sys, PLAN)
    sys.fail_on(SeccompLoad, errno=errno.EACCES)
    with pytest.raises(KernelError, match="seccomp: Permission denied: loading"):
        proc.load_seccomp(sys, PLAN)


# -- the program the C side builds: the ENOSYS stub ----------------------------

def _nsexec_or_skip():
    try:
        from migrate.runtime import nsexec

        nsexec.lib()
    except ImportError:
        pytest.skip("the compiled nsexec extension is not built here")
    return nsexec


def _bpf_run(prog, nr: int, arch: int, args=(0,) * 6) -> int:
    """A classic BPF interpreter, enough for seccomp programs
    (Documentation/networking/filter.rst), over one struct seccomp_data."""
    import struct

    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    a = x = 0
    mem = [0] * 16
    pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        cls, size_mode, op, src = code & 7, code & 0xE0, code & 0xF0, code & 8
        if cls == 0:                                   # LD
            if size_mode == 0x20:                      # W|ABS
                a = struct.unpack_from("<I", data, k)[0]
            elif size_mode == 0x00:                    # IMM
                a = k
            elif size_mode == 0x60:                    # MEM
                a = mem[k]
        elif cls == 1:                                 # LDX
            x = mem[k] if size_mode == 0x60 else k
        elif cls == 2:
            mem[k] = a
        elif cls == 3:
            mem[k] = x
        elif cls == 4:                                 # ALU
            v = x if src else k
            a = {0x00: a + v, 0x10: a - v, 0x50: a & v, 0x40: a | v, 0x60: a << v,
                 0x70: a >> v, 0x80: (-a)}[op] & 0xFFFFFFFF
        elif cls == 5:                                 # JMP
            v = x if src else k
            if op == 0x00:
                pc += k
                continue
            taken = {0x10: a == v, 0x20: a > v, 0x30: a >= v, 0x40: bool(a & v)}[op]
            pc += jt if taken else jf
        elif cls == 6:                                 # RET
            return a if code & 0x18 == 0x10 else k
        elif cls == 7:                                 # MISC: TAX / TXA
            if code & 0xF8 == 0:
                x = a
            else:
                a = x


AUDIT_X86_64, AUDIT_I386 = 0xC000003E, 0x40000003
ALLOW, ERRNO = 0x7FFF0000, 0x00050000


def _program(raw):
    nsexec = _nsexec_or_skip()
    filt = nsexec.seccomp_build(plan_seccomp(raw))
    try:
        return nsexec.seccomp_program(filt)
    finally:
        nsexec.lib().seccomp_filter_release(filt)


def test_syscalls_newer_than_a_refusing_profile_get_enosys():
    # runc's seccomp_syscall_test1 in small: default EPERM, a few allowed.
    prog = _program({"defaultAction": "SCMP_ACT_ERRNO",
                     "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                     "syscalls": [{"names": ["read", "write", "kcmp"],
                                   "action": "SCMP_ACT_ALLOW"}]})
    x32 = 0x40000000
    cases = [
        (AUDIT_X86_64, 0, ALLOW),                 # read
        (AUDIT_X86_64, 312, ALLOW),               # kcmp, the highest named
        (AUDIT_X86_64, 100, ERRNO | 1),           # known, not allowed: the default
        (AUDIT_X86_64, 313, ERRNO | 38),          # above the profile: ENOSYS
        (AUDIT_X86_64, 1000, ERRNO | 38),
        (AUDIT_X86_64, x32 | 0, ALLOW),           # x32 read
        (AUDIT_X86_64, x32 | 1000, ERRNO | 38),   # x32, above its highest
        (AUDIT_I386, 3, ALLOW),                   # i386 read
        (AUDIT_I386, 1000, ERRNO | 38),
        (AUDIT_I386, 50, ERRNO | 1),
    ]
    got = [(arch, nr, _bpf_run(prog, nr, arch)) for arch, nr, _ in cases]
    assert got == cases


def test_no_stub_where_the_default_lets_calls_through():
    raw = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
    prog = _program(raw)
    assert _bpf_run(prog, 1000, AUDIT_X86_64) == ALLOW
    assert _bpf_run(prog, 83, AUDIT_X86_64) == ERRNO | 1      # mkdir
