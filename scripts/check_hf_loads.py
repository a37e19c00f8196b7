#!/usr/bin/env python3
"""Check that a GPT-2 bundle written by chatforge loads in Hugging Face `transformers`.

The bundle directory holds `config.json` and `model.safetensors` with unprefixed
tensor names (`wte.weight`, `wpe.weight`, `h.0.attn.c_attn.weight`, ...,
`ln_f.weight`), linear weights in HF's Conv1D layout [in, out], no `lm_head`
(tied to `wte`). This script loads it with `GPT2LMHeadModel.from_pretrained`,
fails if any key is missing, unexpected or mismatched, runs a forward pass and
prints the logits.

Run by hand (not in CI; needs torch + transformers, see make_hf_fixture.py):

    /work/pyenv-fixtures/bin/python scripts/check_hf_loads.py BUNDLE_DIR \
        [--ids "1,2,3;4,5,6"] [--save-logits out.safetensors] \
        [--expect expected.safetensors --atol 1e-4]

--ids           rows separated by ';', ids by ','; all rows the same length
                (default: "0,1,2,3,4,5,6,7").
--save-logits   write input_ids (int64) and logits (f32) to a safetensors file.
--expect        compare with a safetensors file holding input_ids_X / logits_X
                pairs (such as tests/fixtures/hf-gpt2-tiny/expected.safetensors);
                every pair is run and checked, --ids is then ignored.

Exit status 0 when the bundle loads cleanly (and matches, with --expect).
"""

import argparse
import json
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel


def parse_ids(s: str) -> torch.Tensor:
    rows = [[int(x) for x in row.split(",") if x.strip()] for row in s.split(";") if row.strip()]
    if not rows or len({len(r) for r in rows}) != 1:
        raise SystemExit("--ids: need one or more rows of equal length")
    return torch.tensor(rows, dtype=torch.int64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle_dir")
    ap.add_argument("--ids", default="0,1,2,3,4,5,6,7")
    ap.add_argument("--save-logits")
    ap.add_argument("--expect")
    ap.add_argument("--atol", type=float, default=1e-4)
    args = ap.parse_args()

    torch.set_num_threads(1)
    model, info = GPT2LMHeadModel.from_pretrained(
        args.bundle_dir, output_loading_info=True, attn_implementation="eager"
    )
    model.eval()
    print("loading info:", json.dumps({k: sorted(map(str, v)) for k, v in info.items()}))
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        print("FAIL: bundle does not load cleanly:", problems, file=sys.stderr)
        return 1
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        print("FAIL: lm_head is not tied to wte", file=sys.stderr)
        return 1
    cfg = model.config
    print(
        f"config: vocab={cfg.vocab_size} ctx={cfg.n_positions} embd={cfg.n_embd} "
        f"layers={cfg.n_layer} heads={cfg.n_head} act={cfg.activation_function} eps={cfg.layer_norm_epsilon}"
    )

    if args.expect:
        exp = load_file(args.expect)
        suffixes = sorted(k[len("input_ids_"):] for k in exp if k.startswith("input_ids_"))
        worst = 0.0
        for sfx in suffixes:
            ids = exp[f"input_ids_{sfx}"].to(torch.int64)
            with torch.no_grad():
                logits = model(input_ids=ids).logits.float()
            d = (logits - exp[f"logits_{sfx}"]).abs().max().item()
            worst = max(worst, d)
            print(f"{sfx}: ids {list(ids.shape)} max |logits - expected| = {d:.3e}")
        if not suffixes or worst > args.atol:
            print(f"FAIL: worst diff {worst:.3e} > atol {args.atol}", file=sys.stderr)
            return 1
        print("OK: matches", args.expect)
        return 0

    ids = parse_ids(args.ids)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float().contiguous()
    torch.set_printoptions(precision=5, linewidth=140, threshold=200)
    print(f"input_ids {list(ids.shape)}: {ids.tolist()}")
    print(f"logits {list(logits.shape)} max|.|={logits.abs().max().item():.5f}")
    print(logits)
    print("last-position argmax:", logits[:, -1].argmax(-1).tolist())
    if args.save_logits:
        save_file({"input_ids": ids.contiguous(), "logits": logits}, args.save_logits)
        print("wrote", args.save_logits)
    print("OK: bundle loads in transformers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
