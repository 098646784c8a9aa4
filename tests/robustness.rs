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
