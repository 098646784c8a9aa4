//! The prompt-prefix KV cache: the keys and values a prompt left in the KV
//! cache, kept so that a later prompt starting with the same tokens (the
//! same system message and retrieved context, another question) prefills
//! only what differs.
//!
//! * In memory, beside the loaded model (it lives across runs in `flow
//!   watch` and a server): the last prompts' states, any common prefix
//!   length reused.
//! * On disk, as a memo in the cache folder (`memo/kv-prefix/<model>/`),
//!   for prompts of at least [`CHECKPOINT`] tokens: the state up to the last
//!   multiple of [`CHECKPOINT`], with a small `<hash>.ref` file per
//!   checkpoint naming it, so a new process finds the longest stored prefix
//!   of its prompt by hashing its own checkpoints. Files are checksummed and
//!   their tokens compared before use; a damaged or missing file is a miss.
//!
//! A token's keys and values depend on it and the tokens before it only, and
//! flow's quantized products give each token the same values in any batch,
//! so a reused prefix gives exactly the logits a full prefill gives.

use std::collections::VecDeque;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use half::f16;

/// Disk memos are cut at multiples of this many tokens.
pub const CHECKPOINT: usize = 64;

/// In-memory states kept per model, at most.
const MEMORY_ENTRIES: usize = 4;

/// The KV state of a prompt's first tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct KvPrefix {
    /// The tokens, in order.
    pub tokens: Vec<u32>,
    /// Keys, `[layer][position][kv_dim]`.
    pub k: Vec<f16>,
    /// Values, same layout.
    pub v: Vec<f16>,
}

impl KvPrefix {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * self.tokens.len() + 2 * (self.k.len() + self.v.len())
    }
}

/// Tokens `a` and `b` share at the start.
fn common(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The in-memory tier, one per loaded model.
#[derive(Debug, Default)]
pub struct PrefixCache {
    entries: Mutex<VecDeque<Arc<KvPrefix>>>,
}

impl PrefixCache {
    /// The stored state sharing the longest prefix with `ids`, and how many
    /// tokens it shares.
    pub fn longest(&self, ids: &[u32]) -> Option<(Arc<KvPrefix>, usize)> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().map(|e| (Arc::clone(e), common(&e.tokens, ids))).filter(|(_, n)| *n > 0).max_by_key(|(_, n)| *n)
    }

    /// Keeps `prefix` (the most recent first; the oldest go).
    pub fn insert(&self, prefix: Arc<KvPrefix>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|e| e.tokens != prefix.tokens);
        entries.push_front(prefix);
        entries.truncate(MEMORY_ENTRIES);
    }
}

const MAGIC: &[u8; 8] = b"FLOWKV01";

/// The disk tier for one model: a folder of the cache.
pub struct PrefixMemo {
    dir: PathBuf,
    layers: usize,
    kv_dim: usize,
    reads: bool,
}

fn hash_tokens(tokens: &[u32]) -> String {
    let mut h = blake3::Hasher::new();
    for t in tokens {
        h.update(&t.to_le_bytes());
    }
    h.finalize().to_hex()[..32].to_string()
}

impl PrefixMemo {
    /// The memo of a model with `layers` layers of `kv_dim` keys (and values)
    /// per position, in `dir`.
    pub fn new(dir: PathBuf, layers: usize, kv_dim: usize) -> PrefixMemo {
        PrefixMemo { dir, layers, kv_dim, reads: true }
    }

    /// With `reads` false (`--no-cache`), stored states are written but
    /// never used.
    pub fn reading(mut self, reads: bool) -> PrefixMemo {
        self.reads = reads;
        self
    }

    /// The longest stored checkpoint prefix of `ids`.
    pub fn longest(&self, ids: &[u32]) -> Option<KvPrefix> {
        if !self.reads {
            return None;
        }
        let mut b = ids.len() / CHECKPOINT * CHECKPOINT;
        while b >= CHECKPOINT {
            if let Some(p) = self.load(&ids[..b]) {
                return Some(p);
            }
            b -= CHECKPOINT;
        }
        None
    }

    /// The state of exactly `tokens`, if a stored file holds it (cut to them).
    fn load(&self, tokens: &[u32]) -> Option<KvPrefix> {
        let name = fs::read_to_string(self.dir.join(format!("{}.ref", hash_tokens(tokens)))).ok()?;
        let bytes = flow_engine::files::read_marking_used(&self.dir.join(name.trim())).ok()?;
        let p = self.decode(&bytes)?;
        (p.tokens.len() >= tokens.len() && p.tokens[..tokens.len()] == *tokens).then(|| self.cut(p, tokens.len()))
    }

