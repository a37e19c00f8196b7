#!/usr/bin/env python3
"""Fine-tune a chatforge bundle with Hugging Face `transformers` on chatforge
dialogs, on one GPU, many GPUs (`torchrun`) or the CPU, and write the result
as a chatforge bundle that `chatforge export` and `chatforge serve` take.

A chatforge bundle is a GPT-2 checkpoint (config.json + model.safetensors +
tokenizer.json), so `GPT2LMHeadModel.from_pretrained(bundle)` loads it. What
this script adds is chatforge's chat template and loss mask, in
transformers' terms:

    [<|topic=T|>] [<|style=S|>] <|system|>text<|end|>
    [<|context|> <|passage|>title\\ntext ... <|end|>]
    <|user|>text<|end|> <|assistant|>text<|end|> ... <|endoftext|>

- every marker is one special token of tokenizer.json; message and passage
  text is encoded with `encode_special_tokens = True`, so a customer who
  types "<|assistant|>" gets plain text;
- `labels` are the input ids where chatforge learns (each assistant turn's
  text and its closing <|end|>) and -100 elsewhere; GPT2LMHeadModel shifts
  them itself;
- a dialog with `context` (a RAFT example from `chatforge finetune --kb`)
  learns only its last reply; too long, it loses its oldest turns, then its
  last passages; other dialogs longer than --max-len are cut at the end.

    # one GPU or the CPU
    python scripts/finetune_hf.py --bundle runs/quickstart/chat \\
        --dialogs data/support/train.jsonl --out runs/hf-chat --epochs 1
    # eight GPUs
    torchrun --nproc_per_node 8 scripts/finetune_hf.py --bundle ... --out ...
    # then, as for any bundle
    chatforge export --bundle runs/hf-chat && chatforge serve ...

`--dump-examples N` prints the first N encoded dialogs as JSON lines
({"ids": [...], "labels": [...]}) and exits without importing torch:
tests/hf_compat.rs compares them with chatforge's own encoding.

Needs `pip install torch "transformers[torch]" safetensors tokenizers` for
training (checked with torch 2.15, transformers 5.25, accelerate 1.x);
tokenizers alone for --dump-examples.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

from tokenizers import Tokenizer

IGNORE = -100


def read_dialogs(paths):
    dialogs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                d = json.loads(line)
                messages = d.get("messages", d.get("conversations"))
                if not messages:
                    raise SystemExit(f"{path}:{n}: no messages")
                out = []
                for m in messages:
                    role = m.get("role", m.get("from"))
                    role = {"human": "user", "gpt": "assistant"}.get(role, role)
                    if role not in ("system", "user", "assistant"):
                        raise SystemExit(f"{path}:{n}: unknown role {role!r}")
                    out.append((role, m.get("content", m.get("value", ""))))
                dialogs.append(
                    {
                        "messages": out,
                        "topic": d.get("topic"),
                        "style": d.get("style"),
                        "context": list(d.get("context") or []),
                    }
                )
    if not dialogs:
        raise SystemExit("no dialogs to fine-tune on")
    return dialogs


class Template:
    """chatforge's chat template over a bundle's tokenizer.json."""

    def __init__(self, tokenizer_path):
        self.tok = Tokenizer.from_file(tokenizer_path)
        self.tok.encode_special_tokens = True
        vocab = self.tok.get_vocab(with_added_tokens=True)
        self.vocab = vocab

        def need(token):
            if token not in vocab:
                raise SystemExit(f"{tokenizer_path}: no {token} token: not a chat tokenizer")
            return vocab[token]

        self.role = {r: need(f"<|{r}|>") for r in ("system", "user", "assistant")}
        self.end = need("<|end|>")
        self.endoftext = need("<|endoftext|>")
        self.context = vocab.get("<|context|>")
        self.passage = vocab.get("<|passage|>")

    def text(self, s):
        return self.tok.encode(s, add_special_tokens=False).ids

    def controls(self, d):
        ids = []
        for kind in ("topic", "style"):
            value = d.get(kind)
            if value:
                tag = f"<|{kind}={value}|>"
                if tag in self.vocab:
                    ids.append(self.vocab[tag])
                else:
                    print(f"warning: control tag {tag} is not in the tokenizer; skipped", file=sys.stderr)
        return ids

    def context_block(self, d):
        if not d["context"] or self.context is None or self.passage is None:
            return []
        ids = [self.context]
        for p in d["context"]:
            ids.append(self.passage)
            ids.extend(self.text(p))
        ids.append(self.end)
        return ids

    def encode(self, d, last_only):
        """(ids, mask): mask[t] is True where token t is learned."""
        ids = self.controls(d)
        mask = [False] * len(ids)
        last_reply = max((i for i, (r, _) in enumerate(d["messages"]) if r == "assistant"), default=None)
        context_done = False
        for i, (role, content) in enumerate(d["messages"]):
            if role != "system" and not context_done:
                c = self.context_block(d)
                ids.extend(c)
                mask.extend([False] * len(c))
                context_done = True
            learn = role == "assistant" and (not last_only or i == last_reply)
            ids.append(self.role[role])
            mask.append(False)
            text = self.text(content)
            ids.extend(text)
            ids.append(self.end)
            mask.extend([learn] * (len(text) + 1))
        ids.append(self.endoftext)
        mask.append(False)
        return ids, mask

    def example(self, d, max_len):
        """What chatforge's fine-tuning trains on for `d`, or None when
        nothing in it is learned."""
        if not d["context"]:
            ids, mask = self.encode(d, last_only=False)
        else:
            d = {**d, "messages": list(d["messages"]), "context": list(d["context"])}
            while True:
                ids, mask = self.encode(d, last_only=True)
                if len(ids) <= max_len:
                    break
                msgs = d["messages"]
                first = next((i for i, (r, _) in enumerate(msgs) if r != "system"), None)
                last_user = max((i for i, (r, _) in enumerate(msgs) if r == "user"), default=None)
                if first is not None and last_user is not None and first < last_user:
                    del msgs[first]
                elif d["context"]:
                    d["context"].pop()
                else:
                    break
        ids, mask = ids[:max_len], mask[:max_len]
        if not any(mask[1:]):
            return None
        labels = [t if m else IGNORE for t, m in zip(ids, mask)]
        return {"input_ids": ids, "labels": labels}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="chatforge bundle to start from")
    ap.add_argument("--dialogs", required=True, nargs="+", help="dialogs JSONL (chatforge's format)")
    ap.add_argument("--out", help="bundle to write")
    ap.add_argument("--max-len", type=int, default=256, help="tokens per example (the model's context at most)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs when > 0")
    ap.add_argument("--batch", type=int, default=8, help="examples per device and step")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dump-examples", type=int, metavar="N", help="print N encoded dialogs and exit")
    args = ap.parse_args()

    template = Template(os.path.join(args.bundle, "tokenizer.json"))
    dialogs = read_dialogs(args.dialogs)
    examples = [e for e in (template.example(d, args.max_len) for d in dialogs) if e is not None]
    if args.dump_examples is not None:
        for e in examples[: args.dump_examples]:
            print(json.dumps({"ids": e["input_ids"], "labels": e["labels"]}))
        return
    if not args.out:
        raise SystemExit("--out is required to train")

    import torch
    from transformers import GPT2LMHeadModel, Trainer, TrainingArguments, set_seed

    set_seed(args.seed)
    model = GPT2LMHeadModel.from_pretrained(args.bundle)
    if args.max_len > model.config.n_positions:
        raise SystemExit(f"--max-len {args.max_len} exceeds the model's context {model.config.n_positions}")
    pad = template.endoftext

    def collate(batch):
        width = max(len(e["input_ids"]) for e in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, e in enumerate(batch):
            n = len(e["input_ids"])
            ids[i, :n] = torch.tensor(e["input_ids"])
            labels[i, :n] = torch.tensor(e["labels"])
            attention[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": attention}

    started = time.time()
    training = TrainingArguments(
        output_dir=os.path.join(args.out, ".hf-trainer"),
        per_device_train_batch_size=args.batch,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        seed=args.seed,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=training, train_dataset=examples, data_collator=collate)
    result = trainer.train()
    if not trainer.is_world_process_zero():
        return

    # A chatforge bundle: the weights as transformers saves them (chatforge
    # reads the `transformer.` prefix), the tokenizer and serving defaults
    # of the bundle it started from, provenance in config.json's chatforge
    # object and training.json.
    shutil.rmtree(os.path.join(args.out, ".hf-trainer"), ignore_errors=True)
    model = trainer.model
    old = dict(getattr(model.config, "chatforge", {}) or {})
    model.save_pretrained(args.out, safe_serialization=True)
    weights = sha256_file(os.path.join(args.out, "model.safetensors"))
    now = int(time.time())
    with open(os.path.join(args.out, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["chatforge"] = {
        **old,
        "stage": "finetune",
        "parent_version": old.get("model_version"),
        "model_version": f"finetune-{now}-{weights[:12]}",
        "created_unix": now,
    }
    with open(os.path.join(args.out, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    for name in ("tokenizer.json", "generation.json"):
        src = os.path.join(args.bundle, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(args.out, name))
    import transformers

    with open(os.path.join(args.out, "training.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "trainer": "transformers",
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "parent_version": old.get("model_version"),
                "data": [{"path": p, "sha256": sha256_file(p)} for p in args.dialogs],
                "examples": len(examples),
                "steps": result.global_step,
                "final_train_loss": result.training_loss,
                "max_len": args.max_len,
                "batch_per_device": args.batch,
                "devices": training.world_size,
                "lr": args.lr,
                "wall_s": round(time.time() - started, 1),
            },
            f,
            indent=2,
        )
    print(f"wrote {args.out}: {result.global_step} steps, train loss {result.training_loss:.4f}")


if __name__ == "__main__":
    main()
