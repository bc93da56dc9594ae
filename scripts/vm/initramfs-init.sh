#!/bin/sh
# /init of the guest's initramfs (static busybox; see scripts/vm/guest.sh).
#
# Turns the host's root filesystem, shared read-only over 9p, into a
# writable root: a tmpfs overlay on top keeps the guest's writes in guest
# memory. Then it mounts the run directory (read-write, at its host path)
# and hands over to the run's guest-init.sh as PID 1 of the new root.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

die() {
    echo "migrate-vm: $*" > /dev/console
    # The host sees no rc file and reports a boot failure.
    sync; reboot -f
}

run=
for arg in $(cat /proc/cmdline); do
    case $arg in migrate.run=*) run=${arg#migrate.run=} ;; esac
done
[ -n "$run" ] || die "no migrate.run= on the kernel command line"

# The 6.1 package builds these as modules; the rest of the tree is reached
# later through the host's copy (guest-init.sh points modprobe at it).
for m in virtio_pci 9pnet_virtio 9p overlay virtio_rng; do
    modprobe "$m" || die "modprobe $m failed"
done

# msize: 9p moves at most this much per request; the default (8 KiB) makes
# every Python import a crawl under emulation.
p9="trans=virtio,version=9p2000.L,msize=512000"
mkdir -p /lower /rw /newroot
# cache=loose: the host's / does not change under a test run, so the guest
# may keep its dentries and pages.
mount -t 9p -o "$p9,ro,cache=loose" hostroot /lower || die "9p mount of the host root failed"
mount -t tmpfs -o mode=755 tmpfs /rw
mkdir -p /rw/upper /rw/work
# Upper and work dirs on one tmpfs: overlayfs needs them on the same fs.
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || die "overlay mount failed"
mkdir -p "/newroot$run"
mount -t 9p -o "$p9,cache=none" run "/newroot$run" || die "9p mount of the run directory failed"

mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /bin/busybox sh "$run/guest-init.sh" "$run"
