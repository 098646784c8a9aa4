//! The shared cache tier on JetStream (DESIGN.md §5, §12): node outputs that
//! one worker computed, readable by every other worker, as the third tier of
//! the engine's cache behind memory and disk ([`SharedTier`]).
//!
//! # Layout
//!
//! - An object store, [`CACHE_STORE`] (file storage), holds each entry — the
//!   codec's encoded bytes — as an object named by the hex of its Merkle
//!   cache key ([`CacheKey::to_hex`]). The object store splits it into chunks
//!   (messages) no larger than the server accepts: 128 KiB, or less when the
//!   server's `max_payload` is smaller, so entries of any size fit.
//! - A key-value bucket, [`CACHE_INDEX`] (file storage, history 1), holds one
//!   small JSON record per entry under the same hex ([`IndexEntry`]: size,
//!   BLAKE3 of the bytes, when it was stored, and which version of the object
//!   it describes).
//!
//! # Index last: a half-written entry is never visible
//!
//! [`NatsCache::put`] writes the object first and the index entry last, and
//! [`NatsCache::get`] and [`NatsCache::contains`] only look at objects that
//! have an index entry. A writer that dies (or loses the server) part way
//! leaves at worst an object without an index entry, which no reader sees and
//! which the next `put` of that key overwrites. Replacing a bad entry first
//! deletes its index entry, so a rewrite is invisible until it is complete.
//!
//! # Verification
//!
//! A reader checks what it fetched against the index: the object's version
//! (its `nuid`) and size before reading, then the length and BLAKE3 of the
//! bytes read. Any mismatch (or an index entry whose object is missing) is
//! an error for that lookup — the engine reports it and recomputes the node
//! — and the reader removes the index entry (only if it is still the
//! revision it read), so that the recomputed outputs are stored again. (A
//! server that does not answer is an error too, but removes nothing.) [`NatsCache::put`] also verifies cheaply before skipping a key
//! that is already indexed: the object must exist and be the version and
//! size the index names, else it is rewritten. (The engine verifies the
//! decoded entry once more with the codec's own checksum.)
//!
//! # Failures and time limits
//!
//! A lookup that fails costs a recompute, so lookups fail fast: each step
//! (index read, object info, and every wait for the next chunk) gives up after
//! [`CacheOptions::lookup_timeout`] (5 s by default), and a dead server never
//! hangs a run. A write is worth more (another worker may be waiting for
//! it), so transient failures (the server restarting) are retried for
//! [`CacheOptions::put_patience`] (30 s by default) before `put` gives up;
//! the engine then turns the error into a warning.
//!
//! # Budget
//!
//! [`NatsCache::open_with_budget`] bounds the object store's bytes (a
//! budget given when the store exists already replaces its budget). A full
//! store keeps what it has — nothing is evicted — and refuses what does not
//! fit: `put` compares the entry's size with the room left and fails at
//! once (without retrying, and without writing part of it), and JetStream
//! itself refuses chunks beyond the limit (object stores "discard new"). The
//! engine turns the failed `put` into a warning and runs go on, recomputing
//! what is not cached. Chunks of a write refused part way (writers racing
//! for the last bytes, a server lost mid-write) belong to no object and are
//! not reclaimed; purging the store's stream (`OBJ_flow-cache`) together
//! with the index starts afresh.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use async_nats::jetstream::object_store::{self, GetErrorKind, InfoErrorKind, ObjectMetadata};
use async_nats::jetstream::{kv, stream, Context};
use bytes::Bytes;
use flow_engine::cache::{CacheKey, SharedTier};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

use crate::cluster::Cluster;
use crate::runs::retry;

/// The object store holding the entries.
pub const CACHE_STORE: &str = "flow-cache";

/// The key-value bucket indexing the complete entries.
pub const CACHE_INDEX: &str = "flow-cache-index";

/// The largest chunk an entry is split into (the object store's default).
pub const MAX_CHUNK: usize = 128 * 1024;

