//! The disk tier: one file per entry at `objects/<first 2 hex>/<hex>.fv`
//! under the cache folder, in the [`codec`] format.
//!
//! Writes go to a temporary file in the entry's folder that is then renamed
//! over the final name, so a reader sees a whole entry or none. Every read is
//! verified; an entry that fails verification is deleted and reported. The
//! folder keeps within a byte budget (see [`super::budget`]): a hit
//! refreshes an entry's modification time, and [`DiskTier::enforce_budget`]
//! deletes the least recently used files when there are too many bytes.
//!
//! # Knowing the folder's size without listing it
//!
//! Listing and statting every file costs time in proportion to the cache,
//! too much to do after every run of a long-lived server. So a tier keeps a
//! running total of the folder's bytes: it is taken by a scan (lazily, at the
//! first [`DiskTier::enforce_budget`]) and then kept up to date by every
//! write and removal this tier makes. Bytes it cannot see being written
//! (entries of other processes sharing the folder, ops' memo files) are
//! picked up by a rescan, which `enforce_budget` makes when
//!
//! - the running total exceeds the budget (the scan then also finds what to
//!   evict, as before: least recently used by modification time, memos
//!   included), or
//! - [`RESCAN_AFTER_PUTS`] entries were written since the last scan, or
//! - [`RESCAN_AFTER`] has passed since the last scan.
//!
//! So the folder may exceed its budget by what others wrote since the last
//! scan, for at most [`RESCAN_AFTER`] (or until this tier's own writes fill
//! the budget); otherwise an enforcement costs no file system access.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

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

/// [`DiskTier::enforce_budget`] rescans the folder once this many entries
/// were written since the last scan, even under budget.
pub const RESCAN_AFTER_PUTS: u64 = 1024;

/// [`DiskTier::enforce_budget`] rescans the folder once this long has passed
/// since the last scan, even under budget (to see what other processes and
/// ops' memos added).
pub const RESCAN_AFTER: Duration = Duration::from_secs(60);

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
    /// The running total of the folder's bytes (see the module's doc).
    usage: Mutex<Usage>,
    /// Held by [`DiskTier::enforce_budget`], so that a process scans and
    /// evicts once at a time.
    enforcing: Mutex<()>,
    /// When to rescan although the running total is under budget.
    rescan_after_puts: u64,
    rescan_after: Duration,
    /// Scans made by [`DiskTier::enforce_budget`].
    #[cfg(test)]
    scans: std::sync::atomic::AtomicUsize,
}

/// What a [`DiskTier`] knows of its folder's size.
#[derive(Debug, Default)]
struct Usage {
    /// Bytes of entries and memo files: the last scan's count, plus what
    /// this tier wrote, less what it removed since. `None` before the first
    /// scan (and after [`DiskTier::clear`]).
    bytes: Option<u64>,
    /// Bytes written while a scan runs (`Some` only then): the scan may have
    /// missed those files, so they are added to its count (a file it did see
    /// is then counted twice, which only brings the next rescan closer).
    written_during_scan: Option<u64>,
    /// Entries written since the last scan.
    puts_since_scan: u64,
    /// When the last scan ended.
    scanned_at: Option<Instant>,
}

impl DiskTier {
    /// Opens the cache folder `dir`, creating `dir/objects/` if needed, with
    /// the default budget ([`budget::DEFAULT_DISK_BUDGET`]).
    pub fn open(dir: impl Into<PathBuf>) -> Result<DiskTier, CacheError> {
        let dir = dir.into();
        let objects = dir.join("objects");
        fs::create_dir_all(&objects).map_err(|e| CacheError::io(&objects, e))?;
        Ok(DiskTier {
            dir,
            objects,
            budget: budget::DEFAULT_DISK_BUDGET,
            usage: Mutex::new(Usage::default()),
            enforcing: Mutex::new(()),
            rescan_after_puts: RESCAN_AFTER_PUTS,
            rescan_after: RESCAN_AFTER,
            #[cfg(test)]
            scans: Default::default(),
        })
    }

