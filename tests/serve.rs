//! `flow serve` end to end: the real binary on 127.0.0.1 (port 0), driven
//! over HTTP and WebSocket the way ComfyUI's clients drive it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

#[path = "common/comfy_sandbox.rs"]
mod comfy_sandbox;

use comfy_sandbox::{root, sandbox};

/// A running `flow serve`; it is also a client of itself.
struct Server {
    child: Child,
    client: Client,
    _stdout: BufReader<ChildStdout>,
}

impl std::ops::Deref for Server {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Requests to a server.
#[derive(Clone)]
struct Client {
    addr: String,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flow"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--models-dir",
                "models",
                "--input-dir",
                "input",
                "--output-dir",
                "output",
            ])
            .args(["--cache-dir", "cache"])
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
        Server { child, client: Client { addr }, _stdout: stdout }
    }

    /// kill -9.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Client {
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
        http(&self.addr, method, path, headers, body)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.request("GET", path, &[], b"");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, body) = self.request("POST", path, &[], body.to_string().as_bytes());
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Queues a prompt; returns its id.
    fn submit(&self, prompt: Value, client: &str, extra: Value) -> String {
        let mut body = json!({ "prompt": prompt, "client_id": client });
        if let Value::Object(m) = extra {
            body.as_object_mut().unwrap().extend(m);
        }
        let (status, answer) = self.post("/prompt", &body);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["node_errors"], json!({}));
        answer["prompt_id"].as_str().unwrap().to_string()
    }

    fn ws(&self, client: &str) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(&self.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let (mut ws, _) = tungstenite::client(format!("ws://{}/ws?clientId={client}", self.addr), stream).unwrap();
        let hello = next(&mut ws);
        assert_eq!(hello["type"], "status", "{hello}");
        assert_eq!(hello["data"]["sid"], client);
        ws
    }

    /// Polls the history until every id is in it.
    fn wait_history(&self, ids: &[String], limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (_, history) = self.get("/history");
            if ids.iter().all(|id| history.get(id).is_some()) {
                return history;
            }
            assert!(started.elapsed() < limit, "not all of {ids:?} finished: {history}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request on its own connection; the body is written from
/// another thread so that an early answer (413) is read whatever happens
/// to the rest of the upload.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let body = body.to_vec();
    let upload = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = upload.join();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no answer: {raw:?}"));
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

fn next(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read().expect("websocket message") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Binary(_) => panic!("a binary frame was sent to a client that did not ask for previews"),
            _ => {}
        }
    }
}

/// Messages until every prompt in `ids` sent its final `executing {node: null}`.
fn until_done(ws: &mut WebSocket<TcpStream>, ids: &[String]) -> Vec<Value> {
    let mut left: Vec<&String> = ids.iter().collect();
    let mut out = Vec::new();
    while !left.is_empty() {
        let m = next(ws);
        if m["type"] == "executing" && m["data"]["node"].is_null() {
            left.retain(|id| m["data"]["prompt_id"] != id.as_str());
        }
        out.push(m);
    }
    out
}

/// The messages about `id`, as `type` or `type:node`.
fn trace(messages: &[Value], id: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["data"]["prompt_id"] == id)
        .map(|m| {
            let t = m["type"].as_str().unwrap();
            match m["data"]["node"].as_str() {
                Some(node) if t != "progress" => format!("{t}:{node}"),
                _ => t.to_string(),
            }
        })
        .collect()
}

fn workflow(steps: u64) -> Value {
    let text = std::fs::read_to_string(root().join("graphs/comfy/default_txt2img.json")).unwrap();
    let mut wf: Value = serde_json::from_str(&text).unwrap();
    wf["3"]["inputs"]["steps"] = json!(steps);
    wf
}

/// A flow graph writing `output/WHO-I.txt` with `WHO:I`.
fn text_graph() -> Value {
    json!("flow: 1\nparams: {who: x, i: 0}\nnodes:\n  t:\n    op: text.template\n    in: {template: \"${who}:${i}\"}\n  w:\n    op: file.write_text\n    in: {path: \"output/${who}-${i}.txt\", text: $t}\n")
}

