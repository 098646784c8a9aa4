//! A worker's run events, forwarded on the run's core subject in order
//! (cheap, at most once: nobody listening costs nothing).

use async_nats::HeaderMap;
use flow_engine::Event;
use tokio::sync::{mpsc, oneshot};

use crate::follow::{KIND_HEADER, KIND_UNNEEDED};

enum Item {
    Message(Option<HeaderMap>, Vec<u8>),
    Flush(oneshot::Sender<()>),
}

/// Publishes a run's events from a task of the cluster's runtime.
pub struct Tap {
    tx: mpsc::UnboundedSender<Item>,
}

impl Tap {
    /// A tap publishing on `subject`; the task it needs is returned to be spawned.
    pub fn new(client: async_nats::Client, subject: String) -> (Tap, impl std::future::Future<Output = ()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
        let task = async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Item::Message(Some(h), payload) => {
                        let _ = client.publish_with_headers(subject.clone(), h, payload.into()).await;
                    }
                    Item::Message(None, payload) => {
                        let _ = client.publish(subject.clone(), payload.into()).await;
                    }
                    Item::Flush(done) => {
                        let _ = client.flush().await;
                        let _ = done.send(());
                    }
                }
            }
        };
        (Tap { tx }, task)
    }

    /// Waits until everything sent so far is out.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

impl Tap {
    /// Publishes the nodes the run does not need.
    pub fn unneeded(&self, nodes: Vec<String>) {
        let mut headers = HeaderMap::new();
        headers.insert(KIND_HEADER, KIND_UNNEEDED);
        let payload = serde_json::to_vec(&nodes).unwrap_or_default();
        let _ = self.tx.send(Item::Message(Some(headers), payload));
    }

    /// Publishes one event.
    pub fn event(&self, event: Event) {
        let _ = self.tx.send(Item::Message(None, event.to_json_line().into_bytes()));
    }
}
