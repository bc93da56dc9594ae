"""`migrate restore`: bring a checkpointed container back as a full citizen.

Order:
  claim the ID, create the cgroups (CRIU puts the tasks into them: cg_root);
  bind the rootfs onto a private directory for CRIU's --root and recreate
  missing mount points inside it; map every external resource recorded at
  checkpoint time to its new source (bind mounts from this bundle's
  config.json, cgroups of the new container, joined namespaces, stdio);
  restore with CRIU, answering its notifications (hooks, the new pty
  master); save the state. On failure everything made is undone.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal

from migrate.checkpoint.inspect import external_mount_keys
from migrate.checkpoint.metadata import CheckpointMeta, load_meta
from migrate.checkpoint.options import RestoreOptions, criu_config_file
from migrate.errors import KernelError, NotFoundError, UsageError
from migrate.runtime.container import Container, proc_start_time
from migrate.runtime.context import RuntimeContext
from migrate.runtime.state import ContainerState, StateStore, validate_id

__all__ = ["restore", "plan_restore", "mount_sources"]

CRIU_ROOT = "criu-root"


def _is_bind(m) -> bool:
    return m.type == "bind" or "bind" in m.options or "rbind" in m.options


def _bind_source(m, bundle: str) -> str:
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
                  image_keys: dict[str, str] | None = None) -> dict[str, str]:
    """External mount key -> its source on this host.

    Keys are the ones runc uses too (bind and cgroup mounts by where they
    are in the container, symlinks resolved: ``resolved`` maps config
    destinations to that path; "/dev/null" for masked files; device nodes
    by path), so runc's checkpoints restore here. ``meta.mounts`` adds what
    our own checkpoints recorded. ``image_keys`` (key -> mount point, from
    CRIU's mountpoints image) lets us name a mount this bundle cannot
    provide before CRIU does.

    Raises NotFoundError, UsageError.
    """
    resolved = resolved or {}
    out = {"/dev/null": "/dev/null"}
    binds = {}
    for m in spec.mounts:
        if m.type in ("cgroup", "cgroup2"):
            out.update(_cgroup_keys(resolved.get(m.destination, m.destination.rstrip("/")),
                                    cgroup_paths))
        elif _is_bind(m):
            key = resolved.get(m.destination) or m.destination.rstrip("/") or "/"
            binds[key] = _bind_source(m, bundle)
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
            out[em.mountpoint] = _cgroup_source(em.detail, cgroup_paths)
        elif em.kind == "mask":
            out[em.mountpoint] = "/dev/null"    # checkpoints that keyed it by mount point
        elif em.kind == "device":
            out[em.mountpoint] = em.detail
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


def _cgroup_source(hierarchy: str, cgroup_paths: dict[str, str]) -> str:
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
                 cgroup_mounts: dict[str, str] | None = None):
    """CRIU options for restoring ``meta``'s container from ``spec``
    (``resolved`` and ``image_keys``: see ``mount_sources``; ``cgroup_mounts``
    maps a controller, "" for the unified hierarchy, to where it is mounted)."""
    from migrate.criu_rpc import (CgroupRoot, CriuOptions, ExtMount, InheritFd,
                                  JoinNamespace, LogLevel)

    sources = mount_sources(spec, meta, bundle=os.path.abspath(opts.bundle),
                            cgroup_paths=cgroup_paths, notify_dir=notify_dir,
                            resolved=resolved, image_keys=image_keys)
    inherit = [InheritFd(key=d.external, fd=stdio_fds[d.fd]) for d in meta.descriptors
               if d.external]
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

    return CriuOptions(
        **criu_unprivileged_options(),
        images_dir=images_dir, work_dir=work_dir, log_file="restore.log",
        log_level=LogLevel.DEBUG, root=criu_root, rst_sibling=True,
        leave_stopped=opts.leave_stopped,
        manage_cgroups=True, manage_cgroups_mode=opts.manage_cgroups_mode,
        cg_root=tuple(CgroupRoot(path=_relative_cgroup(p, (cgroup_mounts or {}).get(c)),
                                 ctrl=c or None)
                      for c, p in sorted(cgroup_paths.items()) if not c.startswith("name=")),
        tcp_established=opts.tcp_established, tcp_close=opts.tcp_close,
        ext_unix_sk=opts.ext_unix_sk, shell_job=opts.shell_job, file_locks=opts.file_locks,
        empty_ns=opts.empty_ns, auto_dedup=opts.auto_dedup,
        lazy_pages=opts.lazy_pages,
        ext_mnt=tuple(ExtMount(key=k, val=v) for k, v in sources.items()),
        inherit_fd=tuple(inherit), join_ns=tuple(join),
        orphan_pts_master=meta.terminal, config_file=criu_config_file(spec.annotations),
        lsm_profile=opts.lsm_profile, lsm_mount_context=opts.lsm_mount_context)


def _relative_cgroup(path: str, mount_point: str | None = None) -> str:
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


def restore(ctx: RuntimeContext, opts: RestoreOptions) -> int:
    """Restore; with ``detach`` return 0 at once, else wait and return the
    container's exit code (deleting it afterwards, as `run` does).

    Raises NotFoundError, ExistsError, UsageError, UnsupportedError, CriuError.
    """
    from migrate import oci
    from migrate.runtime import rootless
    from migrate.runtime.cgroups import open_manager
    from migrate.runtime.lifecycle.create import (
        default_device_rules, check_pid_file, write_pid_file)

    validate_id(opts.id)
    images_dir = os.path.abspath(opts.image_path)
    work_dir = os.path.abspath(opts.work_path) if opts.work_path else images_dir
    meta = load_meta(images_dir)
    check_stdio(meta, opts.stdio or (0, 1, 2))
    if meta.pre_dump:
        raise UsageError(f"{images_dir} is a pre-dump: restore the final dump that names it "
                         f"with --parent-path")
    bundle = os.path.abspath(opts.bundle)
    spec = oci.load_config(bundle)
    if not os.path.isdir(spec.root.path):
        raise NotFoundError(f"rootfs {spec.root.path} does not exist")
    from migrate.checkpoint.compat import check_bundle_fits

    check_bundle_fits(images_dir, spec, empty_ns=opts.empty_ns)
    if meta.terminal and not opts.console_socket and opts.detach:
        raise UsageError("the checkpointed container has a terminal: restore --detach "
                         "needs --console-socket")
    check_pid_file(opts.pid_file)
    if opts.console_socket:
        from migrate.runtime.console import check_console_socket

        check_console_socket(opts.console_socket)
    facts = rootless.detect(ctx.rootless)
    from migrate.checkpoint.unprivileged import check_unprivileged_checkpoint

    check_unprivileged_checkpoint(ctx.criu, config=oci.spec_to_dict(spec), proc_root=ctx.proc_root)
    _makedirs(work_dir)
    store = StateStore(ctx.root)
    # Each side effect below is recorded in the claim's intent first, so
    # `delete --force` can undo what a SIGKILL interrupts (runtime/state.py).
    claim = store.claim(opts.id, "restore")
    cdir = claim.dir
    undo: list = []
    root_mount: list = []      # the temporary --root bind, undone in every case
    fg = None
    try:
        from migrate.runtime.lifecycle.create import cgroups_path

        cgroups = open_manager(container_id=opts.id,
                               cgroups_path=cgroups_path(ctx, spec.linux.cgroups_path, opts.id,
                                                         facts.cgroups),
                               systemd=ctx.systemd_cgroup, rootless=facts.cgroups,
                               cgroup_root=ctx.cgroup_root)
        claim.record(cgroup=cgroups.to_state(), rootless_cgroups=facts.cgroups,
                     default_cgroups_path=not spec.linux.cgroups_path, criu_work_dir=work_dir)
        cgroups.create()
        undo.append(lambda: cgroups.destroy())
        # A CRIU we killed (deadline, log limit) leaves its half-restored
        # tasks behind, still writing its log: they are in these cgroups.
        # It also leaves its cgroup yard mounted in our mount namespace.
        undo.append(lambda: _kill_cgroup(cgroups))
        from migrate.runtime.lifecycle.delete import umount_criu_cgyards

        undo.append(lambda: umount_criu_cgyards(ctx, work_dir))
        cgroups.apply_resources(default_device_rules(spec.linux.resources))
        criu_root, resolved = _prepare_root(ctx, spec, meta, cdir, bundle, root_mount, claim)
        notify_dir = None
        if any(m.kind == "notify" for m in meta.mounts) and ctx.notify_socket:
            from migrate.runtime.notify import prepare_notify_dir

            notify_dir = prepare_notify_dir(cdir)
        ns_fds = _open_namespaces(spec, undo)
        criu_opts = plan_restore(spec, meta, opts, images_dir=images_dir, work_dir=work_dir,
                                 criu_root=criu_root, cgroup_paths=cgroups.paths(),
                                 cgroup_mounts=cgroups.to_state().get("mounts") or {},
                                 ns_fds=ns_fds, notify_dir=notify_dir,
                                 stdio_fds=_stdio_copies(root_mount, opts.stdio),
                                 resolved=resolved, image_keys=external_mount_keys(images_dir))
        if not opts.detach:
            from migrate.runtime.foreground import Foreground

            fg = Foreground(ctx.syscalls)
            fg.install()
        state = ContainerState(
            id=opts.id, bundle=bundle, rootfs=spec.root.path,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
            annotations=dict(spec.annotations), config=oci.spec_to_dict(spec),
            cgroup=cgroups.to_state(), rootless_euid=facts.euid,
            rootless_cgroups=facts.cgroups, no_pivot=opts.no_pivot,
            terminal=meta.terminal, restored=True, notify_socket=ctx.notify_socket)
        console = _ConsoleHandoff(opts.console_socket, keep=not opts.detach)
        pid = _run_criu(ctx, spec, state, criu_opts, console, undo, lazy=opts, claim=claim)
        state.pid = pid
        state.pid_start = proc_start_time(pid, ctx.proc_root)
        state.namespaces = {ns.type: ns.path or f"{ctx.proc_root}/{pid}/ns/"
                            f"{_proc_ns(ns.type)}" for ns in spec.linux.namespaces}
        container = Container(state, store, ctx.proc_root)
        container.save()
        if opts.pid_file:
            write_pid_file(opts.pid_file, pid)
        _run_poststart(spec, state)
    except BaseException as err:
        if fg is not None:
            fg.restore()
        _undo(err, undo + root_mount)
        store.remove(opts.id)
        claim.release()
        raise
    _undo(None, root_mount)
    claim.done()
    claim.release()
    if fg is None:
        return 0
    try:
        code = fg.wait(pid, console.master)
    finally:
        fg.restore()
    from migrate.runtime.lifecycle.delete import delete

    with contextlib.suppress(Exception):
        delete(ctx, opts.id, force=True)
    return code


def _proc_ns(oci_type: str) -> str:
    from migrate.runtime.nsexec import NS_FLAGS

    return NS_FLAGS[oci_type][1]


class _ConsoleHandoff:
    """The orphan-pts-master notification brings the restored terminal's new
    master: hand it to --console-socket, or keep it to proxy in the foreground."""

    def __init__(self, socket_path: str | None, keep: bool):
        self.socket_path = socket_path
        self.keep = keep
        self.master: int | None = None

    def __call__(self, note) -> bool:
        if note.fd is None:
            return False
        if self.socket_path:
            from migrate.runtime.console import send_console

            send_console(self.socket_path, note.fd)
        elif self.keep:
            self.master = os.dup(note.fd)
        return True


def _run_criu(ctx, spec, state, criu_opts, console, undo, lazy, claim) -> int:
    from migrate.criu_rpc import Client, SwrkOptions

    def setup_namespaces(note) -> bool:
        hooks = spec.hooks
        if hooks.prestart or hooks.create_runtime:
            from migrate.runtime.hooks import run_hooks
            from migrate.runtime.lifecycle.create import oci_state

            state.pid = note.pid or 0
            st = oci_state(state, "creating")
            run_hooks(hooks.prestart, state=st, name="prestart")
            run_hooks(hooks.create_runtime, state=st, name="createRuntime")
            run_hooks(hooks.create_container, state=st, name="createContainer")
        return True

    def post_restore(note) -> bool:
        # Before the tasks resume, so a restored TCP connection can flow at once.
        if note.pid:
            _after_restore(spec, note.pid)
        return True

    callbacks = {"setup-namespaces": setup_namespaces, "post-restore": post_restore}
    if criu_opts.orphan_pts_master:
        callbacks["orphan-pts-master"] = console
    daemon = None
    if lazy.lazy_pages and lazy.page_server:
        from migrate.checkpoint.dump import parse_page_server
        from migrate.criu_rpc import LazyPagesOptions, start_lazy_pages

        ps = parse_page_server(lazy.page_server)
        daemon = start_lazy_pages(LazyPagesOptions(
            images_dir=criu_opts.images_dir, work_dir=criu_opts.work_dir, page_server=ps),
            criu=ctx.criu)
        undo.append(daemon.close)
        claim.add("processes", [daemon.pid, proc_start_time(daemon.pid, ctx.proc_root)])
    # CRIU's forks are not in the container's cgroups until CRIU moves them,
    # and with rst_sibling they outlive a killed restore: the tag lets
    # `delete --force` find them (runtime/lifecycle/delete.py).
    from migrate.runtime.state import INTENT_ENV

    client = Client(SwrkOptions(criu=ctx.criu, env=((INTENT_ENV, claim.dir),)))
    with client.session(pass_fds=criu_opts.inherited_fds()) as session:
        # criu swrk gets EOF and exits if we die before the request is sent;
        # once it is, a killed restore leaves CRIU to `delete --force`.
        claim.add("processes", [session.pid, proc_start_time(session.pid, ctx.proc_root)])
        result = session.restore(criu_opts, callbacks)
    undo.append(lambda: _kill(result.pid))
    if daemon is not None:
        # It pulls the remaining pages in the background and exits by itself:
        # reap it then, so no zombie stays behind a long-lived caller.
        import threading

        threading.Thread(target=daemon.wait, name="lazy-pages-reaper", daemon=True).start()
    return result.pid


def _kill_cgroup(cgroups) -> None:
    import time

    cgroups.kill_all(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while cgroups.pids() and time.monotonic() < deadline:
        time.sleep(0.01)


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def check_stdio(meta: CheckpointMeta, fds=(0, 1, 2)) -> None:
    """CRIU reopens a container's stdio files through the fds we give it and
    refuses another file type or mode: say so before anything is made.
    Raises UsageError."""
    import stat

    names = ("stdin", "stdout", "stderr")
    for d in meta.descriptors:
        if not (d.external and d.external.startswith("file[") and d.mode):
            continue
        try:
            mode = os.fstat(fds[d.fd]).st_mode
        except OSError:
            continue
        if stat.S_IFMT(mode) != stat.S_IFMT(d.mode) or (
                stat.S_ISREG(mode) and stat.S_IMODE(mode) != stat.S_IMODE(d.mode)):
            raise UsageError(
                f"the container's {names[d.fd]} was {d.path} (mode {d.mode:o}) at checkpoint "
                f"time; restore needs the same kind of file there (got mode {mode:o})")


def _stdio_copies(undo, stdio=None) -> tuple[int, int, int]:
    """Our fds 0-2 (or ``stdio``) under higher numbers: ``criu swrk``
    inherits fds by number and its own 0-2 are taken (its output goes to a log)."""
    fds = []
    for fd in (stdio or range(3)):
        try:
            copy = os.dup(fd)
        except OSError:
            copy = os.open(os.devnull, os.O_RDWR)
        fds.append(copy)
        undo.append(lambda copy=copy: os.close(copy))
    return tuple(fds)


def _open_namespaces(spec, undo) -> dict[str, int]:
    fds = {}
    for ns in spec.linux.namespaces:
        if ns.path and ns.type in ("network", "pid"):
            try:
                fd = os.open(ns.path, os.O_RDONLY)   # inherited by criu swrk
            except OSError as err:
                raise NotFoundError(f"namespace {ns.type} {ns.path}: {err.strerror}") from None
            fds[ns.type] = fd
            undo.append(lambda fd=fd: os.close(fd))
    return fds


def _prepare_root(ctx, spec, meta: CheckpointMeta, cdir: str, bundle: str,
                  undo, claim) -> tuple[str, dict[str, str]]:
    """CRIU needs --root to be a mount point it can pivot into; bind the
    rootfs there, after making the mount points a fresh rootfs may lack.
    Returns the directory and where each config.json destination is in the
    container (symlinks resolved), for the external mount keys."""
    from migrate.runtime.syscalls import MNT, MS

    resolved = _make_mountpoints(ctx.syscalls, spec, meta, bundle)
    target = os.path.join(cdir, CRIU_ROOT)
    os.mkdir(target, 0o700)
    sys = ctx.syscalls
    claim.add("mounts", target)
    sys.mount(spec.root.path, target, None, MS.BIND | MS.REC, None)
    undo.append(lambda: sys.umount(target, MNT.DETACH))
    # Private, so nothing CRIU mounts below it propagates back to the host.
    sys.mount(None, target, None, MS.PRIVATE | MS.REC, None)
    return target, resolved


def _make_mountpoints(sys, spec, meta: CheckpointMeta, bundle: str) -> dict[str, str]:
    """Create the mount points CRIU will mount on; CRIU makes none ("mnt-v2:
    Can't stat mountpoint"), and a fresh copy of the rootfs (containerd's new
    snapshot, a re-extracted image) lacks those the runtime made at create
    time. As runc does (prepareCriuRestoreMounts): every mount of config.json
    in order, except below a tmpfs (CRIU restores a tmpfs with its content);
    bind mounts are mounted for the time being so that the mount points of
    mounts nested in them are made in their sources, then unmounted again.
    Paths resolve inside the rootfs, never through its symlinks.
    Returns destination -> path in the container."""
    from migrate.runtime.paths import ensure_mountpoint
    from migrate.runtime.syscalls import MNT, MS

    rootfs = spec.root.path
    tmpfs = [m.destination.rstrip("/") for m in spec.mounts if m.type == "tmpfs"]
    resolved: dict[str, str] = {}
    temporary: list[str] = []
    try:
        for m in spec.mounts:
            if m.type in ("cgroup", "cgroup2") or any(m.destination.startswith(t + "/")
                                                      for t in tmpfs):
                continue                  # CRIU restores what is below a tmpfs or /sys/fs/cgroup
            bind = _is_bind(m)
            source = _bind_source(m, bundle) if bind else None
            try:
                target = ensure_mountpoint(rootfs, m.destination, is_file=bool(
                    source and os.path.exists(source) and not os.path.isdir(source)))
            except OSError:
                continue                  # CRIU says which mount point it missed
            resolved[m.destination] = target[len(rootfs):] or "/"
            if bind and os.path.exists(source):
                sys.mount(source, target, None, MS.BIND | MS.REC, None)
                temporary.append(target)
    finally:
        for target in reversed(temporary):
            with contextlib.suppress(OSError):
                sys.umount(target, MNT.DETACH)
    for em in meta.mounts:
        if em.kind in ("mask", "device"):
            with contextlib.suppress(OSError):
                ensure_mountpoint(rootfs, em.mountpoint, is_file=True)
    return resolved


def _after_restore(spec, pid: int) -> None:
    """A private network namespace comes back with lo down (runc has the same
    gap): bring it up, so a restored server answers on 127.0.0.1."""
    ns = spec.linux.namespace("network")
    if ns is None or ns.path:
        return
    from migrate.checkpoint.netns import set_lo_up

    set_lo_up(f"/proc/{pid}/ns/net")


def _run_poststart(spec, state) -> None:
    if spec.hooks.poststart:
        from migrate.runtime.hooks import run_hooks
        from migrate.runtime.lifecycle.create import oci_state

        run_hooks(spec.hooks.poststart, state=oci_state(state, "running"), name="poststart",
                  warn_only=True)


def _undo(err, undo) -> None:
    for step in reversed(undo):
        try:
            step()
        except Exception as cleanup:  # noqa: BLE001
            if isinstance(err, Exception):
                err.add_note(f"cleanup: {cleanup}")
            elif err is None:
                raise


def _makedirs(path: str) -> None:
    """Raises KernelError naming the directory (a file in the way, no space)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as err:
        raise KernelError.from_oserror("mkdir", err, path) from None
