//! The optional third cache tier: one shared by several machines (DESIGN.md
//! §12), behind memory and disk.
//!
//! The engine only defines the interface; an implementation (a JetStream
//! object store, a shared folder, a test double) lives elsewhere. Calls are
//! blocking: lookups come from the planner, writes from the cache's
//! background writer thread, never from an async task.

use super::key::CacheKey;

/// A cache tier shared by several machines, behind memory and disk (e.g. an
/// object store). It stores entries in the codec's encoded form
/// ([`super::codec::encode`]), which carries its own checksum: the cache
/// verifies every entry it gets back with [`super::codec::decode`], so an
/// implementation need not check content itself.
///
/// Errors are plain text: the cache turns a failed `get` into a recompute
/// and a failed `put` into a warning, never into a failed run.
pub trait SharedTier: Send + Sync {
    /// The encoded entry under `key`, or `None` when there is none. Must
    /// never return a partly written entry (a torn one fails verification
    /// and costs a recompute, but a store should not produce them).
    fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, String>;

    /// Whether an entry is stored under `key`, without fetching it (cheap;
    /// for `flow plan`). An unreachable store answers `false`.
    fn contains(&self, key: &CacheKey) -> bool;

    /// Stores the encoded entry `bytes` under `key`, replacing any entry
    /// there. Called from the cache's background writer thread as soon as a
    /// node's outputs exist, so that other machines can use them while the
    /// run goes on.
    fn put(&self, key: &CacheKey, bytes: &[u8]) -> Result<(), String>;
}
