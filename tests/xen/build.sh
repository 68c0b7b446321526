#!/bin/bash
# Build the real-Xen test VM for xend from Debian packages only.
#
#   tests/xen/build.sh [--clean] [--offline] [--force]
#
# Output, in $XEND_XENVM_CACHE (default /var/cache/xend-xenvm):
#   out/xen            Xen 4.17 hypervisor, gunzipped (a multiboot ELF that QEMU's -kernel loads)
#   out/vmlinuz        the Debian dom0 kernel (also the tiny PV guest's kernel)
#   out/dom0.cpio.gz   dom0's whole root filesystem as one gzip'ed newc cpio; /init = dom0-init
#                      (XEND_XENVM_COMPRESS=zstd|none: dom0.cpio.zst / dom0.cpio instead: boots
#                      faster, see README); out/dom0-initrd links to whichever it is
#   out/guest.cpio.gz  the tiny PV guest's busybox initramfs (also in dom0 at /opt/xenvm/guest/)
#   out/pydeps/        pure-Python dependencies that Debian lacks (wheels unpacked), shipped by
#                      the harness at run time into dom0 at /opt/xend-pydeps (on PYTHONPATH)
#   out/KEY, out/build-info
# Kept between runs: rootfs/ (the debootstrap'ed bookworm tree, refreshed with apt each run).
#
# Cache key = every installed package version in the rootfs + the hash of this script, dom0-init
# and the Python requirements. Unchanged key: nothing is rebuilt (the check itself runs
# 'apt-get update' in the rootfs unless --offline / XEND_XENVM_OFFLINE=1).
#
# --clean    throw away rootfs/ and out/ and start from debootstrap
# --offline  do not contact the Debian mirror; use the rootfs as it is
# --force    rebuild out/ even if the key is unchanged
#
# Environment: XEND_XENVM_CACHE, XEND_XENVM_MIRROR, XEND_XENVM_SECURITY_MIRROR,
# XEND_XENVM_PY_REQS (space separated pip requirements, default "sexpdata==1.0.2"),
# XEND_XENVM_OFFLINE=1, XEND_XENVM_COMPRESS=gzip|zstd|none (default gzip).
# Needs root (debootstrap, chroot), and on the host: debootstrap cpio gzip python3 -m pip.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${XEND_XENVM_CACHE:-/var/cache/xend-xenvm}
SUITE=bookworm
MIRROR=${XEND_XENVM_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${XEND_XENVM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PY_REQS=${XEND_XENVM_PY_REQS:-sexpdata==1.0.2}
COMPRESS=${XEND_XENVM_COMPRESS:-gzip}
OFFLINE=${XEND_XENVM_OFFLINE:-0}
XENV=4.17

# What dom0 gets. Everything else comes in as their dependencies (no Recommends).
DOM0_PACKAGES=(
    xen-hypervisor-$XENV-amd64 xen-utils-$XENV xen-utils-common xenstore-utils
    linux-image-amd64 busybox-static
    python3 python3-daemon python3-lockfile
    procps iproute2 kmod
)
# Kernel modules kept in dom0 (with their dependencies); the rest of /lib/modules is dropped.
DOM0_MODULES=(xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback xen-netback loop
              bridge tun dummy e1000)

CLEAN=0 FORCE=0
for arg in "$@"; do
    case $arg in
        --clean) CLEAN=1 ;;
        --offline) OFFLINE=1 ;;
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

T0=$(date +%s.%N)
say() { awk -v t0="$T0" -v now="$(date +%s.%N)" -v m="$*" 'BEGIN {printf "[build %6.1fs] %s\n", now - t0, m}'; }
die() { echo "build.sh: ERROR: $*" >&2; exit 1; }

case $COMPRESS in
    gzip|none) ;;
    zstd) command -v zstd >/dev/null || die "XEND_XENVM_COMPRESS=zstd needs zstd on the host" ;;
    *) die "XEND_XENVM_COMPRESS must be gzip, zstd or none (got '$COMPRESS')" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"
