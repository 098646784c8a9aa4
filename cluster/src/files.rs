//! Files shared through the cluster's object store: what workers write
//! (`output/...`, `temp/...`) for the front end's `/view` and for `flow run
//! --nats`, and the inputs uploaded to the front end for the workers. The
//! object store writes an object's chunks before its description, so a
//! half-written object is never found; its SHA-256 is checked on read.
//! SaveImage numbers are shared through a bucket so two workers never
//! write the same file name.

use std::time::Duration;

use anyhow::{anyhow, Result};
use async_nats::jetstream::kv;
use async_nats::jetstream::object_store::ObjectStore;
use tokio::io::AsyncReadExt;

use crate::names::bucket_key;
use crate::runs::retry;

/// The object name of a file: `KIND/SUBFOLDER/NAME` (`KIND/NAME` at the top).
pub fn object_name(kind: &str, subfolder: &str, name: &str) -> String {
    let sub = subfolder.trim_matches('/');
    if sub.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{sub}/{name}")
    }
}

/// Stores a file's bytes.
pub async fn put(store: &ObjectStore, name: &str, bytes: &[u8]) -> Result<()> {
    let mut reader = bytes;
    store.put(name, &mut reader).await.map_err(|e| anyhow!("cannot store {name} in the cluster: {e}"))?;
    Ok(())
}

/// A file's bytes, if the store has it.
pub async fn get(store: &ObjectStore, name: &str) -> Result<Option<Vec<u8>>> {
    let mut object = match store.get(name).await {
        Ok(o) => o,
        Err(e) if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("cannot read {name} from the cluster: {e}")),
    };
    let mut bytes = Vec::with_capacity(object.info.size);
    object.read_to_end(&mut bytes).await.map_err(|e| anyhow!("cannot read {name} from the cluster: {e}"))?;
    Ok(Some(bytes))
}

/// The SaveImage number to use for `prefix`: one more than any handed out
/// in the cluster, and at least `at_least` (the first free one on the
/// calling machine).
pub async fn next_counter(counters: &kv::Store, prefix: &str, at_least: u64, patience: Duration) -> Result<u64> {
    let key = format!("n/{}", bucket_key(prefix));
    loop {
        let current = retry(patience, || async {
            counters.entry(key.as_str()).await.map_err(|e| anyhow!("cannot read counter {prefix}: {e}"))
        })
        .await?;
        let (seen, rev) = match &current {
            Some(e) if e.operation == kv::Operation::Put => {
                (std::str::from_utf8(&e.value).ok().and_then(|t| t.parse::<u64>().ok()).unwrap_or(0), e.revision)
            }
            Some(e) => (0, e.revision),
            None => (0, 0),
        };
        let n = (seen + 1).max(at_least);
        let value = n.to_string().into_bytes().into();
        let written = if rev == 0 { counters.create(key.as_str(), value).await.is_ok() } else {
            counters.update(key.as_str(), value, rev).await.is_ok()
        };
        if written {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
