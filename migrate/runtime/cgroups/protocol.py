"""The interface every cgroup manager implements (kept apart: it needs ``typing``)."""

from __future__ import annotations

from typing import Any, Protocol


class CgroupManager(Protocol):
    """A container's cgroup, in every hierarchy it spans.

    Errors: ``KernelError`` naming the file for a failed cgroupfs access,
    ``UnsupportedError`` when the kernel lacks what was asked for,
    ``UsageError`` for impossible resource values. In rootless mode, cgroup
    errors are logged at debug level instead and ``is_usable()`` turns false
    when the cgroup could not be created or joined.
    """

    def create(self) -> None:
        """mkdir -p the container's directory in every hierarchy.

        v1 cpuset levels get cpuset.cpus/mems copied down from their parent
        (a task cannot join an empty cpuset); v2 parents get the available
        controllers enabled in cgroup.subtree_control. Raises KernelError.
        """

    def add(self, pid: int) -> None:
        """Move ``pid`` into the container's cgroup in every hierarchy. Raises KernelError."""

    def procs_files(self) -> list[str]:
        """The cgroup.procs files ``add`` writes, in its order (for a
        process that joins by itself: runtime/spawn.py)."""

    def apply_resources(self, resources: Any) -> None:
        """Write ``linux.resources`` (the oci model, duck-typed); None fields are left alone.

        Raises KernelError, UnsupportedError (controller or file missing for
        a value that was asked for), UsageError (impossible values).
        """

    def freeze(self) -> None:
        """Freeze every task and wait until the kernel says frozen (bounded).

        Raises UnsupportedError (no freezer), KernelError (EBUSY: it never
        settled; the cgroup is thawed again).
        """

    def thaw(self) -> None:
        """Undo ``freeze``. Raises UnsupportedError, KernelError."""

    def is_frozen(self) -> bool:
        """True when the cgroup is frozen (v1 FROZEN, v2 cgroup.freeze 1)."""

    def pids(self) -> list[int]:
        """Every process in the container's cgroup and its sub-cgroups, sorted."""

    def kill_all(self, sig: int) -> None:
        """Signal every process, with nothing able to fork in between.

        Raises KernelError.
        """

    def destroy(self) -> None:
        """Remove the container's directories (not their parents); EBUSY is retried briefly.

        Raises KernelError (e.g. EBUSY while processes remain).
        """

    def exists(self) -> bool:
        """True while any of the container's directories exists."""

    def paths(self) -> dict[str, str]:
        """Controller -> directory; ``""`` is the v2 (unified) hierarchy."""

    def freezer_path(self) -> str:
        """The directory whose freezer CRIU should use (``freeze_cgroup``)."""

    def to_state(self) -> dict:
        """JSON-able description for state.json; ``load_manager`` takes it back."""

    def stats(self) -> dict:
        """Best-effort usage: {"memory": {...}, "pids": {...}, "cpu": {...}}."""

    def is_usable(self) -> bool:
        """False when, rootless, the cgroup could not be created or joined."""
