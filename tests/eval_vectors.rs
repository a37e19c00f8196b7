//! The metric code against the reference implementations: vectors computed
//! by sacreBLEU 2.6.0, rouge-score 0.1.2 and NLTK's Porter stemmer with
//! `scripts/make_eval_vectors.py` (committed in
//! `tests/fixtures/eval-vectors/`). BLEU must match within 0.01 and ROUGE
//! within 1e-4; tokenisations and stems must match exactly.

use std::path::Path;

use chatforge::eval::{BleuStats, Tokenize, corpus_bleu, porter, rouge};
use serde_json::Value;

const BLEU_TOL: f64 = 0.01;
const ROUGE_TOL: f64 = 1e-4;

fn load(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eval-vectors")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

/// Checks a BLEU result against sacreBLEU's entry; returns |Δ score|.
fn check_bleu(got: &chatforge::eval::Bleu, want: &Value, what: &str) -> f64 {
    let st = &got.stats;
    assert_eq!(st.sys_len, u(&want["sys_len"]), "{what}: sys_len");
    assert_eq!(st.ref_len, u(&want["ref_len"]), "{what}: ref_len");
    for n in 0..4 {
        assert_eq!(st.counts[n], u(&want["counts"][n]), "{what}: counts[{n}]");
        assert_eq!(st.totals[n], u(&want["totals"][n]), "{what}: totals[{n}]");
    }
    let diff = (got.score - want["score"].as_f64().unwrap()).abs();
    assert!(
        diff <= BLEU_TOL,
        "{what}: BLEU {} vs {}",
        got.score,
        want["score"]
    );
    diff
}

#[test]
fn test_bleu_matches_sacrebleu() {
    let v = load("bleu.json");
    let pairs = v["pairs"].as_array().unwrap();
    assert!(pairs.len() >= 300, "{} pairs", pairs.len());
    let mut max_diff = 0f64;
    let mut nonzero = 0;
    for (i, p) in pairs.iter().enumerate() {
        let (h, r) = (s(&p["hyp"]), s(&p["ref"]));
        for (tok, key, tkey) in [
            (Tokenize::Thirteen, "bleu_13a", "tok_13a"),
            (Tokenize::Zh, "bleu_zh", "tok_zh"),
        ] {
            let what = format!("pair {i} {key} {h:?} / {r:?}");
            assert_eq!(tok.apply(h), s(&p[tkey][0]), "{what}: hyp tokens");
            assert_eq!(tok.apply(r), s(&p[tkey][1]), "{what}: ref tokens");
            let b = corpus_bleu(&[h], &[r], tok);
            max_diff = max_diff.max(check_bleu(&b, &p[key], &what));
            if b.score > 0.0 {
                nonzero += 1;
            }
        }
    }
    // The vectors exercise the whole range, not only 0 and 100.
    assert!(nonzero > 300, "{nonzero} non-zero scores");
    let corpora = v["corpora"].as_array().unwrap();
    for c in corpora {
        let (a, b) = (u(&c["start"]) as usize, u(&c["end"]) as usize);
        let hyps: Vec<&str> = pairs[a..b].iter().map(|p| s(&p["hyp"])).collect();
        let refs: Vec<&str> = pairs[a..b].iter().map(|p| s(&p["ref"])).collect();
        for (tok, key) in [(Tokenize::Thirteen, "bleu_13a"), (Tokenize::Zh, "bleu_zh")] {
            let what = format!("corpus {} {key}", s(&c["name"]));
            let got = corpus_bleu(&hyps, &refs, tok);
            max_diff = max_diff.max(check_bleu(&got, &c[key], &what));
            // Corpus statistics are the sums of the lines' statistics.
            let mut sum = BleuStats::default();
            for (h, r) in hyps.iter().zip(&refs) {
                sum.add(&BleuStats::of_pair(&tok.words(h), &tok.words(r)));
            }
            assert_eq!(sum, got.stats);
        }
    }
    println!(
        "BLEU: {} pairs x 2 tokenizers + {} corpora x 2, max |diff| {max_diff:e}",
        pairs.len(),
        corpora.len()
    );
}

#[test]
fn test_rouge_matches_rouge_score() {
    let v = load("rouge.json");
    let pairs = v["pairs"].as_array().unwrap();
    assert!(pairs.len() >= 300);
    let mut max_diff = 0f64;
    for (i, p) in pairs.iter().enumerate() {
        let (h, r) = (s(&p["hyp"]), s(&p["ref"]));
        for (stem, key, tkey) in [
            (false, "plain", "tokens"),
            (true, "stemmed", "tokens_stemmed"),
        ] {
            let what = format!("pair {i} {key} {h:?} / {r:?}");
            let want_tokens: Vec<Vec<String>> = serde_json::from_value(p[tkey].clone()).unwrap();
            assert_eq!(
                rouge::tokenize(h, stem),
                want_tokens[0],
                "{what}: hyp tokens"
            );
            assert_eq!(
                rouge::tokenize(r, stem),
                want_tokens[1],
                "{what}: ref tokens"
            );
            let got = rouge::score(r, h, stem);
            for (name, prf) in [
                ("rouge1", got.rouge1),
                ("rouge2", got.rouge2),
                ("rougeL", got.rouge_l),
            ] {
                let want = &p[key][name];
                for (j, g) in [prf.precision, prf.recall, prf.fmeasure].iter().enumerate() {
                    let d = (g - want[j].as_f64().unwrap()).abs();
                    assert!(d <= ROUGE_TOL, "{what}: {name}[{j}] {g} vs {}", want[j]);
                    max_diff = max_diff.max(d);
                }
            }
        }
    }
    println!(
        "ROUGE: {} pairs x 2 stemmer settings x 3 metrics x (P, R, F), max |diff| {max_diff:e}",
        pairs.len()
    );
}

#[test]
fn test_porter_matches_nltk() {
    let v = load("porter.json");
    let stems = v["stems"].as_array().unwrap();
    assert!(stems.len() > 1000);
    let wrong: Vec<String> = stems
        .iter()
        .filter_map(|p| {
            let (w, want) = (s(&p[0]), s(&p[1]));
            let got = porter::stem(w);
            (got != want).then(|| format!("{w}: {got} (nltk {want})"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {}: {wrong:?}",
        wrong.len(),
        stems.len()
    );
}
