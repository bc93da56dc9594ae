"""CPUINFO_DUMP and CPUINFO_CHECK over swrk (fake_swrk.py), no CRIU."""

import pytest

from migrate.criu_rpc import Client, CriuOptions, Session, SwrkOptions
from migrate.errors import UsageError

pytest.importorskip("pycriu")


def test_cpuinfo_requests_keep_the_session_open(tmp_path, fake_criu):
    from pycriu import rpc_pb2 as rpc

    fake = fake_criu("keep_open")
    with Session(SwrkOptions(criu=str(fake.path))) as s:
        s.cpuinfo_dump(CriuOptions(images_dir=str(tmp_path)))
        s.cpuinfo_check(CriuOptions(images_dir=str(tmp_path)))
        assert s.state == "open"
    reqs = fake.requests()
    assert [r.type for r in reqs] == [rpc.CPUINFO_DUMP, rpc.CPUINFO_CHECK]
    assert all(r.keep_open and r.opts.images_dir_fd >= 0 for r in reqs)


def test_client_cpuinfo_needs_an_images_dir(tmp_path, fake_criu):
    client = Client(SwrkOptions(criu=str(fake_criu("keep_open").path)))
    client.cpuinfo_check(CriuOptions(images_dir=str(tmp_path)))
    with pytest.raises(UsageError, match="cpuinfo-dump: images_dir is required"):
        client.cpuinfo_dump(CriuOptions())
