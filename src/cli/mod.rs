//! The command line: argument parsing, progress and printing only; the work is in the library.
mod bench;
mod bench_data;
mod bench_dpo;
mod bench_eval;
mod bench_gemm;
mod bench_gen_sweep;
mod bench_merge;
mod bench_serve;
mod bench_steer;
mod bench_synth;
mod bench_train;
mod chat;
mod data;
mod eval;
mod export;
mod fetch;
mod generate;
mod graft;
mod inspect;
mod judge;
mod merge;
mod pairs;
mod reward;
mod serve;
mod steer;
mod synth;
mod train;
mod vocab;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use instill::hub::{self, DEFAULT_MODEL};
use instill::{CausalLm, LoadOptions, Tokenizer};

#[derive(Parser)]
#[command(name = "instill", version, about = "Instruction-tune, merge, evaluate and serve language models")]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Quantized weights: prefill (prompt processing, scoring) as int8 products with
    /// 8-bit activations, as llama.cpp does, on CPUs with AVX-512 VNNI (faster; numerics
    /// as llama.cpp's rather than f32). Same as INSTILL_QGEMM=1.
    #[arg(long, global = true)]
    int8_prefill: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download a registry model, verify its sha256, cache it and print its path.
    Fetch(fetch::FetchArgs),
    /// Show a model's architecture, sizes, weight types and chat template.
    Inspect(inspect::InspectArgs),
    /// Generate text for a prompt, a chat message or a file of prompts.
    Generate(generate::GenerateArgs),
    /// Interactive multi-turn chat with streaming output.
    Chat(chat::ChatArgs),
    /// Instruction data: check, convert, render.
    #[command(subcommand)]
    Data(data::DataCmd),
    /// Train from a recipe: SFT, DPO/IPO/SimPO/CPO/ORPO/KTO or a reward model; resumable.
    Train(train::TrainArgs),
    /// Supervised fine-tuning from a recipe (`instill train` with `objective: sft`).
    Sft(train::TrainArgs),
    /// Write a model as a Hugging Face directory, or a GGUF file (--gguf, --gguf-adapter) for llama.cpp and ollama.
    Export(export::ExportArgs),
    /// Merge models as a mergekit YAML describes (linear, task_arithmetic, ties, dare, della, breadcrumbs, model_stock, slerp, nuslerp, passthrough).
    Merge(merge::MergeArgs),
    /// Add sparse fine-tuning deltas (method: sparse) to a base model, composing several and reporting conflicts.
    Graft(graft::GraftArgs),
    /// Learned Embedding Propagation: extend a model's vocabulary from a corpus, or carry tuned embeddings into an instruction-tuned model.
    Vocab(vocab::VocabArgs),
    /// Write a task vector (tuned - base), usable as a model in a merge YAML.
    TaskVector(merge::TaskVectorArgs),
    /// Evaluate a model (with an adapter) on SuperNI, GSM8K or any JSONL; compare reports.
    #[command(subcommand)]
    Eval(eval::EvalCmd),
    /// Reward models: score preference pairs (accuracy, margins, histogram).
    #[command(subcommand)]
    Reward(reward::RewardCmd),
    /// Sample n responses per prompt, rank them with a reward model, write best/worst pairs.
    Pairs(pairs::PairsArgs),
    /// Serve the model and its adapters over an OpenAI-compatible HTTP API, with a playground at /.
    Serve(serve::ServeArgs),
    /// Score existing predictions with one metric.
    Score(eval::ScoreArgs),
    /// Synthesize instruction data with a model: magpie, self-instruct, evol, halves, refusal (R-Tuning).
    Synth(synth::SynthArgs),
    /// Measure speed against the peers (llama.cpp, PyTorch) in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

/// Which model to load, shared by every command that runs one.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Registry id, .gguf file, Hugging Face model directory, or Hub repo org/name[@revision][:QUANT].
    #[arg(short, long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// The .gguf file to take from a Hub repo with several (or write `-m org/name:Q4_K_M`).
    #[arg(long)]
    pub gguf_file: Option<String>,
    /// Dequantize GGUF weights to f32 (reference numerics; slower, more memory).
    #[arg(long)]
    pub dequantize: bool,
    /// An adapter directory (LoRA, LoRAMoE, prompt or prefix tuning, a bottleneck adapter, MAM or a sparse delta, e.g. runs/NAME/adapter).
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
}

impl ModelArgs {
    /// A model with no adapter.
    pub fn named(model: &str, dequantize: bool, gguf_file: Option<String>) -> Self {
        ModelArgs { model: model.to_string(), gguf_file, dequantize, adapter: None }
    }

    /// The tokenizer alone (no weights loaded).
    pub fn load_tokenizer(&self) -> Result<(hub::ModelSource, Tokenizer)> {
        let source = hub::resolve_with(&self.model, true, self.gguf_file.as_deref())?;
        let tok = Tokenizer::load(&source)?;
        Ok((source, tok))
    }

    pub fn load(&self) -> Result<(CausalLm, Tokenizer)> {
        let source = hub::resolve_with(&self.model, true, self.gguf_file.as_deref())?;
        let opts = LoadOptions { dequantize: self.dequantize, ..Default::default() };
        let mut model = CausalLm::load(&source, &opts)?;
        if let Some(dir) = &self.adapter {
            instill::peft::load_adapter(&mut model, dir)?;
        }
        let tok = Tokenizer::load(&source)?;
        Ok((model, tok))
    }
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    if cli.int8_prefill {
        // Read once by the kernel layer; workers the benchmarks spawn inherit it.
        std::env::set_var("INSTILL_QGEMM", "1");
    }
    if let Some(n) = cli.threads {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    match cli.cmd {
        Cmd::Fetch(a) => fetch::run(a),
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Generate(a) => generate::run(a),
        Cmd::Chat(a) => chat::run(a),
        Cmd::Export(a) => export::run(a),
        Cmd::Merge(a) => merge::run(a),
        Cmd::TaskVector(a) => merge::task_vector(a),
        Cmd::Graft(a) => graft::run(a),
        Cmd::Vocab(a) => vocab::run(a),
        Cmd::Train(a) => train::run(a, false),
        Cmd::Sft(a) => train::run(a, true),
        Cmd::Data(d) => data::run(d),
        Cmd::Bench(b) => bench::run(b),
        Cmd::Eval(e) => eval::run(e),
        Cmd::Score(a) => eval::score(a),
        Cmd::Synth(a) => synth::run(a),
        Cmd::Reward(c) => reward::run(c),
        Cmd::Pairs(a) => pairs::run(a),
        Cmd::Serve(a) => serve::run(a),
    }
}