    /// Rescans after `puts` written entries or `after` since the last scan,
    /// instead of [`RESCAN_AFTER_PUTS`] and [`RESCAN_AFTER`] (for tests).
    #[cfg(test)]
    pub(crate) fn with_rescans(mut self, puts: u64, after: Duration) -> DiskTier {
        self.rescan_after_puts = puts;
        self.rescan_after = after;
        self
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
            if fs::remove_file(&path).is_ok() {
                self.removed(bytes.len() as u64);
            }
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
        // The entry it replaces, if any, no longer counts.
        let replaced = fs::metadata(&path).map_or(0, |m| if m.is_file() { m.len() } else { 0 });
        let temp = folder.join(format!(
            ".{key}.{}.{}.{TEMP_EXT}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = write_new(&temp, bytes).and_then(|()| fs::rename(&temp, &path)) {
            let _ = fs::remove_file(&temp);
            return Err(CacheError::io(path, e));
        }
        self.written(bytes.len() as u64, replaced);
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
    ///
    /// The folder is listed only when the running total says it is over
    /// budget, or for the first or a periodic rescan (see the module's doc);
    /// otherwise this returns at once, having removed nothing.
    pub fn enforce_budget(&self) -> Result<DiskStats, CacheError> {
        let _one_at_a_time = self.enforcing.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.needs_scan() {
            return Ok(DiskStats::default());
        }
        self.usage().written_during_scan = Some(0);
        let result = self.scan_and_evict();
        let mut usage = self.usage();
        let written = usage.written_during_scan.take().unwrap_or(0);
        let (left, removed) = result?;
        usage.bytes = Some(left + written);
        usage.puts_since_scan = 0;
        usage.scanned_at = Some(Instant::now());
        Ok(removed)
    }

    /// Whether [`DiskTier::enforce_budget`] must list the folder.
    fn needs_scan(&self) -> bool {
        let usage = self.usage();
        match (usage.bytes, usage.scanned_at) {
            (Some(bytes), Some(at)) => {
                bytes > self.budget
                    || usage.puts_since_scan >= self.rescan_after_puts
                    || at.elapsed() >= self.rescan_after
            }
            _ => true,
        }
    }

    /// Lists the folder and evicts down to the budget; returns the bytes
    /// left and what was removed.
    fn scan_and_evict(&self) -> Result<(u64, DiskStats), CacheError> {
        #[cfg(test)]
        self.scans.fetch_add(1, Ordering::SeqCst);
        let mut files: Vec<CachedFile> = Vec::new();
        let entries = self.files().map_err(|e| CacheError::io(&self.objects, e))?;
        for (path, len) in entries.into_iter().filter(|(p, _)| has_ext(p, ENTRY_EXT)) {
            files.push(cached_file(path, len));
        }
        let memo = self.memo_dir();
        files.extend(memo_files(&memo).into_iter().map(|(path, len)| cached_file(path, len)));
        let mut left: u64 = files.iter().map(|f| f.len).sum();
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
            left -= victim.len;
        }
        Ok((left, removed))
    }

    /// Records an entry of `bytes` written over one of `replaced` bytes.
    fn written(&self, bytes: u64, replaced: u64) {
        let mut usage = self.usage();
        if let Some(total) = &mut usage.bytes {
            *total = total.saturating_sub(replaced) + bytes;
        }
        if let Some(during) = &mut usage.written_during_scan {
            *during += bytes;
        }
        usage.puts_since_scan += 1;
    }

    /// Records the removal of a file of `bytes`.
    fn removed(&self, bytes: u64) {
        if let Some(total) = &mut self.usage().bytes {
            *total = total.saturating_sub(bytes);
        }
    }

    fn usage(&self) -> MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The running total of the folder's bytes, if known.
    #[cfg(test)]
    pub(crate) fn known_bytes(&self) -> Option<u64> {
        self.usage().bytes
    }

    /// How many times [`DiskTier::enforce_budget`] listed the folder.
    #[cfg(test)]
    pub(crate) fn scans(&self) -> usize {
        self.scans.load(Ordering::SeqCst)
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
        // Other processes may have written meanwhile: count afresh.
        *self.usage() = Usage::default();
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
    use std::time::Duration;

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

    /// A text entry of about `kib` KiB.
    fn entry(kib: usize) -> Outputs {
        Outputs::single("text", Value::text("x".repeat(kib << 10)))
    }

    fn entry_len(kib: usize) -> u64 {
        codec::encode(&entry(kib)).unwrap().unwrap().len() as u64
    }

    /// Sets the last use of `key`'s entry to `age_s` seconds ago.
    fn age(tier: &DiskTier, key: &CacheKey, age_s: u64) {
        let file = File::options().write(true).open(tier.entry_path(key)).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age_s)).unwrap();
    }

    /// The bytes of the folder's entries and memos, listed.
    fn listed(tier: &DiskTier) -> u64 {
        let s = tier.stats();
        s.bytes + s.memo_bytes
    }

