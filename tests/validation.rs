//! Located validation errors through the real binary.

mod common;

use common::{stderr, Sandbox};

const MANY_MISTAKES: &str = r#"flow: 1
name: broken
colour: blue
params:
  seed: 42
  who: world
nodes:
  a:
    op: text.jion
    in: { items: [x], sep: "-" }
  b:
    op: text.join
    in: { itmes: [$who], sep: $sed }
  c:
    op: file.write_text
    in: { path: out.txt }
  d:
    op: tensor.random
    in: { shape: [2, 2], seed: "abc" }
  seed:
    op: text.join
    in: { items: [$nowhere.text] }
"#;

#[test]
fn every_mistake_is_reported_with_its_location() {
    let sb = Sandbox::new();
    sb.write("g.yaml", MANY_MISTAKES);
    let out = sb.flow(&["validate", "g.yaml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let expect = [
        ("g.yaml:3:1: error: unknown top-level key `colour`", None),
        ("g.yaml:9:9: error: unknown op `text.jion`", Some("did you mean `text.join`?")),
        ("g.yaml:13:11: error: op `text.join` has no input `itmes`", Some("did you mean `items`?")),
        ("g.yaml:13:31: error: `$sed` refers to nothing", Some("did you mean `seed`?")),
        ("g.yaml:14:3: error: node `c` is missing required input `text`", None),
        ("g.yaml:11:3: error: node `b` is missing required input `items`", None),
        ("g.yaml:19:32: error: input `seed` of `tensor.random`: expects int, got the literal text \"abc\"", None),
        ("g.yaml:20:3: error: the name `seed` is used twice", None),
        ("g.yaml:22:19: error: `$nowhere` refers to nothing", None),
    ];
    for (line, help) in expect {
        assert!(err.contains(line), "missing `{line}` in:\n{err}");
        if let Some(h) = help {
            assert!(err.contains(h), "missing help `{h}` in:\n{err}");
        }
    }
    assert!(!err.contains("node `seed` is missing"), "an erroneous input is not also missing:\n{err}");
    assert!(err.contains("9 errors in g.yaml"), "{err}");
    // The offending source line is quoted under each error.
    assert!(err.contains("9 |     op: text.jion"), "{err}");
}

#[test]
fn a_cycle_is_reported_as_its_path() {
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        "flow: 1\nnodes:\n  a: { op: text.join, in: { items: [$c] } }\n  b: { op: text.join, in: { items: [$a] } }\n  c: { op: text.join, in: { items: [$b] } }\n  out: { op: debug.print, in: { value: $c } }\n",
    );
    let out = sb.flow(&["validate", "g.yaml"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("g.yaml:3:3: error: cycle: a -> b -> c -> a"), "{err}");
}

#[test]
fn unsupported_version_and_bad_set_are_errors() {
    let sb = Sandbox::new();
    sb.write("v2.yaml", "flow: 2\nnodes: {}\n");
    let out = sb.flow(&["validate", "v2.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("v2.yaml:1:7: error: unsupported format version `2`"), "{}", stderr(&out));

    sb.write("g.yaml", "flow: 1\nparams: { steps: 20 }\nnodes:\n  p: { op: debug.print, in: { value: $steps } }\n");
    let out = sb.flow(&["run", "g.yaml", "--set", "stpes=30"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("the graph has no param `stpes`"), "{}", stderr(&out));
    assert!(stderr(&out).contains("did you mean `steps`?"), "{}", stderr(&out));
    let out = sb.flow(&["run", "g.yaml", "--set", "steps"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn wrong_type_on_a_link_is_an_error() {
    let sb = Sandbox::new();
    sb.write(
        "g.yaml",
        "flow: 1\nnodes:\n  t: { op: tensor.random, in: { shape: [2], seed: 1 } }\n  w: { op: file.write_text, in: { path: x.txt, text: $t } }\n",
    );
    let out = sb.flow(&["validate", "g.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("g.yaml:4:54: error: input `text` of `file.write_text`: expects text, got a link to output `tensor` (tensor)"), "{}", stderr(&out));
}

#[test]
fn invalid_utf8_is_located() {
    let sb = Sandbox::new();
    std::fs::write(sb.path().join("g.yaml"), b"flow: 1\nname: caf\xe9\n").unwrap();
    let out = sb.flow(&["validate", "g.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("g.yaml:2:10: error: invalid UTF-8"), "{}", stderr(&out));
}
