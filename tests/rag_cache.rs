//! RAG caching at the right grain, end to end on `tiny:bert`: a new question
//! embeds one text, a new file embeds only its chunks, and the per-text
//! embedding memo lives in the run's cache folder (`--cache-dir`), where
//! `flow cache stats|clear` see it.

mod common;

use std::path::Path;

use common::{executed, Sandbox};
use serde_json::Value as Json;

const GRAPH: &str = r#"flow: 1
params:
  question: Where do bees keep their honey?
models:
  embedder: tiny:bert
nodes:
  docs: { op: docs.load, in: { path: corpus } }
  chunks: { op: text.chunk, in: { docs: $docs, size: 16, overlap: 4 } }
  embeddings: { op: embed.text, in: { model: $embedder, texts: $chunks } }
  index: { op: index.build, in: { embeddings: $embeddings, chunks: $chunks } }
  search: { op: index.search, in: { index: $index, model: $embedder, query: $question, k: 2 } }
  save: { op: file.write_text, in: { path: out/context.md, text: $search.context } }
"#;

fn corpus(sb: &Sandbox) {
    sb.write("corpus/bees.md", "Honey bees live in a hive. They store honey in wax cells and dance to show where flowers are. The queen lays the eggs.");
    sb.write("corpus/rivers.md", "A river carries water from the hills to the sea. Rivers cut valleys over many years and feed the fields they cross.");
}

/// The `computed N of M texts` message of `node`, as (N, M).
fn computed(events: &[Json], node: &str) -> (usize, usize) {
    let text = events
        .iter()
        .find(|e| e["event"] == "message" && e["node"] == node && e["text"].as_str().unwrap().starts_with("computed"))
        .unwrap_or_else(|| panic!("no `computed` message from {node}: {events:#?}"))["text"]
        .as_str()
        .unwrap()
        .to_string();
    let words: Vec<&str> = text.split([' ', ';']).collect();
    (words[1].parse().unwrap(), words[3].parse().unwrap())
}

fn run(sb: &Sandbox, cache: &Path, extra: &[&str]) -> Vec<Json> {
    let cache = cache.to_str().unwrap();
    let mut args = vec!["--cache-dir", cache];
    args.extend_from_slice(extra);
    let (code, events) = sb.run_json("g.yaml", &args);
    assert_eq!(code, 0, "{events:#?}");
    events
}

#[test]
fn a_new_question_or_file_embeds_only_what_is_new_and_the_memo_follows_the_cache_dir() {
    let sb = Sandbox::new();
    corpus(&sb);
    sb.write("g.yaml", GRAPH);
    let cache = sb.path().join("my-cache");

    let first = run(&sb, &cache, &[]);
    let (new, total) = computed(&first, "embeddings");
    assert!(total >= 4 && new == total, "every chunk is new: {new} of {total}");
    assert_eq!(computed(&first, "search"), (1, 1));
    let memo = cache.join("v1/memo/embeddings");
    assert!(memo.is_dir(), "the memo lives in --cache-dir");
    assert!(!sb.cache_dir().join("v1/memo").exists(), "and nowhere else");

    // A new question: only the search (one text) and what follows run.
    let asked = run(&sb, &cache, &["--set", "question=How do rivers shape valleys?"]);
    assert_eq!(executed(&asked), ["save", "search"]);
    assert_eq!(computed(&asked, "search"), (1, 1));

    // A new file: its chunks alone are embedded; the others come from the memo.
    sb.write("corpus/moon.md", "The moon lights the night sky. Its light is the light of the sun.");
    let grown = run(&sb, &cache, &[]);
    let (new, now) = computed(&grown, "embeddings");
    assert!(now > total && new == now - total, "only the new file's chunks: {new} of {now} (was {total})");

    // `flow cache stats|clear` count and clear the memo with the entries.
    let out = sb.flow(&["cache", "stats", "--cache-dir", cache.to_str().unwrap()]);
    let stats = common::stdout(&out);
    assert!(stats.contains(&format!("memo files: {} ", now + 2)), "{stats}");
    let out = sb.flow(&["cache", "clear", "--cache-dir", cache.to_str().unwrap()]);
    assert!(common::stdout(&out).contains(&format!("and {} memo files", now + 2)), "{}", common::stdout(&out));
    assert!(!memo.exists());
    let cleared = run(&sb, &cache, &[]);
    assert_eq!(computed(&cleared, "embeddings"), (now, now), "after clear, everything is embedded again");
}

#[test]
fn no_cache_recomputes_embeddings_but_keeps_the_memo_fresh() {
    let sb = Sandbox::new();
    corpus(&sb);
    sb.write("g.yaml", GRAPH);
    let cache = sb.cache_dir();
    let first = run(&sb, &cache, &[]);
    let (_, total) = computed(&first, "embeddings");
    let forced = run(&sb, &cache, &["--no-cache"]);
    assert_eq!(computed(&forced, "embeddings"), (total, total), "--no-cache trusts no memo entry");
    let again = run(&sb, &cache, &["--set", "question=What does the queen do?"]);
    assert_eq!(executed(&again), ["save", "search"]);
}
