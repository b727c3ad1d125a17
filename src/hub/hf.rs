//! Models and datasets on the Hugging Face Hub (`org/name[@revision]`,
//! `hf://datasets/org/name[/file]`), downloaded into the Hugging Face cache that
//! transformers and `huggingface_hub` use (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`: `models--org--name/{blobs,refs,snapshots/<commit>}`), so a
//! file either of them fetched is not fetched again.
//!
//! The `hf-hub` crate (0.4, its sync ureq API) does the transfers: the cache layout, the
//! `.part` file a broken transfer leaves and the HTTP Range request that continues it, with
//! retries. Around it: one listing request per repo (`/api/{models,datasets}/ID/revision/REV
//! ?blobs=true`: commit, file names, sizes, LFS sha256) decides which files a command needs,
//! finds them in the cache (a blob another revision already has is linked, not fetched),
//! and checks every download's size and, for LFS files, its sha256 (hf-hub checks neither).
use super::pick::{self, ModelPlan};
use super::ModelSource;
use crate::progress::Progress;
use crate::{Error, Result};
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

/// Attempts per file after the first; each continues where the last one stopped.
const RETRIES: usize = 4;

/// A repository at a revision (branch, tag or commit).
#[derive(Debug, Clone, PartialEq)]
pub struct HubRef {
    pub dataset: bool,
    pub id: String,
    pub revision: String,
}

impl std::fmt::Display for HubRef {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let kind = if self.dataset { "dataset " } else { "" };
        if self.revision == "main" {
            write!(f, "{kind}{}", self.id)
        } else {
            write!(f, "{kind}{}@{}", self.id, self.revision)
        }
    }
}

impl HubRef {
    fn repo(&self, revision: &str) -> Repo {
        let kind = if self.dataset { RepoType::Dataset } else { RepoType::Model };
        Repo::with_revision(self.id.clone(), kind, revision.to_string())
    }

    /// `models--org--name` (or `datasets--...`) in the cache.
    fn folder(&self) -> PathBuf {
        cache_root().join(self.repo(&self.revision).folder_name())
    }
}

fn valid_id(id: &str) -> bool {
    let ok = |s: &str| !s.is_empty() && !s.starts_with(['.', '-']) && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    matches!(id.split('/').collect::<Vec<_>>().as_slice(), [org, name] if ok(org) && ok(name) && !name.ends_with(".gguf"))
}

/// `org/name[@revision][:QUANT]`; None when `s` does not have that form.
pub fn parse_model(s: &str) -> Option<(HubRef, Option<String>)> {
    let (rest, quant) = match s.rsplit_once(':') {
        Some((r, q)) if !q.is_empty() && !q.contains('/') => (r, Some(q.to_string())),
        Some(_) => return None,
        None => (s, None),
    };
    let (id, rev) = rest.split_once('@').unwrap_or((rest, "main"));
    (valid_id(id) && !rev.is_empty()).then(|| (HubRef { dataset: false, id: id.into(), revision: rev.into() }, quant))
}

