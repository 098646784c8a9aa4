//! The disk tier: one file per entry at `objects/<first 2 hex>/<hex>.fv`
//! under the cache folder, in the [`codec`] format.
//!
//! Writes go to a temporary file in the entry's folder that is then renamed
//! over the final name, so a reader sees a whole entry or none. Every read is
//! verified; an entry that fails verification is deleted and reported. The
//! folder keeps within a byte budget (see [`super::budget`]): a hit
//! refreshes an entry's modification time, and [`DiskTier::enforce_budget`]
//! deletes the least recently used files when there are too many bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::budget::{self, CachedFile};
use super::codec;
use super::error::CacheError;
use super::key::CacheKey;
use crate::files::read_marking_used;
use crate::op::Outputs;
use crate::registry::Registry;

/// Extension of entry files.
const ENTRY_EXT: &str = "fv";

/// Extension of files being written.
const TEMP_EXT: &str = "tmp";

/// Makes temporary names unique within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What the disk tier holds (or what [`DiskTier::clear`] or
/// [`DiskTier::enforce_budget`] removed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Entry files.
    pub entries: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Files of ops' own memos (under `memo/`, e.g. per-text embeddings).
    pub memo_files: usize,
    /// Their total size in bytes.
    pub memo_bytes: u64,
}

/// A persistent, content-addressed store of outputs.
#[derive(Debug)]
pub struct DiskTier {
    dir: PathBuf,
    objects: PathBuf,
    budget: u64,
}

impl DiskTier {
    /// Opens the cache folder `dir`, creating `dir/objects/` if needed, with
    /// the default budget ([`budget::DEFAULT_DISK_BUDGET`]).
    pub fn open(dir: impl Into<PathBuf>) -> Result<DiskTier, CacheError> {
        let dir = dir.into();
        let objects = dir.join("objects");
        fs::create_dir_all(&objects).map_err(|e| CacheError::io(&objects, e))?;
        Ok(DiskTier { dir, objects, budget: budget::DEFAULT_DISK_BUDGET })
    }

    /// Keeps the folder within `bytes`.
    pub fn with_budget(mut self, bytes: u64) -> DiskTier {
        self.budget = bytes;
        self
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of the entry under `key` (whether or not it exists).
    pub fn entry_path(&self, key: &CacheKey) -> PathBuf {
        let hex = key.to_hex();
        self.objects
            .join(&hex[..2])
            .join(format!("{hex}.{ENTRY_EXT}"))
    }

    /// True if an entry file exists under `key` (not verified).
    pub fn contains(&self, key: &CacheKey) -> bool {
        fs::metadata(self.entry_path(key)).is_ok_and(|m| m.is_file())
    }

    /// The outputs under `key`, `None` if there is no entry. An entry that
    /// fails verification or decoding is deleted and reported as
    /// [`CacheError::Corrupt`].
    pub fn get(&self, key: &CacheKey, registry: &Registry) -> Result<Option<Outputs>, CacheError> {
        let path = self.entry_path(key);
        let bytes = match read_marking_used(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CacheError::io(path, e)),
        };
        codec::decode(&bytes, registry).map(Some).map_err(|reason| {
            // Removal is best effort: if it fails, the next read fails the
            // same verification and tries again.
            let _ = fs::remove_file(&path);
            CacheError::Corrupt { path, reason }
        })
    }

    /// Writes `outputs` under `key`, atomically replacing any entry there.
    /// Returns false, writing nothing, if the outputs cannot be persisted.
    /// An entry larger than a quarter of the budget is refused (it would
    /// push out much else): the result stays in the memory tier only.
    pub fn put(&self, key: &CacheKey, outputs: &Outputs) -> Result<bool, CacheError> {
        let Some(bytes) = codec::encode(outputs)? else {
            return Ok(false);
        };
        self.put_encoded(key, &bytes)?;
        Ok(true)
    }