    #[test]
    fn enforcing_far_under_budget_does_not_list_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap().with_budget(1 << 30);
        tier.put(&key(1), &entry(1)).unwrap();
        assert_eq!(tier.scans(), 0, "opening and writing list nothing");
        // The first enforcement counts what is there.
        assert_eq!(tier.enforce_budget().unwrap(), DiskStats::default());
        assert_eq!(tier.scans(), 1);
        assert_eq!(tier.known_bytes(), Some(listed(&tier)));
        for i in 2..50 {
            tier.put(&key(i), &entry(1)).unwrap();
            assert_eq!(tier.enforce_budget().unwrap(), DiskStats::default());
        }
        // Replacing an entry and removing a corrupt one keep the count right.
        tier.put(&key(2), &entry(3)).unwrap();
        let mut bytes = fs::read(tier.entry_path(&key(3))).unwrap();
        bytes[40] ^= 1;
        fs::write(tier.entry_path(&key(3)), bytes).unwrap();
        assert!(tier.get(&key(3), &registry()).is_err());
        tier.enforce_budget().unwrap();
        assert_eq!(tier.scans(), 1, "no listing while far under budget");
        assert_eq!(tier.known_bytes(), Some(listed(&tier)));
        // After a clear, the next enforcement counts afresh.
        tier.clear().unwrap();
        assert_eq!(tier.known_bytes(), None);
        tier.enforce_budget().unwrap();
        assert_eq!(tier.scans(), 2);
        assert_eq!(tier.known_bytes(), Some(0));
    }

    #[test]
    fn exceeding_the_budget_evicts_the_least_recently_used_including_other_tiers_files() {
        let dir = tempfile::tempdir().unwrap();
        let len = entry_len(4);
        let budget = 10 * len + len / 2;
        let ours = DiskTier::open(dir.path()).unwrap().with_budget(budget);
        let other = DiskTier::open(dir.path()).unwrap().with_budget(budget);
        ours.enforce_budget().unwrap();
        assert_eq!(ours.known_bytes(), Some(0));
        // Another process writes 6 entries, used long ago.
        for i in 0..6 {
            other.put(&key(100 + i), &entry(4)).unwrap();
            age(&other, &key(100 + i), 3_600 - u64::from(i));
        }
        // We write 10: by our own count that is within the budget, so the
        // folder (16 entries) is not listed yet.
        for i in 0..10 {
            ours.put(&key(i), &entry(4)).unwrap();
            age(&ours, &key(i), 100 - u64::from(i));
        }
        assert_eq!(ours.enforce_budget().unwrap(), DiskStats::default());
        assert_eq!(ours.scans(), 1);
        // The 11th passes the budget: the listing finds the other's entries
        // too and evicts the least recently used down to the low-water mark
        // (90% of the budget: 9 entries left).
        ours.put(&key(10), &entry(4)).unwrap();
        let removed = ours.enforce_budget().unwrap();
        assert_eq!(ours.scans(), 2);
        assert_eq!(removed.entries, 8);
        assert_eq!(removed.bytes, 8 * len);
        for i in 0..6 {
            assert!(!ours.contains(&key(100 + i)), "the other's old entries go first");
        }
        assert!(!ours.contains(&key(0)) && !ours.contains(&key(1)));
        for i in 2..11 {
            assert!(ours.contains(&key(i)), "entry {i} is recent");
        }
        assert_eq!(ours.known_bytes(), Some(9 * len));
        assert_eq!(listed(&ours), 9 * len);
        assert!(listed(&ours) <= (budget as f64 * budget::LOW_WATER) as u64);
    }

    #[test]
    fn a_periodic_rescan_sees_what_others_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let len = entry_len(4);
        let budget = 10 * len;
        let open = || DiskTier::open(dir.path()).unwrap().with_budget(budget);
        // Rescans after 3 puts.
        let ours = open().with_rescans(3, RESCAN_AFTER);
        ours.enforce_budget().unwrap();
        let other = open();
        for i in 0..12 {
            other.put(&key(100 + i), &entry(4)).unwrap();
            age(&other, &key(100 + i), 1_000 - u64::from(i));
        }
        // An op's memo file counts too.
        let memo = ours.memo_dir().join("op/m.bin");
        fs::create_dir_all(memo.parent().unwrap()).unwrap();
        fs::write(&memo, vec![0u8; len as usize]).unwrap();
        ours.put(&key(0), &entry(4)).unwrap();
        ours.put(&key(1), &entry(4)).unwrap();
        assert_eq!(ours.enforce_budget().unwrap(), DiskStats::default());
        assert_eq!(ours.scans(), 1);
        ours.put(&key(2), &entry(4)).unwrap();
        let removed = ours.enforce_budget().unwrap();
        assert_eq!(ours.scans(), 2);
        assert!(removed.entries >= 6, "{removed:?}");
        assert!(listed(&ours) <= (budget as f64 * budget::LOW_WATER) as u64);
        assert_eq!(ours.known_bytes(), Some(listed(&ours)));
        for i in 0..3 {
            assert!(ours.contains(&key(i)), "our entries are the newest");
        }
        // And a rescan after some time: here at once.
        let timed = open().with_rescans(u64::MAX, Duration::ZERO);
        timed.enforce_budget().unwrap();
        timed.enforce_budget().unwrap();
        assert_eq!(timed.scans(), 2);
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
