#!/usr/bin/env python3
"""Generate tests/fixtures/eval-vectors/*.json: BLEU, ROUGE and Porter-stemmer
results computed by the reference Python implementations, which
`tests/eval_vectors.rs` checks chatforge's metric code (`src/eval/`) against.

Run by hand, once; the output is committed. It is NOT part of CI. To
regenerate:

    python3 -m venv /tmp/evalenv
    /tmp/evalenv/bin/pip install sacrebleu==2.6.0 rouge-score==0.1.2 nltk==3.10.4
    /tmp/evalenv/bin/python scripts/make_eval_vectors.py [OUTDIR]

OUTDIR defaults to tests/fixtures/eval-vectors (relative to the repo root).

Versions used for the committed vectors: Python 3.11, sacrebleu 2.6.0,
rouge-score 0.1.2, nltk 3.10.4 (rouge-score's Porter stemmer), regex
2026.11.19, numpy 2.4.6, absl-py 2.5.1, six 1.17.0.

The sentence pairs are made here with a fixed seed (no clock, no network),
so two runs give byte-identical files:

- English: support-style sentences built from word pools (numbers, order
  ids, hyphens, apostrophes, HTML entities, mixed case, inflected words for
  the stemmer), each hypothesis a mutation of its reference (words dropped,
  swapped, substituted, re-cased, punctuation changed), so scores spread over
  the whole 0-100 range;
- Chinese: sentences of Chinese characters with Chinese and ASCII
  punctuation and embedded Latin words and digits;
- edge cases: empty hypothesis and/or reference, whitespace only, one word,
  identical pairs, non-ASCII letters whose lowercase is ASCII (Kelvin sign,
  dotted capital I), separators Python treats as whitespace (U+001C..U+001F,
  NBSP), and characters inside sacreBLEU's `zh` ranges as its Python source
  really reads them (e.g. U+2014, U+2026, U+20AC).

Output files:
    bleu.json    per pair: hyp, ref, the 13a and zh tokenisations, and the
                 single-pair corpus BLEU (13a and zh) with its statistics;
                 corpora: index ranges with corpus BLEU (13a and zh)
    rouge.json   per pair: rouge-score's tokens (with and without stemmer) and
                 ROUGE-1/2/L precision, recall and F-measure (both settings)
    porter.json  word -> nltk PorterStemmer().stem(word) for several hundred
                 words (the stemmer rouge-score uses)
"""

import json
import os
import random
import sys

import nltk
import rouge_score
import sacrebleu
from nltk.stem import porter
from rouge_score import rouge_scorer, tokenize as rouge_tokenize
from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

SEED = 20261129

EN_WORDS = (
    "the a an my your our order orders ordered ordering shipment shipping shipped "
    "parcel parcels package packages refund refunds refunded refunding return "
    "returns returned returning boots boot tent tents jacket jackets waterproof "
    "delivery deliveries delivered arrive arrived arriving late early today "
    "tomorrow yesterday week weeks days day business please thanks thank you "
    "can could would should will is are was were be been being have has had "
    "help helping helped helpful happiness happily generalization generalizations "
    "relational conditional rational valency hesitancy digitizer conformabli "
    "radically differently vileli analogousli vietnamization predication operator "
    "feudalism decisiveness hopefulness callousness formaliti sensitiviti "
    "sensibiliti triplicate formative formalize electriciti electrical hopeful "
    "goodness revival allowance inference airliner gyroscopic adjustable "
    "defensible irritant replacement adjustment dependent adoption homologou "
    "communism activate angulariti homologous effective bowdlerize probate rate "
    "cease controll roll skies sky dying lying tying news innings inning outings "
    "canning howe proceed exceed succeed agreed feed bled hopping hoping filing "
    "failing sized tanned falling hissing fizzed happy cries ties caresses ponies "
    "cats feed plastered motoring sing conflated troubled sized hopping "
    "account password email address billing invoice invoices charge charged card "
    "cards payment payments express standard free over under within after before "
    "customer customers service services agent agents human someone talk speak "
    "Northwind Outfitters Berlin Canada Japan Mexico Monday Friday"
).split()

