//! Learned Embedding Propagation: vocabulary extension learns merges that continue the
//! tokenizer's own (texts round-trip, old text tokenizes as before, our encoder agrees with
//! `tokenizers`), new rows are the mean of their sub-tokens' rows and the old logits are
//! unchanged; the propagation formulas (an exact linear map is recovered); and the CLI
//! pipeline on SmolLM2: extend, embedding-only tuning on raw text, propagate.
mod common;

use candle_core::{Device, Tensor};
use instill::model::{Batch, LogitsFor};
use instill::peft::lep::{self, Propagation};
use rand::{Rng, SeedableRng};

/// Made-up words the model's tokenizer splits into many pieces, in varied sentences.
fn corpus() -> Vec<String> {
    let words = ["zorblaxite", "quintessora", "vromplethar", "skelibanto"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    (0..120).map(|i| format!("The {} and the {} met {} times.", words[i % 4], words[rng.gen_range(0..4)], rng.gen_range(2..9))).collect()
}

#[test]
fn extension_continues_the_tokenizer_and_starts_new_rows_at_the_sub_token_mean() {
    let (mut model, tok) = common::load("smollm2-135m-instruct", false);
    let texts = corpus();
    let plain = "The cat sat on the mat, and nobody minded at all.";
    let before = model.forward(&Batch::single(&tok.encode(plain, false).unwrap(), 0), None, LogitsFor::All).unwrap();
    let old_rows = model.embedding_weight().unwrap();
    let (new_tok, r) = lep::extend(&mut model, &tok, &texts, 12, 2).unwrap();
    assert_eq!((r.added, r.first_id as usize, r.vocab_after), (12, old_rows.dim(0).unwrap(), old_rows.dim(0).unwrap() + 12));
    assert!(r.tokens_after < r.tokens_before, "{r:?}");
    assert!(new_tok.has_fast_encoder(), "{}", new_tok.encoder_name());
    for t in &texts {
        let ids = new_tok.encode(t, false).unwrap();
        assert_eq!(new_tok.decode(&ids, false).unwrap(), *t);
        assert_eq!(new_tok.encode_reference(t).unwrap().0, ids, "our encoder vs tokenizers on {t:?}");
    }
    assert!(new_tok.encode(&texts[0], false).unwrap().iter().any(|&i| i >= r.first_id), "a new token is used");
    assert_eq!(new_tok.encode(plain, false).unwrap(), tok.encode(plain, false).unwrap(), "text without the new words tokenizes as before");
    let rows = model.embedding_weight().unwrap();
    assert_eq!(common::max_abs_diff(&rows.narrow(0, 0, r.first_id as usize).unwrap(), &old_rows), 0.0);
    let ext = instill::tokenizer::extend::learn(&tok, &texts, 12, 2, r.first_id).unwrap();
    for t in &ext.added {
        let parts = Tensor::from_vec(t.parts.clone(), t.parts.len(), &Device::Cpu).unwrap();
        let mean = old_rows.index_select(&parts, 0).unwrap().mean(0).unwrap();
        let row = rows.narrow(0, t.id as usize, 1).unwrap().squeeze(0).unwrap();
        assert!(common::max_abs_diff(&row, &mean) < 1e-6, "{}", t.token);
        assert_eq!(new_tok.decode(&[t.id], false).unwrap(), tok.decode(&t.parts, false).unwrap());
    }
    // The old vocabulary's logits are the model's own; the head grew by the new rows.
    let after = model.forward(&Batch::single(&tok.encode(plain, false).unwrap(), 0), None, LogitsFor::All).unwrap();
    assert_eq!(after.dim(2).unwrap(), r.vocab_after);
    assert!(common::max_abs_diff(&after.narrow(2, 0, r.first_id as usize).unwrap(), &before) < 1e-4);
    let e = lep::extend(&mut model, &new_tok, &texts[..1], 5, 1000).err().unwrap().to_string();
    assert!(e.contains("nothing to add"), "{e}");
}

#[test]
fn propagation_formulas_and_an_exact_map_recovered() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut t = |r: usize, c: usize| Tensor::from_vec((0..r * c).map(|_| rng.gen_range(-1.0f32..1.0)).collect::<Vec<_>>(), (r, c), &Device::Cpu).unwrap();
    let (v0, v1, h) = (300, 340, 24);
    let (base, adapted, w0) = (t(v0, h), t(v1, h), t(h, h));
    let target = base.matmul(&w0).unwrap();
    let w = lep::fit_map(&base, &target).unwrap();
    assert!(common::max_abs_diff(&w, &w0) < 1e-3, "{}", common::max_abs_diff(&w, &w0));
    let p = lep::propagate(&base, &adapted, &target, Propagation::Project).unwrap();
    assert!(common::max_abs_diff(&p, &adapted.matmul(&w0).unwrap()) < 1e-3);
    let o = lep::propagate(&base, &adapted, &target, Propagation::Overlap).unwrap();
    let want_old = (adapted.narrow(0, 0, v0).unwrap() + (&target - &base).unwrap()).unwrap();
    assert!(common::max_abs_diff(&o.narrow(0, 0, v0).unwrap(), &want_old) < 1e-6);
    assert_eq!(common::max_abs_diff(&o.narrow(0, v0, v1 - v0).unwrap(), &adapted.narrow(0, v0, v1 - v0).unwrap()), 0.0);
    assert_eq!(common::max_abs_diff(&lep::propagate(&base, &adapted, &target, Propagation::Swap).unwrap(), &adapted), 0.0);
    let e = lep::propagate(&adapted, &base, &target, Propagation::Swap).err().unwrap().to_string();
    assert!(e.contains("do not line up"), "{e}");
}

