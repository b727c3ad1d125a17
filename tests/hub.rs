//! Models and datasets from the Hugging Face Hub, against a local server that serves
//! repositories in the Hub's HTTP layout (HF_ENDPOINT points at it, HF_HOME at a temp dir):
//! `/api/{models,datasets}/ID/revision/REV` listings, `/ID/resolve/REV/FILE` with the Hub's
//! headers (ETag, X-Repo-Commit; LFS files redirect to a blob URL with X-Linked-Etag and
//! X-Linked-Size), Range requests, a gated repo, and a transfer that breaks off halfway.
//! The repos are built from the registry's tiny-random-llama (as exported by `instill
//! export`, and as its GGUF) and a small JSONL file.
mod common;

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[derive(Clone)]
struct File {
    name: String,
    bytes: Arc<Vec<u8>>,
    lfs: bool,
}

impl File {
    fn new(name: &str, bytes: Arc<Vec<u8>>) -> File {
        let lfs = [".safetensors", ".gguf", ".parquet", ".bin"].iter().any(|e| name.ends_with(e));
        File { name: name.into(), bytes, lfs }
    }
    fn sha(&self) -> String {
        sha256(&self.bytes)
    }
    /// Stands in for git's blob sha1 (the Hub's ETag of a non-LFS file): any stable 40-hex id does.
    fn oid(&self) -> String {
        sha256(&[format!("blob {}\0", self.bytes.len()).as_bytes(), &self.bytes].concat())[..40].to_string()
    }
}

struct Commit {
    sha: String,
    files: Vec<File>,
}

struct Repo {
    /// "models" or "datasets".
    kind: &'static str,
    id: String,
    commits: Vec<Commit>,
    /// Branch name -> index into `commits`.
    branches: Vec<(String, usize)>,
    token: Option<String>,
    /// Serve LFS bytes with one byte changed (the listing keeps the true sha256).
    tamper: bool,
}

impl Repo {
    fn new(kind: &'static str, id: &str, commits: Vec<Vec<File>>) -> Repo {
        let commits: Vec<Commit> = commits.into_iter().enumerate().map(|(i, files)| Commit { sha: sha256(format!("{id}{i}").as_bytes())[..40].to_string(), files }).collect();
        let main = commits.len() - 1;
        Repo { kind, id: id.into(), commits, branches: vec![("main".into(), main)], token: None, tamper: false }
    }
    fn commit(&self, rev: &str) -> Option<&Commit> {
        let rev = rev.replace("%2F", "/");
        match self.branches.iter().find(|(b, _)| *b == rev) {
            Some((_, i)) => Some(&self.commits[*i]),
            None => self.commits.iter().find(|c| c.sha == rev),
        }
    }
}

#[derive(Debug, Clone)]
struct Req {
    path: String,
    range: Option<String>,
}

#[derive(Default)]
struct State {
    log: Vec<Req>,
    /// Blob sha256 -> how many more transfers of it break off halfway.
    breaks: HashMap<String, usize>,
}

struct Hub {
    repos: Vec<Repo>,
    state: Mutex<State>,
    base: OnceLock<String>,
}

