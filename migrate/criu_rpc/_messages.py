"""CRIU's messages as field tables for ``_wire`` (see its docstring for why
not protobuf).

Copied field by field from CRIU 4.2's ``images/rpc.proto`` (the swrk RPC) and
from ``images/mnt.proto``, ``netdev.proto``, ``sysctl.proto``,
``pstree.proto``, ``inventory.proto``, ``core.proto``, ``stats.proto`` and
``pagemap.proto``
(the entries ``images.py`` reads), keeping CRIU's names so grep finds them
upstream. Every message here is complete: all its fields, not only those
we set or read, so a test can compare each table with pycriu's generated
descriptor (``tests/unit/criu_rpc/test_wire.py``). A field CRIU adds later
is skipped when read until it is added here, and that test fails as soon as
pycriu's descriptors have it.
"""

from __future__ import annotations

from migrate.criu_rpc._wire import (
    BOOL,
    INT32,
    STRING,
    UINT32,
    UINT64,
    Message,
    optional,
    repeated,
    required,
)

__all__ = [
    "criu_req_type", "criu_cg_mode", "criu_network_lock_method", "criu_pre_dump_mode",
    "NOTIFY", "criu_page_server_info", "criu_veth_pair", "ext_mount_map", "join_namespace",
    "inherit_fd", "cgroup_root", "unix_sk", "criu_opts", "criu_dump_resp", "criu_restore_resp",
    "criu_notify", "criu_features", "criu_req", "criu_resp", "criu_version",
    "mnt_entry", "SysctlType", "sysctl_entry", "netns_id", "netns_entry", "pstree_entry",
    "task_kobj_ids_entry", "lsmtype", "plugins_entry", "inventory_entry",
    "dump_stats_entry", "restore_stats_entry", "stats_entry", "pagemap_head", "pagemap_entry",
]

# -- enums (rpc.proto) ----------------------------------------------------------

criu_req_type = {
    "EMPTY": 0, "DUMP": 1, "RESTORE": 2, "CHECK": 3, "PRE_DUMP": 4, "PAGE_SERVER": 5,
    "NOTIFY": 6, "CPUINFO_DUMP": 7, "CPUINFO_CHECK": 8, "FEATURE_CHECK": 9, "VERSION": 10,
    "WAIT_PID": 11, "PAGE_SERVER_CHLD": 12, "SINGLE_PRE_DUMP": 13,
}
NOTIFY = criu_req_type["NOTIFY"]

criu_cg_mode = {"IGNORE": 0, "CG_NONE": 1, "PROPS": 2, "SOFT": 3, "FULL": 4, "STRICT": 5,
                "DEFAULT": 6}
criu_network_lock_method = {"IPTABLES": 1, "NFTABLES": 2, "SKIP": 3}
criu_pre_dump_mode = {"SPLICE": 1, "VM_READ": 2}


# -- rpc.proto --------------------------------------------------------------------

class criu_page_server_info(Message):
    FIELDS = (
        optional(1, "address", STRING),
        optional(2, "port", INT32),
        optional(3, "pid", INT32),
        optional(4, "fd", INT32),
    )


class criu_veth_pair(Message):
    FIELDS = (
        required(1, "if_in", STRING),
        required(2, "if_out", STRING),
    )


class ext_mount_map(Message):
    FIELDS = (
        required(1, "key", STRING),
        required(2, "val", STRING),
    )


class join_namespace(Message):
    FIELDS = (
        required(1, "ns", STRING),
        required(2, "ns_file", STRING),
        optional(3, "extra_opt", STRING),
    )


class inherit_fd(Message):
    FIELDS = (
        required(1, "key", STRING),
        required(2, "fd", INT32),
    )


class cgroup_root(Message):
    FIELDS = (
        optional(1, "ctrl", STRING),
        required(2, "path", STRING),
    )


class unix_sk(Message):
    FIELDS = (
        required(1, "inode", UINT32),
    )


