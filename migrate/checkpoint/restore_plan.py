"""The restore plan: which CRIU options restore a checkpoint here.

Pure logic over config.json, the checkpoint's metadata (what was external
at dump time) and the new container's cgroups, namespace fds and stdio:
tested without CRIU in tests/unit/checkpoint/test_restore_plan.py. The
restore itself (checkpoint/restore.py) makes what the plan refers to and
runs CRIU with it.
"""

from __future__ import annotations

import os

from migrate.checkpoint.externals import (MASKED_TMPFS, RO_TMPFS, TMPFS_COPY, masked_tmpfs_key,
                                          ro_tmpfs_key)
from migrate.checkpoint.metadata import CheckpointMeta, stdio_roles
from migrate.checkpoint.options import RestoreOptions, criu_config_file
from migrate.errors import NotFoundError, UsageError

__all__ = ["plan_restore", "mount_sources", "check_stdio", "restored_stdio", "cgroup_source",
           "relative_cgroup",
           "is_bind_mount", "bind_source", "restore_network_lock"]


def is_bind_mount(m) -> bool:
    return m.type == "bind" or "bind" in m.options or "rbind" in m.options


def bind_source(m, bundle: str) -> str:
    src = m.source or ""
    return src if os.path.isabs(src) else os.path.normpath(os.path.join(bundle, src))


def _cgroup_keys(dest: str, cgroup_paths: dict[str, str]) -> dict[str, str]:
    """The external keys of the cgroup mounts at ``dest``: one bind per v1
    hierarchy at dest/<hierarchy dir> (runc's and our key), or dest itself
    on a pure v2 host."""
    out = {}
    for ctrl, path in cgroup_paths.items():
        parts = path.split("/")
        if len(parts) > 4 and parts[1:4] == ["sys", "fs", "cgroup"]:
            if ctrl == "" and len(cgroup_paths) == 1 and parts[4] != "unified":
                out[dest] = path                 # pure v2: one mount, no hierarchy dir
            else:
                out.setdefault(os.path.join(dest, parts[4]), path)
    return out


def mount_sources(spec, meta: CheckpointMeta, *, bundle: str, cgroup_paths: dict[str, str],
                  notify_dir: str | None, resolved: dict[str, str] | None = None,
                  image_keys: dict[str, str] | None = None,
                  masked_tmpfs: dict[str, str] | None = None) -> dict[str, str]:
    """External mount key -> its source on this host.

    Keys are the ones runc uses too (bind and cgroup mounts by where they
    are in the container, symlinks resolved: ``resolved`` maps config
    destinations to that path; "/dev/null" for masked files; device nodes
    by path), so runc's checkpoints restore here. ``meta.mounts`` adds what
    our own checkpoints recorded. ``image_keys`` (key -> mount point, from
    CRIU's mountpoints image) lets us name a mount this bundle cannot
    provide before CRIU does. ``masked_tmpfs`` maps the options of the
    checkpoint's masked tmpfs mounts to the empty tmpfs made for them.

    Raises NotFoundError, UsageError.
    """
    resolved = resolved or {}
    out = {"/dev/null": "/dev/null"}
    binds = {}
    for m in spec.mounts:
        if m.type in ("cgroup", "cgroup2"):
            out.update(_cgroup_keys(resolved.get(m.destination, m.destination.rstrip("/")),
                                    cgroup_paths))
        elif is_bind_mount(m):
            key = resolved.get(m.destination) or m.destination.rstrip("/") or "/"
            binds[key] = bind_source(m, bundle)
            binds.setdefault(m.destination.rstrip("/") or "/", binds[key])
    for dev in spec.linux.devices:
        if os.path.exists(dev.path):
            out[dev.path] = dev.path
    for em in meta.mounts:
        if em.kind == "bind":
            if em.mountpoint not in binds:
                raise NotFoundError(f"the checkpoint has a bind mount at {em.mountpoint}, but "
                                    f"config.json has no bind mount there")
            if not os.path.exists(binds[em.mountpoint]):
                raise NotFoundError(f"bind mount source {binds[em.mountpoint]} "
                                    f"(for {em.mountpoint}) does not exist")
        elif em.kind == "cgroup":
            out[em.mountpoint] = cgroup_source(em.detail, cgroup_paths)
        elif em.kind == "mask":
            out[em.mountpoint] = "/dev/null"    # checkpoints that keyed it by mount point
        elif em.kind == "device":
            out[em.mountpoint] = em.detail
        elif em.kind == MASKED_TMPFS:
            if em.detail not in (masked_tmpfs or {}):
                raise UsageError(f"no empty tmpfs was made for the masked path {em.mountpoint}")
            out[masked_tmpfs_key(em.mountpoint)] = masked_tmpfs[em.detail]
        elif em.kind in (RO_TMPFS, TMPFS_COPY):
            if em.detail not in (masked_tmpfs or {}):
                raise UsageError(f"no tmpfs was made for the tmpfs at {em.mountpoint}")
            out[ro_tmpfs_key(em.mountpoint)] = masked_tmpfs[em.detail]
        elif em.kind == "notify":
            if notify_dir is None:
                raise UsageError("the checkpoint proxied NOTIFY_SOCKET; restore it with "
                                 "NOTIFY_SOCKET set too")
            out[em.mountpoint] = notify_dir
        else:
            raise UsageError(f"external mount {em.mountpoint} of unknown kind {em.kind!r}")
    out.update(binds)
    for key, mountpoint in (image_keys or {}).items():
        if key not in out:
            raise NotFoundError(f"the checkpoint has an external mount at {mountpoint} "
                                f"(key {key!r}) that this bundle does not provide: config.json "
                                f"has no bind mount there")
        if key in binds and not os.path.exists(binds[key]):
            raise NotFoundError(f"bind mount source {binds[key]} (for {mountpoint}) does not exist")
    return out