/// `hf://datasets/org/name[@revision][/path/in/repo]` (a revision with `/` written `%2F`).
pub fn parse_data(s: &str) -> Option<(HubRef, Option<String>)> {
    let mut parts = s.strip_prefix("hf://datasets/")?.splitn(3, '/');
    let (org, name_rev) = (parts.next()?, parts.next()?);
    let file = parts.next().map(|f| f.trim_end_matches('/')).filter(|f| !f.is_empty()).map(str::to_string);
    let (name, rev) = name_rev.split_once('@').unwrap_or((name_rev, "main"));
    let id = format!("{org}/{name}");
    (valid_id(&id) && !rev.is_empty()).then(|| (HubRef { dataset: true, id, revision: rev.replace("%2F", "/") }, file))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn hf_home() -> PathBuf {
    match env("HF_HOME") {
        Some(h) => PathBuf::from(h),
        None => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cache").join("huggingface"),
    }
}

/// The Hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_root() -> PathBuf {
    env("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| hf_home().join("hub"))
}

/// `$HF_TOKEN`, else the file `huggingface-cli login` writes (`$HF_TOKEN_PATH`, `$HF_HOME/token`).
fn token() -> Option<String> {
    if let Some(t) = env("HF_TOKEN") {
        return Some(t.trim().to_string());
    }
    let path = env("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| hf_home().join("token"));
    std::fs::read_to_string(path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

fn offline() -> bool {
    env("HF_HUB_OFFLINE").is_some_and(|v| ["1", "true", "yes", "on"].contains(&v.trim().to_ascii_lowercase().as_str()))
}

fn endpoint() -> String {
    env("HF_ENDPOINT").map(|e| e.trim_end_matches('/').to_string()).unwrap_or_else(|| "https://huggingface.co".into())
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit())
}

/// One file of a repo at a commit, as the listing (or the cache) gives it.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    size: Option<u64>,
    /// The blob's name in the cache: the LFS sha256, else the git blob id.
    etag: Option<String>,
    sha256: Option<String>,
}

/// A repo's files at the commit a revision points to. `online`: from the Hub (missing
/// files can be fetched), else from the cache's snapshot.
struct Listing {
    commit: String,
    files: Vec<Entry>,
    online: bool,
}

impl Listing {
    fn names(&self) -> Vec<&str> {
        self.files.iter().map(|e| e.name.as_str()).collect()
    }
}

struct Client {
    api: Api,
    r: HubRef,
    endpoint: String,
    has_token: bool,
    offline: bool,
}

/// A model from the Hub: its snapshot directory (safetensors) or its one `.gguf`.
/// `cache_only`: use what the cache holds, never the network (as with `HF_HUB_OFFLINE=1`).
pub fn model(r: &HubRef, quant: Option<&str>, gguf_file: Option<&str>, cache_only: bool) -> Result<ModelSource> {
    let c = Client::new(r, cache_only)?;
    let l = c.listing()?;
    match pick::model_plan(&l.names(), quant, gguf_file, &r.to_string())? {
        ModelPlan::Gguf(f) => Ok(ModelSource::Gguf(c.ensure(&l, std::slice::from_ref(&f))?.join(f))),
        ModelPlan::Safetensors { mut aux, index, weights } => {
            aux.extend(index.iter().cloned());
            aux.extend(weights);
            let snap = c.ensure(&l, &aux)?;
            if let Some(ix) = index {
                c.ensure(&l, &shards(&snap.join(ix))?)?;
            }
            if !snap.join("config.json").is_file() {
                return Err(Error::Input(format!("{r} has safetensors but no config.json, so it is not a transformers model directory")));
            }
            Ok(ModelSource::HfDir(snap))
        }
    }
}

/// A dataset's files: `file` (a file or a folder of the repo), else the train files
/// `datasets` would pick (and a line on stderr saying which).
pub fn dataset(r: &HubRef, file: Option<&str>) -> Result<Vec<PathBuf>> {
    let c = Client::new(r, false)?;
    let l = c.listing()?;
    let names = l.names();
    let files = match file {
        Some(f) if names.contains(&f) => vec![f.to_string()],
        _ => {
            let prefix = file.map(|f| format!("{f}/")).unwrap_or_default();
            let under: Vec<&str> = names.iter().copied().filter(|n| n.starts_with(&prefix)).collect();
            if under.is_empty() {
                return Err(Error::Input(format!("{r} has no file or folder {:?} at commit {}", file.unwrap_or_default(), l.commit)));
            }
            let (files, why) = pick::dataset_files(&under, &r.to_string())?;
            eprintln!("hf://datasets/{}: reading {} ({why})", r.id, files.join(", "));
            files
        }
    };
    let snap = c.ensure(&l, &files)?;
    Ok(files.iter().map(|f| snap.join(f)).collect())
}

/// The shard files a `model.safetensors.index.json` names.
fn shards(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::file(index, e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(index, format!("invalid JSON: {e}")))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::file(index, "no weight_map"))?;
    let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
    files.sort();
    files.dedup();
    Ok(files)
}

impl Client {
    fn new(r: &HubRef, cache_only: bool) -> Result<Self> {
        let token = token();
        let has_token = token.is_some();
        let endpoint = endpoint();
        let api = ApiBuilder::from_cache(Cache::new(cache_root()))
            .with_endpoint(endpoint.clone())
            .with_token(token)
            .with_progress(false)
            .with_retries(RETRIES)
            .with_user_agent("instill", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| Error::Download(format!("{endpoint}: {e}")))?;
        Ok(Client { api, r: r.clone(), endpoint, has_token, offline: cache_only || offline() })
    }

    /// From the Hub; from the cache when offline, or (with a warning) when the Hub cannot be reached.
    fn listing(&self) -> Result<Listing> {
        if self.offline {
            return self.cached_listing().ok_or_else(|| {
                Error::Input(format!("{} is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set: run once without HF_HUB_OFFLINE to download it", self.r, self.r.folder().display()))
            });
        }
        let req = self.api.repo(self.r.repo(&self.r.revision)).info_request().query("blobs", "true");
        let url = req.url().to_string();
        match req.call() {
            Ok(resp) => {
                let v: serde_json::Value = resp.into_json().map_err(|e| Error::Download(format!("{url}: unreadable listing: {e}")))?;
                parse_listing(&v).ok_or_else(|| Error::Download(format!("{url}: the listing has no commit sha or siblings (is HF_ENDPOINT a Hub?)")))
            }
            Err(ureq::Error::Status(code, _)) => Err(self.status_error(code, &url, None)),
            Err(e) => match self.cached_listing() {
                Some(l) => {
                    eprintln!("warning: cannot reach {} ({e}); using {} at commit {} from the cache", self.endpoint, self.r, l.commit);
                    Ok(l)
                }
                None => Err(Error::Download(format!("{url}: {e} (set HF_ENDPOINT for a mirror, or download {} where the Hub can be reached)", self.r))),
            },
        }
    }

    /// The snapshot the revision names in the cache: a commit directly, else `refs/<revision>`.
    fn cached_listing(&self) -> Option<Listing> {
        let folder = self.r.folder();
        let commit = if is_commit(&self.r.revision) { self.r.revision.clone() } else { std::fs::read_to_string(folder.join("refs").join(&self.r.revision)).ok()?.trim().to_string() };
        let snap = folder.join("snapshots").join(&commit);
        let mut files = vec![];
        walk(&snap, "", &mut files);
        (!files.is_empty()).then_some(Listing { commit, files, online: false })
    }

    fn status_error(&self, code: u16, url: &str, file: Option<&str>) -> Error {
        let r = &self.r;
        let msg = match (code, file) {
            (401 | 403, _) => {
                let why = if self.has_token { "the token sent (HF_TOKEN or the token file) was refused" } else { "no token is set; the Hub also answers 401 for a repo that does not exist" };
                format!("{r} is gated or private: accept its terms on huggingface.co and set HF_TOKEN ({why})")
            }
            (404, Some(f)) => format!("{f} does not exist in {r}"),
            (404, None) => {
                let local = if r.dataset { "" } else { " (nor is it a local file or directory)" };
                format!("{r} does not exist on {}: no such repo or revision {:?}{local}", self.endpoint, r.revision)
            }
            _ => format!("the Hub answered HTTP {code}"),
        };
        Error::Download(format!("{url}: HTTP {code}: {msg}"))
    }

    fn snapshot(&self, commit: &str) -> PathBuf {
        self.r.folder().join("snapshots").join(commit)
    }

    /// Make `names` present and whole in the commit's snapshot; returns the snapshot directory.
    fn ensure(&self, l: &Listing, names: &[String]) -> Result<PathBuf> {
        let snap = self.snapshot(&l.commit);
        for name in names {
            let e = l.files.iter().find(|e| &e.name == name).ok_or_else(|| Error::Input(format!("{} has no file {name} at commit {}", self.r, l.commit)))?;
            let path = snap.join(name);
            if std::fs::metadata(&path).is_ok_and(|m| e.size.is_none_or(|s| s == m.len())) {
                continue;
            }
            if !l.online {
                return Err(Error::file(&path, format!("not in the cache (or incomplete) and the Hub is not used (HF_HUB_OFFLINE): run without it to download {}", self.r)));
            }
            self.fetch(l, e, &path)?;
        }
        if l.online && l.commit != self.r.revision {
            write_ref(&self.r.folder().join("refs").join(&self.r.revision), &l.commit)?;
        }
        Ok(snap)
    }

    /// Link a blob the cache already has (another revision's, or transformers'), else download and verify.
    fn fetch(&self, l: &Listing, e: &Entry, path: &Path) -> Result<()> {
        if std::fs::symlink_metadata(path).is_ok() {
            std::fs::remove_file(path).map_err(|err| Error::file(path, err.to_string()))?;
        }
        if let Some(tag) = &e.etag {
            let blob = self.r.folder().join("blobs").join(tag);
            if std::fs::metadata(&blob).is_ok_and(|m| e.size.is_none_or(|s| s == m.len())) {
                return link(&blob, path, &e.name);
            }
        }
        // By commit, so every file comes from the commit the listing named even if the branch moves.
        let repo = self.api.repo(self.r.repo(&l.commit));
        let url = repo.url(&e.name);
        let got = repo.download_with_progress(&e.name, Bar { p: None, name: e.name.clone() }).map_err(|err| self.api_error(err, &url, &e.name))?;
        // hf-hub records the revision it was given (the commit) as a ref; huggingface_hub keeps no ref named after a commit.
        let _ = std::fs::remove_file(self.r.folder().join("refs").join(&l.commit));
        verify(&got, e, &url)
    }

    fn api_error(&self, err: ApiError, url: &str, file: &str) -> Error {
        let status = |e: &ApiError| match e {
            ApiError::RequestError(b) => match b.as_ref() {
                ureq::Error::Status(code, _) => Some(*code),
                _ => None,
            },
            _ => None,
        };
        if let Some(code) = status(&err) {
            return self.status_error(code, url, Some(file));
        }
        let hint = match err {
            ApiError::TooManyRetries(_) => format!(" after {RETRIES} retries; run the command again to continue the download"),
            _ => String::new(),
        };
        Error::Download(format!("{url}: {err}{hint}"))
    }
}

fn parse_listing(v: &serde_json::Value) -> Option<Listing> {
    let commit = v.get("sha")?.as_str()?.to_string();
    let files = v
        .get("siblings")?
        .as_array()?
        .iter()
        .filter_map(|s| {
            let lfs = s.get("lfs");
            let sha256 = lfs.and_then(|l| l.get("sha256")).and_then(|x| x.as_str()).map(str::to_string);
            let size = lfs.and_then(|l| l.get("size")).or(s.get("size")).and_then(|x| x.as_u64());
            let etag = sha256.clone().or_else(|| s.get("blobId").and_then(|x| x.as_str()).map(str::to_string));
            Some(Entry { name: s.get("rfilename")?.as_str()?.to_string(), size, etag, sha256 })
        })
        .collect();
    Some(Listing { commit, files, online: true })
}

/// The files under a snapshot directory, names relative to it.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<Entry>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for item in rd.flatten() {
        let name = format!("{prefix}{}", item.file_name().to_string_lossy());
        match std::fs::metadata(item.path()) {
            Ok(m) if m.is_dir() => walk(&item.path(), &format!("{name}/"), out),
            Ok(m) => out.push(Entry { name, size: Some(m.len()), etag: None, sha256: None }),
            Err(_) => {} // a link to a blob that is gone: not in the cache
        }
    }
}

