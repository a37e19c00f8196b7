#!/usr/bin/env bash
# Makes sure a PostgreSQL server accepts connections on 127.0.0.1:5432 for
# the store tests: starts the local cluster when it is stopped, installs
# Debian's `postgresql` when it is missing (needs root and apt-get), and
# creates the `test` database. Trust authentication on 127.0.0.1 is set only
# on a cluster this script itself installed.
set -euo pipefail

HOST=127.0.0.1
PORT=5432

say() { echo "ensure-postgres: $*" >&2; }
ready() { pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if command -v pg_isready >/dev/null 2>&1 && ready; then
  say "PostgreSQL is accepting connections on $HOST:$PORT"
else
  installed_here=0
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    say "PostgreSQL is not installed; installing Debian's postgresql package"
    # An install cut short (a killed run) leaves dpkg "interrupted", and
    # apt-get refuses to install anything until it is finished.
    as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a >/dev/null 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
      || { say "error: could not install postgresql (needs root and apt-get)"; exit 1; }
    installed_here=1
  fi
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  if [ "$installed_here" -eq 1 ]; then
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    # A throwaway CI server: local tests connect without a password.
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    as_root sed -i -E 's/^(local\s+all\s+all\s+)\S+/\1trust/' "$hba"
  fi
  say "starting cluster $version/main"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start \
    || as_root pg_ctlcluster --skip-systemctl-redirect "$version" main restart
  for _ in $(seq 1 30); do ready && break; sleep 1; done
  ready || { say "error: PostgreSQL did not come up on $HOST:$PORT"; exit 1; }
  say "PostgreSQL is up on $HOST:$PORT"
fi

# The test suite connects as `postgres` to database `test`.
if ! psql -h "$HOST" -p "$PORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
  psql -h "$HOST" -p "$PORT" -U postgres -d postgres -qc "CREATE DATABASE test"
  say "created database test"
fi
