"""Directory trees as one byte stream, and the safe writer on the other end.

A tree travels as the content of one protocol stream (so it is compressed
and counted like any other). Inside, it is a list of records::

    length   4 bytes, big-endian size of the JSON entry
    entry    {"op": "put", "path": "etc/passwd", "type": "file", "mode": 420,
              "uid": 0, "gid": 0, "mtime_ns": ..., "atime_ns": ..., "size": 1234}
    content  exactly ``size`` bytes, for a regular file only

``type`` is file, dir, symlink (with ``target``), chr and blk (with
``rdev`` [major, minor]), fifo or sock; ``mode`` holds the permission bits
with setuid, setgid and sticky. ``{"op": "delete", "path": ...}`` removes a
path (a whole subtree for a directory). The tree's own root is ``"."``.
Parents come before their children.

The first pass sends everything and returns a ``TreeSnapshot``; a later pass
given that snapshot sends only what changed since, and the deletions. This
is ``--rootfs copy``: stream the tree while the container runs, freeze,
stream the difference. File timestamps are coarse (a clock tick), so a file
written in the same tick as the first pass read it would look unchanged:
entries whose ctime was less than ``RACY_NS`` old when they were read are
marked racy and always sent again (git's "racily clean" rule).

The receiving side trusts nothing: paths must be relative and normalised
(no ``..``, no empty or ``.`` components), every directory on the way is
opened with O_NOFOLLOW, and an existing entry is removed rather than
written through, so a symlink in the tree (or put there by a hostile
sender) can never make us write outside the destination. Hard links arrive
as separate copies; extended attributes and ACLs are not carried.
"""

from __future__ import annotations

import errno as _errno
import json
import os
import shutil
import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import MigrationError, ProtocolError

__all__ = ["TreeSnapshot", "FileState", "TreeStats", "encode_tree", "encode_entry", "TreeWriter",
           "check_relpath", "RACY_NS"]

RACY_NS = 1_000_000_000
READ_SIZE = 1 << 20
_LEN = struct.Struct("!I")
MAX_ENTRY = 64 << 10
MAX_PATH = 4096

_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
          stat.S_IFCHR: "chr", stat.S_IFBLK: "blk", stat.S_IFIFO: "fifo",
          stat.S_IFSOCK: "sock"}
_NODE_BITS = {"chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "sock": stat.S_IFSOCK}


@dataclass(frozen=True, slots=True)
class FileState:
    """What a pass saw of one path; a later pass compares against it."""

    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    target: str | None = None
    racy: bool = False

    def same_as(self, other: "FileState") -> bool:
        """Nothing visible changed (racy or not)."""
        return (self.type == other.type
                and self.mode == other.mode and self.uid == other.uid and self.gid == other.gid
                and self.size == other.size and self.mtime_ns == other.mtime_ns
                and self.ctime_ns == other.ctime_ns and self.ino == other.ino
                and self.target == other.target)


@dataclass(slots=True)
class TreeSnapshot:
    """Every path a pass saw, keyed by its relative path ("." is the root)."""

    root: str
    entries: dict[str, FileState] = field(default_factory=dict)
    taken_ns: int = 0


@dataclass(slots=True)
class TreeStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    specials: int = 0
    deleted: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"files": self.files, "dirs": self.dirs, "symlinks": self.symlinks,
                "specials": self.specials, "deleted": self.deleted, "bytes": self.bytes}


