#!/usr/bin/env python3
"""Generate tests/fixtures/gpt2-tokenizer/: the REAL GPT-2 tokenizer as a Hugging Face
`tokenizer.json`, plus expected encodings made by HF's fast tokenizer.

Nothing comes from the HF hub or GitHub. The GPT-2 BPE vocabulary is taken from
the PyPI package `openai-whisper` (MIT licence), which ships it as
`whisper/assets/gpt2.tiktoken` (one line per token: base64(token bytes) rank;
ranks 0..50255 = GPT-2 ids). From it this script builds exactly what HF's
GPT2Converter builds from GPT-2's vocab.json + merges.txt:

  * vocab: each token's bytes in GPT-2's byte-level unicode alphabet -> rank,
    plus "<|endoftext|>" -> 50256 (an added special token);
  * merges: for every token of rank r >= 256, the pair that byte-level BPE
    restricted to ranks < r leaves (exactly two parts), in rank order; this is
    GPT-2's merges.txt (merge i creates token 256 + i);
  * ByteLevel pre-tokenizer (add_prefix_space=false, GPT-2 regex), BPE model,
    ByteLevel decoder, ByteLevel post-processor (trim_offsets=false).

It is wrapped in `transformers.PreTrainedTokenizerFast` and written with
`save_pretrained`; the resulting tokenizer.json is committed (gzip-compressed
as tokenizer.json.gz when over 1.5 MB). expected.json holds ~20 cases encoded
with HF's default special-token handling (`tok(text)["input_ids"]`:
"<|endoftext|>" in the text becomes 50256, no BOS/EOS is added), and
`decoded` = `tok.decode(ids)` with the HF defaults; the script checks that
decoded equals the raw `tokenizers` decode (skip_special_tokens=false) and the
original text.

Checks made before writing: well-known GPT-2 ids ("Hello world" -> [15496, 995],
" the" -> [262], "<|endoftext|>" -> [50256]); the merge count (50000); the same
ids from the raw `tokenizers` library, from transformers' own GPT2Tokenizer
built from the recovered vocab/merges, and (when installed) from OpenAI's
`tiktoken` with GPT-2's pattern on the same ranks file.

Run by hand, once (not in CI):

    /work/pyenv-fixtures/bin/pip install torch transformers tiktoken
    /work/pyenv-fixtures/bin/python scripts/make_tokenizer_fixture.py [--source PATH] [OUTDIR]

--source: a gpt2.tiktoken file, or an openai-whisper sdist (.tar.gz) / wheel
(.whl). Without it the script runs `pip download --no-deps
openai-whisper==20250625` into a temporary folder. OUTDIR defaults to
tests/fixtures/gpt2-tokenizer.

Versions used for the committed fixture: openai-whisper 20250625 (sdist),
transformers 5.24.0, tokenizers 0.23.3, tiktoken 0.14.0, Python 3.11.7.
"""

import argparse
import base64
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import transformers
import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

WHISPER_VERSION = "20250625"
GPT2_TIKTOKEN_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
ASSET = "whisper/assets/gpt2.tiktoken"
EOT = "<|endoftext|>"
EOT_ID = 50256
GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GZIP_OVER = 1_500_000

CASES = [
    "Hello world",
    " the",
    EOT,
    "",
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How's it going? I'm fine; you're great... (really) [yes] {ok}",
    "Numbers: 0 1 12 123 1234 12345 3.14159 -42 1e10 2024-06-01 $19.99 100%",
    "  leading and trailing spaces  ",
    "multiple    spaces\tand\ttabs\n\nnewlines\r\nend",
    "中文测试：你好，世界！",
    "Emoji: 😀👍🏽 🇫🇷 ❤️ 🤖",
    "Ünïcödé àccents — naïve café, “quotes” and ‘single’ …",
    "Привет, мир! こんにちは 안녕하세요",
    "Hello<|endoftext|>World",
    "first doc.<|endoftext|> second doc<|endoftext|>",
    "<|endoftext|><|endoftext|>",
    "<|endoftext| almost special <|endoftext",
    "def f(x):\n    return x ** 2  # square\n",
    "It's don't we'll they've I'd she'll O'Neil's",
    "ALL CAPS and MiXeD CaSe, URLs: https://example.com/a?b=c&d=e",
    "Hello . world , it 's ok ? don 't",
    "\n",
    "    ",
]


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def read_source(source: str | None) -> bytes:
    if source is None:
        with tempfile.TemporaryDirectory(prefix="whisper-dl-") as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                 f"openai-whisper=={WHISPER_VERSION}", "-d", tmp],
                check=True,
            )
            (name,) = os.listdir(tmp)
            return read_source(os.path.join(tmp, name))
    if source.endswith(".tiktoken"):
        with open(source, "rb") as f:
            return f.read()
    if source.endswith(".whl"):
        with zipfile.ZipFile(source) as z:
            return z.read(ASSET)
    with tarfile.open(source) as t:
        (member,) = [m for m in t.getmembers() if m.name.endswith("/" + ASSET)]
        return t.extractfile(member).read()


