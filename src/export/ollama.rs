//! An ollama `Modelfile` beside an exported GGUF: `FROM`, the chat format as an Ollama
//! Go template, and a `PARAMETER stop` per stop token.
//!
//! Ollama does not run Jinja: the template is chosen by the chat format the model's own
//! template uses (ChatML, Gemma turns, Llama 3 headers). For any other template the
//! Modelfile has no TEMPLATE line, so ollama sends the prompt as it is (`{{ .Prompt }}`,
//! plain completion); `modelfile` says so in its result so the CLI can warn.
use crate::{Result, Tokenizer};
use std::path::Path;

const CHATML: &str = r#"{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"#;

const GEMMA: &str = r#"{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- else }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- end }}
{{- end }}"#;

const LLAMA3: &str = r#"{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"#;

/// The chat format of a Jinja template (or of the family, when the file has none).
pub fn chat_format(template: Option<&str>, arch: &str) -> Option<(&'static str, &'static str)> {
    match template {
        Some(t) if t.contains("<|im_start|>") => Some(("chatml", CHATML)),
        Some(t) if t.contains("<start_of_turn>") => Some(("gemma", GEMMA)),
        Some(t) if t.contains("<|start_header_id|>") => Some(("llama3", LLAMA3)),
        None if arch == "gemma3" => Some(("gemma", GEMMA)),
        _ => None,
    }
}

/// The Modelfile text for `gguf` (a file name next to it) and which chat format it uses.
pub fn modelfile(gguf_name: &str, tok: &Tokenizer, arch: &str) -> (String, Option<&'static str>) {
    let mut out = format!("FROM ./{gguf_name}\n");
    let format = chat_format(tok.chat_template.as_deref(), arch);
    match format {
        Some((_, t)) => out.push_str(&format!("TEMPLATE \"\"\"{t}\"\"\"\n")),
        None => out.push_str("# The model's chat template is not one instill translates (ChatML, Gemma, Llama 3): ollama uses the prompt as it is.\n"),
    }
    let mut stops: Vec<String> = tok.stop_ids.iter().filter_map(|&id| tok.id_to_token(id)).collect();
    if format.is_some_and(|(f, _)| f == "gemma") && !stops.iter().any(|s| s == "<end_of_turn>") {
        stops.push("<end_of_turn>".into());
    }
    stops.dedup();
    for s in stops {
        out.push_str(&format!("PARAMETER stop {}\n", serde_json::to_string(&s).expect("string")));
    }
    (out, format.map(|(f, _)| f))
}

/// Write `Modelfile` next to `gguf` (atomically); returns its path and the chat format.
pub fn write_modelfile(gguf: &Path, tok: &Tokenizer, arch: &str) -> Result<(std::path::PathBuf, Option<&'static str>)> {
    let name = gguf.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let (text, format) = modelfile(&name, tok, arch);
    let path = gguf.with_file_name("Modelfile");
    crate::peft::write_atomic(&path, text.as_bytes())?;
    Ok((path, format))
}