def check_relpath(path: Any, *, phase: str, allow_root: bool = True) -> list[str]:
    """The components of a received relative path; raises ``ProtocolError``
    for anything that could leave the destination directory."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or "\0" in path:
        raise ProtocolError(phase, f"refusing path {path!r}: not a usable relative path")
    if path == ".":
        if not allow_root:
            raise ProtocolError(phase, "refusing path '.': the destination root itself")
        return []
    if path.startswith("/"):
        raise ProtocolError(phase, f"refusing absolute path {path!r}")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ProtocolError(phase, f"refusing path {path!r}: it has a {part or 'empty'!r} "
                                       "component")
    return parts


# -- sending -----------------------------------------------------------------

def _state(st: os.stat_result, *, target: str | None = None, racy: bool = False) -> FileState:
    return FileState(type=_TYPES.get(stat.S_IFMT(st.st_mode), "unknown"),
                     mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                     size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
                     mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, ino=st.st_ino,
                     target=target, racy=racy)


def encode_entry(entry: dict[str, Any]) -> bytes:
    """One record of a tree stream (its content, for a file, follows)."""
    data = json.dumps(entry, separators=(",", ":")).encode()
    return _LEN.pack(len(data)) + data


def _walk(root: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relpath, abspath, lstat) top-down, sorted, never following symlinks."""
    yield ".", root, os.lstat(root)
    stack = [("", root)]
    while stack:
        rel, path = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            continue   # removed while we walked: the next pass sees the deletion
        subdirs = []
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            erel = f"{rel}{e.name}"
            yield erel, e.path, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append((erel + "/", e.path))
        stack.extend(reversed(subdirs))


def _changed(rel: str, now: FileState, since: TreeSnapshot | int | None) -> bool:
    if since is None:
        return True
    if isinstance(since, TreeSnapshot):
        before = since.entries.get(rel)
        return before is None or before.racy or not now.same_as(before)
    return now.mtime_ns >= since or now.ctime_ns >= since


def _is_racy(st: os.stat_result, read_ns: int, racy_ns: int) -> bool:
    return racy_ns > 0 and max(st.st_ctime_ns, st.st_mtime_ns) >= read_ns - racy_ns


def encode_tree(root: str, *, since: TreeSnapshot | int | None = None,
                snapshot: TreeSnapshot | None = None, stats: TreeStats | None = None,
                racy_ns: int = RACY_NS) -> Iterator[bytes]:
    """Yield the stream of ``root``: everything, or with ``since`` (a
    ``TreeSnapshot`` or a time in ns) only what changed, plus deletions (a
    snapshot only). ``snapshot``, if given, is filled with what this pass
    saw; ``stats`` counts what was sent. Entries changed less than
    ``racy_ns`` before they were read are sent again by the next pass.

    Raises ``MigrationError`` if ``root`` is not a readable directory;
    files that vanish while the tree is read are skipped (the next pass
    sends their deletion).
    """
    stats = stats if stats is not None else TreeStats()
    snap = snapshot if snapshot is not None else TreeSnapshot(root=root)
    snap.root = root
    snap.taken_ns = time.time_ns()
    try:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            raise MigrationError("tree", f"{root} is not a directory")
    except OSError as err:
        raise MigrationError("tree", f"cannot read {root}: {err.strerror}") from err
    seen: dict[str, FileState] = {}
    puts: list[tuple[str, str, os.stat_result, FileState]] = []
    walked: list[tuple[str, str, os.stat_result, FileState]] = []
    for rel, path, st in _walk(root):
        target = None
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                continue
        now = _state(st, target=target, racy=_is_racy(st, time.time_ns(), racy_ns))
        seen[rel] = now
        walked.append((rel, path, st, now))
        if _changed(rel, now, since):
            puts.append((rel, path, st, now))
    touched: set[str] = set()
    if isinstance(since, TreeSnapshot):
        gone = sorted(p for p in since.entries if p not in seen and p != ".")
        for rel in gone:
            parent = rel.rpartition("/")[0]
            # A deleted directory takes its subtree with it.
            if parent and parent in since.entries and parent not in seen:
                continue
            touched.add(parent or ".")
            stats.deleted += 1
            yield encode_entry({"op": "delete", "path": rel})
    if since is not None:
        # Writing or removing an entry changes its directory's mtime on the
        # receiver: send those directories again, so their times are set back.
        touched.update(rel.rpartition("/")[0] or "." for rel, *_ in puts if rel != ".")
        sending = {rel for rel, *_ in puts}
        puts = [p for p in walked if p[0] in sending or p[0] in touched]
    for rel, path, st, now in puts:
        yield from _put(rel, path, st, now, seen, stats, racy_ns)
    snap.entries = seen


