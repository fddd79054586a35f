#!/bin/sh
# Make the Debian 12 base image the Containerfile builds on, without a registry: mmdebstrap's minbase root
# filesystem from the Debian mirror, imported by buildah as localhost/mnp-base:bookworm-minbase. Prints its name.
#
#   packaging/base-image.sh        → localhost/mnp-base:bookworm-minbase (made once, remade when a week old)
#
# Cached in buildah's storage between runs on one machine; $MNP_CACHE_DIR (default /var/cache/mnp) holds the stamp
# that dates it. Needs root, buildah and mmdebstrap (packaging/install.sh --image). Used by packaging/release.sh
# and tests/integration/test_image_build.py.
set -eu

name=localhost/mnp-base:bookworm-minbase
cache=${MNP_CACHE_DIR:-/var/cache/mnp}
stamp="$cache/base-image.stamp"
max_age_days=7
export BUILDAH_ISOLATION=chroot
mkdir -p "$cache"
exec 9>"$cache/.base-image.lock"
flock 9

if [ -f "$stamp" ] && [ -z "$(find "$stamp" -mtime +$max_age_days)" ] \
    && buildah inspect --type image "$name" >/dev/null 2>&1; then
    echo "$name"
    exit 0
fi
rootfs="$cache/bookworm-minbase.tar"
trap 'rm -f "$rootfs"' EXIT
mmdebstrap --quiet --variant=minbase bookworm "$rootfs" >&2
ctr=$(buildah from scratch)
if ! { buildah add --quiet "$ctr" "$rootfs" / >&2 && buildah commit --quiet --rm "$ctr" "$name" >/dev/null; }; then
    buildah rm "$ctr" >/dev/null 2>&1 || true
    exit 1
fi
touch "$stamp"
echo "$name"
