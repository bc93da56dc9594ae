"""Does a bundle fit a checkpoint? Checked before restore makes anything.

CRIU restores the namespaces and mounts it dumped, whatever config.json
says: a bundle that asks for another shape would give a container that is
not what its state claims (a private network namespace nobody asked for,
a mount config.json names but that is not there). What CRIU cannot map is
refused here, naming the difference.
"""

from __future__ import annotations

import glob
import os

from migrate.errors import MigrateError, UsageError

__all__ = ["check_bundle_fits"]

# OCI namespace type -> the image CRIU writes when it dumps that namespace
# as the container's own (a joined or the host's one is external: no image).
_NS_IMAGES = {"network": "netns-*.img", "uts": "utsns-*.img", "ipc": "ipcns-var-*.img"}


def check_bundle_fits(images_dir: str, spec, *, empty_ns: frozenset[str] = frozenset()) -> None:
    """Raises UsageError when ``spec`` differs from the checkpoint in
    ``images_dir`` in a way CRIU cannot handle. ``empty_ns`` ({"net"}): the
    restore creates that namespace empty, so its image holds nothing."""
    for oci_type, pattern in _NS_IMAGES.items():
        ns = spec.linux.namespace(oci_type)
        # IPC and UTS joined by path are joined by CRIU (join_ns) whatever it
        # dumped; a dumped network namespace would be recreated instead.
        if not (ns is None or (ns.path and oci_type == "network")):
            continue        # fits whatever was dumped (and no image is read)
        files = glob.glob(os.path.join(images_dir, pattern))
        dumped = _own_namespace_dumped(files)
        if not files and oci_type == "network":
            # Dumped empty (empty_ns) leaves no netns image at all.
            dumped = _own_netns_in_ids(images_dir)
        if dumped:
            how = "joins one by path" if ns is not None else "has none"
            raise UsageError(f"the checkpoint has its own {oci_type} namespace but config.json "
                             f"{how}: CRIU restores the namespace it dumped")
    dumped_mounts = _mountpoints(images_dir)
    if dumped_mounts is None:
        return
    from migrate.runtime.paths import secure_join

    rootfs = spec.root.path
    for m in spec.mounts:
        dest = os.path.normpath("/" + m.destination.lstrip("/"))
        # The image names where the mount was, symlinks in the rootfs resolved.
        resolved = os.path.normpath("/" + os.path.relpath(secure_join(rootfs, dest), rootfs))
        if dest not in dumped_mounts and resolved not in dumped_mounts:
            raise UsageError(f"config.json mounts {m.destination} ({m.type or 'bind'} from "
                             f"{m.source or 'none'}), which the checkpointed container did not "
                             f"have: CRIU restores only the mounts it dumped")


def _own_netns_in_ids(images_dir: str) -> bool:
    """Whether the checkpointed tree's root had a network namespace other
    than CRIU's own at dump time (ids of the root task against the
    inventory's root_ids). False when that cannot be read."""
    from migrate.criu_rpc.images import read_entries

    try:
        root = read_entries(os.path.join(images_dir, "pstree.img"), "PSTREE")[0].pid
        inventory = read_entries(os.path.join(images_dir, "inventory.img"), "INVENTORY")[0]
        ids = read_entries(os.path.join(images_dir, f"ids-{root}.img"), "IDS")[0]
    except (MigrateError, IndexError):
        return False
    if not (inventory.root_ids.has("net_ns_id") and ids.has("net_ns_id")):
        return False
    return ids.net_ns_id != inventory.root_ids.net_ns_id


def _own_namespace_dumped(files: list[str]) -> bool:
    """CRIU writes a netns image for an external (joined) network namespace
    too, holding only its ``ext_key``: that one is not the container's own."""
    if not files:
        return False
    if not all(os.path.basename(f).startswith("netns-") for f in files):
        return True
    from migrate.criu_rpc.images import read_entries

    for path in files:
        if not all(e.ext_key for e in read_entries(path, "NETNS")):
            return True
    return False


def _mountpoints(images_dir: str) -> set[str] | None:
    """Mount points of the checkpoint's mount namespace (None: unknown)."""
    files = glob.glob(os.path.join(images_dir, "mountpoints-*.img"))
    if len(files) != 1:
        return None     # no mount namespace of its own, or several: not judged
    from migrate.criu_rpc.images import read_entries

    return {_absolute(e.mountpoint) for e in read_entries(files[0], "MNTS")}


def _absolute(mountpoint: str) -> str:
    """CRIU writes "./sys" or "/sys" depending on version: "/sys"."""
    if mountpoint == "." or mountpoint.startswith("./"):
        mountpoint = mountpoint[1:]
    return os.path.normpath("/" + mountpoint.lstrip("/"))
