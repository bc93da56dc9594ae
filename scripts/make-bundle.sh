#!/usr/bin/env bash
# Build an OCI bundle with a static busybox rootfs and a config.json from
# `migrate spec`. Usage: scripts/make-bundle.sh DIR [--rootless]
set -euo pipefail

dir=${1:?usage: make-bundle.sh DIR [--rootless]}
shift || true
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || { echo "make-bundle: busybox not found (install busybox-static)" >&2; exit 1; }
file -L "$busybox" 2>/dev/null | grep -qE 'static(-pie)? ?(ally)? ?linked|statically' \
    || ldd "$busybox" 2>&1 | grep -q 'not a dynamic' \
    || { echo "make-bundle: $busybox is not static (install busybox-static)" >&2; exit 1; }
migrate_bin=${MIGRATE:-migrate}

mkdir -p "$dir/rootfs"
rootfs=$(cd "$dir/rootfs" && pwd)
mkdir -p "$rootfs"/{bin,sbin,etc,proc,sys,dev,tmp,root,home,var,run,usr/bin,usr/sbin}
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
tester:x:1000:1000:tester:/home/tester:/bin/sh
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
users:x:100:
tester:x:1000:
nogroup:x:65534:
GROUP
echo "migrate-test" >"$rootfs/etc/hostname"
if [ ! -f "$dir/config.json" ]; then
    "$migrate_bin" spec --bundle "$dir" "$@"
fi
echo "$dir"