/// What the index says about one stored entry (stored as JSON under the
/// key's hex in [`CACHE_INDEX`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Length of the entry in bytes.
    pub size: u64,
    /// BLAKE3 of the entry's bytes, in hex.
    pub blake3: String,
    /// When the entry was stored, in milliseconds since the Unix epoch.
    pub stored_ms: u64,
    /// The object store's id of the object version written with this entry
    /// (empty when unknown: then only size and hash are checked).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nuid: String,
}

impl IndexEntry {
    /// The index entry of `bytes`, stored now as object version `nuid`.
    pub fn of(bytes: &[u8], nuid: &str) -> IndexEntry {
        let stored_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        IndexEntry {
            size: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
            stored_ms,
            nuid: nuid.to_string(),
        }
    }

    /// The JSON stored in the index.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("an index entry serializes"))
    }

    /// Whether an object described by `info` is the one this entry indexes
    /// (same version when known, same size).
    fn describes(&self, info: &object_store::ObjectInfo) -> bool {
        !info.deleted && info.size as u64 == self.size && (self.nuid.is_empty() || self.nuid == info.nuid)
    }
}

/// Limits of a [`NatsCache`].
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Byte budget of the object store; `None` leaves the store's as it is
    /// (unlimited when it is created). See the module doc for what happens
    /// when it is full.
    pub max_bytes: Option<u64>,
    /// How long `put` retries transient failures before giving up.
    pub put_patience: Duration,
    /// How long each step of a lookup may wait before the lookup fails.
    pub lookup_timeout: Duration,
}

impl Default for CacheOptions {
    /// No budget, 30 s of patience for writes, 5 s per lookup step.
    fn default() -> Self {
        CacheOptions { max_bytes: None, put_patience: Duration::from_secs(30), lookup_timeout: Duration::from_secs(5) }
    }
}

/// The shared cache tier of a cluster: entries in the [`CACHE_STORE`]
/// object store, indexed in [`CACHE_INDEX`] (see the module doc). Its
/// methods block; they may be called from any thread that is not one of the
/// cluster connection's own runtime.
pub struct NatsCache {
    cluster: Arc<Cluster>,
    objects: object_store::ObjectStore,
    /// The object store's stream (for its budget and usage).
    stream: stream::Stream,
    index: kv::Store,
    chunk_size: usize,
    options: CacheOptions,
}

impl NatsCache {
    /// Opens the cluster's shared cache, creating the object store and the
    /// index when missing (no budget).
    pub fn open(cluster: &Arc<Cluster>) -> Result<Arc<NatsCache>> {
        Self::open_with(cluster, CacheOptions::default())
    }

    /// Opens the cluster's shared cache with the object store bounded to
    /// `max_bytes` (`None`: unlimited when created, else left as it is).
    /// A budget given here also replaces the budget of an existing store.
    pub fn open_with_budget(cluster: &Arc<Cluster>, max_bytes: Option<u64>) -> Result<Arc<NatsCache>> {
        Self::open_with(cluster, CacheOptions { max_bytes, ..CacheOptions::default() })
    }

    /// Opens the cluster's shared cache with these limits.
    pub fn open_with(cluster: &Arc<Cluster>, options: CacheOptions) -> Result<Arc<NatsCache>> {
        let js = cluster.handles.js.clone();
        let budget = options.max_bytes;
        let (objects, stream, index) = cluster.call(async move { open_buckets(&js, budget).await })?;
        // Chunks plus their headers must fit in one message.
        let chunk_size = MAX_CHUNK.min(cluster.handles.max_payload.saturating_sub(1024)).max(1024);
        Ok(Arc::new(NatsCache { cluster: Arc::clone(cluster), objects, stream, index, chunk_size, options }))
    }

    /// The limits this cache was opened with.
    pub fn options(&self) -> &CacheOptions {
        &self.options
    }

    /// The index entry of `key`, if the entry is stored (fails after the
    /// lookup timeout).
    pub fn index_entry(&self, key: &CacheKey) -> Result<Option<IndexEntry>> {
        let index = self.index.clone();
        let hex = key.to_hex();
        let limit = self.options.lookup_timeout;
        self.cluster.call(async move { read_index(&index, &hex, limit).await.map(|e| e.map(|(entry, _)| entry)) })
    }
}