class criu_opts(Message):
    FIELDS = (
        required(1, "images_dir_fd", INT32, default=-1),
        optional(68, "images_dir", STRING),
        optional(2, "pid", INT32),
        optional(3, "leave_running", BOOL),
        optional(4, "ext_unix_sk", BOOL),
        optional(5, "tcp_established", BOOL),
        optional(6, "evasive_devices", BOOL),
        optional(7, "shell_job", BOOL),
        optional(8, "file_locks", BOOL),
        optional(9, "log_level", INT32, default=2),
        optional(10, "log_file", STRING),
        optional(11, "ps", criu_page_server_info),
        optional(12, "notify_scripts", BOOL),
        optional(13, "root", STRING),
        optional(14, "parent_img", STRING),
        optional(15, "track_mem", BOOL),
        optional(16, "auto_dedup", BOOL),
        optional(17, "work_dir_fd", INT32),
        optional(18, "link_remap", BOOL),
        repeated(19, "veths", criu_veth_pair),
        optional(20, "cpu_cap", UINT32, default=0xFFFFFFFF),
        optional(21, "force_irmap", BOOL),
        repeated(22, "exec_cmd", STRING),
        repeated(23, "ext_mnt", ext_mount_map),
        optional(24, "manage_cgroups", BOOL),
        repeated(25, "cg_root", cgroup_root),
        optional(26, "rst_sibling", BOOL),
        repeated(27, "inherit_fd", inherit_fd),
        optional(28, "auto_ext_mnt", BOOL),
        optional(29, "ext_sharing", BOOL),
        optional(30, "ext_masters", BOOL),
        repeated(31, "skip_mnt", STRING),
        repeated(32, "enable_fs", STRING),
        repeated(33, "unix_sk_ino", unix_sk),
        optional(34, "manage_cgroups_mode", criu_cg_mode),
        optional(35, "ghost_limit", UINT32, default=1 << 20),
        repeated(36, "irmap_scan_paths", STRING),
        repeated(37, "external", STRING),
        optional(38, "empty_ns", UINT32),
        repeated(39, "join_ns", join_namespace),
        optional(41, "cgroup_props", STRING),
        optional(42, "cgroup_props_file", STRING),
        repeated(43, "cgroup_dump_controller", STRING),
        optional(44, "freeze_cgroup", STRING),
        optional(45, "timeout", UINT32),
        optional(46, "tcp_skip_in_flight", BOOL),
        optional(47, "weak_sysctls", BOOL),
        optional(48, "lazy_pages", BOOL),
        optional(49, "status_fd", INT32),
        optional(50, "orphan_pts_master", BOOL),
        optional(51, "config_file", STRING),
        optional(52, "tcp_close", BOOL),
        optional(53, "lsm_profile", STRING),
        optional(54, "tls_cacert", STRING),
        optional(55, "tls_cacrl", STRING),
        optional(56, "tls_cert", STRING),
        optional(57, "tls_key", STRING),
        optional(58, "tls", BOOL),
        optional(59, "tls_no_cn_verify", BOOL),
        optional(60, "cgroup_yard", STRING),
        optional(61, "pre_dump_mode", criu_pre_dump_mode, default=criu_pre_dump_mode["SPLICE"]),
        optional(62, "pidfd_store_sk", INT32),
        optional(63, "lsm_mount_context", STRING),
        optional(64, "network_lock", criu_network_lock_method,
                 default=criu_network_lock_method["IPTABLES"]),
        optional(65, "mntns_compat_mode", BOOL),
        optional(66, "skip_file_rwx_check", BOOL),
        optional(67, "unprivileged", BOOL),
        optional(69, "leave_stopped", BOOL),
        optional(70, "display_stats", BOOL),
        optional(71, "log_to_stderr", BOOL),
    )


class criu_dump_resp(Message):
    FIELDS = (
        optional(1, "restored", BOOL),
    )


class criu_restore_resp(Message):
    FIELDS = (
        required(1, "pid", INT32),
    )


class criu_notify(Message):
    FIELDS = (
        optional(1, "script", STRING),
        optional(2, "pid", INT32),
    )


class criu_features(Message):
    FIELDS = (
        optional(1, "mem_track", BOOL),
        optional(2, "lazy_pages", BOOL),
        optional(3, "pidfd_store", BOOL),
    )


class criu_req(Message):
    FIELDS = (
        required(1, "type", criu_req_type),
        optional(2, "opts", criu_opts),
        optional(3, "notify_success", BOOL),
        optional(4, "keep_open", BOOL),
        optional(5, "features", criu_features),
        optional(6, "pid", UINT32),
    )


class criu_version(Message):
    FIELDS = (
        required(1, "major_number", INT32),
        required(2, "minor_number", INT32),
        optional(3, "gitid", STRING),
        optional(4, "sublevel", INT32),
        optional(5, "extra", INT32),
        optional(6, "name", STRING),
    )


class criu_resp(Message):
    FIELDS = (
        required(1, "type", criu_req_type),
        required(2, "success", BOOL),
        optional(3, "dump", criu_dump_resp),
        optional(4, "restore", criu_restore_resp),
        optional(5, "notify", criu_notify),
        optional(6, "ps", criu_page_server_info),
        optional(7, "cr_errno", INT32),
        optional(8, "features", criu_features),
        optional(9, "cr_errmsg", STRING),
        optional(10, "version", criu_version),
        optional(11, "status", INT32),
    )


# -- mnt.proto --------------------------------------------------------------------

class mnt_entry(Message):
    FIELDS = (
        required(1, "fstype", UINT32),
        required(2, "mnt_id", UINT32),
        required(3, "root_dev", UINT32),
        required(4, "parent_mnt_id", UINT32),
        required(5, "flags", UINT32),
        required(6, "root", STRING),
        required(7, "mountpoint", STRING),
        required(8, "source", STRING),
        required(9, "options", STRING),
        optional(10, "shared_id", UINT32),
        optional(11, "master_id", UINT32),
        optional(12, "with_plugin", BOOL),
        optional(13, "ext_mount", BOOL),
        optional(14, "fsname", STRING),
        optional(15, "internal_sharing", BOOL),
        optional(16, "deleted", BOOL),
        optional(17, "sb_flags", UINT32),
        optional(18, "ext_key", STRING),
    )


