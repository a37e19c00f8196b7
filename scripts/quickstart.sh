#!/usr/bin/env bash
# The main job from a fresh clone: fetch what the build does not
# (scripts/setup.sh), build chatforge, pretrain a model on the general text
# and the shop's FAQ, fine-tune it on the support dialogs and export it to
# ONNX (parity-checked) for `chatforge chat`. Every artifact
# lands in one folder (default runs/quickstart; set CHATFORGE_RUN to move it).
# Run again, finished stages are reused; --force redoes them.
#
# Environment: PRESET (a models/*.toml name, default tiny), CHATFORGE_HOME
# (download cache), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,10{s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "quickstart.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

PRESET="${PRESET:-tiny}"
RUN="${CHATFORGE_RUN:-runs/quickstart}"
CHATFORGE_HOME="${CHATFORGE_HOME:-$HOME/.cache/chatforge}"
export CHATFORGE_HOME

./scripts/setup.sh
echo "quickstart: building chatforge (release)"
cargo build --release --locked --bin chatforge
BIN="${CARGO_TARGET_DIR:-target}/release/chatforge"

stage_done() { [ "$FORCE" -eq 0 ] && [ -f "$1/config.json" ] && [ -f "$1/model.safetensors" ]; }

if stage_done "$RUN/pretrain"; then
  echo "quickstart: pretrain: reusing $RUN/pretrain"
else
  "$BIN" train --config "models/$PRESET.toml" \
    --data "$CHATFORGE_HOME/corpus/general" data/support/faq.md \
    --out "$RUN/pretrain"
fi

if stage_done "$RUN/chat"; then
  echo "quickstart: finetune: reusing $RUN/chat"
else
  "$BIN" finetune --base "$RUN/pretrain" --dialogs data/support/train.jsonl --out "$RUN/chat"
fi

if [ "$FORCE" -eq 0 ] && [ -f "$RUN/chat/model.onnx" ] && [ "$RUN/chat/model.onnx" -nt "$RUN/chat/model.safetensors" ]; then
  echo "quickstart: export: reusing $RUN/chat/model.onnx"
else
  "$BIN" export --bundle "$RUN/chat"
fi

BUNDLE="$(cd "$RUN/chat" && pwd)"
echo "quickstart: done; the chat model bundle is $BUNDLE"
echo "quickstart: talk to it with: $BIN chat --bundle $BUNDLE"
