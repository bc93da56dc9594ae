"""Typed CRIU options and their one-to-one mapping onto ``criu_opts``.

Field names follow ``images/rpc.proto`` of CRIU 4.2 (``leave_running``,
``manage_cgroups_mode``, ``cg_root``, ``ext_mnt``, ``ps`` ...) so grep finds
them upstream. Three groups are typed instead of flat: the page server
(``ps``, as in the proto), TLS (``tls`` plus the ``tls_*`` paths) and the
images/work directories, which are paths here and become fds for CRIU (the
client opens them; CRIU reads them through ``/proc/<client>/fd/N``).

Values are checked in ``__post_init__`` (a bad value raises ``UsageError``
before CRIU sees it); what a given request allows is checked by
``check_request``. ``to_criu_opts`` builds the message with ``_messages``
(no protobuf: see ``_wire``).
"""

from __future__ import annotations

from migrate import _record
import enum
import re
from migrate._record import record
TYPE_CHECKING = False   # typing costs ~3 ms to import; only checkers need it
if TYPE_CHECKING:
    from typing import Any

from migrate.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from migrate.criu_rpc._messages import criu_opts

__all__ = [
    "LogLevel",
    "CgroupMode",
    "NetworkLock",
    "PreDumpMode",
    "PageServer",
    "Tls",
    "ExtMount",
    "InheritFd",
    "JoinNamespace",
    "CgroupRoot",
    "CriuOptions",
    "check_request",
    "to_criu_opts",
]

# CLONE_NEWNET from <linux/sched.h>; os.CLONE_NEWNET only exists from 3.12.
_CLONE_NEWNET = 0x40000000
_EMPTY_NS_FLAGS = {"net": _CLONE_NEWNET}

# join_ns_add() in criu/namespaces.c; "pid" is rejected there too.
_JOIN_NS_TYPES = frozenset({"net", "uts", "time", "ipc", "user", "mnt", "cgroup"})

# `external` keys are "type[id]" optionally followed by ":value" (criu/external.c,
# Documentation/external-resources); "mnt[]:..." asks for auto-detection.
_EXTERNAL_RE = re.compile(r"^[a-z]+\[[^\]]*\](:.*)?$")


class LogLevel(enum.IntEnum):
    """CRIU's ``-v`` levels (criu/include/log.h)."""

    MSG = 0
    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4


class CgroupMode(enum.Enum):
    """``manage_cgroups_mode``; values are the ``criu_cg_mode`` names."""

    IGNORE = "IGNORE"
    NONE = "CG_NONE"
    PROPS = "PROPS"
    SOFT = "SOFT"
    FULL = "FULL"
    STRICT = "STRICT"
    DEFAULT = "DEFAULT"


class NetworkLock(enum.Enum):
    """``network_lock``; values are the ``criu_network_lock_method`` names."""

    IPTABLES = "IPTABLES"
    NFTABLES = "NFTABLES"
    SKIP = "SKIP"


class PreDumpMode(enum.Enum):
    """``pre_dump_mode``; values are the ``criu_pre_dump_mode`` names."""

    SPLICE = "SPLICE"
    VM_READ = "VM_READ"


def _fail(what: str) -> None:
    raise UsageError(f"criu option {what}")


def _check_fd(name: str, fd: int | None) -> None:
    if fd is not None and (not isinstance(fd, int) or isinstance(fd, bool) or fd < 0):
        _fail(f"{name}: {fd!r} is not a file descriptor")


def _check_text(name: str, value: str | None, *, allow_empty: bool = False) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        _fail(f"{name}: expected a string, got {type(value).__name__}")
    if not value and not allow_empty:
        _fail(f"{name}: must not be empty")
    if "\0" in value:
        _fail(f"{name}: contains a NUL byte")


def _check_address(address: str | None) -> None:
    if address is None:
        return
    import ipaddress    # ~1 ms: only page-server addresses need it

    # get_sockaddr_in() in criu/util.c takes only IPv4/IPv6 literals, no names.
    try:
        ipaddress.ip_address(address)
    except ValueError:
        _fail(f'ps.address: "{address}" is not an IPv4 or IPv6 address')


def _as_tuple(obj: Any, name: str) -> None:
    value = getattr(obj, name)
    if isinstance(value, (str, bytes)):
        _fail(f"{name}: expected a sequence, got a string")
    if not isinstance(value, tuple):
        object.__setattr__(obj, name, tuple(value))


