use super::ModelArgs;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct InspectArgs {
    /// The model (same as -m).
    #[arg(value_name = "MODEL")]
    positional: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// Print the config as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(mut a: InspectArgs) -> Result<()> {
    if let Some(m) = a.positional.take() {
        a.model.model = m;
    }
    let (model, tok) = a.model.load()?;
    let c = &model.config;
    if a.json {
        println!("{}", serde_json::to_string_pretty(c)?);
        return Ok(());
    }
    println!("model         {}", a.model.model);
    println!("architecture  {}", c.arch);
    println!("layers        {}", c.num_layers);
    println!("hidden        {}  (intermediate {})", c.hidden_size, c.intermediate_size);
    println!("heads         {} query / {} key-value, head dim {}", c.num_heads, c.num_kv_heads, c.head_dim);
    println!("vocab         {}", c.vocab_size);
    println!("context       {}", c.max_position);
    println!("rope          theta {}{} ({:?})", c.rope_theta, c.rope_local_theta.map(|t| format!(", local {t}")).unwrap_or_default(), c.rope_style);
    if let Some(w) = c.sliding_window {
        println!("sliding       window {w}, global every {} layers", c.global_every);
    }
    println!("parameters    ~{:.1} M", c.num_params_estimate() as f64 / 1e6);
    println!("projections   {}", model.weight_summary());
    println!("tied embed    {}", c.tie_embeddings);
    println!("bos / eos     {:?} / {:?} (add bos: {})", tok.token_string(tok.bos_id), tok.token_string(tok.eos_id), tok.add_bos);
    match &tok.chat_template {
        Some(t) => println!("chat template\n{t}"),
        None => println!("chat template none (base model: use --template or --prompt)"),
    }
    Ok(())
}