impl SharedTier for NatsCache {
    fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, String> {
        let index = self.index.clone();
        let objects = self.objects.clone();
        let hex = key.to_hex();
        let limit = self.options.lookup_timeout;
        self.cluster.call(async move { fetch(&index, &objects, &hex, limit).await }).map_err(|e| format!("{e:#}"))
    }

    fn contains(&self, key: &CacheKey) -> bool {
        matches!(self.index_entry(key), Ok(Some(_)))
    }

    fn put(&self, key: &CacheKey, bytes: &[u8]) -> Result<(), String> {
        let index = self.index.clone();
        let objects = self.objects.clone();
        let stream = self.stream.clone();
        let hex = key.to_hex();
        let bytes = Bytes::copy_from_slice(bytes);
        let chunk_size = self.chunk_size;
        let patience = self.options.put_patience;
        let limit = self.options.lookup_timeout;
        self.cluster
            .call(async move {
                // A full store stays full for a while: fail at once rather
                // than hold the engine's writer for the whole patience.
                let attempt = || async {
                    match store(&index, &objects, &stream, &hex, &bytes, chunk_size, limit).await {
                        Err(e) if is_full(&e) => Ok(Err(e)),
                        other => other.map(Ok),
                    }
                };
                retry(patience, attempt).await.and_then(|stored| stored)
            })
            .map_err(|e| format!("cannot store {key} in the shared cache: {e:#}"))
    }
}