    /// Writes an entry already in the [`codec`] format under `key`,
    /// atomically replacing any entry there (the cache's writer encodes once
    /// for the disk and the shared tier). Refuses entries larger than a
    /// quarter of the budget, as [`DiskTier::put`] does.
    pub(crate) fn put_encoded(&self, key: &CacheKey, bytes: &[u8]) -> Result<(), CacheError> {
        if bytes.len() as u64 > self.budget / 4 {
            return Err(CacheError::TooLarge { size: bytes.len() as u64, budget: self.budget });
        }
        let path = self.entry_path(key);
        let folder = path.parent().unwrap_or(&self.objects);
        fs::create_dir_all(folder).map_err(|e| CacheError::io(folder, e))?;
        let temp = folder.join(format!(
            ".{key}.{}.{}.{TEMP_EXT}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = write_new(&temp, bytes).and_then(|()| fs::rename(&temp, &path)) {
            let _ = fs::remove_file(&temp);
            return Err(CacheError::io(path, e));
        }
        Ok(())
    }

    /// Number and total size of the entries (unreadable folders count as empty).
    pub fn stats(&self) -> DiskStats {
        let mut stats = DiskStats::default();
        for (path, len) in self.files().unwrap_or_default() {
            if has_ext(&path, ENTRY_EXT) {
                stats.entries += 1;
                stats.bytes += len;
            }
        }
        for (_, len) in memo_files(&self.memo_dir()) {
            stats.memo_files += 1;
            stats.memo_bytes += len;
        }
        stats
    }

    /// Deletes the least recently used entries and memo files while the
    /// folder holds more than its budget (see [`super::budget`]); returns
    /// what was removed. Files that vanish meanwhile (another process) are
    /// skipped.
    pub fn enforce_budget(&self) -> Result<DiskStats, CacheError> {
        let mut files: Vec<CachedFile> = Vec::new();
        let entries = self.files().map_err(|e| CacheError::io(&self.objects, e))?;
        for (path, len) in entries.into_iter().filter(|(p, _)| has_ext(p, ENTRY_EXT)) {
            files.push(cached_file(path, len));
        }
        let memo = self.memo_dir();
        files.extend(memo_files(&memo).into_iter().map(|(path, len)| cached_file(path, len)));
        let mut removed = DiskStats::default();
        for victim in budget::victims(files, self.budget) {
            match fs::remove_file(&victim.path) {
                Ok(()) if victim.path.starts_with(&memo) => {
                    removed.memo_files += 1;
                    removed.memo_bytes += victim.len;
                }
                Ok(()) => {
                    removed.entries += 1;
                    removed.bytes += victim.len;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::io(victim.path, e)),
            }
        }
        Ok(removed)
    }

    /// The folder of ops' own memos (see `OpContext::memo_dir`).
    pub fn memo_dir(&self) -> PathBuf {
        self.dir.join(crate::engine::MEMO_FOLDER)
    }

    /// Deletes every entry, leftover temporary files and the ops' memos;
    /// returns what the deleted files held.
    pub fn clear(&self) -> Result<DiskStats, CacheError> {
        let mut removed = DiskStats::default();
        for (path, len) in self.files().map_err(|e| CacheError::io(&self.objects, e))? {
            let is_entry = has_ext(&path, ENTRY_EXT);
            if !is_entry && !has_ext(&path, TEMP_EXT) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) if is_entry => {
                    removed.entries += 1;
                    removed.bytes += len;
                }
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::io(path, e)),
            }
        }
        let memo = self.memo_dir();
        for (_, len) in memo_files(&memo) {
            removed.memo_files += 1;
            removed.memo_bytes += len;
        }
        match fs::remove_dir_all(&memo) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CacheError::io(memo, e)),
        }
        Ok(removed)
    }

    /// Every file in the shard folders, with its size.
    fn files(&self) -> io::Result<Vec<(PathBuf, u64)>> {
        let mut files = Vec::new();
        for shard in fs::read_dir(&self.objects)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path())? {
                let file = file?;
                let meta = file.metadata()?;
                if meta.is_file() {
                    files.push((file.path(), meta.len()));
                }
            }
        }
        Ok(files)
    }
}

/// Every file below `dir` with its size (iterative; unreadable folders are
/// skipped).
fn memo_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => files.push((entry.path(), entry.metadata().map_or(0, |m| m.len()))),
                _ => {}
            }
        }
    }
    files
}