EN_EXTRA = [
    "NW-483920", "NW-000017", "$25", "€40", "30-day", "3-5", "1.5", "2,000",
    "e-mail", "don't", "it's", "we'll", "&amp;", "&quot;hi&quot;", "&lt;b&gt;",
    "<skipped>", "U.S.", "e.g.", "10:30", "9am-5pm", "(free)", "[note]", "{x}",
    "50%", "#1", "a/b", "x+y", "café", "naïve", "Straße", "ÉCOLE", "\u212a",
    "\u0130stanbul", "über", "smörgåsbord", "—", "…", "‘quoted’", "“double”",
]

PUNCT = [".", ",", "!", "?", ";", ":", " -", "...", ""]

ZH_CHARS = (
    "您好我们的订单已经发货请问退款需要多少天可以帮您查询一下物流信息谢谢"
    "客服人员会在工作日内回复如果商品有质量问题请联系我们退货地址在上海北京"
    "帐户密码邮箱地址发票付款信用卡免费快递标准配送帐篷靴子夹克防水"
)
ZH_PUNCT = ["。", "，", "！", "？", "、", "：", "；", "（", "）", "“", "”", ".", ",", "!"]
ZH_LATIN = ["NW-483920", "iPhone", "OK", "30", "2026年", "100元", "email", "A-B", "3.5"]

EDGE_PAIRS = [
    ("", ""),
    ("", "The order shipped today."),
    ("The order shipped today.", ""),
    ("   ", "hello"),
    ("hello", "   "),
    ("hello", "hello"),
    ("hello", "Hello"),
    ("hello", "world"),
    ("Thanks!", "Thanks!"),
    ("Thanks", "thanks!"),
    ("a", "a a a a a"),
    ("a a a a a", "a"),
    ("the the the the", "the cat is on the mat"),
    (".", "."),
    ("...", "?"),
    ("NW-483920", "NW-483920"),
    ("1,000.50 dollars", "1,000.50 dollars"),
    ("3-5 days", "3 - 5 days"),
    ("&amp; &quot;quoted&quot; &lt;tag&gt;", "& \"quoted\" <tag>"),
    ("<skipped> the rest", "the rest"),
    ("line-\nbreak", "linebreak"),
    ("tab\there", "tab here"),
    ("sep\x1cone\x1dtwo\x1ethree\x1ffour", "sep one two three four"),
    ("non\u00a0breaking space", "non breaking space"),
    ("em\u2014dash and ellipsis\u2026", "em \u2014 dash and ellipsis \u2026"),
    ("price \u20ac40 or \u00a325", "price \u20ac 40 or \u00a3 25"),
    ("\u212aelvin \u0130stanbul", "kelvin istanbul"),
    ("caf\u00e9 na\u00efve stra\u00dfe", "cafe naive strasse"),
    ("\u00fcber alles", "uber alles"),
    ("trailing spaces   ", "trailing spaces"),
    ("  leading spaces", "leading spaces"),
    ("running runners ran", "run runner running"),
    ("generalizations happiness", "generalization happy"),
    ("skies dying lying", "sky die lie"),
    ("你好", "你好"),
    ("你好", ""),
    ("", "你好"),
    ("谢谢", "谢谢您"),
    ("我", "我"),
    ("订单NW-483920已发货。", "您的订单 NW-483920 已经发货。"),
    ("\uff21\uff22\uff23 fullwidth", "ABC fullwidth"),
    ("\u3000ideographic space\u3000", "ideographic space"),
    ("mixed 中文 and English", "mixed 中文 and english"),
    ("emoji \u2600\u2601 weather \u2702", "emoji weather"),
    ("U+2000\u2000edge\u2001case", "edge case"),
    ("a b c d e f g h", "a b c d e f g h"),
    ("a b c d", "d c b a"),
    ("one", "one two three four five six seven eight nine ten"),
    ("one two three four five six seven eight nine ten", "one"),
]


def en_sentence(rng):
    n = rng.randint(3, 18)
    words = []
    for _ in range(n):
        if rng.random() < 0.12:
            words.append(rng.choice(EN_EXTRA))
        else:
            words.append(rng.choice(EN_WORDS))
    if rng.random() < 0.6:
        words[0] = words[0].capitalize()
    s = " ".join(words)
    # Some inner punctuation glued to words, as people write.
    if rng.random() < 0.4:
        i = rng.randrange(len(words))
        words[i] += rng.choice([",", ";", ":", "!", "?"])
        s = " ".join(words)
    return s + rng.choice(PUNCT)


