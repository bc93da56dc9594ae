"""Every validation error, with its exact message.

Each case starts from `default_spec()` (valid), changes one thing, and
checks the one line a user would see.
"""

from migrate import _record as dataclasses

import pytest

from migrate.oci import (
    ConfigError,
    Process,
    Root,
    Spec,
    default_spec,
    parse_config,
    validate_process,
    validate_spec,
)


def base() -> dict:
    return default_spec()


def ns(spec: dict, *types: str) -> list[str]:
    return [n["type"] for n in spec["linux"]["namespaces"] if n["type"] in types]


def drop_ns(spec: dict, *types: str) -> dict:
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"]
                                   if n["type"] not in types]
    return spec


def add_ns(spec: dict, type: str, path: str | None = None) -> dict:
    entry = {"type": type}
    if path is not None:
        entry["path"] = path
    spec["linux"]["namespaces"].append(entry)
    return spec


def proc(**changes):
    def change(spec):
        spec["process"].update(changes)
        return spec
    return change


def caps(**sets):
    def change(spec):
        spec["process"]["capabilities"].update(sets)
        return spec
    return change


def rlimits(*items):
    return proc(rlimits=list(items))


def linux(**changes):
    def change(spec):
        spec["linux"].update(changes)
        return spec
    return change


def resources(**changes):
    def change(spec):
        spec["linux"]["resources"].update(changes)
        return spec
    return change


def mount(**m):
    def change(spec):
        spec["mounts"].append(m)
        return spec
    return change


def hooks(**h):
    def change(spec):
        spec["hooks"] = h
        return spec
    return change


def top(**changes):
    def change(spec):
        spec.update(changes)
        return spec
    return change


def seq(*changes):
    def change(spec):
        for c in changes:
            spec = c(spec)
        return spec
    return change


def userns(spec):
    spec = add_ns(spec, "user")
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    return spec


