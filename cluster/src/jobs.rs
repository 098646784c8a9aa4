//! Jobs on the work-queue stream: where a run goes (its subject: device
//! class and model family), publishing it once (deduplicated by run key),
//! and a worker pulling the next one it should take: first from the
//! families whose models it holds, then any it can run. Each subject has
//! its own durable pull consumer (a work-queue stream needs consumers
//! that do not overlap), with explicit acks.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, Result};
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, stream::Stream};
use flow_engine::graph::{DeviceChoice, Expr, Graph};
use flow_engine::types::ValueType;
use flow_engine::Value;
use futures_util::StreamExt;

use crate::cluster::Settings;
use crate::names::{consumer_name, job_subject, parse_job_subject, JOB_STREAM, JOB_SUBJECTS};

/// Which workers should run a graph, and which ones are best placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// `cuda` when a node asks for CUDA, else `any`.
    pub device: String,
    /// A short hash of the models the graph names (`none` without models).
    pub family: String,
}

impl Placement {
    /// The placement of `graph`.
    pub fn of(graph: &Graph) -> Placement {
        let cuda = graph.nodes.iter().any(|n| matches!(n.device, DeviceChoice::Cuda(_)));
        let mut models: Vec<String> = Vec::new();
        for node in &graph.nodes {
            for port in &node.op.spec().inputs {
                match node.inputs.get(port.name) {
                    Some(Expr::Model { reference, .. }) => models.push(reference.clone()),
                    Some(Expr::Literal(Value::Text(t))) if port.ty == ValueType::Model => models.push(t.to_string()),
                    _ => {}
                }
            }
        }
        models.sort();
        models.dedup();
        let family = if models.is_empty() {
            "none".to_string()
        } else {
            blake3::hash(models.join("\n").as_bytes()).to_hex()[..12].to_string()
        };
        Placement { device: if cuda { "cuda" } else { "any" }.into(), family }
    }

    /// The job subject.
    pub fn subject(&self) -> String {
        job_subject(&self.device, &self.family)
    }
}

/// The device classes a worker on `device` pulls, best first.
pub fn classes_for(device: DeviceChoice) -> Vec<&'static str> {
    match device {
        DeviceChoice::Cuda(_) => vec!["cuda", "any"],
        _ => vec!["any"],
    }
}

/// The subjects of `found` (subject, jobs on it) that a worker pulling
/// `classes` can run, best first: the families in `resident` (in its
/// order: their models are in the worker's memory), then by device class
/// in `classes`' order, the fullest subject first.
pub fn rank(found: &[(String, usize)], classes: &[&str], resident: &[String]) -> Vec<String> {
    let mut ranked: Vec<_> = found
        .iter()
        .filter(|(_, count)| *count > 0)
        .filter_map(|(subject, count)| {
            let (class, family) = parse_job_subject(subject)?;
            let class_rank = classes.iter().position(|c| *c == class)?;
            let family_rank = resident.iter().position(|f| f == family).unwrap_or(resident.len());
            Some(((family_rank, class_rank, usize::MAX - count), subject.clone()))
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, s)| s).collect()
}

/// Queues the job of run `key` on `subject`; a second publish of the same
/// key within the stream's duplicate window is dropped by the server.
pub async fn publish(js: &jetstream::Context, subject: String, key: &str) -> Result<()> {
    let publish = jetstream::message::PublishMessage::build().payload(key.to_string().into()).message_id(key);
    js.send_publish(subject, publish)
        .await
        .map_err(|e| anyhow!("cannot queue run {key}: {e}"))?
        .await
        .map_err(|e| anyhow!("the job stream did not take run {key}: {e}"))?;
    Ok(())
}

/// Pulls jobs for one worker.
pub struct Puller {
    stream: Stream,
    classes: Vec<&'static str>,
    settings: Settings,
    consumers: HashMap<String, PullConsumer>,
}

impl Puller {
    /// A puller for a worker running jobs of `classes`.
    pub async fn new(js: &jetstream::Context, classes: Vec<&'static str>, settings: Settings) -> Result<Puller> {
        let stream = js.get_stream(JOB_STREAM).await.map_err(|e| anyhow!("cannot open the job stream: {e}"))?;
        Ok(Puller { stream, classes, settings, consumers: HashMap::new() })
    }

