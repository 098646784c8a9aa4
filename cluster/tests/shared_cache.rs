//! The shared cache tier on a real nats-server: round trips, two
//! connections, half-written and mismatched entries, two engines sharing
//! outputs, and a server restart.

#[path = "../../tests/common/nats.rs"]
mod nats;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flow_cluster::shared_cache::{CacheOptions, IndexEntry, CACHE_INDEX, CACHE_STORE};
use flow_cluster::{Cluster, NatsCache, Settings};
use flow_engine::cache::{CacheKey, SharedTier};
use flow_engine::graph::Graph;
use flow_engine::run::{NoModels, PlanOptions, RunReport};
use flow_engine::{
    CancelToken, Cost, Engine, EngineConfig, Event, EventSink, Inputs, NodeStatus, Op, OpContext, OpSpec, Outputs,
    PortSpec, Registry, Value, ValueType,
};
use nats::NatsServer;

fn server(dir: &Path) -> NatsServer {
    NatsServer::start(&dir.join("nats"))
}

fn connect(server: &NatsServer) -> Arc<Cluster> {
    Cluster::connect(&server.url(), Settings::default()).unwrap()
}

fn key(n: u8) -> CacheKey {
    CacheKey(*blake3::hash(&[n]).as_bytes())
}

/// `len` pseudo-random bytes (xorshift), different for each `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The object store under the cache, for writing behind its back.
fn objects(cluster: &Cluster) -> async_nats::jetstream::object_store::ObjectStore {
    let js = cluster.handles.js.clone();
    cluster.block_on(async move { js.get_object_store(CACHE_STORE).await }).unwrap()
}

fn index(cluster: &Cluster) -> async_nats::jetstream::kv::Store {
    let js = cluster.handles.js.clone();
    cluster.block_on(async move { js.get_key_value(CACHE_INDEX).await }).unwrap()
}

/// Writes `bytes` as the object of `key` directly (no index entry); its version.
fn write_object(cluster: &Cluster, key: &CacheKey, bytes: &[u8]) -> String {
    let store = objects(cluster);
    let name = key.to_hex();
    let mut reader: &[u8] = bytes;
    cluster.block_on(async move { store.put(name.as_str(), &mut reader).await }).unwrap().nuid
}

fn write_index(cluster: &Cluster, key: &CacheKey, entry: &IndexEntry) {
    let kv = index(cluster);
    let name = key.to_hex();
    let value = entry.to_bytes();
    cluster.block_on(async move { kv.put(name, value).await }).unwrap();
}

fn object_version(cluster: &Cluster, key: &CacheKey) -> String {
    let store = objects(cluster);
    let name = key.to_hex();
    cluster.block_on(async move { store.info(name).await }).unwrap().nuid
}

#[test]
fn entries_round_trip_in_one_chunk_and_in_many() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let cluster = connect(&server);
    let cache = NatsCache::open(&cluster).unwrap();

    let big = noise((1 << 20) + 3, 1);
    let small = b"a small entry".to_vec();
    assert_eq!(cache.get(&key(1)), Ok(None), "nothing stored yet");
    assert!(!cache.contains(&key(1)));
    cache.put(&key(1), &big).unwrap();
    cache.put(&key(2), &small).unwrap();
    cache.put(&key(3), &[]).unwrap();

    assert!(cache.contains(&key(1)) && cache.contains(&key(2)) && cache.contains(&key(3)));
    assert_eq!(cache.get(&key(1)).unwrap().as_deref(), Some(&big[..]));
    assert_eq!(cache.get(&key(2)).unwrap().as_deref(), Some(&small[..]));
    assert_eq!(cache.get(&key(3)).unwrap().as_deref(), Some(&[][..]));
    assert_eq!(cache.get(&key(4)), Ok(None));
    assert!(!cache.contains(&key(4)));

    // The index describes each entry; the big one spans several chunks.
    let entry = cache.index_entry(&key(1)).unwrap().unwrap();
    assert_eq!(entry.size, big.len() as u64);
    assert_eq!(entry.blake3, blake3::hash(&big).to_hex().to_string());
    assert!(entry.stored_ms > 0);
    let store = objects(&cluster);
    let name = key(1).to_hex();
    let info = cluster.block_on(async move { store.info(name).await }).unwrap();
    assert!(info.chunks > 8, "{} chunks", info.chunks);
    assert_eq!(info.nuid, entry.nuid);

    // A second put of a stored key leaves the entry as it is.
    cache.put(&key(1), &big).unwrap();
    assert_eq!(cache.index_entry(&key(1)).unwrap().unwrap(), entry);
    assert_eq!(object_version(&cluster, &key(1)), entry.nuid);

    // Opening again (as another process would) finds the buckets.
    let again = NatsCache::open(&cluster).unwrap();
    assert_eq!(again.get(&key(2)).unwrap().as_deref(), Some(&small[..]));
}

