#!/usr/bin/env bash
# The main job from a fresh clone: fetch what the build does not
# (scripts/setup.sh --moderation: ONNX Runtime, the general corpus and the
# default moderation data), build chatforge (release), then run
# `chatforge quickstart`: tokenizer, pretraining (models/demo.toml),
# fine-tuning on the support dialogs, ONNX export (parity-checked), the
# default moderation model and the SQLite store, all in one run folder
# (default runs/quickstart), then a chat in the terminal. Run again,
# finished stages are reused.
#
# Arguments go to `chatforge quickstart`: --no-chat, --force, --run DIR,
# --preset NAME (see `chatforge quickstart --help` once built).
# Environment: CHATFORGE_HOME (download cache), CARGO_TARGET_DIR,
# CHATFORGE_RUN and PRESET (defaults for --run and --preset).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,14{s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  esac
done

CHATFORGE_HOME="${CHATFORGE_HOME:-$HOME/.cache/chatforge}"
export CHATFORGE_HOME

./scripts/setup.sh --moderation
echo "quickstart: building chatforge (release)"
cargo build --release --locked --bin chatforge
BIN="${CARGO_TARGET_DIR:-target}/release/chatforge"

DEFAULTS=()
if [ -n "${CHATFORGE_RUN:-}" ]; then DEFAULTS+=(--run "$CHATFORGE_RUN"); fi
if [ -n "${PRESET:-}" ]; then DEFAULTS+=(--preset "$PRESET"); fi
exec "$BIN" quickstart ${DEFAULTS[@]+"${DEFAULTS[@]}"} "$@"
