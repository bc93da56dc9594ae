"""`migrate checkpoint`: dump a container with CRIU, runc's semantics.

Without --leave-running the container is gone after a successful
checkpoint (deleted, as runc does); after a failed one it is running, as
it was (CRIU resumes the tree; a cgroup we froze is thawed).
"""

from __future__ import annotations

import os
import time

from migrate._light import contextmanager, suppress
from migrate.checkpoint.externals import (MASKED_TMPFS, RO_TMPFS, TMPFS_COPY, classify_mounts,
                                          copied_tmpfs_mounts, describe_file,
                                          external_namespaces, masked_tmpfs_key,
                                          masked_tmpfs_mounts, may_remount, ro_tmpfs_key,
                                          ro_tmpfs_mounts, stdio_descriptors)
from migrate.checkpoint.metadata import CheckpointMeta, save_meta
from migrate.checkpoint.options import CheckpointOptions, criu_config_file
from migrate.checkpoint.unprivileged import check_unprivileged_checkpoint, criu_unprivileged_options
from migrate.errors import CriuError, KernelError, NotFoundError, UnsupportedError, UsageError
from migrate.runtime.container import Container, Status
from migrate.runtime.context import RuntimeContext
from migrate.runtime.mountinfo import parse_mountinfo
from migrate.runtime.state import StateStore
from migrate.runtime.stdio import fd_identity

__all__ = ["checkpoint", "plan_dump", "parse_page_server", "check_parent_path", "bind_destinations",
           "image_key"]


def parse_page_server(text: str):
    """"ADDR:PORT" -> criu_rpc.PageServer. Raises UsageError."""
    from migrate.criu_rpc import PageServer

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid --page-server {text!r}: use ADDRESS:PORT")
    return PageServer(address=host.strip("[]") or None, port=int(port))


def check_parent_path(image_path: str, parent: str) -> None:
    """--parent-path is relative to the image path and must name a pre-dump."""
    if os.path.isabs(parent):
        raise UsageError(f"--parent-path {parent!r} must be relative to --image-path")
    target = os.path.normpath(os.path.join(image_path, parent))
    if not os.path.isdir(target):
        raise NotFoundError(f"--parent-path {parent!r}: {target} does not exist")
    if not any(n.startswith("pagemap-") or n == "inventory.img" for n in os.listdir(target)):
        raise UsageError(f"--parent-path {parent!r}: {target} holds no CRIU images")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def bind_destinations(spec, root: str) -> set[str]:
    """Where the bind mounts of ``spec`` are, as the container sees them:
    each destination with its symlinks resolved inside ``root`` (the
    container's /proc/PID/root, so a bind below another bind resolves
    through it). Mountinfo, CRIU's keys and runc's keys all use this path."""
    from migrate.runtime.paths import secure_join

    out = set()
    for m in spec.mounts:
        if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
            try:
                out.add(secure_join(root, m.destination)[len(root):] or "/")
            except OSError:
                pass
            out.add(m.destination.rstrip("/") or "/")
    return out


def image_key(mount) -> str:
    """The key an external mount gets in CRIU's images: its mount point,
    but "/dev/null" for a masked file, as runc names both (so either
    runtime can restore the other's checkpoints)."""
    if mount.kind == MASKED_TMPFS:
        return masked_tmpfs_key(mount.mountpoint)
    if mount.kind in (RO_TMPFS, TMPFS_COPY):
        return ro_tmpfs_key(mount.mountpoint)
    return "/dev/null" if mount.kind == "mask" else mount.mountpoint


def _asks_plain_netns(opts: CheckpointOptions) -> bool:
    """Whether the dump leaves the network namespace out when it is plain."""
    return opts.skip_plain_netns and "net" not in opts.empty_ns and not opts.pre_dump


