use super::ModelArgs;
use anyhow::{bail, Result};
use clap::Args;
use instill::model::weights::save_hf_dir;

#[derive(Args)]
pub struct ExportArgs {
    /// A training run directory: its model with its adapter (use with --merge).
    run: Option<std::path::PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Fold the adapter into the weights (W + scale * B A) and write a plain model.
    #[arg(long)]
    merge: bool,
    /// Output directory (written atomically).
    #[arg(long)]
    out: std::path::PathBuf,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Split weights into shards of at most this many MB.
    #[arg(long, default_value_t = 2000)]
    shard_mb: usize,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let dtype = match a.dtype.as_str() {
        "f32" => candle_core::DType::F32,
        "bf16" => candle_core::DType::BF16,
        "f16" => candle_core::DType::F16,
        d => bail!("--dtype {d:?}: expected f32, bf16 or f16"),
    };
    let mut margs = a.model.clone();
    if let Some(run) = &a.run {
        let recipe = instill::train::recipe::Recipe::load(&run.join("recipe.yaml"), &[])?;
        margs.model = recipe.model;
        margs.adapter = Some(run.join("adapter"));
    }
    if margs.adapter.is_some() && !a.merge {
        bail!("an adapter is exported merged into the weights: pass --merge (the adapter directory itself is already in PEFT's layout)");
    }
    if a.merge && margs.adapter.is_none() {
        bail!("--merge needs an adapter: a run directory or --adapter DIR");
    }
    let adapter = margs.adapter.take();
    let (mut model, tok) = margs.load()?;
    if let Some(dir) = adapter {
        if instill::peft::peft_type(&dir)? == "PROMPT_TUNING" {
            bail!("{}: a prompt-tuning adapter cannot be merged into the weights; use it with --adapter", dir.display());
        }
        instill::peft::lora::Lora::load(&mut model, &dir)?.merge_into(&mut model)?;
    }
    let extra = tok.hf_files();
    save_hf_dir(&a.out, model.arch, &model.config, model.named_tensors()?, dtype, a.shard_mb * 1_000_000, &extra)?;
    println!("{}", a.out.display());
    Ok(())
}
