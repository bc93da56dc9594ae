#!/usr/bin/env bash
# Runs a command in a qemu guest whose kernel has soft-dirty tracking.
#
# This machine's kernel lacks CONFIG_MEM_SOFT_DIRTY, so CRIU cannot pre-dump
# here and pre-copy/hybrid can only be exercised in a guest: Debian 12's
# 6.1 kernel (it has the bit) under qemu TCG (/dev/kvm is a PVM device that
# refuses ordinary guests, so no KVM). The guest sees the host's / read-only
# over 9p with a tmpfs overlay on top, so the installed CRIU, Python and
# $MIGRATE_PREFIX/venv run unchanged; what it writes is lost at power-off.
#
# Usage: scripts/vm/guest.sh prepare          install qemu, fetch the kernel,
#                                             build the initramfs (idempotent)
#        scripts/vm/guest.sh run COMMAND...   prepare, boot, run COMMAND under
#                                             /bin/sh as root in the current
#                                             directory; stream its output; exit
#                                             with its status
#        scripts/vm/guest.sh check            why the guest cannot run (exit 1),
#                                             or nothing (exit 0); no side effects
#
# Exit status of `run`: the command's, 124 when the time limit hit, 125 when
# the guest did not boot (the console tail says why).
#
# Environment:
#   MIGRATE_PREFIX        the install whose venv/bin goes first on the guest's
#                         PATH (default /opt/migrate); passed into the guest
#   MIGRATE_VM_ENV        more variable names to pass into the guest
#   MIGRATE_VM_TIMEOUT    wall-clock limit in seconds (default 1500)
#   MIGRATE_VM_MEM        guest memory in MiB (default 2048)
#   MIGRATE_VM_SMP        guest CPUs (default: host CPUs, at most 2)
#   MIGRATE_VM_CACHE      kernel and initramfs cache (default /var/cache/migrate/vm)
#   MIGRATE_VM_KERNEL     kernel package (default: the newest cached one, else
#                         the newest linux-image-6.1.0-*-amd64-unsigned apt knows)
#   MIGRATE_VM_KEEP=1     keep the run directory (console log, output)
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${MIGRATE_VM_CACHE:-/var/cache/migrate/vm}
PREFIX=${MIGRATE_PREFIX:-/opt/migrate}
# The modules the initramfs loads itself, before the host's tree is mounted.
EARLY_MODULES=(virtio_pci 9pnet_virtio 9p overlay virtio_rng)

log() { printf '[vm] %s\n' "$*" >&2; }
die() { printf '[vm] error: %s\n' "$*" >&2; exit "${2:-125}"; }

# -- checks ------------------------------------------------------------------

why_not() {
    [ "$(id -u)" -eq 0 ] || { echo "not root"; return; }
    [ "$(uname -m)" = x86_64 ] || { echo "only x86_64 hosts boot the guest"; return; }
    [ -r /etc/debian_version ] || { echo "the guest kernel comes from Debian's archive"; return; }
    [ -x /bin/busybox ] || { echo "a static /bin/busybox is missing (busybox-static)"; return; }
    if ! command -v qemu-system-x86_64 >/dev/null && ! command -v apt-get >/dev/null; then
        echo "qemu-system-x86_64 is missing and apt-get cannot install it"
    fi
}

# -- prepare -----------------------------------------------------------------

install_qemu() {
    command -v qemu-system-x86_64 >/dev/null && return 0
    log "installing qemu-system-x86"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 qemu-system-x86 >/dev/null \
        || { apt-get update -qq >/dev/null
             DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                 -o DPkg::Lock::Timeout=300 qemu-system-x86 >/dev/null; }
}

