//! The content-addressed cache of node outputs (DESIGN.md §5).
//!
//! A [`Cache`] has a memory tier ([`MemoryTier`]: shared values within a byte
//! budget) and an optional disk tier ([`DiskTier`]: verified, atomically
//! written entries that persist across processes). Keys are built with a
//! [`KeyHasher`].

mod budget;
pub mod codec;
mod config;
mod disk;
mod error;
mod key;
mod memory;
mod raw;
mod writer;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use budget::DEFAULT_DISK_BUDGET;
pub use config::{
    default_cache_dir, default_disk_budget, default_memory_budget, default_vram_budget, parse_bytes, DEFAULT_MEMORY_BUDGET,
    DEFAULT_VRAM_BUDGET,
};
pub use disk::{DiskStats, DiskTier};
pub use error::{CacheError, DecodeError};
pub use key::{CacheKey, KeyHasher};
pub use memory::{MemoryStats, MemoryTier};

use crate::op::Outputs;
use crate::registry::Registry;
use writer::DiskWriter;

/// The result of [`Cache::lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// Found in memory.
    Memory(Outputs),
    /// Loaded from disk (and now also held in memory).
    Disk(Outputs),
    /// No entry.
    Miss,
    /// A disk entry was found but cannot be used (corrupt, truncated,
    /// undecodable or unreadable); it was deleted when possible and the node
    /// must be recomputed. The text says why.
    Corrupt(String),
}

/// Where [`Cache::probe`] found an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// In the memory tier.
    Memory,
    /// In the disk tier (present, not yet verified).
    Disk,
}

/// Memory and disk tiers together. Disk writes happen on a background
/// thread; [`Cache::flush`] waits for them, and dropping the cache does too.
pub struct Cache {
    memory: Mutex<MemoryTier>,
    disk: Option<Arc<DiskTier>>,
    writer: Option<DiskWriter>,
}

impl Cache {
    /// A cache with `memory_budget` bytes of memory and, if given, a disk tier.
    pub fn new(memory_budget: usize, disk: Option<DiskTier>) -> Cache {
        let disk = disk.map(Arc::new);
        let writer = disk.as_ref().map(|d| DiskWriter::spawn(Arc::clone(d)));
        Cache {
            memory: Mutex::new(MemoryTier::new(memory_budget)),
            disk,
            writer,
        }
    }

    /// The same cache with `bytes` as the memory tier's budget of GPU memory.
    pub fn with_vram_budget(self, bytes: usize) -> Cache {
        self.memory().set_vram_budget(bytes);
        self
    }

    /// Drops the memory tier's entries holding GPU memory; returns how many.
    pub fn release_vram(&self) -> usize {
        self.memory().release_vram()
    }

    /// The outputs under `key`: from memory, else from disk (verified, then
    /// promoted into memory).
    pub fn lookup(&self, key: &CacheKey, registry: &Registry) -> Lookup {
        if let Some(outputs) = self.memory().get(key) {
            return Lookup::Memory(outputs);
        }
        let Some(disk) = &self.disk else {
            return Lookup::Miss;
        };
        let start = Instant::now();
        match disk.get(key, registry) {
            Ok(Some(outputs)) => {
                // Reloading from disk is what evicting it from memory costs.
                self.memory().put(*key, outputs.clone(), start.elapsed());
                Lookup::Disk(outputs)
            }
            Ok(None) => Lookup::Miss,
            Err(e) => Lookup::Corrupt(e.to_string()),
        }
    }

    /// Which tier holds `key`, without loading or verifying anything (for
    /// `flow plan`).
    pub fn probe(&self, key: &CacheKey) -> Option<Tier> {
        if self.memory().contains(key) {
            Some(Tier::Memory)
        } else if self.disk.as_ref().is_some_and(|d| d.contains(key)) {
            Some(Tier::Disk)
        } else {
            None
        }
    }

    /// Stores `outputs`, which took `cost` to compute: in memory now, and on
    /// disk in the background.
    pub fn put(&self, key: CacheKey, outputs: Outputs, cost: Duration) {
        if let Some(writer) = &self.writer {
            writer.enqueue(key, outputs.clone());
        }
        self.memory().put(key, outputs, cost);
    }

