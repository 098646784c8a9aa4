//! The web page at `/` in a real headless browser: Debian's `chromium`
//! driven through `chromedriver` over the WebDriver HTTP protocol, against
//! the real `flow serve` binary on the tiny single-file checkpoint.
//!
//! Needs `chromedriver` on the PATH (`apt-get install -y chromium
//! chromium-driver`); `FLOW_SKIP_BROWSER_TESTS=1` skips these tests where
//! no browser can be installed. The last screen of the txt2img scenario is
//! kept as `target/test-artifacts/web_page.png`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "web-page-token";
/// The key WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

#[path = "common/comfy_sandbox.rs"]
mod comfy_sandbox;

use comfy_sandbox::{root, sandbox};

/// A running `flow serve` that wants [`TOKEN`]; killed on drop.
struct Server {
    child: Child,
    addr: String,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flow"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--token",
                TOKEN,
                "--models-dir",
                "models",
            ])
            .args(["--input-dir", "input", "--output-dir", "output", "--cache-dir", "cache"])
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
        Server {
            child,
            addr,
            _stdout: stdout,
        }
    }

    /// A JSON answer of the server's API, with the token.
    fn api(&self, method: &str, path: &str) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        http(&self.addr, method, path, &[("Authorization", &auth)], None)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange; the status and the body read as JSON (Null when
/// it is not JSON).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    // chromedriver keeps the connection open: the answer ends where its
    // Content-Length (or last chunk) says.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let (split, head) = loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let complete = match length {
                Some(n) => raw.len() >= split + 4 + n,
                None => head.contains("transfer-encoding: chunked") && raw.ends_with(b"0\r\n\r\n"),
            };
            if complete {
                break (split, head);
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                let split = raw
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap_or_else(|| panic!("no answer to {path}"));
                break (split, String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase());
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
    let mut content = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        content = unchunk(&content);
    }
    (status, serde_json::from_slice(&content).unwrap_or(Value::Null))
}

/// A chunked body's bytes.
fn unchunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 || raw.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[(end + 4 + size).min(raw.len())..];
    }
    out
}

/// `chromedriver` on the PATH, or why the test cannot run.
fn chromedriver() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("FLOW_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: no chromedriver on the PATH and FLOW_SKIP_BROWSER_TESTS=1");
            return None;
        }
        panic!(
            "the web page tests need a headless Chromium and its WebDriver: install them with \
             `apt-get install -y chromium chromium-driver` (Debian), or set FLOW_SKIP_BROWSER_TESTS=1 to skip them"
        );
    }
    found
}

/// A headless Chromium session through a chromedriver of its own; both end
/// on drop.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

impl Browser {
    fn start(chromedriver: &Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]
        });
        if Path::new("/usr/bin/chromium").is_file() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": options } } });
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
        };
        let answer = browser.call("POST", "/session", Some(&caps));
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        browser
    }

    /// One WebDriver command; its `value`. Errors panic with the driver's message.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = if path == "/session" {
            path.to_string()
        } else {
            format!("/session/{}{path}", self.session)
        };
        let (status, mut answer) = http(&self.addr, method, &path, &[], body);
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].take()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The element `css` selects (panics when none does).
    fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/click"), Some(&json!({})));
    }

    /// Types `text` into the element, after clearing it.
    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/clear"), Some(&json!({})));
        self.call("POST", &format!("/element/{id}/value"), Some(&json!({ "text": text })));
    }

    /// Runs `script` (a function body) in the page with `args`; its result.
    fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// Puts `text` in the graph box the way a paste does (value + input event).
    fn paste_graph(&self, text: &str) {
        self.js(
            "const a = document.getElementById('graph-text'); a.focus(); a.value = arguments[0];\
             a.dispatchEvent(new Event('input', { bubbles: true }));",
            json!([text]),
        );
    }

    /// Polls `script` until it returns something truthy; that value.
    fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let v = self.js(script, json!([]));
            let truthy = !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            if started.elapsed() > timeout {
                self.screenshot("web_page_failure.png");
                let body = self.js("return document.body.innerText;", json!([]));
                panic!(
                    "timed out waiting for {what}; the page reads:\n{}",
                    body.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves the viewport as `target/test-artifacts/NAME`; its path.
    fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self.call("GET", "/screenshot", None);
        let png = base64_decode(shot.as_str().unwrap_or_default());
        let dir = root().join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(&self.addr, "DELETE", &format!("/session/{}", self.session), &[], None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the screenshot's encoding).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bits: Vec<u8> = text.bytes().filter_map(value).collect();
    bits.chunks(4)
        .flat_map(|q| {
            let n = q
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &v)| acc | (u32::from(v) << (18 - 6 * i)));
            n.to_be_bytes()[1..q.len()].to_vec()
        })
        .collect()
}