def cgroup_source(hierarchy: str, cgroup_paths: dict[str, str]) -> str:
    """The new container's cgroup dir in the hierarchy mounted as ``hierarchy``
    ("memory", "cpu,cpuacct", "systemd", "unified", "" for pure v2)."""
    names = hierarchy.split(",") if hierarchy else [""]
    aliases = {"systemd": "name=systemd", "unified": ""}
    for name in names:
        key = aliases.get(name, name)
        if key in cgroup_paths:
            return cgroup_paths[key]
    raise NotFoundError(f"no cgroup for hierarchy {hierarchy!r} on this host "
                        f"(have: {', '.join(sorted(k or 'unified' for k in cgroup_paths))})")


def plan_restore(spec, meta: CheckpointMeta, opts: RestoreOptions, *, images_dir: str,
                 work_dir: str, criu_root: str, cgroup_paths: dict[str, str],
                 ns_fds: dict[str, int], notify_dir: str | None, stdio_fds=(0, 1, 2),
                 resolved: dict[str, str] | None = None,
                 image_keys: dict[str, str] | None = None,
                 cgroup_mounts: dict[str, str] | None = None,
                 masked_tmpfs: dict[str, str] | None = None):
    """CRIU options for restoring ``meta``'s container from ``spec``
    (``resolved`` and ``image_keys``: see ``mount_sources``; ``cgroup_mounts``
    maps a controller, "" for the unified hierarchy, to where it is mounted)."""
    from migrate.criu_rpc import (CgroupRoot, CriuOptions, ExtMount, InheritFd,
                                  JoinNamespace, LogLevel)

    sources = mount_sources(spec, meta, bundle=os.path.abspath(opts.bundle),
                            cgroup_paths=cgroup_paths, notify_dir=notify_dir,
                            resolved=resolved, image_keys=image_keys,
                            masked_tmpfs=masked_tmpfs)
    # By key: CRIU finds the file wherever the dump has it (not only on fd
    # d.fd), and takes the first fd given for a key.
    inherit = [InheritFd(key=key, fd=stdio_fds[fd]) for key, fd in dict.fromkeys(
        (d.external, d.fd) for d in meta.descriptors if d.external)]
    for oci_type, key in (meta.external_keys or {}).items():
        if oci_type not in ns_fds:
            raise UsageError(f"the checkpointed container joined a {oci_type} namespace: "
                             f"config.json must give one to join (linux.namespaces path)")
        inherit.append(InheritFd(key=key, fd=ns_fds[oci_type]))
    join = []
    for ns in spec.linux.namespaces:
        if ns.path and ns.type in ("ipc", "uts"):
            join.append(JoinNamespace(ns=ns.type, ns_file=ns.path))
    from migrate.checkpoint.unprivileged import criu_unprivileged_options

    # The checkpoint's own (a netns dumped empty) or asked for (--empty-ns).
    empty_ns = opts.empty_ns | frozenset(meta.empty_ns)
    return CriuOptions(
        **criu_unprivileged_options(),
        images_dir=images_dir, work_dir=work_dir, log_file="restore.log",
        log_level=LogLevel.DEBUG, root=criu_root, rst_sibling=True,
        leave_stopped=opts.leave_stopped,
        manage_cgroups=True, manage_cgroups_mode=opts.manage_cgroups_mode,
        cg_root=tuple(CgroupRoot(path=relative_cgroup(p, (cgroup_mounts or {}).get(c)),
                                 ctrl=c or None)
                      for c, p in sorted(cgroup_paths.items()) if not c.startswith("name=")),
        tcp_established=opts.tcp_established, tcp_close=opts.tcp_close,
        ext_unix_sk=opts.ext_unix_sk, shell_job=opts.shell_job, file_locks=opts.file_locks,
        empty_ns=empty_ns, network_lock=restore_network_lock(empty_ns, opts),
        auto_dedup=opts.auto_dedup,
        lazy_pages=opts.lazy_pages,
        ext_mnt=tuple(ExtMount(key=k, val=v) for k, v in sources.items()),
        inherit_fd=tuple(inherit), join_ns=tuple(join),
        orphan_pts_master=meta.terminal, config_file=criu_config_file(spec.annotations),
        lsm_profile=opts.lsm_profile, lsm_mount_context=opts.lsm_mount_context)