/// A file of the folder with its last use (its modification time).
fn cached_file(path: PathBuf, len: u64) -> CachedFile {
    let used = fs::metadata(&path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    CachedFile { path, len, used }
}

/// Creates `path` (which must not exist) with `bytes`. No fsync: the rename
/// that follows makes the entry appear whole to every process, and an entry
/// torn by a power loss fails its checksum on read and is recomputed, so
/// durability is not worth a device flush per node.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file: File = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::codec::tests::{assert_same_outputs, registry, sample, Doc};
    use crate::cache::error::DecodeError;
    use crate::value::Value;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    fn all_files(tier: &DiskTier) -> Vec<PathBuf> {
        tier.files().unwrap().into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn entries_round_trip_at_their_content_address() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path().join("cache")).unwrap();
        assert!(!tier.contains(&key(0xab)));
        assert!(tier.get(&key(0xab), &registry()).unwrap().is_none());
        assert!(tier.put(&key(0xab), &sample()).unwrap());
        assert!(tier.contains(&key(0xab)));
        let hex = key(0xab).to_hex();
        assert_eq!(
            tier.entry_path(&key(0xab)),
            dir.path()
                .join("cache/objects/ab")
                .join(format!("{hex}.fv"))
        );
        let back = tier.get(&key(0xab), &registry()).unwrap().unwrap();
        assert_same_outputs(&sample(), &back);
    }

    #[test]
    fn unpersistable_outputs_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap();
        let out = Outputs::single("doc", Value::Object(Arc::new(Doc(None))));
        assert!(!tier.put(&key(1), &out).unwrap());
        assert!(!tier.contains(&key(1)));
        assert!(all_files(&tier).is_empty());
    }

    fn corrupt_then_get(damage: impl Fn(&mut Vec<u8>)) -> DecodeError {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap();
        tier.put(&key(7), &sample()).unwrap();
        let path = tier.entry_path(&key(7));
        let mut bytes = fs::read(&path).unwrap();
        damage(&mut bytes);
        fs::write(&path, bytes).unwrap();
        let err = tier.get(&key(7), &registry()).unwrap_err();
        assert!(!path.exists(), "a corrupt entry must be deleted");
        assert!(tier.get(&key(7), &registry()).unwrap().is_none());
        match err {
            CacheError::Corrupt {
                path: reported,
                reason,
            } => {
                assert_eq!(reported, path);
                reason
            }
            other => panic!("expected Corrupt, got {other}"),
        }
    }

    #[test]
    fn a_flipped_byte_is_reported_and_removed() {
        let reason = corrupt_then_get(|b| {
            let mid = b.len() / 2;
            b[mid] ^= 1;
        });
        assert!(matches!(reason, DecodeError::HashMismatch), "{reason}");
    }

    #[test]
    fn a_truncated_entry_is_reported_and_removed() {
        let reason = corrupt_then_get(|b| b.truncate(b.len() - 3));
        assert!(matches!(reason, DecodeError::HashMismatch), "{reason}");
        let reason = corrupt_then_get(|b| b.truncate(10));
        assert!(
            matches!(reason, DecodeError::Truncated { len: 10, .. }),
            "{reason}"
        );
        let reason = corrupt_then_get(Vec::clear);
        assert!(
            matches!(reason, DecodeError::Truncated { len: 0, .. }),
            "{reason}"
        );
    }

    #[test]
    fn concurrent_writes_leave_only_whole_entries() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let tier = &tier;
                s.spawn(move || {
                    for i in 0..10u8 {
                        assert!(tier.put(&key(i % 3 + t % 2 * 16), &sample()).unwrap());
                    }
                });
            }
        });
        let files = all_files(&tier);
        assert!(
            files.iter().all(|p| has_ext(p, ENTRY_EXT)),
            "temporary files left: {files:?}"
        );
        assert_eq!(tier.stats().entries, 6);
        for k in [0, 1, 2, 16, 17, 18] {
            assert_same_outputs(&sample(), &tier.get(&key(k), &registry()).unwrap().unwrap());
        }
    }

    #[test]
    fn clear_empties_and_reports_what_it_removed() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap();
        for i in 0..5 {
            tier.put(&key(i), &Outputs::single("n", Value::Int(i.into())))
                .unwrap();
        }
        let leftover = tier.entry_path(&key(0)).with_extension(TEMP_EXT);
        fs::write(&leftover, b"partial").unwrap();
        let before = tier.stats();
        assert_eq!(before.entries, 5);
        assert!(before.bytes > 0);
        assert_eq!(tier.clear().unwrap(), before);
        assert_eq!(tier.stats(), DiskStats::default());
        assert!(all_files(&tier).is_empty());
        assert!(!tier.contains(&key(0)));
    }
}
