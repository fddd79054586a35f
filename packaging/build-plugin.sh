#!/bin/sh
# Build the frozen `mnp` CNI plugin with PyInstaller from packaging/mnp.spec (packaging/README.md says why).
#
#   packaging/build-plugin.sh [--onefile] [--importtime] [--dist DIR] [--work DIR]
#
# Default: the one-dir bundle DIR/mnp/ (DIR = dist/), executable DIR/mnp/mnp. Install the directory (for example
# as /opt/mnp/cni/mnp/) and symlink /opt/cni/bin/mnp -> /opt/mnp/cni/mnp/mnp. --onefile builds DIR/mnp-onefile
# instead (measured and rejected: it unpacks itself on every call); --importtime bakes `-X importtime` into the
# binary, for start-up profiling only. PYINSTALLER overrides the pyinstaller command (default: the repo's venv).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
dist="$root/dist"
work="$root/build/pyinstaller"
MNP_ONEFILE=0
MNP_IMPORTTIME=0
while [ $# -gt 0 ]; do
    case "$1" in
        --onefile) MNP_ONEFILE=1 ;;
        --importtime) MNP_IMPORTTIME=1 ;;
        --dist) dist=$2; shift ;;
        --work) work=$2; shift ;;
        *) echo "usage: $0 [--onefile] [--importtime] [--dist DIR] [--work DIR]" >&2; exit 2 ;;
    esac
    shift
done
name=mnp
[ "$MNP_ONEFILE" = 1 ] && name="$name-onefile"
[ "$MNP_IMPORTTIME" = 1 ] && name="$name-importtime"

MNP_ROOT=$root MNP_ONEFILE=$MNP_ONEFILE MNP_IMPORTTIME=$MNP_IMPORTTIME \
    "${PYINSTALLER:-$root/.venv/bin/pyinstaller}" --noconfirm --clean --log-level WARN \
    --distpath "$dist" --workpath "$work/$name" "$here/mnp.spec"

if [ "$MNP_ONEFILE" = 1 ]; then
    echo "built $dist/$name ($(du -sh "$dist/$name" | cut -f1))"
else
    echo "built $dist/$name/$name ($(du -sh "$dist/$name" | cut -f1))"
fi
