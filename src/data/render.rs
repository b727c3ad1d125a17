//! Conversation -> token ids + loss mask, through the model's chat template.
//!
//! Spans come from rendering growing prefixes of the conversation: turn `i` is the text
//! between the rendering of turns `..i` (with the generation prompt, for an assistant
//! turn) and of turns `..=i`. A token carries loss when it starts inside a trained span,
//! so masks follow token boundaries even where the template's text runs across turns.
use super::Conversation;
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which tokens are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossOn {
    /// Every assistant turn (per-turn `loss_weight` in the data overrides).
    #[default]
    Assistant,
    /// The last assistant turn only.
    LastTurn,
    /// Every turn, user and system included.
    AllTurns,
    /// The responses alone, without the instruction or template ("Instruction Following
    /// without Instruction Tuning").
    ResponseOnly,
    /// Every token, template included (loss on the prompt).
    Everything,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rendered {
    pub text: String,
    pub ids: Vec<u32>,
    /// `mask[i]`: token `i` is a training target (predicted from tokens before it).
    pub mask: Vec<bool>,
    /// Trained byte ranges of `text`.
    pub spans: Vec<(usize, usize)>,
}

impl Rendered {
    pub fn trained_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }
}

pub fn render(tok: &Tokenizer, tmpl: &ChatTemplate, c: &Conversation, loss: LossOn) -> Result<Rendered> {
    if loss == LossOn::ResponseOnly {
        return response_only(tok, c);
    }
    let msgs: Vec<serde_json::Value> = c.messages.iter().map(|m| m.to_template_value()).collect();
    let tools = c.tools.as_ref();
    let text = tmpl.render(&msgs, false, tools)?;
    if loss == LossOn::Everything {
        let (ids, _) = tok.encode_rendered_with_offsets(&text)?;
        let n = ids.len();
        return Ok(Rendered { spans: vec![(0, text.len())], text, ids, mask: vec![true; n] });
    }
    let last_assistant = c.messages.iter().rposition(|m| m.role == "assistant");
    let mut spans = vec![];
    for (i, m) in c.messages.iter().enumerate() {
        let is_asst = m.role == "assistant";
        let wanted = match loss {
            LossOn::Assistant => is_asst && m.train.unwrap_or(true),
            LossOn::LastTurn => Some(i) == last_assistant,
            LossOn::AllTurns => true,
            LossOn::ResponseOnly | LossOn::Everything => unreachable!("handled above"),
        };
        if !wanted {
            continue;
        }
        // Templates index messages[0]; an empty conversation renders as nothing.
        let before = if i == 0 { String::new() } else { tmpl.render(&msgs[..i], is_asst, tools)? };
        let through = tmpl.render(&msgs[..=i], false, tools)?;
        if !through.starts_with(&before) || !text.starts_with(&through) {
            return Err(Error::Template(format!("the chat template does not render turn {i} as an extension of the turns before it, so its loss span cannot be found; use --loss everything")));
        }
        // The turn's text, without whitespace the template puts after its end marker.
        let end = before.len().max(through.trim_end().len());
        spans.push((before.len(), end));
    }
    let (ids, offsets) = tok.encode_rendered_with_offsets(&text)?;
    // A prepended BOS (range 0..0) is never a target.
    let mask = offsets.iter().map(|&(s, e)| e > s && spans.iter().any(|&(a, b)| s >= a && s < b)).collect();
    Ok(Rendered { text, ids, mask, spans })
}

fn response_only(tok: &Tokenizer, c: &Conversation) -> Result<Rendered> {
    let eos = tok.token_string(tok.eos_id);
    let text: String = c.messages.iter().filter(|m| m.role == "assistant").map(|m| format!("{}{eos}", m.content)).collect();
    let mut ids = vec![];
    if tok.add_bos {
        ids.extend(tok.bos_id);
    }
    ids.extend(tok.encode(&text, false)?);
    let mask = ids.iter().enumerate().map(|(i, _)| !(i == 0 && tok.add_bos)).collect();
    Ok(Rendered { spans: vec![(0, text.len())], text, ids, mask })
}

/// What to do with an example longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Truncation {
    /// Leave the example out.
    #[default]
    Drop,
    /// Keep the start; cut the end (responses lose their tails).
    TruncateResponse,
    /// Keep the end; cut the start (the prompt loses its head).
    TruncatePrompt,
}

/// Fit `r` into `max_len` tokens under `policy`; None when dropped (or nothing trainable is left).
pub fn fit(mut r: Rendered, max_len: usize, policy: Truncation) -> Option<Rendered> {
    if !fit_parts(&mut r.ids, &mut r.mask, max_len, policy) {
        return None;
    }
    r.mask.iter().any(|&m| m).then_some(r)
}

/// Cut `ids` and `mask` to `max_len` under `policy`; false when the policy drops them.
pub fn fit_parts(ids: &mut Vec<u32>, mask: &mut Vec<bool>, max_len: usize, policy: Truncation) -> bool {
    if ids.len() <= max_len {
        return true;
    }
    match policy {
        Truncation::Drop => return false,
        Truncation::TruncateResponse => {
            ids.truncate(max_len);
            mask.truncate(max_len);
        }
        Truncation::TruncatePrompt => {
            let cut = ids.len() - max_len;
            ids.drain(..cut);
            mask.drain(..cut);
        }
    }
    true
}