    /// `p` keeping its first `n` positions.
    fn cut(&self, p: KvPrefix, n: usize) -> KvPrefix {
        let len = p.tokens.len();
        let keep = |x: &[f16]| -> Vec<f16> {
            x.chunks_exact(len * self.kv_dim).flat_map(|layer| layer[..n * self.kv_dim].iter().copied()).collect()
        };
        KvPrefix { tokens: p.tokens[..n].to_vec(), k: keep(&p.k), v: keep(&p.v) }
    }

    /// Stores the state of `p`'s tokens up to its last checkpoint (nothing
    /// for shorter prompts); errors only cost a later recompute.
    pub fn store(&self, p: &KvPrefix) -> std::io::Result<()> {
        let n = p.tokens.len() / CHECKPOINT * CHECKPOINT;
        if n == 0 {
            return Ok(());
        }
        let p = self.cut(p.clone(), n);
        let name = format!("{}.kv", hash_tokens(&p.tokens));
        fs::create_dir_all(&self.dir)?;
        if !self.dir.join(&name).is_file() {
            flow_engine::files::write_atomic(&self.dir.join(&name), &self.encode(&p))?;
        }
        for b in (CHECKPOINT..=n).step_by(CHECKPOINT) {
            let reference = self.dir.join(format!("{}.ref", hash_tokens(&p.tokens[..b])));
            flow_engine::files::write_atomic(&reference, name.as_bytes())?;
        }
        Ok(())
    }

    fn encode(&self, p: &KvPrefix) -> Vec<u8> {
        let mut out = Vec::with_capacity(p.bytes() + 64);
        out.extend_from_slice(MAGIC);
        for v in [self.layers, self.kv_dim, p.tokens.len()] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        p.tokens.iter().for_each(|t| out.extend_from_slice(&t.to_le_bytes()));
        p.k.iter().chain(&p.v).for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        let hash = blake3::hash(&out);
        out.extend_from_slice(hash.as_bytes());
        out
    }

    fn decode(&self, bytes: &[u8]) -> Option<KvPrefix> {
        let (body, hash) = bytes.split_at(bytes.len().checked_sub(32)?);
        if blake3::hash(body).as_bytes() != hash || !body.starts_with(MAGIC) {
            return None;
        }
        let word = |i: usize| u32::from_le_bytes(body[8 + 4 * i..12 + 4 * i].try_into().unwrap()) as usize;
        let (layers, kv_dim, n) = (word(0), word(1), word(2));
        let kv = layers * n * kv_dim;
        if (layers, kv_dim) != (self.layers, self.kv_dim) || body.len() != 20 + 4 * n + 4 * kv {
            return None;
        }
        let tokens = body[20..20 + 4 * n].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        let halves: Vec<f16> = body[20 + 4 * n..].chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect();
        let (k, v) = halves.split_at(kv);
        Some(KvPrefix { tokens, k: k.to_vec(), v: v.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(n: usize, layers: usize, kv_dim: usize, seed: u32) -> KvPrefix {
        let tokens: Vec<u32> = (0..n as u32).map(|i| i * 7 + seed).collect();
        let kv = |o: usize| (0..layers * n * kv_dim).map(|i| f16::from_f32(((i + o) % 97) as f32)).collect();
        KvPrefix { tokens, k: kv(0), v: kv(5) }
    }

    #[test]
    fn memory_finds_the_longest_common_prefix() {
        let cache = PrefixCache::default();
        cache.insert(Arc::new(prefix(10, 1, 2, 0)));
        let mut ids = prefix(10, 1, 2, 0).tokens;
        ids.truncate(6);
        ids.push(9999);
        let (p, n) = cache.longest(&ids).unwrap();
        assert_eq!((p.tokens.len(), n), (10, 6));
        assert!(cache.longest(&[12345]).is_none());
    }

    #[test]
    fn disk_memos_round_trip_cut_at_checkpoints_and_refuse_damage() {
        let dir = tempfile::tempdir().unwrap();
        let memo = PrefixMemo::new(dir.path().join("m"), 2, 4);
        let p = prefix(150, 2, 4, 3);
        memo.store(&p).unwrap();
        // A prompt sharing 140 tokens: the longest checkpoint is 128.
        let mut ids = p.tokens[..140].to_vec();
        ids.extend([1, 2, 3]);
        let got = memo.longest(&ids).unwrap();
        assert_eq!(got.tokens, p.tokens[..128]);
        assert_eq!(got, memo.cut(p.clone(), 128));
        assert!(memo.longest(&p.tokens[..63]).is_none());
        // Damage: every byte counts.
        let kv = fs::read_dir(dir.path().join("m")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().unwrap() == "kv").unwrap();
        let mut bytes = fs::read(&kv).unwrap();
        bytes[100] ^= 1;
        fs::write(&kv, bytes).unwrap();
        assert!(memo.longest(&ids).is_none());
    }
}
