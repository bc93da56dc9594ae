"""Two network-namespace "hosts" joined by a veth pair, for migration tests.

    with NetnsHosts() as hosts:          # hosts.a = 10.250.0.1, hosts.b = 10.250.0.2
        with hosts.b.entered():          # sockets made here live in b
            listener = socket.create_server((hosts.b.address, 0))
        hosts.a.run(["ip", "addr"])      # a command inside a
        hosts.b.link_down()              # cut the link (failure injection)

Everything is made with pyroute2 (netlink) and lives only inside the two
namespaces: the 10.250.0.0/24 addresses never appear on the machine's own
interfaces, so nothing here can send traffic anywhere but between the two.
Namespaces are named ``migtest-<pid>-<n>{a,b}``; ``close()`` removes them
(and with them the veth), and a new set first removes those left behind by
test processes that died.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import subprocess
from collections.abc import Iterator

PREFIX = "migtest-"
NETWORK = "10.250.0"
PREFIXLEN = 24
CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NetnsHost:
    """One end: a network namespace with ``lo`` and one veth, ``address``."""

    def __init__(self, name: str, ifname: str, address: str) -> None:
        self.name = name
        self.ifname = ifname
        self.address = address

    def __repr__(self) -> str:
        return f"NetnsHost({self.name}, {self.address})"

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], *, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        """Run a command inside this host (bounded by ``timeout``)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.argv(argv), timeout=timeout, **kw)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start a command inside this host; the caller waits for or kills it."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(argv), **kw)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Switch the calling thread into this host's network namespace for
        the block (sockets created in it stay in it), then back. setns(2)
        with CLONE_NEWNET is per thread, so other threads are unaffected."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    def _set_state(self, state: str) -> None:
        from pyroute2 import IPRoute

        with self.entered(), IPRoute() as ip:
            (index,) = ip.link_lookup(ifname=self.ifname)
            ip.link("set", index=index, state=state)

    def link_down(self) -> None:
        """Take this host's veth down: the other end loses carrier too, and
        packets between the two hosts are dropped from now on."""
        self._set_state("down")

    def link_up(self) -> None:
        self._set_state("up")


class NetnsHosts:
    """Hosts ``a`` (10.250.0.1) and ``b`` (10.250.0.2), one veth between them."""

    def __init__(self) -> None:
        tag = f"{os.getpid()}-{next(_counter)}"
        self.a = NetnsHost(f"{PREFIX}{tag}a", "veth-a", f"{NETWORK}.1")
        self.b = NetnsHost(f"{PREFIX}{tag}b", "veth-b", f"{NETWORK}.2")
        self._created: list[str] = []

    def __enter__(self) -> "NetnsHosts":
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        from pyroute2 import IPRoute, netns

        remove_stale()
        for host in (self.a, self.b):
            netns.create(host.name)
            self._created.append(host.name)
        # The veth is made inside a, its peer end moved to b: it never exists
        # in the machine's own namespace.
        with self.a.entered(), IPRoute() as ip:
            ip.link("add", ifname=self.a.ifname, kind="veth", peer={"ifname": self.b.ifname})
            (peer,) = ip.link_lookup(ifname=self.b.ifname)
            ip.link("set", index=peer, net_ns_fd=self.b.name)
        for host in (self.a, self.b):
            with host.entered(), IPRoute() as ip:
                (lo,) = ip.link_lookup(ifname="lo")
                ip.link("set", index=lo, state="up")
                (index,) = ip.link_lookup(ifname=host.ifname)
                ip.addr("add", index=index, address=host.address, prefixlen=PREFIXLEN)
                ip.link("set", index=index, state="up")

    def close(self) -> None:
        """Remove both namespaces (their veth ends go with them); idempotent."""
        from pyroute2 import netns

        while self._created:
            name = self._created.pop()
            with contextlib.suppress(OSError):
                netns.remove(name)


def remove_stale() -> None:
    """Remove test namespaces whose creating process is gone."""
    from pyroute2 import netns

    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return
    for name in names:
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(OSError):
                netns.remove(name)
