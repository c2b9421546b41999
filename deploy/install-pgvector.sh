#!/usr/bin/env bash
# install-pgvector.sh makes PostgreSQL (15 or newer) with pgvector 0.8+ available on this machine.
#
# It is idempotent: when the vector extension is already installed for the chosen PostgreSQL it only
# says so. Otherwise, in order:
#   1. the distribution package postgresql-NN-pgvector, when apt has one;
#   2. on Debian/Ubuntu without that package: the pgvector source package of a newer Debian release,
#      fetched with apt-get source from the mirror this machine's own apt sources already use, built
#      against postgresql-server-dev-NN;
#   3. elsewhere: instructions of what to install, and exit 1.
#
# Environment: PG_CONFIG (default: the newest /usr/lib/postgresql/NN/bin/pg_config, NN >= 15),
# PGVECTOR_SOURCE_SUITE (default: trixie), PGVECTOR_BUILD_DIR (default: a temporary folder).
set -euo pipefail

log() { printf 'install-pgvector: %s\n' "$*" >&2; }

find_pg_config() {
  if [[ -n "${PG_CONFIG:-}" ]]; then echo "$PG_CONFIG"; return; fi
  local best="" v
  for p in /usr/lib/postgresql/*/bin/pg_config; do
    [[ -x "$p" ]] || continue
    v=$(basename "$(dirname "$(dirname "$p")")")
    [[ "$v" =~ ^[0-9]+$ ]] && (( v >= 15 )) || continue
    if [[ -z "$best" ]] || (( v > $(basename "$(dirname "$(dirname "$best")")") )); then best=$p; fi
  done
  if [[ -z "$best" ]] && command -v pg_config >/dev/null; then best=$(command -v pg_config); fi
  echo "$best"
}

instructions() {
  cat >&2 <<'MSG'
install-pgvector: could not install pgvector automatically on this system.
Install PostgreSQL 15 or newer with the pgvector extension (0.8 or newer), then run this again:
  - Debian/Ubuntu with the PGDG repository:  apt-get install postgresql-16 postgresql-16-pgvector
  - Fedora/RHEL (PGDG):                      dnf install postgresql16-server pgvector_16
  - macOS (Homebrew):                        brew install postgresql@16 pgvector
  - from source: https://github.com/pgvector/pgvector#installation (make && make install with PG_CONFIG set)
Point PG_CONFIG at that server's pg_config if it is not under /usr/lib/postgresql/NN/bin.
MSG
  exit 1
}

pg_config=$(find_pg_config)
if [[ -z "$pg_config" ]]; then
  log "no PostgreSQL 15+ found (looked for /usr/lib/postgresql/NN/bin/pg_config and pg_config on PATH)"
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    log "installing postgresql-15 with apt"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null \
      || instructions
    pg_config=$(find_pg_config)
  fi
  [[ -n "$pg_config" ]] || instructions
fi
major=$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
(( major >= 15 )) || { log "PostgreSQL $major is too old; need 15 or newer"; instructions; }
control="$("$pg_config" --sharedir)/extension/vector.control"

installed_version() { sed -nE "s/^default_version *= *'([^']+)'.*/\1/p" "$control" 2>/dev/null; }
version_ok() { # pgvector 0.8 or newer
  local v; v=$(installed_version); [[ -n "$v" ]] || return 1
  local maj=${v%%.*} rest=${v#*.}; local min=${rest%%.*}
  (( maj > 0 || min >= 8 ))
}

if version_ok; then
  log "pgvector $(installed_version) is installed for PostgreSQL $major ($control)"
  exit 0
fi

if ! command -v apt-get >/dev/null; then instructions; fi
if [[ $(id -u) != 0 ]]; then log "run as root (or with sudo) to install packages"; instructions; fi
export DEBIAN_FRONTEND=noninteractive

# 1. The distribution package, when apt has one.
apt-get update -qq || log "apt-get update failed; trying what is cached"
if apt-cache policy "postgresql-$major-pgvector" 2>/dev/null | grep -qE 'Candidate: [0-9]'; then
  log "installing postgresql-$major-pgvector from apt"
  apt-get install -y -qq "postgresql-$major-pgvector" >/dev/null
  if version_ok; then log "pgvector $(installed_version) installed"; exit 0; fi
  log "postgresql-$major-pgvector gave pgvector '$(installed_version)', older than 0.8; building from source"
fi

# 2. Build the Debian source package of a newer release, from the mirror this machine already uses.
suite=${PGVECTOR_SOURCE_SUITE:-trixie}
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -f "$f" ]] || continue
  # deb822: take the URIs of a stanza whose Suites are not a -security suite.
  mirror=$(awk 'BEGIN{RS="";FS="\n"} {u="";s=""; for(i=1;i<=NF;i++){ if($i ~ /^URIs:/){sub(/^URIs: */,"",$i); split($i,a," "); u=a[1]} if($i ~ /^Suites:/){s=$i} } if(u!="" && s !~ /security/ && u ~ /debian\/?$/){print u; exit}}' "$f")
  [[ -n "$mirror" ]] && break
done
if [[ -z "$mirror" && -f /etc/apt/sources.list ]]; then
  mirror=$(awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:\/\//){print $i; exit}}' /etc/apt/sources.list)
fi
[[ -n "$mirror" ]] || { log "no Debian mirror found in this machine's apt sources"; instructions; }

work=${PGVECTOR_BUILD_DIR:-$(mktemp -d)}
mkdir -p "$work/lists/partial" "$work/src"
# apt downloads as the unprivileged _apt user when it can; let it write here.
chmod 755 "$work"; chown -R _apt "$work/lists" "$work/src" 2>/dev/null || true
echo "deb-src $mirror $suite main" > "$work/sources.list"
apt_private=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
             -o "Dir::State::Lists=$work/lists" -o "APT::Get::List-Cleanup=0")
log "fetching the pgvector source package of Debian $suite"
apt-get "${apt_private[@]}" update -qq || { log "could not read the $suite source index"; instructions; }
log "installing build dependencies (postgresql-server-dev-$major, make, gcc)"
apt-get install -y -qq "postgresql-server-dev-$major" make gcc dpkg-dev >/dev/null || instructions
( cd "$work/src" && apt-get "${apt_private[@]}" source -qq pgvector >/dev/null ) || { log "apt-get source pgvector failed"; instructions; }
srcdir=$(find "$work/src" -maxdepth 1 -mindepth 1 -type d -name 'pgvector-*' | head -1)
[[ -n "$srcdir" ]] || instructions
log "building $(basename "$srcdir") for PostgreSQL $major"
make -s -C "$srcdir" PG_CONFIG="$pg_config" OPTFLAGS="" >/dev/null
make -s -C "$srcdir" PG_CONFIG="$pg_config" install >/dev/null
if [[ -z "${PGVECTOR_BUILD_DIR:-}" ]]; then rm -rf "$work"; fi
version_ok || { log "pgvector build finished but $control is missing or older than 0.8"; instructions; }
log "pgvector $(installed_version) installed for PostgreSQL $major"