#[test]
fn extend_tune_the_embeddings_on_raw_text_and_propagate_on_smollm2() {
    common::source("smollm2-135m-instruct");
    let dir = common::tmpdir("lep-cli");
    let corpus_file = dir.join("corpus.jsonl");
    std::fs::write(&corpus_file, corpus().iter().map(|t| serde_json::json!({ "text": t }).to_string() + "\n").collect::<String>()).unwrap();
    let o = common::cli(&dir, &["vocab", "extend", "-m", "smollm2-135m-instruct", "--corpus", corpus_file.to_str().unwrap(), "--new-tokens", "10", "--out", "ext"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("10 tokens added"), "{}", String::from_utf8_lossy(&o.stderr));
    let data = format!("data=[{{path: {}}}]", corpus_file.display());
    common::train_recipe(&dir, "lep-embeddings.yaml", &["model=ext", data.as_str(), "output_dir=emb", "max_steps=2", "batch_size=2", "max_len=64", "val_fraction=0"]);
    // Only the embeddings moved.
    let ext = candle_core::safetensors::load(dir.join("ext/model.safetensors"), &Device::Cpu).unwrap();
    let tuned = candle_core::safetensors::load(dir.join("emb/model/model.safetensors"), &Device::Cpu).unwrap();
    for (name, x) in &ext {
        let d = common::max_abs_diff(x, &tuned[name]);
        assert_eq!(d > 0.0, name.contains("embed_tokens"), "{name}: changed by {d}");
    }
    // Propagated into the model it came from, `project` fits the identity: the tuned rows.
    let o = common::cli(&dir, &["vocab", "propagate", "--base", "smollm2-135m-instruct", "--adapted", "emb/model", "--target", "smollm2-135m-instruct", "--out", "prop"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let prop = candle_core::safetensors::load(dir.join("prop/model.safetensors"), &Device::Cpu).unwrap();
    let k = "model.embed_tokens.weight";
    assert_eq!(prop[k].dims(), tuned[k].dims());
    assert!(common::max_abs_diff(&prop[k], &tuned[k]) < 2e-3, "{}", common::max_abs_diff(&prop[k], &tuned[k]));
    let o = common::cli(&dir, &["generate", "-m", "prop", "--max-new-tokens", "4", "--chat", "Name a colour."]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}
