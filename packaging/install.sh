#!/usr/bin/env bash
# Installs everything mnp needs on a Debian/Ubuntu machine (root): the system tools the plugin, the daemon and the
# tests use, a virtualenv with the project, and the frozen `mnp` CNI plugin. Idempotent; safe to run again.
#   packaging/install.sh            everything
#   packaging/install.sh --no-build skip the PyInstaller build of the plugin
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
[ "${1:-}" = "--no-build" ] && build=0

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (it installs system packages and the tests create network namespaces)" >&2
  exit 1
fi

need=()
for pair in nft:nftables ip:iproute2 conntrack:conntrack nsenter:util-linux tcpdump:tcpdump cc:gcc; do
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
