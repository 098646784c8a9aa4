//! Small file-system helpers for the model store: temp folders that clean up
//! after themselves, atomic renames, streaming sha256.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Name of the folder under `models/` that holds work in progress.
pub(crate) const TMP_DIR: &str = ".tmp";

/// A folder removed (with everything in it) when dropped, unless persisted by
/// renaming it into place with [`TempDir::persist_as`].
#[derive(Debug)]
pub(crate) struct TempDir {
    path: Option<PathBuf>,
}

impl TempDir {
    /// A fresh, uniquely named folder under `parent/.tmp/`.
    pub(crate) fn new_in(parent: &Path, label: &str) -> io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = parent.join(TMP_DIR);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let label: String =
            label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let path = base.join(format!(
            "{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // Another TempDir's drop may remove an empty `.tmp` between the two
        // calls below; try again then.
        let mut tries = 0;
        loop {
            fs::create_dir_all(&base)?;
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path: Some(path) }),
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 10 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The folder.
    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().expect("temp dir already persisted")
    }

    /// Renames the folder (or, if `sub` is given, its subfolder `sub`) to
    /// `dest`. Returns `false` when `dest` already exists (another process or
    /// thread won the race); the temp folder is then removed on drop.
    pub(crate) fn persist_as(&mut self, sub: Option<&str>, dest: &Path) -> io::Result<bool> {
        let src = match sub {
            Some(s) => self.path().join(s),
            None => self.path().to_path_buf(),
        };
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        match fs::rename(&src, dest) {
            Ok(()) => {
                if sub.is_none() {
                    self.path = None;
                }
                sync_dir(dest.parent());
                Ok(true)
            }
            Err(_) if dest.exists() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_dir_all(&p);
            // Leave no empty `.tmp` behind either.
            if let Some(base) = p.parent() {
                let _ = fs::remove_dir(base);
            }
        }
    }
}

/// Removes leftovers of crashed processes: entries of `parent/.tmp/` older than `age`.
pub(crate) fn clean_stale_temp(parent: &Path, age: Duration) {
    let base = parent.join(TMP_DIR);
    let Ok(entries) = fs::read_dir(&base) else { return };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default() > age)
            .unwrap_or(false);
        if old {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    let _ = fs::remove_dir(&base);
}

fn sync_dir(dir: Option<&Path>) {
    #[cfg(unix)]
    if let Some(d) = dir {
        if let Ok(f) = File::open(d) {
            let _ = f.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Copies `reader` into a new file at `dest`, hashing with sha256 on the way;
/// `on_bytes(done)` is called as data goes through. Returns (hex sha256, bytes).
/// The file is fsynced; on error it is removed.
pub(crate) fn copy_hashing(
    reader: &mut dyn Read,
    dest: &Path,
    on_bytes: &mut dyn FnMut(u64),
) -> io::Result<(String, u64)> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    let result = (|| {
        let mut out = io::BufWriter::with_capacity(1 << 20, File::create(dest)?);
        let (sum, n) = hash_stream(reader, Some(&mut out), on_bytes)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok((sum, n))
    })();
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

/// sha256 of a file as lowercase hex, with its byte count.
pub(crate) fn sha256_file(path: &Path, on_bytes: &mut dyn FnMut(u64)) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    hash_stream(&mut f, None, on_bytes)
}

fn hash_stream(
    reader: &mut dyn Read,
    mut sink: Option<&mut dyn Write>,
    on_bytes: &mut dyn FnMut(u64),
) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        if let Some(w) = sink.as_mut() {
            w.write_all(&buf[..n])?;
        }
        total += n as u64;
        on_bytes(total);
    }
    Ok((hex(&hasher.finalize()), total))
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// True for a 64-digit lowercase hex string (a sha256).
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Every regular file under `dir` (following symlinks), as sorted paths
/// relative to `dir` with `/` separators, skipping names that start with
/// `.flow-` (the store's own markers).
pub(crate) fn list_files(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>, depth: usize) -> io::Result<()> {
        if depth > 64 {
            return Err(io::Error::other(format!("{}: folders nested too deep (a symlink loop?)", dir.display())));
        }
        for e in fs::read_dir(dir)? {
            let e = e?;
            let path = e.path();
            let name = e.file_name();
            if name.to_string_lossy().starts_with(".flow-") {
                continue;
            }
            let meta = fs::metadata(&path)?; // follows symlinks (hub snapshots are links to blobs)
            if meta.is_dir() {
                walk(root, &path, out, depth + 1)?;
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let rel: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                out.push((rel.join("/"), path));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out, 0)?;
    out.sort();
    Ok(out)
}
