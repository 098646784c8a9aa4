//! `flow serve`'s native API (`/v1`) and `flow run --server`, end to end:
//! the real binary on 127.0.0.1 (port 0), text graphs and the tiny
//! checkpoint at 64×64.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

#[path = "common/comfy_sandbox.rs"]
mod comfy_sandbox;

use comfy_sandbox::{root, sandbox};

/// A running `flow serve`.
struct Server {
    child: Child,
    addr: String,
    token: Option<String>,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flow"))
            .args(["serve", "--listen", "127.0.0.1:0", "--models-dir", "models"])
            .args(["--input-dir", "input", "--output-dir", "output", "--cache-dir", "cache"])
            .args(extra)
            .current_dir(dir)
            .env_remove("FLOW_MODELS_DIR")
            .env_remove("FLOW_MEMORY_BUDGET")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start flow serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line.trim().rsplit("http://").next().unwrap_or_default().to_string();
        assert!(addr.starts_with("127.0.0.1:"), "no address in {line:?}");
        let token = extra
            .iter()
            .position(|a| *a == "--token")
            .map(|i| extra[i + 1].to_string());
        Server {
            child,
            addr,
            token,
            _stdout: stdout,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        http(&self.addr, method, path, &headers, body)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.request("GET", path, b"");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, body) = self.request("POST", path, body.to_string().as_bytes());
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Submits a graph's text; returns the run id.
    fn submit(&self, graph: &str, params: Value) -> String {
        let (status, answer) = self.post("/v1/runs", &json!({ "graph": graph, "params": params, "name": "test" }));
        assert_eq!(status, 201, "{answer}");
        answer["run_id"].as_str().unwrap().to_string()
    }

