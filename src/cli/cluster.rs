//! `flow cluster status --nats URL`: the workers, their devices and
//! resident models, the runs in flight, the jobs waiting.

use flow_cluster::{status, Cluster, Settings};
use flow_server::reporter::timestamp;

use super::table::{duration, Table};
use super::{EXIT_FAILED, EXIT_OK};

/// Prints the cluster's state; returns the exit code.
pub fn status(url: &str, json: bool) -> u8 {
    let cluster = match Cluster::connect(url, Settings::default()) {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    let h = cluster.handles.clone();
    let url = url.to_string();
    let status = match cluster.block_on(async move { status::read(&h, &url).await }) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e:#}");
            return EXIT_FAILED;
        }
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
        return EXIT_OK;
    }
    let now = timestamp();
    let ago = |ms: u64| duration(now.saturating_sub(ms) as f64);
    outln!("cluster at {}", status.url);
    let mut workers = Table::new(&["worker", "device", "slots", "running", "done", "models", "up", "last beat"]);
    for w in &status.workers {
        let running = if w.running.is_empty() { "-".to_string() } else { w.running.join(", ") };
        let models = models_shown(&w.models);
        let name = if w.draining { format!("{} (draining)", w.name) } else { w.name.clone() };
        workers.row(vec![
            name,
            w.device.clone(),
            w.slots.to_string(),
            running,
            w.finished.to_string(),
            models,
            ago(w.started_ms),
            format!("{} ago", ago(w.beat_ms)),
        ]);
    }
    if status.workers.is_empty() {
        outln!("no workers (start one with `flow worker --nats {}`)", status.url);
    } else {
        out!("{}", workers.render());
    }
    let waiting: usize = status.subjects.values().sum();
    outln!("job stream: {waiting} job(s) waiting or in progress");
    for (subject, n) in &status.subjects {
        outln!("  {subject}: {n}");
    }
    let runs: Vec<String> = status.runs.iter().map(|(state, n)| format!("{n} {state}")).collect();
    outln!("runs: {}", if runs.is_empty() { "none".to_string() } else { runs.join(", ") });
    for r in &status.in_flight {
        let since = r.started_ms.map(|s| format!(" for {}", ago(s))).unwrap_or_default();
        outln!("  {} on {} (attempt {}){since}", r.id, r.worker, r.attempts);
    }
    EXIT_OK
}

/// Pool keys (`FINGERPRINT|DEVICE|PART`) shown per model: the start of
/// its fingerprint and its parts, e.g. `a37ce070 (sd-text-encoder-f32, sd-unet-f32)`.
fn models_shown(keys: &[String]) -> String {
    let mut models: Vec<(String, Vec<String>)> = Vec::new();
    for key in keys {
        let mut fields = key.split('|');
        let fingerprint = fields.next().unwrap_or_default();
        let part = fields.next_back().unwrap_or(fingerprint).to_string();
        let short: String = fingerprint.chars().take(8).collect();
        match models.iter_mut().find(|(f, _)| *f == short) {
            Some((_, parts)) => parts.push(part),
            None => models.push((short, vec![part])),
        }
    }
    if models.is_empty() {
        return "-".into();
    }
    models.iter().map(|(f, parts)| format!("{f} ({})", parts.join(", "))).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_grouped_by_fingerprint() {
        let keys = ["a37ce0708cb0|Cpu|sd-vae-f32", "a37ce0708cb0|Cpu|sd-unet-f32", "ffee|Cuda(0)|bert"].map(String::from);
        assert_eq!(models_shown(&keys), "a37ce070 (sd-vae-f32, sd-unet-f32); ffee (bert)");
        assert_eq!(models_shown(&[]), "-");
    }
}
