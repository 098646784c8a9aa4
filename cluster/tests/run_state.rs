//! Run records on a real nats-server: a create happens once, a write based
//! on an old revision is refused, and a worker that stalled past its lease
//! cannot overwrite the worker that took its run over.

#[path = "../../tests/common/nats.rs"]
mod nats;

use std::time::Duration;

use flow_cluster::record::{RunRecord, RunState};
use flow_cluster::runs::{self, Created};
use flow_cluster::transitions::{self, Take};
use flow_cluster::{Cluster, Settings};
use flow_server::job::Job;
use nats::NatsServer;
use serde_json::{json, Map};

fn record(id: &str) -> RunRecord {
    let job = Job {
        number: 1.0,
        prompt_id: id.into(),
        prompt: json!("flow: 1"),
        extra_data: Map::new(),
        client_id: None,
        params: Default::default(),
        outputs_to_execute: vec![],
    };
    RunRecord::queued(job, "flow.jobs.any.none".into())
}

const LEASE: Duration = Duration::from_secs(5);
const PATIENCE: Duration = Duration::from_secs(5);

#[test]
fn stale_writes_are_refused_and_a_stalled_worker_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&dir.path().join("nats"));
    let cluster = Cluster::connect(&server.url(), Settings::default()).unwrap();
    let h = cluster.handles.clone();
    cluster.block_on(async move {
        let limit = h.max_payload;
        let Created::New(rev) = runs::create(&h.runs, "r1", &record("r1"), limit).await.unwrap() else { panic!() };
        assert!(matches!(runs::create(&h.runs, "r1", &record("r1"), limit).await.unwrap(), Created::Exists(..)));

        // Two writers from the same revision: the second is refused.
        let Take::Run(a) = transitions::take(&record("r1"), "a", 0, LEASE, 3) else { panic!() };
        let Take::Run(b) = transitions::take(&record("r1"), "b", 0, LEASE, 3) else { panic!() };
        assert!(runs::swap(&h.runs, "r1", &a, rev, limit).await.unwrap().is_some());
        assert!(runs::swap(&h.runs, "r1", &b, rev, limit).await.unwrap().is_none());
        let (now, _) = runs::read(&h.runs, "r1").await.unwrap().unwrap();
        assert_eq!(now.worker.as_deref(), Some("a"));

        // `a` stalls past its lease; `b` takes the run over.
        let later = now.lease_until_ms;
        let (taken, _, changed) = runs::update(&h.runs, "r1", limit, PATIENCE, |r| match transitions::take(r, "b", later, LEASE, 3) {
            Take::Run(next) => Some(*next),
            other => panic!("{other:?}"),
        })
        .await
        .unwrap()
        .unwrap();
        assert!(changed && taken.attempts == 2);

        // `a` comes back: its renewal, hand-back and end change nothing.
        let mut done = taken.clone();
        done.end_unrun(RunState::Succeeded, "-");
        let (entry, log) = (done.entry.unwrap(), done.record.unwrap());
        for attempt in [
            runs::update(&h.runs, "r1", limit, PATIENCE, |r| transitions::renew(r, "a", u64::MAX)).await,
            runs::update(&h.runs, "r1", limit, PATIENCE, |r| transitions::hand_back(r, "a")).await,
            runs::update(&h.runs, "r1", limit, PATIENCE, |r| {
                transitions::end(r, "a", RunState::Failed, &entry, &log, 1)
            })
            .await,
        ] {
            assert!(!attempt.unwrap().unwrap().2);
        }
        let (now, _) = runs::read(&h.runs, "r1").await.unwrap().unwrap();
        assert_eq!((now.state, now.worker.as_deref(), now.attempts), (RunState::Running, Some("b"), 2));
        // `b` ends it.
        let (ended, _, changed) = runs::update(&h.runs, "r1", limit, PATIENCE, |r| {
            transitions::end(r, "b", RunState::Succeeded, &entry, &log, 9)
        })
        .await
        .unwrap()
        .unwrap();
        assert!(changed && ended.state == RunState::Succeeded && ended.finished_ms == Some(9));
        assert!(runs::read(&h.runs, "missing").await.unwrap().is_none());
    });
}
