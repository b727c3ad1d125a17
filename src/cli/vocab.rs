//! `instill vocab extend|propagate`: Learned Embedding Propagation's vocabulary steps
//! (the library's `peft::lep`); embedding-only tuning between them is `instill train`
//! with `recipes/lep-embeddings.yaml`.
use super::ModelArgs;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use instill::peft::lep::{self, Propagation};
use std::path::PathBuf;

#[derive(Args)]
pub struct VocabArgs {
    #[command(subcommand)]
    cmd: VocabCmd,
}

#[derive(Subcommand)]
enum VocabCmd {
    /// Learn new BPE merges on a corpus and write the model with the extended vocabulary
    /// (new rows: the mean of their sub-tokens' rows) as a Hugging Face directory.
    Extend(ExtendArgs),
    /// Put an adapted base's embeddings into an instruction-tuned model of the same base.
    Propagate(PropagateArgs),
}

#[derive(Args)]
struct ExtendArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text files (one text per line) or JSONL files (see --field); repeat for several.
    #[arg(long = "corpus", required = true)]
    corpus: Vec<PathBuf>,
    /// The JSONL field holding the text.
    #[arg(long, default_value = "text")]
    field: String,
    /// How many tokens to add at most.
    #[arg(long, default_value_t = 1000)]
    new_tokens: usize,
    /// A pair must occur this many times to become a token.
    #[arg(long, default_value_t = 2)]
    min_freq: usize,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct PropagateArgs {
    /// The original base (the target was instruction-tuned from it).
    #[arg(long)]
    base: String,
    /// The base with the extended vocabulary and tuned embeddings (a Hugging Face directory).
    #[arg(long)]
    adapted: String,
    /// The instruction-tuned model to carry the embeddings into.
    #[arg(long)]
    target: String,
    /// swap, overlap or project.
    #[arg(long, default_value = "project")]
    method: String,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: VocabArgs) -> Result<()> {
    match a.cmd {
        VocabCmd::Extend(e) => extend(e),
        VocabCmd::Propagate(p) => propagate(p),
    }
}

fn extend(a: ExtendArgs) -> Result<()> {
    if a.model.adapter.is_some() {
        bail!("--adapter: merge the adapter first (`instill export --merge`), then extend the merged model");
    }
    let mut texts = vec![];
    for p in &a.corpus {
        texts.extend(lep::read_corpus(p, &a.field)?);
    }
    let (mut model, tok) = a.model.load()?;
    let (new_tok, r) = lep::extend(&mut model, &tok, &texts, a.new_tokens, a.min_freq)?;
    instill::model::weights::save_hf_dir(&a.out, model.arch, &model.config, model.named_tensors()?, candle_core::DType::F32, 2_000_000_000, &new_tok.hf_files())?;
    instill::peft::write_atomic(&a.out.join("vocab_extension.json"), serde_json::to_string_pretty(&r)?.as_bytes())?;
    let ratio = r.tokens_after as f64 / r.tokens_before as f64;
    eprintln!(
        "vocab: {} tokens added (ids {}..{}); the corpus's {} texts take {} tokens instead of {} ({:.1}%)",
        r.added,
        r.first_id,
        r.vocab_after,
        texts.len(),
        r.tokens_after,
        r.tokens_before,
        100.0 * ratio
    );
    for (t, parts) in r.examples.iter().take(8) {
        eprintln!("  {t:?} = {parts:?}");
    }
    println!("{}", a.out.display());
    Ok(())
}

fn propagate(a: PropagateArgs) -> Result<()> {
    let how = Propagation::parse(&a.method)?;
    let load = |m: &str| ModelArgs::named(m, false, None).load();
    let (base, _) = load(&a.base)?;
    let (adapted, tok) = load(&a.adapted)?;
    let (mut target, _) = load(&a.target)?;
    if base.config.tie_embeddings != target.config.tie_embeddings || adapted.config.tie_embeddings != target.config.tie_embeddings {
        bail!("--base, --adapted and --target must all tie their embeddings to the output head, or none");
    }
    let embed = lep::propagate(&base.embedding_weight()?, &adapted.embedding_weight()?, &target.embedding_weight()?, how)?;
    let head = if target.config.tie_embeddings {
        None
    } else {
        let w = |m: &instill::CausalLm| m.output_weight().and_then(|t| Ok(t.to_dtype(candle_core::DType::F32)?));
        Some(lep::propagate(&w(&base)?, &w(&adapted)?, &w(&target)?, how)?)
    };
    target.set_embeddings(embed, head)?;
    instill::model::weights::save_hf_dir(&a.out, target.arch, &target.config, target.named_tensors()?, candle_core::DType::F32, 2_000_000_000, &tok.hf_files())?;
    eprintln!("propagate ({}): {} rows into {}", a.method, target.config.vocab_size, a.target);
    println!("{}", a.out.display());
    Ok(())
}
