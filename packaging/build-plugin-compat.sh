#!/bin/sh
# Build the `mnp` plugin bundle against glibc 2.31, so that it runs on the hosts users have (RHEL 9 / RHCOS 9:
# glibc 2.34; Ubuntu 20.04 and Debian 11: 2.31). packaging/README.md ("Old hosts: the glibc floor") says why and
# what was measured.
#
#   packaging/build-plugin-compat.sh [--dist DIR]      → DIR/mnp-glibc2.31/mnp   (DIR = dist/)
#
# How: a Debian 11 (bullseye, glibc 2.31) root filesystem made with mmdebstrap, CPython 3.11 compiled inside it from
# Debian's own python3.11 source package (bookworm's: bullseye only has 3.9, the project needs 3.11) and a venv
# with PyInstaller; then the project's usual build (build-plugin.sh, mnp.spec) runs in it by chroot. Every binary
# in the bundle — the bootloader, libpython, the extension modules, libz, libffi — is then linked against 2.31.
#
# Cached: the prepared root filesystem (~600 MB) lives in $MNP_CACHE_DIR (default /var/cache/mnp) and is reused
# while its recipe (RECIPE below) is unchanged; only the bundle is rebuilt (~1 min). A missing or stale cache is
# rebuilt from scratch (~1 min mmdebstrap, ~6–10 min compiling CPython on 2 cores). Needs root, mmdebstrap and the
# Debian mirror and PyPI (the host's CA bundle is used for PyPI, for TLS-intercepting proxies).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
dist="$root/dist"
while [ $# -gt 0 ]; do
    case "$1" in
        --dist) dist=$2; shift ;;
        *) echo "usage: $0 [--dist DIR]" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || { echo "$0: needs root (mmdebstrap, chroot)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "$0: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 1; }

SUITE=bullseye
PYTHON_SOURCE=python3.11          # Debian source package, from bookworm's deb-src
PREFIX=/opt/python3.11
BUILD_DEPS=build-essential,zlib1g-dev,libffi-dev,libssl-dev,binutils,ca-certificates,xz-utils
# Anything here changes the cached root filesystem's name, so a changed recipe never reuses an old one.
RECIPE="1 $SUITE $PYTHON_SOURCE $PREFIX $BUILD_DEPS pyinstaller"
key=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-12)
cache=${MNP_CACHE_DIR:-/var/cache/mnp}
rootfs="$cache/plugin-$SUITE-$key"
mkdir -p "$cache"

exec 9>"$cache/.plugin-compat.lock"   # one build at a time per cache (tests and release.sh may overlap)
flock 9

mounted=""
cleanup() {
    for m in $mounted; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    mounted=""
}
trap cleanup EXIT INT TERM
in_root() {  # run a shell snippet inside $1 with a clean environment
    dir=$1; shift
    if ! mountpoint -q "$dir/proc"; then mount -t proc proc "$dir/proc"; mounted="$dir/proc $mounted"; fi
    cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/mnp-build-ca.crt"; fi
    chroot "$dir" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 /bin/sh -euc "$@"
}

if [ ! -x "$rootfs/opt/mnp-build/bin/pyinstaller" ]; then
    for old in "$cache"/plugin-*; do [ -e "$old" ] && [ "$old" != "$rootfs" ] && rm -rf "$old"; done
    tmp="$rootfs.tmp"
    rm -rf "$tmp"
    echo "build-plugin-compat: preparing a $SUITE root filesystem with CPython 3.11 in $rootfs (once per cache)" >&2
    mmdebstrap --quiet --variant=minbase --include="$BUILD_DEPS" "$SUITE" "$tmp"
    in_root "$tmp" "
        echo 'deb-src http://deb.debian.org/debian bookworm main' > /etc/apt/sources.list.d/bookworm-src.list
        apt-get -qq update
        mkdir -p /build && cd /build
        apt-get -qq source --download-only $PYTHON_SOURCE
        tar xzf ${PYTHON_SOURCE}_*.orig.tar.gz
        cd Python-*/
        ./configure -q --prefix=$PREFIX --enable-shared LDFLAGS=-Wl,-rpath,$PREFIX/lib >/dev/null
        make -s -j\$(nproc) >/dev/null 2>make.log || { tail -40 make.log; exit 1; }
        make -s install >/dev/null 2>&1
        cd / && rm -rf /build /etc/apt/sources.list.d/bookworm-src.list && apt-get -qq update
        $PREFIX/bin/python3.11 -m venv /opt/mnp-build
        PIP_CERT=/etc/mnp-build-ca.crt /opt/mnp-build/bin/pip install -q pyinstaller
    "
    cleanup
    mv "$tmp" "$rootfs"
fi

# The project's sources the spec reads (cni/ and shared/, packaging/), fresh for every build.
rm -rf "$rootfs/src"
mkdir -p "$rootfs/src"
cp -R "$root/cni" "$root/shared" "$root/packaging" "$rootfs/src/"
find "$rootfs/src" -name __pycache__ -prune -exec rm -rf {} +
in_root "$rootfs" "PYINSTALLER=/opt/mnp-build/bin/pyinstaller sh /src/packaging/build-plugin.sh --dist /src/dist --work /src/build >/dev/null"
cleanup
out="$dist/mnp-glibc2.31"
rm -rf "$out"
mkdir -p "$dist"
cp -a "$rootfs/src/dist/mnp" "$out"
rm -rf "$rootfs/src"
echo "built $out/mnp ($(du -sh "$out" | cut -f1), glibc $SUITE)"