#[test]
fn an_entry_stored_by_one_worker_is_read_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let one = NatsCache::open(&connect(&server)).unwrap();
    let two = NatsCache::open(&connect(&server)).unwrap();
    let bytes = noise(300_000, 2);
    assert!(!two.contains(&key(1)));
    one.put(&key(1), &bytes).unwrap();
    assert!(two.contains(&key(1)));
    assert_eq!(two.get(&key(1)).unwrap().as_deref(), Some(&bytes[..]));
    // The other way round, from a blocking thread of some tokio runtime.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let other = Arc::clone(&two);
    runtime
        .block_on(async move {
            tokio::task::spawn_blocking(move || other.put(&key(2), b"from a blocking thread")).await.unwrap()
        })
        .unwrap();
    assert_eq!(one.get(&key(2)).unwrap().as_deref(), Some(&b"from a blocking thread"[..]));
}

#[test]
fn half_written_and_mismatched_entries_are_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let cluster = connect(&server);
    let cache = NatsCache::open(&cluster).unwrap();
    let right = noise(200_000, 3);
    let wrong = noise(200_000, 4);

    // An object without an index entry (a writer that died before writing
    // the index) is invisible; a put overwrites it.
    write_object(&cluster, &key(1), &wrong);
    assert_eq!(cache.get(&key(1)), Ok(None));
    assert!(!cache.contains(&key(1)));
    cache.put(&key(1), &right).unwrap();
    assert_eq!(cache.get(&key(1)).unwrap().as_deref(), Some(&right[..]));

    // The object replaced behind a sound index entry: the lookup fails and
    // drops the index entry; the recomputed entry is stored again.
    write_object(&cluster, &key(1), &wrong);
    let error = cache.get(&key(1)).unwrap_err();
    assert!(error.contains("not the one indexed"), "{error}");
    assert!(!cache.contains(&key(1)), "the bad entry is no longer listed");
    cache.put(&key(1), &right).unwrap();
    assert_eq!(cache.get(&key(1)).unwrap().as_deref(), Some(&right[..]));

    // Same size and version, different bytes: the hash check catches it.
    let nuid = write_object(&cluster, &key(2), &wrong);
    write_index(&cluster, &key(2), &IndexEntry::of(&right, &nuid));
    assert!(cache.contains(&key(2)));
    let error = cache.get(&key(2)).unwrap_err();
    assert!(error.contains("BLAKE3"), "{error}");
    cache.put(&key(2), &right).unwrap();
    assert_eq!(cache.get(&key(2)).unwrap().as_deref(), Some(&right[..]));

    // An index entry whose object is gone: put notices (without a get in
    // between) and rewrites it.
    cache.put(&key(3), &right).unwrap();
    let store = objects(&cluster);
    let name = key(3).to_hex();
    cluster.block_on(async move { store.delete(name).await }).unwrap();
    assert!(cache.contains(&key(3)), "contains asks the index only");
    cache.put(&key(3), &right).unwrap();
    assert_eq!(cache.get(&key(3)).unwrap().as_deref(), Some(&right[..]));
    // And a missing object behind an index entry is an error, not a miss.
    let store = objects(&cluster);
    let name = key(3).to_hex();
    cluster.block_on(async move { store.delete(name).await }).unwrap();
    let error = cache.get(&key(3)).unwrap_err();
    assert!(error.contains("missing"), "{error}");
    assert_eq!(cache.get(&key(3)), Ok(None), "the dangling index entry was removed");
}

