"""linux.seccomp: the plan (runtime/seccomp.py) and where the inits load it."""

import errno
import json
import os
import pathlib

import pytest

from migrate.errors import KernelError, UnsupportedError, UsageError
from migrate.oci import Process, User
from migrate.runtime import process as proc
from migrate.runtime.features import runtime_features
from migrate.runtime.seccomp import (ACTIONS, ARCHES, FLAGS, OPERATORS, Action, Flag, Op,
                                     SeccompArg, SeccompPlan, SeccompRule, plan_seccomp)
from migrate.runtime.syscalls import PR
from migrate.testing import FakeSyscalls, MarkFdsCloexec, Prctl, SeccompLoad, SeccompPrepare

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


@pytest.mark.parametrize("raw", [
    {"defaultAction": "SCMP_ACT_NOTIFY"},
    {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"},
    {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"],
                                                      "action": "SCMP_ACT_NOTIFY"}]},
    {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]},
])
def test_seccomp_notify_is_refused_not_ignored(raw):
    with pytest.raises(UnsupportedError, match="is not supported"):
        plan_seccomp(raw)


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
    for flag in Flag:
        assert f"#define SECCOMP_PROFILE_{flag.name}" in text
        assert f"0x{int(flag):x}" in text.split(f"SECCOMP_PROFILE_{flag.name}")[1].split("\n")[0]
    # libseccomp's enum scmp_compare (seccomp.h), stable ABI
    assert [int(op) for op in (Op.NE, Op.LT, Op.LE, Op.EQ, Op.GE, Op.GT, Op.MASKED_EQ)] == \
        list(range(1, 8))


def test_features_list_what_the_plan_accepts():
    sec = runtime_features()["linux"]["seccomp"]
    assert sec["enabled"] is True
    assert set(sec["actions"]) == set(ACTIONS) and "SCMP_ACT_NOTIFY" not in sec["actions"]
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


def test_with_no_new_privs_the_filter_waits_for_execve(ids, monkeypatch):
    sys = FakeSyscalls()
    filt = proc.prepare_seccomp(sys, PLAN)
    p = Process(args=("sh",), user=User(uid=1000), no_new_privileges=True)
    proc.apply_user_and_caps(sys, p, seccomp=filt)
    assert SeccompLoad(filt) not in sys.calls
    assert sys.calls[-1] == Prctl(PR.SET_NO_NEW_PRIVS, 1)
    monkeypatch.setattr(proc, "reset_signals", lambda: None)
    seen = []
    monkeypatch.setattr(os, "execve", lambda *a: seen.append(list(sys.calls)))
    proc.exec_process(sys, "/bin/sh", ("sh",), {}, 3, seccomp=filt)
    assert seen[0][-2:] == [MarkFdsCloexec(3), SeccompLoad(filt)]


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
