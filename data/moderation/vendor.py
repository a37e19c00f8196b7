#!/usr/bin/env python3
"""Rebuild davidson.csv.gz and cold.csv.gz from the upstream training CSVs.

Standard library only, deterministic: the same input gives byte-identical
output (gzip level 9, mtime 0, no file name in the header).

    python3 data/moderation/vendor.py \
        --davidson ../shared/data/davidson_offensive_train.csv \
        --cold ../shared/data/cold_offensive_zh_train.csv

What it does (see README.md in this folder):
  * keeps only the text and its label (Davidson: `text,class`; COLD:
    `text,label,topic`), in source row order;
  * drops exact duplicate texts, keeping the first occurrence;
  * adds `split` = train / val / test from the text alone, with the same rule
    as chatforge's `SplitConfig::default()` (src/moderation/data.rs):
    u = first 8 bytes of sha256(le_u64(1337) || utf8(text)) read as a
    little-endian u64, shifted right by 11, divided by 2**53;
    u < 0.1 -> test, u < 0.2 -> val, else train.
"""
import argparse
import collections
import csv
import gzip
import hashlib
import io
import os
import struct
import sys

SEED = 1337
TEST_FRACTION = 0.1
VAL_FRACTION = 0.1
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def split_of(text, seed=SEED):
    d = hashlib.sha256(struct.pack("<Q", seed) + text.encode("utf-8")).digest()
    x = struct.unpack("<Q", d[:8])[0]
    u = (x >> 11) / float(1 << 53)
    if u < TEST_FRACTION:
        return "test"
    if u < TEST_FRACTION + VAL_FRACTION:
        return "val"
    return "train"


def read_rows(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def dedup(rows, text_key):
    """First occurrence of each exact text wins; returns (kept, dropped, conflicts)."""
    first = {}
    kept, dropped = [], 0
    labels = collections.defaultdict(set)
    for r in rows:
        t = r[text_key]
        labels[t].add(r.get("class", r.get("label")))
        if t in first:
            dropped += 1
            continue
        first[t] = r
        kept.append(r)
    conflicts = sum(1 for v in labels.values() if len(v) > 1)
    return kept, dropped, conflicts


def write_gz(path, header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            gz.write(data)
    return len(data), os.path.getsize(path)


def check_strata(name, rows, label_idx):
    counts = collections.Counter((r[label_idx], r[-1]) for r in rows)
    labels = sorted({r[label_idx] for r in rows})
    for lab in labels:
        for sp in ("train", "val", "test"):
            if counts[(lab, sp)] == 0:
                sys.exit(f"{name}: label {lab} has no rows in split {sp}")
    return counts, labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--davidson", default=os.path.join(ROOT, "..", "shared", "data", "davidson_offensive_train.csv"))
    ap.add_argument("--cold", default=os.path.join(ROOT, "..", "shared", "data", "cold_offensive_zh_train.csv"))
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--no-topic", action="store_true", help="leave COLD's topic column out")
    a = ap.parse_args()

    # Davidson et al.: ,count,hate_speech,offensive_language,neither,class,tweet
    src = read_rows(a.davidson)
    kept, dropped, conflicts = dedup(src, "tweet")
    rows = [[r["tweet"], r["class"].strip(), split_of(r["tweet"])] for r in kept]
    for r in rows:
        assert r[1] in ("0", "1", "2"), r
    counts, labels = check_strata("davidson", rows, 1)
    raw, gz = write_gz(os.path.join(a.out, "davidson.csv.gz"), ["text", "class", "split"], rows)
    report("davidson.csv.gz", len(src), dropped, conflicts, len(rows), counts, labels, raw, gz)

    # COLD: ,split,topic,label,TEXT (upstream `split` is always `train` here)
    src = read_rows(a.cold)
    kept, dropped, conflicts = dedup(src, "TEXT")
    if a.no_topic:
        header = ["text", "label", "split"]
        rows = [[r["TEXT"], r["label"].strip(), split_of(r["TEXT"])] for r in kept]
    else:
        header = ["text", "label", "topic", "split"]
        rows = [[r["TEXT"], r["label"].strip(), r["topic"].strip(), split_of(r["TEXT"])] for r in kept]
    for r in rows:
        assert r[1] in ("0", "1"), r
    counts, labels = check_strata("cold", rows, 1)
    raw, gz = write_gz(os.path.join(a.out, "cold.csv.gz"), header, rows)
    report("cold.csv.gz", len(src), dropped, conflicts, len(rows), counts, labels, raw, gz)


def report(name, n_src, dropped, conflicts, n, counts, labels, raw, gz):
    print(f"{name}: {n_src} source rows, {dropped} exact duplicate texts dropped "
          f"({conflicts} of them with disagreeing labels), {n} rows; "
          f"{raw} bytes of CSV, {gz} bytes gzipped")
    print("| label | train | val | test | total |")
    print("|---|---:|---:|---:|---:|")
    tot = collections.Counter()
    for lab in labels:
        c = [counts[(lab, s)] for s in ("train", "val", "test")]
        for s, v in zip(("train", "val", "test"), c):
            tot[s] += v
        print(f"| {lab} | {c[0]} | {c[1]} | {c[2]} | {sum(c)} |")
    print(f"| all | {tot['train']} | {tot['val']} | {tot['test']} | {sum(tot.values())} |")


if __name__ == "__main__":
    main()
