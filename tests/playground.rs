//! The playground page in headless Chromium (Debian's `chromium`, driven by
//! playwright-core; `.ci/run` installs both): side-by-side base vs adapter, a message
//! sent, both streamed answers appear, a screenshot is saved
//! (target/playground.png; the README's copy is assets/playground.png).
mod serve_util;
use serve_util::*;

#[test]
fn playground_streams_two_models_side_by_side() {
    let dir = std::env::temp_dir().join(format!("instill-test-playground-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let lora = lora_variants(&dir, &[64]);
    let s = Server::start(&["--adapter", &format!("tuned={}", lora[0].display())]);
    let (st, page) = s.get("/");
    assert_eq!(st, 200);
    assert!(page.contains("<title>instill playground</title>") && !page.contains("http://") && !page.contains("https://"), "the page must be self-contained");
    let shot = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/playground.png");
    let pw = std::env::var("PLAYWRIGHT_CORE").unwrap_or_else(|_| "/tmp/instill-browser/node_modules/playwright-core".into());
    assert!(std::path::Path::new(&pw).exists(), "{pw} is missing: run .ci/run (it installs chromium and playwright-core) or set PLAYWRIGHT_CORE");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/playground.mjs");
    let out = std::process::Command::new("node").args([script, &s.url("/"), shot.to_str().unwrap()]).env("PLAYWRIGHT_CORE", &pw).output().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "playground run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["answers"].as_array().unwrap().len(), 2, "{v}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "screenshot too small");
    eprintln!("{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
