//! `instill synth METHOD -m MODEL --n N --out FILE [--input FILE]`: synthesize
//! instruction data (Magpie, Self-Instruct, Evol-Instruct, non-instructional halves,
//! R-Tuning); prints the
//! curation counts. Resumable: a rerun with the same settings continues.
use super::ModelArgs;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct SynthArgs {
    /// magpie | self-instruct | evol | halves | refusal.
    method: String,
    #[command(flatten)]
    model: ModelArgs,
    /// How many examples (Magpie, halves) or new instructions (Self-Instruct) to aim for.
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// The method's input: seed tasks JSONL (self-instruct), instruction data (evol), text (halves), QA data (refusal).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Evolution rounds (evol only).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Also drop MinHash near-duplicates at this Jaccard similarity (0-1]; exact
    /// duplicates are always dropped.
    #[arg(long)]
    near_dup: Option<f64>,
    /// Drop examples sharing a word n-gram with this evaluation set (repeatable).
    #[arg(long)]
    decontaminate: Vec<PathBuf>,
    /// The n of --decontaminate's n-grams.
    #[arg(long, default_value_t = 13)]
    ngram: usize,
    /// Output JSONL (Alpaca layout with provenance); `.report.json` and `.work/` beside it.
    #[arg(long)]
    out: PathBuf,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sequences generated together.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Tokens per response.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Chat template: chatml|llama3|gemma|alpaca|FILE (default: the model's own).
    #[arg(long)]
    template: Option<String>,
    /// Ensemble-Instruct: these models (comma-separated; -m's own name is skipped) also
    /// answer every example, and the output the models agree on is kept.
    #[arg(long, value_delimiter = ',')]
    ensemble: Vec<String>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: SynthArgs) -> Result<()> {
    let method = instill::synth::method(&a.method)?;
    if let Some(t) = a.near_dup.filter(|t| !(*t > 0.0 && *t <= 1.0)) {
        anyhow::bail!("--near-dup {t}: expected a similarity in (0, 1]");
    }
    let (model, tok) = a.model.load()?;
    let others = ensemble_models(&a)?;
    let cx = instill::synth::Context {
        model: &model,
        tok: &tok,
        model_name: a.model.model.clone(),
        n: a.n,
        seed: a.seed,
        batch_size: a.batch_size,
        template: a.template.clone(),
        max_new_tokens: a.max_new_tokens,
        input: a.input.clone(),
        rounds: a.rounds,
        curation: instill::synth::curate::Curation { near_dup: a.near_dup, decontaminate: a.decontaminate.clone(), ngram: a.ngram },
        ensemble: others.iter().map(|(name, m, t)| instill::synth::ensemble::Member { name: name.clone(), model: m, tok: t }).collect(),
        progress: !a.quiet,
    };
    let r = instill::synth::synthesize(method, &cx, &a.out)?;
    println!("{}: kept {} examples in {:.0} s -> {}", r.method, r.kept, r.seconds, a.out.display());
    for (kind, n) in &r.counts {
        println!("  kept    {n:>5}  {kind}");
    }
    for (filter, n) in &r.dropped {
        println!("  dropped {n:>5}  {filter}");
    }
    Ok(())
}

/// The `--ensemble` models other than the generator, loaded.
fn ensemble_models(a: &SynthArgs) -> Result<Vec<(String, instill::CausalLm, instill::Tokenizer)>> {
    let names: Vec<&String> = a.ensemble.iter().filter(|n| **n != a.model.model).collect();
    if !a.ensemble.is_empty() && names.is_empty() {
        anyhow::bail!("--ensemble names only the generating model {:?}: list the other models that answer too", a.model.model);
    }
    names
        .into_iter()
        .map(|n| {
            let (m, t) = ModelArgs::named(n, a.model.dequantize, None).load()?;
            Ok((n.clone(), m, t))
        })
        .collect()
}
