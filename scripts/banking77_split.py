#!/usr/bin/env python3
"""Stratified, deterministic 80/20 split of banking77's training file.

    python3 scripts/banking77_split.py ../shared/data/banking77_train.csv OUT_DIR

Writes OUT_DIR/train.csv and OUT_DIR/heldout.csv (`text,category`). In each
category the texts are ordered by the sha256 of the text and every fifth
goes to the held-out part, so the split depends only on the data and every
intent keeps a fifth of its examples aside. The held-out part is never
trained or tuned on: `chatforge kb eval` reads it once.
"""

import csv
import hashlib
import os
import sys
from collections import defaultdict


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    by_cat = defaultdict(list)
    with open(src, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_cat[row["category"]].append(row["text"])
    os.makedirs(out, exist_ok=True)
    train, held = [], []
    for cat in sorted(by_cat):
        texts = sorted(by_cat[cat], key=lambda t: hashlib.sha256(t.encode()).hexdigest())
        for i, t in enumerate(texts):
            (held if i % 5 == 4 else train).append((t, cat))
    for name, rows in (("train.csv", train), ("heldout.csv", held)):
        with open(os.path.join(out, name), "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "category"])
            w.writerows(rows)
    print(f"{len(train)} training rows, {len(held)} held out, {len(by_cat)} intents")


if __name__ == "__main__":
    main()