#[test]
fn comfy_default_workflow_events_history_view_and_cache() {
    let dir = sandbox();
    let server = Server::start(dir.path(), &[]);
    let mut ws = server.ws("alice");
    let id = server.submit(workflow(3), "alice", json!({}));
    let messages = until_done(&mut ws, std::slice::from_ref(&id));
    let t = trace(&messages, &id);
    assert_eq!(t[..2], ["execution_start", "execution_cached"], "{t:?}");
    assert_eq!(t[t.len() - 3..], ["executed:9", "execution_success", "executing"], "{t:?}");
    for node in ["3", "5", "6", "7", "8", "9"] {
        assert!(t.contains(&format!("executing:{node}")), "{node} missing in {t:?}");
    }
    let sampler_at = t.iter().position(|m| m == "executing:3").unwrap();
    let progress_at = t.iter().position(|m| m == "progress").unwrap();
    assert!(sampler_at < progress_at, "{t:?}");
    let progress = messages.iter().filter(|m| m["type"] == "progress").last().unwrap();
    assert_eq!((progress["data"]["node"].clone(), progress["data"]["max"].clone()), (json!("3"), json!(3)));
    let executed = messages.iter().find(|m| m["type"] == "executed").unwrap();
    let image = json!({ "filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output" });
    assert_eq!(executed["data"]["output"]["images"], json!([image]));
    // The queue never read 0 before the prompt's last message; it does after.
    for m in messages.iter().filter(|m| m["type"] == "status") {
        assert!(m["data"]["status"]["exec_info"]["queue_remaining"].as_u64().unwrap() >= 1, "{m}");
    }
    let after = next(&mut ws);
    assert_eq!(after["data"]["status"]["exec_info"]["queue_remaining"], 0, "{after}");

    let (status, history) = server.get(&format!("/history/{id}"));
    assert_eq!(status, 200);
    let entry = &history[&id];
    assert_eq!(entry["outputs"]["9"]["images"], json!([image]), "{entry}");
    assert_eq!(
        (entry["status"]["status_str"].as_str(), entry["status"]["completed"].as_bool()),
        (Some("success"), Some(true))
    );
    assert_eq!(entry["prompt"][1], id.as_str());
    let (status, png) = server.request("GET", "/view?filename=ComfyUI_00001_.png&subfolder=&type=output", &[], b"");
    assert_eq!(status, 200);
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(png, std::fs::read(dir.path().join("output/ComfyUI_00001_.png")).unwrap());

    // The same workflow again, through /api/: everything but the save comes from the cache.
    let (status, answer) = server.post("/api/prompt", &json!({ "prompt": workflow(3), "client_id": "alice" }));
    assert_eq!(status, 200, "{answer}");
    let id2 = answer["prompt_id"].as_str().unwrap().to_string();
    let messages = until_done(&mut ws, std::slice::from_ref(&id2));
    let cached = messages.iter().find(|m| m["type"] == "execution_cached").unwrap();
    let mut nodes: Vec<&str> =
        cached["data"]["nodes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    nodes.sort();
    assert_eq!(nodes, ["3", "5", "6", "7", "8"]);
    let t = trace(&messages, &id2);
    assert_eq!(
        t,
        ["execution_start", "execution_cached", "executing:9", "executed:9", "execution_success", "executing"]
    );
    let executed = messages.iter().find(|m| m["type"] == "executed").unwrap();
    assert_eq!(executed["data"]["output"]["images"][0]["filename"], "ComfyUI_00002_.png");
    assert!(dir.path().join("output/ComfyUI_00002_.png").is_file());
}

#[test]
fn twenty_runs_from_four_clients_at_once() {
    let dir = sandbox();
    let server = Server::start(dir.path(), &["--runs", "3"]);
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let server = server.client.clone();
            std::thread::spawn(move || {
                let who = format!("client{c}");
                let mut ws = server.ws(&who);
                let ids: Vec<String> = (0..5)
                    .map(|i| server.submit(text_graph(), &who, json!({ "params": { "who": who, "i": i } })))
                    .collect();
                let messages = until_done(&mut ws, &ids);
                for m in &messages {
                    if let Some(p) = m["data"]["prompt_id"].as_str() {
                        assert!(ids.iter().any(|id| id == p), "{who} got a message of another client's prompt: {m}");
                    }
                }
                for id in &ids {
                    assert!(trace(&messages, id).contains(&"execution_success".to_string()), "{id}: {messages:?}");
                }
                ids
            })
        })
        .collect();
    let ids: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(ids.len(), 20);
    let history = server.wait_history(&ids, Duration::from_secs(60));
    for c in 0..4 {
        for i in 0..5 {
            let text = std::fs::read_to_string(dir.path().join(format!("output/client{c}-{i}.txt"))).unwrap();
            assert_eq!(text, format!("client{c}:{i}"));
        }
    }
    for id in &ids {
        let entry = &history[id];
        assert_eq!(entry["status"]["completed"], true, "{entry}");
        let file = &entry["outputs"]["w"]["files"][0];
        assert_eq!(file["type"], "output");
    }
    let (_, queue) = server.get("/queue");
    assert_eq!(queue, json!({ "queue_running": [], "queue_pending": [] }));
}

