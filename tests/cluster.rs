//! Scale-out on NATS JetStream, end to end: a real `nats-server -js` on a
//! free 127.0.0.1 port (one per test, its own store folder), the real
//! `flow` binary as front end (`flow serve --nats`), workers (`flow worker
//! --nats`) and client (`flow run --nats`), and faults made by killing
//! processes. Runs use ComfyUI's default workflow on the tiny checkpoint
//! at 64×64.

use std::path::Path;
use std::time::{Duration, Instant};

use flow_cluster::record::RunState;
use serde_json::{json, Value};

#[path = "common/nats.rs"]
mod nats;

#[path = "common/comfy_sandbox.rs"]
mod comfy_sandbox;

#[path = "common/cluster_procs.rs"]
mod cluster_procs;

use cluster_procs::{worker, workflow, FrontEnd, Look, Proc};
use comfy_sandbox::{root, sandbox};
use nats::NatsServer;

fn flow() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_flow"))
}

/// The decoded pixels of a PNG.
fn pixels(png: &[u8]) -> Vec<u8> {
    image::load_from_memory(png).unwrap().to_rgb8().into_raw()
}

/// The flow node running `op` in a front end's view of a run.
fn node_of(run: &Value, op: &str) -> Option<String> {
    let nodes = run["graph"]["nodes"].as_array()?;
    Some(nodes.iter().find(|n| n["op"] == op)?["id"].as_str()?.to_string())
}

