//! The official SuperNI scorer's tokenizer for non-English outputs: GPT-2's byte-level
//! BPE tokens (`AutoTokenizer.from_pretrained("gpt2").tokenize(s)`), each with its
//! leading `Ġ` (the byte-level space) stripped. Tokens are byte-level strings, not
//! decoded text, and no lower-casing or stemming happens; ROUGE-L then runs over them.
//!
//! GPT-2's tokenizer (MIT, see `assets/README.md`) is embedded so scoring needs no
//! download: it is 1.5 MB of JSON in a binary that already holds much more.
use std::sync::OnceLock;

static GPT2: &[u8] = include_bytes!("../../../assets/gpt2-tokenizer.json");

fn gpt2() -> &'static tokenizers::Tokenizer {
    static T: OnceLock<tokenizers::Tokenizer> = OnceLock::new();
    T.get_or_init(|| tokenizers::Tokenizer::from_bytes(GPT2).expect("the embedded GPT-2 tokenizer parses"))
}

/// `[t.lstrip("Ġ") for t in gpt2.tokenize(text)]`.
pub fn tokenize(text: &str) -> Vec<String> {
    let enc = gpt2().encode(text, false).expect("byte-level BPE encodes any text");
    enc.get_tokens().iter().map(|t| t.trim_start_matches('Ġ').to_string()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn gpt2_ids_and_stripped_tokens() {
        let enc = super::gpt2().encode("Hello world", false).unwrap();
        assert_eq!(enc.get_ids(), &[15496, 995]);
        assert_eq!(super::tokenize("Hello world"), vec!["Hello", "world"]);
    }
}
