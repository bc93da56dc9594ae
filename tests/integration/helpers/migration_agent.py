"""A migration agent in its own process (so a test can kill it): fake CRIU
facts and a fake restore, listening on ADDR:0; prints "listening PORT".

    migration_agent.py ADDR TOKEN ROOT WORK_ROOT
"""

import sys

from migrate.migration import Agent
from migrate.testing import FakeHostFacts, FakeRestore


def main(addr: str, token: str, root: str, work_root: str) -> None:
    agent = Agent(addr, 0, token, root, work_root=work_root, restore_fn=FakeRestore(),
                  facts=FakeHostFacts())
    print(f"listening {agent.address[1]}", flush=True)
    agent.serve()


if __name__ == "__main__":
    main(*sys.argv[1:5])
