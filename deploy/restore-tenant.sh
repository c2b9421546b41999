#!/usr/bin/env bash
# restore-tenant.sh restores one tenant from an archive written by backup-tenants.sh (or by
# `provisioner tenant backup`). It calls the provisioner CLI; no SQL of its own.
set -uo pipefail

usage() {
  cat <<'USAGE'
Usage: restore-tenant.sh [options] FILE
       restore-tenant.sh [options] --latest DIR TENANT_ID

Restore one tenant from FILE, or from the newest archive of TENANT_ID in DIR (the folder of
backup-tenants.sh). The tenant is built in status provisioning, checked against the archive's
counts and checksums, and only then made active; a failed or killed restore leaves nothing a
user can reach, and running the same command again finishes or cleans it.

Options:
  --latest DIR ID         restore the newest DIR/<ID>/<ID>-*.tmarchive
  --as ID                 restore under another tenant id (new document ids, a new API key)
  --tier TIER             shared, schema or database (default: the archive's)
  --placement P           placement to restore onto (default: the archive's when it takes the tier)
  --replace               overwrite an existing tenant with the same id (it keeps serving until
                          the archive is loaded and verified)
  --provisioner PATH      the provisioner binary (default: $PROVISIONER, else provisioner on PATH)
  -h, --help              this help

The database comes from TENANTMEM_DATABASE_URL (or --database-url in PROVISIONER_ARGS). A new
API key, when one is issued, is printed once: store it.

Exit codes: 0 restored; 1 failure (database, interrupted); 2 bad usage or a bad archive
(truncated, corrupted, foreign, newer, other dimension) or the tenant exists without --replace.
USAGE
}

die_usage() { printf 'restore-tenant: %s\n' "$1" >&2; printf 'Run restore-tenant.sh --help.\n' >&2; exit 2; }

file="" latest_dir="" latest_id="" args=()
prov="${PROVISIONER:-provisioner}"
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --latest) (($# >= 3)) || die_usage "--latest needs DIR and TENANT_ID"; latest_dir=$2; latest_id=$3; shift 3 ;;
    --as|--tier|--placement) (($# >= 2)) || die_usage "$1 needs a value"; args+=("$1" "$2"); shift 2 ;;
    --as=*|--tier=*|--placement=*) args+=("$1"); shift ;;
    --replace) args+=(--replace); shift ;;
    --provisioner) (($# >= 2)) || die_usage "--provisioner needs a value"; prov=$2; shift 2 ;;
    --provisioner=*) prov=${1#*=}; shift ;;
    -*) die_usage "unknown option $1" ;;
    *) [[ -z "$file" ]] || die_usage "give one archive file"; file=$1; shift ;;
  esac
done
if [[ -n "$latest_dir" ]]; then
  [[ -z "$file" ]] || die_usage "give FILE or --latest, not both"
  safe=${latest_id//\//%2F}
  file=$(find "$latest_dir/$safe" -maxdepth 1 -type f -name "$safe-*.tmarchive" 2>/dev/null | sort -r | head -n 1)
  [[ -n "$file" ]] || die_usage "no archive of tenant '$latest_id' in $latest_dir"
fi
[[ -n "$file" ]] || die_usage "give an archive FILE or --latest DIR TENANT_ID"
[[ -f "$file" ]] || die_usage "no such file: $file"
command -v "$prov" >/dev/null 2>&1 || die_usage "provisioner binary '$prov' not found (set --provisioner or PROVISIONER)"
read -r -a extra <<<"${PROVISIONER_ARGS:-}"

printf 'restore-tenant: restoring %s\n' "$file" >&2
"$prov" "${extra[@]}" tenant restore "$file" "${args[@]}"