def en_mutate(rng, ref):
    words = ref.split()
    out = []
    for w in words:
        r = rng.random()
        if r < 0.12:
            continue  # dropped
        if r < 0.24:
            out.append(rng.choice(EN_WORDS))  # substituted
        elif r < 0.30:
            out.append(w.upper() if rng.random() < 0.5 else w.lower())
        elif r < 0.34:
            out.append(w.rstrip(".,!?;:") + rng.choice(PUNCT))
        else:
            out.append(w)
        if rng.random() < 0.05:
            out.append(rng.choice(EN_WORDS))  # inserted
    if len(out) > 2 and rng.random() < 0.25:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def zh_sentence(rng):
    parts = []
    for _ in range(rng.randint(1, 4)):
        n = rng.randint(2, 12)
        parts.append("".join(rng.choice(ZH_CHARS) for _ in range(n)))
        if rng.random() < 0.3:
            parts.append(rng.choice(ZH_LATIN))
        parts.append(rng.choice(ZH_PUNCT))
    sep = " " if rng.random() < 0.2 else ""
    return sep.join(parts)


def zh_mutate(rng, ref):
    out = []
    for ch in ref:
        r = rng.random()
        if r < 0.1:
            continue
        if r < 0.2:
            out.append(rng.choice(ZH_CHARS))
        else:
            out.append(ch)
    if rng.random() < 0.3:
        out.append(rng.choice(ZH_PUNCT))
    return "".join(out)


def make_pairs():
    rng = random.Random(SEED)
    pairs = [{"kind": "edge", "hyp": h, "ref": r} for h, r in EDGE_PAIRS]
    for _ in range(220):
        ref = en_sentence(rng)
        r = rng.random()
        if r < 0.08:
            hyp = ref  # identical
        elif r < 0.16:
            hyp = en_sentence(rng)  # unrelated
        else:
            hyp = en_mutate(rng, ref)
        pairs.append({"kind": "en", "hyp": hyp, "ref": ref})
    for _ in range(110):
        ref = zh_sentence(rng)
        r = rng.random()
        if r < 0.08:
            hyp = ref
        elif r < 0.16:
            hyp = zh_sentence(rng)
        else:
            hyp = zh_mutate(rng, ref)
        pairs.append({"kind": "zh", "hyp": hyp, "ref": ref})
    return pairs


def bleu_entry(metric, hyps, refs):
    s = metric.corpus_score(hyps, [refs])
    return {
        "score": s.score,
        "bp": s.bp,
        "sys_len": s.sys_len,
        "ref_len": s.ref_len,
        "counts": list(s.counts),
        "totals": list(s.totals),
        "precisions": list(s.precisions),
    }


def rouge_entry(scores):
    return {k: [v.precision, v.recall, v.fmeasure] for k, v in sorted(scores.items())}