#[test]
fn interrupting_one_run_leaves_the_others_and_failures_do_not_block() {
    let dir = sandbox();
    let server = Server::start(dir.path(), &["--runs", "2"]);
    let mut slow_ws = server.ws("slow");
    let mut quick_ws = server.ws("quick");
    let slow = server.submit(workflow(10_000), "slow", json!({}));
    // Wait until the sampler is under way, then stop that prompt only.
    loop {
        let m = next(&mut slow_ws);
        if m["type"] == "progress" {
            break;
        }
    }
    let failing = server.submit(
        json!("flow: 1\nnodes:\n  r:\n    op: file.read_text\n    in: {path: input/missing.txt}\n  w:\n    op: file.write_text\n    in: {path: output/never.txt, text: $r}\n"),
        "quick",
        json!({}),
    );
    let quick: Vec<String> =
        (0..3).map(|i| server.submit(text_graph(), "quick", json!({ "params": { "who": "q", "i": i } }))).collect();
    let (status, _) = server.post("/interrupt", &json!({ "prompt_id": slow }));
    assert_eq!(status, 200);
    let messages = until_done(&mut slow_ws, std::slice::from_ref(&slow));
    let t = trace(&messages, &slow);
    assert_eq!(t[t.len() - 2..], ["execution_interrupted", "executing"], "{t:?}");
    let interrupted = messages.iter().find(|m| m["type"] == "execution_interrupted").unwrap();
    assert_eq!(interrupted["data"]["node_id"], "3", "{interrupted}");
    let mut all = vec![failing.clone()];
    all.extend(quick.iter().cloned());
    let messages = until_done(&mut quick_ws, &all);
    assert!(trace(&messages, &failing).contains(&"execution_error".to_string()));
    for id in &quick {
        assert!(trace(&messages, id).contains(&"execution_success".to_string()), "{id}");
    }
    let history = server.wait_history(&[slow.clone(), failing.clone()], Duration::from_secs(10));
    assert_eq!(history[&slow]["status"]["completed"], false);
    assert_eq!(history[&failing]["status"]["status_str"], "error");
    let error =
        history[&failing]["status"]["messages"].as_array().unwrap().iter().find(|m| m[0] == "execution_error").unwrap();
    assert_eq!(error[1]["node_id"], "r");
    assert!(error[1]["exception_message"].as_str().unwrap().contains("missing.txt"), "{error}");
}