/// The size the listing gives and, for LFS files, the sha256; a bad file is removed.
fn verify(path: &Path, e: &Entry, url: &str) -> Result<()> {
    let len = std::fs::metadata(path).map_err(|err| Error::file(path, err.to_string()))?.len();
    let bad = match (e.size, &e.sha256) {
        (Some(s), _) if s != len => Some(format!("{len} bytes, the Hub lists {s}")),
        (_, Some(sha)) => {
            let got = super::sha256_file(path)?;
            (&got != sha).then(|| format!("sha256 {got}, the Hub lists {sha}"))
        }
        _ => None,
    };
    let Some(why) = bad else { return Ok(()) };
    if let Ok(blob) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
    Err(Error::Download(format!("{url}: the download is corrupt ({why}); it was removed: run the command again")))
}

/// `snapshots/<commit>/<name>` -> `../../blobs/<tag>`, relative as huggingface_hub makes it.
fn link(blob: &Path, path: &Path, name: &str) -> Result<()> {
    let dir = path.parent().expect("a snapshot file has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e.to_string()))?;
    #[cfg(unix)]
    let made = {
        let up = "../".repeat(2 + name.matches('/').count());
        std::os::unix::fs::symlink(PathBuf::from(up).join("blobs").join(blob.file_name().expect("blob name")), path)
    };
    #[cfg(not(unix))]
    let made = {
        let _ = name;
        std::fs::copy(blob, path).map(|_| ())
    };
    made.map_err(|e| Error::file(path, e.to_string()))
}

/// Write `refs/<revision>` (atomically) when it does not already hold `commit`.
fn write_ref(path: &Path, commit: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|c| c.trim() == commit) {
        return Ok(());
    }
    let dir = path.parent().expect("a ref has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e.to_string()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, commit).map_err(|e| Error::file(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, e.to_string()))
}

/// hf-hub's progress callbacks onto [`Progress`] (a bar, or plain lines off a terminal).
struct Bar {
    p: Option<Progress>,
    name: String,
}

impl hf_hub::api::Progress for Bar {
    /// Called again on every retry, followed by `update(bytes already there)`.
    fn init(&mut self, size: usize, _filename: &str) {
        match &self.p {
            Some(p) => {
                p.set_length(size as u64);
                p.start_at(0);
            }
            None => {
                let p = Progress::new("download", "byte", size as u64, "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}", true);
                p.set_message(self.name.clone());
                self.p = Some(p);
            }
        }
    }

    fn update(&mut self, n: usize) {
        if let Some(p) = &self.p {
            p.inc(n as u64);
        }
    }

    fn finish(&mut self) {
        if let Some(p) = &self.p {
            p.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids() {
        let (r, q) = parse_model("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
        assert_eq!((r.id.as_str(), r.revision.as_str(), q), ("HuggingFaceTB/SmolLM2-135M-Instruct", "main", None));
        let (r, q) = parse_model("org/m-GGUF@v1.0:Q4_K_M").unwrap();
        assert_eq!((r.revision.as_str(), q.as_deref()), ("v1.0", Some("Q4_K_M")));
        assert_eq!(parse_model("o/n@refs/pr/1").unwrap().0.revision, "refs/pr/1");
        for bad in ["smollm2", "./a/b", "/abs/path", "a/b/c", "a/b.gguf", "o/n@", "o/n:"] {
            assert!(parse_model(bad).is_none(), "{bad}");
        }
        let (r, f) = parse_data("hf://datasets/tatsu-lab/alpaca").unwrap();
        assert_eq!((r.id.as_str(), f), ("tatsu-lab/alpaca", None));
        let (r, f) = parse_data("hf://datasets/o/d@refs%2Fconvert%2Fparquet/data/x.parquet").unwrap();
        assert_eq!((r.revision.as_str(), f.as_deref()), ("refs/convert/parquet", Some("data/x.parquet")));
        assert!(parse_data("hf://models/o/m").is_none());
    }
}
