//! One slot of a worker: pull a job, take its run, run it, end it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use async_nats::jetstream::message::{AckKind, Acker};
use flow_engine::graph::{Expr, Graph};
use flow_engine::{CancelToken, Event, Value};
use flow_server::job::{HistoryEntry, Job};
use flow_server::remote::RunListener;
use flow_server::reporter::timestamp;
use futures_util::StreamExt;

use super::tap::Tap;
use super::{Held, Worker};
use crate::files;
use crate::follow::PATIENCE;
use crate::jobs::{classes_for, Puller, IDLE_POLL};
use crate::names::{cancel_subject, events_subject, parse_job_subject, WAKE};
use crate::record::{RunRecord, RunState};
use crate::transitions::{self, Take};
use crate::runs;

/// How long the acknowledgement of an ended run's job is retried.
const ACK_PATIENCE: Duration = Duration::from_secs(5);

/// Pulls and runs jobs until the worker drains.
pub fn pull_and_run(worker: &Arc<Worker>) {
    let h = worker.cluster.handles.clone();
    let classes = classes_for(worker.options.device);
    let settings = worker.cluster.settings.clone();
    let mut setup = None;
    while !worker.draining() {
        if setup.is_none() {
            let (js, client, classes, settings) = (h.js.clone(), h.client.clone(), classes.clone(), settings.clone());
            match worker.cluster.block_on(async move {
                anyhow::Ok((Puller::new(&js, classes, settings).await?, client.subscribe(WAKE).await?))
            }) {
                Ok(s) => setup = Some(s),
                Err(e) => {
                    eprintln!("flow worker: {e:#}");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
        }
        let Some((puller, wake)) = setup.as_mut() else { continue };
        let resident = worker.resident();
        let next = worker.cluster.block_on(async {
            match puller.next(&resident).await {
                Ok(None) => {
                    let _ = tokio::time::timeout(IDLE_POLL, wake.next()).await;
                    Ok(None)
                }
                other => other,
            }
        });
        match next {
            Ok(Some((message, ack_wait))) => {
                if let Err(e) = take(worker, message, ack_wait) {
                    eprintln!("flow worker: {e:#}");
                }
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("flow worker: {e:#}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// Takes the run of one job message, if it is free, and runs it.
/// `ack_wait` is the job consumer's: the lease on the run lasts as long.
fn take(worker: &Arc<Worker>, message: async_nats::jetstream::Message, ack_wait: Duration) -> Result<()> {
    let key = String::from_utf8_lossy(&message.payload).into_owned();
    let family = parse_job_subject(&message.subject).map(|(_, f)| f.to_string()).unwrap_or_default();
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    let (_, acker) = message.split();
    let acker = Arc::new(acker);
    let me = worker.options.name.clone();
    let h = worker.cluster.handles.clone();
    let settings = worker.cluster.settings.clone();
    let mut decision = Take::Ended;
    let now = timestamp();
    let found = worker.cluster.block_on(runs::update(&h.runs, &key, h.max_payload, PATIENCE, |r| {
        decision = transitions::take(r, &me, now, ack_wait, settings.max_attempts);
        match &decision {
            Take::Run(next) | Take::End(next) => Some((**next).clone()),
            Take::Ended | Take::Later(_) => None,
        }
    }))?;
    if found.is_none() {
        // A job whose run is gone (its record was removed).
        return ack(worker, &acker, AckKind::Term);
    }
    match decision {
        Take::Ended | Take::End(_) => ack(worker, &acker, AckKind::Ack),
        // A live worker holds the run: this is a second copy of its job (a
        // front end queued it again); it waits for the run to end, and is
        // dropped before the stream would keep it undeliverable.
        Take::Later(_) if delivered + 1 >= settings.max_deliver() => ack(worker, &acker, AckKind::Term),
        Take::Later(after) => ack(worker, &acker, AckKind::Nak(Some(after))),
        Take::Run(record) => execute(worker, &key, &family, *record, acker, ack_wait),
    }
}

fn ack(worker: &Worker, acker: &Arc<Acker>, kind: AckKind) -> Result<()> {
    let acker = Arc::clone(acker);
    worker
        .cluster
        .block_on(async move { acker.ack_with(kind).await })
        .map_err(|e| anyhow::anyhow!("cannot acknowledge a job: {e}"))
}

/// Runs a run this worker took, and ends it.
fn execute(
    worker: &Arc<Worker>,
    key: &str,
    family: &str,
    record: RunRecord,
    acker: Arc<Acker>,
    ack_wait: Duration,
) -> Result<()> {
    let job = record.job;
    let cancel = CancelToken::new();
    let lost = Arc::new(AtomicBool::new(false));
    let user_cancel = Arc::new(AtomicBool::new(false));
    worker.lock().running.insert(
        key.to_string(),
        Held { id: job.prompt_id.clone(), cancel: cancel.clone(), hand_back: false },
    );
    worker.changed.notify_one();
    let h = worker.cluster.handles.clone();
    let (tap, publishing) = Tap::new(h.client.clone(), events_subject(key));
    let tap = Arc::new(tap);
    let publishing = worker.cluster.spawn(publishing);
    let keepalive = worker.cluster.spawn(keep_alive(
        Arc::clone(worker),
        key.to_string(),
        Arc::clone(&acker),
        cancel.clone(),
        Arc::clone(&lost),
        ack_wait,
    ));
    let listening = worker.cluster.spawn(listen_for_cancel(
        h.client.clone(),
        cancel_subject(key),
        cancel.clone(),
        Arc::clone(&user_cancel),
    ));
    let pool = worker.executor.engine.models();
    let before: BTreeSet<String> = pool.resident_keys().into_iter().collect();
    let listener = Arc::new(Listener { worker: Arc::clone(worker), tap: Arc::clone(&tap) });
    let (entry, interrupted) = worker.executor.run(&job, cancel, Some(listener));
    let loaded: BTreeSet<String> = pool.resident_keys().into_iter().filter(|k| !before.contains(k)).collect();
    worker.cluster.block_on(tap.flush());
    keepalive.abort();
    listening.abort();
    let result = end(worker, key, &job, entry, interrupted, &acker, &lost, &user_cancel);
    publishing.abort();
    worker.executor.runs.release(&job.prompt_id);
    let mut s = worker.lock();
    s.running.remove(key);
    s.finished += 1;
    drop(s);
    worker.remember_family(family, loaded);
    worker.changed.notify_one();
    result
}

/// Ends a run: hands it back (the worker drains), or stores its files and
/// records its end, then acknowledges the job. Nothing is written when
/// another worker took the run over.
#[allow(clippy::too_many_arguments)]
fn end(
    worker: &Arc<Worker>,
    key: &str,
    job: &Job,
    entry: HistoryEntry,
    interrupted: bool,
    acker: &Arc<Acker>,
    lost: &AtomicBool,
    user_cancel: &AtomicBool,
) -> Result<()> {
    if lost.load(Ordering::SeqCst) {
        return Ok(());
    }
    let me = worker.options.name.clone();
    let h = worker.cluster.handles.clone();
    let hand_back = worker.lock().running.get(key).is_some_and(|held| held.hand_back);
    if interrupted && hand_back && !user_cancel.load(Ordering::SeqCst) {
        let handed = worker
            .cluster
            .block_on(runs::update(&h.runs, key, h.max_payload, PATIENCE, |r| transitions::hand_back(r, &me)))?;
        if handed.is_some_and(|(_, _, changed)| changed) {
            return ack(worker, acker, AckKind::Nak(None));
        }
        return Ok(());
    }
    let record = worker.executor.runs.record(&job.prompt_id).unwrap_or_default();
    for output in &record.outputs {
        let Some(path) = &output.path else { continue };
        let file = worker.executor.workspace.root().join(path);
        match std::fs::read(&file) {
            Ok(bytes) => {
                let (files, name) = (h.files.clone(), path.clone());
                worker.cluster.block_on(runs::retry(PATIENCE, || files::put(&files, &name, &bytes)))?;
            }
            Err(e) => eprintln!("flow worker: cannot read {}: {e}", file.display()),
        }
    }
    let state = if interrupted {
        RunState::Interrupted
    } else if entry.status.completed {
        RunState::Succeeded
    } else {
        RunState::Failed
    };
    let now = timestamp();
    let ended = worker.cluster.block_on(runs::update(&h.runs, key, h.max_payload, PATIENCE, |r| {
        transitions::end(r, &me, state, &entry, &record, now)
    }))?;
    if ended.is_some_and(|(_, _, changed)| changed) {
        let acker = Arc::clone(acker);
        let acked = worker.cluster.block_on(runs::retry(ACK_PATIENCE, || {
            let acker = Arc::clone(&acker);
            async move { acker.double_ack().await.map_err(|e| anyhow::anyhow!("{e}")) }
        }));
        // The run's end is recorded: a job redelivered for want of this
        // acknowledgement is acknowledged by the worker that finds it ended.
        if let Err(e) = acked {
            eprintln!("flow worker: run {key} ended, its job's acknowledgement is not confirmed ({e})");
        }
    }
    Ok(())
}

/// Keeps the job (progress acks) and the lease on its run alive; stops the
/// run when another worker took it over, or someone asked to cancel it.
async fn keep_alive(
    worker: Arc<Worker>,
    key: String,
    acker: Arc<Acker>,
    cancel: CancelToken,
    lost: Arc<AtomicBool>,
    ack_wait: Duration,
) {
    let h = worker.cluster.handles.clone();
    let me = worker.options.name.clone();
    let every = (ack_wait / 4).max(Duration::from_millis(100));
    let lease_ms = ack_wait.as_millis() as u64;
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let _ = acker.ack_with(AckKind::Progress).await;
        let mut taken_over = false;
        let mut cancelled = false;
        let renewed = runs::update(&h.runs, &key, h.max_payload, every, |r| {
            taken_over = !transitions::holds(r, &me);
            cancelled = r.cancel_requested;
            transitions::renew(r, &me, timestamp() + lease_ms)
        })
        .await;
        if matches!(renewed, Ok(None)) || taken_over {
            lost.store(true, Ordering::SeqCst);
            cancel.cancel();
            return;
        }
        if cancelled {
            cancel.cancel();
        }
    }
}

/// Stops the run when its cancel subject says so.
async fn listen_for_cancel(client: async_nats::Client, subject: String, cancel: CancelToken, by_user: Arc<AtomicBool>) {
    let Ok(mut sub) = client.subscribe(subject).await else { return };
    if sub.next().await.is_some() {
        by_user.store(true, Ordering::SeqCst);
        cancel.cancel();
    }
}

/// What a worker does as its run goes: fetches the inputs the graph reads,
/// forwards the events.
struct Listener {
    worker: Arc<Worker>,
    tap: Arc<Tap>,
}

impl RunListener for Listener {
    fn prepared(&self, graph: &Graph) {
        if let Err(e) = fetch_inputs(&self.worker, graph) {
            eprintln!("flow worker: {e:#}");
        }
    }

    fn unneeded(&self, nodes: Vec<String>) {
        self.tap.unneeded(nodes);
    }

    fn event(&self, event: Event) {
        self.tap.event(event);
    }
}

/// Fetches the inputs `graph` reads (`input/...`) that this machine lacks.
fn fetch_inputs(worker: &Worker, graph: &Graph) -> Result<()> {
    let ws = &worker.executor.workspace;
    for node in &graph.nodes {
        for expr in node.inputs.values() {
            let Expr::Literal(Value::Text(t)) = expr else { continue };
            let Some(rel) = t.strip_prefix("input/") else { continue };
            let local = ws.root().join(&**t);
            if rel.contains("..") || local.exists() {
                continue;
            }
            let (files, name) = (worker.cluster.handles.files.clone(), t.to_string());
            if let Some(bytes) = worker.cluster.block_on(async move { files::get(&files, &name).await })? {
                flow_engine::files::write_atomic(&local, &bytes)?;
            }
        }
    }
    Ok(())
}