#[test]
fn a_killed_server_resumes_its_queue_and_runs_each_prompt_once() {
    let dir = sandbox();
    let mut server = Server::start(dir.path(), &["--runs", "1"]);
    let mut ws = server.ws("k");
    let first = server.submit(text_graph(), "k", json!({ "params": { "who": "first", "i": 0 } }));
    until_done(&mut ws, std::slice::from_ref(&first));
    let (_, before) = server.get(&format!("/history/{first}"));
    let slow = server.submit(workflow(120), "k", json!({}));
    let queued: Vec<String> =
        (0..3).map(|i| server.submit(text_graph(), "k", json!({ "params": { "who": "after", "i": i } }))).collect();
    loop {
        if next(&mut ws)["type"] == "progress" {
            break;
        }
    }
    server.kill();
    drop(ws);

    let server = Server::start(dir.path(), &["--runs", "1"]);
    let mut all = vec![first.clone(), slow.clone()];
    all.extend(queued.iter().cloned());
    let history = server.wait_history(&all, Duration::from_secs(180));
    assert_eq!(history.as_object().unwrap().len(), 5, "{history}");
    for id in &all {
        assert_eq!(history[id]["status"]["completed"], true, "{id}: {}", history[id]);
    }
    // The prompt finished before the kill was not run again.
    assert_eq!(history[&first], before[&first]);
    assert_eq!(history[&slow]["outputs"]["9"]["images"][0]["filename"], "ComfyUI_00001_.png");
    for i in 0..3 {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(format!("output/after-{i}.txt"))).unwrap(),
            format!("after:{i}")
        );
    }
    let (_, queue) = server.get("/queue");
    assert_eq!(queue, json!({ "queue_running": [], "queue_pending": [] }));
}

