#!/usr/bin/env bash
# Installs everything mnp needs on a Debian/Ubuntu machine (root): the system tools the plugin, the daemon and the
# tests use, a virtualenv with the project, and the frozen `mnp` CNI plugin. Idempotent; safe to run again.
#   packaging/install.sh            everything
#   packaging/install.sh --no-build skip the PyInstaller build of the plugin
#   packaging/install.sh --image    also the image tools: buildah and mmdebstrap (the image and the glibc-2.31 plugin
#                                   build: tests/integration/test_image_build.py, test_plugin_compat.py); .ci/run
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
image=0
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --image) image=1 ;;
    *) echo "usage: $0 [--no-build] [--image]" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (it installs system packages and the tests create network namespaces)" >&2
  exit 1
fi

need=()
tools="nft:nftables ip:iproute2 conntrack:conntrack nsenter:util-linux tcpdump:tcpdump cc:gcc objdump:binutils"
# buildah with chroot isolation needs no OCI runtime (crun/runc) nor a registry; mmdebstrap makes the base rootfs.
[ "$image" = 1 ] && tools="$tools buildah:buildah mmdebstrap:mmdebstrap"
for pair in $tools; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ -x /usr/lib/cni/macvlan ] || need+=(containernetworking-plugins)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "install.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,build]'

if [ "$build" = 1 ] && [ -x packaging/build-plugin.sh ]; then
  packaging/build-plugin.sh
fi
echo "install.sh: done (.venv/bin/mnpctl, .venv/bin/mnpd, .venv/bin/mnp)"