def _masked_tmpfs(container: Container, entries, masked_paths: set[str], proc_root: str,
                  copy_tmpfs: bool = False):
    """The masked tmpfs mounts restore can recreate empty (see
    externals.masked_tmpfs_mounts): no task of the container may remount
    them (CAP_SYS_ADMIN in no bounding set) and each is empty now; and the
    read-only tmpfs mounts it can recreate with the same mount points and
    symlinks (externals.ro_tmpfs_mounts)."""
    pid = container.state.pid
    root = f"{proc_root}/{pid}/root"
    pids = {pid}
    cg = container.cgroups
    with suppress(Exception):
        pids.update(cg.pids())
    bounds = []
    for p in pids:
        try:
            status = _read(f"{proc_root}/{p}/status")
        except OSError:
            continue                       # gone: it remounts nothing
        bounds.append(next((l.split(":", 1)[1].strip() for l in status.splitlines()
                            if l.startswith("CapBnd:")), None))

    def is_empty(mp: str) -> bool:
        try:
            return not os.listdir(root + mp)
        except OSError:
            return False

    def list_dir(mp: str):
        try:
            out = []
            with os.scandir(root + mp) as it:
                for d in it:
                    if d.is_symlink():
                        out.append((d.name, "symlink", os.readlink(d.path)))
                    elif d.is_dir(follow_symlinks=False):
                        out.append((d.name, "dir", ""))
                    else:
                        out.append((d.name, "other", ""))
            return out
        except OSError:
            return None

    can_remount = may_remount(bounds)
    out = (masked_tmpfs_mounts(entries, masked_paths=masked_paths, can_remount=can_remount,
                               is_empty=is_empty)
           + ro_tmpfs_mounts(entries, masked_paths=masked_paths, can_remount=can_remount,
                             list_dir=list_dir))
    if copy_tmpfs:
        out += copied_tmpfs_mounts(entries, masked_paths=masked_paths, can_remount=can_remount,
                                   taken={m.mountpoint for m in out})
    return out


def plan_dump(container: Container, spec, opts: CheckpointOptions, *, images_dir: str,
              work_dir: str, proc_root: str = "/proc", netns_check=None):
    """The CRIU options and the metadata for checkpointing ``container``.

    ``netns_check``: the answer of ``netns.why_netns_not_plain`` for it,
    already under way (``netns.start_netns_check``); else it is asked here.
    Raises UnsupportedError for a container CRIU could not restore.
    """
    from migrate.criu_rpc import CriuOptions, ExtMount, LogLevel, NetworkLock

    st = container.state
    pid = st.pid
    entries = parse_mountinfo(_read(f"{proc_root}/{pid}/mountinfo"))
    masked_paths = set(spec.linux.masked_paths)
    mounts = classify_mounts(
        entries, bind_destinations=bind_destinations(spec, f"{proc_root}/{pid}/root"),
        masked_paths=masked_paths, notify_dir="/run/notify" if st.notify_socket else None)
    unprivileged = criu_unprivileged_options()
    # Restore mounts the fresh tmpfs itself: only for a privileged CRIU.
    if opts.skip_masked_tmpfs and not opts.pre_dump and not unprivileged:
        mounts += _masked_tmpfs(container, entries, masked_paths, proc_root,
                                copy_tmpfs=opts.copy_tmpfs)
    inside = frozenset(e.mount_id for e in entries)
    descriptors = stdio_descriptors(st.stdio, _current_stdio(f"{proc_root}/{pid}", inside),
                                    inside=inside)
    joined = {ns.type for ns in spec.linux.namespaces if ns.path}
    ns_external, ns_keys = external_namespaces(
        {ns.type: ns.path for ns in spec.linux.namespaces if ns.path}, joined,
        lambda path: os.stat(path).st_ino)
    externals = tuple(ns_external) + tuple(dict.fromkeys(
        d.external for d in descriptors if d.external and d.external.startswith("file[")))
    cg = container.cgroups
    usable = cg is not None and (not hasattr(cg, "is_usable") or cg.is_usable())
    empty_ns = opts.empty_ns
    network_lock = opts.network_lock
    if _asks_plain_netns(opts):
        # ip addr/route/rule and iptables/nft save run as programs while the
        # container is frozen (~0.3 s), and their restore again: not for a
        # namespace that a fresh one with lo up recreates exactly.
        if netns_check is None:
            from migrate.checkpoint.netns import why_netns_not_plain

            why = why_netns_not_plain(pid, st.config or {}, proc_root=proc_root)
        else:
            why = netns_check()
        if why is None:
            empty_ns = empty_ns | {"net"}
            if network_lock is None and not opts.tcp_established:
                network_lock = NetworkLock.SKIP
    criu = CriuOptions(
        images_dir=images_dir, work_dir=work_dir,
        log_file="pre-dump.log" if opts.pre_dump else "dump.log", log_level=LogLevel.DEBUG,
        pid=pid, root=st.rootfs, leave_running=opts.leave_running,
        tcp_established=opts.tcp_established, tcp_skip_in_flight=opts.tcp_skip_in_flight,
        link_remap=opts.link_remap, ext_unix_sk=opts.ext_unix_sk, shell_job=opts.shell_job,
        file_locks=opts.file_locks, manage_cgroups=True,
        manage_cgroups_mode=opts.manage_cgroups_mode,
        freeze_cgroup=cg.freezer_path() if usable else None,
        # A dump on top of a pre-dump must track memory too, or CRIU cannot
        # tell which pages the parent already holds and writes them all again.
        auto_dedup=opts.auto_dedup, track_mem=opts.pre_dump or bool(opts.parent_path),
        parent_img=opts.parent_path,
        ps=parse_page_server(opts.page_server) if opts.page_server else None,
        lazy_pages=opts.lazy_pages, status_fd=opts.status_fd,
        empty_ns=empty_ns,
        external=externals,
        ext_mnt=tuple(ExtMount(key=m.mountpoint, val=image_key(m)) for m in mounts),
        config_file=criu_config_file(spec.annotations),
        orphan_pts_master=st.terminal,
        # SKIP for a plain namespace dumped without TCP connections: the
        # lock (iptables-restore run twice, 10-15 ms of the freeze) keeps
        # peers from changing established connections while they are dumped;
        # here there are none (CRIU refuses them without tcp_established)
        # and no peer outside the container could reach one (only lo).
        network_lock=network_lock,
        **unprivileged,
    )
    meta = CheckpointMeta(
        container_id=st.id, bundle=st.bundle, mounts=tuple(mounts),
        descriptors=descriptors, joined_namespaces=tuple(sorted(joined)),
        external_keys=ns_keys, terminal=st.terminal,
        created=_utc_now(),
        pre_dump=opts.pre_dump, lazy_pages=opts.lazy_pages, empty_ns=tuple(sorted(empty_ns)))
    return criu, meta