    /// Waits for every queued disk write; returns the failures since the last
    /// flush, as warnings (a failed write only costs a later recompute).
    pub fn flush(&self) -> Vec<String> {
        self.writer
            .as_ref()
            .map(DiskWriter::flush)
            .unwrap_or_default()
    }

    /// What the memory tier holds.
    pub fn memory_stats(&self) -> MemoryStats {
        self.memory().stats()
    }

    /// The disk tier, if any.
    pub fn disk(&self) -> Option<&DiskTier> {
        self.disk.as_deref()
    }

    fn memory(&self) -> MutexGuard<'_, MemoryTier> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::codec::tests::{assert_same_outputs, registry, sample};
    use super::*;
    use crate::value::Value;

    const MS: Duration = Duration::from_millis(1);

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    fn disk_cache(dir: &std::path::Path) -> Cache {
        Cache::new(1 << 20, Some(DiskTier::open(dir).unwrap()))
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Cache>();
    }

    #[test]
    fn memory_only_cache_hits_and_misses() {
        let cache = Cache::new(1 << 20, None);
        assert!(matches!(cache.lookup(&key(1), &registry()), Lookup::Miss));
        cache.put(key(1), sample(), MS);
        assert_eq!(cache.probe(&key(1)), Some(Tier::Memory));
        assert_eq!(cache.probe(&key(2)), None);
        match cache.lookup(&key(1), &registry()) {
            Lookup::Memory(out) => assert_same_outputs(&sample(), &out),
            other => panic!("{other:?}"),
        }
        assert!(cache.flush().is_empty());
        assert!(cache.disk().is_none());
    }

    #[test]
    fn entries_persist_across_caches_and_are_promoted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = disk_cache(dir.path());
            cache.put(key(3), sample(), MS);
            assert!(cache.flush().is_empty());
            assert_eq!(cache.disk().unwrap().stats().entries, 1);
        }
        let cache = disk_cache(dir.path());
        assert_eq!(cache.probe(&key(3)), Some(Tier::Disk));
        match cache.lookup(&key(3), &registry()) {
            Lookup::Disk(out) => assert_same_outputs(&sample(), &out),
            other => panic!("{other:?}"),
        }
        assert_eq!(cache.probe(&key(3)), Some(Tier::Memory));
        assert_eq!(cache.memory_stats().entries, 1);
        assert!(matches!(
            cache.lookup(&key(3), &registry()),
            Lookup::Memory(_)
        ));
    }

    #[test]
    fn corrupt_disk_entries_are_reported_then_missing() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTier::open(dir.path()).unwrap();
        disk.put(&key(4), &sample()).unwrap();
        let path = disk.entry_path(&key(4));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let cache = Cache::new(1 << 20, Some(disk));
        match cache.lookup(&key(4), &registry()) {
            Lookup::Corrupt(why) => assert!(why.contains("hash mismatch"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(cache.lookup(&key(4), &registry()), Lookup::Miss));
    }

    #[test]
    fn failed_background_writes_become_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let cache = disk_cache(dir.path());
        // A file where the entry's shard folder should be makes the write fail.
        let shard = cache.disk().unwrap().entry_path(&key(5));
        fs::write(shard.parent().unwrap(), b"in the way").unwrap();
        cache.put(key(5), sample(), MS);
        cache.put(key(6), sample(), MS);
        let warnings = cache.flush();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains(&key(5).to_hex()), "{warnings:?}");
        assert!(cache.flush().is_empty());
        assert_eq!(cache.probe(&key(6)), Some(Tier::Memory));
        assert!(cache.disk().unwrap().contains(&key(6)));
    }

    #[test]
    fn many_threads_share_one_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = disk_cache(dir.path());
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..25u8 {
                        let k = key(t * 25 + i);
                        cache.put(k, Outputs::single("n", Value::Int(i64::from(i))), MS);
                        assert!(matches!(cache.lookup(&k, &registry()), Lookup::Memory(_)));
                    }
                });
            }
        });
        assert!(cache.flush().is_empty());
        assert_eq!(cache.disk().unwrap().stats().entries, 100);
    }
}
