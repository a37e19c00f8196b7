#!/usr/bin/env python3
"""Runs a chatforge model.onnx in Python onnxruntime with the optimum names.

Reads JSON on stdin: {"ids": [...], "prefill": N, "n_layer": L, "n_head": H,
"head_dim": D}; runs a prefill over ids[:N], then one cached decode step per
remaining id, feeding `present.*` back as `past_key_values.*`. Prints JSON:
{"logits": [[...] per position]} (batch 1). Used by tests/onnx.rs to prove
the file runs unchanged outside chatforge.
"""

import json
import sys

import numpy as np
import onnxruntime as ort


def main():
    model = sys.argv[1]
    req = json.load(sys.stdin)
    ids, n = req["ids"], req["prefill"]
    layers, heads, dim = req["n_layer"], req["n_head"], req["head_dim"]
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    past = {}
    for i in range(layers):
        for kind in ("key", "value"):
            past[f"past_key_values.{i}.{kind}"] = np.zeros((1, heads, 0, dim), np.float32)
    out_names = [o.name for o in sess.get_outputs()]
    logits = []
    pos = 0
    chunks = [ids[:n]] + [[t] for t in ids[n:]]
    for chunk in chunks:
        feeds = {
            "input_ids": np.array([chunk], np.int64),
            "attention_mask": np.ones((1, pos + len(chunk)), np.int64),
            "position_ids": np.arange(pos, pos + len(chunk), dtype=np.int64)[None, :],
            **past,
        }
        outs = dict(zip(out_names, sess.run(None, feeds)))
        logits.extend(outs["logits"][0].tolist())
        for i in range(layers):
            for kind in ("key", "value"):
                past[f"past_key_values.{i}.{kind}"] = outs[f"present.{i}.{kind}"]
        pos += len(chunk)
    json.dump({"logits": logits, "onnxruntime": ort.__version__}, sys.stdout)


if __name__ == "__main__":
    main()
