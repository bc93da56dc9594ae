#!/bin/busybox sh
# PID 1 of the guest (see scripts/vm/guest.sh): the host's filesystem,
# writable through a tmpfs overlay that vanishes with the guest.
# $1 is the run directory, shared read-write with the host: env.sh and
# command.sh come in, output and rc go out.
#
# Static busybox applets throughout: every dynamically linked program
# starts through 9p, and under emulation that costs a visible fraction of
# a second each.
run=$1
bb=/bin/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
. "$run/env.sh"

$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mkdir -p /dev/pts /dev/shm /dev/net /run /sys/fs/cgroup /tmp
$bb mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
$bb ln -sf pts/ptmx /dev/ptmx
$bb mount -t tmpfs -o mode=1777 tmpfs /dev/shm
$bb mount -t tmpfs -o mode=755 tmpfs /run
# The host's /tmp shows through the overlay: start from an empty one.
$bb mount -t tmpfs -o mode=1777 tmpfs /tmp
# One unified hierarchy (the guest has no systemd to want anything else).
$bb mount -t cgroup2 cgroup2 /sys/fs/cgroup
$bb ln -sf /proc/self/fd /dev/fd
$bb ln -sf /proc/self/fd/0 /dev/stdin
$bb ln -sf /proc/self/fd/1 /dev/stdout
$bb ln -sf /proc/self/fd/2 /dev/stderr

# Module autoloading (veth, nf_tables, tun...): the kernel runs
# /proc/sys/kernel/modprobe, and the host may have no kmod, so it gets
# busybox's, which only needs the tree and its modules.dep at the usual
# place (the applet chooses by argv[0], hence the link name).
$bb mkdir -p /lib/modules /run/vm-bin
$bb mount --bind "$MIGRATE_VM_MODULES" /lib/modules
$bb ln -sf $bb /run/vm-bin/modprobe
echo /run/vm-bin/modprobe > /proc/sys/kernel/modprobe
# Opening the node autoloads tun (CRIU's `check` and netns tests use it).
[ -e /dev/net/tun ] || $bb mknod /dev/net/tun c 10 200

$bb hostname migrate-vm
$bb ip link set lo up

read -r up _ < /proc/uptime
echo "migrate-vm: booted in ${up}s" > "$run/boot"
cd "$MIGRATE_VM_CWD" 2>/dev/null || cd /
/bin/sh "$run/command.sh" > "$run/output" 2>&1 < /dev/null
echo $? > "$run/rc.tmp"
$bb mv "$run/rc.tmp" "$run/rc"
$bb sync
$bb poweroff -f