for tool in debootstrap cpio gzip unshare python3; do
    command -v "$tool" >/dev/null || die "missing host tool '$tool' (apt-get install debootstrap cpio gzip python3)"
done

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9                       # one build at a time per cache dir
ROOT=$CACHE/rootfs
OUT=$CACHE/out
LOG=$CACHE/build.log
: >"$LOG"

# Run a command in the rootfs, with proc and sysfs mounted in a private mount namespace
# (they vanish with the process, even if we are killed).
in_root() {
    unshare --mount --propagation private -- /bin/sh -ec '
        r=$1; shift
        mount -t proc proc "$r/proc"
        mount -t sysfs sysfs "$r/sys"
        exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"' sh "$ROOT" "$@"
}
# Run a step, its output going to the log; on failure show the log's tail.
logged() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "build.sh: ERROR: step failed: $*" >&2
        echo "---- last lines of $LOG ----" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

if [ "$CLEAN" = 1 ]; then
    say "--clean: removing $ROOT and $OUT"
    rm -rf "$ROOT" "$ROOT.new" "$OUT" "$OUT.new" "$CACHE/stage"
fi

# ---- 1. the rootfs: debootstrap once, then apt keeps it current -------------------------------
configure_apt() {
    local r=$1
    cat >"$r/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    cat >"$r/etc/apt/apt.conf.d/90xenvm" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Dpkg::Use-Pty "false";
EOF
    # no daemons start inside the build chroot
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
    chmod 755 "$r/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
}

if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    [ "$OFFLINE" = 1 ] && die "--offline but there is no rootfs in $ROOT yet"
    rm -rf "$ROOT" "$ROOT.new"
    say "debootstrap $SUITE (minbase) from $MIRROR"
    logged debootstrap --variant=minbase --arch=amd64 "$SUITE" "$ROOT.new" "$MIRROR"
    configure_apt "$ROOT.new"
    # The kernel's postinst would build an initramfs we never use: make that a no-op.
    logged chroot "$ROOT.new" dpkg-divert --local --rename --add /usr/sbin/update-initramfs
    ln -sf /bin/true "$ROOT.new/usr/sbin/update-initramfs"
    mv "$ROOT.new" "$ROOT"
    say "debootstrap done"
    FRESH=1
else
    configure_apt "$ROOT"
    FRESH=0
fi

if [ "$OFFLINE" = 1 ]; then
    say "offline: using $ROOT as it is"
else
    say "apt-get update ($SUITE, $SUITE-updates, $SUITE-security)"
    logged in_root dpkg --configure -a       # finish what an interrupted earlier run left
    logged in_root apt-get update
    # install what is missing, then take every update (the security suite first of all)
    if [ "$FRESH" = 1 ] || ! in_root apt-get -s install "${DOM0_PACKAGES[@]}" 2>/dev/null \
            | grep -q '^0 upgraded, 0 newly installed'; then
        say "apt-get install ${DOM0_PACKAGES[*]}"
        logged in_root apt-get install -y "${DOM0_PACKAGES[@]}"
    fi
    if ! in_root apt-get -s dist-upgrade 2>/dev/null | grep -q '^0 upgraded, 0 newly installed'; then
        say "apt-get dist-upgrade"
        logged in_root apt-get -y dist-upgrade
    fi
fi

