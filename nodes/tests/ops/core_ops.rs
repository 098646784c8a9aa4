use std::collections::BTreeMap;
use std::fs;

use flow_engine::files::WrittenFile;
use flow_engine::{Fingerprint, Provenance, Value};

use crate::common::*;

fn map(entries: &[(&str, Value)]) -> Value {
    Value::map(
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    )
}

#[test]
fn template_fills_vars() {
    let dir = tempfile::tempdir().unwrap();
    let vars = map(&[("who", "world".into()), ("n", 3i64.into())]);
    let out = run(
        "text.template",
        &[
            ("template", "Hello ${who} x${n}, $$${n}".into()),
            ("vars", vars),
        ],
        &ctx(dir.path()),
    )
    .unwrap();
    assert_eq!(
        out.get("text").unwrap().as_text(),
        Some("Hello world x3, $3")
    );
}

#[test]
fn template_reports_unknown_names() {
    let dir = tempfile::tempdir().unwrap();
    let vars = map(&[("who", "world".into())]);
    let err = run_err(
        "text.template",
        &[("template", "Hi ${whom}".into()), ("vars", vars)],
        &ctx(dir.path()),
    );
    assert_eq!(
        err,
        "template refers to `${whom}`, which is not in `vars` (vars has: who), and the graph has no param `whom`"
    );
    let err = run_err(
        "text.template",
        &[("template", "Hi ${who}".into())],
        &ctx(dir.path()),
    );
    assert_eq!(
        err,
        "template refers to `${who}`, but no `vars` were given, and the graph has no param `who`"
    );
}

#[test]
fn join_renders_items() {
    let dir = tempfile::tempdir().unwrap();
    let items = Value::list(vec![1i64.into(), "a".into(), 2.0.into(), true.into()]);
    let out = run(
        "text.join",
        &[("items", items.clone()), ("sep", ", ".into())],
        &ctx(dir.path()),
    )
    .unwrap();
    assert_eq!(out.get("text").unwrap().as_text(), Some("1, a, 2.0, true"));
    let out = run("text.join", &[("items", items)], &ctx(dir.path())).unwrap();
    assert_eq!(out.get("text").unwrap().as_text(), Some("1a2.0true"));
}

#[test]
fn read_text_reads_and_fingerprints_content() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.txt"), "héllo").unwrap();
    let ctx = ctx(dir.path());
    let out = run("file.read_text", &[("path", "in.txt".into())], &ctx).unwrap();
    assert_eq!(out.get("text").unwrap().as_text(), Some("héllo"));

    let read = op("file.read_text");
    let literal = inputs("file.read_text", &[("path", "in.txt".into())]);
    let before = read.fingerprint(&literal, dir.path()).unwrap();
    assert!(matches!(before, Fingerprint::Content(_)));
    fs::write(dir.path().join("in.txt"), "changed").unwrap();
    assert_ne!(read.fingerprint(&literal, dir.path()).unwrap(), before);
}

#[test]
fn read_text_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let err = run_err("file.read_text", &[("path", "nope.txt".into())], &ctx);
    assert!(
        err.starts_with("cannot read `") && err.contains("nope.txt"),
        "{err}"
    );
    let fp = op("file.read_text").fingerprint(
        &inputs("file.read_text", &[("path", "nope.txt".into())]),
        dir.path(),
    );
    assert!(matches!(fp.unwrap(), Fingerprint::Volatile(r) if r.contains("nope.txt")));

    fs::write(dir.path().join("bin"), [b'o', b'k', 0xff]).unwrap();
    let err = run_err("file.read_text", &[("path", "bin".into())], &ctx);
    assert!(
        err.ends_with("is not UTF-8 text: invalid byte at offset 2"),
        "{err}"
    );
}

#[test]
fn write_text_is_atomic_and_checks_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx(dir.path());
    let write = op("file.write_text");
    let out = run(
        "file.write_text",
        &[("path", "out/sub/a.txt".into()), ("text", "hi".into())],
        &ctx,
    )
    .unwrap();
    assert_eq!(out.get("path").unwrap().as_text(), Some("out/sub/a.txt"));
    assert_eq!(
        fs::read_to_string(dir.path().join("out/sub/a.txt")).unwrap(),
        "hi"
    );
    assert_eq!(entries(&dir.path().join("out/sub")), ["a.txt"]);
    assert!(write.spec().output);
    let written = ctx.take_effects().written;
    assert_eq!(written, [WrittenFile::of("out/sub/a.txt", b"hi")]);
    assert_eq!(written[0].staleness(dir.path()), None);
    fs::remove_file(dir.path().join("out/sub/a.txt")).unwrap();
    assert!(written[0].staleness(dir.path()).is_some());
}

#[test]
fn debug_print_shows_and_passes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, messages) = message_sink();
    let ctx = ctx_with(dir.path(), sink, Provenance::default());
    let value = Value::list(vec![1i64.into(), "x".into()]);
    let out = run("debug.print", &[("value", value)], &ctx).unwrap();
    assert_eq!(out.get("value").unwrap().to_display_string(), r#"[1,"x"]"#);
    assert_eq!(*messages.lock().unwrap(), [r#"[1,"x"]"#]);
}

#[test]
fn every_port_is_documented() {
    let reg = flow_nodes::registry();
    for name in [
        "text.template",
        "text.join",
        "file.read_text",
        "file.write_text",
        "debug.print",
        "tensor.load",
        "tensor.save",
        "tensor.random",
        "tensor.add",
        "tensor.scale",
        "tensor.matmul",
        "image.load",
        "image.save",
        "image.resize",
    ] {
        let op = reg
            .get(name)
            .unwrap_or_else(|| panic!("`{name}` is not registered"));
        let spec = op.spec();
        assert!(spec.version >= 1, "{name}");
        assert!(!spec.doc.is_empty(), "{name}");
        for port in spec.inputs.iter().chain(&spec.outputs) {
            assert!(!port.doc.is_empty(), "{name}.{}", port.name);
        }
    }
}
