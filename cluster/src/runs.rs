//! Run state in the runs bucket: read, create, and compare-and-swap. A
//! write names the revision it read; when another process wrote since, the
//! write is refused and the caller reads again. So a worker that stalled
//! and came back cannot overwrite what the worker that took over wrote.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, Result};
use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};

use crate::record::RunRecord;

/// What [`create`] found.
pub enum Created {
    /// The record was stored (at this revision).
    New(u64),
    /// The key was there already, with this record and revision.
    Exists(Box<RunRecord>, u64),
}

/// The record of `key` and its revision.
pub async fn read(kv: &kv::Store, key: &str) -> Result<Option<(RunRecord, u64)>> {
    let Some(entry) = kv.entry(key).await.map_err(|e| anyhow!("cannot read run {key}: {e}"))? else {
        return Ok(None);
    };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    let record = serde_json::from_slice(&entry.value).map_err(|e| anyhow!("run {key} holds a bad record: {e}"))?;
    Ok(Some((record, entry.revision)))
}

/// Stores a new run, unless `key` exists.
pub async fn create(kv: &kv::Store, key: &str, record: &RunRecord, limit: usize) -> Result<Created> {
    let bytes = record.to_bytes(limit)?;
    match kv.create(key, bytes.into()).await {
        Ok(rev) => Ok(Created::New(rev)),
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => match read(kv, key).await? {
            Some((r, rev)) => Ok(Created::Exists(Box::new(r), rev)),
            None => Err(anyhow!("run {key} exists but cannot be read")),
        },
        Err(e) => Err(anyhow!("cannot store run {key}: {e}")),
    }
}

/// Writes `record` if `key` is still at `revision`: its new revision, or
/// `None` when someone wrote since.
pub async fn swap(kv: &kv::Store, key: &str, record: &RunRecord, revision: u64, limit: usize) -> Result<Option<u64>> {
    let bytes = record.to_bytes(limit)?;
    match kv.update(key, bytes.into(), revision).await {
        Ok(rev) => Ok(Some(rev)),
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
        Err(e) => Err(anyhow!("cannot update run {key}: {e}")),
    }
}

/// Reads, changes and writes back run `key` until the write wins:
/// `change` gets the current record and returns the new one, or `None` to
/// leave it as it is. Returns the record as written (or as left) and its
/// revision; `None` when there is no such run. Transient errors (the NATS
/// server restarting) are retried for `patience`.
pub async fn update<F>(
    kv: &kv::Store,
    key: &str,
    limit: usize,
    patience: Duration,
    mut change: F,
) -> Result<Option<(RunRecord, u64, bool)>>
where
    F: FnMut(&RunRecord) -> Option<RunRecord>,
{
    loop {
        let Some((current, rev)) = retry(patience, || read(kv, key)).await? else {
            return Ok(None);
        };
        let Some(next) = change(&current) else {
            return Ok(Some((current, rev, false)));
        };
        if let Some(new_rev) = retry(patience, || swap(kv, key, &next, rev, limit)).await? {
            return Ok(Some((next, new_rev, true)));
        }
    }
}

/// Runs `op` until it succeeds or `patience` has passed since the first
/// failure (backing off from 50 ms to 2 s): a NATS server restarting is a
/// pause, not a failure.
pub async fn retry<T, Fut, Op>(patience: Duration, mut op: Op) -> Result<T>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(50);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= patience => return Err(e),
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}
