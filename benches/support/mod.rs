//! What the benches share: fetching a catalog model once into the test
//! models folder, and a meter that reports a case's rate per second of wall
//! time and per second of process CPU time.
#![allow(dead_code)]

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flow_engine::models::{no_progress, ModelStore, ResolvedModel};

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The catalog model `name`, fetched once into `$FLOW_TEST_MODELS_DIR`, else
/// `target/test-models` (where the tests keep theirs).
pub fn catalog_model(name: &str) -> ResolvedModel {
    let root = std::env::var_os("FLOW_TEST_MODELS_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| workspace().join("target/test-models"), PathBuf::from);
    ModelStore::new(root).resolve_str(name, workspace(), &no_progress).unwrap_or_else(|e| panic!("fetching {name}: {e:#}"))
}

/// Seconds of CPU time this process has used (user + system, all threads).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0
}

/// Wall and CPU time, and elements done, over every timed iteration of one
/// case (criterion's warm-up included).
#[derive(Default)]
pub struct Meter {
    wall: Cell<f64>,
    cpu: Cell<f64>,
    elements: Cell<u64>,
}

impl Meter {
    /// Times `work` (which does `elements` elements), adds it up, and returns
    /// its wall time.
    pub fn time<T>(&self, elements: u64, work: impl FnOnce() -> T) -> Duration {
        // Reading /proc stays outside the wall-clock interval.
        let c = cpu_seconds();
        let t = Instant::now();
        std::hint::black_box(work());
        let wall = t.elapsed();
        let cpu = cpu_seconds() - c;
        self.wall.set(self.wall.get() + wall.as_secs_f64());
        self.cpu.set(self.cpu.get() + cpu);
        self.elements.set(self.elements.get() + elements);
        wall
    }

    pub fn report(&self, case: &str, unit: &str) {
        let (n, wall, cpu) = (self.elements.get() as f64, self.wall.get(), self.cpu.get());
        eprintln!(
            "{case}: {:.1} {unit}/s of wall time, {:.1} {unit} per CPU-second ({n} {unit} timed)",
            n / wall,
            n / cpu
        );
    }
}

pub fn threads_and_load() -> String {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("RAYON_NUM_THREADS={threads}, load average {}", load.join(" "))
}

