#!/usr/bin/env bash
# The whole test suite from a fresh machine: PostgreSQL (started or
# installed), the cached downloads (scripts/setup.sh), then every test of the
# workspace. Extra arguments go to the test runner (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/ensure-postgres.sh
./scripts/setup.sh
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