# -- sysctl.proto, netdev.proto -------------------------------------------------

SysctlType = {"CTL_STR": 5, "CTL_32": 6}


class sysctl_entry(Message):
    FIELDS = (
        required(1, "type", SysctlType),
        optional(2, "iarg", INT32),
        optional(3, "sarg", STRING),
    )


class netns_id(Message):
    FIELDS = (
        required(1, "target_ns_id", UINT32),
        required(2, "netnsid_value", INT32),
    )


class netns_entry(Message):
    FIELDS = (
        repeated(1, "def_conf", INT32),
        repeated(2, "all_conf", INT32),
        repeated(3, "def_conf4", sysctl_entry),
        repeated(4, "all_conf4", sysctl_entry),
        repeated(5, "def_conf6", sysctl_entry),
        repeated(6, "all_conf6", sysctl_entry),
        repeated(7, "nsids", netns_id),
        optional(8, "ext_key", STRING),
        repeated(9, "unix_conf", sysctl_entry),
        repeated(10, "ipv4_sysctl", sysctl_entry),
    )


# -- pstree.proto, core.proto, inventory.proto ----------------------------------

class pstree_entry(Message):
    FIELDS = (
        required(1, "pid", UINT32),
        required(2, "ppid", UINT32),
        required(3, "pgid", UINT32),
        required(4, "sid", UINT32),
        repeated(5, "threads", UINT32),
    )


class task_kobj_ids_entry(Message):
    FIELDS = (
        required(1, "vm_id", UINT32),
        required(2, "files_id", UINT32),
        required(3, "fs_id", UINT32),
        required(4, "sighand_id", UINT32),
        optional(5, "pid_ns_id", UINT32),
        optional(6, "net_ns_id", UINT32),
        optional(7, "ipc_ns_id", UINT32),
        optional(8, "uts_ns_id", UINT32),
        optional(9, "mnt_ns_id", UINT32),
        optional(10, "user_ns_id", UINT32),
        optional(11, "cgroup_ns_id", UINT32),
        optional(12, "time_ns_id", UINT32),
    )


lsmtype = {"NO_LSM": 0, "SELINUX": 1, "APPARMOR": 2}


class plugins_entry(Message):
    FIELDS = (
        repeated(12, "plugins", STRING),
    )


class inventory_entry(Message):
    FIELDS = (
        required(1, "img_version", UINT32),
        optional(2, "fdinfo_per_id", BOOL),
        optional(3, "root_ids", task_kobj_ids_entry),
        optional(4, "ns_per_id", BOOL),
        optional(5, "root_cg_set", UINT32),
        optional(6, "lsmtype", lsmtype),
        optional(8, "dump_uptime", UINT64),
        optional(9, "pre_dump_mode", UINT32),
        optional(10, "tcp_close", BOOL),
        optional(11, "network_lock_method", UINT32),
        optional(12, "plugins_entry", plugins_entry),
        optional(13, "dump_criu_run_id", STRING),
        optional(14, "allow_uprobes", BOOL),
    )


# -- stats.proto ------------------------------------------------------------------

class dump_stats_entry(Message):
    FIELDS = (
        required(1, "freezing_time", UINT32),
        required(2, "frozen_time", UINT32),
        required(3, "memdump_time", UINT32),
        required(4, "memwrite_time", UINT32),
        required(5, "pages_scanned", UINT64),
        required(6, "pages_skipped_parent", UINT64),
        required(7, "pages_written", UINT64),
        optional(8, "irmap_resolve", UINT32),
        required(9, "pages_lazy", UINT64),
        optional(10, "page_pipes", UINT64),
        optional(11, "page_pipe_bufs", UINT64),
        optional(12, "shpages_scanned", UINT64),
        optional(13, "shpages_skipped_parent", UINT64),
        optional(14, "shpages_written", UINT64),
    )


class restore_stats_entry(Message):
    FIELDS = (
        required(1, "pages_compared", UINT64),
        required(2, "pages_skipped_cow", UINT64),
        required(3, "forking_time", UINT32),
        required(4, "restore_time", UINT32),
        optional(5, "pages_restored", UINT64),
    )


class stats_entry(Message):
    FIELDS = (
        optional(1, "dump", dump_stats_entry),
        optional(2, "restore", restore_stats_entry),
    )


# -- pagemap.proto ----------------------------------------------------------------

class pagemap_head(Message):
    FIELDS = (
        required(1, "pages_id", UINT32),
    )


class pagemap_entry(Message):
    FIELDS = (
        required(1, "vaddr", UINT64),
        required(2, "compat_nr_pages", UINT32),
        optional(3, "in_parent", BOOL),
        optional(4, "flags", UINT32),
        optional(5, "nr_pages", UINT64),
    )