def parse_ranks(data: bytes) -> dict[bytes, int]:
    ranks = {}
    for line in data.splitlines():
        if line.strip():
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Merge list in rank order: BPE on each token limited to lower ranks."""
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) == 1:
            continue
        parts = [bytes([b]) for b in tok]
        while True:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
        assert len(parts) == 2, (tok, parts)
        merges.append((parts[0], parts[1]))
    return merges


def build_tokenizer(ranks: dict[bytes, int]) -> tuple[Tokenizer, dict[str, int], list[tuple[str, str]]]:
    b2u = bytes_to_unicode()
    enc = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
    vocab = {enc(tok): rank for tok, rank in ranks.items()}
    merges = [(enc(a), enc(b)) for a, b in recover_merges(ranks)]
    vocab[EOT] = EOT_ID
    tok = Tokenizer(
        BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
            end_of_word_suffix="", fuse_unk=False)
    )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(EOT, special=True, normalized=True)])
    return tok, vocab, merges


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir", nargs="?", default=os.path.join(repo_root(), "tests", "fixtures", "gpt2-tokenizer"))
    ap.add_argument("--source")
    args = ap.parse_args()

    data = read_source(args.source)
    digest = hashlib.sha256(data).hexdigest()
    assert digest == GPT2_TIKTOKEN_SHA256, f"unexpected gpt2.tiktoken sha256 {digest}"
    ranks = parse_ranks(data)
    assert sorted(ranks.values()) == list(range(EOT_ID)), "ranks must be 0..50255"
    assert all(len(t) == 1 for t, r in ranks.items() if r < 256)

    raw, vocab, merges = build_tokenizer(ranks)
    assert len(merges) == 50000, len(merges)
    assert len(vocab) == 50257
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=EOT, eos_token=EOT, unk_token=EOT)
    hf.model_max_length = 1024

    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        with open(os.path.join(tmp, "tokenizer.json"), "rb") as f:
            tj = f.read()
        # Reload exactly what will be committed, both ways.
        reraw = Tokenizer.from_file(os.path.join(tmp, "tokenizer.json"))
        hf = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tmp, "tokenizer.json"),
                                     bos_token=EOT, eos_token=EOT, unk_token=EOT)

    known = {"Hello world": [15496, 995], " the": [262], EOT: [EOT_ID], " Hello world": [18435, 995]}
    for text, ids in known.items():
        got = hf(text)["input_ids"]
        assert got == ids, (text, got, ids)
        assert reraw.encode(text).ids == ids
    print("well-known GPT-2 ids: OK", known)

    # transformers' own GPT-2 tokenizer class from the recovered vocab/merges.
    gpt2cls = getattr(transformers, "GPT2TokenizerFast", None) or transformers.GPT2Tokenizer
    try:
        ref = gpt2cls(vocab=dict(vocab), merges=list(merges))
    except TypeError:  # transformers 4.x wants files
        with tempfile.TemporaryDirectory() as tmp:
            vf, mf = os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt")
            with open(vf, "w", encoding="utf-8") as f:
                json.dump(vocab, f, ensure_ascii=False)
            with open(mf, "w", encoding="utf-8") as f:
                f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
            ref = gpt2cls(vf, mf)

    try:
        import tiktoken

        tt = tiktoken.Encoding("gpt2-local", pat_str=GPT2_PAT, mergeable_ranks=ranks,
                               special_tokens={EOT: EOT_ID})
    except ImportError:
        tt = None
        print("tiktoken not installed: skipping the tiktoken cross-check")

    cases = []
    for text in CASES:
        ids = hf(text)["input_ids"]
        assert reraw.encode(text).ids == ids, text
        assert ref(text)["input_ids"] == ids, text
        if tt is not None:
            assert tt.encode(text, allowed_special="all") == ids, (text, tt.encode(text, allowed_special="all"), ids)
        decoded = hf.decode(ids)
        assert decoded == reraw.decode(ids, skip_special_tokens=False) == text, (text, decoded)
        cases.append({"text": text, "ids": ids, "decoded": decoded})
        print(f"{text!r:60} -> {len(ids)} ids")
    print("raw tokenizers == HF fast == transformers GPT2 class" + (" == tiktoken" if tt else ""))

    os.makedirs(args.outdir, exist_ok=True)
    for stale in ("tokenizer.json", "tokenizer.json.gz"):
        p = os.path.join(args.outdir, stale)
        if os.path.exists(p):
            os.remove(p)
    if len(tj) > GZIP_OVER:
        out = os.path.join(args.outdir, "tokenizer.json.gz")
        # mtime=0 and no file name: byte-identical output on every run.
        with open(out, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as g:
            g.write(tj)
    else:
        out = os.path.join(args.outdir, "tokenizer.json")
        with open(out, "wb") as f:
            f.write(tj)
    with open(os.path.join(args.outdir, "expected.json"), "w", encoding="utf-8") as f:
        # One case per line: easy to read and to diff.
        f.write("[\n" + ",\n".join(" " + json.dumps(c, ensure_ascii=False) for c in cases) + "\n]\n")
    print(f"tokenizer.json: {len(tj)} bytes, sha256 {hashlib.sha256(tj).hexdigest()}")
    print(f"wrote {out} ({os.path.getsize(out)} bytes) and expected.json ({len(cases)} cases)")
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}"
          + (f", tiktoken {tiktoken.__version__}" if tt else ""))


if __name__ == "__main__":
    main()
