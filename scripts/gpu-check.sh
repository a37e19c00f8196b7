#!/usr/bin/env bash
# The GPU proof for an accelerator session (issues: ONNX runtime on CUDA /
# TensorRT, training throughput on CUDA). Run from the repository root on the
# GPU machine; every figure goes to one JSON-lines file, `$OUT/gpu-check.jsonl`
# (default ./gpu-check), and each step that cannot run says why and the rest
# go on.
#
#   CHATFORGE_BIN   a chatforge binary (default: target/release/chatforge;
#                   built with `--features cuda` here when cargo and nvcc are
#                   present, which CUDA training needs)
#   ORT_DYLIB_PATH  libonnxruntime.so of the onnxruntime-gpu wheel (default:
#                   found in the Python's onnxruntime package, if it is the
#                   GPU build)
#   PYTHON          a Python with torch for the PyTorch side (default python3)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
LOG="$OUT/gpu-check.jsonl"
: > "$LOG"
PYTHON="${PYTHON:-python3}"
# Errors go into the notes: one line each, without backtraces.
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0
note() { printf '{"step":"%s","note":%s}\n' "$1" "$("$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$2")" | tee -a "$LOG"; }
record() { local step="$1"; shift; echo "== $step: $*" >&2; local line; line=$("$@" 2>"$OUT/$step.err" | tail -n 1); if [ -n "$line" ]; then printf '{"step":"%s","result":%s}\n' "$step" "$line" | tee -a "$LOG"; else note "$step" "failed: $(tail -n 3 "$OUT/$step.err" | tr '\n' ' ')"; fi; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1 \
  && note gpu "$(cat "$OUT/gpu.txt")" || note gpu "nvidia-smi failed"
note nvcc "$(nvcc --version 2>/dev/null | tail -n 1 || echo 'no nvcc')"

BIN="${CHATFORGE_BIN:-target/release/chatforge}"
CUDA_BUILD=0
# cudarc 0.19 (candle's CUDA bindings) knows toolkits up to 13.4 and stops a
# build on a newer one; a newer 13.x is driven through the 13.4 API.
if [ -z "${CUDARC_CUDA_VERSION:-}" ] && command -v nvcc >/dev/null; then
  read -r CUDA_MAJOR CUDA_MINOR <<<"$(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
  if [ "${CUDA_MAJOR:-0}" -eq 13 ] && [ "${CUDA_MINOR:-0}" -gt 4 ]; then
    export CUDARC_CUDA_VERSION=13040
    note cudarc "nvcc is CUDA 13.$CUDA_MINOR: building against the 13.4 API (CUDARC_CUDA_VERSION=13040)"
  fi
fi
if command -v cargo >/dev/null && command -v nvcc >/dev/null; then
  if cargo build --release --locked --features cuda --bin chatforge > "$OUT/build.log" 2>&1; then
    BIN=target/release/chatforge; CUDA_BUILD=1
  else
    note build "cargo build --features cuda failed: $(tail -n 5 "$OUT/build.log" | tr '\n' ' ')"
  fi
else
  note build "no cargo or nvcc here: CUDA training is skipped (ONNX Runtime needs no CUDA build)"
fi

# Training: chatforge on CUDA and PyTorch on the same GPU, same run.
if [ "$CUDA_BUILD" = 1 ]; then
  for preset in B gpt2-124m; do
    record "train-$preset" "$BIN" bench train --preset "$preset" --device cuda --steps 20 --warmup 3 \
      --compare-python --python "$PYTHON" --json
  done
else
  for args in "B 6 6 384 256 8 65" "gpt2-124m 12 12 768 1024 8 50257"; do
    set -- $args
    record "torch-train-$1" "$PYTHON" scripts/bench_train_torch.py --layers "$2" --heads "$3" --embd "$4" \
      --ctx "$5" --batch "$6" --vocab "$7" --steps 20 --warmup 3 --threads 16 --device cuda
  done
fi
record train-B-cpu "$BIN" bench train --preset B --steps 10 --json

# ONNX Runtime: the providers registered with strict on, decode tokens/s on GPU vs CPU.
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$("$PYTHON" -c 'import onnxruntime, glob, os; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[0])' 2>/dev/null || true)
fi
export ORT_DYLIB_PATH
note ort "ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-unset}"
for provider in cpu cuda tensorrt; do
  printf '[runtime]\nproviders = ["%s"]\nstrict = true\n' "$provider" > "$OUT/$provider.toml"
  "$BIN" doctor --config "$OUT/$provider.toml" > "$OUT/doctor-$provider.txt" 2>&1; echo "exit $?" >> "$OUT/doctor-$provider.txt"
  note "doctor-$provider" "$(tr '\n' ' ' < "$OUT/doctor-$provider.txt")"
  record "generate-$provider" "$BIN" bench generate --preset 6x384 --config "$OUT/$provider.toml" --json
done
echo "figures: $LOG" >&2
