#!/usr/bin/env bash
# Checks the systemd units in this folder: every hardening setting tenantmem relies on is there,
# `systemd-analyze verify` accepts each unit without a single warning (an unknown or misspelt key
# is only a warning to systemd, so any output fails here), and `systemd-analyze security` rates
# each unit's exposure at most 1.5 of 10. `make units-test` runs it; CI calls that.
#
#   units-test.sh RELEASE_DIR     (the binaries of make release stand in for /usr/local/bin)
set -euo pipefail
release_dir=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The settings every unit must carry, exactly as written here.
required=(
	"DynamicUser=yes" "NoNewPrivileges=yes" "CapabilityBoundingSet=" "ProtectSystem=strict"
	"ProtectHome=yes" "PrivateTmp=yes" "PrivateDevices=yes" "ProtectKernelTunables=yes"
	"ProtectKernelModules=yes" "ProtectControlGroups=yes" "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"
	"RestrictNamespaces=yes" "LockPersonality=yes" "MemoryDenyWriteExecute=yes"
	"SystemCallArchitectures=native" "SystemCallFilter=@system-service" "SystemCallFilter=~@privileged @resources"
	"UMask=0077"
)
max_exposure=15 # tenths: 1.5

passed=0 failed=0
ok() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n%s\n' "$1" "${2:-}"; }

units=("$here"/*.service)
((${#units[@]} == 3)) || { echo "units-test: expected 3 units in $here, found ${#units[@]}"; exit 1; }
for unit in "${units[@]}"; do
	name=$(basename "$unit")
	missing=()
	for key in "${required[@]}"; do grep -qxF "$key" "$unit" || missing+=("$key"); done
	if ((${#missing[@]} == 0)); then ok "$name: hardening settings"; else fail "$name: hardening settings" "      missing: ${missing[*]}"; fi
	grep -q '^EnvironmentFile=/etc/tenantmem/' "$unit" && ok "$name: secrets from an EnvironmentFile" ||
		fail "$name: secrets from an EnvironmentFile" "      no EnvironmentFile=/etc/tenantmem/..."

	# verify checks that ExecStart is executable and the EnvironmentFile exists: point them at
	# the release binaries and empty files.
	sed -e "s|/usr/local/bin/|$release_dir/|g" -e "s|/etc/tenantmem/|$work/|g" "$unit" >"$work/$name"
	grep -o "$work/[a-z.]*env" "$work/$name" | xargs -r touch
	if out=$(systemd-analyze verify "$work/$name" 2>&1) && [[ -z $out ]]; then
		ok "$name: systemd-analyze verify, no warnings"
	else
		fail "$name: systemd-analyze verify, no warnings" "$out"
	fi
	if out=$(systemd-analyze security --offline=yes --threshold=$max_exposure "$work/$name" 2>&1); then
		ok "$name: $(grep -o 'exposure level.*' <<<"$out")"
	else
		fail "$name: exposure at most 1.5" "$(grep -E '✗|exposure' <<<"$out")"
	fi
done

printf '%d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
