//! Content fingerprints of model files, memoised on disk so that a large model
//! is hashed once.
//!
//! * A file's fingerprint is the blake3 of its bytes (the same hex `b3sum` prints).
//! * A folder's fingerprint is the blake3 over its files in sorted relative
//!   path order (`/` separators), each as `path NUL blake3(content)`, under a
//!   `flow-model-dir-v1` prefix. The folder's own name is not part of it, so a
//!   moved or renamed model keeps its fingerprint; files whose names start with
//!   `.flow-` (the store's markers) are left out.
//! * Catalog models are folders like any other: their fingerprint comes from
//!   the bytes on disk, so a changed file changes every key that uses it.
//!   Each pinned file is also checked against its pinned sha256 whenever it
//!   is hashed (a memo miss); a mismatch is a [`PinMismatch`] error, never a
//!   silently different model.
//!
//! The memo is keyed by (canonical absolute path, size, mtime in ns). A file
//! modified less than [`RACY_WINDOW`] before it is hashed is hashed but not
//! memoised (a same-size rewrite within one mtime tick could otherwise go
//! unseen). An entry made without a sha256 check does not satisfy a check:
//! the file is read again.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use super::fsutil::{hex, list_files};
use crate::files::write_atomic;

/// Files modified this recently are not memoised.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Hashes model files and remembers the results.
#[derive(Debug)]
pub struct Fingerprinter {
    index_path: Option<PathBuf>,
    memo: Mutex<Memo>,
    hashed: AtomicU64,
}

#[derive(Debug, Default)]
struct Memo {
    loaded: bool,
    dirty: bool,
    entries: HashMap<String, MemoEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct MemoEntry {
    size: u64,
    mtime_ns: u64,
    blake3: String,
    /// Present when the file was also checked against a pinned sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

/// A pinned file whose bytes no longer match its pinned sha256.
#[derive(Debug, thiserror::Error)]
#[error("`{}` no longer matches its pinned sha256 (expected {expected}, found {found}): the file changed since it was installed", file.display())]
pub struct PinMismatch {
    /// The file.
    pub file: PathBuf,
    /// The pinned sha256.
    pub expected: String,
    /// The sha256 of what is on disk.
    pub found: String,
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    files: HashMap<String, MemoEntry>,
}

impl Fingerprinter {
    /// A fingerprinter whose memo persists in the JSON file `index_path`
    /// (`None`: memory only).
    pub fn new(index_path: Option<PathBuf>) -> Self {
        Fingerprinter { index_path, memo: Mutex::new(Memo::default()), hashed: AtomicU64::new(0) }
    }

    /// How many files were actually read and hashed by this fingerprinter (memo
    /// misses). Exposed for tests and statistics.
    pub fn files_hashed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    /// The fingerprint of a file or folder (see the module docs). `on_bytes`
    /// gets (bytes hashed so far, bytes to hash) while files are read.
    pub fn fingerprint(&self, path: &Path, on_bytes: &mut dyn FnMut(u64, u64)) -> Result<String> {
        self.fingerprint_pinned(path, &BTreeMap::new(), on_bytes)
    }

    /// Like [`Fingerprinter::fingerprint`], and the files of a folder named
    /// in `pins` (relative path, `/` separators, to sha256 hex) must match
    /// their pins: a [`PinMismatch`] error otherwise.
    pub fn fingerprint_pinned(
        &self,
        path: &Path,
        pins: &BTreeMap<String, String>,
        on_bytes: &mut dyn FnMut(u64, u64),
    ) -> Result<String> {
        let meta = fs::metadata(path).with_context(|| format!("cannot read model `{}`", path.display()))?;
        let result = if meta.is_dir() {
            let files = list_files(path).with_context(|| format!("cannot list model folder `{}`", path.display()))?;
            if files.is_empty() {
                anyhow::bail!("model folder `{}` holds no files", path.display());
            }
            let total: u64 = files.iter().filter_map(|(_, p)| fs::metadata(p).ok()).map(|m| m.len()).sum();
            let mut done = 0u64;
            let mut items = Vec::with_capacity(files.len());
            for (rel, p) in &files {
                let base = done;
                let pin = pins.get(rel).map(String::as_str);
                let h = self.file_hash(p, pin, &mut |n| on_bytes(base + n, total))?;
                done += fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                items.push((rel.clone(), h));
            }
            Ok(combine("flow-model-dir-v1", items.iter().map(|(r, h)| (r.as_str(), h.as_str()))))
        } else {
            let total = meta.len();
            self.file_hash(path, None, &mut |n| on_bytes(n, total))
        };
        self.save();
        result
    }

    /// blake3 hex of one file's content, from the memo when size and mtime
    /// match (and, with a `pin`, when the memo says it matched that pin);
    /// else the file is read, and with a `pin` its sha256 checked.
    fn file_hash(&self, path: &Path, pin: Option<&str>, on_bytes: &mut dyn FnMut(u64)) -> Result<String> {
        let canon = fs::canonicalize(path).with_context(|| format!("cannot read `{}`", path.display()))?;
        let meta = fs::metadata(&canon).with_context(|| format!("cannot read `{}`", canon.display()))?;
        let mtime = meta.modified().ok();
        let mtime_ns = mtime
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
            .unwrap_or(0);
        let key = canon.to_string_lossy().into_owned();
        {
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            self.load(&mut memo);
            if let Some(e) = memo.entries.get(&key) {
                let pin_ok = pin.is_none_or(|p| e.sha256.as_deref() == Some(p));
                if e.size == meta.len() && e.mtime_ns == mtime_ns && mtime.is_some() && pin_ok {
                    return Ok(e.blake3.clone());
                }
            }
        }
        let started = SystemTime::now();
        let mut f = File::open(&canon).with_context(|| format!("cannot open `{}`", canon.display()))?;
        let mut hasher = blake3::Hasher::new();
        let mut sha = pin.map(|_| Sha256::new());
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", canon.display())),
            };
            hasher.update(&buf[..n]);
            if let Some(sha) = &mut sha {
                sha.update(&buf[..n]);
            }
            done += n as u64;
            on_bytes(done);
        }
        self.hashed.fetch_add(1, Ordering::Relaxed);
        let hash = hasher.finalize().to_hex().to_string();
        let sha256 = sha.map(|s| hex(&s.finalize()));
        if let (Some(expected), Some(found)) = (pin, &sha256) {
            if expected != found {
                return Err(PinMismatch { file: canon, expected: expected.to_string(), found: found.clone() }.into());
            }
        }
        let racy = match mtime {
            Some(t) => started.duration_since(t).map(|d| d < RACY_WINDOW).unwrap_or(true),
            None => true,
        };
        if !racy && done == meta.len() {
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            memo.entries.insert(key, MemoEntry { size: meta.len(), mtime_ns, blake3: hash.clone(), sha256 });
            memo.dirty = true;
        }
        Ok(hash)
    }