#[test]
fn thirty_runs_from_three_clients_on_three_workers_match_one_process() {
    let dir = sandbox();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let front = FrontEnd::start(flow(), dir.path(), &nats.url());
    let _workers: Vec<Proc> =
        (0..3).map(|i| worker(flow(), dir.path(), &nats.url(), &format!("w{i}"), &["--ack-wait", "10"])).collect();
    let seeds: Vec<u64> = (0..30).collect();
    let ids: Vec<(u64, String)> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..3)
            .map(|c| {
                let front = &front;
                let seeds = &seeds;
                s.spawn(move || {
                    seeds
                        .iter()
                        .filter(|seed| **seed % 3 == c)
                        .map(|&seed| (seed, front.prompt(&workflow(&root(), seed, 2), &format!("client{c}"))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    let all: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
    // ComfyUI's queue shows as running what workers run (3 slots; a run
    // that just ended there may not be recorded here yet), the rest queued.
    let queue = front.get("/queue");
    let running = queue["queue_running"].as_array().unwrap().len();
    let pending = queue["queue_pending"].as_array().unwrap().len();
    assert!(running <= 10, "{running} running, {pending} pending");
    let history = front.wait_history(&all, Duration::from_secs(600));
    let look = Look::new(&nats.url());
    let mut by_worker = std::collections::BTreeMap::<String, usize>::new();
    let mut images = std::collections::BTreeMap::new();
    for (seed, id) in &ids {
        assert_eq!(history[id]["status"]["status_str"], "success", "{}", history[id]);
        let record = look.record(id).unwrap();
        assert_eq!((record.state, record.attempts), (RunState::Succeeded, 1));
        *by_worker.entry(record.worker.unwrap()).or_default() += 1;
        images.insert(*seed, pixels(&front.first_image(&history[id])));
    }
    assert!(by_worker.len() >= 2, "the runs were not spread: {by_worker:?}");
    // Following runs leaves no consumer per run on the server (it caps them):
    // the front end's one watch of the runs bucket serves all its followers.
    let h = look.cluster.handles.clone();
    let consumers = look.cluster.block_on(async move {
        h.js.get_stream("KV_flow-runs").await.unwrap().info().await.unwrap().state.consumer_count
    });
    assert!(consumers <= 2, "{consumers} consumers on the runs bucket");
    // Every run's name is its own (SaveImage numbers are shared by the workers).
    let names: std::collections::BTreeSet<String> =
        all.iter().map(|id| history[id]["outputs"]["9"]["images"][0]["filename"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), 30);

    // The same prompts on one process, without NATS: the same pixels.
    let single = sandbox();
    let alone = FrontEnd::serve(flow(), single.path(), &["--cache-dir", "cache"]);
    let ids: Vec<(u64, String)> =
        seeds.iter().map(|&seed| (seed, alone.prompt(&workflow(&root(), seed, 2), "me"))).collect();
    let history = alone.wait_history(&ids.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(), Duration::from_secs(600));
    for (seed, id) in &ids {
        assert!(pixels(&alone.first_image(&history[id])) == images[seed], "seed {seed} differs");
    }
}

#[test]
fn a_worker_killed_in_the_sampler_loses_its_run_to_another_which_reuses_what_was_done() {
    let dir = sandbox();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let front = FrontEnd::start(flow(), dir.path(), &nats.url());
    let mut workers = [
        worker(flow(), dir.path(), &nats.url(), "a", &["--ack-wait", "2"]),
        worker(flow(), dir.path(), &nats.url(), "b", &["--ack-wait", "2"]),
    ];
    let look = Look::new(&nats.url());
    let id = front.prompt(&workflow(&root(), 11, 400), "me");
    // In the sampler: it reported steps.
    let start = Instant::now();
    let (run, sampler) = loop {
        let run = front.get(&format!("/v1/runs/{id}"));
        if let Some(sampler) = node_of(&run, "sd.sample") {
            if run["nodes"][&sampler]["progress"]["done"].as_u64().unwrap_or(0) >= 2 {
                break (run, sampler);
            }
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the sampler did not start: {run}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let done_before: Vec<String> = run["nodes"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| s["state"] == "done")
        .map(|(n, _)| n.clone())
        .collect();
    assert!(!done_before.is_empty(), "{run}");
    let holder = look.record(&id).unwrap().worker.unwrap();
    let killed = if holder == "a" { 0 } else { 1 };
    workers[killed].kill9();

    let history = front.wait_history(std::slice::from_ref(&id), Duration::from_secs(180));
    assert_eq!(history[&id]["status"]["status_str"], "success", "{}", history[&id]);
    let record = look.record(&id).unwrap();
    assert_eq!(record.state, RunState::Succeeded);
    assert_eq!(record.attempts, 2);
    assert_ne!(record.worker.as_deref(), Some(holder.as_str()));
    // The second attempt served what the first finished from the shared
    // cache: those nodes ran once in all.
    let run = front.get(&format!("/v1/runs/{id}"));
    for node in &done_before {
        assert_eq!(run["nodes"][node]["state"], "cached", "{node}: {run}");
    }
    assert_eq!(run["nodes"][&sampler]["state"], "done", "{run}");
    assert_eq!(front.get("/history").as_object().unwrap().keys().filter(|k| **k == id).count(), 1);
}

#[test]
fn killing_the_front_end_or_restarting_nats_loses_no_run() {
    let dir = sandbox();
    let mut nats = NatsServer::start(&dir.path().join("nats"));
    let mut front = FrontEnd::start(flow(), dir.path(), &nats.url());
    let _workers = [
        worker(flow(), dir.path(), &nats.url(), "a", &["--ack-wait", "3"]),
        worker(flow(), dir.path(), &nats.url(), "b", &["--ack-wait", "3"]),
    ];
    let look = Look::new(&nats.url());
    let mut ids: Vec<String> = (0..6).map(|seed| front.prompt(&workflow(&root(), seed, 12), "me")).collect();
    look.wait(&ids[0], Duration::from_secs(60), |r| r.state == RunState::Running);
    front.proc.kill9();
    front = FrontEnd::start(flow(), dir.path(), &nats.url());
    let history = front.wait_history(&ids, Duration::from_secs(300));
    for id in &ids {
        assert_eq!(history[id]["status"]["status_str"], "success", "{}", history[id]);
        assert_eq!(look.record(id).unwrap().attempts, 1);
    }

    // The NATS server killed and restarted while runs are queued and running.
    let more: Vec<String> = (10..14).map(|seed| front.prompt(&workflow(&root(), seed, 12), "me")).collect();
    look.wait(&more[0], Duration::from_secs(60), |r| r.state == RunState::Running);
    nats.restart();
    ids.extend(more);
    let history = front.wait_history(&ids, Duration::from_secs(300));
    assert_eq!(history.as_object().unwrap().len(), ids.len());
    for id in &ids {
        assert_eq!(history[id]["status"]["status_str"], "success", "{}", history[id]);
    }

    // A front end with none of the first one's files rebuilds the history
    // from the cluster, images included.
    let other = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join("models")).unwrap();
    let fresh = FrontEnd::start(flow(), other.path(), &nats.url());
    let rebuilt = fresh.wait_history(&ids, Duration::from_secs(60));
    for id in &ids {
        assert_eq!(rebuilt[id]["status"]["status_str"], "success");
        assert!(pixels(&fresh.first_image(&rebuilt[id])) == pixels(&front.first_image(&history[id])));
    }
}

#[test]
fn a_run_that_takes_down_every_worker_fails_after_its_attempts_and_the_queue_goes_on() {
    let dir = sandbox();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let front = FrontEnd::start(flow(), dir.path(), &nats.url());
    let args = ["--ack-wait", "1", "--max-attempts", "2"];
    let mut workers = [
        worker(flow(), dir.path(), &nats.url(), "w0", &args),
        worker(flow(), dir.path(), &nats.url(), "w1", &args),
    ];
    let look = Look::new(&nats.url());
    let doomed = front.prompt(&workflow(&root(), 3, 10_000), "me");
    // Whichever worker starts it dies (kill -9), and a fresh one takes its place.
    for (attempt, next_name) in (1..=2).zip(2..) {
        let r = look.wait(&doomed, Duration::from_secs(120), |r| r.state == RunState::Running && r.attempts == attempt);
        let holder = r.worker.unwrap();
        let i = workers.iter().position(|w| w.lines().iter().any(|l| l.contains(&format!("worker {holder} ")))).unwrap();
        workers[i].kill9();
        workers[i] = worker(flow(), dir.path(), &nats.url(), &format!("w{next_name}"), &args);
    }
    let history = front.wait_history(std::slice::from_ref(&doomed), Duration::from_secs(120));
    let entry = &history[&doomed];
    assert_eq!(entry["status"]["status_str"], "error");
    let error = entry["status"]["messages"].as_array().unwrap().iter().find(|m| m[0] == "execution_error").unwrap();
    let message = error[1]["exception_message"].as_str().unwrap();
    assert!(message.contains("gave up") && message.contains("2 times"), "{message}");
    assert_eq!(look.record(&doomed).unwrap().state, RunState::Failed);
    // The queue goes on.
    let after = front.prompt(&workflow(&root(), 4, 2), "me");
    let history = front.wait_history(std::slice::from_ref(&after), Duration::from_secs(120));
    assert_eq!(history[&after]["status"]["status_str"], "success");

    // ComfyUI's interrupt of one prompt reaches the worker running it.
    let long = front.prompt(&workflow(&root(), 5, 10_000), "me");
    look.wait(&long, Duration::from_secs(60), |r| r.state == RunState::Running);
    ureq::post(&front.url("/interrupt")).send_json(json!({ "prompt_id": long })).unwrap();
    let history = front.wait_history(std::slice::from_ref(&long), Duration::from_secs(60));
    let messages = history[&long]["status"]["messages"].as_array().unwrap();
    assert!(messages.iter().any(|m| m[0] == "execution_interrupted"), "{}", history[&long]);
    assert_eq!(look.record(&long).unwrap().state, RunState::Interrupted);
}

#[test]
fn a_run_computed_on_one_worker_is_a_cache_hit_on_another_and_workers_drain() {
    let dir = sandbox();
    let nats = NatsServer::start(&dir.path().join("nats"));
    std::fs::write(dir.path().join("wf.json"), workflow(&root(), 21, 3).to_string()).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(flow())
            .args(["run", "--nats", &nats.url()])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut a = worker(flow(), dir.path(), &nats.url(), "a", &["--ack-wait", "5", "--drain-timeout", "1"]);
    let (code, first) = run(&["wf.json"]);
    assert_eq!(code, Some(0), "{first}");
    assert!(first.contains("ran on a (attempt 1)"), "{first}");
    assert!(first.contains("done in"), "{first}");
    // The image it wrote is fetched from the cluster into the same path here.
    let wrote = first.lines().find_map(|l| l.strip_prefix("wrote ")).unwrap();
    assert!(wrote.starts_with("output/ComfyUI_"), "{first}");
    assert_eq!(&std::fs::read(dir.path().join(wrote)).unwrap()[..4], b"\x89PNG");

    // `flow cluster status` lists the worker and the finished run.
    let status = std::process::Command::new(flow()).args(["cluster", "status", "--nats", &nats.url(), "--json"]).output().unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["workers"][0]["name"], "a", "{status}");
    assert_eq!(status["workers"][0]["device"], "cpu", "{status}");
    assert_eq!(status["runs"]["succeeded"], 1, "{status}");

    // SIGTERM: a long run is handed back, the worker leaves the cluster.
    std::fs::write(dir.path().join("long.json"), workflow(&root(), 22, 10_000).to_string()).unwrap();
    let mut long = Proc::start(flow(), dir.path(), &["run", "--nats", &nats.url(), "long.json", "--json"]);
    long.wait_line("\"progress\"", Duration::from_secs(60));
    assert_eq!(a.terminate(Duration::from_secs(30)), Some(0));
    let status = std::process::Command::new(flow()).args(["cluster", "status", "--nats", &nats.url(), "--json"]).output().unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["workers"], json!([]), "{status}");
    assert_eq!(status["runs"]["queued"], 1, "{status}");

    // Another worker takes the handed-back run (still its first attempt);
    // Ctrl-C on the client cancels it there.
    let _b = worker(flow(), dir.path(), &nats.url(), "b", &["--ack-wait", "5"]);
    let look = Look::new(&nats.url());
    let r = look.wait_any_running(Duration::from_secs(60));
    assert_eq!((r.worker.as_deref(), r.attempts), (Some("b"), 1));
    assert_eq!(long.terminate(Duration::from_secs(30)), Some(130));
    look.wait(&r.job.prompt_id, Duration::from_secs(30), |r| r.state == RunState::Interrupted);

    // The first graph again, on the other worker: what it computed comes
    // from the shared tier; only the file is written again (this worker's
    // output folder does not have it).
    let (code, second) = run(&["wf.json", "--json"]);
    assert_eq!(code, Some(0), "{second}");
    let events: Vec<Value> = second.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let started: Vec<&Value> = events.iter().filter(|e| e["event"] == "node_started").map(|e| &e["op"]).collect();
    assert_eq!(started, [&json!("image.save")], "{second}");
    assert_eq!(events[0]["to_run"], 1, "{second}");
    assert!(events.iter().any(|e| e["event"] == "node_cached" && e["op"] == "sd.vae_decode"), "{second}");
}

#[test]
fn a_worker_takes_first_the_jobs_whose_models_it_holds() {
    let dir = sandbox();
    let models = dir.path().join("models/checkpoints");
    std::fs::copy(models.join("tiny-sd15-s1.safetensors"), models.join("other.safetensors")).unwrap();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let _w = worker(flow(), dir.path(), &nats.url(), "w", &["--ack-wait", "5"]);
    let write = |name: &str, ckpt: &str, seed: u64, steps: u64| {
        let mut wf = workflow(&root(), seed, steps);
        wf["4"]["inputs"]["ckpt_name"] = json!(ckpt);
        std::fs::write(dir.path().join(name), wf.to_string()).unwrap();
    };
    let url = nats.url();
    let submit = |name: &str, json: bool| {
        let mut args = vec!["run", "--nats", &url, name];
        if json {
            args.push("--json");
        }
        Proc::start(flow(), dir.path(), &args)
    };
    // The worker runs one graph on the tiny checkpoint: its models stay in memory.
    write("a0.json", "tiny-sd15-s1.safetensors", 1, 2);
    assert_eq!(submit("a0.json", false).wait(), Some(0));
    // While it runs a long one, two jobs for another checkpoint queue up
    // first, then one for the tiny checkpoint.
    write("long.json", "tiny-sd15-s1.safetensors", 2, 10_000);
    let mut long = submit("long.json", true);
    long.wait_line("\"progress\"", Duration::from_secs(60));
    let look = Look::new(&nats.url());
    let queued = |n: usize| {
        let start = Instant::now();
        while look.all().iter().filter(|r| r.state == RunState::Queued).count() < n {
            assert!(start.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    write("b1.json", "other.safetensors", 3, 2);
    write("b2.json", "other.safetensors", 4, 2);
    write("a1.json", "tiny-sd15-s1.safetensors", 5, 2);
    let mut waiting = vec![submit("b1.json", false), submit("b2.json", false)];
    queued(2);
    waiting.push(submit("a1.json", false));
    queued(3);
    assert_eq!(long.terminate(Duration::from_secs(30)), Some(130));
    for mut p in waiting {
        assert_eq!(p.wait(), Some(0), "{:?}", p.lines());
    }
    let started = |ckpt: &str| -> Vec<u64> {
        let mut s: Vec<u64> = look
            .all()
            .iter()
            .filter(|r| r.state == RunState::Succeeded && r.job.prompt.to_string().contains(ckpt))
            .filter_map(|r| r.started_ms)
            .collect();
        s.sort();
        s
    };
    let (a, b) = (started("tiny-sd15-s1"), started("other.safetensors"));
    assert_eq!((a.len(), b.len()), (2, 2));
    assert!(a[1] < b[0], "the job for the models in memory ran first: tiny {a:?}, other {b:?}");
}

#[test]
fn an_image_uploaded_to_the_front_end_is_read_by_a_worker() {
    let dir = sandbox();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let front = FrontEnd::start(flow(), dir.path(), &nats.url());
    let _w = worker(flow(), dir.path(), &nats.url(), "w", &[]);
    let picture = image::RgbImage::from_fn(8, 4, |x, y| image::Rgb([x as u8 * 30, y as u8 * 60, 7]));
    let mut png = Vec::new();
    picture.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let boundary = "flowtestboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"up.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&png);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    ureq::post(&front.url("/upload/image"))
        .set("Content-Type", &format!("multipart/form-data; boundary={boundary}"))
        .send_bytes(&body)
        .unwrap();
    let graph = "flow: 1\nnodes:\n  load:\n    op: image.load\n    in: { path: input/up.png }\n  \
                 save:\n    op: image.save\n    in: { image: $load, path: output/copy.png }\n";
    let answer: Value =
        ureq::post(&front.url("/v1/runs")).send_json(json!({ "graph": graph })).unwrap().into_json().unwrap();
    let id = answer["run_id"].as_str().unwrap().to_string();
    let history = front.wait_history(std::slice::from_ref(&id), Duration::from_secs(60));
    assert_eq!(history[&id]["status"]["status_str"], "success", "{}", history[&id]);
    let copy = front.bytes("/view?filename=copy.png&type=output");
    assert_eq!(pixels(&copy), picture.into_raw());
    // The worker read it from the cluster, not from the front end's folder.
    assert!(dir.path().join("w-cache/worker/input/up.png").exists());
}
