#!/usr/bin/env bash
# Installs everything `migrate` needs on Debian 12 or 13, as root, idempotently:
# system packages, CRIU 4.2.1 built from Debian's source tarball (see DESIGN.md:
# Debian 12's criu 3.17 fails on kernel 6.18, Debian 13's 4.1.1 cannot dump
# sockets on >= 6.16), then a virtualenv in $MIGRATE_PREFIX with the package.
#
# Usage: scripts/install-deps.sh            (everything)
#        scripts/install-deps.sh --no-venv  (system parts only)
set -euo pipefail
# Everything installed here must be usable by any user (rootless containers),
# whatever umask the caller had, even if a step fails before the final chmod.
umask 022

PREFIX=${MIGRATE_PREFIX:-/opt/migrate}
CRIU_VERSION=4.2.1
CRIU_DEB_VERSION=4.2.1-1
# Known sha256 of criu_4.2.1.orig.tar.xz; checked against apt's own index too.
CRIU_SHA_PREFIX=29ec0ee0
CRIU_SHA_SUFFIX=25b9
CRIU_CACHE=/var/cache/migrate/criu
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '[install-deps] %s\n' "$*" >&2; }
die() { printf '[install-deps] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
[ -r /etc/debian_version ] || die "only Debian 12 and 13 are supported"

PACKAGES=(
    build-essential pkg-config git xz-utils ca-certificates
    python3 python3-venv python3-dev libffi-dev
    # linux.seccomp: the nsexec extension links libseccomp (libseccomp2 at run time)
    libseccomp-dev
    iptables nftables iproute2 procps util-linux
    busybox-static uidmap runc
    # scripts/vm/guest.sh: the soft-dirty guest that runs the pre-copy tests
    qemu-system-x86
    # tests/integration/test_podman.py (catatonit: the pause image of a pod;
    # recommended by podman, so --no-install-recommends would leave it out)
    podman catatonit
    # tests/integration/test_containerd.py: containerd 1.6 drives us through its runc shim
    containerd
    # CRIU build dependencies (from Debian's criu source package)
    libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-protobuf
    libnl-3-dev libnet1-dev libcap-dev libbsd-dev libnftables-dev
    libgnutls28-dev libaio-dev uuid-dev libdrm-dev
)

apt_updated=0
apt_update() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq >/dev/null
        apt_updated=1
    fi
}

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt_update
        log "installing: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

# CRIU probes the kernel (tens of ms) at the start of every dump, restore and
# lazy-pages run unless it finds its cache, criu.kdat in the build's RUNDIR,
# which it writes only on a tmpfs (so that a reboot, a new kernel, drops it).
# /run is that tmpfs on a systemd machine: there the cache lives in /run, as
# upstream builds it. Where /run is a plain directory on disk (a VM booted
# without systemd), the probes would run again for every CRIU run, a post-copy
# restore's frozen time included: the cache then goes to /dev instead, the
# other boot-lifetime tmpfs only root can write (/dev/shm is world-writable: a
# user could plant a cache root's CRIU would trust). Nothing is mounted; the
# one file is /dev/criu.kdat, written by CRIU itself.
criu_rundir() {
    if [ "$(stat -f -c %T /run 2>/dev/null)" = tmpfs ]; then
        echo /run
    elif [ "$(stat -f -c %T /dev 2>/dev/null)" = tmpfs ] && [ "$(stat -c %u /dev)" = 0 ]; then
        echo /dev
    else
        echo /run       # no tmpfs for it: CRIU probes every time, as before
    fi
}

criu_ok() {
    local v
    v=$(/usr/local/sbin/criu --version 2>/dev/null | awk '/^Version:/ {print $2}') || return 1
    [ "$v" = "$CRIU_VERSION" ] && [ -f "$PREFIX/pycriu-$CRIU_VERSION/pycriu/rpc_pb2.py" ] \
        && grep -qaF "$(criu_rundir)/criu.kdat" /usr/local/sbin/criu
}

# A deb-src-only entry for sid, derived from the machine's own binary source
# (same URI and key), so `apt-get source` sees criu 4.2.1 while no binary
# package can come from sid.
add_sid_source() {
    local list=/etc/apt/sources.list.d/migrate-criu-src.sources
    [ -f "$list" ] && return 0
    local src=/etc/apt/sources.list.d/debian.sources uri key
    if [ -f "$src" ]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' "$src")
        key=$(awk '/^Signed-By:/ {print $2; exit}' "$src")
    else
        uri=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "cannot find the Debian mirror in /etc/apt/sources.list*"
    key=${key:-/usr/share/keyrings/debian-archive-keyring.gpg}
    log "adding deb-src entry for sid from $uri"
    printf 'Types: deb-src\nURIs: %s\nSuites: sid\nComponents: main\nSigned-By: %s\n' \
        "$uri" "$key" >"$list"
    apt_updated=0
}