CASES = [
    # process
    ("cwd relative", proc(cwd="srv"),
     'process.cwd: must be an absolute path, got "srv"'),
    ("cwd empty", proc(cwd=""), "process.cwd: is required"),
    ("env without =", proc(env=["PATH=/bin", "TERM"]),
     'process.env[1]: "TERM" is not of the form NAME=value'),
    ("env without name", proc(env=["=x"]),
     'process.env[0]: "=x" is not of the form NAME=value'),
    ("unknown capability", caps(bounding=["CAP_KILL", "CAP_FLY"]),
     'process.capabilities.bounding[1]: unknown capability "CAP_FLY"'),
    ("capability without prefix", caps(permitted=["KILL"]),
     'process.capabilities.permitted[0]: unknown capability "KILL"'),
    ("lower-case capability", caps(ambient=["cap_kill"]),
     'process.capabilities.ambient[0]: unknown capability "cap_kill"'),
    ("capability past the last", caps(inheritable=["CAP_41"]),
     'process.capabilities.inheritable[0]: unknown capability "CAP_41"'),
    ("unknown rlimit", rlimits({"type": "RLIMIT_FOO", "hard": 1, "soft": 1}),
     'process.rlimits[0]: unknown rlimit type "RLIMIT_FOO"'),
    ("rlimit without prefix", rlimits({"type": "NOFILE", "hard": 1, "soft": 1}),
     'process.rlimits[0]: unknown rlimit type "NOFILE"'),
    ("duplicate rlimit", rlimits({"type": "RLIMIT_NOFILE", "hard": 2, "soft": 1},
                                 {"type": "RLIMIT_NOFILE", "hard": 3, "soft": 3}),
     'process.rlimits[1]: duplicate rlimit type "RLIMIT_NOFILE"'),
    ("soft above hard", rlimits({"type": "RLIMIT_NPROC", "hard": 10, "soft": 11}),
     "process.rlimits[0]: RLIMIT_NPROC soft limit 11 exceeds hard limit 10"),
    ("oom score too low", proc(oomScoreAdj=-1001),
     "process.oomScoreAdj: must be from -1000 to 1000, got -1001"),
    ("oom score too high", proc(oomScoreAdj=1001),
     "process.oomScoreAdj: must be from -1000 to 1000, got 1001"),
    ("unknown sched policy", proc(scheduler={"policy": "SCHED_FAST"}),
     'process.scheduler.policy: unknown scheduler policy "SCHED_FAST"'),
    ("unknown sched flag", proc(scheduler={"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_X"]}),
     'process.scheduler.flags[0]: unknown scheduler flag "SCHED_FLAG_X"'),
    ("nice out of range", proc(scheduler={"policy": "SCHED_OTHER", "nice": 20}),
     "process.scheduler.nice: must be from -20 to 19, got 20"),
    ("priority needs rt", proc(scheduler={"policy": "SCHED_OTHER", "priority": 5}),
     "process.scheduler.priority: is only valid with SCHED_FIFO or SCHED_RR"),
    ("deadline fields", proc(scheduler={"policy": "SCHED_FIFO", "runtime": 5}),
     "process.scheduler: runtime, deadline and period are only valid with SCHED_DEADLINE"),
    ("unknown ioprio class", proc(ioPriority={"class": "IOPRIO_CLASS_FAST", "priority": 0}),
     'process.ioPriority.class: unknown i/o priority class "IOPRIO_CLASS_FAST"'),
    ("ioprio out of range", proc(ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 8}),
     "process.ioPriority.priority: must be from 0 to 7, got 8"),
    # mounts
    ("relative mount destination", mount(destination="tmp", type="tmpfs", source="tmpfs"),
     'mounts[7].destination: must be an absolute path, got "tmp"'),
    ("uid mappings without gid", mount(destination="/d", source="/s", options=["rbind"],
                                       uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
     "mounts[7]: uidMappings and gidMappings must be given together"),
    ("idmapped non-bind", mount(destination="/d", type="tmpfs", source="tmpfs",
                                uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}],
                                gidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
     'mounts[7]: id-mapped mount of "/d" must be a bind mount'),
    ("idmap with nothing to map", mount(destination="/d", source="/s", options=["bind", "idmap"]),
     'mounts[7]: "/d" asks for idmap but gives no mappings and the container has no user namespace'),
    # hooks
    ("relative hook path", hooks(poststop=[{"path": "true"}]),
     'hooks.poststop[0].path: must be an absolute path, got "true"'),
    ("zero hook timeout", hooks(createRuntime=[{"path": "/bin/true", "timeout": 0}]),
     "hooks.createRuntime[0].timeout: must be greater than zero, got 0"),
    ("negative hook timeout", hooks(startContainer=[{"path": "/bin/true", "timeout": -5}]),
     "hooks.startContainer[0].timeout: must be greater than zero, got -5"),
    # annotations
    ("empty annotation key", top(annotations={"": "x"}), "annotations: keys must not be empty"),
    # namespaces
    ("unknown namespace", lambda s: add_ns(s, "net"),
     'linux.namespaces[6].type: unknown namespace type "net"'),
    ("duplicate namespace", lambda s: add_ns(s, "pid", "/proc/1/ns/pid"),
     'linux.namespaces[6]: duplicate namespace type "pid"'),
    ("relative namespace path", lambda s: add_ns(drop_ns(s, "network"), "network", "run/netns/x"),
     'linux.namespaces[5].path: must be an absolute path, got "run/netns/x"'),
    # uts
    ("hostname without uts", lambda s: drop_ns(s, "uts"),
     'hostname: cannot set "migrate" without a uts namespace'),
    ("domainname without uts", seq(lambda s: drop_ns(s, "uts"), top(hostname=None, domainname="lan")),
     'domainname: cannot set "lan" without a uts namespace'),
    # user namespace
    ("userns without uid map", seq(lambda s: add_ns(s, "user"),
                                   linux(gidMappings=[{"containerID": 0, "hostID": 1, "size": 1}])),
     "linux.uidMappings: is required when a new user namespace is created"),
    ("userns without gid map", seq(lambda s: add_ns(s, "user"),
                                   linux(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}])),
     "linux.gidMappings: is required when a new user namespace is created"),
    ("maps without userns", linux(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]),
     "linux: uidMappings and gidMappings need a user namespace in linux.namespaces"),
    ("zero-size map", seq(userns, linux(gidMappings=[{"containerID": 0, "hostID": 1, "size": 0}])),
     "linux.gidMappings[0].size: must be greater than zero"),
    # time namespace
    ("unknown clock", seq(lambda s: add_ns(s, "time"), linux(timeOffsets={"realtime": {"secs": 1}})),
     'linux.timeOffsets.realtime: unknown clock, must be "boottime" or "monotonic"'),
    ("offsets without timens", linux(timeOffsets={"monotonic": {"secs": 1}}),
     "linux.timeOffsets: needs a time namespace in linux.namespaces"),
    ("offsets with joined timens", seq(lambda s: add_ns(s, "time", "/proc/1/ns/time"),
                                       linux(timeOffsets={"boottime": {"secs": 1}})),
     "linux.timeOffsets: cannot be set when joining a time namespace by path"),
    # sysctl
    ("net sysctl without netns", seq(lambda s: drop_ns(s, "network"),
                                     linux(sysctl={"net.ipv4.ip_forward": "1"})),
     'linux.sysctl["net.ipv4.ip_forward"]: needs a network namespace in linux.namespaces'),
    ("slash net sysctl without netns", seq(lambda s: drop_ns(s, "network"),
                                           linux(sysctl={"net/ipv4/conf/eth0.100/rp_filter": "1"})),
     'linux.sysctl["net/ipv4/conf/eth0.100/rp_filter"]: needs a network namespace in linux.namespaces'),
    ("ipc sysctl without ipcns", seq(lambda s: drop_ns(s, "ipc"), linux(sysctl={"kernel.shmmax": "1"})),
     'linux.sysctl["kernel.shmmax"]: needs an ipc namespace in linux.namespaces'),
    ("sem sysctl without ipcns", seq(lambda s: drop_ns(s, "ipc"), linux(sysctl={"kernel.sem": "1 2 3 4"})),
     'linux.sysctl["kernel.sem"]: needs an ipc namespace in linux.namespaces'),
    ("msg sysctl without ipcns", seq(lambda s: drop_ns(s, "ipc"), linux(sysctl={"kernel.msgmax": "1"})),
     'linux.sysctl["kernel.msgmax"]: needs an ipc namespace in linux.namespaces'),
    ("mqueue sysctl without ipcns", seq(lambda s: drop_ns(s, "ipc"),
                                        linux(sysctl={"fs.mqueue.msg_max": "10"})),
     'linux.sysctl["fs.mqueue.msg_max"]: needs an ipc namespace in linux.namespaces'),
    ("kernel.hostname without uts", seq(lambda s: drop_ns(s, "uts"), top(hostname=None),
                                        linux(sysctl={"kernel.hostname": "h"})),
     'linux.sysctl["kernel.hostname"]: needs a uts namespace in linux.namespaces'),
    ("kernel.hostname and hostname", linux(sysctl={"kernel.hostname": "h"}),
     'linux.sysctl["kernel.hostname"]: conflicts with the hostname field; set only one'),
    ("kernel.domainname without uts", seq(lambda s: drop_ns(s, "uts"), top(hostname=None),
                                          linux(sysctl={"kernel.domainname": "d"})),
     'linux.sysctl["kernel.domainname"]: needs a uts namespace in linux.namespaces'),
    ("user sysctl without userns", linux(sysctl={"user.max_user_namespaces": "0"}),
     'linux.sysctl["user.max_user_namespaces"]: needs a user namespace in linux.namespaces'),
    ("host-wide sysctl", linux(sysctl={"vm.overcommit_memory": "1"}),
     'linux.sysctl["vm.overcommit_memory"]: is not namespaced: it would change the host'),
    ("kernel.pid_max is host-wide", linux(sysctl={"kernel.pid_max": "1000"}),
     'linux.sysctl["kernel.pid_max"]: is not namespaced: it would change the host'),
    # masked / readonly paths
    ("relative masked path", linux(maskedPaths=["proc/kcore"]),
     'linux.maskedPaths[0]: must be an absolute path, got "proc/kcore"'),
    ("relative readonly path", linux(readonlyPaths=["/proc/sys", "sys"]),
     'linux.readonlyPaths[1]: must be an absolute path, got "sys"'),
    ("masked paths without mountns", lambda s: drop_ns(s, "mount"),
     "linux.maskedPaths: needs a mount namespace in linux.namespaces"),
    # rootfs propagation
    ("unknown propagation", linux(rootfsPropagation="recursive"),
     'linux.rootfsPropagation: unknown value "recursive", must be one of private, rprivate, '
     "slave, rslave, shared, rshared, unbindable, runbindable"),
    # devices
    ("unknown device type", linux(devices=[{"path": "/dev/x", "type": "s", "major": 1, "minor": 1}]),
     'linux.devices[0].type: unknown device type "s", must be c, b, u or p'),
    ("relative device path", linux(devices=[{"path": "dev/x", "type": "c", "major": 1, "minor": 1}]),
     'linux.devices[0].path: must be an absolute path, got "dev/x"'),
    ("device mode with other type bits", linux(devices=[{"path": "/dev/x", "type": "c",
                                                         "major": 1, "minor": 1,
                                                         "fileMode": 0o60666}]),
     "linux.devices[0].fileMode: 0o60666 has bits outside 0o7777 that are not the file type "
     'of a "c" device'),
    ("device mode above the type bits", linux(devices=[{"path": "/dev/x", "type": "p",
                                                        "fileMode": 0o210666}]),
     "linux.devices[0].fileMode: 0o210666 has bits outside 0o7777 that are not the file type "
     'of a "p" device'),
    # net devices
    ("net devices without netns", seq(lambda s: drop_ns(s, "network"),
                                      linux(netDevices={"eth1": {}})),
     "linux.netDevices: needs a network namespace in linux.namespaces"),
    ("bad net device name", linux(netDevices={"eth1": {"name": "a/b"}}),
     'linux.netDevices["eth1"]: invalid interface name "a/b"'),
    ("long net device name", linux(netDevices={"averyveryverylongname": {}}),
     'linux.netDevices["averyveryverylongname"]: invalid interface name "averyveryverylongname"'),
    # resources
    ("unknown device rule type", resources(devices=[{"allow": True, "type": "p", "access": "r"}]),
     'linux.resources.devices[0].type: unknown device rule type "p", must be a, c or b'),
    ("bad device rule access", resources(devices=[{"allow": True, "type": "c", "access": "xa"}]),
     'linux.resources.devices[0].access: "xa" must contain r, w or m'),
    ("swappiness over 100", resources(memory={"swappiness": 101}),
     "linux.resources.memory.swappiness: must be from 0 to 100, got 101"),
    ("unified path", resources(unified={"../memory.max": "1"}),
     'linux.resources.unified["../memory.max"]: is not a cgroup file name'),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_error(change, message):
    data = change(base())
    with pytest.raises(ConfigError) as info:
        parse_config(data, bundle="/b")
    assert str(info.value) == f"config.json: {message}"
    text = str(info.value)
    assert not text.endswith(".")
    assert text[len("config.json: "):][0].islower()