    /// The whole event stream of a run (it ends after `run_finished`).
    fn events(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.request("GET", &format!("/v1/runs/{id}/events"), b"");
        assert_eq!(status, 200);
        data_lines(&String::from_utf8(body).unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data:` lines of a Server-Sent-Events body, parsed.
fn data_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

/// One HTTP/1.1 request on its own connection.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut content = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        content = unchunk(&content);
    }
    (status, content)
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

/// An event stream read as it comes (chunked transfer decoded on the fly).
struct Stream {
    reader: BufReader<TcpStream>,
    pending: Vec<Value>,
}

impl Stream {
    fn open(addr: &str, path: &str) -> Stream {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains(" 200 "), "{line}");
        while line != "\r\n" {
            line.clear();
            reader.read_line(&mut line).unwrap();
        }
        Stream {
            reader,
            pending: Vec::new(),
        }
    }

    /// The next event; `None` once the stream ended.
    fn next(&mut self) -> Option<Value> {
        while self.pending.is_empty() {
            let mut size = String::new();
            self.reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            self.pending = data_lines(std::str::from_utf8(&chunk[..size]).unwrap());
        }
        Some(self.pending.remove(0))
    }

    fn rest(mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

/// (event, node) of each event.
fn trace(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().into(),
                e["node"].as_str().unwrap_or("").into(),
            )
        })
        .collect()
}

/// A chain of text nodes (one order of events whatever the scheduling),
/// writing `output/WHO.txt` and printing it.
const CHAIN: &str = "flow: 1\nparams: {who: x}\nnodes:\n  t:\n    op: text.template\n    in: {template: \"hi ${who}\"}\n  j:\n    op: text.join\n    in: {items: [$t, done]}\n  w:\n    op: file.write_text\n    in: {path: \"output/${who}.txt\", text: $j}\n  p:\n    op: debug.print\n    in: {value: $w}\n";

/// The node column of a summary table.
fn table_nodes(stdout: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(stdout);
    let rows = text.lines().skip_while(|l| !l.starts_with("node ")).skip(1);
    rows.take_while(|l| !l.starts_with("wrote ") && !l.starts_with("done in"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// `flow run` in `dir` with the arguments; its output.
fn flow(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flow"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The events of `flow run --json` on `graph` in a folder of its own.
fn local_json(graph: &str, set: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("output")).unwrap();
    std::fs::write(dir.path().join("g.yaml"), graph).unwrap();
    let mut args = vec!["run", "g.yaml", "--json", "--cache-dir", "cache"];
    for s in set {
        args.extend(["--set", s]);
    }
    let out = flow(dir.path(), &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn yaml_run_state_events_replay_and_outputs() {
    let dir = sandbox();
    let server = Server::start(dir.path(), &[]);
    let id = server.submit(CHAIN, json!({ "who": "ann" }));
    let events = server.events(&id);
    assert_eq!(trace(&events), trace(&local_json(CHAIN, &["who=ann"])));
    assert_eq!(events.last().unwrap()["ok"], true);
    // A late subscriber gets the same events from the start.
    assert_eq!(server.events(&id), events);
    let (status, run) = server.get(&format!("/v1/runs/{id}"));
    assert_eq!(status, 200);
    assert_eq!(
        (run["state"].as_str(), run["name"].as_str(), &run["error"]),
        (Some("succeeded"), Some("test"), &Value::Null)
    );
    let nodes: Vec<&str> = run["graph"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["t", "j", "w", "p"]);
    assert_eq!(
        run["graph"]["nodes"][1],
        json!({ "id": "j", "op": "text.join", "inputs_from": ["t"], "output": false })
    );
    for n in nodes {
        assert_eq!(run["nodes"][n]["state"], "done", "{run}");
        assert!(run["nodes"][n]["time_ms"].as_f64().is_some());
    }
    let file = run["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "file")
        .unwrap();
    assert_eq!(
        (file["node"].as_str(), file["path"].as_str()),
        (Some("w"), Some("output/ann.txt"))
    );
    let (status, bytes) = server.request("GET", file["url"].as_str().unwrap(), b"");
    assert_eq!((status, bytes.as_slice()), (200, b"hi anndone".as_slice()));
    let printed = run["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["kind"] == "text" && o["node"] == "p");
    assert!(printed, "{run}");
    // The list, newest first, and the record survives a restart.
    let second = server.submit(CHAIN, json!({ "who": "bob" }));
    server.events(&second);
    let (_, list) = server.get("/v1/runs");
    let ids: Vec<&str> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), id.as_str()]);
    let first = &list["runs"][1];
    assert_eq!(first["state"], "succeeded");
    for at in ["submitted_at", "started_at", "finished_at"] {
        assert!(first[at].as_u64().is_some(), "{first}");
    }
    drop(server);
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.events(&id), events);
    assert_eq!(server.get(&format!("/v1/runs/{id}")).1["nodes"], run["nodes"]);
}

#[test]
fn comfy_workflow_progress_cancel_and_a_queued_run() {
    let dir = sandbox();
    let server = Server::start(dir.path(), &["--runs", "1"]);
    let text = std::fs::read_to_string(root().join("graphs/comfy/default_txt2img.json")).unwrap();
    let mut wf: Value = serde_json::from_str(&text).unwrap();
    wf["3"]["inputs"]["steps"] = json!(2);
    let quick = server.submit(&wf.to_string(), json!({}));
    let events = server.events(&quick);
    assert_eq!(events.last().unwrap()["ok"], true);
    let (_, run) = server.get(&format!("/v1/runs/{quick}"));
    assert_eq!(run["state"], "succeeded");
    let image = run["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "image")
        .unwrap()
        .clone();
    let (status, png) = server.request("GET", image["url"].as_str().unwrap(), b"");
    assert_eq!((status, &png[..4]), (200, b"\x89PNG".as_slice()));

    // A long run: its state while the sampler steps.
    wf["3"]["inputs"]["steps"] = json!(10_000);
    wf["3"]["inputs"]["seed"] = json!(7);
    let slow = server.submit(&wf.to_string(), json!({}));
    let mut stream = Stream::open(&server.addr, &format!("/v1/runs/{slow}/events"));
    let sampler = loop {
        let e = stream.next().expect("the slow run ended early");
        if e["event"] == "progress" {
            break e["node"].as_str().unwrap().to_string();
        }
    };
    let (_, run) = server.get(&format!("/v1/runs/{slow}"));
    assert_eq!(run["state"], "running");
    assert_eq!(run["nodes"][&sampler]["state"], "running", "{run}");
    assert!(run["nodes"][&sampler]["progress"]["total"] == 10_000, "{run}");

    // A queued run: pending nodes; its stream waits; cancelled, it ends.
    let queued = server.submit(CHAIN, json!({ "who": "q" }));
    let (_, run) = server.get(&format!("/v1/runs/{queued}"));
    assert_eq!(run["state"], "queued");
    assert_eq!(run["nodes"]["t"]["state"], "pending");
    let waiting = Stream::open(&server.addr, &format!("/v1/runs/{queued}/events"));
    let after = server.submit(CHAIN, json!({ "who": "after" }));
    let (status, answer) = server.post(&format!("/v1/runs/{queued}/cancel"), &json!({}));
    assert_eq!(
        (status, answer),
        (202, json!({ "run_id": queued, "state": "interrupted" }))
    );
    let ended = waiting.rest();
    assert_eq!(ended.last().unwrap()["event"], "run_finished");
    assert_eq!(ended.last().unwrap()["interrupted"], true);
    assert_eq!(server.get(&format!("/v1/runs/{queued}")).0, 404);

    // Cancelling the running one stops it; the next run then finishes.
    let (status, _) = server.post(&format!("/v1/runs/{slow}/cancel"), &json!({}));
    assert_eq!(status, 202);
    let rest = stream.rest();
    let last = rest.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), &last["interrupted"]),
        (Some("run_finished"), &json!(true))
    );
    assert_eq!(server.get(&format!("/v1/runs/{slow}")).1["state"], "interrupted");
    assert_eq!(server.events(&after).last().unwrap()["ok"], true);
    assert_eq!(server.get(&format!("/v1/runs/{after}")).1["state"], "succeeded");
    assert_eq!(server.get(&format!("/v1/runs/{quick}")).1["state"], "succeeded");
}

#[test]
fn invalid_graphs_unknown_ids_ops_and_openapi() {
    let dir = sandbox();
    let server = Server::start(dir.path(), &[]);
    let (status, answer) = server.post(
        "/v1/runs",
        &json!({ "graph": "flow: 1\nnodes:\n  a:\n    op: text.jion\n    in: {}\n" }),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "invalid_graph");
    let d = &answer["diagnostics"][0];
    assert_eq!((d["line"].as_u64(), d["col"].as_u64()), (Some(4), Some(9)), "{answer}");
    assert!(d["message"].as_str().unwrap().contains("text.jion"));
    assert!(d["rendered"].as_str().unwrap().contains("did you mean `text.join`?"));
    assert!(answer["rendered"]
        .as_str()
        .unwrap()
        .ends_with("1 error in graph.yaml\n"));
    let (status, answer) = server.post("/v1/runs", &json!({ "graph": CHAIN, "params": { "nope": 1 } }));
    assert_eq!(status, 400, "{answer}");
    let workflow = json!({ "1": { "class_type": "NoSuchNode", "inputs": {} } }).to_string();
    let (status, answer) = server.post("/v1/runs", &json!({ "graph": workflow }));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["comfy_errors"]["node_errors"]["1"]["class_type"], "NoSuchNode",
        "{answer}"
    );
    let (status, answer) = server.post("/v1/runs", &json!({ "graph": CHAIN.replace("output/", "../") }));
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("forbidden_path")),
        "{answer}"
    );
    let (status, answer) = server.post("/v1/runs", &json!({ "nope": 1 }));
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_request")));
    for (method, path) in [
        ("GET", "/v1/runs/nope"),
        ("GET", "/v1/runs/nope/events"),
        ("POST", "/v1/runs/nope/cancel"),
    ] {
        let (status, body) = server.request(method, path, b"");
        assert_eq!(status, 404, "{method} {path}");
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["error"], "not_found");
    }
    assert_eq!(server.get("/v1/runs").1, json!({ "runs": [] }));

    let (_, ops) = server.get("/v1/ops");
    let join = ops["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "text.join")
        .unwrap();
    assert_eq!(join["inputs"][0]["name"], "items");
    assert_eq!(server.get("/v1/ops/text.join").1, *join);
    assert_eq!(server.get("/v1/ops/no.such").0, 404);

    let (status, doc) = server.get("/v1/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/events",
        "/v1/runs/{id}/cancel",
        "/v1/ops",
        "/v1/ops/{name}",
        "/v1/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from {}", doc["paths"]);
    }
    assert!(doc["components"]["schemas"]["RunDetail"]["properties"]["nodes"].is_object());
}

#[test]
fn flow_run_server_renders_like_a_local_run() {
    let dir = sandbox();
    let server = Server::start(dir.path(), &["--token", "s3cret"]);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("chain.yaml"), CHAIN).unwrap();
    let remote = ["run", "--server", &server.url(), "--token", "s3cret"];
    let run = |extra: &[&str]| flow(work.path(), &[&remote[..], extra].concat());

    let out = run(&["chain.yaml", "--set", "who=cli"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("node") && stdout.contains("status") && stdout.contains("text.join"),
        "{stdout}"
    );
    assert!(stdout.contains("wrote output/cli.txt"), "{stdout}");
    assert!(
        stdout.contains("done in") && stdout.contains("4 ran, 0 cached, 0 failed, 0 skipped"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("output/cli.txt")).unwrap(),
        "hi clidone"
    );

    // A branching graph lists its nodes in the same order as a local run.
    let branches = CHAIN.replace("items: [$t, done]", "items: [$t, $u]")
        + "  u:\n    op: text.template\n    in: {template: \"bye ${who}\"}\n";
    std::fs::write(work.path().join("branches.yaml"), &branches).unwrap();
    std::fs::create_dir(work.path().join("output")).unwrap();
    let local = flow(work.path(), &["run", "branches.yaml", "--cache-dir", "cache"]);
    let out = run(&["branches.yaml"]);
    assert_eq!(table_nodes(&out.stdout), table_nodes(&local.stdout));
    assert_eq!(table_nodes(&out.stdout).len(), 5);

    let out = run(&["chain.yaml", "--set", "who=json", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(trace(&lines), trace(&local_json(CHAIN, &["who=json"])));

    let failing = "flow: 1\nnodes:\n  r:\n    op: file.read_text\n    in: {path: input/missing.txt}\n  w:\n    op: file.write_text\n    in: {path: output/never.txt, text: $r}\n";
    std::fs::write(work.path().join("failing.yaml"), failing).unwrap();
    let out = run(&["failing.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed"));

    std::fs::write(
        work.path().join("bad.yaml"),
        "flow: 1\nnodes:\n  a:\n    op: text.jion\n",
    )
    .unwrap();
    let out = run(&["bad.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("graph.yaml:4:9: error: unknown op `text.jion`"));

    let out = flow(work.path(), &["run", "--server", &server.url(), "chain.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_cancels_the_remote_run() {
    let dir = sandbox();
    let server = Server::start(dir.path(), &[]);
    let work = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("graphs/comfy/default_txt2img.json")).unwrap();
    let mut wf: Value = serde_json::from_str(&text).unwrap();
    wf["3"]["inputs"]["steps"] = json!(10_000);
    std::fs::write(work.path().join("slow.json"), wf.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flow"))
        .args(["run", "--server", &server.url(), "slow.json", "--json"])
        .current_dir(work.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("\"event\":\"progress\"") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the run ended before it made progress"
        );
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = out.lines().map(Result::unwrap).collect();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let last: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(
        (last["event"].as_str(), &last["interrupted"]),
        (Some("run_finished"), &json!(true))
    );
    let (_, list) = server.get("/v1/runs");
    assert_eq!(list["runs"][0]["state"], "interrupted", "{list}");
}