def _current_stdio(fd_dir: str, inside: frozenset[int]) -> list:
    """fds 0-2 of the init as they are now, classified; a closed one is
    left out (the init runs: an fd may even close between the reads)."""
    out = []
    for fd in range(3):
        e = fd_identity(fd_dir, fd)
        if e["path"]:
            out.append(describe_file(fd, e["path"], e["mnt_id"], e["inode"], e["mode"],
                                     inside=inside))
    return out


_SIGKILL = 9     # signal.SIGKILL; the signal module costs start-up time (issue 16)


def _utc_now() -> str:
    """Now as ISO 8601 UTC with microseconds, "2026-12-02T09:30:00.123456Z"
    (what datetime's isoformat wrote; datetime costs ~1 ms to import)."""
    now = time.time_ns() // 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 1_000_000)) + f".{now % 1_000_000:06d}Z"


def _validate(opts: CheckpointOptions) -> None:
    if opts.pre_dump and opts.lazy_pages:
        raise UsageError("--pre-dump and --lazy-pages cannot be combined")


def _check_features(ctx: RuntimeContext, opts: CheckpointOptions, features=None) -> None:
    """Refuse what this kernel cannot do, before anything is frozen
    (``features``: CRIU's answer if already known)."""
    if not (opts.pre_dump or opts.lazy_pages):
        return
    if features is None:
        from migrate.criu_rpc import Client, SwrkOptions

        features = Client(SwrkOptions(criu=ctx.criu)).feature_check(
            mem_track=opts.pre_dump, lazy_pages=opts.lazy_pages, pidfd_store=False)
    if opts.pre_dump and not features.mem_track:
        raise UnsupportedError(
            "--pre-dump needs memory dirty tracking, which this kernel lacks "
            "(CONFIG_MEM_SOFT_DIRTY is off: `criu check --feature mem_dirty_track` fails); "
            "use --lazy-pages (post-copy) instead")
    if opts.lazy_pages and not features.lazy_pages:
        raise UnsupportedError("--lazy-pages needs userfaultfd with non-cooperative events "
                               "(`criu check --feature uffd-noncoop` fails on this kernel)")


class DumpJob:
    """A checkpoint whose CRIU request the caller runs (live migration needs
    its own swrk session): the container is locked, checked and planned."""

    __slots__ = ("container", "store", "criu_opts", "meta", "images_dir", "was_paused")

    def __init__(self, container, store, criu_opts, meta, images_dir, was_paused):
        self.container = container
        self.store = store
        self.criu_opts = criu_opts
        self.meta = meta
        self.images_dir = images_dir
        self.was_paused = was_paused

    def succeeded(self, *, still_running: bool) -> None:
        """CRIU reported success. ``still_running``: --leave-running or a
        pre-dump; else the tree is dead and the container is deleted."""
        if still_running:
            if not self.was_paused:
                _thaw_if_frozen(self.container)
            return
        _forget(self.container, self.store)

    def failed(self) -> None:
        """CRIU failed or was told to give up: it resumes the tree; make sure
        the freezer and the network agree."""
        _resume_after_failure(self.container, self.was_paused)

    def failed_kept_frozen(self) -> None:
        """CRIU failed after a copy of the tree started to run elsewhere (a
        post-copy whose pages stopped coming): this tree, which still has
        all its memory, must not run too. CRIU lets it go in the freezer
        state it found (frozen by the migration); make sure it stays so."""
        cg = self.container.cgroups
        with suppress(Exception):
            if cg is not None and not cg.is_frozen():
                cg.freeze()