@record
class PageServer:
    """``criu_page_server_info``: where pages go (dump) or where to listen.

    ``port`` 0 lets the kernel pick one; a PAGE_SERVER request reports it,
    a lazy dump does not (CRIU only logs it), so a lazy dump needs a port.
    ``fd`` is an already connected socket, inherited by ``criu swrk``.
    """

    address: str | None = None
    port: int = 0
    fd: int | None = None

    def __post_init__(self) -> None:
        _check_address(self.address)
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            _fail(f"ps.port: {self.port!r} is not a TCP port")
        _check_fd("ps.fd", self.fd)


@record
class Tls:
    """``tls`` plus ``tls_cacert``/``tls_cacrl``/``tls_cert``/``tls_key``/``tls_no_cn_verify``.

    Unset paths fall back to CRIU's defaults under /etc/pki.
    """

    cacert: str | None = None
    cacrl: str | None = None
    cert: str | None = None
    key: str | None = None
    no_cn_verify: bool = False

    def __post_init__(self) -> None:
        for name in ("cacert", "cacrl", "cert", "key"):
            _check_text(f"tls_{name}", getattr(self, name))
        if (self.cert is None) != (self.key is None):
            _fail("tls: tls_cert and tls_key go together")


@record
class ExtMount:
    """``ext_mnt`` entry: on dump mount point -> key, on restore key -> source."""

    key: str
    val: str

    def __post_init__(self) -> None:
        _check_text("ext_mnt.key", self.key)
        _check_text("ext_mnt.val", self.val)


@record
class InheritFd:
    """``inherit_fd``: restore the file named ``key`` (e.g. ``pipe:[1234]``)
    from our ``fd``, which ``criu swrk`` inherits under the same number."""

    key: str
    fd: int

    def __post_init__(self) -> None:
        _check_text("inherit_fd.key", self.key)
        if self.fd is None:
            _fail("inherit_fd.fd: missing")
        _check_fd("inherit_fd.fd", self.fd)


@record
class JoinNamespace:
    """``join_ns``: restore into an existing namespace (``ns`` is ``net``,
    ``uts``, ``ipc``, ``mnt``, ``time``, ``cgroup`` or ``user``)."""

    ns: str
    ns_file: str
    extra_opt: str | None = None

    def __post_init__(self) -> None:
        if self.ns not in _JOIN_NS_TYPES:
            _fail(f'join_ns.ns: "{self.ns}" is not one of {", ".join(sorted(_JOIN_NS_TYPES))}')
        _check_text("join_ns.ns_file", self.ns_file)
        _check_text("join_ns.extra_opt", self.extra_opt)


@record
class CgroupRoot:
    """``cg_root``: where the dumped cgroup root is restored (``ctrl`` None: all)."""

    path: str
    ctrl: str | None = None

    def __post_init__(self) -> None:
        _check_text("cg_root.path", self.path)
        if not self.path.startswith("/"):
            _fail(f'cg_root.path: "{self.path}" is not absolute')
        _check_text("cg_root.ctrl", self.ctrl)


