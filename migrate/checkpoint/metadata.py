"""What a checkpoint keeps beside CRIU's images, for restore and inspect.

``descriptors.json`` is runc's file (a list: what fds 0-2 of the init
were), so runc can restore our checkpoints and we can restore runc's.
``migrate.json`` adds what restore needs to remap the container's
external resources.
"""

from __future__ import annotations

import os

from migrate._light import dumps, loads
from migrate._record import asdict, record
from migrate.checkpoint.externals import Descriptor, ExternalMount
from migrate.errors import NotFoundError, UsageError

__all__ = ["CheckpointMeta", "save_meta", "load_meta", "stdio_roles", "META_FILE",
           "DESCRIPTORS_FILE"]

META_FILE = "migrate.json"
DESCRIPTORS_FILE = "descriptors.json"
META_VERSION = 1


@record
class CheckpointMeta:
    container_id: str
    bundle: str
    mounts: tuple[ExternalMount, ...] = ()
    descriptors: tuple[Descriptor, ...] = ()
    joined_namespaces: tuple[str, ...] = ()       # OCI types joined by path
    external_keys: dict = None                     # OCI type -> CRIU inherit-fd key
    terminal: bool = False
    created: str = ""
    pre_dump: bool = False
    lazy_pages: bool = False
    # CRIU's names of the namespaces dumped empty ("net": a network namespace
    # holding only lo, recreated on restore): the restore must ask the same.
    empty_ns: tuple[str, ...] = ()


def save_meta(images_dir: str, meta: CheckpointMeta) -> None:
    from migrate.runtime.state import atomic_write

    data = asdict(meta)
    data["version"] = META_VERSION
    # Not fsynced: CRIU does not sync the images beside them either, and a
    # sync here cost 5-10 ms of every checkpoint. One line, not indented:
    # _light's encoder, not json (whose import is ~1-2 ms of every checkpoint).
    atomic_write(os.path.join(images_dir, META_FILE),
                 dumps(data).encode(), 0o600, durable=False)
    atomic_write(os.path.join(images_dir, DESCRIPTORS_FILE),
                 dumps([d.path for d in stdio_roles(meta)]).encode(), 0o600, durable=False)


def stdio_roles(meta: CheckpointMeta) -> list[Descriptor]:
    """What the init was handed as fd 0, 1, 2 (the first descriptor of each
    fd: any after it is a file found on that fd at checkpoint time)."""
    out, seen = [], set()
    for d in meta.descriptors:
        if d.fd not in seen:
            seen.add(d.fd)
            out.append(d)
    return out


def load_meta(images_dir: str) -> CheckpointMeta:
    """Raises NotFoundError (no checkpoint there) or UsageError (unreadable)."""
    path = os.path.join(images_dir, META_FILE)
    try:
        with open(path, "rb") as f:
            data = loads(f.read())
    except FileNotFoundError:
        desc = os.path.join(images_dir, DESCRIPTORS_FILE)
        if os.path.exists(desc):
            return _from_runc(images_dir, desc)
        if not os.path.isdir(images_dir):
            raise NotFoundError(f"checkpoint {images_dir} does not exist") from None
        raise NotFoundError(f"{images_dir} holds no container checkpoint "
                            f"({META_FILE} or {DESCRIPTORS_FILE} missing)") from None
    except ValueError as err:
        raise UsageError(f"{path} is corrupt: {err}") from None
    _check_descriptors(images_dir)
    if data.get("version") != META_VERSION:
        raise UsageError(f"{path}: unsupported checkpoint metadata version {data.get('version')!r}")
    try:
        return CheckpointMeta(
            container_id=data["container_id"], bundle=data["bundle"],
            mounts=tuple(ExternalMount(**m) for m in data.get("mounts", ())),
            descriptors=tuple(Descriptor(**d) for d in data.get("descriptors", ())),
            joined_namespaces=tuple(data.get("joined_namespaces", ())),
            external_keys=dict(data.get("external_keys") or {}),
            terminal=bool(data.get("terminal")), created=data.get("created", ""),
            pre_dump=bool(data.get("pre_dump")), lazy_pages=bool(data.get("lazy_pages")),
            empty_ns=tuple(ns for ns in data.get("empty_ns") or () if ns == "net"))
    except (KeyError, TypeError) as err:
        raise UsageError(f"{path} is corrupt: {err}") from None


def _check_descriptors(images_dir: str) -> list[str] | None:
    """descriptors.json, read and checked: a list of strings (what fds 0-2
    of the init were). None if it is missing. Raises UsageError."""
    desc = os.path.join(images_dir, DESCRIPTORS_FILE)
    try:
        with open(desc, "rb") as f:
            paths = loads(f.read())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as err:
        raise UsageError(f"{desc} is corrupt: {err}") from None
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise UsageError(f"{desc} is corrupt: expected a list of file names, got "
                         f"{dumps(paths)[:80]}")
    return paths


def _from_runc(images_dir: str, desc: str) -> CheckpointMeta:
    """A checkpoint written by runc: only its descriptors are known."""
    paths = _check_descriptors(images_dir)
    descriptors = tuple(Descriptor(fd=i, path=p, external=p if p.startswith("pipe:") else None)
                        for i, p in enumerate(paths))
    # runc 1.1 always dumps the network namespace empty (EmptyNs |= CLONE_NEWNET).
    return CheckpointMeta(container_id="", bundle="", descriptors=descriptors, external_keys={},
                          empty_ns=("net",))
