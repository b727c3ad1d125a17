//! Helpers for the server tests: start `instill serve` on a free port, talk HTTP to it,
//! and build test adapters.
#![allow(dead_code)]
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    /// `instill serve --port 0 ARGS`, waiting until it listens.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_instill")).args(["serve", "--port", "0"]).args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start instill serve");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("read the listening line");
        let addr = line.split("http://").nth(1).and_then(|s| s.split('/').next()).unwrap_or_else(|| panic!("server did not start: {line:?}")).to_string();
        Server { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POST a JSON body; (status, parsed body).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_bytes(path, body.to_string().as_bytes())
    }

    pub fn post_bytes(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let (status, text) = self.post_text(path, body);
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {text}")))
    }

    pub fn post_text(&self, path: &str, body: &[u8]) -> (u16, String) {
        let r = ureq::post(&self.url(path)).timeout(Duration::from_secs(300)).set("Content-Type", "application/json").send_bytes(body);
        match r {
            Ok(resp) => (resp.status(), resp.into_string().expect("body")),
            Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().expect("body")),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&self.url(path)).timeout(Duration::from_secs(60)).call() {
            Ok(resp) => (resp.status(), resp.into_string().expect("body")),
            Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().expect("body")),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// A streaming request: the `data:` payloads, checked to end with `[DONE]`.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<Value> {
        let (status, text) = self.post_text(path, body.to_string().as_bytes());
        assert_eq!(status, 200, "{text}");
        sse_payloads(&text)
    }

    /// Send raw bytes as one HTTP/1.1 request; the raw response (up to `limit` bytes).
    pub fn raw(&self, request: &[u8], limit: usize) -> String {
        let mut s = std::net::TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(request).unwrap();
        let mut buf = vec![0u8; limit];
        let mut n = 0;
        while n < limit {
            match s.read(&mut buf[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        String::from_utf8_lossy(&buf[..n]).to_string()
    }

    pub fn sigterm(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data:` payloads of an SSE body; panics unless the last is `[DONE]`.
pub fn sse_payloads(text: &str) -> Vec<Value> {
    let data: Vec<&str> = text.split("\n\n").filter_map(|f| f.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "stream does not end with [DONE]: {text}");
    data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad chunk {d}: {e}"))).collect()
}

/// The text of a chat stream's choice 0.
pub fn streamed_text(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

pub fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

/// Copies of the fixture LoRA with `lora_alpha` set to each of `alphas` (distinct
/// adapters for the same base), as `dir/lora-<alpha>`.
pub fn lora_variants(dir: &Path, alphas: &[u32]) -> Vec<PathBuf> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lora");
    alphas
        .iter()
        .map(|a| {
            let d = dir.join(format!("lora-{a}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(src.join("adapter_model.safetensors"), d.join("adapter_model.safetensors")).unwrap();
            let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap()).unwrap();
            cfg["lora_alpha"] = (*a).into();
            std::fs::write(d.join("adapter_config.json"), cfg.to_string()).unwrap();
            d
        })
        .collect()
}

/// A prompt-tuning adapter for `model` whose soft prompt is the embedding of `text`.
pub fn prompt_adapter(model: &str, dir: &Path, text: &str) -> PathBuf {
    let s = instill::hub::resolve(model, true).unwrap();
    let mut m = instill::CausalLm::load(&s, &Default::default()).unwrap();
    let tok = instill::Tokenizer::load(&s).unwrap();
    let cfg = instill::peft::prompt::PromptConfig { num_virtual_tokens: tok.encode(text, false).unwrap().len(), init_text: Some(text.to_string()) };
    let p = instill::peft::prompt::PromptTuning::attach(&mut m, &tok, &cfg, 0).unwrap();
    let d = dir.join("prompt");
    instill::peft::Adapter::save(&p, &m, &d).unwrap();
    d
}