    /// Subjects holding jobs this worker can run, best first (see [`rank`]).
    async fn candidates(&self, resident: &[String]) -> Result<Vec<String>> {
        let mut info = self.stream.info_with_subjects(JOB_SUBJECTS).await?;
        let mut found: Vec<(String, usize)> = Vec::new();
        while let Some(item) = info.next().await {
            found.push(item?);
        }
        Ok(rank(&found, &self.classes, resident))
    }

    async fn consumer(&mut self, subject: &str) -> Result<PullConsumer> {
        if let Some(c) = self.consumers.get(subject) {
            return Ok(c.clone());
        }
        let (class, family) = parse_job_subject(subject).ok_or_else(|| anyhow!("bad job subject {subject}"))?;
        let name = consumer_name(class, family);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subject.to_string(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            max_deliver: self.settings.max_deliver(),
            max_ack_pending: -1,
            ..Default::default()
        };
        let consumer: PullConsumer = self
            .stream
            .get_or_create_consumer(&name, config.clone())
            .await
            .map_err(|e| anyhow!("cannot open the consumer {name}: {e}"))?;
        self.consumers.insert(subject.to_string(), consumer.clone());
        Ok(consumer)
    }

    /// The next job to take, if any is waiting now, with the ack wait of
    /// its consumer (set by the worker that made it; a job is kept alive
    /// and its run leased by that, whatever this worker's setting).
    pub async fn next(&mut self, resident: &[String]) -> Result<Option<(jetstream::Message, Duration)>> {
        for subject in self.candidates(resident).await? {
            let consumer = self.consumer(&subject).await?;
            let ack_wait = consumer.cached_info().config.ack_wait;
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .messages()
                .await
                .map_err(|e| anyhow!("cannot pull from {subject}: {e}"))?;
            match batch.next().await {
                Some(Ok(message)) => return Ok(Some((message, ack_wait))),
                Some(Err(e)) => return Err(anyhow!("cannot pull from {subject}: {e}")),
                None => {}
            }
        }
        Ok(None)
    }
}

/// How long a worker with nothing to do waits for a wake-up before
/// looking again.
pub const IDLE_POLL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(text: &str) -> Graph {
        let registry = flow_nodes::registry();
        flow_engine::graph::from_bytes("g.yaml", std::path::Path::new("."), text.as_bytes(), &[], &registry)
            .unwrap_or_else(|d| panic!("{}", d.render()))
    }

    #[test]
    fn placement_follows_models_and_devices() {
        let plain = graph("flow: 1\nnodes:\n  a:\n    op: text.join\n    in: {items: [x, y]}\n");
        assert_eq!(Placement::of(&plain), Placement { device: "any".into(), family: "none".into() });
        let sd = |ckpt: &str, device: &str| {
            graph(&format!(
                "flow: 1\nmodels:\n  m: {ckpt}\nnodes:\n  e:\n    op: sd.encode_prompt\n    device: {device}\n    in: {{model: $m, prompt: hi}}\n"
            ))
        };
        let a = Placement::of(&sd("tiny-sd", "auto"));
        assert_eq!(a.device, "any");
        assert_eq!(a.family.len(), 12);
        assert_eq!(a, Placement::of(&sd("tiny-sd", "cpu")));
        assert_ne!(a.family, Placement::of(&sd("sd15", "auto")).family);
        let cuda = Placement::of(&sd("tiny-sd", "cuda:0"));
        assert_eq!((cuda.device.as_str(), cuda.subject()), ("cuda", format!("flow.jobs.cuda.{}", a.family)));
        assert_eq!(classes_for(DeviceChoice::Cuda(1)), ["cuda", "any"]);
        assert_eq!(classes_for(DeviceChoice::Cpu), ["any"]);
    }

    #[test]
    fn resident_families_first_then_device_class_then_the_fullest() {
        let found: Vec<(String, usize)> = [
            ("flow.jobs.any.f1", 5),
            ("flow.jobs.any.f2", 1),
            ("flow.jobs.cuda.f3", 1),
            ("flow.jobs.cuda.f2", 0),
            ("flow.jobs.any.none", 9),
        ]
        .map(|(s, n)| (s.to_string(), n))
        .into();
        let resident = ["f2".to_string()];
        assert_eq!(rank(&found, &["any"], &resident), ["flow.jobs.any.f2", "flow.jobs.any.none", "flow.jobs.any.f1"]);
        assert_eq!(
            rank(&found, &["cuda", "any"], &[]),
            ["flow.jobs.cuda.f3", "flow.jobs.any.none", "flow.jobs.any.f1", "flow.jobs.any.f2"]
        );
    }
}
