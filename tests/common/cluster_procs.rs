//! The processes of a cluster for tests and benches: `flow serve --nats`
//! (a front end) and `flow worker --nats`, each a real `flow` binary in a
//! sandbox folder, with its output lines collected; killed (SIGKILL) when
//! dropped (included with `#[path = ".../tests/common/cluster_procs.rs"]`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A `flow` process and the lines it printed so far.
pub struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `flow ARGS` in `dir`.
    pub fn start(flow: &Path, dir: &Path, args: &[&str]) -> Proc {
        let mut child = Command::new(flow)
            .args(args)
            .current_dir(dir)
            .env_remove("FLOW_MODELS_DIR")
            .env_remove("FLOW_MEMORY_BUDGET")
            .env("RAYON_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start flow");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    /// Waits for a printed line containing `text`; returns it.
    pub fn wait_line(&self, text: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            assert!(start.elapsed() < limit, "no line with {text:?} in {:?}", self.lines.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(start.elapsed() < limit, "the process did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for it to exit; its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server: `flow serve --nats URL` (a front end), or a plain `flow
/// serve`, on a free port.
pub struct FrontEnd {
    pub proc: Proc,
    pub addr: String,
}

impl FrontEnd {
    /// Starts a front end of the cluster at `nats` in `dir` (folders
    /// `input`, `output`, `fe-cache` there).
    pub fn start(flow: &Path, dir: &Path, nats: &str) -> FrontEnd {
        Self::serve(flow, dir, &["--nats", nats, "--cache-dir", "fe-cache"])
    }

    /// Starts `flow serve EXTRA` in `dir` on a free port.
    pub fn serve(flow: &Path, dir: &Path, extra: &[&str]) -> FrontEnd {
        let mut args = vec![
            "serve", "--listen", "127.0.0.1:0", "--models-dir", "models", "--input-dir", "input", "--output-dir", "output",
        ];
        args.extend_from_slice(extra);
        let proc = Proc::start(flow, dir, &args);
        let line = proc.wait_line("listening on http://", Duration::from_secs(60));
        let addr = line.trim().rsplit("http://").next().unwrap().to_string();
        FrontEnd { proc, addr }
    }

    /// `http://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET, as JSON.
    pub fn get(&self, path: &str) -> Value {
        ureq::get(&self.url(path)).call().unwrap().into_json().unwrap()
    }

    /// GET, as bytes.
    pub fn bytes(&self, path: &str) -> Vec<u8> {
        let mut out = Vec::new();
        ureq::get(&self.url(path)).call().unwrap().into_reader().read_to_end(&mut out).unwrap();
        out
    }

    /// POST /prompt of a ComfyUI workflow; the prompt id.
    pub fn prompt(&self, workflow: &Value, client: &str) -> String {
        let body = json!({ "prompt": workflow, "client_id": client });
        let answer: Value = ureq::post(&self.url("/prompt")).send_json(body).unwrap().into_json().unwrap();
        answer["prompt_id"].as_str().unwrap().to_string()
    }

    /// Polls the history until every id is in it (with its final status).
    pub fn wait_history(&self, ids: &[String], limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let history = self.get("/history");
            if ids.iter().all(|id| history.get(id).is_some()) {
                return history;
            }
            assert!(start.elapsed() < limit, "not all of {ids:?} finished in {limit:?}: {history}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The PNG of a history entry's first image.
    pub fn first_image(&self, entry: &Value) -> Vec<u8> {
        let images = entry["outputs"].as_object().unwrap().values().find_map(|o| o["images"].as_array()).unwrap();
        let img = &images[0];
        let path = format!(
            "/view?filename={}&subfolder={}&type={}",
            img["filename"].as_str().unwrap(),
            img["subfolder"].as_str().unwrap(),
            img["type"].as_str().unwrap()
        );
        self.bytes(&path)
    }
}

use std::io::Read as _;

/// A worker: `flow worker --nats URL --name NAME`, its cache in `dir/NAME-cache`.
pub fn worker(flow: &Path, dir: &Path, nats: &str, name: &str, extra: &[&str]) -> Proc {
    let cache = format!("{name}-cache");
    let mut args = vec![
        "worker", "--nats", nats, "--name", name, "--cache-dir", &cache, "--models-dir", "models", "--jobs", "1",
        "--device", "cpu",
    ];
    args.extend_from_slice(extra);
    let proc = Proc::start(flow, dir, &args);
    proc.wait_line("pulling jobs", Duration::from_secs(60));
    proc
}

/// The repository's ComfyUI default workflow (the tiny checkpoint, 64×64)
/// with this seed and number of steps.
pub fn workflow(root: &Path, seed: u64, steps: u64) -> Value {
    let text = std::fs::read_to_string(root.join("graphs/comfy/default_txt2img.json")).unwrap();
    let mut wf: Value = serde_json::from_str(&text).unwrap();
    wf["3"]["inputs"]["seed"] = json!(seed);
    wf["3"]["inputs"]["steps"] = json!(steps);
    wf
}

/// `dir/NAME` made.
pub fn folder(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A client of the cluster's runs bucket, to look at run records.
pub struct Look {
    pub cluster: std::sync::Arc<flow_cluster::Cluster>,
}

impl Look {
    /// Connects to the cluster at `url`.
    pub fn new(url: &str) -> Look {
        Look { cluster: flow_cluster::Cluster::connect(url, flow_cluster::Settings::default()).unwrap() }
    }

    /// Run `id`'s record.
    pub fn record(&self, id: &str) -> Option<flow_cluster::record::RunRecord> {
        let h = self.cluster.handles.clone();
        let key = flow_cluster::names::run_key(id);
        self.cluster.block_on(async move { flow_cluster::runs::read(&h.runs, &key).await }).unwrap().map(|(r, _)| r)
    }

    /// Polls run `id`'s record every 10 ms until `done` holds; returns it.
    pub fn wait(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&flow_cluster::record::RunRecord) -> bool,
    ) -> flow_cluster::record::RunRecord {
        let start = Instant::now();
        loop {
            if let Some(r) = self.record(id).filter(|r| done(r)) {
                return r;
            }
            assert!(start.elapsed() < limit, "run {id} did not get there: {:?}", self.record(id).map(|r| r.state));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every run's record.
    pub fn all(&self) -> Vec<flow_cluster::record::RunRecord> {
        let h = self.cluster.handles.clone();
        self.cluster.block_on(async move {
            use futures_util::StreamExt;
            let mut out = Vec::new();
            let mut keys = h.runs.keys().await.unwrap();
            while let Some(Ok(key)) = keys.next().await {
                if let Some((r, _)) = flow_cluster::runs::read(&h.runs, &key).await.unwrap() {
                    out.push(r);
                }
            }
            out
        })
    }

    /// Waits for a running run; returns its record.
    pub fn wait_any_running(&self, limit: Duration) -> flow_cluster::record::RunRecord {
        let start = Instant::now();
        loop {
            let h = self.cluster.handles.clone();
            let status = self.cluster.block_on(async move { flow_cluster::status::read(&h, "").await }).unwrap();
            if let Some(r) = status.in_flight.first() {
                return self.record(&r.id).unwrap();
            }
            assert!(start.elapsed() < limit, "no run is running");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
