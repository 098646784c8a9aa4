//! [`ModelPool`]: loaded models kept resident across runs and graphs (in
//! `flow watch`, or several graphs in one process), within a byte budget
//! for the host's memory and one for each GPU's.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{anyhow, Result};
use serde::Serialize;

/// Environment variable holding the pool budget (`8G`, `512M`, `1.5GiB`, bytes).
pub const BUDGET_ENV: &str = "FLOW_MODEL_BUDGET";

/// The budget when `$FLOW_MODEL_BUDGET` is not set: 8 GiB.
pub const DEFAULT_BUDGET: u64 = 8 << 30;

/// Where a loaded model's weights live, each place with its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Residence {
    /// The host's memory (CPU models).
    Host,
    /// The memory of GPU `n` (CUDA or Metal ordinal).
    Gpu(usize),
}

impl Residence {
    /// Where a model loaded on `device` lives.
    pub fn of(device: &candle_core::Device) -> Residence {
        match device.location() {
            candle_core::DeviceLocation::Cpu => Residence::Host,
            candle_core::DeviceLocation::Cuda { gpu_id } | candle_core::DeviceLocation::Metal { gpu_id } => {
                Residence::Gpu(gpu_id)
            }
        }
    }
}

impl std::fmt::Display for Residence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Residence::Host => f.write_str("host memory"),
            Residence::Gpu(n) => write!(f, "GPU {n}"),
        }
    }
}

/// Resident loaded models, keyed by an op-chosen string (see
/// [`super::ResolvedModel::pool_key`]: fingerprint + device + loader id).
///
/// * Concurrent [`get_or_load`](ModelPool::get_or_load) calls for one key load
///   once; the others wait and share the result. A failed (or panicking) load
///   is not remembered: the waiters then try the load themselves.
/// * Loads of different keys run in parallel (the pool's lock is not held
///   while loading). A loader must not ask the pool for its own key.
/// * Beyond the budget of its [`Residence`] (host memory, or one GPU's) the
///   least recently used entries of that residence leave the pool. An
///   evicted model that is still in use stays alive through its `Arc` until
///   its users drop it. A single model larger than the whole budget stays
///   resident alone.
pub struct ModelPool {
    budget: u64,
    /// The budget of each GPU.
    vram_budget: u64,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Slot>,
    tick: u64,
    /// Bytes held per residence.
    bytes: HashMap<Residence, u64>,
    hits: u64,
    loads: u64,
    evictions: u64,
}

enum Slot {
    Loading,
    Ready { value: Arc<dyn Any + Send + Sync>, bytes: u64, last_used: u64, residence: Residence },
}

/// Counters of a [`ModelPool`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Resident models.
    pub entries: usize,
    /// Loads in progress.
    pub loading: usize,
    /// Bytes of host memory held by resident models (from the loaders' hints).
    pub bytes: u64,
    /// The host memory budget in bytes.
    pub budget: u64,
    /// Bytes of GPU memory held by resident models, all GPUs together.
    pub vram_bytes: u64,
    /// The budget of each GPU in bytes.
    pub vram_budget: u64,
    /// Requests served by a resident model (or by waiting on a load in progress).
    pub hits: u64,
    /// Loads run to completion.
    pub loads: u64,
    /// Models that left the pool to respect the budget.
    pub evictions: u64,
}

