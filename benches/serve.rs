//! `flow serve`: what the server adds to a run. The real server runs
//! in-process (`flow_server::serve` on port 0, the CLI's disk cache in a
//! temporary folder), driven by a client over HTTP and WebSocket as ComfyUI
//! clients drive it:
//!
//! - `round_trip/in_flight_K`: `POST /prompt` of a trivial two-node flow
//!   graph (`text.template` → a file writer), wait for the prompt's final
//!   `executing {node: null}` on the WebSocket (sent once its history entry is
//!   stored), then `GET /history/{id}`; K prompts submitted at once;
//! - `event_latency`: the file-writer node's op returning (the engine's
//!   `node_finished` follows) → the `executed` frame for it read by the
//!   client (its reader thread blocks on the socket, so the stamp is the
//!   arrival);
//! - `overhead` (measured first, on a server with an empty history): the same graph run in-process with the engine directly
//!   (what `flow run` does after parsing: validate, plan, run on the same
//!   kind of engine), against one server round trip.
//!
//! Every run's text is new, so nothing is served from the cache.
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench serve`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flow_engine::events::null_sink;
use flow_engine::graph::{self, DeviceChoice};
use flow_engine::run::{NoModels, PlanOptions};
use flow_engine::{
    CancelToken, Cost, Engine, EngineConfig, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Registry, ValueType,
};
use flow_server::ServerConfig;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// When each `bench.stamp` node returned, by the text it wrote.
fn stamps() -> &'static Mutex<HashMap<String, Instant>> {
    static STAMPS: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    STAMPS.get_or_init(Mutex::default)
}

/// `file.write_text` that also notes when it returned.
struct Stamp {
    spec: OpSpec,
}

impl Stamp {
    fn new() -> Self {
        Stamp {
            spec: OpSpec {
                name: "bench.stamp".into(),
                version: 1,
                doc: "Writes text to a file and notes when it returned (serve bench).".into(),
                inputs: vec![
                    PortSpec::new("path", ValueType::Text, "the file to write"),
                    PortSpec::new("text", ValueType::Text, "the text"),
                ],
                outputs: vec![PortSpec::new("path", ValueType::Text, "the path written")],
                output: true,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for Stamp {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let (path, text) = (inputs.text("path")?, inputs.text("text")?);
        ctx.write_output(path, text.as_bytes())?;
        stamps().lock().unwrap().insert(text.to_string(), Instant::now());
        Ok(Outputs::single("path", path))
    }
}

fn registry() -> Registry {
    let mut reg = flow_nodes::registry();
    reg.register(Stamp::new());
    reg
}

/// An engine like the server's: disk cache in `cache`, CPU.
fn engine(cache: &Path) -> Engine {
    let config = EngineConfig {
        cache_dir: Some(cache.to_path_buf()),
        memory_budget: 1 << 30,
        default_device: DeviceChoice::Cpu,
        ..Default::default()
    };
    Engine::new(registry(), Arc::new(NoModels), config).expect("engine")
}

/// The trivial graph; `n` makes its text (and so its cache key) new.
fn graph_yaml(n: u64) -> String {
    format!(
        "flow: 1\nnodes:\n  t:\n    op: text.template\n    in: {{template: \"run {n}\"}}\n  \
         w:\n    op: bench.stamp\n    in: {{path: \"output/r{n}.txt\", text: $t}}\n"
    )
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn fresh() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The in-process server, stopped on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let cache = dir.join("cache");
        let mut config =
            ServerConfig::new("127.0.0.1:0".parse().unwrap(), &cache, dir.join("input"), dir.join("output"));
        config.concurrent_runs = 2;
        let engine = engine(&cache);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = channel();
        let thread = std::thread::spawn(move || {
            let ready = move |addr: SocketAddr, _: &[String]| ready_tx.send(addr).unwrap();
            flow_server::serve(config, engine, ready, async move {
                let _ = stopped.await;
            })
            .expect("the server");
        });
        let addr = ready.recv_timeout(Duration::from_secs(60)).expect("the server did not start");
        Server { addr, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP/1.1 request on its own connection; the status and JSON body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connecting");
    stream.set_nodelay(true).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let mut content = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        content = unchunk(&content);
    }
    (status, serde_json::from_slice(&content).unwrap_or(Value::Null))
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 4 + size..];
    }
    out
}

/// A WebSocket client whose reader thread stamps each message on arrival.
struct Client {
    id: String,
    messages: Receiver<(Instant, Value)>,
}

impl Client {
    fn connect(addr: SocketAddr, id: &str) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut ws, _) = tungstenite::client(format!("ws://{addr}/ws?clientId={id}"), stream).expect("websocket");
        let (tx, messages) = channel();
        std::thread::spawn(move || read_loop(&mut ws, &tx));
        Client { id: id.to_string(), messages }
    }

    /// Queues the graph; its prompt id and text.
    fn submit(&self, addr: SocketAddr) -> (String, String) {
        let n = fresh();
        let body = json!({ "prompt": graph_yaml(n), "client_id": self.id });
        let (status, answer) = http(addr, "POST", "/prompt", body.to_string().as_bytes());
        assert_eq!(status, 200, "{answer}");
        (answer["prompt_id"].as_str().expect("a prompt id").to_string(), format!("run {n}"))
    }

    /// Reads until every prompt in `ids` is done; when each one's `executed` arrived.
    fn wait(&self, ids: &[String]) -> HashMap<String, Instant> {
        let mut left: Vec<&String> = ids.iter().collect();
        let mut executed = HashMap::new();
        while !left.is_empty() {
            let (at, m) = self.messages.recv_timeout(Duration::from_secs(60)).expect("a message");
            let id = m["data"]["prompt_id"].as_str().unwrap_or_default().to_string();
            match m["type"].as_str() {
                Some("executed") => {
                    executed.insert(id, at);
                }
                Some("execution_error") | Some("execution_interrupted") => panic!("a run failed: {m}"),
                Some("executing") if m["data"]["node"].is_null() => left.retain(|i| **i != id),
                _ => {}
            }
        }
        executed
    }
}

fn read_loop(ws: &mut WebSocket<TcpStream>, tx: &std::sync::mpsc::Sender<(Instant, Value)>) {
    while let Ok(message) = ws.read() {
        let at = Instant::now();
        if let Message::Text(t) = message {
            let Ok(v) = serde_json::from_str(t.as_str()) else { continue };
            if tx.send((at, v)).is_err() {
                return;
            }
        }
    }
}

/// Submits `k` prompts, waits for all, reads their history entries.
fn round_trips(server: &Server, client: &Client, k: usize) {
    let ids: Vec<String> = (0..k).map(|_| client.submit(server.addr).0).collect();
    client.wait(&ids);
    for id in &ids {
        let (status, history) = http(server.addr, "GET", &format!("/history/{id}"), b"");
        assert_eq!(status, 200);
        assert_eq!(history[id]["status"]["completed"], true, "{history}");
    }
}

fn bench_serve(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let client = Client::connect(server.addr, "bench");
    let hello = client.messages.recv_timeout(Duration::from_secs(10)).expect("the status message").1;
    assert_eq!(hello["type"], "status", "{hello}");

    // First, on a server with an empty history (a per-run cost grows with the runs served).
    let mut group = c.benchmark_group("serve/overhead");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let direct_dir = tempfile::tempdir().expect("temp dir");
    let direct = engine(&direct_dir.path().join("cache"));
    let reg = registry();
    group.bench_function("engine_direct", |b| {
        b.iter(|| {
            let yaml = graph_yaml(fresh());
            let g = graph::from_bytes("bench.yaml", direct_dir.path(), yaml.as_bytes(), &[], &reg)
                .unwrap_or_else(|d| panic!("{}", d.render()));
            let report = direct.run(Arc::new(g), &PlanOptions::default(), null_sink(), CancelToken::new());
            assert!(report.ok());
        })
    });
    group.bench_function("server_round_trip", |b| b.iter(|| round_trips(&server, &client, 1)));
    group.finish();

    let mut group = c.benchmark_group("serve/round_trip");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    for k in [1, 4, 16] {
        group.throughput(Throughput::Elements(k as u64));
        group.bench_function(format!("in_flight_{k}"), |b| b.iter(|| round_trips(&server, &client, k)));
    }
    group.finish();

    let mut group = c.benchmark_group("serve");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.bench_function("event_latency", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (id, text) = client.submit(server.addr);
                let arrived = client.wait(std::slice::from_ref(&id))[&id];
                let returned = stamps().lock().unwrap().remove(&text).expect("the node ran");
                total += arrived.duration_since(returned);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench_serve);
criterion_main!(benches);