#[test]
fn entries_survive_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path());
    let cluster = connect(&server);
    let cache = NatsCache::open(&cluster).unwrap();
    let bytes = noise(700_000, 5);
    cache.put(&key(1), &bytes).unwrap();
    server.restart();

    // A fresh connection reads it from the restarted server's files.
    let fresh = NatsCache::open(&connect(&server)).unwrap();
    assert_eq!(fresh.get(&key(1)).unwrap().as_deref(), Some(&bytes[..]));
    // The first connection reconnects and reads it too (it may take a moment).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match cache.get(&key(1)) {
            Ok(found) => {
                assert_eq!(found.as_deref(), Some(&bytes[..]));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Puts wait out a restart.
    server.restart();
    cache.put(&key(2), b"after a restart").unwrap();
    assert_eq!(fresh.get(&key(2)).unwrap().as_deref(), Some(&b"after a restart"[..]));
}

#[test]
fn a_dead_server_fails_lookups_fast_and_puts_after_their_patience() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path());
    let cluster = connect(&server);
    let options = CacheOptions {
        put_patience: Duration::from_millis(500),
        lookup_timeout: Duration::from_millis(500),
        ..CacheOptions::default()
    };
    let cache = NatsCache::open_with(&cluster, options).unwrap();
    cache.put(&key(1), b"stored").unwrap();
    server.kill();
    let started = Instant::now();
    assert!(cache.get(&key(1)).unwrap_err().contains("did not answer"));
    assert!(!cache.contains(&key(1)));
    assert!(cache.put(&key(2), b"lost").unwrap_err().contains("cannot store"));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn a_full_store_refuses_writes_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let cluster = connect(&server);
    // With the default patience (30 s): a full store fails a put at once.
    let cache = NatsCache::open_with_budget(&cluster, Some(400_000)).unwrap();
    let first = noise(250_000, 6);
    cache.put(&key(1), &first).unwrap();
    let used = store_bytes(&cluster);
    let started = Instant::now();
    let error = cache.put(&key(2), &noise(250_000, 7)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(error.contains("full"), "{error}");
    assert!(!cache.contains(&key(2)));
    assert_eq!(store_bytes(&cluster), used, "nothing of the refused entry was written");
    assert_eq!(cache.get(&key(1)).unwrap().as_deref(), Some(&first[..]));
    // Opening with a larger budget raises the limit of the existing store.
    let larger = NatsCache::open_with_budget(&cluster, Some(4_000_000)).unwrap();
    larger.put(&key(2), &noise(250_000, 7)).unwrap();
    assert!(cache.contains(&key(2)));
}

/// Bytes held by the object store's stream.
fn store_bytes(cluster: &Cluster) -> u64 {
    let js = cluster.handles.js.clone();
    cluster
        .block_on(async move {
            let stream = js.get_stream(format!("OBJ_{CACHE_STORE}")).await.unwrap();
            stream.get_info().await
        })
        .unwrap()
        .state
        .bytes
}

// ---- through the engine ----

/// Ops counting their runs: `test.text` repeats "0123456789" `n` times,
/// `test.len` is the length of `text` plus `add`.
struct Counted {
    spec: OpSpec,
    runs: Arc<AtomicUsize>,
}

impl Counted {
    fn text(runs: &Arc<AtomicUsize>) -> Counted {
        Counted {
            spec: OpSpec {
                name: "test.text".into(),
                version: 1,
                doc: "repeated digits".into(),
                inputs: vec![PortSpec::new("n", ValueType::Int, "repetitions")],
                outputs: vec![PortSpec::new("text", ValueType::Text, "the text")],
                output: false,
                cost: Cost::Heavy,
            },
            runs: Arc::clone(runs),
        }
    }

    fn len(runs: &Arc<AtomicUsize>) -> Counted {
        Counted {
            spec: OpSpec {
                name: "test.len".into(),
                version: 1,
                doc: "length plus add".into(),
                inputs: vec![
                    PortSpec::new("text", ValueType::Text, "a text"),
                    PortSpec::with_default("add", ValueType::Int, 0i64, "added"),
                ],
                outputs: vec![PortSpec::new("out", ValueType::Int, "the sum")],
                output: false,
                cost: Cost::Heavy,
            },
            runs: Arc::clone(runs),
        }
    }
}

