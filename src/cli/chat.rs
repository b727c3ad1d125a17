use super::generate::{chat_ids, SamplingArgs};
use super::ModelArgs;
use anyhow::Result;
use clap::Args;
use instill::decode::generate;
use std::io::{BufRead, Write};

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    steer: super::steer::SteerArgs,
}

/// Read a line, answer with streaming tokens, keep the whole conversation. `/reset` clears it.
pub fn run(a: ChatArgs) -> Result<()> {
    let (model, tok) = a.model.load()?;
    let mut opts = a.sampling.options();
    opts.steer = a.steer.build(&model, &tok, a.model.dequantize)?;
    tok.template(a.sampling.template.as_deref())?; // fail before the first prompt
    let mut history = vec![];
    if let Some(s) = &a.system {
        history.push(serde_json::json!({"role": "system", "content": s}));
    }
    eprintln!("chatting with {} (/reset to start over, Ctrl-D to quit)", a.model.model);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line == "/reset" {
            history.retain(|m| m["role"] == "system");
            continue;
        }
        if line.is_empty() {
            continue;
        }
        history.push(serde_json::json!({"role": "user", "content": line}));
        let ids = chat_ids(&tok, a.sampling.template.as_deref(), &history)?;
        let g = generate(&model, &tok, &[ids], &opts, &mut |_, piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        })?;
        println!();
        history.push(serde_json::json!({"role": "assistant", "content": g[0].text}));
    }
    Ok(())
}
