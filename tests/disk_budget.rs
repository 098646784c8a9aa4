//! The disk cache keeps within its byte budget: least recently used entries
//! go first, an entry too large for it stays in memory only, and `flow cache
//! stats` reports the budget.

mod common;

use common::{executed, Sandbox};

/// `n` independent 64×64 f32 tensors (16 KiB each as entries), each saved.
fn graph(n: usize, seed: u64) -> String {
    let mut yaml = String::from("flow: 1\nnodes:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  t{i}: {{ op: tensor.random, in: {{ shape: [64, 64], seed: {} }} }}\n  \
             s{i}: {{ op: tensor.save, in: {{ tensor: $t{i}, path: out/{seed}-{i}.safetensors }} }}\n",
            seed * 1000 + i as u64
        ));
    }
    yaml
}

fn cache_bytes(sb: &Sandbox) -> u64 {
    walk(&sb.cache_dir().join("v1")).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "fv") {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn the_folder_keeps_within_its_budget_least_recently_used_first() {
    let sb = Sandbox::new();
    sb.write("a.yaml", &graph(8, 1));
    sb.write("b.yaml", &graph(8, 2));
    // Each graph makes about 130 KiB of entries; both do not fit in 200 KiB.
    let budget = "200K";
    assert_eq!(sb.run_json("a.yaml", &["--disk-budget", budget]).0, 0);
    assert!(cache_bytes(&sb) <= 200 << 10);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (_, events) = sb.run_json("b.yaml", &["--disk-budget", budget]);
    assert_eq!(executed(&events).len(), 16);
    assert!(cache_bytes(&sb) <= 200 << 10, "{} bytes", cache_bytes(&sb));
    // b's entries are the newest: b is served from the cache.
    let (_, events) = sb.run_json("b.yaml", &["--disk-budget", budget]);
    assert!(executed(&events).is_empty(), "{events:#?}");
    // a lost entries to b: of the 32 entries, some are gone.
    assert!(walk(&sb.cache_dir().join("v1")).len() < 32);
    // a is still right: its results come from what is left, or run again.
    assert_eq!(sb.run_json("a.yaml", &["--disk-budget", budget]).0, 0);
    assert!(cache_bytes(&sb) <= 200 << 10);
}

#[test]
fn an_entry_too_large_for_the_budget_stays_in_memory() {
    let sb = Sandbox::new();
    sb.write("g.yaml", "flow: 1\nnodes:\n  t: { op: tensor.random, in: { shape: [256, 256], seed: 1 } }\n  s: { op: tensor.save, in: { tensor: $t, path: out/t.safetensors } }\n");
    let (code, events) = sb.run_json("g.yaml", &["--disk-budget", "200K"]);
    assert_eq!(code, 0);
    let warning = events.iter().find(|e| e["event"] == "warning").expect("a warning");
    assert!(warning["message"].as_str().unwrap().contains("kept in memory only"), "{warning}");
    assert!(sb.path().join("out/t.safetensors").exists());
}

#[test]
fn stats_report_the_budget_and_bad_budgets_are_usage_errors() {
    let sb = Sandbox::new();
    sb.write("g.yaml", &graph(1, 1));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flow"))
        .args(["cache", "stats"])
        .env("FLOW_CACHE_DIR", sb.cache_dir())
        .env("FLOW_DISK_BUDGET", "2G")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("budget: 2.0 GiB"), "{stdout}");
    let out = sb.flow(&["run", "g.yaml", "--disk-budget", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr(&out).contains("--disk-budget lots"));
    // The GPU budget is read the same way.
    let out = sb.flow(&["run", "g.yaml", "--vram-budget", "12Q"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr(&out).contains("--vram-budget 12Q: unknown unit"), "{}", common::stderr(&out));
    let out = sb.flow(&["run", "g.yaml", "--vram-budget", "6G"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
}