def _put(rel: str, path: str, st: os.stat_result, now: FileState,
         seen: dict[str, FileState], stats: TreeStats, racy_ns: int) -> Iterator[bytes]:
    entry: dict[str, Any] = {"op": "put", "path": rel, "type": now.type, "mode": now.mode,
                             "uid": now.uid, "gid": now.gid, "mtime_ns": now.mtime_ns,
                             "atime_ns": st.st_atime_ns}
    if now.type == "file":
        yield from _put_file(rel, path, entry, seen, stats, racy_ns)
        return
    if now.type == "dir":
        stats.dirs += 1
    elif now.type == "symlink":
        entry["target"] = now.target
        stats.symlinks += 1
    elif now.type in ("chr", "blk"):
        entry["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        stats.specials += 1
    elif now.type in ("fifo", "sock"):
        stats.specials += 1
    else:
        return
    yield encode_entry(entry)


def _put_file(rel: str, path: str, entry: dict[str, Any], seen: dict[str, FileState],
              stats: TreeStats, racy_ns: int) -> Iterator[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        seen.pop(rel, None)  # gone or swapped: the next pass decides
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            seen.pop(rel, None)
            return
        read_ns = time.time_ns()
        size = st.st_size
        entry.update(size=size, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                     mtime_ns=st.st_mtime_ns, atime_ns=st.st_atime_ns)
        yield encode_entry(entry)
        left = size
        while left:
            data = os.read(fd, min(READ_SIZE, left))
            if not data:
                break
            left -= len(data)
            yield data
        if left:
            # The file shrank while we read it: pad to the announced size and
            # make sure the next pass sends it again.
            yield bytes(left)
        shrank_or_grew = left or os.fstat(fd).st_size != size
        seen[rel] = _state(st, racy=bool(shrank_or_grew) or _is_racy(st, read_ns, racy_ns))
        stats.files += 1
        stats.bytes += size
    finally:
        os.close(fd)


# -- receiving ---------------------------------------------------------------

class TreeWriter:
    """Writes a received tree stream under ``dest``, piece by piece.

    ``feed(data)`` as chunks arrive, ``finish()`` at the end of the stream
    (applies directory modes and times, checks nothing is left half-done),
    ``close()`` always. ``preserve_owner`` chowns entries (needs root).

    Raises ``ProtocolError`` for a malformed stream or a path that would
    escape ``dest``, ``MigrationError`` when the file system refuses.
    """

    def __init__(self, dest: str, *, phase: str = "tree", preserve_owner: bool | None = None) -> None:
        self.dest = dest
        self.phase = phase
        self.preserve_owner = os.geteuid() == 0 if preserve_owner is None else preserve_owner
        self.stats = TreeStats()
        self._buf = bytearray()
        self._file: tuple[int, dict[str, Any]] | None = None
        self._left = 0
        self._dirs: list[dict[str, Any]] = []
        self._parent: tuple[str, int] | None = None
        try:
            os.makedirs(dest, mode=0o700, exist_ok=True)
            self._root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as err:
            raise self._oserror("open", dest, err) from err

    def __enter__(self) -> "TreeWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file[0])
            self._file = None
        self._drop_parent()
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    def _oserror(self, op: str, path: str, err: OSError) -> MigrationError:
        return MigrationError(self.phase, f"{op} {path}: {err.strerror or err}")

    # -- the record parser --------------------------------------------------

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._file is not None:
                n = min(self._left, len(view))
                self._write(view[:n])
                view = view[n:]
                continue
            self._buf += view
            view = memoryview(b"")
            while self._file is None and len(self._buf) >= _LEN.size:
                (size,) = _LEN.unpack_from(self._buf)
                if size > MAX_ENTRY:
                    raise ProtocolError(self.phase, f"tree entry of {size} bytes is over the limit")
                if len(self._buf) < _LEN.size + size:
                    break
                raw = bytes(self._buf[_LEN.size:_LEN.size + size])
                del self._buf[:_LEN.size + size]
                self._entry(raw)
            if self._file is not None and self._buf:
                rest = bytes(self._buf)
                self._buf.clear()
                view = memoryview(rest)

    def finish(self) -> TreeStats:
        """End of stream: apply directory metadata, deepest first."""
        if self._file is not None or self._buf:
            raise ProtocolError(self.phase, "the tree stream ended in the middle of an entry")
        self._drop_parent()
        for entry in sorted(self._dirs, key=lambda e: e["path"].count("/") + (e["path"] != "."),
                            reverse=True):
            parts = check_relpath(entry["path"], phase=self.phase)
            fd = self._open_dir(parts, entry["path"])
            try:
                self._apply_fd(fd, entry)
            finally:
                if fd != self._root:
                    os.close(fd)
        self._dirs.clear()
        return self.stats

    def _entry(self, raw: bytes) -> None:
        try:
            entry = json.loads(raw)
        except ValueError as err:
            raise ProtocolError(self.phase, f"bad tree entry: {err}") from None
        if not isinstance(entry, dict):
            raise ProtocolError(self.phase, "bad tree entry: not a JSON object")
        op = entry.get("op")
        if op == "delete":
            self._delete(entry)
        elif op == "put":
            self._put(entry)
        else:
            raise ProtocolError(self.phase, f"unknown tree operation {op!r}")

    # -- path handling ----------------------------------------------------------

    def _open_dir(self, parts: list[str], path: str, *, missing_ok: bool = False) -> int:
        """An fd of the directory ``parts`` under the root, every step with
        O_NOFOLLOW: a symlink on the way is refused, never followed. With
        ``missing_ok``, -1 when a step does not exist."""
        fd = self._root
        for i, part in enumerate(parts):
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError as err:
                if fd != self._root:
                    os.close(fd)
                where = "/".join(parts[:i + 1])
                if missing_ok and err.errno == _errno.ENOENT:
                    return -1
                if err.errno in (_errno.ELOOP, _errno.ENOTDIR):
                    raise ProtocolError(self.phase, f"refusing path {path!r}: {where!r} is not a "
                                                    "directory (a symlink is never followed)") from None
                raise self._oserror("open", os.path.join(self.dest, where), err) from err
            if fd != self._root:
                os.close(fd)
            fd = nfd
        return fd

    def _parent_fd(self, parts: list[str], path: str, *, missing_ok: bool = False) -> int:
        key = "/".join(parts[:-1])
        if self._parent is not None and self._parent[0] == key:
            return self._parent[1]
        self._drop_parent()
        fd = self._open_dir(parts[:-1], path, missing_ok=missing_ok)
        if fd not in (self._root, -1):
            self._parent = (key, fd)
        return fd

    def _drop_parent(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def _remove(self, parent: int, name: str, path: str, *, keep_dir: bool = False) -> bool:
        """Remove what is at ``name``; returns True if a directory was kept."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        try:
            if stat.S_ISDIR(st.st_mode):
                if keep_dir:
                    return True
                # rmtree with dir_fd uses fd-based traversal: safe against
                # symlinks swapped in (shutil.rmtree.avoids_symlink_attacks).
                shutil.rmtree(name, dir_fd=parent)
                self._drop_parent_under(path)
            else:
                os.unlink(name, dir_fd=parent)
        except OSError as err:
            raise self._oserror("remove", os.path.join(self.dest, path), err) from err
        return False

    def _drop_parent_under(self, path: str) -> None:
        if self._parent is not None and (self._parent[0] == path
                                         or self._parent[0].startswith(path + "/")):
            self._drop_parent()

    # -- operations ---------------------------------------------------------------

    def _delete(self, entry: dict[str, Any]) -> None:
        path = entry.get("path")
        parts = check_relpath(path, phase=self.phase, allow_root=False)
        parent = self._parent_fd(parts, path, missing_ok=True)
        if parent >= 0:   # else the parent is gone already, and so is the entry
            self._remove(parent, parts[-1], path)
        self.stats.deleted += 1

    def _put(self, entry: dict[str, Any]) -> None:
        path = entry.get("path")
        kind = entry.get("type")
        parts = check_relpath(path, phase=self.phase)
        for key in ("mode", "uid", "gid", "mtime_ns"):
            if not isinstance(entry.get(key), int) or isinstance(entry.get(key), bool):
                raise ProtocolError(self.phase, f"tree entry {path!r}: {key} is not an integer")
        if not parts:
            if kind != "dir":
                raise ProtocolError(self.phase, "the tree root must be a directory")
            self._dirs.append(entry)
            return
        parent = self._parent_fd(parts, path)
        name = parts[-1]
        try:
            if kind == "dir":
                if not self._remove(parent, name, path, keep_dir=True):
                    os.mkdir(name, 0o700, dir_fd=parent)
                self._dirs.append(entry)
                self.stats.dirs += 1
            elif kind == "file":
                size = entry.get("size")
                if not isinstance(size, int) or size < 0:
                    raise ProtocolError(self.phase, f"tree entry {path!r}: bad size {size!r}")
                self._remove(parent, name, path)
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=parent)
                self._file, self._left = (fd, entry), size
                if size == 0:
                    self._close_file()
            elif kind == "symlink":
                target = entry.get("target")
                if not isinstance(target, str) or not target or "\0" in target:
                    raise ProtocolError(self.phase, f"tree entry {path!r}: bad symlink target")
                self._remove(parent, name, path)
                os.symlink(target, name, dir_fd=parent)
                self._apply_name(parent, name, entry, symlink=True)
                self.stats.symlinks += 1
            elif kind in ("chr", "blk", "fifo", "sock"):
                self._remove(parent, name, path)
                self._mknod(parent, name, path, kind, entry)
                self._apply_name(parent, name, entry)
                self.stats.specials += 1
            else:
                raise ProtocolError(self.phase, f"tree entry {path!r}: unknown type {kind!r}")
        except OSError as err:
            raise self._oserror(f"create {kind}", os.path.join(self.dest, path), err) from err

    def _mknod(self, parent: int, name: str, path: str, kind: str, entry: dict[str, Any]) -> None:
        mode = entry["mode"] & 0o7777
        if kind == "fifo":
            os.mkfifo(name, mode, dir_fd=parent)
            return
        device = 0
        if kind in ("chr", "blk"):
            rdev = entry.get("rdev")
            if (not isinstance(rdev, list) or len(rdev) != 2
                    or not all(isinstance(x, int) and x >= 0 for x in rdev)):
                raise ProtocolError(self.phase, f"tree entry {path!r}: bad rdev {rdev!r}")
            device = os.makedev(*rdev)
        os.mknod(name, mode | _NODE_BITS[kind], device, dir_fd=parent)

    def _write(self, data: memoryview) -> None:
        fd, entry = self._file
        try:
            while data:
                n = os.write(fd, data)
                data = data[n:]
                self._left -= n
        except OSError as err:
            raise self._oserror("write", os.path.join(self.dest, entry["path"]), err) from err
        if self._left == 0:
            self._close_file()

    def _close_file(self) -> None:
        fd, entry = self._file
        self._file = None
        try:
            self._apply_fd(fd, entry)
        finally:
            os.close(fd)
        self.stats.files += 1
        self.stats.bytes += entry["size"]

    def _apply_fd(self, fd: int, entry: dict[str, Any]) -> None:
        """Owner, then mode (chown clears setuid bits), then times."""
        try:
            if self.preserve_owner:
                os.fchown(fd, entry["uid"], entry["gid"])
            os.fchmod(fd, entry["mode"] & 0o7777)
            os.utime(fd, ns=(_atime(entry), entry["mtime_ns"]))
        except OSError as err:
            raise self._oserror("set metadata of", os.path.join(self.dest, entry["path"]), err) from err

    def _apply_name(self, parent: int, name: str, entry: dict[str, Any], *,
                    symlink: bool = False) -> None:
        if self.preserve_owner:
            os.chown(name, entry["uid"], entry["gid"], dir_fd=parent, follow_symlinks=False)
        if not symlink:
            # We made this node a moment ago with mknod/mkfifo (which fail on
            # an existing name), so following is safe; Linux has no lchmod.
            os.chmod(name, entry["mode"] & 0o7777, dir_fd=parent)
        os.utime(name, ns=(_atime(entry), entry["mtime_ns"]), dir_fd=parent,
                 follow_symlinks=False)


def _atime(entry: dict[str, Any]) -> int:
    atime = entry.get("atime_ns")
    return atime if isinstance(atime, int) and not isinstance(atime, bool) else entry["mtime_ns"]
