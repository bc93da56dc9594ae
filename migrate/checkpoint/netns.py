"""Small network chores inside a container's network namespace."""

from __future__ import annotations

import os

from migrate._light import in_background, suppress

__all__ = ["set_lo_up", "why_netns_not_plain", "start_netns_check", "nft_table_count"]

def set_lo_up(netns_path: str) -> None:
    """Bring ``lo`` up in the namespace at ``netns_path``.

    setns(2) into a network namespace applies to the calling thread only,
    so a thread of ours does it and ends; we never change the namespace of
    the thread that goes on. A thread, not a fork: restore calls this while
    CRIU waits for its setup-namespaces answer, and forking this process
    (measured with protobuf loaded) and running the child cost 3-8 ms of that wait.
    Best effort: a failure here must not undo a successful restore.
    """
    def bring_up() -> None:
        try:
            from migrate.runtime.loopback import bring_lo_up

            _join_netns(netns_path)
            bring_lo_up()
        except Exception:  # noqa: BLE001 - best effort, as the docstring says
            pass

    in_background(bring_up)()


_CLONE_NEWNET = 0x40000000


def _join_netns(netns_path: str) -> None:
    """setns(2) of the calling thread (only) into the network namespace at
    ``netns_path``; only threads that end right after may call it."""
    from migrate.runtime.syscalls import LinuxSyscalls

    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        LinuxSyscalls().setns(fd, _CLONE_NEWNET)
    finally:
        os.close(fd)


# What CRIU's iptables network lock adds inside the container's network
# namespace (criu/net.c), removed the way CRIU's own unlock does.
_IPTABLES_UNLOCK = ("*filter\n:CRIU - [0:0]\n-D INPUT -j CRIU\n-D OUTPUT -j CRIU\n"
                    "-F CRIU\n-X CRIU\nCOMMIT\n")


def unlock_network(pid: int) -> None:
    """Undo CRIU's network lock in the network namespace of ``pid`` after
    CRIU was stopped before it could unlock itself. Best effort, silent
    when there is nothing to undo (the lock is only taken for a tree with a
    network namespace of its own)."""
    import subprocess

    ns = f"/proc/{pid}/ns/net"
    if not os.path.exists(ns) or os.readlink(ns) == os.readlink("/proc/self/ns/net"):
        return
    for argv, data in ((["iptables-restore", "--noflush"], _IPTABLES_UNLOCK),
                       (["ip6tables-restore", "--noflush"], _IPTABLES_UNLOCK),
                       (["nft", "delete", "table", "inet", "CRIU"], None)):
        try:
            subprocess.run(["nsenter", f"--net={ns}", *argv], input=data, text=True,
                           capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass


# nfnetlink (linux/netfilter/nfnetlink.h, nf_tables.h, netlink.h).
_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_NEWTABLE, _NFT_MSG_GETTABLE = 0, 1
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3


def _netlink_socket_in(netns_path: str, protocol: int):
    """A netlink socket of the network namespace at ``netns_path``: made by
    a thread that joins the namespace and ends (a socket stays in the
    namespace it was made in; no other thread changes namespace)."""
    import _socket

    def make():
        _join_netns(netns_path)
        return _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, protocol)

    try:
        return in_background(make)()
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - one error type for the caller
        raise OSError(str(err)) from err


def nft_table_count(netns_path: str, *, timeout: float = 5.0) -> int:
    """How many nftables tables (any family; iptables-nft's included) the
    network namespace at ``netns_path`` holds: what ``nft list ruleset``
    would list is empty exactly when this is 0 (chains, rules, sets and
    flowtables all live in tables). Asked over netlink, not by running
    ``nsenter nft`` (two programs, 10-40 ms of every checkpoint).
    Raises OSError (no nf_tables, no permission to join the namespace)."""
    import sys

    order = sys.byteorder
    sock = _netlink_socket_in(netns_path, _NETLINK_NETFILTER)
    try:
        sock.settimeout(timeout)
        seq = 1
        # nlmsghdr (len, type, flags, seq, pid) + nfgenmsg (family AF_UNSPEC, version 0, res_id 0)
        req = (b"".join((
            (20).to_bytes(4, order),
            (_NFNL_SUBSYS_NFTABLES << 8 | _NFT_MSG_GETTABLE).to_bytes(2, order),
            (_NLM_F_REQUEST | _NLM_F_DUMP).to_bytes(2, order),
            seq.to_bytes(4, order), bytes(4))) + bytes(4))
        sock.send(req)
        count = 0
        while True:
            data = sock.recv(1 << 16)
            if not data:
                raise OSError("nftables netlink: connection closed")
            pos = 0
            while pos + 16 <= len(data):
                length = int.from_bytes(data[pos:pos + 4], order)
                kind = int.from_bytes(data[pos + 4:pos + 6], order)
                if length < 16:
                    raise OSError("nftables netlink: malformed reply")
                if kind == _NLMSG_DONE:
                    return count
                if kind == _NLMSG_ERROR:
                    code = -int.from_bytes(data[pos + 16:pos + 20], order, signed=True)
                    if code:
                        raise OSError(code, f"nftables netlink: {os.strerror(code)}")
                elif kind == (_NFNL_SUBSYS_NFTABLES << 8 | _NFT_MSG_NEWTABLE):
                    count += 1
                pos += (length + 3) & ~3
    finally:
        sock.close()