fn multipart(name: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "flowtestboundary";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes());
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn bad_requests_get_the_right_error() {
    let dir = sandbox();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    let script = "fn ports() { #{ inputs: #{ s: \"text\" }, outputs: #{ out: \"text\" } } }\nfn run(i) { #{ out: `loud ${i.s}` } }\n";
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/shout.rhai"), script).unwrap();
    std::fs::create_dir_all(dir.path().join("input")).unwrap();
    std::fs::write(dir.path().join("input/shout.rhai"), script).unwrap();
    let server = Server::start(dir.path(), &["--scripts-dir", "scripts"]);
    // rhai scripts come from the scripts folder only.
    let mut ws = server.ws("s");
    let ok = "flow: 1\nnodes:\n  l:\n    op: script.shout\n    in: {s: hi}\n  w:\n    op: file.write_text\n    in: {path: output/loud.txt, text: $l}\n";
    let id = server.submit(json!(ok), "s", json!({}));
    until_done(&mut ws, std::slice::from_ref(&id));
    assert_eq!(std::fs::read_to_string(dir.path().join("output/loud.txt")).unwrap(), "loud hi");
    let (status, body) = server.post("/prompt", &json!({ "prompt": ok.replace("script.shout", "input/shout.rhai") }));
    assert_eq!((status, body["error"]["type"].as_str()), (403, Some("forbidden_path")), "{body}");
    let (status, body) = server.request("POST", "/prompt", &[], b"{\"prompt\": ");
    assert_eq!(status, 400);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "invalid_prompt", "{body}");
    let (status, body) = server.post("/prompt", &json!({ "client_id": "x" }));
    assert_eq!((status, body["error"]["type"].as_str()), (400, Some("no_prompt")));
    let (status, body) =
        server.post("/prompt", &json!({ "prompt": { "1": { "class_type": "NoSuchNode", "inputs": {} } } }));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["type"].is_string() && body["node_errors"].is_object(), "{body}");
    assert!(body.to_string().contains("NoSuchNode"), "{body}");
    let mut bad_steps = workflow(3);
    bad_steps["3"]["inputs"]["steps"] = json!(0);
    let (status, body) = server.post("/prompt", &json!({ "prompt": bad_steps }));
    assert_eq!(status, 400);
    assert_eq!(body["node_errors"]["3"]["class_type"], "KSampler", "{body}");
    let (status, _) = server.post("/prompt", &json!({ "prompt": workflow(3), "prompt_id": "../escape" }));
    assert_eq!(status, 400);
    let big = vec![b' '; 10 << 20];
    let (status, _) = server.request("POST", "/prompt", &[], &big);
    assert_eq!(status, 413);
    // Graphs stay inside the server's folders.
    for graph in [
        "flow: 1\nnodes:\n  w:\n    op: file.write_text\n    in: {path: ../secret.txt, text: x}\n",
        "flow: 1\nnodes:\n  w:\n    op: file.write_text\n    in: {path: input/x.txt, text: x}\n",
        "flow: 1\nnodes:\n  r:\n    op: file.read_text\n    in: {path: /etc/hostname}\n  w:\n    op: file.write_text\n    in: {path: output/x.txt, text: $r}\n",
    ] {
        let (status, body) = server.post("/prompt", &json!({ "prompt": graph }));
        assert_eq!((status, body["error"]["type"].as_str()), (403, Some("forbidden_path")), "{graph}: {body}");
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("secret.txt")).unwrap(), "secret");
    for path in [
        "/view?filename=../secret.txt",
        "/view?filename=secret.txt&subfolder=../..",
        "/view?filename=..%2Fsecret.txt&type=input",
    ] {
        assert_eq!(server.request("GET", path, &[], b"").0, 403, "{path}");
    }
    assert_eq!(server.request("GET", "/view?filename=nothing.png", &[], b"").0, 404);
    // Uploads: same name and content reused, other content renamed, paths refused.
    let (ct, body) = multipart("a.png", b"one");
    let upload = |body: &[u8]| server.request("POST", "/upload/image", &[("Content-Type", &ct)], body);
    let (status, answer) = upload(&body);
    assert_eq!((status, serde_json::from_slice::<Value>(&answer).unwrap()["name"].clone()), (200, json!("a.png")));
    let (_, answer) = upload(&body);
    assert_eq!(serde_json::from_slice::<Value>(&answer).unwrap()["name"], "a.png");
    let (_, other) = multipart("a.png", b"two");
    let (_, answer) = upload(&other);
    assert_eq!(serde_json::from_slice::<Value>(&answer).unwrap()["name"], "a (1).png");
    assert_eq!(std::fs::read(dir.path().join("input/a.png")).unwrap(), b"one");
    let (_, evil) = multipart("../evil.png", b"x");
    assert_eq!(upload(&evil).0, 403);
    assert!(!dir.path().join("evil.png").exists());
    // The rest of the API answers.
    let (_, info) = server.get("/object_info");
    assert!(
        info["KSampler"]["input"]["required"]["seed"].is_array()
            && info["text.join"]["input"]["required"]["items"].is_array()
    );
    let (_, one) = server.get("/api/object_info/SaveImage");
    assert_eq!(one["SaveImage"]["output_node"], true);
    let (_, stats) = server.get("/system_stats");
    assert!(stats["devices"].as_array().is_some_and(|d| !d.is_empty()), "{stats}");
    assert_eq!(server.get("/embeddings"), (200, json!([])));
    assert_eq!(server.get("/api/prompt").1, json!({ "exec_info": { "queue_remaining": 0 } }));
}

#[test]
fn tokens_guard_the_server_and_other_addresses_need_one() {
    let dir = sandbox();
    let server = Server::start(dir.path(), &["--token", "s3cret"]);
    assert_eq!(server.request("GET", "/prompt", &[], b"").0, 401);
    assert_eq!(server.request("GET", "/api/queue", &[("Authorization", "Bearer wrong")], b"").0, 401);
    assert_eq!(server.request("GET", "/prompt", &[("Authorization", "Bearer s3cret")], b"").0, 200);
    assert_eq!(server.request("GET", "/prompt?token=s3cret", &[], b"").0, 200);
    let stream = TcpStream::connect(&server.addr).unwrap();
    assert!(tungstenite::client(format!("ws://{}/ws?clientId=a", server.addr), stream).is_err());
    let out = Command::new(env!("CARGO_BIN_EXE_flow"))
        .args(["serve", "--listen", "0.0.0.0:0", "--cache-dir", "cache"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
}
