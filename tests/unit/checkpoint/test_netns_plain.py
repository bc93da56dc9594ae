"""Which network namespaces need not be dumped (checked from /proc)."""

import pytest

from migrate.checkpoint.netns import why_netns_not_plain

CONFIG = {"linux": {"namespaces": [{"type": "network"}, {"type": "pid"}]}}
DEV = ("Inter-|   Receive\n face |bytes\n"
       "    lo:       0       0    0    0    0     0          0         0        0\n")
TRIE = ("Local:\n  +-- 127.0.0.0/8 2 0 2\n     +-- 127.0.0.0/31 1 0 0\n"
        "        |-- 127.0.0.1\n           /32 host LOCAL\n")


def _proc(tmp_path, **files):
    net = tmp_path / "7" / "net"
    net.mkdir(parents=True)
    base = {"dev": DEV, "route": "Iface\tDestination\n", "fib_trie": TRIE,
            "if_inet6": "00000000000000000000000000000001 01 80 10 80       lo\n",
            "ipv6_route": "00000000000000000000000000000001 80 0 00 0 00000000 2 0 80200001 lo\n"}
    base.update(files)
    for name, text in base.items():
        (net / name).write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("files,config,why", [
    ({}, {"linux": {"namespaces": [{"type": "network", "path": "/run/netns/x"}]}}, "not the container's own"),
    ({}, {"linux": {"namespaces": [{"type": "network"}], "sysctl": {"net.ipv4.ip_forward": "1"}}}, "sysctl"),
    ({"dev": DEV + "  eth0: 0 0\n"}, CONFIG, "eth0"),
    ({"route": "Iface\tDestination\neth0\t00000000\n"}, CONFIG, "IPv4 routes"),
    ({"fib_trie": TRIE + "        |-- 127.0.0.2\n           /32 host LOCAL\n"}, CONFIG, "IPv4 addresses"),
    ({"if_inet6": "fe800000000000000000000000000001 02 40 20 80 lo\n"}, CONFIG, "IPv6 addresses"),
    ({"ipv6_route": "20010db8000000000000000000000000 40 0 00 0 00000000 1 0 1 eth0\n"}, CONFIG, "IPv6 routes"),
    ({"ip_tables_names": "filter\n"}, CONFIG, "iptables"),
    ({}, {**CONFIG, "process": {"capabilities": {"bounding": ["CAP_NET_ADMIN"]}}}, "CAP_NET_ADMIN"),
])
def test_what_makes_a_namespace_worth_dumping(tmp_path, files, config, why):
    assert why in why_netns_not_plain(7, config, proc_root=_proc(tmp_path, **files))
