//! Metrics against the official code (tests/fixtures/metrics, made by
//! gen/make_metrics.py): SuperNI's ROUGE-L (Porter stemmer; GPT-2 tokens for
//! non-English outputs) and exact match, jiwer's CER, lm-evaluation-harness's GSM8K answer
//! extraction, and nltk's Porter stemmer word by word. Every case within 1e-6.
mod common;

use instill::eval::metrics::{self, best, gsm8k, porter, rouge, xlingual, Cer, ExactMatch, Metric, RougeL};
use std::io::Read;

fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(common::fixture("metrics/cases.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn superni_rouge_l_exact_match_and_cer_match_the_official_scorer() {
    let all = cases();
    let pairs: Vec<_> = all.iter().filter(|c| c.get("kind").is_none()).collect();
    assert!(pairs.len() > 1500, "fixture has {} pairs", pairs.len());
    // (n, sum of EM, sum of ROUGE-L) per track, for the aggregate lines.
    let mut sums = [(0usize, 0f64, 0f64); 2];
    for c in &pairs {
        let (id, pred, refs, xl) = (c["id"].as_str().unwrap(), c["prediction"].as_str().unwrap(), strings(&c["references"]), c["xlingual"].as_bool().unwrap());
        let tokens = if xl { xlingual::tokenize(pred) } else { rouge::tokenize(pred, true) };
        assert_eq!(tokens, strings(&c["tokens_pred"]), "{id}: tokens of the prediction");
        let r = best(&RougeL { xlingual: xl }, pred, &refs) / 100.0;
        let em = best(&ExactMatch, pred, &refs) / 100.0;
        let cer = Cer.score(pred, &refs[0]) / 100.0;
        for (name, ours, want) in [("rougeL", r, &c["rougeL"]), ("exact_match", em, &c["exact_match"]), ("cer", cer, &c["cer"])] {
            let want = want.as_f64().unwrap();
            assert!((ours - want).abs() < 1e-6, "{id}: {name} {ours} vs official {want}");
        }
        let s = &mut sums[usize::from(xl)];
        *s = (s.0 + 1, s.1 + em, s.2 + r);
    }
    for a in all.iter().filter(|c| c["kind"] == "aggregate") {
        let (n, em, r) = sums[usize::from(a["xlingual"].as_bool().unwrap())];
        assert_eq!(n as u64, a["n"].as_u64().unwrap());
        let round4 = |x: f64| (x * 1e4).round() / 1e4;
        assert_eq!(round4(100.0 * em / n as f64), a["exact_match"].as_f64().unwrap());
        assert_eq!(round4(100.0 * r / n as f64), a["rougeL"].as_f64().unwrap());
    }
}

#[test]
fn gsm8k_answers_are_extracted_as_lm_evaluation_harness_does() {
    let all = cases();
    let g: Vec<_> = all.iter().filter(|c| c["kind"] == "gsm8k").collect();
    assert!(g.len() > 300);
    for c in g {
        let (text, reference) = (c["text"].as_str().unwrap(), c["reference"].as_str().unwrap());
        assert_eq!(gsm8k::strict(text).as_deref(), c["strict"].as_str(), "strict answer of {text:?}");
        assert_eq!(gsm8k::flexible(text).as_deref(), c["flexible"].as_str(), "flexible answer of {text:?}");
        assert_eq!(gsm8k::correct(text, reference), c["correct"].as_bool().unwrap(), "{text:?}");
        assert_eq!(gsm8k::correct_flexible(text, reference), c["correct_flexible"].as_bool().unwrap(), "{text:?}");
    }
}

#[test]
fn porter_stems_match_nltk() {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(common::fixture("metrics/porter.tsv.gz")).unwrap()).read_to_string(&mut text).unwrap();
    let mut n = 0;
    for line in text.lines() {
        let (word, stem) = line.split_once('\t').unwrap();
        assert_eq!(porter::stem(word), stem, "stem of {word:?}");
        n += 1;
    }
    assert!(n > 50_000);
}

#[test]
fn metric_names_and_best_reference() {
    for name in metrics::NAMES {
        assert!(metrics::by_name(name).is_ok(), "{name}");
    }
    assert!(metrics::by_name("bleu").err().unwrap().to_string().contains("rougeL"));
    // CER takes the lowest error over references; ROUGE-L the highest score.
    let refs = vec!["abc".to_string(), "abd".to_string()];
    assert_eq!(best(&Cer, "abd", &refs), 0.0);
    assert_eq!(best(&RougeL { xlingual: false }, "the cats", &["the cat".into(), "dogs".into()]), 100.0);
    assert_eq!(best(&ExactMatch, "x", &[]), 0.0);
}
