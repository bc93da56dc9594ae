"""The destination agent is long-lived: it reaps the containers it restored
(they are its children, CRIU's rst_sibling) and keeps no images of
migrations that are over. Two netns hosts, as in test_migration.py."""

import os

import pytest

from runtime_helpers import wait_for
from test_migration import _listdir, pair  # noqa: F401  (pair: the same two-host fixture)

pytestmark = pytest.mark.requires("root", "busybox", "criu", "iptables", "netns")

SMALL = ("ctrhelper memhold 4 /tmp/mem & "
         "i=0; while true; do i=$((i+1)); echo $i >> /tmp/log; sleep 0.05; done")


def _children(pid: int) -> dict[int, str]:
    """The agent's children and their states (R, S, Z ...)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = f.read().split()
        except FileNotFoundError:
            continue        # a thread of the agent that ended meanwhile
        for child in children:
            try:
                with open(f"/proc/{child}/stat", "rb") as st:
                    out[int(child)] = st.read().rsplit(b")", 1)[1].split()[0].decode()
            except FileNotFoundError:
                pass
    return out


def test_five_migrations_leave_no_zombie_and_no_images(pair, cid):
    pair.start_agent()
    agent = pair.agent.pid       # nsenter execs the agent: same pid
    ids = [f"{cid}-{i}" for i in range(5)]
    for c in ids:
        pair.run_container(c, script=SMALL)
        code, out, _ = pair.migrate(c, "--strategy", "stop-and-copy")
        assert code == 0, out
        assert pair.b.status(c) == "running"
    pids = {pair.b.state(c)["pid"] for c in ids}
    assert pids <= set(_children(agent)), "restored containers are the agent's children"
    for c in ids:                # the containers exit
        pair.b("kill", c, "KILL").check()
    wait_for(lambda: not pids & set(_children(agent)), timeout=10,
             what="the agent to reap its containers")
    zombies = {p for p, state in _children(agent).items() if state == "Z"}
    assert not zombies, f"zombies of the agent: {zombies}"
    # Committed migrations keep no images (the restore log and stdio stay).
    workdirs = [os.path.join(pair.work, n) for n in _listdir(pair.work)]
    assert len(workdirs) == 5
    for w in workdirs:
        assert not os.path.exists(os.path.join(w, "images")), os.listdir(w)
        assert os.path.exists(os.path.join(w, "container.log"))
    for c in ids:
        pair.b("delete", c).check()
