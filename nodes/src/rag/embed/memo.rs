//! The per-text embedding memo: a content-addressed store of single
//! embeddings, so that a node fed a list that changed a little (a question
//! edited, a file added to a corpus) only computes the texts it has not seen.
//!
//! Layout: `<root>/<recipe>/<h[0..2]>/<h>.f32`, where `recipe` hashes the
//! model's content fingerprint with everything else that shapes an embedding
//! (the encoder's version, the token limit, the pooling) and `h` is the
//! blake3 hash of the text. An entry is the magic `FLOWEMB1`, the vector as
//! little-endian f32, then the blake3 hash of both. Writes go to a temporary
//! file renamed into place; an entry that is short, long or fails its hash is
//! ignored (and overwritten by the recomputed vector), never trusted.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, Result};

const MAGIC: &[u8; 8] = b"FLOWEMB1";
const HASH_LEN: usize = blake3::OUT_LEN;

/// The memo entries of one model and recipe.
pub(crate) struct EmbeddingMemo {
    dir: PathBuf,
    dim: usize,
}

impl EmbeddingMemo {
    /// The entries under `root` for `recipe` (any text identifying the model
    /// and the way it embeds), holding vectors of width `dim`. Nothing is
    /// created until the first write.
    pub(crate) fn new(root: &Path, recipe: &str, dim: usize) -> EmbeddingMemo {
        let name = blake3::hash(recipe.as_bytes()).to_hex();
        EmbeddingMemo { dir: root.join(&name[..32]), dim }
    }

    fn entry(&self, text_hash: &blake3::Hash) -> PathBuf {
        let hex = text_hash.to_hex();
        self.dir.join(&hex[..2]).join(format!("{hex}.f32"))
    }

    /// The stored embedding of the text hashing to `text_hash`, if a sound
    /// entry is there.
    pub(crate) fn get(&self, text_hash: &blake3::Hash) -> Option<Vec<f32>> {
        let bytes = flow_engine::files::read_marking_used(&self.entry(text_hash)).ok()?;
        let body = MAGIC.len() + 4 * self.dim;
        if bytes.len() != body + HASH_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return None;
        }
        if blake3::hash(&bytes[..body]).as_bytes() != &bytes[body..] {
            return None;
        }
        Some(bytes[MAGIC.len()..body].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// Stores `vector` for the text hashing to `text_hash`.
    pub(crate) fn put(&self, text_hash: &blake3::Hash, vector: &[f32]) -> Result<()> {
        debug_assert_eq!(vector.len(), self.dim);
        let mut bytes = Vec::with_capacity(MAGIC.len() + 4 * vector.len() + HASH_LEN);
        bytes.extend_from_slice(MAGIC);
        vector.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
        let hash = blake3::hash(&bytes);
        bytes.extend_from_slice(hash.as_bytes());

        let path = self.entry(text_hash);
        let dir = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create `{}`: {e}", dir.display()))?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(".{}-{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        // No fsync: a torn entry fails its hash on read and is recomputed.
        let written = fs::write(&tmp, &bytes).and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(anyhow!("cannot write `{}`: {e}", path.display()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let memo = EmbeddingMemo::new(dir.path(), "model-a", 3);
        let h = blake3::hash(b"some text");
        assert!(memo.get(&h).is_none());
        memo.put(&h, &[1.0, -2.5, 0.25]).unwrap();
        assert_eq!(memo.get(&h).unwrap(), [1.0, -2.5, 0.25]);

        assert!(EmbeddingMemo::new(dir.path(), "model-b", 3).get(&h).is_none(), "recipes are apart");
        assert!(EmbeddingMemo::new(dir.path(), "model-a", 4).get(&h).is_none(), "a wrong width is not trusted");

        let path = memo.entry(&h);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(memo.get(&h).is_none(), "a flipped bit fails the hash");
        fs::write(&path, &bytes[..20]).unwrap();
        assert!(memo.get(&h).is_none(), "a truncated entry is ignored");
        memo.put(&h, &[0.0, 1.0, 0.0]).unwrap();
        assert_eq!(memo.get(&h).unwrap(), [0.0, 1.0, 0.0]);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files stay behind");
    }
}
