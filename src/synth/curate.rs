//! Curation after any method: exact duplicates among the examples (always), MinHash near
//! duplicates (`--near-dup`, a Jaccard threshold), and examples sharing a word n-gram with
//! an evaluation set (`--decontaminate FILE`, 13-grams as `instill data contamination`),
//! with `data::dedup`'s functions. What each drops is counted in the report like the
//! methods' own filters.
use super::Outcome;
use crate::data::dedup::{dedup_texts, shares_ngrams};
use crate::Result;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Curation {
    pub near_dup: Option<f64>,
    pub decontaminate: Vec<PathBuf>,
    pub ngram: usize,
}

pub fn curate(out: &mut Outcome, c: &Curation) -> Result<()> {
    let text = |e: &super::Example| format!("{}\n{}\n{}", e.instruction, e.input, e.output);
    keep_only(out, dedup_texts(out.examples.iter().map(text), None).0, "duplicate example");
    if let Some(t) = c.near_dup {
        keep_only(out, dedup_texts(out.examples.iter().map(text), Some(t)).0, &format!("near duplicate (MinHash Jaccard >= {t})"));
    }
    for file in &c.decontaminate {
        let eval = crate::data::read::load(file, &Default::default())?;
        let texts: Vec<String> = out.examples.iter().map(text).collect();
        let hit = shares_ngrams(&texts, &eval.records, c.ngram.max(1));
        let keep = (0..texts.len()).filter(|&i| !hit[i]).collect();
        keep_only(out, keep, &format!("shares a {}-gram with {}", c.ngram.max(1), file.display()));
    }
    Ok(())
}

/// Keeps the examples at `keep` (ascending), counting the others under `filter`.
fn keep_only(out: &mut Outcome, keep: Vec<usize>, filter: &str) {
    let all = std::mem::take(&mut out.examples);
    let mut k = keep.into_iter().peekable();
    for (i, e) in all.into_iter().enumerate() {
        if k.peek() == Some(&i) {
            k.next();
            out.examples.push(e);
        } else {
            out.drop(filter, &e.instruction);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Example, Provenance};

    fn ex(i: &str, o: &str) -> Example {
        Example { instruction: i.into(), input: String::new(), output: o.into(), provenance: Provenance { method: "t".into(), model: "m".into(), seed: 0, prompt_id: "p".into(), output_model: None } }
    }

    #[test]
    fn duplicates_near_duplicates_and_contaminated_examples_are_dropped_and_counted() {
        let long = "the quick brown fox jumps over the lazy dog while the farmer watches from the old wooden fence near the barn at dawn";
        let mut out = Outcome {
            examples: vec![ex("Tell a story.", long), ex("Tell a story.", long), ex("Tell a story.", &long.replace("dawn", "dusk")), ex("What is 2 + 2?", "4"), ex("Name a color.", "Blue.")],
            ..Default::default()
        };
        let dir = std::env::temp_dir().join(format!("instill-curate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let eval = dir.join("eval.jsonl");
        std::fs::write(&eval, "{\"instruction\": \"What is 2 + 2?\", \"input\": \"\", \"output\": \"4\"}\n").unwrap();
        let c = Curation { near_dup: Some(0.7), decontaminate: vec![eval.clone()], ngram: 13 };
        curate(&mut out, &c).unwrap();
        let kept: Vec<&str> = out.examples.iter().map(|e| e.instruction.as_str()).collect();
        assert_eq!(kept, ["Tell a story.", "Name a color."]);
        assert_eq!(out.dropped["duplicate example"], 1);
        assert_eq!(out.dropped["near duplicate (MinHash Jaccard >= 0.7)"], 1);
        assert_eq!(out.dropped[&format!("shares a 13-gram with {}", eval.display())], 1);
    }
}