/// txt2img on the tiny checkpoint, 64x64 unless `size` says otherwise.
const TXT2IMG: &str = "flow: 1
name: web-txt2img
params:
  prompt: a red lighthouse   # what to draw
  seed: 42
  steps: 3
  cfg: 7.5
  size: 64
  hires: false
models:
  sd: ckpt:tiny-sd15-s1.safetensors
nodes:
  cond:
    op: sd.encode_prompt
    in: { model: $sd, prompt: $prompt, negative: blurry }
  noise:
    op: sd.empty_latent
    in: { width: $size, height: $size }
  sample:
    op: sd.sample
    in: { model: $sd, cond: $cond, latent: $noise, steps: $steps, cfg: $cfg, seed: $seed, sampler: euler }
  image:
    op: sd.vae_decode
    in: { model: $sd, latent: $sample }
  save:
    op: image.save
    in: { image: $image, path: \"output/web-${seed}-${steps}.png\" }
";

#[test]
fn page_assets_params_form_and_token_message() {
    let Some(chromedriver) = chromedriver() else { return };
    let dir = sandbox();
    let server = Server::start(dir.path());
    let browser = Browser::start(&chromedriver);
    // Without the token the page still loads (it holds no data) and says
    // how to pass one.
    browser.open(&format!("http://{}/", server.addr));
    let said = browser.wait_for(
        "the token message",
        "const t = document.getElementById('connection').textContent; return t.includes('token') && t;",
        Duration::from_secs(20),
    );
    assert!(said.as_str().unwrap().contains("/?token="), "{said}");
    // The style sheet and the script are the embedded ones.
    let style = browser.js(
        "return getComputedStyle(document.querySelector('.layout')).display;",
        json!([]),
    );
    assert_eq!(style, "grid");
    // A pasted graph's params become a labelled form, typed like the values.
    browser.paste_graph(TXT2IMG);
    let fields = browser.js(
        "return [...document.querySelectorAll('#params-fields [data-param]')].map(i => \
           [i.dataset.param, i.type, i.type === 'checkbox' ? String(i.checked) : i.value, \
            document.querySelector('label[for=\"' + i.id + '\"]').textContent]);",
        json!([]),
    );
    assert_eq!(
        fields,
        json!([
            ["prompt", "text", "a red lighthouse", "prompt"],
            ["seed", "number", "42", "seed"],
            ["steps", "number", "3", "steps"],
            ["cfg", "number", "7.5", "cfg"],
            ["size", "number", "64", "size"],
            ["hires", "checkbox", "false", "hires"]
        ])
    );
    // A flow graph in JSON, and a YAML one with an inline params map.
    browser.paste_graph(r#"{"flow": 1, "params": {"who": "x", "n": 2, "deep": {"a": 1}}, "nodes": {}}"#);
    let json_fields = browser.js(
        "return [...document.querySelectorAll('#params-fields [data-param]')].map(i => i.dataset.param + '=' + i.value);",
        json!([]),
    );
    assert_eq!(json_fields, json!(["who=x", "n=2"]));
    browser.paste_graph("flow: 1\nparams: {who: \"a, b\", i: 0}\nnodes: {}\n");
    let inline = browser.js(
        "return [...document.querySelectorAll('#params-fields [data-param]')].map(i => i.dataset.param + '=' + i.value);",
        json!([]),
    );
    assert_eq!(inline, json!(["who=a, b", "i=0"]));
    // A ComfyUI workflow has no params: no form.
    browser.paste_graph(&std::fs::read_to_string(root().join("graphs/comfy/default_txt2img.json")).unwrap());
    assert_eq!(
        browser.js("return document.getElementById('params').hidden;", json!([])),
        json!(true)
    );
    // Submitting nothing says so, without a request.
    browser.paste_graph("");
    browser.click("#submit-button");
    let error = browser.js("return document.getElementById('submit-error').textContent;", json!([]));
    assert_eq!(error, "Paste or drop a graph first.");
}

/// The states of the graph's node boxes, `id=state`, in document order.
const NODE_STATES: &str =
    "return [...document.querySelectorAll('#graph [data-node]')].map(g => g.dataset.node + '=' + g.dataset.state);";

#[test]
fn txt2img_submitted_watched_to_the_image_and_a_long_run_cancelled() {
    let Some(chromedriver) = chromedriver() else { return };
    let dir = sandbox();
    let server = Server::start(dir.path());
    let browser = Browser::start(&chromedriver);
    browser.open(&format!("http://{}/?token={TOKEN}", server.addr));
    browser.wait_for(
        "the run list",
        "return document.getElementById('connection').textContent === 'connected';",
        Duration::from_secs(20),
    );
    // Paste, set a param by typing, name the run, submit.
    browser.paste_graph(TXT2IMG);
    browser.type_into("#param-seed", "7");
    browser.type_into("#run-name", "lighthouse");
    browser.click("#submit-button");
    browser.wait_for(
        "the submitted run in the list",
        "return document.querySelector('#runs li[data-run] .open')?.textContent.includes('lighthouse');",
        Duration::from_secs(20),
    );
    // Every node of the drawn DAG turns done (or cached), the run succeeds.
    let states = browser.wait_for(
        "every node done",
        "const s = [...document.querySelectorAll('#graph [data-node]')].map(g => g.dataset.state);\
         return s.length === 5 && s.every(x => x === 'done' || x === 'cached') && \
           document.getElementById('run').dataset.state === 'succeeded' && s;",
        Duration::from_secs(300),
    );
    assert!(states.as_array().unwrap().iter().any(|s| s == "done"), "{states}");
    let drawn = browser.js(NODE_STATES, json!([]));
    let nodes: Vec<&str> = drawn
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().split('=').next().unwrap())
        .collect();
    assert_eq!(nodes.len(), 5, "{drawn}");
    for id in ["cond", "noise", "sample", "image", "save"] {
        assert!(nodes.contains(&id), "{id} not drawn: {drawn}");
    }
    // The DAG is layered: each edge goes left to right.
    let edges = browser.js(
        "const x = id => document.querySelector('#graph [data-node=\"' + id + '\"]').transform.baseVal[0].matrix.e;\
         return [...document.querySelectorAll('#graph .edge')].map(e => [e.dataset.from, e.dataset.to, x(e.dataset.from) < x(e.dataset.to)]);",
        json!([]),
    );
    let mut edges: Vec<String> = edges
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}->{} {}", e[0].as_str().unwrap(), e[1].as_str().unwrap(), e[2]))
        .collect();
    edges.sort();
    assert_eq!(
        edges,
        [
            "cond->sample true",
            "image->save true",
            "noise->sample true",
            "sample->image true"
        ]
    );
    let done_text = browser.js(
        "return document.querySelector('#graph [data-node=\"sample\"] .status').textContent;",
        json!([]),
    );
    assert!(done_text.as_str().unwrap().starts_with("done in "), "{done_text}");
    // The image shows inline, decoded by the browser.
    let width = browser.wait_for(
        "the image inline",
        "const i = document.querySelector('#outputs img'); return i && i.complete && i.naturalWidth;",
        Duration::from_secs(30),
    );
    assert_eq!(width, json!(64));
    assert!(
        dir.path().join("output/web-7-3.png").is_file(),
        "the typed seed reached the run"
    );
    let shot = browser.screenshot("web_page.png");
    assert!(
        std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"),
        "{}",
        shot.display()
    );

    // A long run: shown running with its progress, then cancelled.
    browser.paste_graph(TXT2IMG);
    browser.type_into("#param-steps", "1000");
    browser.type_into("#param-size", "256");
    browser.type_into("#run-name", "long");
    browser.click("#submit-button");
    browser.wait_for(
        "the long run's sampler running with progress",
        "const g = document.querySelector('#graph [data-node=\"sample\"]');\
         return document.getElementById('run-title').textContent === 'long' && g && g.dataset.state === 'running' && \
           /running \\d+\\/1000$/.test(g.querySelector('.status').textContent);",
        Duration::from_secs(120),
    );
    let long = browser.js("return document.getElementById('run').dataset.run;", json!([]));
    let long = long.as_str().unwrap().to_string();
    browser.click("#run-cancel");
    browser.wait_for(
        "the long run interrupted",
        "return document.getElementById('run').dataset.state === 'interrupted' && \
           document.getElementById('run-cancel').hidden;",
        Duration::from_secs(60),
    );
    let (status, run) = server.api("GET", &format!("/v1/runs/{long}"));
    assert_eq!((status, run["state"].as_str()), (200, Some("interrupted")), "{run}");
    browser.wait_for(
        "the list showing it interrupted",
        &format!("return document.querySelector('#runs li[data-run=\"{long}\"]')?.dataset.state === 'interrupted';"),
        Duration::from_secs(10),
    );
    // The first run is untouched.
    let first = browser.js(
        "return [...document.querySelectorAll('#runs li')].map(li => li.dataset.state);",
        json!([]),
    );
    assert_eq!(first, json!(["interrupted", "succeeded"]));
}

