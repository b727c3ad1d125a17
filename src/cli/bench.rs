use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Prompt-processing and decode tokens/s against llama.cpp on the same GGUF.
    Generate,
}

pub fn run(_b: BenchCmd) -> Result<()> {
    anyhow::bail!("bench generate: not wired yet")
}