impl ModelPool {
    /// An empty pool holding at most `budget_bytes` of host memory (by the
    /// loaders' hints) and as much on each GPU.
    pub fn new(budget_bytes: u64) -> Self {
        ModelPool {
            budget: budget_bytes,
            vram_budget: budget_bytes,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    /// The same pool with `bytes` as the budget of each GPU.
    pub fn with_vram_budget(mut self, bytes: u64) -> Self {
        self.vram_budget = bytes;
        self
    }

    fn budget_of(&self, residence: Residence) -> u64 {
        match residence {
            Residence::Host => self.budget,
            Residence::Gpu(_) => self.vram_budget,
        }
    }

    /// A pool with the budget from `$FLOW_MODEL_BUDGET`, else [`DEFAULT_BUDGET`];
    /// an unreadable value is an error naming the variable.
    pub fn from_env() -> Result<Self> {
        Ok(ModelPool::new(budget_from_env()?))
    }

    /// The budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The model under `key`, loading it with `load` if it is not resident.
    /// `bytes_hint` is what the loaded model holds in the memory of
    /// `residence` (see [`Residence::of`] for the device it is loaded on).
    /// Errors if `key` holds a value of another type than `T`.
    pub fn get_or_load<T: Send + Sync + 'static>(
        &self,
        key: &str,
        residence: Residence,
        bytes_hint: u64,
        load: impl FnOnce() -> Result<T>,
    ) -> Result<Arc<T>> {
        let mut st = self.lock();
        loop {
            st.tick += 1;
            let tick = st.tick;
            match st.entries.get_mut(key) {
                Some(Slot::Ready { value, last_used, .. }) => {
                    *last_used = tick;
                    let value = value.clone();
                    st.hits += 1;
                    drop(st);
                    return downcast(key, value);
                }
                Some(Slot::Loading) => st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                None => break,
            }
        }
        st.entries.insert(key.to_string(), Slot::Loading);
        drop(st);

        // Clears the Loading slot if `load` fails or panics, waking the waiters.
        struct Pending<'a> {
            pool: &'a ModelPool,
            key: &'a str,
            armed: bool,
        }
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                if self.armed {
                    let mut st = self.pool.lock();
                    if matches!(st.entries.get(self.key), Some(Slot::Loading)) {
                        st.entries.remove(self.key);
                    }
                    drop(st);
                    self.pool.changed.notify_all();
                }
            }
        }
        let mut pending = Pending { pool: self, key, armed: true };
        let value = Arc::new(load()?);
        pending.armed = false;

        let mut st = self.lock();
        st.tick += 1;
        let tick = st.tick;
        let shared: Arc<dyn Any + Send + Sync> = value.clone();
        st.entries.insert(key.to_string(), Slot::Ready { value: shared, bytes: bytes_hint, last_used: tick, residence });
        *st.bytes.entry(residence).or_default() += bytes_hint;
        st.loads += 1;
        self.evict(&mut st, key, residence);
        drop(st);
        self.changed.notify_all();
        Ok(value)
    }

    /// True if `key` is resident.
    pub fn contains(&self, key: &str) -> bool {
        matches!(self.lock().entries.get(key), Some(Slot::Ready { .. }))
    }

    /// Drops `key` from the pool (users keep their `Arc`s). True if it was resident.
    pub fn remove(&self, key: &str) -> bool {
        let mut st = self.lock();
        match st.entries.get(key) {
            Some(&Slot::Ready { bytes, residence, .. }) => {
                st.entries.remove(key);
                *st.bytes.entry(residence).or_default() -= bytes;
                true
            }
            _ => false,
        }
    }

    /// Drops every resident model (loads in progress finish and are kept).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.entries.retain(|_, s| matches!(s, Slot::Loading));
        st.bytes.clear();
    }

    /// Drops every resident model of `residence` (users keep their `Arc`s),
    /// e.g. after that GPU ran out of memory; returns how many and their bytes.
    pub fn release(&self, residence: Residence) -> (usize, u64) {
        let mut st = self.lock();
        let before = st.entries.len();
        st.entries.retain(|_, s| !matches!(s, Slot::Ready { residence: r, .. } if *r == residence));
        let released = before - st.entries.len();
        (released, st.bytes.remove(&residence).unwrap_or(0))
    }

    /// Resident models and their bytes in `residence`.
    pub fn resident(&self, residence: Residence) -> (usize, u64) {
        let st = self.lock();
        let count = st.entries.values().filter(|s| matches!(s, Slot::Ready { residence: r, .. } if *r == residence)).count();
        (count, st.bytes.get(&residence).copied().unwrap_or(0))
    }

    /// The keys of the resident models, most recently used first.
    pub fn resident_keys(&self) -> Vec<String> {
        let st = self.lock();
        let mut ready: Vec<_> = st
            .entries
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Ready { last_used, .. } => Some((std::cmp::Reverse(*last_used), k.clone())),
                _ => None,
            })
            .collect();
        ready.sort();
        ready.into_iter().map(|(_, k)| k).collect()
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        let st = self.lock();
        PoolStats {
            entries: st.entries.values().filter(|s| matches!(s, Slot::Ready { .. })).count(),
            loading: st.entries.values().filter(|s| matches!(s, Slot::Loading)).count(),
            bytes: st.bytes.get(&Residence::Host).copied().unwrap_or(0),
            budget: self.budget,
            vram_bytes: st.bytes.iter().filter(|(r, _)| **r != Residence::Host).map(|(_, b)| b).sum(),
            vram_budget: self.vram_budget,
            hits: st.hits,
            loads: st.loads,
            evictions: st.evictions,
        }
    }

    /// Evicts least recently used entries of `residence` other than `keep`
    /// until that residence is within its budget.
    fn evict(&self, st: &mut State, keep: &str, residence: Residence) {
        while st.bytes.get(&residence).copied().unwrap_or(0) > self.budget_of(residence) {
            let victim = st
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() != keep)
                .filter_map(|(k, s)| match s {
                    Slot::Ready { last_used, residence: r, .. } if *r == residence => Some((*last_used, k.clone())),
                    _ => None,
                })
                .min();
            let Some((_, k)) = victim else { break };
            if let Some(Slot::Ready { bytes, .. }) = st.entries.remove(&k) {
                *st.bytes.entry(residence).or_default() -= bytes;
                st.evictions += 1;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for ModelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPool").field("stats", &self.stats()).finish()
    }
}

fn downcast<T: Send + Sync + 'static>(key: &str, value: Arc<dyn Any + Send + Sync>) -> Result<Arc<T>> {
    value.downcast::<T>().map_err(|_| {
        anyhow!("model pool entry `{key}` holds another type than {}", std::any::type_name::<T>())
    })
}

