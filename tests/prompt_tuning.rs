//! Prompt tuning: a soft prompt initialised from a text's embeddings behaves exactly like
//! that text placed before the input (forward and cached generation), it receives the
//! gradient, and it saves and loads in PEFT's layout.
mod common;

use instill::decode::generate::{generate, GenerateOptions};
use instill::model::{Batch, LogitsFor};
use instill::peft::prompt::{PromptConfig, PromptTuning};
use instill::peft::Adapter;

const INIT: &str = "Answer in one word.";

#[test]
fn soft_prompt_from_text_equals_the_text_and_trains() {
    let (mut model, tok) = common::load("smollm2-135m-instruct", true);
    let text = tok.encode(INIT, false).unwrap();
    let input = tok.encode("What colour is the sky on a clear day?", false).unwrap();
    let mut joined = text.clone();
    joined.extend(&input);
    let plain = model.forward(&Batch::single(&joined, 0), None, LogitsFor::All).unwrap();
    let plain_tail = plain.narrow(1, text.len(), input.len()).unwrap();
    let plain_gen = generate(&model, &tok, std::slice::from_ref(&joined), &GenerateOptions { max_new_tokens: 8, ..Default::default() }, &mut |_, _| {}).unwrap();

    let cfg = PromptConfig { num_virtual_tokens: text.len(), init_text: Some(INIT.into()) };
    let pt = PromptTuning::attach(&mut model, &tok, &cfg, 0).unwrap();
    let soft = model.forward(&Batch::single(&input, 0), None, LogitsFor::All).unwrap();
    let d = common::max_abs_diff(&soft, &plain_tail);
    assert!(d < 1e-3, "soft prompt from the text's embeddings differs from the text by {d}");
    // Through the KV cache too: prefill with the soft prompt, then decode steps.
    let soft_gen = generate(&model, &tok, std::slice::from_ref(&input), &GenerateOptions { max_new_tokens: 8, ..Default::default() }, &mut |_, _| {}).unwrap();
    assert_eq!(soft_gen[0].tokens, plain_gen[0].tokens);

    // The soft prompt gets a gradient (and gradient checkpointing agrees).
    let seqs = [(input.clone(), vec![true; input.len()])];
    let rows = instill::data::pack::rows_from(vec![vec![0]], 0, |i| (&seqs[i].0, &seqs[i].1));
    let vars: Vec<_> = pt.trainable().into_iter().map(|(_, v)| v).collect();
    let g = instill::train::step::loss_and_grads(&model, std::slice::from_ref(&rows), &vars).unwrap();
    assert!(g.grads[0].abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "no gradient for the soft prompt");
    model.checkpointing = true;
    let ck = instill::train::step::loss_and_grads(&model, std::slice::from_ref(&rows), &vars).unwrap();
    assert!(common::max_abs_diff(&ck.grads[0], &g.grads[0]) < 1e-5);

    // PEFT layout round trip.
    let dir = common::tmpdir("prompt-adapter");
    pt.save(&model, &dir).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["peft_type"], "PROMPT_TUNING");
    let (mut fresh, _) = common::load("smollm2-135m-instruct", true);
    instill::peft::load_adapter(&mut fresh, &dir).unwrap();
    let again = fresh.forward(&Batch::single(&input, 0), None, LogitsFor::All).unwrap();
    assert!(common::max_abs_diff(&again, &soft) < 1e-6);
}