def restore_network_lock(empty_ns: frozenset[str], opts: RestoreOptions):
    """SKIP when CRIU makes the network namespace anew and no TCP connection
    comes back; else None (CRIU's default, iptables, as runc has it).

    In a namespace it creates empty, CRIU locks the network after setting it
    up and unlocks it before the tasks resume (cr-restore.c: "in the
    '--empty-ns net' mode ... we need to return these rules by hands"):
    iptables-restore and ip6tables-restore run at least six times, 65-85 ms
    of every restore here (restore.log), runc's too. The lock keeps restored
    TCP connections quiet until both ends are back; without tcp_established
    (or tcp_close) CRIU restores none, so it would guard nothing. A namespace
    restored from its image keeps the lock: its dumped rules may hold the
    dump's own lock, which only the unlock removes."""
    from migrate.criu_rpc import NetworkLock

    if "net" in empty_ns and not (opts.tcp_established or opts.tcp_close):
        return NetworkLock.SKIP
    return None


def relative_cgroup(path: str, mount_point: str | None = None) -> str:
    """CRIU's cg_root wants the path inside the hierarchy, not the host path.

    With the mount point known this is exact. Without it the layout is
    guessed from the path: a pure v2 host mounts the hierarchy at
    /sys/fs/cgroup itself, so dropping one more component there would put
    the tasks into a cgroup CRIU makes up (/<id>), outside the container's.
    """
    if mount_point:
        rel = os.path.relpath(path, mount_point)
        if not rel.startswith(".."):
            return "/" if rel == "." else "/" + rel
    parts = path.split("/")
    # /sys/fs/cgroup/<hierarchy>/<path...> or /sys/fs/cgroup/<path...> (pure v2)
    if len(parts) > 4 and parts[1:4] == ["sys", "fs", "cgroup"]:
        return "/" + "/".join(parts[5:])
    return path


def check_stdio(meta: CheckpointMeta, fds=(0, 1, 2), images_dir: str | None = None) -> None:
    """CRIU reopens a container's stdio files through the fds we give it and
    refuses another file type or mode, or a regular file (not opened for
    appending at the checkpoint) of another size than it had then: say so
    before anything is made (the size only once ``images_dir`` holds the
    dump). Raises UsageError."""
    import stat

    names = ("stdin", "stdout", "stderr")
    sizes = None
    for d in stdio_roles(meta):
        if not (d.external and d.external.startswith("file[") and d.mode):
            continue
        try:
            st = os.fstat(fds[d.fd])
        except OSError:
            continue
        mode = st.st_mode
        if stat.S_IFMT(mode) != stat.S_IFMT(d.mode) or (
                stat.S_ISREG(mode) and stat.S_IMODE(mode) != stat.S_IMODE(d.mode)):
            raise UsageError(
                f"the container's {names[d.fd]} was {d.path} (mode {d.mode:o}) at checkpoint "
                f"time; restore needs the same kind of file there (got mode {mode:o})")
        if stat.S_ISREG(mode) and images_dir is not None:
            if sizes is None:
                from migrate.checkpoint.inspect import external_file_sizes

                sizes = external_file_sizes(images_dir)
            want = sizes.get(d.external)
            if want is not None and st.st_size != want:
                raise UsageError(
                    f"the container's {names[d.fd]} was {d.path}, {want} bytes long at "
                    f"checkpoint time; CRIU restores it only onto a file of that size (got "
                    f"{st.st_size} bytes): hand it that file, or one made that size "
                    f"(truncate -s {want} FILE)")


def restored_stdio(meta: CheckpointMeta, stdio_fds, identity) -> list[dict]:
    """What the restored init was handed as fds 0-2, for state.json's
    ``stdio`` (runtime/stdio.py), so its next checkpoint knows them too.
    ``identity(fd, role)`` describes our fd ``fd`` (runtime.stdio.fd_identity
    of /proc/self). The files CRIU reopened through our fds (the external
    ones) are ours; the rest it reopened by path inside the container (a
    device node, a terminal): described as the checkpoint has them."""
    out = []
    roles = {d.fd: d for d in stdio_roles(meta)}
    mapped = {d.fd for d in meta.descriptors if d.external}
    for fd in range(3):
        d = roles.get(fd)
        if fd in mapped:
            out.append(identity(stdio_fds[fd], fd))
        else:
            out.append({"fd": fd, "path": d.path if d else "/dev/null", "mnt_id": None,
                        "inode": 0, "mode": d.mode if d else 0})
    return out
