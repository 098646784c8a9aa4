//! The content-addressed cache of node outputs (DESIGN.md §5).
//!
//! A [`Cache`] has a memory tier ([`MemoryTier`]: shared values within a byte
//! budget), an optional disk tier ([`DiskTier`]: verified, atomically
//! written entries that persist across processes) and an optional shared
//! tier ([`SharedTier`]: entries shared by several machines, DESIGN.md §12).
//! Keys are built with a [`KeyHasher`].

mod budget;
pub mod codec;
mod config;
mod disk;
mod error;
mod key;
mod memory;
mod raw;
mod shared;
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
pub use shared::SharedTier;

use crate::op::Outputs;
use crate::registry::Registry;
use writer::EntryWriter;

/// The result of [`Cache::lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// Found in memory.
    Memory(Outputs),
    /// Loaded from disk (and now also held in memory).
    Disk(Outputs),
    /// Fetched from the shared tier (and now also held in memory, and being
    /// written to the disk tier in the background).
    Shared(Outputs),
    /// No entry.
    Miss,
    /// An entry was found but cannot be used (corrupt, truncated,
    /// undecodable or unreadable), or the shared tier could not be read; the
    /// node must be recomputed. A bad disk entry is deleted when possible; a
    /// bad shared entry is left for the recomputed one to replace. The text
    /// says why.
    Corrupt(String),
}

/// Where [`Cache::probe`] found an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// In the memory tier.
    Memory,
    /// In the disk tier (present, not yet verified).
    Disk,
    /// In the shared tier only (present, not yet fetched nor verified).
    Shared,
}

/// Memory, disk and shared tiers together. Disk and shared writes happen on
/// a background thread as entries are stored; [`Cache::flush`] waits for
/// them, and dropping the cache does too.
pub struct Cache {
    memory: Mutex<MemoryTier>,
    disk: Option<Arc<DiskTier>>,
    shared: Option<Arc<dyn SharedTier>>,
    writer: Option<EntryWriter>,
}

impl Cache {
    /// A cache with `memory_budget` bytes of memory and, if given, a disk tier.
    pub fn new(memory_budget: usize, disk: Option<DiskTier>) -> Cache {
        let disk = disk.map(Arc::new);
        let writer = disk.as_ref().map(|d| EntryWriter::spawn(Some(Arc::clone(d)), None));
        Cache { memory: Mutex::new(MemoryTier::new(memory_budget)), disk, shared: None, writer }
    }

    /// The same cache with `bytes` as the memory tier's budget of GPU memory.
    pub fn with_vram_budget(self, bytes: usize) -> Cache {
        self.memory().set_vram_budget(bytes);
        self
    }

    /// The same cache with `tier` as its shared tier, behind memory and disk
    /// (replacing any shared tier it had). Entries stored from now on are
    /// also written there, in the background.
    pub fn with_shared(mut self, tier: Arc<dyn SharedTier>) -> Cache {
        // A new writer thread for the new set of tiers; the old one finishes
        // what it was given first, and its warnings are kept.
        let pending = self.writer.take().map(|w| w.flush()).unwrap_or_default();
        let writer = EntryWriter::spawn(self.disk.clone(), Some(Arc::clone(&tier)));
        writer.add_warnings(pending);
        self.writer = Some(writer);
        self.shared = Some(tier);
        self
    }

    /// An empty cache with this one's budgets and disk tier, and `tier` as
    /// its shared tier (for an engine whose cache is still held by a
    /// finishing run, so that [`Cache::with_shared`] cannot take it).
    pub(crate) fn sibling_with_shared(&self, tier: Arc<dyn SharedTier>) -> Cache {
        let stats = self.memory_stats();
        let mut cache = Cache::new(stats.budget, None).with_vram_budget(stats.vram_budget);
        cache.disk = self.disk.clone();
        cache.with_shared(tier)
    }

    /// Drops the memory tier's entries holding GPU memory; returns how many.
    pub fn release_vram(&self) -> usize {
        self.memory().release_vram()
    }

