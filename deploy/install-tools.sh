#!/usr/bin/env bash
# install-tools.sh installs, when missing, the system tools that tests and checks use besides
# PostgreSQL (deploy/install-pgvector.sh does that one). Idempotent; needs root to install.
#
#   install-tools.sh TOOL...     TOOL: python3 | chromium | podman | ca-certificates | systemd | file
#
# python3 runs the Python client's tests (make test), chromium the operator console's headless
# browser test (make test), podman builds the container image, the CA
# bundle goes into the image, file tells static binaries in it, and systemd provides
# systemd-analyze for the unit checks. On a
# system without apt it says what is missing and exits 1.
set -euo pipefail

log() { printf 'install-tools: %s\n' "$*" >&2; }

# present TOOL: whether TOOL is already usable.
present() {
	case $1 in
	python3) command -v python3 >/dev/null && python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ;;
	chromium) command -v chromium >/dev/null || command -v chromium-browser >/dev/null ;;
	podman) command -v podman >/dev/null ;;
	ca-certificates) [[ -s /etc/ssl/certs/ca-certificates.crt ]] ;;
	systemd) command -v systemd-analyze >/dev/null ;;
	file) command -v file >/dev/null ;;
	*) log "unknown tool $1"; exit 2 ;;
	esac
}

missing=()
for tool in "$@"; do
	present "$tool" || missing+=("$tool")
done
((${#missing[@]} == 0)) && exit 0

if ! command -v apt-get >/dev/null || [[ $(id -u) -ne 0 ]]; then
	log "missing: ${missing[*]}; install them with your package manager (as root: apt-get install ${missing[*]})"
	exit 1
fi
log "installing ${missing[*]} with apt-get"
# Other installers on this machine (parallel CI jobs, developers) take the same lock.
lock=${APT_LOCK:-/work/.apt.lock}
[[ -d $(dirname "$lock") ]] || lock=/tmp/tenantmem-apt.lock
export DEBIAN_FRONTEND=noninteractive
flock "$lock" apt-get update -qq
flock "$lock" apt-get install -y -qq "${missing[@]}" >/dev/null
for tool in "${missing[@]}"; do
	present "$tool" || { log "$tool is still missing after apt-get install"; exit 1; }
done
