#!/bin/sh
# mnp-install-plugin: the DaemonSet's init container. Installs the frozen `mnp` CNI plugin (a PyInstaller one-dir
# bundle: the executable `mnp` plus `_internal/`) on the host and points the CNI bin dir at it.
#
#   $MNP_BUNDLES_DIR/<id>/                 a copy of the bundle; <id> = hash of its content, so reinstalling the same
#                                          image is a no-op and a new image gets a new directory
#   $MNP_CNI_BIN_DIR/mnp -> $MNP_BUNDLES_DIR_ON_HOST/<id>/mnp
#
# Every step is atomic for a concurrent CNI call: the bundle is copied to a temporary directory and renamed into
# place, and the symlink is replaced by renaming a new one over it (rename(2)), so the runtime runs either the old or
# the new plugin, never a half-written one. A PyInstaller one-dir bundle works through a symlink (it finds
# `_internal/` next to the resolved executable). The previously linked bundle is kept, because a plugin call may
# still be running from it; older ones are removed.
#
# Environment (defaults are the DaemonSet's container paths):
#   MNP_BUNDLE_SRC            the bundle inside the image               /usr/local/lib/mnp/cni
#   MNP_BUNDLES_DIR           the host's bundle dir, as mounted here    /host/opt/mnp/bundles
#   MNP_BUNDLES_DIR_ON_HOST   the same dir as the host sees it          /opt/mnp/bundles
#   MNP_CNI_BIN_DIR           the host's CNI bin dir, as mounted here   /host/opt/cni/bin
#   MNP_PLUGIN_NAME           the name in the CNI bin dir ("type")      mnp
set -eu

src=${MNP_BUNDLE_SRC:-/usr/local/lib/mnp/cni}
bundles=${MNP_BUNDLES_DIR:-/host/opt/mnp/bundles}
bundles_on_host=${MNP_BUNDLES_DIR_ON_HOST:-/opt/mnp/bundles}
cni_bin=${MNP_CNI_BIN_DIR:-/host/opt/cni/bin}
name=${MNP_PLUGIN_NAME:-mnp}

log() { echo "mnp-install-plugin: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ -x "$src/mnp" ] || die "no plugin executable at $src/mnp (is this the mnp image?)"
[ -d "$cni_bin" ] || die "CNI bin dir $cni_bin is not mounted"
mkdir -p "$bundles"

# Content id: sha256 over the sorted list of (file hash, relative path). Same bundle -> same id.
id=$(cd "$src" && find . -type f -print | LC_ALL=C sort | while IFS= read -r f; do sha256sum "$f"; done \
	| sha256sum | cut -c1-16)
final="$bundles/$id"

if [ -x "$final/mnp" ]; then
	log "bundle $id already installed"
else
	tmp="$bundles/.tmp-$id-$$"
	rm -rf "$tmp"
	mkdir "$tmp"
	cp -R "$src/." "$tmp/"
	# A leftover from an interrupted earlier run under the final name is incomplete by definition (the rename below
	# is the only way a complete one gets there): replace it.
	rm -rf "$final"
	mv "$tmp" "$final"
	log "installed bundle $id"
fi

# Smoke test: the copy starts and answers the CNI VERSION command. (It runs with this image's libraries; the host's
# glibc must be at least the bundle's build glibc, 2.31 for releases -- see packaging/README.md, "Old hosts".)
if ! out=$(echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION "$final/mnp" 2>&1); then
	die "the installed plugin does not run: $out"
fi

link="$cni_bin/$name"
previous=""
if [ -L "$link" ]; then
	previous=$(readlink "$link")
fi
target="$bundles_on_host/$id/mnp"
if [ "$previous" != "$target" ]; then
	ln -sfn "$target" "$cni_bin/.$name.new"
	mv -fT "$cni_bin/.$name.new" "$link"
	log "$link -> $target (was: ${previous:-nothing})"
fi

# Prune: keep the current and the previously linked bundle, and nothing else of ours.
keep_previous=""
case "$previous" in
"$bundles_on_host"/*/mnp) keep_previous=$(basename "$(dirname "$previous")") ;;
esac
for dir in "$bundles"/* "$bundles"/.tmp-*; do
	[ -e "$dir" ] || continue
	base=$(basename "$dir")
	[ "$base" = "$id" ] && continue
	[ -n "$keep_previous" ] && [ "$base" = "$keep_previous" ] && continue
	rm -rf "$dir"
	log "removed old bundle $base"
done
