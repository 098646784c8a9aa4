//! The memory tier of the cache holds its byte budget under a graph whose
//! values exceed it.

use std::sync::Arc;

use flow_engine::events::null_sink;
use flow_engine::graph::{self, DeviceChoice};
use flow_engine::run::{NoModels, PlanOptions};
use flow_engine::{CancelToken, Engine, EngineConfig};

#[test]
fn the_memory_tier_never_exceeds_its_budget() {
    // 12 tensors of 256 KiB each (3 MiB in all) against a 1 MiB budget.
    let mut yaml = String::from("flow: 1\nnodes:\n");
    for i in 0..12 {
        yaml.push_str(&format!("  t{i}: {{ op: tensor.random, in: {{ shape: [256, 256], seed: {i} }} }}\n"));
        yaml.push_str(&format!("  s{i}: {{ op: tensor.scale, in: {{ tensor: $t{i}, factor: 2 }} }}\n"));
        yaml.push_str(&format!("  p{i}: {{ op: debug.print, in: {{ value: $s{i} }} }}\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let graph = graph::from_bytes("mem.yaml", dir.path(), yaml.as_bytes(), &[], &flow_nodes::registry()).unwrap();
    let budget = 1 << 20;
    let config = EngineConfig { memory_budget: budget, default_device: DeviceChoice::Cpu, ..Default::default() };
    let engine = Engine::new(flow_nodes::registry(), Arc::new(NoModels), config).unwrap();
    let report = engine.run(Arc::new(graph), &PlanOptions::default(), null_sink(), CancelToken::new());
    assert!(report.ok(), "{report:#?}");
    let stats = engine.cache().memory_stats();
    assert!(stats.bytes <= budget, "{stats:?}");
    assert!(stats.entries > 0, "the tier keeps what fits: {stats:?}");
}
