//! `flow worker --nats URL`: executes the cluster's runs on this machine's
//! engine. Each slot pulls one job at a time (families whose models this
//! worker holds first), takes the run with a compare-and-swap on its
//! record, keeps the job and its lease alive while it runs, forwards its
//! events, stores its output files in the cluster, and ends the run with
//! another compare-and-swap before it acknowledges the job. On SIGTERM a
//! worker takes no more jobs, lets its runs finish for a while, then hands
//! the rest back (they resume elsewhere from the shared cache).

mod heartbeat;
mod slot;
mod tap;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;
use flow_engine::graph::DeviceChoice;
use flow_engine::CancelToken;
use flow_server::reporter::timestamp;
use flow_server::worker::Executor;

pub use heartbeat::{host_name, WorkerInfo};

use crate::cluster::Cluster;
use crate::names::bucket_key;

/// Families remembered (their jobs are pulled first while their models stay in the pool).
const RESIDENT_FAMILIES: usize = 4;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Its name in the cluster (unique).
    pub name: String,
    /// The device its runs use by default.
    pub device: DeviceChoice,
    /// Runs executed at once.
    pub slots: usize,
    /// On SIGTERM, how long running runs may go on before they are handed back.
    pub drain_timeout: Duration,
}

/// A run this worker executes now.
struct Held {
    id: String,
    cancel: CancelToken,
    /// Stopped to be handed back (the worker drains), not cancelled by a user.
    hand_back: bool,
}

#[derive(Default)]
struct State {
    running: BTreeMap<String, Held>,
    /// Model families run lately, most recent first, with the pool keys of
    /// the models their runs loaded.
    families: VecDeque<(String, BTreeSet<String>)>,
    finished: u64,
}

/// A worker process's shared state.
pub struct Worker {
    cluster: Arc<Cluster>,
    executor: Executor,
    options: WorkerOptions,
    state: Mutex<State>,
    draining: AtomicBool,
    started_ms: u64,
    /// Wakes the heartbeat when a run starts or ends.
    changed: tokio::sync::Notify,
}

impl Worker {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn info(&self) -> WorkerInfo {
        let s = self.lock();
        WorkerInfo {
            name: self.options.name.clone(),
            host: host_name(),
            pid: std::process::id(),
            device: self.executor.engine.resolve_device(self.options.device).to_string(),
            slots: self.options.slots,
            running: s.running.values().map(|h| h.id.clone()).collect(),
            families: s.families.iter().map(|(f, _)| f.clone()).collect(),
            models: self.executor.engine.models().resident_keys(),
            finished: s.finished,
            started_ms: self.started_ms,
            beat_ms: timestamp(),
            draining: self.draining(),
        }
    }

    /// Families whose models are in this worker's pool, most recent first.
    fn resident(&self) -> Vec<String> {
        let pool: BTreeSet<String> = self.executor.engine.models().resident_keys().into_iter().collect();
        self.lock()
            .families
            .iter()
            .filter(|(_, keys)| !keys.is_empty() && keys.is_subset(&pool))
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// A run of `family` ended; `loaded` are the pool keys that appeared
    /// while it ran (its models, unless they were in the pool already).
    fn remember_family(&self, family: &str, loaded: BTreeSet<String>) {
        let mut s = self.lock();
        let mut keys = s.families.iter().find(|(f, _)| f == family).map(|(_, k)| k.clone()).unwrap_or_default();
        keys.extend(loaded);
        s.families.retain(|(f, _)| f != family);
        s.families.push_front((family.to_string(), keys));
        s.families.truncate(RESIDENT_FAMILIES);
    }

    async fn beat(self: Arc<Self>) {
        let key = bucket_key(&self.options.name);
        let workers = self.cluster.handles.workers.clone();
        let mut tick = tokio::time::interval(self.cluster.settings.heartbeat);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.changed.notified() => {}
            }
            if let Ok(bytes) = serde_json::to_vec(&self.info()) {
                let _ = workers.put(&key, bytes.into()).await;
            }
        }
    }
}

/// Runs a worker until `shutdown` completes, then drains it. `on_ready` is
/// called once it pulls jobs.
pub fn run(
    cluster: Arc<Cluster>,
    executor: Executor,
    options: WorkerOptions,
    on_ready: impl FnOnce(&WorkerInfo),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    anyhow::ensure!(options.slots > 0, "a worker needs at least one slot");
    let worker = Arc::new(Worker {
        cluster: Arc::clone(&cluster),
        executor,
        options,
        state: Mutex::default(),
        draining: AtomicBool::new(false),
        started_ms: timestamp(),
        changed: tokio::sync::Notify::new(),
    });
    let beat = cluster.spawn(Arc::clone(&worker).beat());
    let slots: Vec<_> = (0..worker.options.slots)
        .map(|i| {
            let w = Arc::clone(&worker);
            std::thread::Builder::new()
                .name(format!("flow-worker-{i}"))
                .spawn(move || slot::pull_and_run(&w))
                .expect("cannot start a worker thread")
        })
        .collect();
    on_ready(&worker.info());
    cluster.block_on(shutdown);
    worker.draining.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + worker.options.drain_timeout;
    while !worker.lock().running.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for held in worker.lock().running.values_mut() {
        held.hand_back = true;
        held.cancel.cancel();
    }
    for s in slots {
        let _ = s.join();
    }
    beat.abort();
    let key = bucket_key(&worker.options.name);
    let workers = cluster.handles.workers.clone();
    cluster.block_on(async move {
        let _ = workers.delete(&key).await;
    });
    Ok(())
}