    /// The outputs under `key`: from memory, else from disk (verified, then
    /// promoted into memory), else from the shared tier (verified, then
    /// promoted into memory and written to disk in the background).
    ///
    /// A corrupt disk entry is deleted and the shared tier asked next: when
    /// it has the entry, the disk entry is rewritten from it and the lookup
    /// is a [`Lookup::Shared`] hit.
    pub fn lookup(&self, key: &CacheKey, registry: &Registry) -> Lookup {
        if let Some(outputs) = self.memory().get(key) {
            return Lookup::Memory(outputs);
        }
        let mut disk_error = None;
        if let Some(disk) = &self.disk {
            let start = Instant::now();
            match disk.get(key, registry) {
                Ok(Some(outputs)) => {
                    // Reloading from disk is what evicting it from memory costs.
                    self.memory().put(*key, outputs.clone(), start.elapsed());
                    return Lookup::Disk(outputs);
                }
                Ok(None) => {}
                Err(e) => disk_error = Some(e.to_string()),
            }
        }
        let missing = || disk_error.clone().map_or(Lookup::Miss, Lookup::Corrupt);
        let Some(shared) = &self.shared else {
            return missing();
        };
        let start = Instant::now();
        let bytes = match shared.get(key) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return missing(),
            Err(e) => return Lookup::Corrupt(format!("the shared cache tier could not be read for {key}: {e}")),
        };
        match codec::decode(&bytes, registry) {
            Ok(outputs) => {
                // Fetching it again is what evicting it from memory costs.
                self.memory().put(*key, outputs.clone(), start.elapsed());
                if let (Some(writer), Some(_)) = (&self.writer, &self.disk) {
                    writer.enqueue_encoded(*key, bytes);
                }
                Lookup::Shared(outputs)
            }
            Err(reason) => Lookup::Corrupt(format!("corrupt shared cache entry {key}: {reason}")),
        }
    }

    /// Which tier holds `key`, without loading or verifying anything (for
    /// `flow plan`).
    pub fn probe(&self, key: &CacheKey) -> Option<Tier> {
        if self.memory().contains(key) {
            Some(Tier::Memory)
        } else if self.disk.as_ref().is_some_and(|d| d.contains(key)) {
            Some(Tier::Disk)
        } else if self.shared.as_ref().is_some_and(|s| s.contains(key)) {
            Some(Tier::Shared)
        } else {
            None
        }
    }

    /// Stores `outputs`, which took `cost` to compute: in memory now, and on
    /// disk and in the shared tier in the background (started at once, so
    /// that they are there even if the process dies before the run ends).
    pub fn put(&self, key: CacheKey, outputs: Outputs, cost: Duration) {
        if let Some(writer) = &self.writer {
            writer.enqueue(key, outputs.clone());
        }
        self.memory().put(key, outputs, cost);
    }

    /// Waits for every queued disk and shared-tier write; returns the
    /// failures since the last flush, as warnings (a failed write only costs
    /// a later recompute).
    pub fn flush(&self) -> Vec<String> {
        self.writer.as_ref().map(EntryWriter::flush).unwrap_or_default()
    }

    /// What the memory tier holds.
    pub fn memory_stats(&self) -> MemoryStats {
        self.memory().stats()
    }

    /// The disk tier, if any.
    pub fn disk(&self) -> Option<&DiskTier> {
        self.disk.as_deref()
    }

    /// The shared tier, if any.
    pub fn shared(&self) -> Option<&Arc<dyn SharedTier>> {
        self.shared.as_ref()
    }

    fn memory(&self) -> MutexGuard<'_, MemoryTier> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::fs;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

    /// A shared tier in memory that counts its calls.
    #[derive(Default)]
    pub(crate) struct MapTier {
        pub(crate) entries: Mutex<HashMap<CacheKey, Vec<u8>>>,
        pub(crate) gets: AtomicUsize,
        pub(crate) contains: AtomicUsize,
        pub(crate) puts: AtomicUsize,
        /// Makes every `put` fail.
        pub(crate) failing: AtomicBool,
    }

    impl MapTier {
        pub(crate) fn new() -> Arc<MapTier> {
            Arc::new(MapTier::default())
        }

        pub(crate) fn bytes(&self, key: &CacheKey) -> Option<Vec<u8>> {
            self.entries.lock().unwrap().get(key).cloned()
        }

        pub(crate) fn insert(&self, key: CacheKey, outputs: &Outputs) {
            let bytes = codec::encode(outputs).unwrap().unwrap();
            self.entries.lock().unwrap().insert(key, bytes);
        }

        pub(crate) fn count(counter: &AtomicUsize) -> usize {
            counter.load(Ordering::SeqCst)
        }
    }

    impl SharedTier for MapTier {
        fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, String> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            Ok(self.bytes(key))
        }

        fn contains(&self, key: &CacheKey) -> bool {
            self.contains.fetch_add(1, Ordering::SeqCst);
            self.entries.lock().unwrap().contains_key(key)
        }

        fn put(&self, key: &CacheKey, bytes: &[u8]) -> Result<(), String> {
            self.puts.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err("the store is unreachable".into());
            }
            self.entries.lock().unwrap().insert(*key, bytes.to_vec());
            Ok(())
        }
    }

    fn count(counter: &AtomicUsize) -> usize {
        MapTier::count(counter)
    }

    fn shared_cache(dir: &std::path::Path, tier: &Arc<MapTier>) -> Cache {
        disk_cache(dir).with_shared(Arc::clone(tier) as Arc<dyn SharedTier>)
    }

    #[test]
    fn lookups_go_memory_then_disk_then_shared() {
        let dir = tempfile::tempdir().unwrap();
        let tier = MapTier::new();
        let in_memory = Outputs::single("n", Value::Int(1));
        let on_disk = Outputs::single("n", Value::Int(2));
        let shared_only = Outputs::single("n", Value::Int(3));
        // Key 1 is in every tier, key 2 on disk and shared, key 3 shared
        // only; each tier holds its own value.
        for k in [1, 2, 3] {
            tier.insert(key(k), &shared_only);
        }
        let disk = DiskTier::open(dir.path()).unwrap();
        disk.put(&key(1), &on_disk).unwrap();
        disk.put(&key(2), &on_disk).unwrap();
        let cache = Cache::new(1 << 20, Some(disk)).with_shared(Arc::clone(&tier) as Arc<dyn SharedTier>);
        cache.memory().put(key(1), in_memory.clone(), MS);

        assert_eq!(cache.probe(&key(1)), Some(Tier::Memory));
        assert_eq!(cache.probe(&key(2)), Some(Tier::Disk));
        assert_eq!(count(&tier.contains), 0, "probes stop at the first tier that has the key");
        assert_eq!(cache.probe(&key(3)), Some(Tier::Shared));
        assert_eq!(cache.probe(&key(4)), None);
        assert_eq!(count(&tier.contains), 2);

        match cache.lookup(&key(1), &registry()) {
            Lookup::Memory(out) => assert_same_outputs(&in_memory, &out),
            other => panic!("{other:?}"),
        }
        match cache.lookup(&key(2), &registry()) {
            Lookup::Disk(out) => assert_same_outputs(&on_disk, &out),
            other => panic!("{other:?}"),
        }
        assert_eq!(count(&tier.gets), 0, "local hits never ask the shared tier");
        match cache.lookup(&key(3), &registry()) {
            Lookup::Shared(out) => assert_same_outputs(&shared_only, &out),
            other => panic!("{other:?}"),
        }
        assert!(matches!(cache.lookup(&key(4), &registry()), Lookup::Miss));
        assert_eq!(count(&tier.gets), 2);
        assert!(cache.flush().is_empty());
        assert_eq!(count(&tier.puts), 0, "lookups write nothing back to the shared tier");
    }

    #[test]
    fn shared_hits_are_promoted_into_memory_and_onto_disk() {
        let dir = tempfile::tempdir().unwrap();
        let tier = MapTier::new();
        tier.insert(key(7), &sample());
        let cache = shared_cache(dir.path(), &tier);
        match cache.lookup(&key(7), &registry()) {
            Lookup::Shared(out) => assert_same_outputs(&sample(), &out),
            other => panic!("{other:?}"),
        }
        assert_eq!(cache.probe(&key(7)), Some(Tier::Memory));
        assert!(matches!(cache.lookup(&key(7), &registry()), Lookup::Memory(_)));
        assert!(cache.flush().is_empty());
        assert_eq!(count(&tier.gets), 1);
        assert_eq!(count(&tier.puts), 0);
        // The disk copy is the shared one, byte for byte, and serves the next process.
        assert_eq!(fs::read(cache.disk().unwrap().entry_path(&key(7))).unwrap(), tier.bytes(&key(7)).unwrap());
        drop(cache);
        let local = disk_cache(dir.path());
        match local.lookup(&key(7), &registry()) {
            Lookup::Disk(out) => assert_same_outputs(&sample(), &out),
            other => panic!("{other:?}"),
        }
        // Without a disk tier, a shared hit lands in memory only.
        let memory_only = Cache::new(1 << 20, None).with_shared(Arc::clone(&tier) as Arc<dyn SharedTier>);
        assert!(matches!(memory_only.lookup(&key(7), &registry()), Lookup::Shared(_)));
        assert_eq!(memory_only.probe(&key(7)), Some(Tier::Memory));
        assert!(memory_only.flush().is_empty());
    }

    #[test]
    fn corrupt_shared_entries_are_reported_kept_and_replaced_by_the_recomputed_one() {
        let dir = tempfile::tempdir().unwrap();
        let tier = MapTier::new();
        tier.insert(key(8), &sample());
        let mut bytes = tier.bytes(&key(8)).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        tier.entries.lock().unwrap().insert(key(8), bytes.clone());
        let cache = shared_cache(dir.path(), &tier);
        match cache.lookup(&key(8), &registry()) {
            Lookup::Corrupt(why) => {
                assert!(why.contains("shared") && why.contains("hash mismatch"), "{why}");
                assert!(why.contains(&key(8).to_hex()), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(tier.bytes(&key(8)), Some(bytes), "the shared entry is not deleted");
        assert!(cache.flush().is_empty());
        assert!(!cache.disk().unwrap().contains(&key(8)), "a corrupt entry is not copied to disk");
        assert_eq!(cache.probe(&key(8)), Some(Tier::Shared));
        // Recomputing stores a good entry everywhere.
        cache.put(key(8), sample(), MS);
        assert!(cache.flush().is_empty());
        let other = Cache::new(1 << 20, None).with_shared(Arc::clone(&tier) as Arc<dyn SharedTier>);
        match other.lookup(&key(8), &registry()) {
            Lookup::Shared(out) => assert_same_outputs(&sample(), &out),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_corrupt_disk_entry_is_restored_from_the_shared_tier() {
        let dir = tempfile::tempdir().unwrap();
        let tier = MapTier::new();
        tier.insert(key(9), &sample());
        let cache = shared_cache(dir.path(), &tier);
        let path = cache.disk().unwrap().entry_path(&key(9));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"garbage").unwrap();
        match cache.lookup(&key(9), &registry()) {
            Lookup::Shared(out) => assert_same_outputs(&sample(), &out),
            other => panic!("{other:?}"),
        }
        assert!(cache.flush().is_empty());
        assert_eq!(fs::read(&path).unwrap(), tier.bytes(&key(9)).unwrap());
    }

    #[test]
    fn puts_reach_the_shared_tier_with_or_without_a_disk_tier() {
        let dir = tempfile::tempdir().unwrap();
        for cache_dir in [Some(dir.path()), None] {
            let tier = MapTier::new();
            let shared = Arc::clone(&tier) as Arc<dyn SharedTier>;
            let cache = match cache_dir {
                Some(d) => disk_cache(d).with_shared(shared),
                None => Cache::new(1 << 20, None).with_shared(shared),
            };
            cache.put(key(10), sample(), MS);
            // Not persistable: skipped, as for disk.
            cache.put(key(11), Outputs::single("doc", Value::Object(Arc::new(super::codec::tests::Doc(None)))), MS);
            assert!(cache.flush().is_empty());
            assert_eq!(count(&tier.puts), 1);
            let bytes = tier.bytes(&key(10)).unwrap();
            assert_same_outputs(&sample(), &codec::decode(&bytes, &registry()).unwrap());
            assert!(tier.bytes(&key(11)).is_none());
            if let Some(disk) = cache.disk() {
                // Encoded once: both tiers hold the same bytes.
                assert_eq!(fs::read(disk.entry_path(&key(10))).unwrap(), bytes);
            }
        }
    }

    #[test]
    fn puts_reach_the_shared_tier_without_waiting_for_a_flush() {
        let tier = MapTier::new();
        let cache = Cache::new(1 << 20, None).with_shared(Arc::clone(&tier) as Arc<dyn SharedTier>);
        cache.put(key(12), sample(), MS);
        let deadline = Instant::now() + Duration::from_secs(30);
        while tier.bytes(&key(12)).is_none() {
            assert!(Instant::now() < deadline, "the entry never reached the shared tier");
            std::thread::sleep(MS);
        }
        assert!(cache.flush().is_empty());
    }

    #[test]
    fn failed_shared_writes_become_warnings_and_do_not_stop_disk_writes() {
        let dir = tempfile::tempdir().unwrap();
        let tier = MapTier::new();
        tier.failing.store(true, Ordering::SeqCst);
        let cache = shared_cache(dir.path(), &tier);
        cache.put(key(13), sample(), MS);
        let warnings = cache.flush();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains(&key(13).to_hex()), "{warnings:?}");
        assert!(warnings[0].contains("shared cache tier") && warnings[0].contains("unreachable"), "{warnings:?}");
        assert!(cache.disk().unwrap().contains(&key(13)));
        assert!(cache.flush().is_empty());
        tier.failing.store(false, Ordering::SeqCst);
        cache.put(key(14), sample(), MS);
        assert!(cache.flush().is_empty());
        assert!(tier.bytes(&key(14)).is_some());
    }

    #[test]
    fn an_unreadable_shared_tier_means_recompute() {
        struct Down;
        impl SharedTier for Down {
            fn get(&self, _: &CacheKey) -> Result<Option<Vec<u8>>, String> {
                Err("connection refused".into())
            }
            fn contains(&self, _: &CacheKey) -> bool {
                false
            }
            fn put(&self, _: &CacheKey, _: &[u8]) -> Result<(), String> {
                panic!("boom")
            }
        }
        let cache = Cache::new(1 << 20, None).with_shared(Arc::new(Down));
        match cache.lookup(&key(15), &registry()) {
            Lookup::Corrupt(why) => assert!(why.contains("connection refused"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(cache.probe(&key(15)), None);
        cache.put(key(15), sample(), MS);
        let warnings = cache.flush();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("panicked"), "{warnings:?}");
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