@contextmanager
def dump_job(ctx: RuntimeContext, opts: CheckpointOptions, *, features=None):
    """Lock, check and plan a checkpoint; yields a DumpJob. The lock is held
    until the block ends. ``features``: CRIU's ``Features`` here, when the
    caller already asked (else they are asked when needed). Raises what
    ``checkpoint`` raises before CRIU runs."""
    from migrate import oci

    _validate(opts)
    images_dir = os.path.abspath(opts.image_path)
    work_dir = os.path.abspath(opts.work_path) if opts.work_path else images_dir
    store = StateStore(ctx.root)
    with store.lock(opts.id):
        container = Container.load(store, opts.id, ctx.proc_root)
        status = container.require("checkpoint")
        netns_check = None
        if _asks_plain_netns(opts):
            from migrate.checkpoint.netns import start_netns_check

            # Its nft listing is another program (~10 ms, far more on a
            # busy machine): it runs while the rest is checked and planned.
            netns_check = start_netns_check(container.state.pid, container.state.config or {},
                                            proc_root=ctx.proc_root)
        # Returns at once for root in the initial user namespace; otherwise
        # refuses (before anything is frozen) what CRIU cannot do as us.
        check_unprivileged_checkpoint(ctx.criu, config=container.state.config,
                                      proc_root=ctx.proc_root)
        for path in (images_dir, work_dir):
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
            except OSError as err:
                raise KernelError.from_oserror("mkdir", err, path) from None
        if opts.parent_path:
            check_parent_path(images_dir, opts.parent_path)
        _check_features(ctx, opts, features)
        spec = oci.parse_config(container.state.config, bundle=container.state.bundle)
        criu_opts, meta = plan_dump(container, spec, opts, images_dir=images_dir,
                                    work_dir=work_dir, proc_root=ctx.proc_root,
                                    netns_check=netns_check)
        save_meta(images_dir, meta)
        yield DumpJob(container, store, criu_opts, meta, images_dir, status is Status.PAUSED)


def checkpoint(ctx: RuntimeContext, opts: CheckpointOptions) -> str:
    """Checkpoint the container; returns the images directory
    (``read_dump_stats`` reads CRIU's statistics from it).

    Raises NotFoundError, InvalidStateError, UsageError, UnsupportedError,
    CriuError (the container is then still running).
    """
    from migrate.criu_rpc import Client, SwrkOptions

    client = Client(SwrkOptions(criu=ctx.criu, pass_fds=_status_fds(opts)))
    # criu swrk starts first and waits for the request: its own start-up
    # (exec, some twenty shared libraries) overlaps the checks and the plan.
    with client.session() as session, dump_job(ctx, opts) as job:
        try:
            if opts.pre_dump:
                session.single_pre_dump(job.criu_opts, opts.callbacks)
            else:
                session.dump(job.criu_opts, opts.callbacks)
        except BaseException:
            job.failed()
            raise
        job.succeeded(still_running=opts.leave_running or opts.pre_dump)
        return job.images_dir


def _status_fds(opts: CheckpointOptions) -> tuple[int, ...]:
    return (opts.status_fd,) if opts.status_fd is not None else ()


def _thaw_if_frozen(container: Container) -> None:
    cg = container.cgroups
    with suppress(Exception):
        if cg is not None and cg.is_frozen():
            cg.thaw()


def _resume_after_failure(container: Container, was_paused: bool) -> None:
    """CRIU resumes the tree it froze; make sure the freezer agrees."""
    if not was_paused:
        _thaw_if_frozen(container)


def _forget(container: Container, store: StateStore) -> None:
    """After a full dump CRIU has killed the tree: delete the container like
    runc does, so the same ID can be restored."""
    cg = container.cgroups
    if container.is_alive():
        # CRIU reported success but something survived: do not leave it.
        with suppress(OSError):
            os.kill(container.state.pid, _SIGKILL)
    if cg is not None:
        with suppress(Exception):
            cg.kill_all(_SIGKILL)
        with suppress(Exception):
            cg.destroy()
    store.remove(container.id)


def read_dump_stats(images_dir: str) -> dict:
    """CRIU's stats-dump image as a flat dict (empty if absent)."""
    from migrate.checkpoint.stats import read_stats

    try:
        return read_stats(images_dir, "dump")
    except (NotFoundError, KernelError, UsageError):
        return {}
