"""Which network lock a migration's dump asks CRIU for."""

from migrate.criu_rpc import NetworkLock
from migrate.migration.pipeline import network_lock_for

NFT = ({"nftables_lock": True}, {"nftables_lock": True})
HALF = ({"nftables_lock": True}, {})


def test_a_netns_recreated_empty_without_tcp_is_not_locked():
    assert network_lock_for(NFT, frozenset({"net"}), False) is NetworkLock.SKIP
    assert network_lock_for(HALF, frozenset({"net"}), False) is NetworkLock.SKIP


def test_tcp_connections_keep_the_lock():
    assert network_lock_for(NFT, frozenset({"net"}), True) is NetworkLock.NFTABLES
    assert network_lock_for(HALF, frozenset({"net"}), True) is None


def test_a_dumped_netns_keeps_the_lock():
    assert network_lock_for(NFT, frozenset(), False) is NetworkLock.NFTABLES
    assert network_lock_for(HALF, frozenset(), False) is None     # CRIU's default, iptables