impl Hub {
    fn start(repos: Vec<Repo>) -> Arc<Hub> {
        let hub = Arc::new(Hub { repos, state: Mutex::default(), base: OnceLock::new() });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        hub.base.set(format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let h = hub.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let h = h.clone();
                std::thread::spawn(move || h.handle(conn));
            }
        });
        hub
    }
    fn url(&self) -> &str {
        self.base.get().unwrap()
    }
    fn log(&self) -> Vec<Req> {
        self.state.lock().unwrap().log.clone()
    }
    fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
    /// Requests for file contents (resolve and blob URLs), as opposed to listings.
    fn file_requests(&self) -> Vec<Req> {
        self.log().into_iter().filter(|r| !r.path.starts_with("/api/")).collect()
    }

    fn handle(&self, mut conn: TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let path = target.split('?').next().unwrap().to_string();
        let range = headers.get("range").cloned();
        self.state.lock().unwrap().log.push(Req { path: path.clone(), range: range.clone() });
        let auth = headers.get("authorization").cloned();
        let _ = self.route(&mut conn, &path, range.as_deref(), auth.as_deref());
    }

    fn route(&self, conn: &mut TcpStream, path: &str, range: Option<&str>, auth: Option<&str>) -> std::io::Result<()> {
        if let Some(sha) = path.strip_prefix("/lfs/") {
            let f = self.repos.iter().flat_map(|r| r.commits.iter().flat_map(|c| c.files.iter()).map(move |f| (r, f))).find(|(_, f)| f.sha() == sha);
            return match f {
                Some((r, f)) => {
                    let mut bytes = f.bytes.to_vec();
                    if r.tamper {
                        *bytes.last_mut().unwrap() ^= 1;
                    }
                    self.body(conn, &bytes, range, &[], Some(sha))
                }
                None => respond(conn, "404 Not Found", &[], b"no such blob"),
            };
        }
        let (api, rest) = match path.strip_prefix("/api/") {
            Some(r) => (true, r.to_string()),
            None => (false, path.trim_start_matches('/').to_string()),
        };
        let (kind, rest) = match rest.strip_prefix("datasets/") {
            Some(r) => ("datasets", r),
            None => ("models", rest.strip_prefix("models/").unwrap_or(&rest)),
        };
        let parts: Vec<&str> = rest.splitn(5, '/').collect();
        let (id, verb, rev, file) = match parts.as_slice() {
            [org, name, verb, rev, file @ ..] => (format!("{org}/{name}"), *verb, *rev, file.first().copied().unwrap_or("")),
            _ => return respond(conn, "404 Not Found", &[], b"not a Hub URL"),
        };
        let Some(repo) = self.repos.iter().find(|r| r.kind == kind && r.id == id) else {
            return respond(conn, "404 Not Found", &[], b"{\"error\":\"Repository not found\"}");
        };
        if let Some(t) = &repo.token {
            if auth != Some(&format!("Bearer {t}")) {
                return respond(conn, "401 Unauthorized", &[], b"{\"error\":\"Access to this repo is restricted\"}");
            }
        }
        let Some(commit) = repo.commit(rev) else {
            return respond(conn, "404 Not Found", &[("X-Error-Code", "RevisionNotFound".into())], b"{\"error\":\"Invalid rev id\"}");
        };
        match (api, verb) {
            (true, "revision") => respond(conn, "200 OK", &[("Content-Type", "application/json".into())], listing(commit).as_bytes()),
            (false, "resolve") => self.resolve(conn, commit, file, range),
            _ => respond(conn, "404 Not Found", &[], b"unknown route"),
        }
    }

    fn resolve(&self, conn: &mut TcpStream, commit: &Commit, file: &str, range: Option<&str>) -> std::io::Result<()> {
        let Some(f) = commit.files.iter().find(|f| f.name == file) else {
            return respond(conn, "404 Not Found", &[("X-Error-Code", "EntryNotFound".into())], b"{\"error\":\"Entry not found\"}");
        };
        let mut h = vec![("X-Repo-Commit", commit.sha.clone())];
        if f.lfs {
            // As the Hub does: a redirect to the blob store, the LFS headers on the redirect.
            h.extend([("ETag", format!("\"{}\"", f.oid())), ("X-Linked-Etag", format!("\"{}\"", f.sha())), ("X-Linked-Size", f.bytes.len().to_string())]);
            h.push(("Location", format!("{}/lfs/{}", self.url(), f.sha())));
            return respond(conn, "302 Found", &h, b"");
        }
        h.push(("ETag", format!("\"{}\"", f.oid())));
        self.body(conn, &f.bytes, range, &h, None)
    }

    /// The bytes (or the requested range); a transfer of a blob marked to break stops halfway.
    fn body(&self, conn: &mut TcpStream, bytes: &[u8], range: Option<&str>, extra: &[(&str, String)], blob: Option<&str>) -> std::io::Result<()> {
        let n = bytes.len();
        let (start, end) = match range.and_then(|r| r.strip_prefix("bytes=")) {
            Some(r) => {
                let (a, b) = r.split_once('-').unwrap();
                (a.parse::<usize>().unwrap(), if b.is_empty() { n - 1 } else { b.parse::<usize>().unwrap().min(n - 1) })
            }
            None => (0, n - 1),
        };
        let mut h = extra.to_vec();
        h.push(("Accept-Ranges", "bytes".into()));
        let status = if range.is_some() {
            h.push(("Content-Range", format!("bytes {start}-{end}/{n}")));
            "206 Partial Content"
        } else {
            "200 OK"
        };
        let part = &bytes[start..=end];
        let broken = blob.is_some_and(|b| part.len() > 1 && self.take_break(b));
        if broken {
            write_head(conn, status, &h, part.len())?;
            conn.write_all(&part[..part.len() / 2])?;
            conn.flush()?;
            return conn.shutdown(std::net::Shutdown::Both);
        }
        respond(conn, status, &h, part)
    }

    fn take_break(&self, blob: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        match s.breaks.get_mut(blob) {
            Some(k) if *k > 0 => {
                *k -= 1;
                true
            }
            _ => false,
        }
    }
}