    fn load(&self, memo: &mut Memo) {
        if memo.loaded {
            return;
        }
        memo.loaded = true;
        let Some(p) = &self.index_path else { return };
        // A missing or unreadable index is only a lost memo: start afresh.
        if let Ok(bytes) = fs::read(p) {
            if let Ok(index) = serde_json::from_slice::<IndexFile>(&bytes) {
                if index.version == 1 {
                    memo.entries.extend(index.files);
                }
            }
        }
    }

    /// Writes the memo if it changed, dropping entries of files that are gone.
    /// Errors are ignored: the memo is only an optimisation.
    fn save(&self) {
        let Some(p) = &self.index_path else { return };
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if !memo.dirty {
            return;
        }
        memo.entries.retain(|k, _| Path::new(k).exists());
        let index = IndexFile { version: 1, files: memo.entries.clone() };
        if let Ok(bytes) = serde_json::to_vec(&index) {
            if write_atomic(p, &bytes).is_ok() {
                memo.dirty = false;
            }
        }
    }
}

/// blake3 over a domain tag and (name, hash) pairs, in the order given.
fn combine<'a>(domain: &str, items: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(domain.as_bytes());
    h.update(&[0]);
    for (name, hash) in items {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(hash.as_bytes());
        h.update(&[0]);
    }
    hex(h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_old(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::options().write(true).open(path).unwrap().set_modified(old).unwrap();
    }

    #[test]
    fn file_fingerprint_is_the_content_blake3() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        write_old(&p, b"weights");
        let fp = Fingerprinter::new(None);
        assert_eq!(fp.fingerprint(&p, &mut |_, _| {}).unwrap(), blake3::hash(b"weights").to_hex().to_string());
    }

    #[test]
    fn models_memoised_hashes_are_not_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index.json");
        let model = dir.path().join("model");
        write_old(&model.join("config.json"), b"{}");
        write_old(&model.join("sub/weights.bin"), &[7u8; 3000]);

        let fp = Fingerprinter::new(Some(index.clone()));
        let a = fp.fingerprint(&model, &mut |_, _| {}).unwrap();
        assert_eq!(fp.files_hashed(), 2);
        let b = fp.fingerprint(&model, &mut |_, _| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(fp.files_hashed(), 2, "second call must come from the memo");

        // A new process reads the on-disk memo.
        let fp2 = Fingerprinter::new(Some(index.clone()));
        assert_eq!(fp2.fingerprint(&model, &mut |_, _| {}).unwrap(), a);
        assert_eq!(fp2.files_hashed(), 0);

        // Changing a file (new mtime) re-hashes that file only, and changes the fingerprint.
        write_old(&model.join("config.json"), b"{\"a\":1}");
        let c = fp2.fingerprint(&model, &mut |_, _| {}).unwrap();
        assert_ne!(c, a);
        assert_eq!(fp2.files_hashed(), 1);
    }

    #[test]
    fn folder_fingerprint_depends_on_names_and_content_not_location() {
        let dir = tempfile::tempdir().unwrap();
        let fp = Fingerprinter::new(None);
        write_old(&dir.path().join("a/x.bin"), b"1");
        write_old(&dir.path().join("b/x.bin"), b"1");
        write_old(&dir.path().join("c/y.bin"), b"1");
        write_old(&dir.path().join("a/.flow-marker.json"), b"ignored");
        let fa = fp.fingerprint(&dir.path().join("a"), &mut |_, _| {}).unwrap();
        let fb = fp.fingerprint(&dir.path().join("b"), &mut |_, _| {}).unwrap();
        let fc = fp.fingerprint(&dir.path().join("c"), &mut |_, _| {}).unwrap();
        assert_eq!(fa, fb);
        assert_ne!(fa, fc);
    }

    #[test]
    fn recently_modified_files_are_not_memoised() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fresh.bin");
        fs::write(&p, b"new").unwrap();
        let fp = Fingerprinter::new(None);
        fp.fingerprint(&p, &mut |_, _| {}).unwrap();
        fp.fingerprint(&p, &mut |_, _| {}).unwrap();
        assert_eq!(fp.files_hashed(), 2);
    }

    #[test]
    fn pinned_files_are_checked_when_hashed_and_then_memoised() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        write_old(&model.join("w.bin"), b"weights");
        let good = BTreeMap::from([("w.bin".to_string(), hex(&Sha256::digest(b"weights")))]);
        let fp = Fingerprinter::new(None);
        let plain = fp.fingerprint(&model, &mut |_, _| {}).unwrap();
        // A memo entry made without a check does not satisfy a pin.
        let pinned = fp.fingerprint_pinned(&model, &good, &mut |_, _| {}).unwrap();
        assert_eq!(pinned, plain, "a catalog folder's fingerprint is its content's");
        assert_eq!(fp.files_hashed(), 2);
        fp.fingerprint_pinned(&model, &good, &mut |_, _| {}).unwrap();
        assert_eq!(fp.files_hashed(), 2, "a checked entry is memoised");

        // Two bytes flipped, same size: a new mtime, a new hash, and the pin fails.
        write_old(&model.join("w.bin"), b"wieghts");
        let err = fp.fingerprint_pinned(&model, &good, &mut |_, _| {}).unwrap_err();
        let mismatch = err.downcast_ref::<PinMismatch>().expect("a pin mismatch");
        assert!(mismatch.file.ends_with("w.bin"));
        assert!(format!("{err:#}").contains("no longer matches its pinned sha256"));
        // Unpinned, the changed file just changes the fingerprint.
        assert_ne!(fp.fingerprint(&model, &mut |_, _| {}).unwrap(), plain);
    }

    #[test]
    fn missing_model_is_a_clear_error() {
        let fp = Fingerprinter::new(None);
        let e = fp.fingerprint(Path::new("/nonexistent/model.gguf"), &mut |_, _| {}).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/model.gguf"));
    }
}