impl Op for Counted {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, _ctx: &OpContext) -> anyhow::Result<Outputs> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.spec.name == "test.text" {
            let n = usize::try_from(inputs.int("n")?)?;
            Ok(Outputs::single("text", Value::Text("0123456789".repeat(n).into())))
        } else {
            let Some(Value::Text(text)) = inputs.get("text") else { anyhow::bail!("no text") };
            Ok(Outputs::single("out", Value::Int(text.len() as i64 + inputs.int("add")?)))
        }
    }
}

/// An engine without a disk cache, on its own connection to `server`.
fn engine(server: &NatsServer, runs: &Arc<AtomicUsize>) -> Engine {
    let mut registry = Registry::new();
    registry.register(Counted::text(runs));
    registry.register(Counted::len(runs));
    let tier = NatsCache::open(&connect(server)).unwrap();
    Engine::new(registry, Arc::new(NoModels), EngineConfig::default()).unwrap().with_shared_cache(tier)
}

/// `a` makes a 1 MB text (several chunks), `b` measures it.
fn graph(engine: &Engine, dir: &Path, add: i64) -> Arc<Graph> {
    let text = format!(
        "flow: 1\nname: shared\nnodes:\n  a:\n    op: test.text\n    in: {{ n: 100000 }}\n\
         \x20 b:\n    op: test.len\n    in: {{ text: $a, add: {add} }}\n"
    );
    let graph = flow_engine::graph::from_bytes("shared.yaml", dir, text.as_bytes(), &[], engine.registry())
        .unwrap_or_else(|d| panic!("{}", d.render()));
    Arc::new(graph)
}

/// Runs `graph`; the report and the nodes announced as cached.
fn run(engine: &Engine, graph: &Arc<Graph>) -> (RunReport, Vec<String>) {
    let cached = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&cached);
    let sink: EventSink = Arc::new(move |e: Event| {
        if let Event::NodeCached { node, .. } = e {
            seen.lock().unwrap().push(node);
        }
    });
    let report = engine.run(Arc::clone(graph), &PlanOptions::default(), sink, CancelToken::new());
    assert!(report.ok(), "{report:?}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let cached = cached.lock().unwrap().clone();
    (report, cached)
}

fn node<'a>(report: &'a RunReport, id: &str) -> &'a flow_engine::run::NodeReport {
    report.nodes.iter().find(|n| n.id == id).unwrap()
}

fn output(report: &RunReport) -> i64 {
    match report.outputs[0].1.get("out") {
        Some(Value::Int(n)) => *n,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_engine_is_served_from_the_shared_tier() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let runs = Arc::new(AtomicUsize::new(0));

    // First worker: both nodes run, and their outputs reach the store.
    let first = engine(&server, &runs);
    let g = graph(&first, dir.path(), 1);
    let (report, _) = run(&first, &g);
    assert_eq!(report.count(NodeStatus::Ran), 2);
    assert_eq!(output(&report), 1_000_001);
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // Second worker, empty memory and no disk: `b` comes from the shared tier.
    let second = engine(&server, &runs);
    let g = graph(&second, dir.path(), 1);
    let (report, cached) = run(&second, &g);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "nothing is recomputed");
    assert_eq!(report.count(NodeStatus::Cached), 1);
    assert_eq!(node(&report, "b").status, NodeStatus::Cached);
    assert_eq!(node(&report, "b").reason, "cached (shared)");
    assert_eq!(cached, ["b"]);
    assert_eq!(output(&report), 1_000_001);

    // Third worker, changed `b`: only `b` runs, on `a`'s shared (multi-chunk) output.
    let third = engine(&server, &runs);
    let g = graph(&third, dir.path(), 10);
    let (report, cached) = run(&third, &g);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(node(&report, "a").reason, "cached (shared)");
    assert_eq!(node(&report, "b").status, NodeStatus::Ran);
    assert_eq!(cached, ["a"]);
    assert_eq!(output(&report), 1_000_010);
}