fn listing(c: &Commit) -> String {
    let siblings: Vec<serde_json::Value> = c
        .files
        .iter()
        .map(|f| {
            let mut s = serde_json::json!({"rfilename": f.name, "size": f.bytes.len(), "blobId": f.oid()});
            if f.lfs {
                s["lfs"] = serde_json::json!({"sha256": f.sha(), "size": f.bytes.len(), "pointerSize": 134});
            }
            s
        })
        .collect();
    serde_json::json!({"sha": c.sha, "siblings": siblings}).to_string()
}

fn write_head(conn: &mut TcpStream, status: &str, h: &[(&str, String)], len: usize) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in h {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())
}

fn respond(conn: &mut TcpStream, status: &str, h: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    write_head(conn, status, h, body.len())?;
    conn.write_all(body)?;
    conn.flush()
}

/// tiny-random-llama as `instill export` writes it (once per test process).
fn exported() -> &'static Vec<File> {
    static FILES: OnceLock<Vec<File>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = common::tmpdir("hub-export").join("out");
        let out = Command::new(env!("CARGO_BIN_EXE_instill")).args(["export", "-m", "tiny-random-llama", "--out", dir.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "export: {}", String::from_utf8_lossy(&out.stderr));
        let mut files: Vec<File> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| File::new(&e.file_name().to_string_lossy(), Arc::new(std::fs::read(e.path()).unwrap()))).collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(files.iter().any(|f| f.name == "config.json") && files.iter().any(|f| f.name.ends_with(".safetensors")));
        files
    })
}

fn tiny_gguf() -> Arc<Vec<u8>> {
    Arc::new(std::fs::read(common::source("tiny-random-llama").path()).unwrap())
}

/// The exported model plus files a model download must leave alone.
fn model_files() -> Vec<File> {
    let mut f = exported().clone();
    f.push(File::new("README.md", Arc::new(b"# tiny\n".to_vec())));
    f.push(File::new("pytorch_model.bin", Arc::new(vec![7u8; 4096])));
    f
}

struct Env {
    hub: Arc<Hub>,
    home: PathBuf,
}

