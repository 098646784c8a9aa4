//! The memory tier: outputs shared behind `Arc`, byte-accounted against a
//! budget for host memory and one for GPU memory (tensors kept on a GPU
//! between nodes, all GPUs together).
//!
//! When a new entry does not fit, entries are evicted by the highest
//! `bytes * age / (recompute cost + 1 ms)`: big, cheap and long-unused entries
//! go first. Age counts cache operations since the entry was last used. The
//! victim is the worst of a bounded random sample of entries, so a put costs
//! the same on a cache of ten entries or of a million.

use std::collections::HashMap;
use std::time::Duration;

use super::key::CacheKey;
use crate::op::Outputs;

/// Entries compared to pick each eviction victim (all of them when fewer).
const EVICTION_SAMPLE: usize = 16;

/// Added to every recompute cost so that free entries still compare by size
/// and age.
const COST_FLOOR_SECS: f64 = 0.001;

/// What the memory tier holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryStats {
    /// Entries held.
    pub entries: usize,
    /// Bytes of host memory held, as counted by [`Outputs::byte_size`] less
    /// the GPU's part.
    pub bytes: usize,
    /// The byte budget `bytes` never exceeds.
    pub budget: usize,
    /// Bytes of GPU memory held ([`Outputs::device_byte_size`]).
    pub vram_bytes: usize,
    /// The byte budget `vram_bytes` never exceeds.
    pub vram_budget: usize,
}

/// One cached result.
struct Entry {
    outputs: Outputs,
    /// Host bytes.
    bytes: usize,
    /// GPU bytes.
    vram: usize,
    cost: Duration,
    last_used: u64,
    /// Index of the key in [`MemoryTier::keys`].
    slot: usize,
}

/// Outputs by key, within a byte budget.
pub struct MemoryTier {
    budget: usize,
    bytes: usize,
    vram_budget: usize,
    vram: usize,
    /// Counts puts and gets; entries remember when they were last used.
    clock: u64,
    /// State of the xorshift generator that samples eviction candidates.
    rng: u64,
    entries: HashMap<CacheKey, Entry>,
    /// Every key once, densely, so that candidates can be sampled.
    keys: Vec<CacheKey>,
}

impl MemoryTier {
    /// An empty tier holding at most `budget_bytes` of host memory and as
    /// much of GPU memory.
    pub fn new(budget_bytes: usize) -> MemoryTier {
        MemoryTier {
            budget: budget_bytes,
            bytes: 0,
            vram_budget: budget_bytes,
            vram: 0,
            clock: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            entries: HashMap::new(),
            keys: Vec::new(),
        }
    }

    /// Sets the GPU memory budget (before anything is stored: entries
    /// already held are not evicted for it).
    pub fn set_vram_budget(&mut self, bytes: usize) {
        self.vram_budget = bytes;
    }

    /// The outputs stored under `key` (sharing their values), marking them used.
    pub fn get(&mut self, key: &CacheKey) -> Option<Outputs> {
        let now = self.tick();
        let entry = self.entries.get_mut(key)?;
        entry.last_used = now;
        Some(entry.outputs.clone())
    }

    /// True if `key` is held; does not mark it used.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Stores `outputs` under `key`, replacing any entry there; `cost` is
    /// what computing them took. Evicts entries until it fits; outputs
    /// larger than the whole budget are not stored.
    pub fn put(&mut self, key: CacheKey, outputs: Outputs, cost: Duration) {
        let vram = outputs.device_byte_size();
        self.put_sized(key, outputs, cost, vram);
    }

    /// [`MemoryTier::put`] with `vram` of the outputs' bytes on a GPU.
    fn put_sized(&mut self, key: CacheKey, outputs: Outputs, cost: Duration, vram: usize) {
        self.remove(&key);
        let bytes = outputs.byte_size().saturating_sub(vram);
        if bytes > self.budget || vram > self.vram_budget {
            return;
        }
        while self.bytes + bytes > self.budget && self.evict_one(false) {}
        while self.vram + vram > self.vram_budget && self.evict_one(true) {}
        let now = self.tick();
        self.bytes += bytes;
        self.vram += vram;
        self.keys.push(key);
        let slot = self.keys.len() - 1;
        self.entries.insert(
            key,
            Entry {
                outputs,
                bytes,
                vram,
                cost,
                last_used: now,
                slot,
            },
        );
    }

