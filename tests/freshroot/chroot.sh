#!/bin/bash
# A fresh Debian 12 root for the README test (tests/test_freshroot.py).
#
#   chroot.sh build             debootstrap bookworm (minbase) once into the cache
#   chroot.sh copy DIR          a new copy of the cached root in DIR (must not exist)
#   chroot.sh run DIR CMD...    run CMD (as root, cwd /root) inside DIR with proc, sys, dev,
#                               /dev/pts, /dev/shm and /run mounted in a private mount
#                               namespace (they vanish with the command; /tmp is the copy's
#                               own, so a daemon one command started is seen by the next)
#
# Cache: $XEND_FRESHROOT_CACHE (default /var/cache/xend-freshroot)/rootfs: exactly what
# debootstrap made, never changed afterwards (each test works on a copy). Delete it to start
# again. Needs root, debootstrap, unshare; the Debian mirror ($XEND_FRESHROOT_MIRROR).
#
# The copy gets what a Debian installer writes and debootstrap does not (/etc/hosts,
# /etc/hostname), the host's /etc/resolv.conf, and the CA certificates the administrator of
# this host added (/usr/local/share/ca-certificates), so that a network that inspects TLS
# works inside as outside; ca-certificates (which python3-venv brings) picks them up.
set -euo pipefail

CACHE=${XEND_FRESHROOT_CACHE:-/var/cache/xend-freshroot}
MIRROR=${XEND_FRESHROOT_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${XEND_FRESHROOT_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm

die() { echo "chroot.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

build() {
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    [ -x "$CACHE/rootfs/usr/bin/apt-get" ] && return 0
    rm -rf "$CACHE/rootfs.new"
    debootstrap --variant=minbase --arch=amd64 "$SUITE" "$CACHE/rootfs.new" "$MIRROR" \
        >"$CACHE/debootstrap.log" 2>&1 || { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
    cat >"$CACHE/rootfs.new/etc/apt/sources.list" <<SRC
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SRC
    rm -f "$CACHE/rootfs.new/etc/resolv.conf"
    mv "$CACHE/rootfs.new" "$CACHE/rootfs"
}

copy() {
    local dir=$1
    [ -x "$CACHE/rootfs/usr/bin/apt-get" ] || die "no cached root: run '$0 build' first"
    [ ! -e "$dir" ] || die "$dir exists"
    cp -a "$CACHE/rootfs" "$dir"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tfreshroot\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$dir/etc/hosts"
    echo freshroot >"$dir/etc/hostname"
    cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
    mkdir -p "$dir/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/" 2>/dev/null || true
    # no daemon starts inside the chroot when a package is installed
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
    chmod 755 "$dir/usr/sbin/policy-rc.d"
}

run() {
    local dir=$1
    shift
    unshare --mount --propagation private -- /bin/sh -ec '
        r=$1; shift
        mount --bind "$r" "$r"          # / a mount point inside, as ip netns needs
        mount -t proc proc "$r/proc"
        mount -t sysfs sysfs "$r/sys"
        mount -t devtmpfs devtmpfs "$r/dev" 2>/dev/null || mount --rbind /dev "$r/dev"
        mkdir -p "$r/dev/pts" "$r/dev/shm"
        mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts" 2>/dev/null || true
        mount -t tmpfs tmpfs "$r/dev/shm"
        mount -t tmpfs tmpfs "$r/run"
        mkdir -p "$r/run/lock"
        cd "$r/root"
        exec chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive TERM=dumb \
            /bin/sh -c "cd \"\$HOME\" && exec \"\$@\"" sh "$@"' sh "$dir" "$@"
}

case ${1:-} in
    build) build ;;
    copy) [ $# = 2 ] || die "usage: $0 copy DIR"; copy "$2" ;;
    run) [ $# -ge 3 ] || die "usage: $0 run DIR CMD..."; shift; run "$@" ;;
    *) die "usage: $0 build | copy DIR | run DIR CMD..." ;;
esac
