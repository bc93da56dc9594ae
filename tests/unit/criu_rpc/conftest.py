import os
import struct
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


class FakeCriu:
    """A ``criu`` executable that runs fake_swrk.py with a scenario and
    records what the client sent."""

    def __init__(self, tmp_path: Path, scenario: str) -> None:
        self.record = tmp_path / f"{scenario}.record"
        self.path = tmp_path / f"criu-{scenario}"
        self.path.write_text(
            "#!/bin/sh\n"
            f'exec "{sys.executable}" "{HERE / "fake_swrk.py"}" {scenario} "{self.record}" "$@"\n')
        self.path.chmod(0o755)

    def requests(self) -> list:
        from pycriu import rpc_pb2 as rpc

        data = self.record.read_bytes() if self.record.exists() else b""
        reqs = []
        while data:
            (size,) = struct.unpack("I", data[:4])
            reqs.append(rpc.criu_req.FromString(data[4:4 + size]))
            data = data[4 + size:]
        return reqs


@pytest.fixture
def fake_criu(tmp_path):
    return lambda scenario: FakeCriu(tmp_path, scenario)


def no_leftover(pid: int) -> bool:
    """True when ``pid`` is gone (reaped): not even a zombie is left."""
    return not os.path.exists(f"/proc/{pid}")