build_criu() {
    criu_ok && { log "criu $CRIU_VERSION already installed"; return 0; }
    add_sid_source
    apt_update
    mkdir -p "$CRIU_CACHE"
    local tarball="$CRIU_CACHE/criu_${CRIU_VERSION}.orig.tar.xz"
    local want
    # apt-cache cannot filter showsrc by version: pick the stanza ourselves.
    want=$(apt-cache showsrc criu 2>/dev/null | awk -v ver="$CRIU_DEB_VERSION" '
        /^Package:/ {inver=0} /^Version:/ {inver=($2==ver)}
        /^Checksums-Sha256:/ {on=1; next} /^[A-Z]/ {on=0}
        inver && on && $3 ~ /orig.tar.xz$/ {print $1; exit}')
    [ -n "$want" ] || die "apt does not list criu $CRIU_DEB_VERSION sources"
    case "$want" in
        "$CRIU_SHA_PREFIX"*"$CRIU_SHA_SUFFIX") ;;
        *) die "criu $CRIU_DEB_VERSION sha256 $want is not the one we verified" ;;
    esac
    if [ ! -f "$tarball" ] || ! echo "$want  $tarball" | sha256sum -c --quiet - 2>/dev/null; then
        log "downloading criu $CRIU_DEB_VERSION source"
        # The debian.tar.xz part is not served, so apt exits non-zero even when
        # the orig tarball arrived: the checksum below is what decides.
        (cd "$CRIU_CACHE" && apt-get source -qq --download-only "criu=$CRIU_DEB_VERSION" >/dev/null 2>&1) || true
        [ -f "$tarball" ] || die "could not download criu_${CRIU_VERSION}.orig.tar.xz"
        echo "$want  $tarball" | sha256sum -c --quiet - || die "criu tarball checksum mismatch"
    fi
    local build="$CRIU_CACHE/criu-$CRIU_VERSION"
    rm -rf "$build"
    tar -C "$CRIU_CACHE" -xf "$tarball"
    log "building criu $CRIU_VERSION (about a minute; kernel probe cache in $(criu_rundir))"
    make -C "$build" -j"$(nproc)" criu RUNDIR="$(criu_rundir)" >"$CRIU_CACHE/build.log" 2>&1 \
        || { tail -20 "$CRIU_CACHE/build.log" >&2; die "criu build failed"; }
    install -D -m 0755 "$build/criu/criu" /usr/local/sbin/criu
    # pycriu: the Python package of the same tarball, with its generated _pb2 modules.
    make -C "$build" -j"$(nproc)" lib >>"$CRIU_CACHE/build.log" 2>&1 \
        || { tail -20 "$CRIU_CACHE/build.log" >&2; die "pycriu build failed"; }
    rm -rf "$PREFIX/pycriu-$CRIU_VERSION"
    mkdir -p "$PREFIX/pycriu-$CRIU_VERSION"
    cp -r "$build/lib/pycriu" "$PREFIX/pycriu-$CRIU_VERSION/"
    criu_ok || die "criu $CRIU_VERSION did not install"
    log "criu $CRIU_VERSION installed at /usr/local/sbin/criu"
}

make_venv() {
    local venv="$PREFIX/venv"
    if [ ! -x "$venv/bin/python" ]; then
        log "creating virtualenv $venv"
        # Debian's interpreter, not whatever `python3` is first on PATH (a
        # pyenv shim costs ~100 ms per start and lives under /root).
        rm -rf "$venv"
        /usr/bin/python3 -m venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip
    fi
    # pycriu comes from the CRIU tarball, not PyPI (the PyPI name is unrelated).
    local site
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -rf "$site/pycriu"
    cp -r "$PREFIX/pycriu-$CRIU_VERSION/pycriu" "$site/pycriu"
    # Compiled now, as pip does for what it installs: restore and checkpoint
    # import ~80 of its modules, ~50 ms more per command when compiled on
    # every start (a caller with PYTHONDONTWRITEBYTECODE, or not root).
    "$venv/bin/python" -m compileall -q "$site/pycriu" >/dev/null
    log "installing migrate into $venv"
    "$venv/bin/pip" install -q "$HERE[test]"
    ln -sf "$venv/bin/migrate" /usr/local/bin/migrate
    chmod -R a+rX "$PREFIX"
}

install_packages
build_criu
[ "${1:-}" = "--no-venv" ] || make_venv
log "done"
