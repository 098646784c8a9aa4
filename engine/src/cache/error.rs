//! The errors of the cache tiers.

use std::io;
use std::path::PathBuf;

/// Why a stored entry cannot be trusted. Every variant means "recompute".
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the fixed header (magic and hash): a truncated write.
    #[error("truncated: {len} bytes, shorter than the {min}-byte header")]
    Truncated {
        /// Bytes found.
        len: usize,
        /// Bytes the header alone needs.
        min: usize,
    },
    /// The file does not start with the entry magic.
    #[error("not a flow cache entry (bad magic)")]
    BadMagic,
    /// The payload does not match its recorded hash: truncated or damaged.
    #[error("content hash mismatch (truncated or damaged)")]
    HashMismatch,
    /// The payload is intact but cannot be read back (an unknown layout, an
    /// object without a registered decoder, an unsupported dtype).
    #[error("unreadable entry: {0}")]
    Malformed(String),
}

/// An error of the memory or disk cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A disk entry failed verification; it has been deleted (when possible)
    /// and must be recomputed.
    #[error("corrupt cache entry {}: {reason}", path.display())]
    Corrupt {
        /// The entry's file.
        path: PathBuf,
        /// What verification found.
        reason: DecodeError,
    },
    /// Reading or writing the cache folder failed.
    #[error("cache I/O error on {}: {error}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error (in the message, not chained, so that it is
        /// said once).
        error: io::Error,
    },
    /// The entry is larger than a quarter of the disk budget; it is kept in
    /// memory only.
    #[error("{size} bytes, more than a quarter of the disk cache budget of {budget} bytes: kept in memory only (raise it with --disk-budget or FLOW_DISK_BUDGET)")]
    TooLarge {
        /// The entry's size.
        size: u64,
        /// The disk budget.
        budget: u64,
    },
    /// Outputs could not be turned into an entry (e.g. a tensor dtype the
    /// entry format does not hold).
    #[error("cannot encode cache entry: {0}")]
    Encode(String),
}

impl CacheError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        CacheError::Io {
            path: path.into(),
            error: source,
        }
    }
}
