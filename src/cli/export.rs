use super::ModelArgs;
use anyhow::{bail, Result};
use clap::Args;
use instill::export::{self, quant::Quant};
use instill::model::weights::save_hf_dir;

#[derive(Args)]
pub struct ExportArgs {
    /// A training run directory: its model with its adapter (use with --merge or --gguf-adapter).
    run: Option<std::path::PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Fold the adapter into the weights (W + scale * B A) and write a plain model.
    #[arg(long)]
    merge: bool,
    /// Output directory (HF layout), or file with --gguf / --gguf-adapter (written atomically).
    #[arg(long)]
    out: std::path::PathBuf,
    /// f32, bf16 or f16 (Hugging Face directories; GGUF files take --quant).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Split weights into shards of at most this many MB.
    #[arg(long, default_value_t = 2000)]
    shard_mb: usize,
    /// Write one GGUF file (llama.cpp, ollama) instead of a Hugging Face directory.
    #[arg(long)]
    gguf: bool,
    /// GGUF tensor types: f32, f16, bf16, q8_0, q4_0, q4_k_m or q6_k (default f16), chosen per tensor as llama.cpp's quantize does.
    #[arg(long)]
    quant: Option<String>,
    /// Write the LoRA adapter alone as a GGUF LoRA (llama.cpp's --lora).
    #[arg(long)]
    gguf_adapter: bool,
    /// With --gguf: also write an ollama Modelfile beside the GGUF.
    #[arg(long)]
    ollama: bool,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let mut margs = a.model.clone();
    if let Some(run) = &a.run {
        let recipe = instill::train::recipe::Recipe::load(&run.join("recipe.yaml"), &[])?;
        margs.model = recipe.model;
        margs.adapter = Some(run.join("adapter"));
    }
    if a.gguf && a.gguf_adapter {
        bail!("--gguf writes a model and --gguf-adapter an adapter: pass one of them");
    }
    if a.ollama && !a.gguf {
        bail!("--ollama writes a Modelfile for a GGUF model: pass --gguf too");
    }
    if a.quant.is_some() && !a.gguf {
        bail!("--quant sets GGUF tensor types: pass --gguf (Hugging Face directories take --dtype)");
    }
    if a.gguf_adapter {
        return gguf_adapter(margs, &a.out);
    }
    if margs.adapter.is_some() && !a.merge {
        bail!("an adapter is exported merged into the weights: pass --merge (the adapter directory itself is already in PEFT's layout; --gguf-adapter writes it as a GGUF LoRA)");
    }
    if a.merge && margs.adapter.is_none() {
        bail!("--merge needs an adapter: a run directory or --adapter DIR");
    }
    if a.gguf {
        if a.dtype != "f32" {
            bail!("--dtype is for Hugging Face directories: a GGUF export takes --quant");
        }
        let quant = Quant::parse(a.quant.as_deref().unwrap_or("f16"))?;
        return gguf_model(margs, quant, &a.out, a.ollama);
    }
    let dtype = match a.dtype.as_str() {
        "f32" => candle_core::DType::F32,
        "bf16" => candle_core::DType::BF16,
        "f16" => candle_core::DType::F16,
        d => bail!("--dtype {d:?}: expected f32, bf16 or f16"),
    };
    let (model, tok) = load_merged(margs)?;
    let extra = tok.hf_files();
    save_hf_dir(&a.out, model.arch, &model.config, model.named_tensors()?, dtype, a.shard_mb * 1_000_000, &extra)?;
    println!("{}", a.out.display());
    Ok(())
}

/// The model with its adapter (if any) folded into the weights.
fn load_merged(mut margs: ModelArgs) -> Result<(instill::CausalLm, instill::Tokenizer)> {
    let adapter = margs.adapter.take();
    let (mut model, tok) = margs.load()?;
    if let Some(dir) = adapter {
        match instill::peft::peft_type(&dir)?.as_str() {
            "MAM" => bail!("{}: a MAM adapter (prefix tuning + a bottleneck adapter) cannot be merged into the weights; use it with --adapter", dir.display()),
            "PREFIX_TUNING" => bail!("{}: a prefix-tuning adapter cannot be merged into the weights (its keys and values are not a weight); use it with --adapter", dir.display()),
            "PROMPT_TUNING" => bail!("{}: a prompt-tuning adapter cannot be merged into the weights; use it with --adapter", dir.display()),
            "LORAMOE" => bail!("{}: a LoRAMoE adapter cannot be merged into the weights (its router mixes the experts differently for every token); use it with --adapter", dir.display()),
            "BOTTLENECK" => bail!("{}: a bottleneck adapter cannot be merged into the weights (its non-linearity is not a matrix); use it with --adapter", dir.display()),
            "PAT" => {
                // Folded and pruned: the model comes out with fewer hidden channels.
                let (kept, hidden) = instill::peft::pat::Pat::load(&mut model, &dir)?.prune(&mut model)?;
                eprintln!("PAT: kept {kept} of {hidden} hidden channels ({:.1}% pruned)", 100.0 * (1.0 - kept as f64 / hidden as f64));
                return Ok((model, tok));
            }
            "SPARSE" => {
                // A sparse delta is added into the weights as it loads.
                instill::peft::sparse::Sparse::load(&mut model, &dir)?;
                return Ok((model, tok));
            }
            _ => {}
        }
        instill::peft::lora::Lora::load(&mut model, &dir)?.merge_into(&mut model)?;
    }
    Ok((model, tok))
}

fn gguf_model(margs: ModelArgs, quant: Quant, out: &std::path::Path, ollama: bool) -> Result<()> {
    let source = instill::hub::resolve(&margs.model, true)?;
    let (model, tok) = load_merged(margs)?;
    let w = export::write_model_gguf(&model, &source, &tok, quant, out)?;
    eprintln!("{}", w.summary());
    if ollama {
        let (path, format) = export::ollama::write_modelfile(out, &tok, model.arch.name())?;
        match format {
            Some(f) => eprintln!("{}: {f} chat template", path.display()),
            None => eprintln!("warning: {}: the model's chat template is not ChatML, Gemma or Llama 3, so the Modelfile has no TEMPLATE (ollama will use prompts as they are)", path.display()),
        }
    }
    println!("{}", out.display());
    Ok(())
}

fn gguf_adapter(mut margs: ModelArgs, out: &std::path::Path) -> Result<()> {
    let Some(dir) = margs.adapter.take() else {
        bail!("--gguf-adapter needs an adapter: a run directory or --adapter DIR");
    };
    let kind = instill::peft::peft_type(&dir)?;
    if kind != "LORA" {
        bail!("{}: a {kind} adapter has no GGUF LoRA form (only LoRA adapters export with --gguf-adapter)", dir.display());
    }
    let (mut model, _) = margs.load()?;
    let lora = instill::peft::lora::Lora::load(&mut model, &dir)?;
    let name = dir.file_name().map_or("adapter".into(), |n| n.to_string_lossy().to_string());
    let w = export::lora_gguf::write_lora_gguf(&model, &lora, &name, out)?;
    eprintln!("{}", w.summary());
    println!("{}", out.display());
    Ok(())
}