/// The budget from `$FLOW_MODEL_BUDGET`, else [`DEFAULT_BUDGET`].
pub fn budget_from_env() -> Result<u64> {
    match std::env::var(BUDGET_ENV) {
        Ok(s) if !s.trim().is_empty() => crate::cache::parse_bytes(&s).map(|b| b as u64).map_err(|e| anyhow!("{BUDGET_ENV}: {e}")),
        _ => Ok(DEFAULT_BUDGET),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn concurrent_loads_of_one_key_happen_once() {
        let pool = Arc::new(ModelPool::new(1 << 30));
        let calls = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (pool, calls) = (pool.clone(), calls.clone());
                std::thread::spawn(move || {
                    pool.get_or_load("fp|Cpu|bert", Residence::Host, 10, || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        Ok(vec![1u8, 2, 3])
                    })
                    .unwrap()
                })
            })
            .collect();
        let got: Vec<Arc<Vec<u8>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(got.iter().all(|a| Arc::ptr_eq(a, &got[0])));
        let s = pool.stats();
        assert_eq!((s.entries, s.loads, s.hits, s.bytes), (1, 1, 7, 10));
    }

    #[test]
    fn least_recently_used_models_leave_beyond_the_budget() {
        let pool = ModelPool::new(100);
        let a = pool.get_or_load("a", Residence::Host, 60, || Ok("A".to_string())).unwrap();
        let b = pool.get_or_load("b", Residence::Host, 30, || Ok("B".to_string())).unwrap();
        pool.get_or_load::<String>("a", Residence::Host, 60, || panic!("a is resident")).unwrap();
        let _c = pool.get_or_load("c", Residence::Host, 30, || Ok("C".to_string())).unwrap();
        assert!(pool.contains("a") && pool.contains("c") && !pool.contains("b"));
        assert_eq!(*b, "B", "an evicted model in use stays alive");
        let s = pool.stats();
        assert_eq!((s.entries, s.bytes, s.evictions), (2, 90, 1));
        // A model larger than the budget stays alone.
        let _big = pool.get_or_load("big", Residence::Host, 500, || Ok(0u64)).unwrap();
        assert!(pool.contains("big") && !pool.contains("a") && !pool.contains("c"));
        assert_eq!(pool.stats().bytes, 500);
        drop(a);
    }

    #[test]
    fn failed_loads_are_not_remembered() {
        let pool = ModelPool::new(100);
        let e = pool.get_or_load::<u32>("k", Residence::Host, 1, || Err(anyhow!("no such file"))).unwrap_err();
        assert!(e.to_string().contains("no such file"));
        assert!(!pool.contains("k"));
        assert_eq!(*pool.get_or_load("k", Residence::Host, 1, || Ok(5u32)).unwrap(), 5);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = pool.get_or_load::<u32>("p", Residence::Host, 1, || panic!("boom"));
        }));
        assert!(panicked.is_err());
        assert_eq!(pool.stats().loading, 0, "a panicking loader must not leave the key stuck");
        assert_eq!(*pool.get_or_load("p", Residence::Host, 1, || Ok(6u32)).unwrap(), 6);
    }

    #[test]
    fn each_gpu_and_the_host_have_their_own_budget() {
        let pool = ModelPool::new(100).with_vram_budget(50);
        let _h = pool.get_or_load("host", Residence::Host, 90, || Ok(1u8)).unwrap();
        let _a = pool.get_or_load("a0", Residence::Gpu(0), 30, || Ok(2u8)).unwrap();
        let _b = pool.get_or_load("b1", Residence::Gpu(1), 40, || Ok(3u8)).unwrap();
        assert!(pool.contains("host") && pool.contains("a0") && pool.contains("b1"), "all within their budgets");
        let _c = pool.get_or_load("c0", Residence::Gpu(0), 30, || Ok(4u8)).unwrap();
        assert!(!pool.contains("a0"), "GPU 0 is over its budget: its oldest model leaves");
        assert!(pool.contains("host") && pool.contains("b1") && pool.contains("c0"));
        let s = pool.stats();
        assert_eq!((s.bytes, s.vram_bytes, s.vram_budget, s.evictions), (90, 70, 50, 1));
        assert_eq!(pool.resident(Residence::Gpu(0)), (1, 30));
        assert_eq!(pool.release(Residence::Gpu(1)), (1, 40));
        assert!(!pool.contains("b1") && pool.contains("c0"));
        assert_eq!(pool.stats().vram_bytes, 30);
    }

    #[test]
    fn a_key_keeps_its_type() {
        let pool = ModelPool::new(100);
        pool.get_or_load("k", Residence::Host, 1, || Ok(1u32)).unwrap();
        let e = pool.get_or_load("k", Residence::Host, 1, || Ok("x".to_string())).unwrap_err();
        assert!(e.to_string().contains("another type"), "{e}");
    }

}