@record
class CriuOptions:
    """Everything one CRIU request can be told; ``None``/empty means unset.

    ``images_dir`` and ``work_dir`` are paths; the client opens them and sends
    fds. ``log_file`` is a bare name inside ``work_dir`` (or ``images_dir``).
    ``log_level`` defaults to DEBUG, as runc does: at CRIU's default (WARN)
    the log tail rarely says why a request failed.

    Raises ``UsageError`` on a value CRIU would refuse or misread.
    """

    images_dir: str | None = None
    work_dir: str | None = None
    log_file: str | None = "criu.log"
    log_level: LogLevel = LogLevel.DEBUG

    pid: int | None = None
    root: str | None = None
    leave_running: bool = False
    leave_stopped: bool = False

    tcp_established: bool = False
    tcp_skip_in_flight: bool = False
    tcp_close: bool = False
    ext_unix_sk: bool = False
    shell_job: bool = False
    file_locks: bool = False
    evasive_devices: bool = False
    link_remap: bool = False
    weak_sysctls: bool = False

    manage_cgroups: bool | None = None
    manage_cgroups_mode: CgroupMode | None = None
    cg_root: tuple[CgroupRoot, ...] = ()
    freeze_cgroup: str | None = None
    cgroup_props: str | None = None
    cgroup_dump_controller: tuple[str, ...] = ()
    cgroup_yard: str | None = None

    auto_dedup: bool = False
    track_mem: bool = False
    parent_img: str | None = None
    pre_dump_mode: PreDumpMode | None = None

    ps: PageServer | None = None
    tls: Tls | None = None
    lazy_pages: bool = False
    status_fd: int | None = None

    empty_ns: frozenset[str] = frozenset()
    external: tuple[str, ...] = ()
    ext_mnt: tuple[ExtMount, ...] = ()
    auto_ext_mnt: bool = False
    ext_sharing: bool = False
    ext_masters: bool = False
    skip_mnt: tuple[str, ...] = ()
    enable_fs: tuple[str, ...] = ()
    inherit_fd: tuple[InheritFd, ...] = ()
    join_ns: tuple[JoinNamespace, ...] = ()

    orphan_pts_master: bool = False
    rst_sibling: bool = False
    lsm_profile: str | None = None
    lsm_mount_context: str | None = None
    network_lock: NetworkLock | None = None
    # A CRIU configuration file read after the RPC options, so its settings
    # win (criu/config.c); a missing file is ignored.
    config_file: str | None = None
    notify_scripts: bool = False
    # Non-root CRIU with file capabilities (cr-check.c check_caps; see
    # migrate/checkpoint/unprivileged.py for what it needs on this kernel).
    unprivileged: bool = False
    ghost_limit: int | None = None
    timeout: int | None = None

    def __post_init__(self) -> None:
        for name in ("cg_root", "cgroup_dump_controller", "external", "ext_mnt", "skip_mnt",
                     "enable_fs", "inherit_fd", "join_ns"):
            _as_tuple(self, name)
        if not isinstance(self.empty_ns, frozenset):
            if isinstance(self.empty_ns, str):
                _fail("empty_ns: expected a set of namespace names, got a string")
            object.__setattr__(self, "empty_ns", frozenset(self.empty_ns))
        if not isinstance(self.log_level, LogLevel):
            try:
                object.__setattr__(self, "log_level", LogLevel(self.log_level))
            except ValueError:
                _fail(f"log_level: {self.log_level!r} is not 0..4")

        for name in ("images_dir", "work_dir", "root", "freeze_cgroup", "parent_img",
                     "lsm_profile", "lsm_mount_context", "cgroup_props", "cgroup_yard",
                     "config_file"):
            _check_text(name, getattr(self, name))
        _check_text("log_file", self.log_file)
        if self.log_file is not None and "/" in self.log_file:
            # setup_logging_from_req(): "No subdirs are allowed in log_file name".
            _fail(f'log_file: "{self.log_file}" must be a bare name (it is created in work_dir)')
        if self.root is not None and not self.root.startswith("/"):
            _fail(f'root: "{self.root}" is not absolute')
        if self.pid is not None and (not isinstance(self.pid, int) or isinstance(self.pid, bool)
                                     or self.pid <= 0):
            _fail(f"pid: {self.pid!r} is not a process ID")
        if self.leave_running and self.leave_stopped:
            _fail("leave_running and leave_stopped exclude each other")
        _check_fd("status_fd", self.status_fd)

        _check_types(self, "cg_root", CgroupRoot)
        _check_types(self, "ext_mnt", ExtMount)
        _check_types(self, "inherit_fd", InheritFd)
        _check_types(self, "join_ns", JoinNamespace)
        for name in ("cgroup_dump_controller", "skip_mnt", "enable_fs", "external"):
            for item in getattr(self, name):
                _check_text(name, item)
        for key in self.external:
            if not _EXTERNAL_RE.match(key):
                _fail(f'external: "{key}" is not of the form type[id] or type[id]:value')
        if len({i.fd for i in self.inherit_fd}) != len(self.inherit_fd):
            _fail("inherit_fd: the same fd is given twice")
        unknown = self.empty_ns - _EMPTY_NS_FLAGS.keys()
        if unknown:
            # cr-service.c refuses any empty_ns flag but CLONE_NEWNET.
            _fail(f"empty_ns: only net is supported, not {', '.join(sorted(unknown))}")

        if self.manage_cgroups_mode is not None and not isinstance(self.manage_cgroups_mode, CgroupMode):
            _fail(f"manage_cgroups_mode: {self.manage_cgroups_mode!r} is not a CgroupMode")
        if self.network_lock is not None and not isinstance(self.network_lock, NetworkLock):
            _fail(f"network_lock: {self.network_lock!r} is not a NetworkLock")
        if self.pre_dump_mode is not None and not isinstance(self.pre_dump_mode, PreDumpMode):
            _fail(f"pre_dump_mode: {self.pre_dump_mode!r} is not a PreDumpMode")
        if self.ps is not None and not isinstance(self.ps, PageServer):
            _fail(f"ps: {self.ps!r} is not a PageServer")
        if self.tls is not None and not isinstance(self.tls, Tls):
            _fail(f"tls: {self.tls!r} is not a Tls")
        if self.tls is not None and self.ps is None:
            _fail("tls: only meaningful with a page server (ps)")
        if self.lsm_profile is not None and ":" not in self.lsm_profile:
            # lsm.c: the value is "apparmor:<profile>" or "selinux:<label>".
            _fail(f'lsm_profile: "{self.lsm_profile}" is not of the form type:profile')
        for name in ("ghost_limit", "timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or not 0 <= value < 2**32):
                _fail(f"{name}: {value!r} is not an unsigned 32-bit number")

    def replace(self, **changes: Any) -> "CriuOptions":
        """A copy with ``changes`` applied (and checked again)."""
        return _record.replace(self, **changes)

    def inherited_fds(self) -> tuple[int, ...]:
        """The fds ``criu swrk`` must inherit (CRIU uses these numbers itself)."""
        fds = [i.fd for i in self.inherit_fd]
        if self.ps is not None and self.ps.fd is not None:
            fds.append(self.ps.fd)
        return tuple(fds)


def _check_types(obj: CriuOptions, name: str, kind: type) -> None:
    for item in getattr(obj, name):
        if not isinstance(item, kind):
            _fail(f"{name}: {item!r} is not a {kind.__name__}")


# What each request may carry. Keys are lower-case criu_req_type names.
_NEEDS_IMAGES = frozenset({"dump", "pre_dump", "single_pre_dump", "restore", "page_server",
                           "page_server_chld", "cpuinfo_dump", "cpuinfo_check"})
_NEEDS_PID = frozenset({"dump", "pre_dump", "single_pre_dump"})
_RESTORE_ONLY = ("rst_sibling", "inherit_fd", "join_ns", "lsm_mount_context", "cg_root")
_PS_REQUESTS = frozenset({"dump", "pre_dump", "single_pre_dump", "page_server", "page_server_chld"})
_DUMP_ONLY = ("leave_running", "freeze_cgroup", "track_mem")   # leave_stopped: both (SIGSTOP after restore)


def check_request(request: str, options: CriuOptions) -> None:
    """Check that ``options`` make sense for ``request`` (``dump``, ``restore`` ...).

    Raises ``UsageError`` naming the option and the request.
    """
    def bad(what: str) -> None:
        raise UsageError(f"criu {request.replace('_', '-')}: {what}")

    if request in _NEEDS_IMAGES and options.images_dir is None:
        bad("images_dir is required")
    if request == "check" and options.log_file is not None and \
            options.work_dir is None and options.images_dir is None:
        # setup_images_and_workdir(): a log file needs a directory to live in.
        bad("log_file needs work_dir (or log_file=None to log to stderr)")
    if request in _NEEDS_PID and options.pid is None:
        # Without a pid CRIU dumps the requesting process: us.
        bad("pid is required (CRIU would dump the calling process)")
    if request == "restore" and options.pid is not None:
        bad("pid is not a restore option")
    if request != "restore":
        for name in _RESTORE_ONLY:
            if getattr(options, name):
                bad(f"{name} is a restore option")
    if request not in ("dump", "pre_dump", "single_pre_dump"):
        for name in _DUMP_ONLY:
            if getattr(options, name):
                bad(f"{name} is a dump option")
    if request in ("pre_dump", "single_pre_dump"):
        if options.lazy_pages:
            bad("lazy_pages cannot be used with pre-dump")
        if options.leave_stopped:
            bad("leave_stopped cannot be used with pre-dump")
    if request == "dump" and options.lazy_pages and (options.ps is None or options.ps.port == 0):
        # The lazy dump's page server port is only written to the log.
        bad("lazy_pages needs ps with a fixed port: the lazy-pages daemon must know where to connect")
    if request in ("page_server", "page_server_chld"):
        if options.ps is None:
            bad("ps (address and port) is required")
    if options.ps is not None and request not in _PS_REQUESTS:
        # A lazy restore talks to the lazy-pages daemon, not to a page server.
        bad("ps is a dump, pre-dump or page-server option")


def to_criu_opts(options: CriuOptions, *, images_dir_fd: int = -1,
                 work_dir_fd: int | None = None) -> "criu_opts":
    """Build the ``criu_opts`` message. Pure: the fds are given, not opened.

    Only set fields are written, so CRIU's own defaults apply to the rest.
    """
    from migrate.criu_rpc import _messages as rpc

    o = rpc.criu_opts()
    # images_dir_fd is "required" in the proto (default -1 means: use images_dir).
    o.images_dir_fd = images_dir_fd
    if images_dir_fd == -1 and options.images_dir is not None:
        o.images_dir = options.images_dir
    if work_dir_fd is not None:
        o.work_dir_fd = work_dir_fd
    if options.log_file is not None:
        o.log_file = options.log_file
    o.log_level = int(options.log_level)
    if options.pid is not None:
        o.pid = options.pid
    if options.root is not None:
        o.root = options.root

    for name in ("leave_running", "leave_stopped", "tcp_established", "tcp_skip_in_flight",
                 "tcp_close", "ext_unix_sk", "shell_job", "file_locks", "evasive_devices",
                 "link_remap", "weak_sysctls", "auto_dedup", "track_mem", "lazy_pages",
                 "auto_ext_mnt", "ext_sharing", "ext_masters", "orphan_pts_master",
                 "rst_sibling", "notify_scripts", "unprivileged"):
        if getattr(options, name):
            setattr(o, name, True)

    if options.manage_cgroups is not None:
        o.manage_cgroups = options.manage_cgroups
    if options.manage_cgroups_mode is not None:
        o.manage_cgroups_mode = rpc.criu_cg_mode[options.manage_cgroups_mode.value]
    o.cg_root = [rpc.cgroup_root(path=cg.path, ctrl=cg.ctrl) for cg in options.cg_root]
    for name in ("freeze_cgroup", "cgroup_props", "cgroup_yard", "parent_img", "lsm_profile",
                 "lsm_mount_context", "config_file"):
        value = getattr(options, name)
        if value is not None:
            setattr(o, name, value)
    o.cgroup_dump_controller = options.cgroup_dump_controller
    if options.pre_dump_mode is not None:
        o.pre_dump_mode = rpc.criu_pre_dump_mode[options.pre_dump_mode.value]

    if options.ps is not None:
        # Sent even when empty: a ps message turns the page server on.
        o.ps = rpc.criu_page_server_info(address=options.ps.address, port=options.ps.port,
                                         fd=options.ps.fd)
    if options.tls is not None:
        o.tls = True
        for name in ("cacert", "cacrl", "cert", "key"):
            value = getattr(options.tls, name)
            if value is not None:
                setattr(o, f"tls_{name}", value)
        if options.tls.no_cn_verify:
            o.tls_no_cn_verify = True
    if options.status_fd is not None:
        o.status_fd = options.status_fd

    if options.empty_ns:
        flags = 0
        for ns in options.empty_ns:
            flags |= _EMPTY_NS_FLAGS[ns]
        o.empty_ns = flags
    o.external = options.external
    o.ext_mnt = [rpc.ext_mount_map(key=m.key, val=m.val) for m in options.ext_mnt]
    o.skip_mnt = options.skip_mnt
    o.enable_fs = options.enable_fs
    o.inherit_fd = [rpc.inherit_fd(key=i.key, fd=i.fd) for i in options.inherit_fd]
    o.join_ns = [rpc.join_namespace(ns=j.ns, ns_file=j.ns_file, extra_opt=j.extra_opt)
                 for j in options.join_ns]

    if options.network_lock is not None:
        o.network_lock = rpc.criu_network_lock_method[options.network_lock.value]
    if options.ghost_limit is not None:
        o.ghost_limit = options.ghost_limit
    if options.timeout is not None:
        o.timeout = options.timeout
    return o
