//! The names a cluster uses on its NATS server: the job stream and its
//! subjects, the buckets, the per-run subjects. One place, so the front
//! end, the workers and `flow cluster status` agree.

/// The work-queue stream of jobs (one message per run attempt to start).
pub const JOB_STREAM: &str = "FLOW_JOBS";
/// Every job subject: `flow.jobs.<device class>.<model family>`.
pub const JOB_SUBJECTS: &str = "flow.jobs.>";
/// Run state, one key per run (compare-and-swap on every change).
pub const RUNS_BUCKET: &str = "flow-runs";
/// Worker heartbeats (entries expire when a worker stops beating).
pub const WORKERS_BUCKET: &str = "flow-workers";
/// Shared SaveImage counters.
pub const COUNTERS_BUCKET: &str = "flow-counters";
/// Files the workers write (outputs) and the inputs shared with them.
pub const FILES_STORE: &str = "flow-files";
/// Core subject announcing that jobs were queued (workers wake up).
pub const WAKE: &str = "flow.wake";

/// The subject of the jobs for a device class and model family.
pub fn job_subject(device: &str, family: &str) -> String {
    format!("flow.jobs.{device}.{family}")
}

/// `(device class, family)` of a job subject.
pub fn parse_job_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("flow.jobs.")?;
    rest.split_once('.')
}

/// The key of a run in the runs bucket and in its subjects: the run id when
/// it is made of letters, digits, `-` and `_` (uuids are), else `h` and a
/// hash of it.
pub fn run_key(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 100
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        id.to_string()
    } else {
        format!("h{}", &blake3::hash(id.as_bytes()).to_hex()[..40])
    }
}

/// Core subject of a run's events (at most once).
pub fn events_subject(key: &str) -> String {
    format!("flow.events.{key}")
}

/// Core subject asking the worker running a run to stop it.
pub fn cancel_subject(key: &str) -> String {
    format!("flow.cancel.{key}")
}

/// The durable pull consumer of one job subject (subjects never overlap, as
/// a work-queue stream requires).
pub fn consumer_name(device: &str, family: &str) -> String {
    format!("jobs_{device}_{family}")
}

/// A name as a key of a bucket (letters, digits, `-`, `_`, `=`, `/` and
/// `.` inside): other bytes are written `=XX`.
pub fn bucket_key(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'/' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_subjects() {
        assert_eq!(run_key("7c0e-11_ab"), "7c0e-11_ab");
        let odd = run_key("a.b c");
        assert!(odd.starts_with('h') && odd.len() == 41 && odd != run_key("a.b d"));
        assert_eq!(parse_job_subject(&job_subject("cuda", "f00")), Some(("cuda", "f00")));
        assert_eq!(bucket_key("sub dir/ComfyUI"), "sub=20dir/ComfyUI");
        assert_eq!(bucket_key("a.b"), "a=2Eb");
    }
}
