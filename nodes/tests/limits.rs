//! Sizes chosen by the test (huge ones included) go through the real ops:
//! every op that allocates from a user-given size answers with its result
//! or a clear error, never an abort. The image pixel limit is lowered to
//! 64 x 64 for this test binary (`FLOW_MAX_IMAGE_PIXELS`), so that both
//! sides of it are cheap to reach.

#[path = "ops/common.rs"]
#[allow(dead_code)]
mod common;

use std::sync::Once;

use common::{ctx, image, run, tensor};
use flow_engine::Value;
use proptest::prelude::*;

const LIMIT: u64 = 64 * 64;

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var("FLOW_MAX_IMAGE_PIXELS", LIMIT.to_string()));
}

/// A size: mostly small, sometimes beyond anything a machine holds.
fn size() -> impl Strategy<Value = i64> {
    prop_oneof![1i64..=128, 1i64 << 20..=1i64 << 40, Just(i64::MAX)]
}

/// The error of a refused size names the limit or the memory it needs.
fn is_clear(err: &str) -> bool {
    err.contains("over the limit") || err.contains("needs about") || err.contains("too many elements") || err.contains("must be")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn empty_latents_of_any_size(w in size(), h in size()) {
        setup();
        let dir = tempfile::tempdir().unwrap();
        let (w8, h8) = (w.saturating_mul(8), h.saturating_mul(8));
        match run("sd.empty_latent", &[("width", Value::Int(w8)), ("height", Value::Int(h8))], &ctx(dir.path())) {
            Ok(_) => prop_assert!((w8 as u64) * (h8 as u64) <= LIMIT),
            Err(e) => prop_assert!(is_clear(&format!("{e:#}")), "{e:#}"),
        }
    }

    // Dimensions are small or beyond any machine's memory (a tensor of
    // 2^36 f32 is 256 GiB): sizes in between may or may not fit the memory
    // of the machine running the test.
    #[test]
    fn random_tensors_of_any_shape(dims in prop::collection::vec(prop_oneof![1usize..=64, 1usize << 36..=1usize << 40], 1..4)) {
        setup();
        let dir = tempfile::tempdir().unwrap();
        let shape = Value::list(dims.iter().map(|&d| Value::Int(d as i64)).collect());
        match run("tensor.random", &[("shape", shape), ("seed", Value::Int(1))], &ctx(dir.path())) {
            Ok(_) => prop_assert!(dims.iter().product::<usize>() <= 64 * 64 * 64),
            Err(e) => prop_assert!(is_clear(&format!("{e:#}")), "{e:#}"),
        }
    }

    #[test]
    fn resizes_to_any_size(w in size(), h in size()) {
        setup();
        let dir = tempfile::tempdir().unwrap();
        let img = image(vec![0.5; 3 * 4 * 4], (1, 3, 4, 4));
        match run("image.resize", &[("image", img), ("width", Value::Int(w)), ("height", Value::Int(h))], &ctx(dir.path())) {
            Ok(_) => prop_assert!((w as u64) * (h as u64) <= LIMIT),
            Err(e) => prop_assert!(is_clear(&format!("{e:#}")), "{e:#}"),
        }
    }

    #[test]
    fn products_and_sums_of_any_shape(m in prop_oneof![1usize..=8, 1usize << 16..=1usize << 20], n in prop_oneof![1usize..=8, 1usize << 16..=1usize << 20]) {
        setup();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (tensor(vec![1.0; m], &[m, 1]), tensor(vec![1.0; n], &[1, n]));
        for op in ["tensor.matmul", "tensor.add"] {
            match run(op, &[("a", a.clone()), ("b", b.clone())], &ctx(dir.path())) {
                Ok(_) => prop_assert!((m * n) as u64 * 4 < 1 << 36),
                Err(e) => prop_assert!(is_clear(&format!("{e:#}")), "{op}: {e:#}"),
            }
        }
    }

    #[test]
    fn pngs_of_any_size_are_checked_before_decoding(w in 1u32..=160, h in 1u32..=160) {
        setup();
        let dir = tempfile::tempdir().unwrap();
        image::GrayImage::new(w, h).save(dir.path().join("in.png")).unwrap();
        match run("image.load", &[("path", Value::text("in.png"))], &ctx(dir.path())) {
            Ok(_) => prop_assert!(u64::from(w * h) <= LIMIT),
            Err(e) => {
                let e = format!("{e:#}");
                prop_assert!(u64::from(w * h) > LIMIT && e.contains("over the limit"), "{e}");
            }
        }
    }
}

#[test]
fn files_that_are_not_regular_or_too_large_are_refused() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    std::fs::File::create(dir.path().join("huge.txt")).unwrap().set_len(1 << 40).unwrap();
    for path in ["huge.txt", "/dev/zero", "."] {
        let err = run("file.read_text", &[("path", Value::text(path))], &ctx(dir.path())).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("the limit is") || err.contains("not a regular file") || err.contains("folder"), "{err}");
    }
}
