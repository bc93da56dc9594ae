"""`migrate inspect`: what a checkpoint holds, read with pycriu's image reader.

Returns plain data (the CLI renders it as a rich tree or JSON): process
tree with commands, memory size, open files, sockets, mounts, statistics.
"""

from __future__ import annotations

import glob
import os

from migrate.errors import KernelError, MigrateError, NotFoundError, UsageError

__all__ = ["inspect_checkpoint", "external_mount_keys", "load_image"]

PAGE = 4096
# images/mnt.proto "enum fstype" (AUTO: the name is in fsname).
FSTYPES = {0: "unsupported", 1: "proc", 2: "sysfs", 3: "devtmpfs", 4: "binfmt_misc", 5: "tmpfs",
           6: "devpts", 7: "simfs", 8: "pstore", 9: "securityfs", 10: "fusectl", 11: "debugfs",
           12: "cgroup", 13: "aufs", 14: "mqueue", 15: "fuse", 17: "overlay", 18: "autofs",
           19: "tracefs", 23: "cgroup2"}


def load_image(path: str) -> list:
    from pycriu import images

    with open(path, "rb") as f:
        return images.load(f).get("entries", [])


def _maybe(path: str) -> list:
    try:
        return load_image(path)
    except FileNotFoundError:
        return []


def external_file_sizes(image_dir: str) -> dict[str, int]:
    """Key -> size at the dump of every regular file the checkpoint declared
    external (``file[mnt:ino]``) whose size CRIU checks on restore: CRIU
    reopens the file handed for the key and refuses one of another size
    ("File fd/N has bad size"); append-only ones are not checked."""
    path = os.path.join(image_dir, "files.img")
    if not os.path.exists(path):        # not dumped yet: no pycriu import for nothing
        return {}
    out = {}
    for entry in _maybe(path):
        reg = entry.get("reg") or {}
        if entry.get("type") == "REG" and reg.get("ext") and "size" in reg:
            out[reg["name"]] = int(reg["size"])
    return out


def external_mount_keys(image_dir: str) -> dict[str, str] | None:
    """Key -> mount point of every mount the checkpoint declared external
    (``ext_key`` in CRIU's mountpoints images); None when they cannot be
    read (CRIU then reports what it misses itself)."""
    from migrate.criu_rpc.images import read_entries

    out: dict[str, str] = {}
    try:
        for path in glob.glob(os.path.join(image_dir, "mountpoints-*.img")):
            for entry in read_entries(path, "MNTS"):
                if entry.ext_key:
                    out[entry.ext_key] = entry.mountpoint or "?"
    except MigrateError:
        return None
    return out


def inspect_checkpoint(image_dir: str) -> dict:
    """Raises NotFoundError (no images there), UsageError (unreadable images)."""
    if not os.path.isfile(os.path.join(image_dir, "pstree.img")):
        raise NotFoundError(f"{image_dir} holds no CRIU checkpoint (pstree.img missing)")
    try:
        return _inspect(image_dir)
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{image_dir}: cannot read the checkpoint images: {err}") from None
    except Exception as err:  # pycriu raises its own types for bad magic
        if type(err).__name__ in ("MagicException", "DecodeError"):
            raise UsageError(f"{image_dir}: corrupt images: {err}") from None
        raise


def _inspect(d: str) -> dict:
    from migrate.checkpoint.metadata import load_meta, stdio_roles

    processes = []
    total_pages = 0
    for entry in load_image(os.path.join(d, "pstree.img")):
        pid = entry["pid"]
        core = _maybe(os.path.join(d, f"core-{pid}.img"))
        comm = core[0].get("tc", {}).get("comm", "?") if core else "?"
        pages = sum(e.get("nr_pages", 0) for e in _maybe(os.path.join(d, f"pagemap-{pid}.img"))[1:])
        vmas = _maybe(os.path.join(d, f"mm-{pid}.img"))
        mapped = sum(v["end"] - v["start"] for v in (vmas[0].get("vmas", []) if vmas else [])
                     if isinstance(v.get("start"), int))
        total_pages += pages
        processes.append({"pid": pid, "ppid": entry.get("ppid", 0), "comm": comm,
                          "threads": len(entry.get("threads", [])),
                          "memory_dumped": pages * PAGE, "memory_mapped": mapped})
    files, sockets = [], []
    for f in _maybe(os.path.join(d, "files.img")):
        kind = f.get("type", "?")
        if kind == "REG":
            files.append({"id": f.get("id"), "path": f.get("reg", {}).get("name", "?")})
        elif kind in ("INETSK", "UNIXSK", "PACKETSK", "NETLINKSK"):
            sk = f.get("isk") or f.get("usk") or f.get("nlsk") or f.get("psk") or {}
            sockets.append({"id": f.get("id"), "type": kind,
                            "state": sk.get("state"), "src": sk.get("src_addr"),
                            "src_port": sk.get("src_port"), "dst": sk.get("dst_addr"),
                            "dst_port": sk.get("dst_port"), "name": sk.get("name")})
        elif kind == "PIPE":
            files.append({"id": f.get("id"), "path": f"pipe:[{f.get('pipe', {}).get('pipe_id')}]"})
    mounts = []
    for path in sorted(glob.glob(os.path.join(d, "mountpoints-*.img"))):
        for m in load_image(path):
            fstype = m.get("fstype")
            if fstype == 16 or fstype == "AUTO":
                fstype = m.get("fsname", "auto")
            mounts.append({"mountpoint": m.get("mountpoint"),
                           "fstype": FSTYPES.get(fstype, fstype) if isinstance(fstype, int)
                           else str(fstype).lower(),
                           "source": m.get("source"), "root": m.get("root"),
                           "external": m.get("ext_key") or None})
    try:
        from migrate.checkpoint.stats import read_stats

        stats = read_stats(d, "dump")
    except (NotFoundError, KernelError, UsageError):
        stats = {}
    try:
        meta = load_meta(d)
        container = {"id": meta.container_id, "bundle": meta.bundle, "created": meta.created,
                     "terminal": meta.terminal,
                     "external_mounts": [m.mountpoint for m in meta.mounts],
                     "stdio": [x.path for x in stdio_roles(meta)]}
    except (NotFoundError, UsageError):
        container = {}
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(d, "*")) if os.path.isfile(p))
    return {"image_dir": os.path.abspath(d), "container": container, "processes": processes,
            "memory_dumped": total_pages * PAGE, "image_size": size, "files": files,
            "sockets": sockets, "mounts": mounts, "stats": stats}
