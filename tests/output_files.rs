//! What output nodes write, through the real binary: a cached writer stands
//! only while its file holds exactly what it wrote; writers never replace
//! links, devices or FIFOs, nor the graph file or anything the graph reads;
//! every file written is named in the summary and by an `output` event.

mod common;

use std::fs;

use common::{event_for, executed, Sandbox};

const HELLO: &str = r#"flow: 1
params:
  who: world
nodes:
  greeting:
    op: text.template
    in: { template: "Hello, ${who}!" }
  save:
    op: file.write_text
    in: { path: out/hello.txt, text: $greeting }
"#;

fn read(sb: &Sandbox, path: &str) -> String {
    fs::read_to_string(sb.path().join(path)).unwrap()
}

#[test]
fn an_output_another_run_overwrote_is_written_again() {
    let sb = Sandbox::new();
    sb.write("g.yaml", HELLO);
    assert_eq!(sb.run_json("g.yaml", &["--set", "who=alice"]).0, 0);
    assert_eq!(sb.run_json("g.yaml", &["--set", "who=bob"]).0, 0);
    assert_eq!(read(&sb, "out/hello.txt"), "Hello, bob!");
    // alice's result is in the cache, but the file no longer holds it.
    let (code, events) = sb.run_json("g.yaml", &["--set", "who=alice"]);
    assert_eq!(code, 0);
    assert_eq!(executed(&events), ["save"]);
    assert_eq!(event_for(&events, "node_started", "save")["reason"], "output file `out/hello.txt` changed");
    assert_eq!(read(&sb, "out/hello.txt"), "Hello, alice!");
    // Now it does: cached.
    let (_, events) = sb.run_json("g.yaml", &["--set", "who=alice"]);
    assert!(executed(&events).is_empty(), "{events:#?}");
}

#[test]
fn a_same_size_edit_of_an_output_is_seen() {
    let sb = Sandbox::new();
    sb.write("g.yaml", HELLO);
    assert_eq!(sb.run_json("g.yaml", &[]).0, 0);
    let path = sb.path().join("out/hello.txt");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    fs::write(&path, "Hello, WORLD!").unwrap();
    // Even with its old modification time restored.
    fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    let (_, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(executed(&events), ["save"]);
    assert_eq!(read(&sb, "out/hello.txt"), "Hello, world!");
}

#[test]
fn a_cache_entry_does_not_stand_for_another_folders_file() {
    let sb = Sandbox::new();
    sb.write("a/g.yaml", HELLO);
    sb.write("b/g.yaml", HELLO);
    assert_eq!(sb.run_json("a/g.yaml", &[]).0, 0);
    // Same key, but b/out/hello.txt was never written.
    let (_, events) = sb.run_json("b/g.yaml", &[]);
    assert_eq!(executed(&events), ["save"]);
    assert_eq!(event_for(&events, "node_started", "save")["reason"], "output file `out/hello.txt` is missing");
    assert_eq!(read(&sb, "b/out/hello.txt"), "Hello, world!");
}

#[test]
fn every_written_file_is_named_ran_or_cached() {
    let sb = Sandbox::new();
    sb.write("g.yaml", HELLO);
    for _ in 0..2 {
        let (_, events) = sb.run_json("g.yaml", &[]);
        let output = event_for(&events, "output", "save");
        let path = output["path"].as_str().unwrap();
        assert!(path.ends_with("out/hello.txt"), "{path}");
        assert!(std::path::Path::new(path).is_absolute() || sb.path().join(path).exists(), "{path}");
    }
    let out = sb.flow(&["run", "g.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l == "kept out/hello.txt"), "{stdout}");
    let out = sb.flow(&["run", "g.yaml", "--set", "who=you"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l == "wrote out/hello.txt"), "{stdout}");
}

fn failure(events: &[serde_json::Value], node: &str) -> String {
    event_for(events, "node_failed", node)["error"].as_str().unwrap().to_string()
}

#[test]
fn a_graph_cannot_overwrite_itself_or_what_it_reads() {
    let sb = Sandbox::new();
    let graph = HELLO.replace("out/hello.txt", "g.yaml");
    sb.write("g.yaml", &graph);
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 1);
    assert!(failure(&events, "save").contains("the graph file being run"), "{events:#?}");
    assert_eq!(read(&sb, "g.yaml"), graph);

    sb.write("in.txt", "input");
    sb.write(
        "reads.yaml",
        r#"flow: 1
nodes:
  text:
    op: file.read_text
    in: { path: in.txt }
  save:
    op: file.write_text
    in: { path: ./in.txt, text: "${text} again" }
"#,
    );
    let (code, events) = sb.run_json("reads.yaml", &[]);
    assert_eq!(code, 1);
    assert!(failure(&events, "save").contains("read by this graph"), "{events:#?}");
    assert_eq!(read(&sb, "in.txt"), "input");
}

#[cfg(unix)]
#[test]
fn writers_replace_only_regular_files() {
    use std::os::unix::fs::FileTypeExt;
    let sb = Sandbox::new();
    sb.write("g.yaml", &HELLO.replace("out/hello.txt", "/dev/null"));
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 1);
    assert!(failure(&events, "save").contains("a device"), "{events:#?}");
    assert!(fs::metadata("/dev/null").unwrap().file_type().is_char_device());

    sb.write("target.txt", "keep");
    fs::create_dir_all(sb.path().join("out")).unwrap();
    std::os::unix::fs::symlink(sb.path().join("target.txt"), sb.path().join("out/hello.txt")).unwrap();
    sb.write("g.yaml", HELLO);
    let (code, events) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 1);
    assert!(failure(&events, "save").contains("symbolic link"), "{events:#?}");
    assert_eq!(read(&sb, "target.txt"), "keep");
    assert!(fs::symlink_metadata(sb.path().join("out/hello.txt")).unwrap().file_type().is_symlink());
}

