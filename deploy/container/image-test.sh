#!/usr/bin/env bash
# Builds the container image under a throwaway tag and inspects it without running a container
# (this machine cannot run one): configuration (user, command, environment, ports, labels), the
# exact file list and ownership, the binaries' build settings, and both binaries answering
# --version inside the image's own file system (chroot as the image's user, so they must be static
# and need nothing but what the image holds). `make image-test` runs it; CI calls that.
#
#   image-test.sh RELEASE_DIR VERSION COMMIT BUILD_DATE
set -euo pipefail
release_dir=$1 version=$2 commit=$3 build_date=$4
here=$(cd "$(dirname "$0")" && pwd)
image=localhost/tenantmem-image-test:$$
work=$(mktemp -d)
container=""
cleanup() {
	[[ -n $container ]] && podman rm --force "$container" >/dev/null 2>&1 || true
	podman rmi --force "$image" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

passed=0 failed=0
check() { # check NAME GOT WANT
	if [[ $2 == "$3" ]]; then
		passed=$((passed + 1)); printf 'ok    %s\n' "$1"
	else
		failed=$((failed + 1)); printf 'FAIL  %s\n      got:  %s\n      want: %s\n' "$1" "$2" "$3"
	fi
}

"$here/build.sh" "$release_dir" "$image" "$version" "$commit" "$build_date" >"$work/build.log" 2>&1 ||
	{ cat "$work/build.log"; echo "image-test: podman build failed"; exit 1; }

inspect() { podman image inspect --format "$1" "$image"; }
check "runs as the numeric unprivileged user" "$(inspect '{{.Config.User}}')" "65532:65532"
check "no entrypoint: the command names the binary" "$(inspect '{{json .Config.Entrypoint}}')" "null"
check "the default command is the router" "$(inspect '{{json .Config.Cmd}}')" '["router"]'
check "ports" "$(inspect '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}')" "8080/tcp 8081/tcp 9080/tcp 9081/tcp "
check "stop signal" "$(inspect '{{.Config.StopSignal}}')" "SIGTERM"
env=$(inspect '{{range .Config.Env}}{{.}}{{"\n"}}{{end}}' | sort | tr '\n' ' ')
check "environment" "$env" "PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt TENANTMEM_PROVISIONER_LISTEN=0.0.0.0:8081 TENANTMEM_PROVISIONER_METRICS_LISTEN=0.0.0.0:9081 TENANTMEM_ROUTER_LISTEN=0.0.0.0:8080 TENANTMEM_ROUTER_METRICS_LISTEN=0.0.0.0:9080 "
label() { inspect "{{index .Config.Labels \"org.opencontainers.image.$1\"}}"; }
check "label version" "$(label version)" "$version"
check "label revision" "$(label revision)" "$commit"
check "label created" "$(label created)" "$build_date"
check "label title" "$(label title)" "tenantmem"

# The image's file system, as a tar stream of a created (never started) container.
container=$(podman create "$image")
mkdir "$work/rootfs"
podman export "$container" | tar -x -C "$work/rootfs" --same-owner --numeric-owner
files=$(cd "$work/rootfs" && find . -type f -o -type l | sort | tr '\n' ' ')
check "exactly these files (no shell, no package manager)" "$files" \
	"./etc/group ./etc/passwd ./etc/ssl/certs/ca-certificates.crt ./usr/local/bin/provisioner ./usr/local/bin/router "
for bin in router provisioner; do
	f=$work/rootfs/usr/local/bin/$bin
	check "$bin: owned by root, not writable by the user" "$(stat -c '%u:%g %a' "$f")" "0:0 755"
	check "$bin: statically linked" "$(file -b "$f" | grep -o 'statically linked' || echo 'dynamically linked')" "statically linked"
	settings=$(go version -m "$f" | awk '$1 == "build" {print $2}' | grep -E '^(CGO_ENABLED|-trimpath)=' | sort | tr '\n' ' ')
	check "$bin: built with CGO_ENABLED=0 and -trimpath" "$settings" "-trimpath=true CGO_ENABLED=0 "
	check "$bin: same binary as make release" "$(sha256sum <"$f")" "$(sha256sum <"$release_dir/$bin")"
	# Inside the image's own file system, as its user: proves the binary needs nothing else.
	out=$(chroot --userspec=65532:65532 "$work/rootfs" "/usr/local/bin/$bin" --version 2>&1) || true
	check "$bin --version in the image, as 65532" "$out" "$bin $version (commit ${commit:0:12}${commit:40}, built $build_date, $(go env GOVERSION) $(go env GOOS)/$(go env GOARCH))"
done
check "the CA bundle is the host's" "$(sha256sum <"$work/rootfs/etc/ssl/certs/ca-certificates.crt")" \
	"$(sha256sum <"${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}")"
size=$(inspect '{{.Size}}')
printf 'image size: %s bytes (%s MiB)\n' "$size" "$((size / 1048576))"

printf '%d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
