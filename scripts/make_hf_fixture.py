#!/usr/bin/env python3
"""Generate tests/fixtures/hf-gpt2-tiny/: a tiny random GPT-2 saved by Hugging Face
`transformers`, plus reference logits computed by HF itself.

The fixture proves that chatforge reads HF's GPT-2 weight format (config.json +
model.safetensors exactly as `save_pretrained` writes them, key prefix
`transformer.` included) and computes the same logits.

This script is run by hand, once; its output is committed. It is NOT part of CI
(CI has no torch). To regenerate:

    python3 -m venv /work/pyenv-fixtures
    /work/pyenv-fixtures/bin/pip install torch transformers safetensors numpy
    /work/pyenv-fixtures/bin/python scripts/make_hf_fixture.py [OUTDIR]

OUTDIR defaults to tests/fixtures/hf-gpt2-tiny (relative to the repo root).

Versions used for the committed fixture:
    torch 2.15.0 (CPU execution), transformers 5.24.0, safetensors 0.8.0,
    numpy 2.4.6, Python 3.11.7.

Output files:
    config.json         written by GPT2LMHeadModel.save_pretrained
    model.safetensors   written by GPT2LMHeadModel.save_pretrained (safe_serialization)
    expected.safetensors
        input_ids_a  int64 [3, 16]   random ids in [0, 97)
        logits_a     f32   [3, 16, 97]
        input_ids_b  int64 [1, 32]   full context (n_positions = 32)
        logits_b     f32   [1, 32, 97]

Every parameter is re-randomised (HF initialises biases to 0 and LayerNorm to
1/0, which would hide bugs such as a missing bias or a transposed LayerNorm):
    weights and embeddings  ~ N(0, 0.1^2)
    all biases              ~ N(0, 0.1^2)
    LayerNorm weights       = 1 + N(0, 0.1^2)
    LayerNorm biases        ~ N(0, 0.1^2)
The logits use the "eager" attention implementation (plain matmul + softmax);
the script also checks that SDPA attention agrees to ~1e-6.
"""

import json
import os
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

import transformers
from transformers import GPT2Config, GPT2LMHeadModel

SEED_MODEL = 1234
SEED_PARAMS = 20240601
SEED_IDS = 7
STD = 0.1


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config() -> GPT2Config:
    return GPT2Config(
        vocab_size=97,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
    )


def rerandomise(model: GPT2LMHeadModel) -> None:
    gen = torch.Generator().manual_seed(SEED_PARAMS)
    layer_norms = {
        name for name, mod in model.named_modules() if isinstance(mod, torch.nn.LayerNorm)
    }
    seen = set()
    with torch.no_grad():
        # named_parameters() yields a tied tensor once (wte == lm_head).
        for name, p in model.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            owner, _, leaf = name.rpartition(".")
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * STD
            if owner in layer_norms and leaf == "weight":
                p.copy_(1.0 + noise)
            else:
                # Linear/Conv1D weights, embeddings, every bias (LayerNorm too).
                p.copy_(noise)
            if leaf == "bias":
                assert p.abs().min() > 0 or p.numel() == 0, name
    # Tying must survive the re-randomisation.
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def logits_of(model: GPT2LMHeadModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.to(torch.float32).contiguous()


def main() -> None:
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(repo_root(), "tests", "fixtures", "hf-gpt2-tiny")
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)  # keep it light and deterministic

    torch.manual_seed(SEED_MODEL)
    config = make_config()
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config)
    rerandomise(model)
    model.eval()

    model.save_pretrained(outdir, safe_serialization=True)

    gen = torch.Generator().manual_seed(SEED_IDS)
    ids_a = torch.randint(0, config.vocab_size, (3, 16), generator=gen, dtype=torch.int64)
    ids_b = torch.randint(0, config.vocab_size, (1, config.n_positions), generator=gen, dtype=torch.int64)
    logits_a = logits_of(model, ids_a)
    logits_b = logits_of(model, ids_b)
    assert logits_a.shape == (3, 16, 97) and logits_b.shape == (1, 32, 97)

    save_file(
        {
            "input_ids_a": ids_a.contiguous(),
            "logits_a": logits_a,
            "input_ids_b": ids_b.contiguous(),
            "logits_b": logits_b,
        },
        os.path.join(outdir, "expected.safetensors"),
        metadata={
            "generator": "scripts/make_hf_fixture.py",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "attn_implementation": "eager",
        },
    )

    # 1. Reloading what HF wrote reproduces the logits exactly.
    reloaded = GPT2LMHeadModel.from_pretrained(outdir, attn_implementation="eager")
    reloaded.eval()
    for ids, ref in ((ids_a, logits_a), (ids_b, logits_b)):
        got = logits_of(reloaded, ids)
        assert torch.equal(got, ref), f"reload mismatch: {(got - ref).abs().max()}"
    print("from_pretrained(outdir) reproduces logits exactly")

    # 2. SDPA attention agrees closely (sanity check of the reference).
    sdpa = GPT2LMHeadModel.from_pretrained(outdir, attn_implementation="sdpa").eval()
    d = max((logits_of(sdpa, i) - r).abs().max().item() for i, r in ((ids_a, logits_a), (ids_b, logits_b)))
    print(f"max |eager - sdpa| = {d:.3e}")
    assert d < 1e-4

    # 3. Causality: the logits of a prefix do not depend on later tokens.
    pref = logits_of(model, ids_b[:, :16])
    dc = (pref - logits_b[:, :16]).abs().max().item()
    print(f"max |prefix(16) - full[:16]| = {dc:.3e}")
    assert dc < 1e-5

    # Describe what was written.
    sd = load_file(os.path.join(outdir, "model.safetensors"))
    print("model.safetensors tensors:")
    for k in sorted(sd):
        print(f"  {k}: {list(sd[k].shape)} {sd[k].dtype}")
    with open(os.path.join(outdir, "config.json")) as f:
        print("config.json:", json.dumps(json.load(f), indent=1, sort_keys=True))
    print(f"max |logit| a = {logits_a.abs().max().item():.4f}, b = {logits_b.abs().max().item():.4f}")
    print(f"logit std a = {logits_a.std().item():.4f}")
    for fn in sorted(os.listdir(outdir)):
        print(f"  {fn}: {os.path.getsize(os.path.join(outdir, fn))} bytes")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
