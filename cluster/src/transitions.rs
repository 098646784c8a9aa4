//! The changes a worker makes to a run's record, as pure functions of the
//! record it read: each is written back with a compare-and-swap (see
//! [`crate::runs::update`]), so it applies only to the record it was
//! computed from. A worker that stalled, lost its lease and came back
//! finds the run taken over and changes nothing.

use std::time::Duration;

use flow_server::job::HistoryEntry;
use flow_server::runlog::Record;

use crate::record::{RunRecord, RunState};

/// What a worker does with a job whose run it read.
#[derive(Debug)]
pub enum Take {
    /// The run is this worker's: write this record, then run it.
    Run(Box<RunRecord>),
    /// The run ends without running (cancelled while queued, or out of
    /// attempts): write this record, then acknowledge the job.
    End(Box<RunRecord>),
    /// The run has ended: acknowledge the job.
    Ended,
    /// A live worker holds the run: look again after this long.
    Later(Duration),
}

/// How `worker` takes run `r` at `now_ms`, holding it for `lease` and
/// starting a run at most `max_attempts` times.
pub fn take(r: &RunRecord, worker: &str, now_ms: u64, lease: Duration, max_attempts: u32) -> Take {
    if r.state.is_terminal() {
        return Take::Ended;
    }
    if !r.is_free_for(worker, now_ms) {
        return Take::Later(Duration::from_millis(r.lease_until_ms.saturating_sub(now_ms) + 500));
    }
    let mut next = r.clone();
    if r.cancel_requested {
        next.end_unrun(RunState::Interrupted, "cancelled");
        return Take::End(Box::new(next));
    }
    if r.attempts >= max_attempts {
        let last = r.worker.as_deref().unwrap_or("a worker");
        next.end_unrun(
            RunState::Failed,
            &format!(
                "gave up: the run was started {} times and each time its worker stopped before it ended \
                 (crashed, killed or cut off; the last one was {last}); a cluster starts a run at most {} times",
                r.attempts, max_attempts
            ),
        );
        return Take::End(Box::new(next));
    }
    next.state = RunState::Running;
    next.worker = Some(worker.to_string());
    next.attempts += 1;
    next.lease_until_ms = now_ms + lease.as_millis() as u64;
    next.started_ms = Some(now_ms);
    Take::Run(Box::new(next))
}

/// Whether `worker` still holds run `r`.
pub fn holds(r: &RunRecord, worker: &str) -> bool {
    r.state == RunState::Running && r.worker.as_deref() == Some(worker)
}

/// `worker`'s lease on `r` renewed until `until_ms`; `None` when it does
/// not hold the run any more.
pub fn renew(r: &RunRecord, worker: &str, until_ms: u64) -> Option<RunRecord> {
    holds(r, worker).then(|| RunRecord { lease_until_ms: until_ms, ..r.clone() })
}

/// The run handed back by `worker` (it drains): queued again, the attempt
/// not counted; `None` when it does not hold the run any more.
pub fn hand_back(r: &RunRecord, worker: &str) -> Option<RunRecord> {
    holds(r, worker).then(|| RunRecord {
        state: RunState::Queued,
        worker: None,
        lease_until_ms: 0,
        attempts: r.attempts.saturating_sub(1),
        started_ms: None,
        ..r.clone()
    })
}

/// The run ended by `worker` in `state`, with its history entry and record
/// (`finished_ms` then); `None` when it does not hold the run any more.
pub fn end(
    r: &RunRecord,
    worker: &str,
    state: RunState,
    entry: &HistoryEntry,
    record: &Record,
    finished_ms: u64,
) -> Option<RunRecord> {
    holds(r, worker).then(|| RunRecord {
        state,
        finished_ms: Some(finished_ms),
        error: record.error.clone(),
        entry: Some(entry.clone()),
        record: Some(record.clone()),
        ..r.clone()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map};

    use super::*;
    use flow_server::job::Job;

    fn queued() -> RunRecord {
        let job = Job {
            number: 1.0,
            prompt_id: "r".into(),
            prompt: json!("flow: 1"),
            extra_data: Map::new(),
            client_id: None,
            params: Default::default(),
            outputs_to_execute: vec![],
        };
        RunRecord::queued(job, "flow.jobs.any.none".into())
    }

    const LEASE: Duration = Duration::from_secs(10);

    #[test]
    fn taking_over_only_after_the_lease_and_giving_up_after_the_attempts() {
        let Take::Run(a) = take(&queued(), "a", 1000, LEASE, 2) else { panic!() };
        assert_eq!((a.attempts, a.lease_until_ms), (1, 11_000));
        assert!(matches!(take(&a, "b", 10_999, LEASE, 2), Take::Later(d) if d == Duration::from_millis(501)));
        let Take::Run(b) = take(&a, "b", 11_000, LEASE, 2) else { panic!() };
        assert_eq!((b.worker.as_deref(), b.attempts), (Some("b"), 2));
        // `a` wakes up: the run is not its own any more.
        assert!(renew(&b, "a", 50_000).is_none() && hand_back(&b, "a").is_none());
        let mut ended = b.clone();
        ended.end_unrun(RunState::Failed, "x");
        let (e, rec) = (ended.entry.unwrap(), ended.record.unwrap());
        assert!(end(&b, "a", RunState::Succeeded, &e, &rec, 1).is_none());
        assert_eq!(end(&b, "b", RunState::Succeeded, &e, &rec, 7).unwrap().finished_ms, Some(7));
        // Out of attempts once `b`'s lease ran out too.
        let Take::End(gave_up) = take(&b, "c", 21_000, LEASE, 2) else { panic!() };
        assert_eq!(gave_up.state, RunState::Failed);
        assert!(gave_up.error.as_deref().unwrap().contains("started 2 times"));
        assert!(matches!(take(&gave_up, "c", 0, LEASE, 2), Take::Ended));
    }

    #[test]
    fn hand_back_does_not_count_and_cancel_wins() {
        let Take::Run(a) = take(&queued(), "a", 0, LEASE, 3) else { panic!() };
        let back = hand_back(&a, "a").unwrap();
        assert_eq!((back.state, back.attempts, back.worker.as_deref()), (RunState::Queued, 0, None));
        let mut cancelled = back.clone();
        cancelled.cancel_requested = true;
        let Take::End(end) = take(&cancelled, "b", 0, LEASE, 3) else { panic!() };
        assert_eq!(end.state, RunState::Interrupted);
    }
}
