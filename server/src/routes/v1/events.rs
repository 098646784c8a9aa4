//! `GET /v1/runs/{id}/events`: a run's events as Server-Sent Events, each
//! `data:` line one `flow run --json` line, from the run's start (replayed
//! for late subscribers) to its `run_finished`. A queued run's stream waits
//! for it to start.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::runs::not_found;
use crate::queue::Phase;
use crate::runlog::RunLog;
use crate::state::AppState;

/// How often a waiting stream checks that its run still exists.
const RECHECK: Duration = Duration::from_secs(1);

/// Where a stream reads its lines from.
enum Source {
    /// A run still going (or queued): its log, and a receiver woken by new lines.
    Live(Arc<RunLog>, watch::Receiver<usize>),
    /// A finished run's record.
    Done(Vec<String>),
}

struct Feed {
    state: AppState,
    id: String,
    source: Source,
    next: usize,
    ended: bool,
}

/// The run's events.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", params(("id" = String, Path, description = "run id")),
    responses((status = 200, content_type = "text/event-stream",
        description = "one `data:` line per `flow run --json` event; ends after `run_finished`"),
        (status = 404, body = super::types::ApiError)))]
pub async fn events(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let source = match state.queue.find(&id).map(|l| l.phase) {
        Some(Phase::Queued | Phase::Running) => live(&state, &id),
        Some(Phase::Finished(_)) => match state.runs.get_live(&id) {
            Some(log) => Source::Live(Arc::clone(&log), log.watch()),
            None => Source::Done(state.runs.record(&id).map(|r| r.events).unwrap_or_default()),
        },
        None => return not_found(&id),
    };
    let feed = Feed {
        state,
        id,
        source,
        next: 0,
        ended: false,
    };
    let stream = futures_util::stream::unfold(feed, next_chunk);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

fn live(state: &AppState, id: &str) -> Source {
    let log = state.runs.live_log(id);
    let rx = log.watch();
    Source::Live(log, rx)
}

/// `data: LINE\n\n` for each line.
fn frame(lines: &[String]) -> Bytes {
    let mut out = String::new();
    for line in lines {
        out.push_str("data: ");
        out.push_str(line);
        out.push_str("\n\n");
    }
    Bytes::from(out)
}

/// The next lines of the stream, once there are any; `None` after `run_finished`.
async fn next_chunk(mut feed: Feed) -> Option<(Result<Bytes, Infallible>, Feed)> {
    if feed.ended {
        return None;
    }
    loop {
        let (lines, finished) = match &feed.source {
            Source::Live(log, _) => log.since(feed.next),
            Source::Done(lines) => (lines.get(feed.next..).map(<[String]>::to_vec).unwrap_or_default(), true),
        };
        if !lines.is_empty() {
            feed.next += lines.len();
            feed.ended = finished;
            return Some((Ok(frame(&lines)), feed));
        }
        if finished {
            return None;
        }
        let Source::Live(_, rx) = &mut feed.source else {
            return None;
        };
        if tokio::time::timeout(RECHECK, rx.changed())
            .await
            .is_ok_and(|r| r.is_ok())
        {
            continue;
        }
        // No news: a log no run fills (the run left the queue without
        // finishing it: removed while queued, or finished as this stream
        // opened) gives way to what the run's record holds.
        match feed.state.queue.find(&feed.id).map(|l| l.phase) {
            Some(Phase::Queued | Phase::Running) => {}
            Some(Phase::Finished(_)) => {
                forget_orphan(&feed);
                let record = feed.state.runs.record(&feed.id).map(|r| r.events).unwrap_or_default();
                feed.source = Source::Done(record);
            }
            None => {
                forget_orphan(&feed);
                return None;
            }
        }
    }
}

/// Drops the stream's log from the live ones if no run will fill it.
fn forget_orphan(feed: &Feed) {
    if let (Source::Live(mine, _), Some(listed)) = (&feed.source, feed.state.runs.get_live(&feed.id)) {
        if Arc::ptr_eq(mine, &listed) {
            feed.state.runs.release(&feed.id);
        }
    }
}