def stem_words(pairs):
    words = set(EN_WORDS)
    for p in pairs:
        words.update(rouge_tokenize.tokenize(p["hyp"], None))
        words.update(rouge_tokenize.tokenize(p["ref"], None))
    # Suffix families every Porter step handles, on a few stems.
    for stem in ["relat", "condit", "rat", "val", "hesit", "digit", "conform",
                 "radic", "differ", "vil", "analog", "predic", "oper", "feud",
                 "decis", "hope", "callous", "formal", "sensit", "electr", "good",
                 "allow", "infer", "airlin", "gyroscop", "adjust", "defens",
                 "irrit", "replac", "depend", "adopt", "homolog", "commun",
                 "activ", "angular", "effect", "bowdler", "prob", "ceas",
                 "control", "ship", "deliv", "refund", "tent", "boot", "ord",
                 "happ", "geolog", "tri", "y", "by", "say", "play"]:
        for suf in ["", "s", "es", "ies", "ied", "ed", "ing", "eed", "y", "ly",
                    "ational", "tional", "enci", "anci", "izer", "bli", "alli",
                    "entli", "eli", "ousli", "ization", "ation", "ator", "alism",
                    "iveness", "fulness", "ousness", "aliti", "iviti", "biliti",
                    "fulli", "logi", "icate", "ative", "alize", "iciti", "ical",
                    "ful", "ness", "al", "ance", "ence", "er", "ic", "able",
                    "ible", "ant", "ement", "ment", "ent", "sion", "tion", "ou",
                    "ism", "ate", "iti", "ous", "ive", "ize", "e", "ll"]:
            words.add(stem + suf)
    words.update(["a", "is", "as", "ies", "sky", "skies", "news", "inning",
                  "innings", "outings", "canning", "howe", "proceed", "exceed",
                  "succeed", "agreed", "ties", "dies", "lies", "yyy", "ayy",
                  "syzygy", "rhythm", "queue", "2026", "nw483920", "abc123def"])
    return sorted(w for w in words if w)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "eval-vectors"))
    os.makedirs(out, exist_ok=True)
    versions = {
        "python": sys.version.split()[0],
        "sacrebleu": sacrebleu.__version__,
        "rouge-score": getattr(rouge_score, "__version__", "0.1.2"),
        "nltk": nltk.__version__,
    }
    pairs = make_pairs()
    bleu13 = BLEU()  # the defaults: 13a, exp smoothing, no lowercasing
    bleuzh = BLEU(tokenize="zh")
    tok13, tokzh = Tokenizer13a(), TokenizerZh()
    bleu_pairs = []
    for p in pairs:
        bleu_pairs.append({
            "kind": p["kind"],
            "hyp": p["hyp"],
            "ref": p["ref"],
            "tok_13a": [tok13(p["hyp"].rstrip()), tok13(p["ref"].rstrip())],
            "tok_zh": [tokzh(p["hyp"].rstrip()), tokzh(p["ref"].rstrip())],
            "bleu_13a": bleu_entry(bleu13, [p["hyp"]], [p["ref"]]),
            "bleu_zh": bleu_entry(bleuzh, [p["hyp"]], [p["ref"]]),
        })
    # Corpora: each kind, everything, and runs of 10 consecutive pairs.
    ranges = []
    kinds = [p["kind"] for p in pairs]
    for k in ["edge", "en", "zh"]:
        idx = [i for i, x in enumerate(kinds) if x == k]
        ranges.append((k, idx[0], idx[-1] + 1))
    ranges.append(("all", 0, len(pairs)))
    for s in range(0, len(pairs), 10):
        ranges.append((f"run{s}", s, min(s + 10, len(pairs))))
    corpora = []
    for name, a, b in ranges:
        hyps = [p["hyp"] for p in pairs[a:b]]
        refs = [p["ref"] for p in pairs[a:b]]
        corpora.append({
            "name": name,
            "start": a,
            "end": b,
            "bleu_13a": bleu_entry(bleu13, hyps, refs),
            "bleu_zh": bleu_entry(bleuzh, hyps, refs),
        })
    with open(os.path.join(out, "bleu.json"), "w", encoding="utf-8") as f:
        json.dump({"versions": versions, "seed": SEED, "pairs": bleu_pairs,
                   "corpora": corpora}, f, ensure_ascii=False, indent=1)
        f.write("\n")

    plain = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    stemmed = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    stemmer = porter.PorterStemmer()
    rouge_pairs = []
    for p in pairs:
        rouge_pairs.append({
            "kind": p["kind"],
            "hyp": p["hyp"],
            "ref": p["ref"],
            "tokens": [rouge_tokenize.tokenize(p["hyp"], None),
                       rouge_tokenize.tokenize(p["ref"], None)],
            "tokens_stemmed": [rouge_tokenize.tokenize(p["hyp"], stemmer),
                               rouge_tokenize.tokenize(p["ref"], stemmer)],
            # score(target, prediction): the reference comes first.
            "plain": rouge_entry(plain.score(p["ref"], p["hyp"])),
            "stemmed": rouge_entry(stemmed.score(p["ref"], p["hyp"])),
        })
    with open(os.path.join(out, "rouge.json"), "w", encoding="utf-8") as f:
        json.dump({"versions": versions, "seed": SEED, "pairs": rouge_pairs},
                  f, ensure_ascii=False, indent=1)
        f.write("\n")

    stems = [[w, stemmer.stem(w)] for w in stem_words(pairs)]
    with open(os.path.join(out, "porter.json"), "w", encoding="utf-8") as f:
        json.dump({"versions": versions, "stems": stems}, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"{len(pairs)} pairs, {len(corpora)} corpora, {len(stems)} stemmed words -> {out}")


if __name__ == "__main__":
    main()
