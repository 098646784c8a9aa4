//! What a node did besides computing its outputs, kept with them in the
//! cache: the files it wrote (a cached result stands only while they hold
//! what was written) and the text it showed (shown again when the result is
//! served from the cache, so a cached `debug.print` or LLM answer is not
//! silent).

use serde::{Deserialize, Serialize};

use crate::files::WrittenFile;

/// A node's effects, in the order they happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effects {
    /// Files written through `OpContext::write_output`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<WrittenFile>,
    /// Text shown through `OpContext::show` and `OpContext::token`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shown: Vec<Shown>,
}

/// One piece of text a node showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shown {
    /// A message (e.g. `debug.print`'s value).
    Message(String),
    /// Streamed text (e.g. an LLM's tokens), consecutive pieces joined.
    Stream(String),
}

impl Effects {
    /// True if the node wrote and showed nothing.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty() && self.shown.is_empty()
    }

    /// Appends a streamed piece, joining it to the stream before it.
    pub fn push_stream(&mut self, piece: &str) {
        match self.shown.last_mut() {
            Some(Shown::Stream(text)) => text.push_str(piece),
            _ => self.shown.push(Shown::Stream(piece.to_string())),
        }
    }

    /// Approximate bytes held (for cache budgets).
    pub fn byte_size(&self) -> usize {
        let files: usize = self.written.iter().map(|w| w.path.len() + w.blake3.len() + 8).sum();
        let text: usize = self.shown.iter().map(|s| match s {
            Shown::Message(t) | Shown::Stream(t) => t.len(),
        }).sum();
        files + text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_pieces_join_between_messages() {
        let mut e = Effects::default();
        assert!(e.is_empty());
        e.push_stream("Hel");
        e.push_stream("lo");
        e.shown.push(Shown::Message("note".into()));
        e.push_stream("!");
        assert_eq!(
            e.shown,
            [Shown::Stream("Hello".into()), Shown::Message("note".into()), Shown::Stream("!".into())]
        );
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"shown":[{"stream":"Hello"},{"message":"note"},{"stream":"!"}]}"#);
        assert_eq!(serde_json::from_str::<Effects>(&json).unwrap(), e);
    }
}