# dom0 kernel = the one linux-image-amd64 points at; purge any older one left by an upgrade
KPKG=$(in_root dpkg-query -W -f='${Depends}' linux-image-amd64 | sed 's/[ ,(].*//')
KVER=${KPKG#linux-image-}
[ -n "$KVER" ] && [ -f "$ROOT/boot/vmlinuz-$KVER" ] || die "cannot find the dom0 kernel (linux-image-amd64 -> '$KPKG')"
OLD_KERNELS=$(in_root dpkg-query -W -f='${Package} ${db:Status-Status}\n' 'linux-image-[0-9]*' \
              | awk -v k="$KPKG" '$2 == "installed" && $1 != k {print $1}')
if [ -n "$OLD_KERNELS" ]; then
    say "purging old kernels: $OLD_KERNELS"
    # shellcheck disable=SC2086
    logged in_root apt-get -y purge $OLD_KERNELS
fi
logged in_root apt-get clean

# ---- 2. version check: hypervisor and tools must come from the same xen source version ---------
XEN_VERSIONS=$(in_root dpkg-query -W -f='${db:Status-Status} ${source:Package} ${Package} ${source:Version}\n' \
               | awk '$1 == "installed" && $2 == "xen" {print $3, $4}')
HV_VERSION=$(awk -v p="xen-hypervisor-$XENV-amd64" '$1 == p {print $2}' <<<"$XEN_VERSIONS")
TOOLS_VERSION=$(awk -v p="xen-utils-$XENV" '$1 == p {print $2}' <<<"$XEN_VERSIONS")
[ -n "$HV_VERSION" ] || die "xen-hypervisor-$XENV-amd64 is not installed in $ROOT"
[ -n "$TOOLS_VERSION" ] || die "xen-utils-$XENV is not installed in $ROOT"
if [ "$(awk '{print $2}' <<<"$XEN_VERSIONS" | sort -u | wc -l)" != 1 ]; then
    echo "build.sh: ERROR: Xen packages from different versions (hypervisor and tools must match):" >&2
    sed 's/^/    /' <<<"$XEN_VERSIONS" >&2
    echo "  The archive is probably half-way through an update (e.g. $SUITE-security has only part" >&2
    echo "  of it). Retry later, or run with --clean once both have landed." >&2
    exit 1
fi
say "xen $HV_VERSION (hypervisor = tools), kernel $KVER"

# ---- 3. cache key ------------------------------------------------------------------------------
KEY=$( {
    in_root dpkg-query -W -f='${Package} ${Version} ${db:Status-Status}\n' | LC_ALL=C sort
    sha256sum "$HERE/build.sh" "$HERE/dom0-init" "$HERE/guest-rcS" | awk '{print $1}'
    echo "py: $PY_REQS"
    echo "modules: ${DOM0_MODULES[*]}"
    echo "compress: $COMPRESS"
} | sha256sum | cut -c1-16)
if [ "$FORCE" = 0 ] && [ -f "$OUT/KEY" ] && [ "$(cat "$OUT/KEY")" = "$KEY" ]; then
    say "up to date (key $KEY), nothing to do"
    exit 0
fi
say "building images for key $KEY"

rm -rf "$OUT.new" "$CACHE/stage"
mkdir -p "$OUT.new"
STAGE=$CACHE/stage

# ---- 4. kernel and hypervisor ------------------------------------------------------------------
XEN_GZ=$ROOT/boot/xen-$XENV-amd64.gz
[ -f "$XEN_GZ" ] || die "no $XEN_GZ in the rootfs"
gzip -dc "$XEN_GZ" >"$OUT.new/xen"
cp "$ROOT/boot/vmlinuz-$KVER" "$OUT.new/vmlinuz"

# ---- 5. the tiny PV guest: busybox-static initramfs --------------------------------------------
G=$CACHE/stage-guest
rm -rf "$G"
mkdir -p "$G"/{bin,sbin,etc/init.d,dev,proc,sys,tmp,root,usr/bin,usr/sbin}
cp "$ROOT/bin/busybox" "$G/bin/busybox"
ln -s busybox "$G/bin/sh"
ln -s bin/busybox "$G/init"               # busybox runs as init (argv[0] "init")
ln -s ../bin/busybox "$G/sbin/init"
ln -s ../bin/busybox "$G/sbin/poweroff"    # the kernel's orderly_poweroff runs /sbin/poweroff
ln -s ../bin/busybox "$G/sbin/reboot"
mknod -m 600 "$G/dev/console" c 5 1
mknod -m 666 "$G/dev/null" c 1 3
cat >"$G/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/echo xenvm-guest: powering off
EOF
# the guest's block and network frontends are modules of the Debian kernel: in the initramfs
mkdir -p "$G/lib/modules"
for m in drivers/block/xen-blkfront.ko drivers/net/xen-netfront.ko; do
    cp "$ROOT/lib/modules/$KVER/kernel/$m" "$G/lib/modules/"
done
cp "$HERE/guest-rcS" "$G/etc/init.d/rcS"
chmod 755 "$G/etc/init.d/rcS"
(cd "$G" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -9 >"$OUT.new/guest.cpio.gz"
say "guest initramfs: $(du -h "$OUT.new/guest.cpio.gz" | cut -f1)"

# a disk for a guest booted by a bootloader (pygrub): an ext2 filesystem (no partition table)
# holding the same kernel and initramfs and a grub.cfg; made with the rootfs's own mke2fs
PG=$ROOT/tmp/xenvm-pygrub
rm -rf "$PG" "$ROOT/tmp/pygrub.img"
mkdir -p "$PG/boot/grub"
cp "$OUT.new/vmlinuz" "$PG/boot/vmlinuz"
cp "$OUT.new/guest.cpio.gz" "$PG/boot/initrd.gz"
cat >"$PG/boot/grub/grub.cfg" <<'EOF'
set default=0
set timeout=0
menuentry 'xenvm-guest (pygrub)' {
    linux /boot/vmlinuz console=hvc0 quiet xenvm.boot=pygrub
    initrd /boot/initrd.gz
}
EOF
logged in_root mke2fs -q -t ext2 -d /tmp/xenvm-pygrub /tmp/pygrub.img 24M
mv "$ROOT/tmp/pygrub.img" "$OUT.new/pygrub.img"
rm -rf "$PG"

# ---- 6. dom0 root filesystem -------------------------------------------------------------------
say "staging dom0 rootfs"
mkdir -p "$STAGE"
tar -C "$ROOT" --numeric-owner \
    --exclude=./proc/* --exclude=./sys/* --exclude=./boot/* \
    --exclude=./usr/lib/modules/* --exclude=./usr/lib/firmware \
    --exclude=./usr/share/doc/* --exclude=./usr/share/man/* --exclude=./usr/share/info/* \
    --exclude=./usr/share/locale/* --exclude=./usr/share/i18n/* --exclude=./usr/share/zoneinfo/* \
    --exclude=./var/lib/apt/lists/* --exclude=./var/cache/apt/* --exclude=./var/cache/debconf/*-old \
    --exclude=./var/log/* --exclude=./usr/share/lintian --exclude=./usr/share/bash-completion \
    --exclude=./usr/lib/udev/hwdb.bin --exclude=./usr/lib/udev/hwdb.d --exclude=./etc/udev/hwdb.d \
    --exclude='*.pyc' --exclude=__pycache__ \
    -cf - . | tar -C "$STAGE" --numeric-owner -xpf -
rm -f "$STAGE/usr/sbin/policy-rc.d" "$STAGE/etc/resolv.conf"

# kernel modules: only the Xen ones and what they depend on
MODS=$(in_root modprobe --show-depends -S "$KVER" -a "${DOM0_MODULES[@]}" | awk '$1 == "insmod" {print $2}' | sort -u)
[ -n "$MODS" ] || die "modprobe found none of ${DOM0_MODULES[*]} for $KVER"
# (depmod runs in the rootfs on a scratch tree there, so the host needs no kmod)
MT=$ROOT/tmp/xenvm-modules
rm -rf "$MT"
for m in $MODS; do
    mkdir -p "$MT$(dirname "$m")"
    cp "$ROOT$m" "$MT$m"
done
cp "$ROOT/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$MT/lib/modules/$KVER/"
logged in_root depmod -b /tmp/xenvm-modules "$KVER"
mkdir -p "$STAGE/usr/lib/modules"
mv "$MT/lib/modules/$KVER" "$STAGE/usr/lib/modules/$KVER"
rm -rf "$MT"

# the guest, for xl create inside dom0
mkdir -p "$STAGE/opt/xenvm/guest"
cp "$OUT.new/vmlinuz" "$STAGE/opt/xenvm/guest/vmlinuz"
cp "$OUT.new/guest.cpio.gz" "$STAGE/opt/xenvm/guest/initrd.gz"
cp "$OUT.new/pygrub.img" "$STAGE/opt/xenvm/guest/pygrub.img"
cat >"$STAGE/opt/xenvm/guest/tiny.cfg" <<'EOF'
# tiny PV guest: Debian kernel + busybox initramfs; prints "xenvm-guest: ready", then waits
name = "tiny"
type = "pv"
kernel = "/opt/xenvm/guest/vmlinuz"
ramdisk = "/opt/xenvm/guest/initrd.gz"
extra = "console=hvc0 quiet"
memory = 128
maxmem = 128
vcpus = 1
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "destroy"
EOF

install -m 755 "$HERE/dom0-init" "$STAGE/init"
mkdir -p "$STAGE/var/log/xen/console" "$STAGE/var/lib/xen" "$STAGE/var/lib/xenstored" "$STAGE/xenvm"
echo xenvm-dom0 >"$STAGE/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 xenvm-dom0\n::1 localhost\n' >"$STAGE/etc/hosts"

PY_VERSION=$(in_root python3 -c 'import platform; print(platform.python_version())')
{
    echo "key $KEY"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "xen $HV_VERSION"
    echo "kernel $KVER $(in_root dpkg-query -W -f='${Version}' "$KPKG")"
    echo "python3 $PY_VERSION"
    for p in python3-daemon python3-lockfile busybox-static; do
        echo "$p $(in_root dpkg-query -W -f='${Version}' "$p")"
    done
    echo "pydeps $PY_REQS"
} >"$OUT.new/build-info"
cp "$OUT.new/build-info" "$STAGE/etc/xenvm-build-info"

say "packing dom0 rootfs ($(du -sm "$STAGE" | cut -f1) MiB, compression: $COMPRESS)"
case $COMPRESS in
    gzip) DOM0_IMG=dom0.cpio.gz; PACK=(gzip -1) ;;
    zstd) DOM0_IMG=dom0.cpio.zst; PACK=(zstd -q -3 -T0) ;;
    none) DOM0_IMG=dom0.cpio; PACK=(cat) ;;
esac
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) | "${PACK[@]}" >"$OUT.new/$DOM0_IMG"
ln -s "$DOM0_IMG" "$OUT.new/dom0-initrd"     # what the harness boots
say "dom0 initramfs: $DOM0_IMG $(du -h "$OUT.new/$DOM0_IMG" | cut -f1)"

# ---- 7. pure-Python dependencies Debian does not have (in the right version) --------------------
# Debian bookworm's python3-sexpdata is 0.0.3; xend needs 1.0.x, so it comes from PyPI as a
# wheel and is shipped at run time (harness: out/pydeps -> /opt/xend-pydeps on PYTHONPATH).
mkdir -p "$OUT.new/pydeps"
if [ -n "$PY_REQS" ]; then
    if [ "$OFFLINE" = 1 ] && [ -d "$OUT/pydeps" ]; then
        cp -a "$OUT/pydeps/." "$OUT.new/pydeps/"
    else
        WHEELS=$CACHE/wheels
        rm -rf "$WHEELS"; mkdir -p "$WHEELS"
        # shellcheck disable=SC2086
        logged python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" $PY_REQS
        for w in "$WHEELS"/*.whl; do
            python3 -m zipfile -e "$w" "$OUT.new/pydeps/"
        done
        say "pydeps: $(cd "$WHEELS" && echo *.whl)"
    fi
fi

echo "$KEY" >"$OUT.new/KEY"
rm -rf "$OUT.old"
[ -d "$OUT" ] && mv "$OUT" "$OUT.old"
mv "$OUT.new" "$OUT"
rm -rf "$OUT.old" "$STAGE" "$G"
say "done: $OUT ($(du -sh "$OUT" | cut -f1); cache total $(du -sh "$CACHE" | cut -f1))"
