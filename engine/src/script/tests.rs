//! Script ops end to end inside the engine crate: loading, ports, running,
//! the sandbox and the tensor API against candle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::paths::Shown;
use super::ScriptSource;
use crate::context::{CancelToken, Interrupted, OpContext, Provenance};
use crate::events::{Event, EventSink};
use crate::op::{Fingerprint, Inputs, OpRef};
use crate::registry::{OpSource, Registry};
use crate::types::ValueType;
use crate::value::Value;

/// A folder with a `scripts/` folder, and a source loading from it.
struct Fixture {
    dir: tempfile::TempDir,
    source: ScriptSource,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { dir: tempfile::tempdir().unwrap(), source: ScriptSource::with_timeout(Duration::from_secs(20)) }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.root().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Loads op `name`; errors with the fixture's folder left out of paths.
    fn load(&self, name: &str) -> Result<OpRef, String> {
        self.source.load(name, &self.root()).map_err(|e| e.replace(&format!("{}/", self.root().display()), ""))
    }

    /// Writes `scripts/t.rhai` and loads it.
    fn script(&self, text: &str) -> OpRef {
        self.write("scripts/t.rhai", text);
        self.load("script.t").unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(&self, text: &str) -> String {
        self.write("scripts/t.rhai", text);
        match self.load("script.t") {
            Ok(_) => panic!("loaded"),
            Err(e) => e,
        }
    }
}

fn context(dir: &Path, cancel: CancelToken, messages: Arc<Mutex<Vec<String>>>) -> OpContext {
    let sink: EventSink = Arc::new(move |e| {
        if let Event::Message { text, .. } = e {
            messages.lock().unwrap().push(text);
        }
    });
    OpContext::new("n", Device::Cpu, dir.to_path_buf(), cancel, sink, Instant::now(), Arc::new(Provenance::default()))
}

fn run(op: &OpRef, inputs: Vec<(&str, Value)>) -> anyhow::Result<BTreeMap<String, Value>> {
    let ctx = context(Path::new("."), CancelToken::new(), Arc::default());
    let inputs = Inputs::new(inputs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
    let out = op.run(&inputs, &ctx)?;
    out.check_against(op.spec())?;
    Ok(out.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

/// The error of a run, with the temporary folder left out of paths.
fn run_err(op: &OpRef, inputs: Vec<(&str, Value)>) -> String {
    match run(op, inputs) {
        Ok(out) => panic!("ran: {out:?}"),
        Err(e) => {
            let tmp = std::env::temp_dir().canonicalize().unwrap();
            let text = format!("{e:#}");
            match text.find(tmp.to_str().unwrap()) {
                Some(at) => {
                    let rest = &text[at + tmp.as_os_str().len() + 1..];
                    let rest = &rest[rest.find('/').map_or(0, |i| i + 1)..];
                    format!("{}{rest}", &text[..at])
                }
                None => text,
            }
        }
    }
}

const ECHO_PORTS: &str = r#"fn ports() { #{ inputs: #{ x: "any" }, outputs: #{ y: "any" } } }"#;

#[test]
fn ports_become_the_spec_in_declaration_order() {
    let fx = Fixture::new();
    let op = fx.script(
        r#"
        fn ports() {
            #{
                doc: "builds a prompt",
                inputs: #{
                    subject: "text",
                    n: #{ type: "int", default: 3, doc: "how many" },
                    style: #{ type: "list", optional: true },
                },
                outputs: #{ zprompt: "text", count: "float" },
            }
        }
        fn run(i) { #{ zprompt: `${i.subject} x${i.n}`, count: i.n } }
        "#,
    );
    let spec = op.spec();
    assert_eq!(spec.name, "script.t");
    assert!(spec.doc.starts_with("builds a prompt"), "{}", spec.doc);
    let inputs: Vec<_> = spec.inputs.iter().map(|p| (p.name, p.ty, p.is_required(), p.optional)).collect();
    assert_eq!(
        inputs,
        [("subject", ValueType::Text, true, false), ("n", ValueType::Int, false, false), ("style", ValueType::List, false, true)]
    );
    assert_eq!(spec.input("n").unwrap().doc, "how many");
    assert_eq!(spec.outputs.iter().map(|p| p.name).collect::<Vec<_>>(), ["zprompt", "count"]);

    let out = run(&op, vec![("subject", Value::text("cats")), ("n", Value::Int(2))]).unwrap();
    assert_eq!(out["zprompt"].as_text(), Some("cats x2"));
    assert_eq!(out["count"].value_type(), ValueType::Float);
}

#[test]
fn declaration_errors_are_located() {
    let fx = Fixture::new();
    let shown = "scripts/t.rhai";
    let err = fx.error("fn ports() {\n  #{ inputs: #{ a: \"txt\" }, outputs: #{ b: \"text\" } }\n}\nfn run(i) { i }\n");
    assert!(err.ends_with(&format!("{shown}:2:20: in `ports()`: input `a`: unknown type `txt` (did you mean `text`?)")), "{err}");
    let err = fx.error("fn ports() {\n  #{ inputs: #{},\n     outputs: #{ b: #{ type: \"text\", defualt: 1 } } }\n}\nfn run(i) { i }\n");
    assert!(err.contains(&format!("{shown}:3:47: in `ports()`: output `b`: unknown key `defualt`")), "{err}");
    let err = fx.error("fn ports() {\n  #{ inputs: #{ m: \"model\" }, outputs: #{ b: \"docs\" } }\n}\nfn run(i) { i }\n");
    assert!(err.contains("scripts cannot take models"), "{err}");
    let err = fx.error("fn ports() {\n  #{ outputs: #{ b: \"docs\" } }\n}\nfn run(i) { i }\n");
    assert!(err.contains("2:21") && err.contains("scripts cannot produce `docs`"), "{err}");
    let err = fx.error("fn ports() { #{ inputs: #{ n: #{ type: \"int\", default: \"x\" } }, outputs: #{ o: \"int\" } } }\nfn run(i) { i }\n");
    assert!(err.contains("the default x is not a int"), "{err}");
    let err = fx.error("fn ports() { #{ inputs: #{}, outputs: #{} } }\nfn run(i) { i }\n");
    assert!(err.contains("declares no outputs"), "{err}");
    let err = fx.error("fn ports() { 42 }\nfn run(i) { i }\n");
    assert!(err.contains("should return a map"), "{err}");
    let err = fx.error(ECHO_PORTS);
    assert!(err.ends_with(&format!("{shown}:1:1: the script has no `fn run(i)` (it receives a map of the inputs and returns a map of the outputs)")), "{err}");
    let err = fx.error("fn run(i) { i }");
    assert!(err.contains("no `fn ports()`"), "{err}");
    let err = fx.error(&format!("{ECHO_PORTS}\nfn run(i) {{\n  let x = ;\n}}"));
    assert!(err.starts_with(&format!("{shown}:3:11: ")), "{err}");
}

#[test]
fn unchanged_scripts_are_not_compiled_again() {
    let fx = Fixture::new();
    let text = format!("{ECHO_PORTS}\nfn run(i) {{ #{{ y: i.x }} }}");
    let a = fx.script(&text);
    let b = fx.load("script.t").unwrap();
    let file = fx.root().join("scripts/t.rhai");
    let shown = Shown::new(&fx.root());
    let first = fx.source.compiled(&file, &shown).unwrap();
    assert!(Arc::ptr_eq(&first, &fx.source.compiled(&file, &shown).unwrap()));
    let fp = |op: &OpRef| op.fingerprint(&Inputs::default(), Path::new(".")).unwrap();
    assert_eq!(fp(&a), fp(&b));
    assert!(matches!(fp(&a), Fingerprint::Content(_)));

    let c = fx.script(&format!("{text}\n// edited"));
    assert!(!Arc::ptr_eq(&first, &fx.source.compiled(&file, &shown).unwrap()));
    assert_ne!(fp(&a), fp(&c));
}

#[test]
fn imports_are_tracked_and_confined_to_the_script_folder() {
    let fx = Fixture::new();
    fx.write("scripts/lib/util.rhai", "fn twice(x) { x * 2 }");
    let op = fx.script(&format!("import \"lib/util\" as u;\n{ECHO_PORTS}\nfn run(i) {{ #{{ y: u::twice(i.x) }} }}"));
    assert_eq!(run(&op, vec![("x", Value::Int(21))]).unwrap()["y"].as_int(), Some(42));
    let watched = op.watched_paths(&Inputs::default(), Path::new("."));
    assert_eq!(watched, [fx.root().join("scripts/t.rhai"), fx.root().join("scripts/lib/util.rhai")]);

    let before = op.fingerprint(&Inputs::default(), Path::new(".")).unwrap();
    fx.write("scripts/lib/util.rhai", "fn twice(x) { x + x }");
    let again = fx.load("script.t").unwrap();
    assert_ne!(again.fingerprint(&Inputs::default(), Path::new(".")).unwrap(), before);

    fx.write("secret.rhai", "fn f() { 1 }");
    let err = fx.error(&format!("{ECHO_PORTS}\nimport \"../secret\" as s;\nfn run(i) {{ i }}"));
    assert!(err.contains("scripts/t.rhai:2:1: import `../secret` refused: a script may only import modules inside its own folder `scripts`"), "{err}");
    let err = fx.error(&format!("{ECHO_PORTS}\nlet p = \"lib/util\";\nimport p as s;\nfn run(i) {{ i }}"));
    assert!(err.contains("import paths must be string literals"), "{err}");
    let err = fx.error(&format!("{ECHO_PORTS}\nimport \"nothere\" as s;\nfn run(i) {{ i }}"));
    assert!(err.contains("module `nothere` not found"), "{err}");
}

#[test]
fn run_errors_are_located_in_the_right_file() {
    let fx = Fixture::new();
    fx.write("scripts/lib.rhai", "fn boom(x) {\n  throw `bad ${x}`;\n}");
    let op = fx.script(&format!("import \"lib\" as l;\n{ECHO_PORTS}\nfn run(i) {{\n  l::boom(i.x)\n}}"));
    let err = run_err(&op, vec![("x", Value::Int(1))]);
    assert!(err.starts_with("scripts/lib.rhai:2:3: bad 1 (in `boom`, called from `run`)"), "{err}");

    let op = fx.script(&format!("{ECHO_PORTS}\nfn run(i) {{\n  #{{ y: i.missing }}\n}}"));
    let err = run_err(&op, vec![("x", Value::Int(1))]);
    assert!(err.starts_with("scripts/t.rhai:3:11: Property not found: missing"), "{err}");
}

#[test]
fn sandbox_limits_stop_bad_scripts() {
    let fx = Fixture::new();
    let run_body = |body: &str| {
        let op = fx.script(&format!("{ECHO_PORTS}\nfn run(i) {{ {body} }}"));
        run_err(&op, vec![("x", Value::Int(1))])
    };
    assert!(run_body("fn_that_recurses(1)").contains("Function not found"));
    let err = fx.error(&format!("{ECHO_PORTS}\nfn f(n) {{ f(n + 1) }}\nfn run(i) {{ eval(\"1\") }}"));
    assert!(err.contains("scripts/t.rhai:3:13") && err.contains("'eval' is disabled"), "{err}");
    let op = fx.script(&format!("{ECHO_PORTS}\nfn f(n) {{ f(n + 1) }}\nfn run(i) {{ f(0) }}"));
    assert!(run_err(&op, vec![("x", Value::Int(1))]).contains("stack overflow: more than 64 nested"));
    assert!(run_body("let s = \"x\"; loop { s += s; }").contains("too large"));
    assert!(run_body("sleep(100)").contains("`sleep` is not available"));
    assert!(run_body("Fn(\"eval\").call(\"1\")").contains("eval"));
    assert!(run_body("open_file(\"/etc/passwd\")").contains("Function not found: open_file"));
    // rhai walks nested data recursively: deep nesting must not overflow the
    // stack of the calling thread (2 MiB for tests).
    let err = run_body("let a = []; for k in 0..8000 { a = [a]; } a");
    assert!(err.contains("output `y`: lists and maps nest deeper than 128 levels"), "{err}");
}

#[test]
fn deadline_and_cancellation_stop_endless_loops() {
    let fx = Fixture { dir: tempfile::tempdir().unwrap(), source: ScriptSource::with_timeout(Duration::from_millis(200)) };
    let op = fx.script(&format!("{ECHO_PORTS}\nfn run(i) {{ let n = 0; loop {{ n += 1; }} }}"));
    let t0 = Instant::now();
    let err = run_err(&op, vec![("x", Value::Int(1))]);
    assert!(err.contains("timed out after 0.2s"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5));

    let cancel = CancelToken::new();
    let ctx = context(Path::new("."), cancel.clone(), Arc::default());
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        cancel.cancel();
    });
    let slow = Fixture::new();
    let op = slow.script(&format!("{ECHO_PORTS}\nfn run(i) {{ loop {{ }} }}"));
    let err = op.run(&Inputs::default(), &ctx).unwrap_err();
    canceller.join().unwrap();
    assert!(err.downcast_ref::<Interrupted>().is_some(), "{err:#}");
}

#[test]
fn print_and_debug_become_messages() {
    let fx = Fixture::new();
    let op = fx.script(&format!("{ECHO_PORTS}\nfn run(i) {{\n  print(`x is ${{i.x}}`);\n  debug(i.x);\n  #{{ y: i.x }}\n}}"));
    let messages = Arc::new(Mutex::new(Vec::new()));
    let ctx = context(Path::new("."), CancelToken::new(), Arc::clone(&messages));
    let inputs = Inputs::new(BTreeMap::from([("x".to_string(), Value::Int(5))]));
    op.run(&inputs, &ctx).unwrap();
    assert_eq!(*messages.lock().unwrap(), ["x is 5", "[line 4] 5"]);
}

#[test]
fn outputs_are_checked() {
    let fx = Fixture::new();
    let op = fx.script(r#"fn ports() { #{ outputs: #{ a: "int", b: "text" } } } fn run(i) { #{ a: "no", b: "x" } }"#);
    assert!(run_err(&op, vec![]).ends_with("scripts/t.rhai: output `a` should be int, got a string"));
    let op = fx.script(r#"fn ports() { #{ outputs: #{ a: "int", b: "text" } } } fn run(i) { #{ a: 1 } }"#);
    assert!(run_err(&op, vec![]).contains("no value for output `b`"));
    let op = fx.script(r#"fn ports() { #{ outputs: #{ a: "int" } } } fn run(i) { 7 }"#);
    assert_eq!(run(&op, vec![]).unwrap()["a"].as_int(), Some(7));
    let op = fx.script(r#"fn ports() { #{ outputs: #{ a: "latent" } } } fn run(i) { 7 }"#);
    assert!(run_err(&op, vec![]).contains("output `a` should be latent, got an int"));
}

#[test]
fn objects_reach_scripts_in_their_plain_form() {
    #[derive(Debug)]
    struct Thing;
    impl crate::value::Object for Thing {
        fn value_type(&self) -> ValueType {
            ValueType::Chunks
        }
        fn type_tag(&self) -> &'static str {
            "test.thing"
        }
        fn byte_size(&self) -> usize {
            0
        }
        fn to_plain(&self) -> Option<Value> {
            Some(Value::list(vec![Value::map(BTreeMap::from([("text".to_string(), Value::text("hello"))]))]))
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }
    let fx = Fixture::new();
    let op = fx.script(r#"fn ports() { #{ inputs: #{ c: "chunks" }, outputs: #{ t: "text" } } } fn run(i) { i.c[0].text }"#);
    let out = run(&op, vec![("c", Value::Object(Arc::new(Thing)))]).unwrap();
    assert_eq!(out["t"].as_text(), Some("hello"));
}

/// The tensor API computes what candle computes.
#[test]
fn tensor_api_matches_candle() {
    let fx = Fixture::new();
    let op = fx.script(
        r#"
        fn ports() { #{ inputs: #{ a: "latent", b: "latent" }, outputs: #{ mix: "latent", stats: "list", rows: "tensor", t: "tensor" } } }
        fn run(i) {
            let a = i.a;
            let b = i.b;
            let mix = lerp(a, b, 0.25) * 2 - 1.0 / (b.abs() + 1);
            let stats = [a.sum(), a.mean(), a.max(), a.min(), a.shape, a.rank(), a.dtype(),
                         a.sum(1).shape(), a.mean(-1).to_array(), (-a).exp().sqrt().clamp(0, 0.9).max()];
            let rows = concat([a[0..1], a.narrow(0, 1, 1)], 0).reshape([2, -1]);
            let t = tensor([[1, 2], [3, 4.5]]) + tensor([1, 2, 3, 4], [2, 2]) * ones([2]) + zeros([2, 2]);
            #{ mix: mix, stats: stats, rows: rows, t: t.matmul(tensor([[1], [0]])) }
        }
        "#,
    );
    let a = Tensor::new(&[[1f32, -2.0, 3.0], [4.0, 5.0, -6.0]], &Device::Cpu).unwrap();
    let b = Tensor::new(&[[0.5f32, 1.0, 2.0], [-1.0, 0.0, 3.0]], &Device::Cpu).unwrap();
    let out = run(&op, vec![("a", Value::tensor(ValueType::Latent, a.clone())), ("b", Value::tensor(ValueType::Latent, b.clone()))]).unwrap();

    let lerp = (&a + ((&b - &a).unwrap() * 0.25).unwrap()).unwrap();
    let want = ((lerp * 2.0).unwrap() - (b.abs().unwrap() + 1.0).unwrap().recip().unwrap()).unwrap();
    let mix = out["mix"].as_tensor().unwrap();
    assert_eq!(out["mix"].value_type(), ValueType::Latent);
    let diff = (mix - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-6, "{diff}");

    let stats = out["stats"].to_json();
    let neg_max = a.neg().unwrap().exp().unwrap().sqrt().unwrap().clamp(0f32, 0.9f32).unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(
        stats,
        serde_json::json!([5.0, f64::from(a.mean_all().unwrap().to_scalar::<f32>().unwrap()), 5.0, -6.0, [2, 3], 2, "f32", [2], a.mean(1).unwrap().to_vec1::<f32>().unwrap(), f64::from(neg_max)])
    );
    assert_eq!(out["rows"].as_tensor().unwrap().to_vec2::<f32>().unwrap(), a.to_vec2::<f32>().unwrap());
    assert_eq!(out["t"].as_tensor().unwrap().to_vec2::<f32>().unwrap(), [[2.0], [6.0]]);
}

#[test]
fn tensor_api_errors_are_script_errors() {
    let fx = Fixture::new();
    let cases = [
        ("tensor([1, 2]) + tensor([1, 2, 3])", "shape mismatch"),
        ("tensor([[1, 2], [3]])", "rows of different lengths"),
        ("tensor([1, \"x\"])", "a tensor element should be a number"),
        ("tensor([1, 2, 3], [2, 2])", "3 values do not fill the shape [2, 2]"),
        ("zeros([100000, 100000])", "too big"),
        ("tensor([1, 2]).sum(3)", "dim 3 out of range"),
        ("tensor([1, 2]).narrow(0, 1, 5)", "outside a dim of size 2"),
        ("tensor([1, 2])[5]", "index 5 out of range"),
        ("tensor([1, 2]).reshape([3, -1])", "cannot infer -1"),
        ("concat([], 0)", "concat of an empty array"),
        ("tensor([]).max()", "max of an empty tensor"),
        ("tensor([1]).clamp(2, 1)", "clamp: low 2 is above high 1"),
    ];
    for (expr, want) in cases {
        let op = fx.script(&format!("{ECHO_PORTS}\nfn run(i) {{\n  {expr}\n}}"));
        let err = run_err(&op, vec![("x", Value::Int(1))]);
        assert!(err.starts_with("scripts/t.rhai:3:") && err.contains(want), "{expr}: {err}");
    }
}

/// A script's declared types are enforced at validation like a built-in op's.
#[test]
fn validation_checks_script_port_types() {
    let fx = Fixture::new();
    fx.write("scripts/count.rhai", r#"fn ports() { #{ inputs: #{ n: "int" }, outputs: #{ c: "int" } } } fn run(i) { #{ c: i.n } }"#);
    let mut reg = Registry::new();
    reg.register_source(Arc::new(ScriptSource::new()));
    let yaml = "flow: 1\nnodes:\n  a:\n    op: script.count\n    in: { n: hello }\n  b:\n    op: script.count\n    in: { n: $a, extra: 1 }\n  c:\n    op: script.nope\n";
    let Err(diags) = crate::graph::from_bytes("g.yaml", &fx.root(), yaml.as_bytes(), &[], &reg) else {
        panic!("valid");
    };
    let err = diags.render();
    assert!(err.contains("g.yaml:5:14:") && err.contains("int"), "{err}");
    assert!(err.contains("g.yaml:8:18:") && err.contains("has no input `extra`"), "{err}");
    assert!(err.contains("g.yaml:10:9:") && err.contains("no `scripts/nope.rhai`"), "{err}");
}
