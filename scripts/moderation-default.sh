#!/usr/bin/env bash
# Build chatforge's default moderation model: runs `scripts/setup.sh
# --moderation` (registry word lists and corpora, support-style insults and
# clean support texts), then `chatforge moderation train` on those CSVs plus
# the labelled sets vendored in data/moderation/ (Davidson et al. English
# tweets, COLD Chinese posts; their `test` rows are never trained on), then
# `chatforge moderation eval` on what it never saw (written to eval.txt).
#
#   scripts/moderation-default.sh [--force] [--out DIR]
#
# Writes ${CHATFORGE_HOME:-$HOME/.cache/chatforge}/moderation/default/
# (moderation.onnx + moderation.json) unless --out says otherwise; the
# blocklist is ${CHATFORGE_HOME}/moderation/blocklist.txt. Use them with
#   chatforge moderate --model "$CHATFORGE_HOME/moderation/default" \
#       --blocklist "$CHATFORGE_HOME/moderation/blocklist.txt" "some text"
#
# Idempotent: when the model there was trained on the current data files it
# only says so. Options:
#   --force    retrain (and rebuild the data: setup.sh --moderation --force)
#   --out DIR  model folder to write
#   -h|--help  this text
# Environment: CHATFORGE_HOME, CHATFORGE_BIN (the chatforge binary; default:
# `chatforge` on PATH, else target/release or target/debug of this checkout or
# $CARGO_TARGET_DIR), PYTHON (default python3).
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "moderation-default.sh: error: $*" >&2; exit 1; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$SCRIPT_DIR")"
PY="${PYTHON:-python3}"
export CHATFORGE_HOME="${CHATFORGE_HOME:-$HOME/.cache/chatforge}"
OUT="$CHATFORGE_HOME/moderation/default"
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT="$2"; shift ;;
    --out=*) OUT="${1#--out=}" ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
  shift
done

# 1. The binary.
BIN="${CHATFORGE_BIN:-}"
if [ -z "$BIN" ]; then
  for c in "$(command -v chatforge || true)" \
           "${CARGO_TARGET_DIR:-$REPO/target}/release/chatforge" \
           "${CARGO_TARGET_DIR:-$REPO/target}/debug/chatforge"; do
    if [ -n "$c" ] && [ -x "$c" ]; then BIN="$c"; break; fi
  done
fi
[ -n "$BIN" ] || die "no chatforge binary found: run 'cargo build --release' or set CHATFORGE_BIN"
[ -x "$BIN" ] || die "CHATFORGE_BIN=$BIN is not an executable"

# 2. The data (fetched and built once; checked by its stamp afterwards).
if [ "$FORCE" -eq 1 ]; then
  "$SCRIPT_DIR/setup.sh" --moderation --force
else
  "$SCRIPT_DIR/setup.sh" --moderation
fi
DATA="$CHATFORGE_HOME/moderation/data"
for f in train.csv offensive.csv support_clean.txt; do
  [ -s "$DATA/$f" ] || die "setup.sh did not produce $DATA/$f"
done
LABELLED=("$REPO/data/moderation/davidson.csv.gz" "$REPO/data/moderation/cold.csv.gz")
for f in "${LABELLED[@]}"; do
  [ -s "$f" ] || die "missing $f (part of the repository)"
done
TRAIN_FILES=("$DATA/train.csv" "$DATA/offensive.csv" "${LABELLED[@]}")
# Clean beside the support turns, split like them (trained on, and their
# validation part caps the thresholds' false positives): the repository's
# customer-worded questions (the knowledge base's training questions and
# out-of-scope negatives). Trained on only: the FAQ the bot's replies
# quote. The same lists as the quickstart's moderation stage.
CLEAN=("$DATA/support_clean.txt" "$REPO/data/support/kb/train_questions.jsonl"
  "$REPO/data/support/kb/train_questions_zh.jsonl" "$REPO/data/support/kb/out_of_scope_train.txt")
CLEAN_TRAIN=("$REPO/data/support/faq.md" "$REPO/data/support/faq.zh.md")

# 3. Up to date? (moderation.json records the sha256 of every training file)
if [ "$FORCE" -eq 0 ] && [ -f "$OUT/moderation.json" ] && "$PY" - "$OUT/moderation.json" "${TRAIN_FILES[@]}" "${CLEAN[@]}" "${CLEAN_TRAIN[@]}" <<'EOF'
import hashlib, json, sys
meta = json.load(open(sys.argv[1], encoding="utf-8"))
have = sorted(d["sha256"] for d in meta.get("data", []))
want = sorted(hashlib.sha256(open(p, "rb").read()).hexdigest() for p in sys.argv[2:])
sys.exit(0 if have == want else 1)
EOF
then
  echo "moderation-default.sh: $OUT is up to date with $DATA (use --force to retrain)"
  exit 0
fi

# 4. Train into a fresh folder, then swap it in.
mkdir -p "$(dirname "$OUT")"
TMP="$OUT.new"
rm -rf "$TMP"
echo "moderation-default.sh: training with $BIN ..."
"$BIN" moderation train --data "${TRAIN_FILES[@]}" --clean "${CLEAN[@]}" \
  --clean-train "${CLEAN_TRAIN[@]}" --out "$TMP" \
  || { rm -rf "$TMP"; die "chatforge moderation train failed"; }
# 5. Report on what it never trained on: the labelled sets' test rows, the
# insult-in-request set, the held-out support dialogs' customer turns and
# the held-out customer-words questions (clean: none should be flagged).
"$BIN" moderation eval --model "$TMP" --data "${LABELLED[@]}" --heldout \
  --unseen "$REPO/data/moderation/insult_in_request_eval.csv" "$REPO/data/moderation/insult_in_request_eval_v2.csv" \
  --clean "$REPO/data/support/heldout.jsonl" "$REPO/data/support/questions/customer_heldout.jsonl" \
  "$REPO/data/support/questions/customer_heldout_zh.jsonl" "$REPO/data/support/questions/out_of_scope.jsonl" \
  > "$TMP/eval.txt" \
  || { rm -rf "$TMP"; die "chatforge moderation eval failed"; }
rm -rf "$OUT"
mv "$TMP" "$OUT"
cat "$OUT/eval.txt"
echo "moderation-default.sh: default model in $OUT"
echo "  try: $BIN moderate --model $OUT --blocklist $CHATFORGE_HOME/moderation/blocklist.txt \"some text\""