    /// Drops the entry under `key`; false if there was none.
    pub fn remove(&mut self, key: &CacheKey) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        self.bytes -= entry.bytes;
        self.vram -= entry.vram;
        self.keys.swap_remove(entry.slot);
        if let Some(moved) = self.keys.get(entry.slot) {
            if let Some(moved) = self.entries.get_mut(moved) {
                moved.slot = entry.slot;
            }
        }
        true
    }

    /// Drops every entry holding GPU memory (after a GPU ran out of it);
    /// returns how many.
    pub fn release_vram(&mut self) -> usize {
        let victims: Vec<CacheKey> = self.entries.iter().filter(|(_, e)| e.vram > 0).map(|(k, _)| *k).collect();
        victims.iter().filter(|k| self.remove(k)).count()
    }

    /// Entries, bytes held and budget.
    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            entries: self.entries.len(),
            bytes: self.bytes,
            budget: self.budget,
            vram_bytes: self.vram,
            vram_budget: self.vram_budget,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Evicts the entry with the highest eviction score among a sample of
    /// those holding host memory (GPU memory when `vram`), or among all such
    /// entries when the sample has none. False if no entry holds any.
    fn evict_one(&mut self, vram: bool) -> bool {
        let n = self.keys.len();
        let candidates: Vec<usize> = if n <= EVICTION_SAMPLE {
            (0..n).collect()
        } else {
            (0..EVICTION_SAMPLE).map(|_| self.random_below(n)).collect()
        };
        let best = |tier: &Self, slots: &mut dyn Iterator<Item = usize>| {
            slots
                .map(|slot| tier.keys[slot])
                .filter(|k| tier.score(k, vram) > 0.0)
                .max_by(|a, b| tier.score(a, vram).total_cmp(&tier.score(b, vram)))
        };
        let victim = best(self, &mut candidates.into_iter()).or_else(|| best(self, &mut (0..n)));
        match victim {
            Some(victim) => self.remove(&victim),
            None => false,
        }
    }

    /// `bytes * age / (cost + 1 ms)` of the host (GPU when `vram`) bytes:
    /// higher is evicted first.
    fn score(&self, key: &CacheKey, vram: bool) -> f64 {
        self.entries.get(key).map_or(0.0, |e| {
            let age = (self.clock - e.last_used + 1) as f64;
            let bytes = if vram { e.vram } else { e.bytes };
            bytes as f64 * age / (e.cost.as_secs_f64() + COST_FLOOR_SECS)
        })
    }

    /// A pseudo-random index below `n` (xorshift64*).
    fn random_below(&mut self, n: usize) -> usize {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::value::Value;

    fn key(i: u64) -> CacheKey {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_le_bytes());
        CacheKey(k)
    }

    /// Outputs of roughly `n` bytes.
    fn sized(n: usize) -> Outputs {
        Outputs::single("v", Value::text("x".repeat(n)))
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn gpu_memory_has_its_own_budget() {
        let mut tier = MemoryTier::new(10_000);
        tier.set_vram_budget(1_000);
        // Entries whose tensors sit on a GPU (counted as `vram` of their bytes).
        tier.put_sized(key(1), sized(700), MS, 600);
        tier.put_sized(key(2), sized(100), MS, 0);
        tier.put_sized(key(3), sized(700), MS, 600);
        assert!(!tier.contains(&key(1)), "the GPU budget evicts a GPU entry");
        assert!(tier.contains(&key(2)) && tier.contains(&key(3)), "host-only entries stay");
        let stats = tier.stats();
        assert_eq!((stats.vram_bytes, stats.vram_budget), (600, 1_000));
        assert!(stats.bytes < 400, "{stats:?}");
        tier.put_sized(key(4), sized(1_200), MS, 1_100);
        assert!(!tier.contains(&key(4)), "larger than the GPU budget: not stored");
        assert_eq!(tier.release_vram(), 1);
        assert!(!tier.contains(&key(3)) && tier.contains(&key(2)));
        assert_eq!(tier.stats().vram_bytes, 0);
    }

    #[test]
    fn budget_is_never_exceeded() {
        let mut tier = MemoryTier::new(10_000);
        let mut rng = 1u64;
        for i in 0..5_000 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = (rng >> 33) as usize % 3_000;
            tier.put(key(i % 700), sized(size), MS * (i as u32 % 50));
            if i % 3 == 0 {
                tier.get(&key(i / 2 % 700));
            }
            let stats = tier.stats();
            assert!(stats.bytes <= stats.budget, "{stats:?}");
            if i % 50 != 0 {
                continue;
            }
            let held: usize = (0..700)
                .filter_map(|k| tier.get(&key(k)))
                .map(|o| o.byte_size())
                .sum();
            assert_eq!(held, stats.bytes);
        }
    }

    #[test]
    fn entries_larger_than_the_budget_are_not_stored() {
        let mut tier = MemoryTier::new(1_000);
        tier.put(key(1), sized(100), MS);
        tier.put(key(2), sized(5_000), MS);
        assert!(tier.get(&key(2)).is_none());
        assert!(tier.get(&key(1)).is_some());
    }

    #[test]
    fn replacing_an_entry_does_not_count_it_twice() {
        let mut tier = MemoryTier::new(1_000);
        tier.put(key(1), sized(300), MS);
        tier.put(key(1), sized(300), MS);
        assert_eq!(tier.stats().entries, 1);
        assert_eq!(tier.stats().bytes, sized(300).byte_size());
        assert!(tier.remove(&key(1)));
        assert!(!tier.remove(&key(1)));
        assert_eq!(
            tier.stats(),
            MemoryStats {
                entries: 0,
                bytes: 0,
                budget: 1_000,
                vram_bytes: 0,
                vram_budget: 1_000,
            }
        );
    }

    /// Fills a 1000-byte tier with three entries, adds a fourth and returns
    /// which of the first three was evicted.
    fn evicted(first: [(usize, Duration); 3], use_after: &[u64]) -> Vec<u64> {
        let mut tier = MemoryTier::new(1_000);
        for (i, (size, cost)) in first.into_iter().enumerate() {
            tier.put(key(i as u64), sized(size), cost);
        }
        for k in use_after {
            tier.get(&key(*k));
        }
        tier.put(key(9), sized(250), MS);
        (0..3).filter(|k| !tier.contains(&key(*k))).collect()
    }

    #[test]
    fn eviction_prefers_big_entries() {
        assert_eq!(evicted([(200, MS), (400, MS), (200, MS)], &[0, 1, 2]), [1]);
    }

    #[test]
    fn eviction_prefers_cheap_entries() {
        let slow = Duration::from_secs(2);
        assert_eq!(
            evicted([(300, slow), (300, MS), (300, slow)], &[0, 1, 2]),
            [1]
        );
    }

    #[test]
    fn eviction_prefers_old_entries() {
        assert_eq!(evicted([(300, MS), (300, MS), (300, MS)], &[1, 0]), [2]);
    }

    #[test]
    fn holds_its_budget_with_many_tiny_entries() {
        // Speed is measured by the scheduler bench; this checks the accounting
        // at scale.
        let tiny = Outputs::single("v", Value::Int(1));
        let mut tier = MemoryTier::new(tiny.byte_size() * 60_000);
        for i in 0..100_000 {
            tier.put(key(i), tiny.clone(), MS);
            tier.get(&key(i / 2));
        }
        assert_eq!(tier.stats().entries, 60_000);
        assert!(tier.stats().bytes <= tier.stats().budget);
    }
}