VALID = [
    ("default", lambda s: s),
    ("rootless default", lambda s: default_spec(rootless=True, uid=1000, gid=1000)),
    ("ipc sysctls with ipcns", linux(sysctl={"kernel.shmmax": "1", "kernel.shm_rmid_forced": "1",
                                             "fs.mqueue.queues_max": "5", "kernel.msgmnb": "1"})),
    ("net sysctl with netns", linux(sysctl={"net.ipv4.ip_forward": "1"})),
    ("net sysctl with joined netns", seq(lambda s: drop_ns(s, "network"),
                                         lambda s: add_ns(s, "network", "/run/netns/x"),
                                         linux(sysctl={"net.core.somaxconn": "1024"}))),
    ("kernel.domainname with uts", linux(sysctl={"kernel.domainname": "lan"})),
    ("kernel.hostname without hostname", seq(top(hostname=None),
                                             linux(sysctl={"kernel.hostname": "h"}))),
    ("user sysctl with userns", seq(userns, linux(sysctl={"user.max_user_namespaces": "0"}))),
    ("hostname with joined uts", seq(lambda s: drop_ns(s, "uts"),
                                     lambda s: add_ns(s, "uts", "/proc/1/ns/uts"))),
    ("joined userns needs no maps", lambda s: add_ns(s, "user", "/proc/1/ns/user")),
    ("joined userns may have maps", seq(lambda s: add_ns(s, "user", "/proc/1/ns/user"),
                                        linux(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]))),
    ("time offsets with new timens", seq(lambda s: add_ns(s, "time"),
                                         linux(timeOffsets={"boottime": {"secs": 5},
                                                            "monotonic": {"nanosecs": 5}}))),
    ("every namespace type", seq(userns, lambda s: add_ns(s, "time"))),
    ("idmap with userns", seq(userns, mount(destination="/d", source="/s",
                                            options=["bind", "idmap"]))),
    ("idmapped bind", mount(destination="/d", source="/s", options=["rbind"],
                            uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}],
                            gidMappings=[{"containerID": 0, "hostID": 1, "size": 1}])),
    ("every propagation", linux(rootfsPropagation="runbindable")),
    ("every capability", caps(bounding=[
        "CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"])),
    ("soft equals hard", rlimits({"type": "RLIMIT_CORE", "hard": 0, "soft": 0})),
    ("deadline scheduler", proc(scheduler={"policy": "SCHED_DEADLINE", "runtime": 1,
                                           "deadline": 2, "period": 3})),
    ("rt priority", proc(scheduler={"policy": "SCHED_RR", "priority": 50, "nice": 0})),
    ("idle nice out of range is fine", proc(scheduler={"policy": "SCHED_IDLE", "nice": 30})),
    ("device rule wildcard", resources(devices=[{"allow": True, "type": "a", "access": "m"}])),
    ("hook with timeout", hooks(poststart=[{"path": "/bin/true", "timeout": 1}])),
    ("env with empty value", proc(env=["A=", "B==c"])),
    ("fifo device", linux(devices=[{"path": "/dev/f", "type": "p"}])),
    # Podman --privileged: the host node's st_mode, S_IFCHR / S_IFBLK included
    ("device mode with its own type bits", linux(devices=[
        {"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "fileMode": 0o20644},
        {"path": "/dev/y", "type": "b", "major": 7, "minor": 0, "fileMode": 0o60660}])),
    ("no process", lambda s: {k: v for k, v in s.items() if k != "process"}),
    ("oom extremes", proc(oomScoreAdj=-1000)),
]


@pytest.mark.parametrize("change", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_configs(change):
    parse_config(change(base()), bundle="/b")


def test_no_process_is_none():
    data = base()
    del data["process"]
    assert parse_config(data).process is None


def test_validate_spec_on_hand_built_model():
    spec = Spec(oci_version="1.2.0", root=Root(path="/r"), process=Process(args=("sh",)))
    validate_spec(spec)
    bad = dataclasses.replace(spec, process=dataclasses.replace(spec.process, args=()))
    with pytest.raises(ConfigError, match="^config.json: process.args: must be a non-empty"):
        validate_spec(bad)
    with pytest.raises(ConfigError) as info:
        validate_spec(dataclasses.replace(spec, root=Root(path="r")))
    assert str(info.value) == 'config.json: root.path: must be an absolute path, got "r"'
    with pytest.raises(ConfigError) as info:
        validate_spec(dataclasses.replace(spec, oci_version=""), source="state")
    assert str(info.value) == "state: ociVersion: is required"


def test_validate_process():
    validate_process(Process(args=("sh",)))
    with pytest.raises(ConfigError) as info:
        validate_process(Process(args=("sh",), cwd="x"))
    assert str(info.value) == 'process.json: cwd: must be an absolute path, got "x"'