#[test]
fn cached_nodes_show_their_text_again() {
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        r#"flow: 1
models:
  llm: tiny:llama
nodes:
  answer:
    op: llm.generate
    in: { model: $llm, prompt: "Tell me a story.", max_tokens: 16, temperature: 0 }
  show:
    op: debug.print
    in: { value: "the end" }
  save:
    op: file.write_text
    in: { path: out/answer.txt, text: $answer }
"#,
    );
    let text_of = |events: &[serde_json::Value], event: &str, node: &str| -> String {
        events.iter().filter(|e| e["event"] == event && e["node"] == node).map(|e| e["text"].as_str().unwrap()).collect()
    };
    let (_, first) = sb.run_json("g.yaml", &[]);
    let (code, second) = sb.run_json("g.yaml", &[]);
    assert_eq!(code, 0);
    assert!(executed(&second).is_empty(), "{second:#?}");
    let answer = text_of(&first, "token", "answer");
    assert!(!answer.is_empty());
    assert_eq!(text_of(&second, "token", "answer"), answer);
    assert_eq!(read(&sb, "out/answer.txt"), answer);
    assert_eq!(text_of(&second, "message", "show"), "the end");
    event_for(&second, "node_cached", "answer");
}

#[cfg(unix)]
#[test]
fn every_writer_gives_its_files_the_same_mode() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        r#"flow: 1
nodes:
  t: { op: tensor.random, in: { shape: [1, 3, 2, 2], seed: 1 } }
  a: { op: tensor.save, in: { tensor: $t, path: out/t.safetensors } }
  c: { op: file.write_text, in: { path: out/t.txt, text: hi } }
"#,
    );
    assert_eq!(sb.run_json("g.yaml", &[]).0, 0);
    let mode = |p: &str| fs::metadata(sb.path().join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("out/t.safetensors"), mode("out/t.txt"));
}
