//! Rendering run events: progress bars and streamed text for people, one
//! JSON object per line for programs.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_engine::{Event, EventSink};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// A sink that prints every event as one JSON line on stdout.
pub fn json_sink() -> EventSink {
    Arc::new(|event: Event| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", event.to_json_line());
        let _ = out.flush();
    })
}

struct Human {
    bars: MultiProgress,
    running: HashMap<String, ProgressBar>,
    streaming: Option<String>,
}

/// A sink that shows a progress bar per running node (with steps where the
/// node reports them), streams generated tokens and prints messages.
pub fn human_sink() -> EventSink {
    let state = Mutex::new(Human { bars: MultiProgress::new(), running: HashMap::new(), streaming: None });
    Arc::new(move |event: Event| {
        let Ok(mut h) = state.lock() else { return };
        h.handle(event);
    })
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} {elapsed}").unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn steps_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:.bold} [{bar:30}] {pos}/{len} {msg} {elapsed} (eta {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Human {
    fn handle(&mut self, event: Event) {
        match event {
            Event::NodeStarted { node, op, device, .. } => {
                let bar = self.bars.add(ProgressBar::new_spinner());
                bar.set_style(spinner_style());
                bar.set_prefix(node.clone());
                bar.set_message(format!("{op} on {device}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                self.running.insert(node, bar);
            }
            Event::Progress { node, step, total, .. } => {
                if let Some(bar) = self.running.get(&node) {
                    if bar.length() != Some(total) {
                        bar.set_style(steps_style());
                        bar.set_length(total);
                    }
                    bar.set_position(step);
                }
            }
            Event::Token { node, text, .. } => {
                if self.streaming.as_deref() != Some(node.as_str()) {
                    self.end_stream();
                    self.bars.suspend(|| outln!("── {node} ──"));
                    self.streaming = Some(node);
                }
                self.bars.suspend(|| {
                    let mut out = std::io::stdout().lock();
                    let _ = write!(out, "{text}");
                    let _ = out.flush();
                });
            }
            Event::Message { node, text, .. } => {
                self.end_stream();
                self.bars.suspend(|| outln!("[{node}] {text}"));
            }
            Event::Warning { message, .. } => {
                self.end_stream();
                self.bars.suspend(|| errln!("warning: {message}"));
            }
            Event::NodeFinished { node, .. } | Event::NodeFailed { node, .. } | Event::NodeSkipped { node, .. } => {
                if let Some(bar) = self.running.remove(&node) {
                    bar.finish_and_clear();
                    self.bars.remove(&bar);
                }
                if self.streaming.as_deref() == Some(node.as_str()) {
                    self.end_stream();
                }
            }
            Event::RunFinished { .. } => {
                self.end_stream();
                for (_, bar) in self.running.drain() {
                    bar.finish_and_clear();
                }
                let _ = self.bars.clear();
            }
            // Written files are listed in the summary.
            Event::RunStarted { .. } | Event::NodeCached { .. } | Event::Output { .. } => {}
        }
    }

    fn end_stream(&mut self) {
        if self.streaming.take().is_some() {
            self.bars.suspend(|| outln!());
        }
    }
}
