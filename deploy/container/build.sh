#!/usr/bin/env bash
# Builds the tenantmem container image from the binaries of `make release`, without network
# access inside the build. Called by `make image` and `make image-test`.
#
#   build.sh RELEASE_DIR IMAGE_REF VERSION COMMIT BUILD_DATE
set -euo pipefail
release_dir=$1 image=$2 version=$3 commit=$4 build_date=$5
here=$(cd "$(dirname "$0")" && pwd)

command -v podman >/dev/null || { echo "build.sh: podman is missing; run deploy/install-tools.sh (make deps does)" >&2; exit 1; }
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
[[ -s $ca ]] || { echo "build.sh: no CA bundle at $ca (apt-get install ca-certificates, or set CA_BUNDLE)" >&2; exit 1; }
for bin in router provisioner; do
	[[ -x $release_dir/$bin ]] || { echo "build.sh: $release_dir/$bin is missing; run make release" >&2; exit 1; }
done

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$release_dir/router" "$release_dir/provisioner" "$here/passwd" "$here/group" "$ctx/"
cp "$ca" "$ctx/ca-certificates.crt"

podman build --network=none --pull=never --layers=false \
	--file "$here/Containerfile" \
	--build-arg VERSION="$version" --build-arg COMMIT="$commit" --build-arg BUILD_DATE="$build_date" \
	--tag "$image" "$ctx"
