use anyhow::{bail, Result};
use clap::Args;
use instill::hub;

#[derive(Args)]
pub struct FetchArgs {
    /// Registry ids (see `instill fetch --list`).
    ids: Vec<String>,
    /// List the registry.
    #[arg(long)]
    list: bool,
    /// Only print the path, no progress bar.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(a: FetchArgs) -> Result<()> {
    if a.list || a.ids.is_empty() {
        for s in hub::REGISTRY {
            let have = if hub::cached_path(s).is_file() { "cached" } else { "      " };
            println!("{:<30} {have}  {}", s.id, s.description);
        }
        return Ok(());
    }
    for id in &a.ids {
        let Some(spec) = hub::find(id) else {
            bail!("unknown model {id:?}: `instill fetch --list` shows the registry");
        };
        println!("{}", hub::fetch(spec, a.quiet)?.display());
    }
    Ok(())
}
