//! The WebSocket side of the server: every message a run or the queue
//! produces goes through one broadcast channel, and each connection keeps
//! the messages meant for everyone or for its own client id.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Messages kept for a slow connection before it starts missing some.
const BACKLOG: usize = 4096;

/// One message in ComfyUI's form, `{"type": EVENT, "data": {...}}`, and who
/// it is for.
#[derive(Debug)]
pub struct Frame {
    /// The client id it is meant for; `None`: every client.
    pub sid: Option<String>,
    /// The JSON text sent.
    pub text: String,
}

impl Frame {
    /// Whether the connection of client `sid` receives this frame.
    pub fn is_for(&self, sid: &str) -> bool {
        self.sid.as_deref().is_none_or(|s| s == sid)
    }
}

/// The sending end shared by the queue and the runs.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Frame>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// A hub with no connection yet.
    pub fn new() -> Self {
        Hub { tx: broadcast::channel(BACKLOG).0 }
    }

    /// A receiver of every frame sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Frame>> {
        self.tx.subscribe()
    }

    /// Sends `event` with `data` to client `sid` (`None`: to everyone).
    pub fn send(&self, event: &str, data: Value, sid: Option<&str>) {
        let text = message(event, data);
        // No receiver is not an error: nobody is listening.
        let _ = self.tx.send(Arc::new(Frame { sid: sid.map(str::to_string), text }));
    }

    /// Tells everyone how many prompts are queued or running.
    pub fn status(&self, queue_remaining: usize) {
        self.send("status", status_data(queue_remaining, None), None);
    }
}

/// A message's JSON text.
pub fn message(event: &str, data: Value) -> String {
    json!({ "type": event, "data": data }).to_string()
}

/// The `data` of a `status` message (with the connection's `sid` on connect).
pub fn status_data(queue_remaining: usize, sid: Option<&str>) -> Value {
    let mut data = json!({ "status": { "exec_info": { "queue_remaining": queue_remaining } } });
    if let Some(sid) = sid {
        data["sid"] = json!(sid);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reach_their_client_or_everyone() {
        let hub = Hub::new();
        let mut rx = hub.subscribe();
        hub.send("executing", json!({"node": "3"}), Some("a"));
        hub.status(2);
        let first = rx.try_recv().unwrap();
        assert!(first.is_for("a") && !first.is_for("b"));
        let v: Value = serde_json::from_str(&first.text).unwrap();
        assert_eq!(v, json!({"type": "executing", "data": {"node": "3"}}));
        let second = rx.try_recv().unwrap();
        assert!(second.is_for("a") && second.is_for("b"));
        let v: Value = serde_json::from_str(&second.text).unwrap();
        assert_eq!(v["data"]["status"]["exec_info"]["queue_remaining"], 2);
    }
}
