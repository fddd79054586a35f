#!/bin/sh
# Make the release set of the version in shared/version.py (packaging/README.md, "Releases"):
#
#   mnp-cni-plugin-VERSION-linux-amd64.tar.gz   the plugin bundle (mnp/mnp + mnp/_internal/), built against glibc 2.31
#   mnp-image-VERSION.tar                       the image mnp:VERSION as a docker-archive (`docker load` / `podman load`)
#   mnp-VERSION.yaml                            the manifests: `kubectl kustomize deploy/kustomize/base`
#   mnp-VERSION-OVERLAY.yaml                    the same for each overlay under deploy/kustomize/overlays/
#   SHA256SUMS                                  `sha256sum -c SHA256SUMS` checks all of the above
#
#   packaging/release.sh [--out DIR] [--no-image] [--plugin BUNDLE]     (DIR = dist/release/VERSION)
#
# --plugin takes a bundle already built by packaging/build-plugin-compat.sh instead of building it again.
#
# Refuses when CHANGELOG.md's newest heading is not this version, or the manifests name another image tag. Needs
# root, buildah and mmdebstrap (packaging/install.sh --image) and kubectl (for `kubectl kustomize`); a few minutes
# on a fresh machine, about two with the caches of packaging/base-image.sh and build-plugin-compat.sh.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
version=$(sed -n 's/^VERSION = "\(.*\)"$/\1/p' "$root/shared/version.py")
out=""
image=1
plugin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift ;;
        --no-image) image=0 ;;
        --plugin) plugin=$2; shift ;;
        *) echo "usage: $0 [--out DIR] [--no-image] [--plugin BUNDLE]" >&2; exit 2 ;;
    esac
    shift
done
out=${out:-$root/dist/release/$version}
die() { echo "release.sh: $*" >&2; exit 1; }

[ -n "$version" ] || die "no VERSION in shared/version.py"
newest=$(sed -n 's/^## \([^ ]*\).*/\1/p' "$root/CHANGELOG.md" | head -n 1)
[ "$newest" = "$version" ] || die "CHANGELOG.md's newest entry is '$newest', not $version: write it first"
command -v kubectl >/dev/null || die "kubectl is needed to render the kustomize base (kubectl kustomize)"

rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Manifests first: cheap, and a wrong image tag stops the release before the long builds.
kubectl kustomize "$root/deploy/kustomize/base" > "$out/mnp-$version.yaml"
for overlay in "$root"/deploy/kustomize/overlays/*/; do
    kubectl kustomize "$overlay" > "$out/mnp-$version-$(basename "$overlay").yaml"
done
for file in "$out"/*.yaml; do
    images=$(sed -n 's/^ *image: //p' "$file" | sort -u)
    [ "$images" = "mnp:$version" ] || die "$(basename "$file") names image(s) '$images', not mnp:$version"
done

# The plugin bundle, against glibc 2.31: what runs on the hosts (packaging/README.md, "Old hosts").
if [ -n "$plugin" ]; then
    cp -a "$plugin" "$work/mnp-glibc2.31"
else
    "$here/build-plugin-compat.sh" --dist "$work" >&2
fi
bundle="$work/mnp-glibc2.31"
answer=$(echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION "$bundle/mnp")
case "$answer" in *"\"mnpVersion\": \"$version\""* | *"\"mnpVersion\":\"$version\""*) ;;
    *) die "the bundle answers VERSION with $answer, not mnpVersion $version" ;; esac
mv "$bundle" "$work/mnp"
tar -C "$work" --owner=0 --group=0 --numeric-owner -czf "$out/mnp-cni-plugin-$version-linux-amd64.tar.gz" mnp

if [ "$image" = 1 ]; then
    export BUILDAH_ISOLATION=chroot
    base=$("$here/base-image.sh")
    tag="localhost/mnp:$version"
    set -- --build-arg "BASE_IMAGE=$base" --build-arg "MNP_VERSION=$version" \
        --volume "$work/mnp:/run/mnp-plugin:ro" --build-arg PLUGIN_PREBUILT=/run/mnp-plugin
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        set -- "$@" --volume /etc/ssl/certs/ca-certificates.crt:/run/build-ca.crt:ro \
            --build-arg BUILD_CA_BUNDLE=/run/build-ca.crt
    fi
    buildah bud --quiet --isolation=chroot --layers=false -f "$root/packaging/Containerfile" \
        --ignorefile "$root/packaging/container/containerignore" "$@" -t "$tag" "$root" >/dev/null
    label=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}' "$tag")
    [ "$label" = "$version" ] || die "the image's version label is '$label', not $version"
    buildah push --quiet "$tag" "docker-archive:$out/mnp-image-$version.tar:mnp:$version"
    buildah rmi "$tag" >/dev/null
fi

(cd "$out" && sha256sum -- *.tar.gz *.yaml $( [ "$image" = 1 ] && echo "mnp-image-$version.tar") > SHA256SUMS)
echo "release $version in $out:" >&2
ls -l "$out" >&2
