//! Best-of-n and pair building: sample `n` responses per prompt from a policy, score each
//! (prompt + response) with a reward model, and rank them. `instill generate --best-of`
//! returns the best; `instill pairs` writes best vs worst as a preference pair, the data
//! of a round of iterative self-alignment (sample -> score -> pair -> DPO).
use super::{generate, GenerateOptions, Generation};
use crate::data::{Conversation, Message};
use crate::model::reward::RewardModel;
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// One sample and its reward.
#[derive(Debug, Clone)]
pub struct Sample {
    pub generation: Generation,
    pub reward: f32,
}

/// `n` samples of each prompt (rendered with `template`), scored and sorted best first.
/// Prompts are batched about `batch` samples at a time (all `n` of a prompt together);
/// each sample draws from its own seeded stream, so a run is reproducible for the same
/// seed and batch size.
#[allow(clippy::too_many_arguments)]
pub fn sample_and_score(
    model: &CausalLm,
    tok: &Tokenizer,
    template: Option<&str>,
    rm: &RewardModel,
    prompts: &[Vec<Message>],
    n: usize,
    opts: &GenerateOptions,
    batch: usize,
) -> Result<Vec<Vec<Sample>>> {
    if n < 2 {
        return Err(Error::Input("best-of-n needs n of at least 2".into()));
    }
    if opts.sampling.temperature <= 0.0 {
        return Err(Error::Input("best-of-n samples: give a temperature above 0 (greedy decoding returns the same response n times)".into()));
    }
    let mut out = Vec::with_capacity(prompts.len());
    let per = (batch / n).max(1);
    for chunk in prompts.chunks(per) {
        let mut ids = vec![];
        for p in chunk {
            let msgs: Vec<serde_json::Value> = p.iter().map(Message::to_template_value).collect();
            let one = tok.encode_chat(template, &msgs)?;
            ids.extend(std::iter::repeat_n(one, n));
        }
        let gens = generate(model, tok, &ids, opts, &mut |_, _| {})?;
        let convs: Vec<Conversation> = gens
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let mut m = chunk[i / n].clone();
                m.push(Message::new("assistant", g.text.trim()));
                Conversation { messages: m, tools: None }
            })
            .collect();
        let scores = rm.score(&convs, batch)?;
        let mut it = gens.into_iter().zip(scores);
        for _ in chunk {
            let mut s: Vec<Sample> = it.by_ref().take(n).map(|(g, r)| Sample { generation: g, reward: r[0] }).collect();
            s.sort_by(|a, b| b.reward.total_cmp(&a.reward));
            out.push(s);
        }
    }
    Ok(out)
}
