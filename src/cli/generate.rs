use super::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use instill::decode::{generate, GenerateOptions, SamplingParams};
use instill::Tokenizer;
use std::io::Write;

#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Forbid end-of-sequence until this many tokens are generated.
    #[arg(long, default_value_t = 0)]
    pub min_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Chat template: chatml|llama3|gemma|alpaca|FILE (default: the model's own).
    #[arg(long)]
    pub template: Option<String>,
}

impl SamplingArgs {
    pub fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            sampling: SamplingParams { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, min_p: self.min_p, repetition_penalty: self.repetition_penalty, seed: self.seed },
            stop_strings: self.stop.clone(),
            ignore_eos: false,
            min_new_tokens: self.min_new_tokens,
            steer: None,
            streams: vec![],
        }
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Plain-text prompt, continued as is.
    #[arg(long, conflicts_with_all = ["chat", "prompts"])]
    prompt: Option<String>,
    /// A user message, rendered with the chat template.
    #[arg(long, conflicts_with = "prompts")]
    chat: Option<String>,
    /// System message for --chat / --prompts.
    #[arg(long)]
    system: Option<String>,
    /// JSONL file of prompts: {"prompt": ...} or {"messages": [...]} per line; outputs JSONL.
    #[arg(long)]
    prompts: Option<std::path::PathBuf>,
    /// Prompts run together per batch with --prompts.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Sample N responses and return the one the reward model scores highest (needs
    /// --reward-model and a --temperature above 0).
    #[arg(long, requires = "reward_model")]
    best_of: Option<usize>,
    /// A reward model directory (`instill train` with `objective: reward`).
    #[arg(long)]
    reward_model: Option<std::path::PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    steer: super::steer::SteerArgs,
}

pub fn chat_ids(tok: &Tokenizer, template: Option<&str>, messages: &[serde_json::Value]) -> Result<Vec<u32>> {
    Ok(tok.encode_chat(template, messages)?)
}

fn messages(system: &Option<String>, user: &str) -> Vec<serde_json::Value> {
    let mut m = vec![];
    if let Some(s) = system {
        m.push(serde_json::json!({"role": "system", "content": s}));
    }
    m.push(serde_json::json!({"role": "user", "content": user}));
    m
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let (model, tok) = a.model.load()?;
    let mut opts = a.sampling.options();
    opts.steer = a.steer.build(&model, &tok, a.model.dequantize)?;
    if let Some(s) = &opts.steer {
        eprintln!("[decoding: {}]", s.describe());
    }
    let template = a.sampling.template.as_deref();
    if let Some(n) = a.best_of {
        return best_of(&model, &tok, &a, n, &opts);
    }
    if let Some(path) = &a.prompts {
        return run_file(&model, &tok, path, &a, &opts);
    }
    let ids = match (&a.prompt, &a.chat) {
        (Some(p), None) => tok.encode(p, true)?,
        (None, Some(c)) => chat_ids(&tok, template, &messages(&a.system, c))?,
        _ => bail!("give --prompt TEXT, --chat MESSAGE or --prompts FILE"),
    };
    let mut out = std::io::stdout();
    let gens = generate(&model, &tok, &[ids], &opts, &mut |_, piece| {
        let _ = out.write_all(piece.as_bytes());
        let _ = out.flush();
    })?;
    println!();
    eprintln!("[{} prompt tokens, {} generated, finish: {:?}]", gens[0].prompt_tokens, gens[0].tokens.len(), gens[0].finish);
    Ok(())
}

/// Prompts of `--chat` or `--prompts` as message lists.
fn prompt_messages(a: &GenerateArgs) -> Result<Vec<Vec<instill::data::Message>>> {
    let to_msgs = |v: &[serde_json::Value]| -> Vec<instill::data::Message> { v.iter().filter_map(|m| serde_json::from_value(m.clone()).ok()).collect() };
    match (&a.chat, &a.prompts) {
        (Some(c), None) => Ok(vec![to_msgs(&messages(&a.system, c))]),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
            let mut out = vec![];
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}:{}: invalid JSON", path.display(), n + 1))?;
                match (v.get("prompt").and_then(|p| p.as_str()), v.get("messages").and_then(|m| m.as_array())) {
                    (Some(p), _) => out.push(to_msgs(&messages(&a.system, p))),
                    (None, Some(m)) => out.push(to_msgs(m)),
                    _ => bail!("{}:{}: expected a \"prompt\" string or a \"messages\" list", path.display(), n + 1),
                }
            }
            Ok(out)
        }
        _ => bail!("--best-of takes --chat MESSAGE or --prompts FILE (responses are scored as chat turns)"),
    }
}

fn best_of(model: &instill::CausalLm, tok: &Tokenizer, a: &GenerateArgs, n: usize, opts: &GenerateOptions) -> Result<()> {
    let rm = instill::model::reward::RewardModel::load(a.reward_model.as_ref().expect("clap requires it"))?;
    let prompts = prompt_messages(a)?;
    let ranked = instill::decode::best_of::sample_and_score(model, tok, a.sampling.template.as_deref(), &rm, &prompts, n, opts, a.batch_size.max(n))?;
    let mut stdout = std::io::stdout().lock();
    for s in &ranked {
        let rewards: Vec<f32> = s.iter().map(|x| x.reward).collect();
        if a.chat.is_some() {
            writeln!(stdout, "{}", s[0].generation.text)?;
            eprintln!("[best of {n}: reward {:.3}; all rewards {:?}]", s[0].reward, rewards);
        } else {
            writeln!(stdout, "{}", serde_json::json!({"text": s[0].generation.text, "reward": s[0].reward, "rewards": rewards, "finish": s[0].generation.finish}))?;
        }
    }
    Ok(())
}

fn run_file(model: &instill::CausalLm, tok: &Tokenizer, path: &std::path::Path, a: &GenerateArgs, opts: &GenerateOptions) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut ids = vec![];
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{}:{}", path.display(), n + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
        let one = if let Some(p) = v.get("prompt").and_then(|p| p.as_str()) {
            tok.encode(p, true)?
        } else if let Some(m) = v.get("messages").and_then(|m| m.as_array()) {
            chat_ids(tok, a.sampling.template.as_deref(), m)?
        } else {
            bail!("{}: expected a \"prompt\" string or a \"messages\" list", at());
        };
        ids.push(one);
    }
    let mut stdout = std::io::stdout().lock();
    for chunk in ids.chunks(a.batch_size.max(1)) {
        for g in generate(model, tok, chunk, opts, &mut |_, _| {})? {
            writeln!(stdout, "{}", serde_json::to_string(&g)?)?;
        }
    }
    Ok(())
}
