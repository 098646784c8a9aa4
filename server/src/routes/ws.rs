//! `GET /ws?clientId=ID`: the WebSocket of a client. On connect it gets
//! `status` with its `sid`; then every queue change and the messages of its
//! own prompts. Only text frames are sent (flow sends no binary previews).

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::hub::{message, status_data};
use crate::state::AppState;

/// Upgrades to a WebSocket for client `clientId` (a new id when absent).
pub async fn ws(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let sid = q
        .get("clientId")
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .cloned()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    upgrade.on_upgrade(move |socket| session(state, sid, socket))
}

async fn session(state: AppState, sid: String, mut socket: WebSocket) {
    // Subscribed before the first status, so no change falls in between.
    let mut rx = state.queue.hub().subscribe();
    let hello = message("status", status_data(state.queue.remaining(), Some(&sid)));
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Ok(frame) if frame.is_for(&sid) => {
                    if socket.send(Message::Text(frame.text.clone().into())).await.is_err() {
                        break;
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    // ComfyUI's front end opens with its feature flags; answer with ours.
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    if v.get("type").and_then(Value::as_str) == Some("feature_flags") {
                        let flags = message("feature_flags", json!({ "supports_preview_metadata": false }));
                        if socket.send(Message::Text(flags.into())).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
}
