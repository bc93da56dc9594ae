"""Options of `migrate checkpoint` and `migrate restore` (runc's flags).

Values are CRIU's already: the CLI turns runc's spellings (``soft``,
``iptables``, ``--empty-ns network``) into ``CgroupMode``, ``NetworkLock``
and CRIU's namespace names (``net``) once, so nothing here checks them again.
"""

from __future__ import annotations

from migrate._record import record

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from migrate.criu_rpc.options import CgroupMode, NetworkLock

__all__ = ["CheckpointOptions", "RestoreOptions", "criu_config_file"]


@record
class CheckpointOptions:
    id: str
    image_path: str = "checkpoint"
    work_path: str | None = None
    parent_path: str | None = None     # relative to image_path, as CRIU's parent_img
    leave_running: bool = False
    tcp_established: bool = False
    tcp_skip_in_flight: bool = False
    link_remap: bool = False
    ext_unix_sk: bool = False
    shell_job: bool = False
    lazy_pages: bool = False
    status_fd: int | None = None
    page_server: str | None = None     # "ADDR:PORT"
    file_locks: bool = False
    pre_dump: bool = False
    manage_cgroups_mode: CgroupMode | None = None
    empty_ns: frozenset[str] = frozenset()   # CRIU's names: "net"
    # Dump a network namespace that holds only lo empty (CRIU empty_ns), as
    # runc always does; checked before the freeze (netns.why_netns_not_plain).
    skip_plain_netns: bool = False
    # Recreate the empty read-only tmpfs over masked directories on restore
    # instead of tarring each (externals.masked_tmpfs_mounts); runc cannot
    # restore such images (it maps no such keys).
    skip_masked_tmpfs: bool = False
    # Leave the writable tmpfs mounts (/dev, /dev/shm) out of CRIU's dump
    # too: the caller copies their content while the tasks are frozen
    # (checkpoint.tmpfs_copy.save, from CRIU's post-dump) and the restore
    # puts it into a tmpfs made ahead (externals.TMPFS_COPY). Migration only.
    copy_tmpfs: bool = False
    auto_dedup: bool = False
    network_lock: NetworkLock | None = None
    callbacks: dict | None = None      # extra CRIU notification callbacks (migration)


@record
class RestoreOptions:
    id: str
    image_path: str = "checkpoint"
    work_path: str | None = None
    bundle: str = "."
    detach: bool = False
    pid_file: str | None = None
    console_socket: str | None = None
    no_subreaper: bool = False
    no_pivot: bool = False
    tcp_established: bool = False
    tcp_close: bool = False
    ext_unix_sk: bool = False
    shell_job: bool = False
    file_locks: bool = False
    manage_cgroups_mode: CgroupMode | None = None
    empty_ns: frozenset[str] = frozenset()   # CRIU's names: "net"
    auto_dedup: bool = False
    lazy_pages: bool = False
    page_server: str | None = None     # with lazy_pages: start the lazy-pages daemon ourselves
    # with page_server: open the connection ourselves with this stream
    # secret (criu_rpc/page_stream.py) and hand the daemon the socket
    page_server_secret: str | None = None
    # with lazy_pages: start the lazy-pages daemon ourselves, serving the
    # images themselves (no page server: pages already here, copied in
    # after the tasks resume)
    lazy_pages_local: bool = False
    lsm_profile: str | None = None
    lsm_mount_context: str | None = None
    leave_stopped: bool = False        # SIGSTOP the tasks after restore (migration commits later)
    stdio: tuple[int, int, int] | None = None   # fds for the container's 0-2 (default: ours)


# runc's per-container CRIU configuration: the annotation names a file,
# an empty value means none, and without it runc's own default applies
# (libcontainer handleCriuConfigurationFile, runc 1.1).
CRIU_CONFIG_ANNOTATION = "org.criu.config"
CRIU_CONFIG_DEFAULT = "/etc/criu/runc.conf"


def criu_config_file(annotations) -> str | None:
    """The CRIU configuration file for a container with these annotations."""
    value = (annotations or {}).get(CRIU_CONFIG_ANNOTATION)
    if value is None:
        return CRIU_CONFIG_DEFAULT
    return value or None
