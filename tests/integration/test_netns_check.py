"""The plain-netns check of `checkpoint` (checkpoint/netns.py) against a
real network namespace: nftables tables counted over netlink agree with
what `nft list ruleset` shows, iptables-nft's included."""

import os
import subprocess
import uuid

import pytest

from migrate.checkpoint.netns import nft_table_count, why_netns_not_plain

pytestmark = pytest.mark.requires("root", "netns", "nft")

CONFIG = {"linux": {"namespaces": [{"type": "network"}]}}


@pytest.fixture
def holder():
    """A process of our own in a fresh network namespace (lo only, down)."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "600"], stdin=subprocess.DEVNULL)
    try:
        ns = f"/proc/{proc.pid}/ns/net"
        for _ in range(200):       # unshare has run once its netns differs from ours
            if os.readlink(ns) != os.readlink("/proc/self/ns/net"):
                break
            subprocess.run(["sleep", "0.01"], check=True)
        else:
            pytest.fail("unshare --net did not move into a new network namespace")
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _nft(pid: int, *args: str) -> str:
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "nft", *args], check=True,
                          capture_output=True, text=True, timeout=30).stdout


def test_tables_counted_over_netlink_match_nft(holder):
    ns = f"/proc/{holder}/ns/net"
    assert nft_table_count(ns) == 0 and _nft(holder, "list", "ruleset").strip() == ""
    assert why_netns_not_plain(holder, CONFIG) is None
    name = f"t{uuid.uuid4().hex[:8]}"
    _nft(holder, "add", "table", "inet", name)
    _nft(holder, "add", "table", "ip6", name)
    assert nft_table_count(ns) == 2
    assert "nftables" in why_netns_not_plain(holder, CONFIG)
    _nft(holder, "flush", "ruleset")
    assert nft_table_count(ns) == 0 and why_netns_not_plain(holder, CONFIG) is None
    # Only our thread that asked joined the namespace, and it is gone.
    assert os.readlink(f"/proc/self/task/{os.getpid()}/ns/net") != os.readlink(ns)


def test_an_empty_chain_is_enough_to_dump(holder):
    name = f"t{uuid.uuid4().hex[:8]}"
    _nft(holder, "add", "table", "ip", name)
    _nft(holder, "add", "chain", "ip", name, "c")
    assert nft_table_count(f"/proc/{holder}/ns/net") == 1
    assert "nftables" in why_netns_not_plain(holder, CONFIG)


def test_a_namespace_that_cannot_be_joined_is_an_error():
    with pytest.raises(OSError):
        nft_table_count("/nonexistent/ns/net")
