#!/usr/bin/env python3
"""The PyTorch side of `chatforge bench train --compare-python`.

Trains the same nanoGPT-style GPT-2 as the Rust benchmark (same shapes, tanh
GELU, tied head, AdamW with the same hyper-parameters and decay groups,
gradient clipping at 1.0, uniformly random tokens) and prints one JSON line:
{"tokens_per_s": ..., "torch": "<version>", "threads": N, "steps": S}.

Usage: bench_train_torch.py --layers L --heads H --embd C --ctx T --batch B
       --vocab V --steps S --warmup W --threads N [--device cpu|cuda:N]
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def attn(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, vocab, ctx, c, layers, heads):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(ctx, c)
        self.h = nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    for name in ["layers", "heads", "embd", "ctx", "batch", "vocab", "steps", "warmup", "threads"]:
        ap.add_argument("--" + name, type=int, required=True)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1337)
    dev = torch.device(a.device)
    model = Gpt(a.vocab, a.ctx, a.embd, a.layers, a.heads).to(dev)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith(("wte", "wpe"))]
    other = [p for n, p in model.named_parameters() if not (p.dim() == 2 and not n.startswith(("wte", "wpe")))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.99), eps=1e-8,
    )
    start = time.perf_counter()
    for step in range(a.warmup + a.steps):
        x = torch.randint(0, a.vocab, (a.batch, a.ctx), device=dev)
        y = torch.randint(0, a.vocab, (a.batch, a.ctx), device=dev)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step + 1 == a.warmup:
            sync(dev)
            start = time.perf_counter()
    sync(dev)
    secs = time.perf_counter() - start
    print(json.dumps({
        "tokens_per_s": a.steps * a.batch * a.ctx / secs,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps": a.steps,
    }))


if __name__ == "__main__":
    main()
