//! No graph file, however malformed, may panic or hang validation: mutated
//! example graphs (property test) and hand-picked nasty inputs.

use std::path::Path;

use flow_engine::graph;
use flow_engine::Registry;
use proptest::prelude::*;

fn registry() -> Registry {
    flow_nodes::registry()
}

fn seeds() -> Vec<Vec<u8>> {
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

/// Validates bytes; errors are fine, panics are not.
fn check(bytes: &[u8], reg: &Registry) {
    let result = graph::from_bytes("fuzz.yaml", Path::new("."), bytes, &[], reg);
    if let Err(diags) = result {
        // Rendering must not panic either, and every error names the file.
        let text = diags.render();
        assert!(text.contains("fuzz.yaml"));
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(vec![
        b"$".to_vec(), b"${".to_vec(), b"$$".to_vec(), b"}".to_vec(), b"{".to_vec(), b"[".to_vec(),
        b"]".to_vec(), b":".to_vec(), b"\t".to_vec(), b"\n".to_vec(), b"  ".to_vec(), b"- ".to_vec(),
        b"&a ".to_vec(), b"*a".to_vec(), b"!!str ".to_vec(), b"\"".to_vec(), b"'".to_vec(), b"|\n".to_vec(),
        b"\xff\xfe".to_vec(), b"\0".to_vec(), b"op: ".to_vec(), b"$a.b".to_vec(), b"---\n".to_vec(), b"? ".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), special).prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..80).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let at = |i: usize, len: usize| i % (len + 1);
    match m {
        Mutation::Flip(i, b) => {
            let i = i % bytes.len();
            bytes[i] ^= b | 1;
        }
        Mutation::Insert(i, s) => {
            let i = at(*i, bytes.len());
            bytes.splice(i..i, s.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Duplicate(i, n) => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            let chunk: Vec<u8> = bytes[i..end].to_vec();
            bytes.splice(end..end, chunk);
        }
        Mutation::Truncate(i) => {
            let i = at(*i, bytes.len());
            bytes.truncate(i);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, .. ProptestConfig::default() })]

    #[test]
    fn mutated_graph_files_never_panic(seed in 0usize..64, mutations in prop::collection::vec(mutation(), 1..8)) {
        let reg = registry();
        let files = seeds();
        let mut bytes = files[seed % files.len()].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check(&bytes, &reg);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check(&bytes, &registry());
    }
}

#[test]
fn nasty_inputs_are_errors_not_crashes() {
    let reg = registry();
    let deep_flow = format!("flow: 1\nnodes: {}", "[".repeat(200_000));
    let deep_block: String = (0..5000).map(|i| format!("{}- \n", " ".repeat(i))).collect();
    let huge_scalar = format!("flow: 1\nname: {}\nnodes: {{}}\n", "x".repeat(8 << 20));
    let many_nodes: String = std::iter::once("flow: 1\nnodes:\n".to_string())
        .chain((0..20_000).map(|i| format!("  n{i}: {{ op: text.join, in: {{ items: [$n{}] }} }}\n", (i + 1) % 20_000)))
        .collect();
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\xef\xbb\xbf".to_vec(),
        b"\t\tflow: 1".to_vec(),
        b"flow: 1\nnodes:\n\ta: {}".to_vec(),
        b"flow: 1\nnodes: &x { a: *x }".to_vec(),
        b"- 1\n- 2".to_vec(),
        b"flow: [1]\nnodes: 3".to_vec(),
        b"flow: 1\nnodes: { a: { op: [text.join] } }".to_vec(),
        b"flow: 1\nnodes: { a: { op: text.join, in: { items: \"${\" } } }".to_vec(),
        b"flow: 1\nnodes: { a: { op: text.join, in: [1, 2] } }".to_vec(),
        b"flow: 1\nnodes: { ? [a]: b }".to_vec(),
        b"flow: 1\r\nnodes:\r\n  a: { op: text.join, in: { items: [x] } }\r\n".to_vec(),
        b"flow: 1\n\0\0\0".to_vec(),
        deep_flow.into_bytes(),
        deep_block.into_bytes(),
        huge_scalar.into_bytes(),
        many_nodes.into_bytes(),
        vec![0xff; 1000],
    ];
    for bytes in cases {
        check(&bytes, &reg);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// Graph files of any size, sparse ones up to a terabyte included, are
    /// refused by their size before they are read (a read would take the
    /// memory of the whole file), with an error naming the limit.
    #[test]
    fn graph_files_of_any_size_are_checked_before_reading(len in prop_oneof![0u64..4096, (16u64 << 20) + 1..(1u64 << 40)]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.yaml");
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
        match graph::load(&path, &[], &registry()) {
            Ok(_) => prop_assert!(false, "an empty or zero-filled file is not a graph"),
            Err(diags) => {
                let text = diags.render();
                prop_assert!(len <= 16 << 20 || text.contains("the limit is"), "{text}");
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn graph_files_that_are_not_regular_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    let mut paths = vec![Path::new("/dev/zero").to_path_buf(), dir.path().to_path_buf()];
    if made {
        paths.push(fifo);
    }
    for path in paths {
        let Err(diags) = graph::load(&path, &[], &registry()) else { panic!("{} is not a graph file", path.display()) };
        let text = diags.render();
        assert!(text.contains("not a regular file") || text.contains("is a folder"), "{text}");
    }
}
