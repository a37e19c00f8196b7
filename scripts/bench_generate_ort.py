#!/usr/bin/env python3
"""The Python side of `chatforge bench generate --compare-python`.

Runs the same `model.onnx` (the KV-cache decoder with optimum's input and
output names) through Python onnxruntime the way a Python serving loop
would: prefill, then one cached step per token, greedy, batch 1, each
step's `present.*` fed back as `past_key_values.*`. Timing mirrors the Rust
benchmark: one warm-up, prefill + first token as the median of 5 runs,
decode tokens/s as the median of 3 runs. Where `torch` and `transformers`
import too, also Hugging Face `generate` (greedy, KV cache) on a GPT-2 of the
same shape (random weights: speed does not depend on them). Prints one JSON
line: {"cached_tokens_per_s": ..., "prefill_first_token_ms": ...,
"onnxruntime": "<version>", "threads": N, and "transformers": {...} or
"transformers_skipped": "<why>"}.

Usage: bench_generate_ort.py --model FILE --prompt-tokens P --new-tokens N
       --threads T --ctx C
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def decode(sess, prompt, new):
    """Greedy decoding; returns (prefill + first token s, remaining tokens s)."""
    inputs = {i.name: i for i in sess.get_inputs()}
    layers = sum(1 for n in inputs if n.endswith(".key"))
    key = inputs["past_key_values.0.key"].shape
    heads, dim = key[1], key[3]
    outputs = [o.name for o in sess.get_outputs()]
    total = len(prompt)
    feed = {
        "input_ids": np.array([prompt], dtype=np.int64),
        "attention_mask": np.ones((1, total), dtype=np.int64),
        "position_ids": np.arange(total, dtype=np.int64)[None],
    }
    for i in range(layers):
        for kind in ("key", "value"):
            feed[f"past_key_values.{i}.{kind}"] = np.zeros((1, heads, 0, dim), np.float32)
    # The prefill needs only the last position's logits, as chatforge asks.
    if any(i.name == "logits_to_keep" for i in sess.get_overridable_initializers()):
        feed["logits_to_keep"] = np.array([1], dtype=np.int64)
    t0 = time.perf_counter()
    prefill = None
    for _ in range(new):
        got = dict(zip(outputs, sess.run(None, feed)))
        token = int(got["logits"][0, -1].argmax())
        if prefill is None:
            prefill = time.perf_counter() - t0
            t1 = time.perf_counter()
        total += 1
        feed = {
            "input_ids": np.array([[token]], dtype=np.int64),
            "attention_mask": np.ones((1, total), dtype=np.int64),
            "position_ids": np.array([[total - 1]], dtype=np.int64),
        }
        for i in range(layers):
            for kind in ("key", "value"):
                feed[f"past_key_values.{i}.{kind}"] = got[f"present.{i}.{kind}"]
    return prefill, time.perf_counter() - t1


def transformers_figures(sess, ctx, prompt, new, threads):
    """HF generate on the same shape: (figures, None) or (None, why)."""
    try:
        import torch
        import transformers
    except ImportError as e:
        return None, f"no transformers here ({e})"
    torch.set_num_threads(threads)
    inputs = {i.name: i for i in sess.get_inputs()}
    key = inputs["past_key_values.0.key"].shape
    layers = sum(1 for n in inputs if n.endswith(".key"))
    vocab = next(o for o in sess.get_outputs() if o.name == "logits").shape[-1]
    cfg = transformers.GPT2Config(
        vocab_size=vocab, n_positions=ctx, n_embd=key[1] * key[3], n_layer=layers,
        n_head=key[1], activation_function="gelu_new",
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.tensor([prompt])

    def run(n):
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                           min_new_tokens=n, do_sample=False, use_cache=True,
                           pad_token_id=0)
        return time.perf_counter() - t

    run(4)
    first = sorted(run(1) for _ in range(5))[2]
    whole = sorted(run(new) for _ in range(3))[1]
    return {
        "cached_tokens_per_s": (new - 1) / max(whole - first, 1e-9),
        "prefill_first_token_ms": first * 1e3,
        "version": transformers.__version__,
        "torch": torch.__version__,
    }, None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    for name in ("prompt-tokens", "new-tokens", "threads", "ctx"):
        p.add_argument(f"--{name}", type=int, required=True)
    a = p.parse_args()
    sess = session(a.model, a.threads)
    vocab = next(o for o in sess.get_outputs() if o.name == "logits").shape[-1]
    prompt = [int(t) for t in np.random.default_rng(3).integers(0, vocab, a.prompt_tokens)]
    decode(sess, prompt, 4)
    prefill = sorted(decode(sess, prompt, 1)[0] for _ in range(5))[2]
    cached = sorted(decode(sess, prompt, a.new_tokens)[1] for _ in range(3))[1]
    out = {
        "cached_tokens_per_s": (a.new_tokens - 1) / cached,
        "prefill_first_token_ms": prefill * 1e3,
        "onnxruntime": ort.__version__,
        "threads": a.threads,
    }
    hf, why = transformers_figures(sess, a.ctx, prompt, a.new_tokens, a.threads)
    if hf is None:
        out["transformers_skipped"] = why
    else:
        out["transformers"] = hf
    print(json.dumps(out))


if __name__ == "__main__":
    main()