def start_netns_check(pid: int, config: dict, *, proc_root: str = "/proc"):
    """``why_netns_not_plain`` started in a thread; returns a function that
    waits for its answer (re-raising what it raised). The thread spends its
    time in reads of /proc and netlink (no GIL held), so the caller's own
    work goes on meanwhile."""
    return in_background(lambda: why_netns_not_plain(pid, config, proc_root=proc_root))


def why_netns_not_plain(pid: int, config: dict, *, proc_root: str = "/proc",
                        nft: str | None = None) -> str | None:
    """None when process ``pid``'s network namespace is private and holds
    nothing but a loopback device that a fresh namespace recreates (lo, its
    127.0.0.1 and ::1, no routes, no firewall rules, no net.* sysctls in
    ``config``); else why not.

    Such a namespace need not be dumped and restored: CRIU's ``empty_ns``
    skips both (about 0.3 s on each side here: ip addr/route/rule and
    iptables/nft save and restore run as programs while the container is
    frozen), and the restore brings lo up (``set_lo_up``). Read before the
    freeze, from /proc and nftables' netlink interface in the namespace
    (``nft_table_count``); ``nft list ruleset`` run there if that fails.
    """
    linux = config.get("linux") or {}
    ns = next((n for n in linux.get("namespaces") or [] if n.get("type") == "network"), None)
    if ns is None or ns.get("path"):
        return "the network namespace is not the container's own"
    if any(k.startswith("net.") for k in linux.get("sysctl") or {}):
        return "net.* sysctls are set in the namespace"
    caps = ((config.get("process") or {}).get("capabilities") or {}).get("bounding") or ()
    if "CAP_NET_ADMIN" in caps:
        # It may have changed what is not read here (net.* sysctls, lo's
        # settings) and may change anything until the freeze.
        return "the container may configure its network (CAP_NET_ADMIN)"
    net = f"{proc_root}/{pid}/net"
    try:
        with open(f"{net}/dev") as f:
            devices = [line.split(":")[0].strip() for line in f.readlines()[2:]]
        if devices != ["lo"]:
            return f"it has devices besides lo ({', '.join(d for d in devices if d != 'lo')})"
        with open(f"{net}/route") as f:
            if len(f.readlines()) > 1:
                return "it has IPv4 routes"
        local, last = set(), ""
        with open(f"{net}/fib_trie") as f:
            for line in f:       # "|-- 127.0.0.1" then "/32 host LOCAL" under it
                words = line.split()
                if words[:1] == ["|--"]:
                    last = words[1]
                elif "/32 host LOCAL" in line:
                    local.add(last)
        if local - {"127.0.0.1"}:
            return "it has IPv4 addresses besides 127.0.0.1"
        with open(f"{net}/if_inet6") as f:
            if any(line.split()[0] != "0" * 31 + "1" for line in f if line.strip()):
                return "it has IPv6 addresses besides ::1"
        with open(f"{net}/ipv6_route") as f:
            if any(line.split()[-1] != "lo" for line in f if line.strip()):
                return "it has IPv6 routes"
        for name in ("ip_tables_names", "ip6_tables_names"):
            with suppress(FileNotFoundError), open(f"{net}/{name}") as f:
                if f.read().strip():
                    return "it has iptables (legacy) tables"
    except (OSError, IndexError) as err:
        return f"cannot read {net}: {err}"
    try:
        tables = nft_table_count(f"{proc_root}/{pid}/ns/net")
    except OSError:
        tables = None      # nft itself may say more (and fail the same way)
    if tables is not None:
        return "it has nftables (or iptables-nft) tables" if tables else None
    import shutil
    import subprocess

    nft = nft or shutil.which("nft")
    if nft is None:
        return "nft is not installed to check its firewall rules"
    try:
        out = subprocess.run(["nsenter", f"--net={proc_root}/{pid}/ns/net", nft, "list", "ruleset"],
                             capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"cannot list its nftables ruleset: {err}"
    if out.returncode != 0:
        return f"cannot list its nftables ruleset: {out.stderr.strip()[:200]}"
    if out.stdout.strip():
        return "it has nftables (or iptables-nft) tables"
    return None