#[test]
fn dropped_file_invalid_graph_and_failed_node_shown() {
    let Some(chromedriver) = chromedriver() else { return };
    let dir = sandbox();
    let server = Server::start(dir.path());
    let browser = Browser::start(&chromedriver);
    browser.open(&format!("http://{}/?token={TOKEN}", server.addr));
    // A dropped file fills the graph box, its params and the run's name.
    browser.js(
        "const t = new DataTransfer(); t.items.add(new File([arguments[0]], 'dropped.yaml'));\
         document.getElementById('graph-text').dispatchEvent(new DragEvent('drop', { dataTransfer: t, bubbles: true }));",
        json!([TXT2IMG]),
    );
    let dropped = browser.wait_for(
        "the dropped file read",
        "return document.getElementById('run-name').value === 'dropped.yaml' && \
           document.getElementById('graph-text').value.startsWith('flow: 1') && \
           document.getElementById('param-steps').value;",
        Duration::from_secs(10),
    );
    assert_eq!(dropped, "3");
    // An invalid graph: the server's diagnostics, as the CLI renders them.
    browser.paste_graph("flow: 1\nnodes:\n  a:\n    op: text.nope\n");
    browser.click("#submit-button");
    let error = browser.wait_for(
        "the diagnostics",
        "const e = document.getElementById('submit-error'); return !e.hidden && e.textContent;",
        Duration::from_secs(20),
    );
    assert!(error.as_str().unwrap().contains("text.nope"), "{error}");
    // A run whose sampler fails: the node shows the error, what depends on it is skipped.
    browser.paste_graph(TXT2IMG);
    browser.type_into("#param-steps", "5000");
    browser.type_into("#run-name", "too many steps");
    browser.click("#submit-button");
    let states = browser.wait_for(
        "the failed run",
        "return document.getElementById('run').dataset.state === 'failed' && \
           [...document.querySelectorAll('#graph [data-node]')].map(g => g.dataset.node + '=' + g.dataset.state).sort();",
        Duration::from_secs(120),
    );
    assert_eq!(
        states,
        json!([
            "cond=done",
            "image=skipped",
            "noise=done",
            "sample=failed",
            "save=skipped"
        ])
    );
    let shown = browser.js(
        "return [document.querySelector('#graph [data-node=\"sample\"] title').textContent, \
                 document.getElementById('run-error').hidden, document.getElementById('submit-error').hidden];",
        json!([]),
    );
    assert!(
        shown[0].as_str().unwrap().starts_with("sample: failed: ") && shown[0].as_str().unwrap().contains("5000"),
        "{shown}"
    );
    assert_eq!(
        (shown[1].clone(), shown[2].clone()),
        (json!(false), json!(true)),
        "{shown}"
    );
}