/// The object store, its stream and the index, created when missing; a
/// given budget is applied to the object store.
async fn open_buckets(
    js: &Context,
    budget: Option<u64>,
) -> Result<(object_store::ObjectStore, stream::Stream, kv::Store)> {
    let hint = "is JetStream enabled (`nats-server -js`)?";
    let max_bytes = match budget {
        Some(b) => i64::try_from(b).unwrap_or(i64::MAX),
        None => -1,
    };
    // Another worker may create them at the same time: then ours fails
    // and theirs is there.
    let objects = match js.get_object_store(CACHE_STORE).await {
        Ok(store) => store,
        Err(_) => match js
            .create_object_store(object_store::Config {
                bucket: CACHE_STORE.into(),
                description: Some("flow's shared cache: node outputs by cache key".into()),
                storage: stream::StorageType::File,
                max_bytes,
                ..Default::default()
            })
            .await
        {
            Ok(store) => store,
            Err(e) => js
                .get_object_store(CACHE_STORE)
                .await
                .map_err(|_| anyhow!("cannot open the cache store {CACHE_STORE}: {e} ({hint})"))?,
        },
    };
    let name = format!("OBJ_{CACHE_STORE}");
    let stream = js.get_stream(&name).await.map_err(|e| anyhow!("cannot read the cache store {name}: {e}"))?;
    let mut config = stream.cached_info().config.clone();
    if budget.is_some() && config.max_bytes != max_bytes {
        config.max_bytes = max_bytes;
        js.update_stream(config).await.map_err(|e| anyhow!("cannot set the budget of the cache store {name}: {e}"))?;
    }
    let index = match js.get_key_value(CACHE_INDEX).await {
        Ok(store) => store,
        Err(_) => match js
            .create_key_value(kv::Config {
                bucket: CACHE_INDEX.into(),
                description: "flow's shared cache: index of the complete entries".into(),
                history: 1,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
        {
            Ok(store) => store,
            Err(e) => js
                .get_key_value(CACHE_INDEX)
                .await
                .map_err(|_| anyhow!("cannot open the cache index {CACHE_INDEX}: {e} ({hint})"))?,
        },
    };
    Ok((objects, stream, index))
}

/// The index entry under `hex` and its revision (`None`: no entry), within
/// `limit`. An unreadable record counts as present but bad: an error.
async fn read_index(index: &kv::Store, hex: &str, limit: Duration) -> Result<Option<(IndexEntry, u64)>> {
    let entry = timeout(limit, index.entry(hex))
        .await
        .map_err(|_| anyhow!("the cache index did not answer within {limit:?}"))?
        .map_err(|e| anyhow!("cannot read the cache index: {e}"))?;
    let Some(entry) = entry else { return Ok(None) };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    match serde_json::from_slice(&entry.value) {
        Ok(record) => Ok(Some((record, entry.revision))),
        Err(e) => {
            // Unreadable: remove it so that the next put rewrites the entry.
            let _ = timeout(limit, index.delete_expect_revision(hex, Some(entry.revision))).await;
            Err(anyhow!("the cache index holds a bad record for {hex}: {e}"))
        }
    }
}

/// `get`: the entry under `hex`, verified against its index entry. When the
/// object behind an index entry is missing or is not what the index says,
/// the index entry is removed (if still the one read) and the lookup fails.
async fn fetch(
    index: &kv::Store,
    objects: &object_store::ObjectStore,
    hex: &str,
    limit: Duration,
) -> Result<Option<Vec<u8>>> {
    let Some((entry, revision)) = read_index(index, hex, limit).await? else {
        return Ok(None);
    };
    match read_object(objects, hex, &entry, limit).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(Failed::Bad(e)) => {
            // Best effort: if the removal fails, the next put finds the
            // entry unsound by itself (a missing or other object) and
            // rewrites it.
            let _ = timeout(limit, index.delete_expect_revision(hex, Some(revision))).await;
            Err(e)
        }
        // The server is slow or away: the entry may well be sound.
        Err(Failed::Unreachable(e)) => Err(e),
    }
}

/// Why an object could not be read.
enum Failed {
    /// It is missing or not what its index entry says.
    Bad(anyhow::Error),
    /// The server did not answer (in time).
    Unreachable(anyhow::Error),
}

/// The bytes of object `hex`, checked against `entry`. Each wait (for the
/// object's info, for the next chunk) is bounded by `limit`.
async fn read_object(
    objects: &object_store::ObjectStore,
    hex: &str,
    entry: &IndexEntry,
    limit: Duration,
) -> Result<Vec<u8>, Failed> {
    let bad = |e: anyhow::Error| Failed::Bad(e);
    let mut object = match timeout(limit, objects.get(hex)).await {
        Err(_) => return Err(Failed::Unreachable(anyhow!("the cache store did not answer within {limit:?}"))),
        Ok(Err(e)) if e.kind() == GetErrorKind::NotFound => {
            return Err(bad(anyhow!("the index lists {hex} but its object is missing")));
        }
        Ok(Err(e)) => return Err(Failed::Unreachable(anyhow!("cannot read object {hex}: {e}"))),
        Ok(Ok(object)) => object,
    };
    if !entry.describes(object.info()) {
        return Err(bad(anyhow!(
            "object {hex} is not the one indexed (object: {} bytes, version {}; index: {} bytes, version {})",
            object.info().size,
            object.info().nuid,
            entry.size,
            entry.nuid
        )));
    }
    let size = usize::try_from(entry.size).map_err(|_| bad(anyhow!("object {hex} is too large")))?;
    let mut bytes = Vec::with_capacity(size);
    loop {
        // A bound on every wait, not on the whole read: large entries take
        // their time, a stalled one fails.
        let n = timeout(limit, object.read_buf(&mut bytes))
            .await
            .map_err(|_| {
                Failed::Unreachable(anyhow!("reading object {hex} stalled for {limit:?} after {} bytes", bytes.len()))
            })?
            .map_err(|e| {
                let error = anyhow!("cannot read object {hex}: {e}");
                // The object store's own SHA-256 check failed.
                if e.kind() == std::io::ErrorKind::InvalidData {
                    bad(error)
                } else {
                    Failed::Unreachable(error)
                }
            })?;
        if n == 0 {
            break;
        }
        if bytes.len() > size {
            return Err(bad(anyhow!("object {hex} is longer than its index entry says ({size} bytes)")));
        }
        if bytes.len() == bytes.capacity() {
            bytes.reserve(MAX_CHUNK);
        }
    }
    if bytes.len() != size {
        return Err(bad(anyhow!("object {hex} has {} bytes, its index entry says {size}", bytes.len())));
    }
    let hash = blake3::hash(&bytes).to_hex().to_string();
    if hash != entry.blake3 {
        return Err(bad(anyhow!(
            "object {hex} does not match its index entry (BLAKE3 {hash}, indexed {})",
            entry.blake3
        )));
    }
    Ok(bytes)
}

/// Fails when the store has a budget and `len` bytes (in chunks of
/// `chunk_size`) would not fit in what is left of it: better than having
/// JetStream refuse a chunk part way, which leaves the chunks written before
/// it behind (they belong to no object and are never reclaimed). Writers
/// racing for the last bytes can still be refused part way.
async fn check_room(stream: &stream::Stream, len: usize, chunk_size: usize, limit: Duration) -> Result<()> {
    let info = timeout(limit, stream.get_info())
        .await
        .map_err(|_| anyhow!("the cache store did not answer within {limit:?}"))?
        .map_err(|e| anyhow!("cannot read the cache store's usage: {e}"))?;
    let Ok(budget) = u64::try_from(info.config.max_bytes) else { return Ok(()) };
    if budget == 0 {
        return Ok(());
    }
    // Each message also stores its subject, headers and a little framing.
    let chunks = len.div_ceil(chunk_size.max(1)) as u64;
    let needed = len as u64 + chunks * 128 + 1024;
    let used = info.state.bytes;
    if used.saturating_add(needed) > budget {
        return Err(anyhow!(
            "maximum bytes exceeded: the shared cache store is full ({used} of its {budget} bytes used, \
             {len} more needed)"
        ));
    }
    Ok(())
}

/// Whether a failed write failed because the store is full (its budget, or
/// the server's storage): JetStream says so only in words.
fn is_full(error: &anyhow::Error) -> bool {
    let text = format!("{error:#}");
    ["maximum bytes exceeded", "insufficient resources", "insufficient storage"].iter().any(|s| text.contains(s))
}

/// One attempt at `put`: nothing when the index has a sound entry already,
/// else the object, then its index entry. The checks before writing wait at
/// most `limit` each.
async fn store(
    index: &kv::Store,
    objects: &object_store::ObjectStore,
    stream: &stream::Stream,
    hex: &str,
    bytes: &Bytes,
    chunk_size: usize,
    limit: Duration,
) -> Result<()> {
    let current = timeout(limit, index.entry(hex))
        .await
        .map_err(|_| anyhow!("the cache index did not answer within {limit:?}"))?
        .map_err(|e| anyhow!("cannot read the cache index: {e}"))?;
    if let Some(current) = current.filter(|e| e.operation == kv::Operation::Put) {
        let sound = match serde_json::from_slice::<IndexEntry>(&current.value) {
            Ok(entry) => match timeout(limit, objects.info(hex)).await {
                Err(_) => return Err(anyhow!("the cache store did not answer within {limit:?}")),
                Ok(Ok(info)) => entry.describes(&info),
                Ok(Err(e)) if e.kind() == InfoErrorKind::NotFound => false,
                Ok(Err(e)) => return Err(anyhow!("cannot read object {hex}'s info: {e}")),
            },
            Err(_) => false,
        };
        if sound {
            // Another worker stored it.
            return Ok(());
        }
        // Hide the bad entry while it is rewritten; someone else may have
        // replaced it meanwhile (then the delete is refused: go on anyway,
        // the index written below is the last word).
        let _ = index.delete_expect_revision(hex, Some(current.revision)).await;
    }
    check_room(stream, bytes.len(), chunk_size, limit).await?;
    let meta = ObjectMetadata { name: hex.to_string(), chunk_size: Some(chunk_size), ..Default::default() };
    let mut reader: &[u8] = bytes;
    let info = objects.put(meta, &mut reader).await.map_err(|e| anyhow!("cannot write object {hex}: {e}"))?;
    index
        .put(hex, IndexEntry::of(bytes, &info.nuid).to_bytes())
        .await
        .map_err(|e| anyhow!("cannot write the index entry of {hex}: {e}"))?;
    Ok(())
}