impl Env {
    fn new(name: &str, repos: Vec<Repo>) -> Env {
        Env { hub: Hub::start(repos), home: common::tmpdir(&format!("hub-{name}")) }
    }
    fn cmd(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_instill"));
        c.args(args).env("HF_HOME", &self.home).env("HF_ENDPOINT", self.hub.url()).env("INSTILL_PROGRESS_SECS", "1000");
        for k in ["HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN_PATH"] {
            c.env_remove(k);
        }
        c.envs(extra.iter().copied());
        c.output().unwrap()
    }
    fn ok(&self, args: &[&str], extra: &[(&str, &str)]) -> String {
        let out = self.cmd(args, extra);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn fails(&self, args: &[&str], extra: &[(&str, &str)]) -> String {
        let out = self.cmd(args, extra);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} should fail: {err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    }
    fn repo_dir(&self, folder: &str) -> PathBuf {
        self.home.join("hub").join(folder)
    }
}

const GEN: &[&str] = &["--prompt", "Hello", "--max-new-tokens", "4"];

fn generate(env: &Env, model: &str, extra: &[(&str, &str)]) -> String {
    env.ok(&[&["generate", "-m", model], GEN].concat(), extra)
}

fn read_ref(dir: &Path, rev: &str) -> String {
    std::fs::read_to_string(dir.join("refs").join(rev)).unwrap()
}

#[test]
fn model_download_cache_reuse_and_offline() {
    let env = Env::new("model", vec![Repo::new("models", "test-org/tiny-llama", vec![model_files()])]);
    let sha = env.hub.repos[0].commits[0].sha.clone();
    let text = generate(&env, "test-org/tiny-llama", &[]);
    // The same model as the exported directory it was served from.
    let local = common::tmpdir("hub-model-local");
    for f in exported() {
        std::fs::write(local.join(&f.name), &*f.bytes).unwrap();
    }
    assert_eq!(text, generate(&env, local.to_str().unwrap(), &[]));
    // The Hugging Face cache layout: refs/main, snapshot links into blobs named by etag.
    let dir = env.repo_dir("models--test-org--tiny-llama");
    assert_eq!(read_ref(&dir, "main"), sha);
    for f in exported() {
        let p = dir.join("snapshots").join(&sha).join(&f.name);
        let target = std::fs::read_link(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let tag = if f.lfs { f.sha() } else { f.oid() };
        assert_eq!(target, Path::new("../../blobs").join(&tag));
        assert_eq!(std::fs::read(&p).unwrap(), *f.bytes);
    }
    let fetched: Vec<String> = env.hub.file_requests().iter().map(|r| r.path.clone()).collect();
    assert!(!fetched.iter().any(|p| p.contains("README") || p.contains("pytorch_model.bin")), "fetched files no model needs: {fetched:?}");
    // A second run lists the repo and fetches nothing.
    env.hub.clear_log();
    assert_eq!(generate(&env, "test-org/tiny-llama", &[]), text);
    assert!(env.hub.file_requests().is_empty(), "{:?}", env.hub.log());
    // Offline: from the cache alone.
    env.hub.clear_log();
    assert_eq!(generate(&env, "test-org/tiny-llama", &[("HF_HUB_OFFLINE", "1")]), text);
    assert!(env.hub.log().is_empty(), "{:?}", env.hub.log());
    let err = env.fails(&[&["generate", "-m", "test-org/other"], GEN].concat(), &[("HF_HUB_OFFLINE", "1")]);
    assert!(err.contains("HF_HUB_OFFLINE") && err.contains("test-org/other"), "{err}");
}

#[test]
fn revisions_branch_and_commit() {
    let mut v1 = model_files();
    let cfg = v1.iter_mut().find(|f| f.name == "config.json").unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&cfg.bytes).unwrap();
    json["instill_test_revision"] = 1.into();
    cfg.bytes = Arc::new(serde_json::to_vec_pretty(&json).unwrap());
    let mut repo = Repo::new("models", "test-org/tiny-llama", vec![v1, model_files()]);
    repo.branches.push(("v1".into(), 0));
    let (c1, c2) = (repo.commits[0].sha.clone(), repo.commits[1].sha.clone());
    let v1_config = repo.commits[0].files.iter().find(|f| f.name == "config.json").unwrap().bytes.clone();
    let env = Env::new("rev", vec![repo]);
    let dir = env.repo_dir("models--test-org--tiny-llama");
    generate(&env, "test-org/tiny-llama@v1", &[]);
    assert_eq!(read_ref(&dir, "v1"), c1);
    assert_eq!(std::fs::read(dir.join("snapshots").join(&c1).join("config.json")).unwrap(), *v1_config);
    // By commit sha: the other commit's files; the weights blob both share is linked, not fetched again.
    env.hub.clear_log();
    generate(&env, &format!("test-org/tiny-llama@{c2}"), &[]);
    let snap2 = dir.join("snapshots").join(&c2);
    assert_ne!(std::fs::read(snap2.join("config.json")).unwrap(), *v1_config);
    let st = exported().iter().find(|f| f.name.ends_with(".safetensors")).unwrap();
    assert!(snap2.join(&st.name).is_file());
    let fetched: Vec<String> = env.hub.file_requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(fetched.iter().filter(|p| p.contains("config.json")).count(), 2, "{fetched:?}"); // metadata + body
    assert!(!fetched.iter().any(|p| p.ends_with(&st.name) || p.contains(&st.sha())), "{fetched:?}");
    assert!(!dir.join("refs").join(&c2).exists(), "no ref named after a commit");
    // Both revisions stay usable offline.
    generate(&env, "test-org/tiny-llama@v1", &[("HF_HUB_OFFLINE", "1")]);
    generate(&env, &format!("test-org/tiny-llama@{c2}"), &[("HF_HUB_OFFLINE", "1")]);
    let err = env.fails(&[&["generate", "-m", "test-org/tiny-llama@nope"], GEN].concat(), &[]);
    assert!(err.contains("does not exist") && err.contains("\"nope\""), "{err}");
}

#[test]
fn gated_repo_needs_a_token_and_missing_repos_say_so() {
    let mut gated = Repo::new("models", "test-org/gated", vec![exported().clone()]);
    gated.token = Some("hf_test_secret".into());
    let env = Env::new("gated", vec![gated]);
    let err = env.fails(&[&["generate", "-m", "test-org/gated"], GEN].concat(), &[]);
    assert!(err.contains("test-org/gated is gated or private") && err.contains("set HF_TOKEN") && err.contains("401"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = env.fails(&[&["generate", "-m", "test-org/gated"], GEN].concat(), &[("HF_TOKEN", "wrong")]);
    assert!(err.contains("refused"), "{err}");
    generate(&env, "test-org/gated", &[("HF_TOKEN", "hf_test_secret")]);
    // The token file `huggingface-cli login` writes.
    std::fs::remove_dir_all(env.home.join("hub")).unwrap();
    std::fs::write(env.home.join("token"), "hf_test_secret\n").unwrap();
    generate(&env, "test-org/gated", &[]);
    let err = env.fails(&[&["generate", "-m", "test-org/nope"], GEN].concat(), &[]);
    assert!(err.contains("test-org/nope does not exist") && err.contains("404"), "{err}");
}

#[test]
fn broken_download_resumes() {
    let env = Env::new("broken", vec![Repo::new("models", "test-org/tiny-llama", vec![exported().clone()])]);
    let st = exported().iter().find(|f| f.name.ends_with(".safetensors")).unwrap().clone();
    let blob = env.repo_dir("models--test-org--tiny-llama").join("blobs").join(st.sha());
    let ranges = |hub: &Hub| -> Vec<String> { hub.log().into_iter().filter(|r| r.path == format!("/lfs/{}", st.sha())).filter_map(|r| r.range).filter(|r| r != "bytes=0-0").collect() };
    // Every transfer breaks off: the run gives up after its retries and keeps the part file.
    env.hub.state.lock().unwrap().breaks.insert(st.sha(), usize::MAX);
    let err = env.fails(&[&["generate", "-m", "test-org/tiny-llama"], GEN].concat(), &[]);
    assert!(err.contains("run the command again"), "{err}");
    let part = blob.with_extension("part");
    let have = std::fs::metadata(&part).unwrap().len() as usize;
    assert!(have > 0 && have < st.bytes.len(), "{have}");
    assert_eq!(std::fs::read(&part).unwrap(), st.bytes[..have]);
    // The next run continues from there with a Range request; once more it breaks, and the
    // same run retries and finishes.
    env.hub.state.lock().unwrap().breaks.insert(st.sha(), 1);
    env.hub.clear_log();
    generate(&env, "test-org/tiny-llama", &[]);
    let r = ranges(&env.hub);
    assert_eq!(r[0], format!("bytes={have}-"), "{r:?}");
    assert!(r.len() == 2 && r[1] != r[0], "{r:?}");
    assert_eq!(std::fs::read(&blob).unwrap(), *st.bytes);
}

#[test]
fn corrupt_download_is_removed() {
    let mut repo = Repo::new("models", "test-org/tiny-llama", vec![exported().clone()]);
    repo.tamper = true;
    let env = Env::new("corrupt", vec![repo]);
    let err = env.fails(&[&["generate", "-m", "test-org/tiny-llama"], GEN].concat(), &[]);
    assert!(err.contains("corrupt") && err.contains("sha256"), "{err}");
    let blobs = env.repo_dir("models--test-org--tiny-llama").join("blobs");
    let st = exported().iter().find(|f| f.name.ends_with(".safetensors")).unwrap();
    assert!(!blobs.join(st.sha()).exists());
}

#[test]
fn gguf_repo_file_pick() {
    let g = tiny_gguf();
    let files = vec![File::new("tiny.Q4_K_M.gguf", g.clone()), File::new("tiny.Q8_0.gguf", g.clone()), File::new("README.md", Arc::new(b"# gguf\n".to_vec()))];
    let env = Env::new("gguf", vec![Repo::new("models", "test-org/tiny-GGUF", vec![files])]);
    let sha = env.hub.repos[0].commits[0].sha.clone();
    let snap = env.repo_dir("models--test-org--tiny-GGUF").join("snapshots").join(&sha);
    let text = generate(&env, "test-org/tiny-GGUF:q4_k_m", &[]);
    assert!(snap.join("tiny.Q4_K_M.gguf").is_file() && !snap.join("tiny.Q8_0.gguf").exists());
    let local = common::source("tiny-random-llama").path().to_str().unwrap().to_string();
    assert_eq!(text, generate(&env, &local, &[]));
    // --gguf-file; the same bytes under another name are linked to the blob already there.
    env.hub.clear_log();
    env.ok(&[&["generate", "-m", "test-org/tiny-GGUF", "--gguf-file", "tiny.Q8_0.gguf"], GEN].concat(), &[]);
    assert!(snap.join("tiny.Q8_0.gguf").is_file());
    assert!(env.hub.file_requests().is_empty(), "{:?}", env.hub.log());
    let err = env.fails(&[&["generate", "-m", "test-org/tiny-GGUF"], GEN].concat(), &[]);
    assert!(err.contains("tiny.Q4_K_M.gguf") && err.contains("tiny.Q8_0.gguf") && err.contains(":QUANT"), "{err}");
    let err = env.fails(&[&["generate", "-m", "test-org/tiny-GGUF:Q5_K_M"], GEN].concat(), &[]);
    assert!(err.contains("no GGUF file matching \"Q5_K_M\""), "{err}");
}

#[test]
fn dataset_as_data() {
    let train = Arc::new(std::fs::read(common::fixture("data/messages.jsonl")).unwrap());
    let test = Arc::new(std::fs::read(common::fixture("data/trl_preference.jsonl")).unwrap());
    let files = vec![File::new("README.md", Arc::new(b"---\nlicense: mit\n---\n".to_vec())), File::new("data/train-00000-of-00001.jsonl", train), File::new("data/test-00000-of-00001.jsonl", test)];
    let env = Env::new("data", vec![Repo::new("datasets", "test-org/chat", vec![files])]);
    let local = env.ok(&["data", "check", common::fixture("data/messages.jsonl").to_str().unwrap()], &[]);
    let counts = local.split_once(": ").unwrap().1.to_string();
    let named = env.ok(&["data", "check", "hf://datasets/test-org/chat/data/train-00000-of-00001.jsonl"], &[]);
    assert!(named.ends_with(&counts), "{named} vs {counts}");
    // No file named: the train split, as `datasets` picks it, and it says so.
    let out = env.cmd(&["data", "check", "hf://datasets/test-org/chat"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(&counts));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading data/train-00000-of-00001.jsonl (the train split)"));
    let fetched: Vec<String> = env.hub.file_requests().iter().map(|r| r.path.clone()).collect();
    assert!(fetched.iter().all(|p| p.starts_with("/datasets/test-org/chat/resolve/") && p.contains("train")), "{fetched:?}");
    let snap = env.repo_dir("datasets--test-org--chat").join("snapshots").join(&env.hub.repos[0].commits[0].sha);
    assert!(snap.join("data/train-00000-of-00001.jsonl").is_file());
    // Offline, from the cache.
    env.ok(&["data", "check", "hf://datasets/test-org/chat"], &[("HF_HUB_OFFLINE", "1")]);
    let err = env.fails(&["data", "check", "hf://datasets/test-org/chat/nope.jsonl"], &[]);
    assert!(err.contains("nope.jsonl"), "{err}");
}

#[test]
fn recipe_takes_hub_model_and_data() {
    let data = File::new("train.jsonl", Arc::new(std::fs::read(common::fixture("data/messages.jsonl")).unwrap()));
    let env = Env::new("recipe", vec![Repo::new("models", "test-org/tiny-llama", vec![exported().clone()]), Repo::new("datasets", "test-org/chat", vec![vec![data]])]);
    let dir = env.home.join("work");
    std::fs::create_dir_all(&dir).unwrap();
    let recipe = "name: hub\nmodel: test-org/tiny-llama\ndata: [{path: \"hf://datasets/test-org/chat\"}]\ntemplate: chatml\nval_fraction: 0\n\
                  max_len: 64\nmethod: lora\nlora: {r: 2, alpha: 4, target_modules: [q_proj]}\nmax_steps: 1\nbatch_size: 1\n";
    std::fs::write(dir.join("recipe.yaml"), recipe).unwrap();
    let out = dir.join("run");
    env.ok(&["--threads", "2", "sft", dir.join("recipe.yaml").to_str().unwrap(), "--set", &format!("output_dir={}", out.display())], &[]);
    let saved = std::fs::read_to_string(out.join("recipe.yaml")).unwrap_or_default();
    assert!(saved.contains("hf://datasets/test-org/chat"), "{saved}");
}
