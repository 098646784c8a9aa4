//! A connection to a cluster's NATS server, with the stream, buckets and
//! stores it uses created when missing. Callers are plain threads (the
//! engine is synchronous): the connection owns a small tokio runtime and
//! [`Cluster::block_on`] / [`Cluster::call`] run async work on it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use async_nats::jetstream::{self, kv, object_store, stream};

use crate::names::{COUNTERS_BUCKET, FILES_STORE, JOB_STREAM, JOB_SUBJECTS, RUNS_BUCKET, WORKERS_BUCKET};

/// How a cluster's runs are handed out and watched.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A job not acknowledged (nor kept alive) for this long goes to
    /// another worker; also the length of a worker's lease on a run.
    pub ack_wait: Duration,
    /// Worker starts of one run before it fails for good (a run that
    /// crashes or loses its worker every time).
    pub max_attempts: u32,
    /// How often workers announce themselves.
    pub heartbeat: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { ack_wait: Duration::from_secs(30), max_attempts: 3, heartbeat: Duration::from_secs(2) }
    }
}

impl Settings {
    /// Deliveries of one job message the stream allows: every attempt, the
    /// delivery that records the failure after the last one, and as many
    /// again for deliveries that found the run held by a live worker.
    pub fn max_deliver(&self) -> i64 {
        2 * i64::from(self.max_attempts) + 2
    }

    /// How long a worker's heartbeat entry lives without being renewed.
    pub fn worker_ttl(&self) -> Duration {
        (self.heartbeat * 5).max(Duration::from_secs(5))
    }
}

/// The handles of one cluster connection (cheap to clone into tasks).
#[derive(Clone)]
pub struct Handles {
    /// The core client (events, cancel, wake-ups).
    pub client: async_nats::Client,
    /// JetStream.
    pub js: jetstream::Context,
    /// Run state.
    pub runs: kv::Store,
    /// Worker heartbeats.
    pub workers: kv::Store,
    /// SaveImage counters.
    pub counters: kv::Store,
    /// Output and input files.
    pub files: object_store::ObjectStore,
    /// Largest message the server accepts.
    pub max_payload: usize,
}

/// A connected cluster.
pub struct Cluster {
    runtime: tokio::runtime::Runtime,
    /// Connection handles.
    pub handles: Handles,
    /// Hand-out settings.
    pub settings: Settings,
    url: String,
}

impl Cluster {
    /// Connects to the NATS server at `url` (JetStream must be enabled) and
    /// creates what is missing.
    pub fn connect(url: &str, settings: Settings) -> Result<Arc<Cluster>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flow-nats")
            .enable_all()
            .build()
            .context("cannot start the NATS client's runtime")?;
        let handles = runtime.block_on(open(url, &settings))?;
        Ok(Arc::new(Cluster { runtime, handles, settings, url: url.to_string() }))
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `future` to its end on this thread (which must not be one of a
    /// tokio runtime's: use [`Cluster::call`] there).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Runs `future` on the connection's runtime and waits for it, from any
    /// thread (also a blocking thread of another runtime).
    pub fn call<F, T>(&self, future: F) -> T
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.runtime.block_on(future);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().expect("the NATS runtime stopped")
    }

    /// Starts `future` on the connection's runtime.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }
}

async fn open(url: &str, settings: &Settings) -> Result<Handles> {
    let client = async_nats::ConnectOptions::new()
        .name("flow")
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| anyhow!("cannot reach the NATS server at {url}: {e}"))?;
    let js = jetstream::new(client.clone());
    let hint = "is JetStream enabled (`nats-server -js`)?";
    js.get_or_create_stream(stream::Config {
        name: JOB_STREAM.into(),
        subjects: vec![JOB_SUBJECTS.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow!("cannot open the job stream {JOB_STREAM}: {e} ({hint})"))?;
    let runs = bucket(&js, RUNS_BUCKET, Duration::ZERO).await?;
    let workers = bucket(&js, WORKERS_BUCKET, settings.worker_ttl()).await?;
    let counters = bucket(&js, COUNTERS_BUCKET, Duration::ZERO).await?;
    let files = match js.get_object_store(FILES_STORE).await {
        Ok(s) => s,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: FILES_STORE.into(),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("cannot open the file store {FILES_STORE}: {e}"))?,
    };
    let max_payload = client.server_info().max_payload;
    Ok(Handles { client, js, runs, workers, counters, files, max_payload })
}

/// A key-value bucket stored in files (entries live `max_age`, zero: for ever).
async fn bucket(js: &jetstream::Context, name: &str, max_age: Duration) -> Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: name.into(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow!("cannot open the bucket {name}: {e}"))
}
