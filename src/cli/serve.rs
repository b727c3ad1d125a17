use super::ModelArgs;
use anyhow::{bail, Result};
use clap::Args;
use instill::serve::engine::EngineConfig;
use instill::serve::{Limits, ServeConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// Registry id, .gguf file or Hugging Face model directory.
    #[arg(short, long, default_value = instill::hub::DEFAULT_MODEL)]
    model: String,
    /// The .gguf file to take from a Hub repo with several (or write `-m org/name:Q4_K_M`).
    #[arg(long)]
    gguf_file: Option<String>,
    /// Dequantize GGUF weights to f32 (reference numerics; slower, more memory).
    #[arg(long)]
    dequantize: bool,
    /// Also serve a PEFT adapter (LoRA or prompt tuning) as NAME=DIR (or DIR: named after
    /// its run directory); repeatable. Requests pick it with `"model": "NAME"`.
    #[arg(long = "adapter", value_name = "NAME=DIR")]
    adapters: Vec<String>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The base model's name in requests (default: the -m argument).
    #[arg(long)]
    served_name: Option<String>,
    /// Sequences decoded together at most.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Requests waiting beyond the running batch before new ones get 429.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Prompt tokens prefilled per step; longer prompts are prefilled in chunks with
    /// decode steps of the running requests in between.
    #[arg(long, default_value_t = 256)]
    prefill_chunk: usize,
    /// Seconds a request may run before it is stopped (504).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Largest request body in MB (413 above).
    #[arg(long, default_value_t = 8)]
    max_body_mb: usize,
    /// Most tokens one choice may generate.
    #[arg(long, default_value_t = 4096)]
    max_tokens: usize,
    /// Chat template: chatml|llama3|gemma|alpaca|FILE (default: the model's own).
    #[arg(long)]
    template: Option<String>,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let mut adapters: Vec<(String, std::path::PathBuf)> = vec![];
    for spec in &a.adapters {
        let (name, dir) = match spec.split_once('=') {
            Some((n, d)) => (n.to_string(), std::path::PathBuf::from(d)),
            None => (adapter_name(std::path::Path::new(spec)), spec.into()),
        };
        if name.is_empty() || adapters.iter().any(|(n, _)| *n == name) {
            bail!("--adapter {spec:?}: the name is empty or given twice (use NAME=DIR)");
        }
        adapters.push((name, dir));
    }
    let (model, tok) = ModelArgs::named(&a.model, a.dequantize, a.gguf_file.clone()).load()?;
    let template = match (&a.template, &tok.chat_template) {
        (None, None) => {
            eprintln!("note: this model has no chat template: /v1/chat/completions answers 400 (pass --template), /v1/completions works");
            None
        }
        (name, _) => Some(tok.template(name.as_deref())?),
    };
    let cfg = ServeConfig {
        host: a.host.clone(),
        port: a.port,
        base_name: a.served_name.clone().unwrap_or_else(|| a.model.clone()),
        adapters,
        engine: EngineConfig { max_batch: a.max_batch.max(1), prefill_chunk: a.prefill_chunk.max(1) },
        queue: a.queue,
        limits: Limits { max_body: a.max_body_mb * 1_000_000, max_tokens: a.max_tokens, timeout: std::time::Duration::from_secs(a.timeout) },
    };
    let names: Vec<String> = std::iter::once(cfg.base_name.clone()).chain(cfg.adapters.iter().map(|(n, _)| n.clone())).collect();
    instill::serve::serve(cfg, model, tok, template, |addr| {
        println!("instill serve: http://{addr}/ (models: {})", names.join(", "));
    })?;
    Ok(())
}

fn adapter_name(dir: &std::path::Path) -> String {
    // runs/NAME/adapter -> NAME
    let last = dir.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    if last == "adapter" {
        if let Some(p) = dir.parent().and_then(|p| p.file_name()) {
            return p.to_string_lossy().to_string();
        }
    }
    last
}
