#!/usr/bin/env bash
# backup-tenants.sh writes tenant archives (docs/archive.md) into a folder, one dated file per
# tenant and run, and keeps the newest N of each tenant. It calls the provisioner CLI for
# everything (no SQL of its own): `tenant list` to find tenants, `tenant backup` to write each.
set -uo pipefail

usage() {
  cat <<'USAGE'
Usage: backup-tenants.sh --dir DIR [--keep N] [--include-key-hashes] (--all | TENANT_ID...)

Back up one, several or all tenants into DIR. Each archive is written to
DIR/<tenant>/<tenant>-<UTC time>.tmarchive (a "/" in a tenant id becomes %2F), first under a
temporary name, so a failed backup never leaves a file that looks complete. After a tenant's
backup succeeds, its archives beyond the newest N are deleted.

Options:
  --dir DIR               folder of the archives (created when missing); required
  --keep N                archives kept per tenant, newest first (default 7; 0 keeps all)
  --all                   every active or suspended tenant (tenants being created, restored or
                          deleted are skipped)
  --include-key-hashes    put the tenants' API key hashes in the archives (a restore under the
                          same id makes the old keys work again); guard the folder accordingly
  --provisioner PATH      the provisioner binary (default: $PROVISIONER, else provisioner on PATH)
  -h, --help              this help

The database comes from TENANTMEM_DATABASE_URL (or --database-url in PROVISIONER_ARGS).

Exit codes: 0 every backup succeeded; 1 at least one failed (the others were still made);
2 bad usage.
USAGE
}

die_usage() { printf 'backup-tenants: %s\n' "$1" >&2; printf 'Run backup-tenants.sh --help.\n' >&2; exit 2; }
log() { printf 'backup-tenants: %s\n' "$*" >&2; }

dir="" keep=7 all=0 keys=() ids=()
prov="${PROVISIONER:-provisioner}"
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dir) (($# >= 2)) || die_usage "--dir needs a value"; dir=$2; shift 2 ;;
    --dir=*) dir=${1#*=}; shift ;;
    --keep) (($# >= 2)) || die_usage "--keep needs a value"; keep=$2; shift 2 ;;
    --keep=*) keep=${1#*=}; shift ;;
    --all) all=1; shift ;;
    --include-key-hashes) keys=(--include-key-hashes); shift ;;
    --provisioner) (($# >= 2)) || die_usage "--provisioner needs a value"; prov=$2; shift 2 ;;
    --provisioner=*) prov=${1#*=}; shift ;;
    --) shift; ids+=("$@"); break ;;
    -*) die_usage "unknown option $1" ;;
    *) ids+=("$1"); shift ;;
  esac
done
[[ -n "$dir" ]] || die_usage "--dir is required"
[[ "$keep" =~ ^[0-9]+$ ]] || die_usage "--keep must be a whole number, got '$keep'"
if ((all)) && ((${#ids[@]})); then die_usage "give --all or tenant ids, not both"; fi
if ((!all)) && ((${#ids[@]} == 0)); then die_usage "give --all or at least one tenant id"; fi
command -v "$prov" >/dev/null 2>&1 || die_usage "provisioner binary '$prov' not found (set --provisioner or PROVISIONER)"
read -r -a extra <<<"${PROVISIONER_ARGS:-}"

mkdir -p -- "$dir" || { log "cannot create $dir"; exit 1; }

if ((all)); then
  # tenant list prints a header ("ID TIER PLACEMENT SCHEMA STATUS ...", no empty cells) and, on
  # stderr, the --after of the next page when there is one. The status column is found by name.
  after=()
  while :; do
    errf=$(mktemp)
    if ! page=$("$prov" "${extra[@]}" tenant list --limit 1000 "${after[@]}" 2>"$errf"); then
      log "tenant list failed: $(cat "$errf")"; rm -f "$errf"; exit 1
    fi
    status_col=-1
    while read -r -a cols; do
      ((${#cols[@]})) || continue
      if [[ "${cols[0]}" == ID ]]; then
        for i in "${!cols[@]}"; do [[ "${cols[$i]}" == STATUS ]] && status_col=$i; done
        continue
      fi
      ((status_col >= 0)) || { log "tenant list printed no STATUS column"; exit 1; }
      id=${cols[0]} status=${cols[$status_col]}
      case "$status" in active|suspended) ids+=("$id") ;; *) log "skipping $id ($status)" ;; esac
    done <<<"$page"
    next=$(sed -n 's/^more tenants: run again with --after //p' "$errf")
    rm -f "$errf"
    [[ -n "$next" ]] || break
    next=${next#\"}; next=${next%\"}
    after=(--after "$next")
  done
  ((${#ids[@]})) || { log "no tenant to back up"; exit 0; }
fi

failed=0
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for id in "${ids[@]}"; do
  safe=${id//\//%2F}
  tdir="$dir/$safe"
  mkdir -p -- "$tdir" || { log "$id: cannot create $tdir"; failed=1; continue; }
  file="$tdir/$safe-$stamp.tmarchive"
  if out=$("$prov" "${extra[@]}" tenant backup "$id" --out "$file" --quiet "${keys[@]}" 2>&1); then
    printf '%s\n' "$out"
  else
    log "$id: backup failed: $out"; failed=1; continue
  fi
  if ((keep > 0)); then
    # Names sort by time: drop all but the newest $keep.
    mapfile -t old < <(find "$tdir" -maxdepth 1 -type f -name "$safe-*.tmarchive" | sort -r | tail -n +"$((keep + 1))")
    for f in "${old[@]}"; do rm -f -- "$f" && log "$id: removed old archive $(basename "$f")"; done
  fi
done
exit "$failed"