newest_cached() {
    local d
    for d in "$CACHE"/*/vmlinux; do
        [ -f "$d" ] && basename "$(dirname "$d")"
    done | sort -V | tail -1
}

kernel_search() {
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' 2>/dev/null \
        | awk '{print $1}' | sort -V | tail -1
}

# Debian 13 hosts have no 6.1 kernel in their index: add bookworm, derived
# from the machine's own entry (same mirror and key), pinned so low that
# apt never installs or upgrades anything from it by itself; we only
# `apt-get download` the one kernel package from it.
add_bookworm() {
    local list=/etc/apt/sources.list.d/migrate-vm-bookworm.sources src=/etc/apt/sources.list.d/debian.sources
    local uri key
    [ -f "$list" ] && return 0
    [ -f "$src" ] || return 1
    uri=$(awk '/^URIs:/ {print $2; exit}' "$src")
    key=$(awk '/^Signed-By:/ {print $2; exit}' "$src")
    [ -n "$uri" ] || return 1
    log "adding a pinned bookworm entry from $uri for the 6.1 kernel"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: %s\n' \
        "$uri" "${key:-/usr/share/keyrings/debian-archive-keyring.gpg}" >"$list"
    printf 'Package: *\nPin: release n=bookworm\nPin-Priority: 1\n' \
        >/etc/apt/preferences.d/migrate-vm-bookworm
    apt-get update -qq >/dev/null
}

# -> the kernel release (e.g. 6.1.0-57-amd64), its tree unpacked in $CACHE/<release>
fetch_kernel() {
    local pkg=${MIGRATE_VM_KERNEL:-} kver dir tmp
    if [ -z "$pkg" ]; then
        kver=$(newest_cached)
        [ -n "$kver" ] && { echo "$kver"; return 0; }
        pkg=$(kernel_search)
        if [ -z "$pkg" ]; then
            apt-get update -qq >/dev/null || true
            pkg=$(kernel_search)
        fi
        if [ -z "$pkg" ]; then
            add_bookworm || die "apt knows no linux-image-6.1.0-*-amd64-unsigned"
            pkg=$(kernel_search)
        fi
        [ -n "$pkg" ] || die "apt knows no linux-image-6.1.0-*-amd64-unsigned"
    fi
    kver=${pkg#linux-image-}
    kver=${kver%-unsigned}
    dir=$CACHE/$kver
    if [ ! -f "$dir/vmlinux" ]; then
        log "fetching $pkg"
        tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
        chmod 755 "$tmp"    # apt downloads as _apt
        (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null) || { rm -rf "$tmp"; die "apt-get download $pkg failed"; }
        dpkg-deb -x "$tmp"/*.deb "$tmp/tree"
        grep -q '^CONFIG_MEM_SOFT_DIRTY=y' "$tmp/tree/boot/config-$kver" \
            || { rm -rf "$tmp"; die "$pkg has no CONFIG_MEM_SOFT_DIRTY"; }
        # The host may have no kmod: busybox writes the modules.dep that
        # busybox modprobe reads in the guest.
        /bin/busybox depmod -b "$tmp/tree" "$kver"
        # qemu boots an uncompressed ELF vmlinux through its PVH entry point:
        # decompressing the bzImage inside the guest costs ~9 s under TCG.
        /usr/bin/python3 -I - "$tmp/tree/boot/vmlinuz-$kver" "$tmp/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
if start < 0:
    sys.exit("no xz stream in the bzImage")
open(sys.argv[2], "wb").write(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:]))
PY
        rm -f "$tmp"/*.deb
        rm -rf "$dir"
        mv "$tmp" "$dir"
    fi
    echo "$kver"
}

# -> the initramfs path; rebuilt when initramfs-init.sh changes
build_initramfs() {
    local kver=$1 dir=$CACHE/$1 sum out root m line f
    sum=$(sha256sum "$HERE/initramfs-init.sh" | cut -c1-12)
    out=$dir/initramfs-$sum.cpio.gz
    if [ ! -f "$out" ]; then
        log "building the initramfs"
        root=$(mktemp -d "$CACHE/.initramfs.XXXXXX")
        mkdir -p "$root"/{bin,dev,proc,sys} "$root/lib/modules/$kver"
        cp /bin/busybox "$root/bin/busybox"
        ln -s busybox "$root/bin/sh"
        for m in "${EARLY_MODULES[@]}"; do
            # modules.dep: "path.ko: dep.ko dep.ko", one line per module
            # (file names spell some with "-" where modprobe takes "_")
            line=$(grep -E "/${m//_/[-_]}\.ko(\.xz)?:" "$dir/tree/lib/modules/$kver/modules.dep") \
                || die "module $m not in $kver"
            for f in ${line/:/}; do
                mkdir -p "$root/lib/modules/$kver/$(dirname "$f")"
                cp "$dir/tree/lib/modules/$kver/$f" "$root/lib/modules/$kver/$f"
            done
        done
        /bin/busybox depmod -b "$root" "$kver"
        install -m 0755 "$HERE/initramfs-init.sh" "$root/init"
        (cd "$root" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$out.tmp"
        mv "$out.tmp" "$out"
        rm -rf "$root"
    fi
    echo "$out"
}

prepare() {
    local why
    why=$(why_not)
    [ -z "$why" ] || die "$why"
    mkdir -p "$CACHE"
    # Two runs preparing at once (parallel CI jobs, several checkouts).
    exec 9>"$CACHE/.lock"
    flock -w 600 9 || die "$CACHE/.lock is held by another preparation"
    install_qemu || die "cannot install qemu-system-x86"
    KVER=$(fetch_kernel)
    INITRAMFS=$(build_initramfs "$KVER")
    exec 9>&-
}

# -- run ---------------------------------------------------------------------

rundir= qemu_pid= tail_pid=     # globals: the EXIT trap needs them

run() {
    [ $# -gt 0 ] || die "run: no command" 2
    prepare
    local timeout=${MIGRATE_VM_TIMEOUT:-1500} mem=${MIGRATE_VM_MEM:-2048}
    local smp=${MIGRATE_VM_SMP:-$(( $(nproc) < 2 ? $(nproc) : 2 ))}
    local name qrc rc started
    mkdir -p "$CACHE/runs"
    # Not under /tmp: the guest mounts a fresh tmpfs there.
    rundir=$(mktemp -d "$CACHE/runs/run.XXXXXX")
    cp "$HERE/guest-init.sh" "$rundir/guest-init.sh"
    printf '%s\n' "$*" >"$rundir/command.sh"
    {
        printf 'export MIGRATE_PREFIX=%q\n' "$PREFIX"
        printf 'export PATH=%q:"$PATH"\n' "$PREFIX/venv/bin"
        printf 'MIGRATE_VM_CWD=%q\n' "$PWD"
        printf 'MIGRATE_VM_MODULES=%q\n' "$CACHE/$KVER/tree/lib/modules"
        for name in ${MIGRATE_VM_ENV:-}; do
            [ -n "${!name+x}" ] && printf 'export %s=%q\n' "$name" "${!name}"
        done
    } >"$rundir/env.sh"
    : >"$rundir/output"

    # shellcheck disable=SC2317
    cleanup() {
        [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
        [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null
        if [ "${MIGRATE_VM_KEEP:-0}" = 1 ]; then log "run directory kept: $rundir"
        else rm -rf "$rundir"; fi
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    started=$SECONDS
    log "booting $KVER (TCG, $smp CPU, $mem MiB), limit ${timeout}s"
    # -kernel with an ELF vmlinux boots through PVH; -nodefaults keeps the
    # machine minimal (no VGA, no NIC probing); the run directory and the
    # host root are the only devices besides the console and an RNG.
    # --foreground: qemu stays in our process group, so whatever stops us
    # (a CI job's kill of the group) stops the guest too.
    timeout --foreground -k 10 "$timeout" qemu-system-x86_64 \
        -machine q35 -accel "${MIGRATE_VM_ACCEL:-tcg,thread=multi}" -cpu max \
        -smp "$smp" -m "$mem" -nodefaults -no-reboot -display none -monitor none \
        -serial "file:$rundir/console.log" \
        -kernel "$CACHE/$KVER/vmlinux" -initrd "$INITRAMFS" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off migrate.run=$rundir" \
        -device virtio-rng-pci \
        -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
        -virtfs "local,path=$rundir,mount_tag=run,security_model=none" \
        >"$rundir/qemu.log" 2>&1 &
    qemu_pid=$!
    tail -n +1 -f --pid="$qemu_pid" "$rundir/output" &
    tail_pid=$!
    qrc=0
    wait "$qemu_pid" || qrc=$?
    qemu_pid=
    wait "$tail_pid" 2>/dev/null || true
    tail_pid=
    if [ -f "$rundir/rc" ]; then
        rc=$(cat "$rundir/rc")
        log "$(cat "$rundir/boot" 2>/dev/null); exit status $rc after $((SECONDS - started))s"
    elif [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
        rc=124
        log "time limit of ${timeout}s reached"
    else
        rc=125
        log "the guest did not finish (qemu exit $qrc):"
        tail -n 5 "$rundir/qemu.log" >&2 || true
        tail -n 20 "$rundir/console.log" >&2 || true
    fi
    return "$rc"
}

case ${1:-} in
    prepare) prepare; log "ready: $CACHE/$KVER/vmlinux, $INITRAMFS" ;;
    run) shift; run "$@" ;;
    check) why=$(why_not); [ -z "$why" ] || { echo "$why"; exit 1; } ;;
    *) sed -n '2,33p' "$0" >&2; exit 2 ;;
esac
