//! Data-parallel loops on the persistent worker pool, for kernels that
//! split their work into independent items.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `work(state, i)` for every `i` in `0..n` on the threads of the
/// persistent worker pool (`RAYON_NUM_THREADS`, as candle); each thread
/// makes its own `state` with `init` (scratch buffers). Items are handed out
/// dynamically.
pub(crate) fn parallel_for<T>(
    n: usize,
    init: impl Fn() -> T + Sync,
    work: impl Fn(&mut T, usize) + Sync,
) {
    let pool = crate::kernels::pool::Pool::global();
    let workers = pool.threads().min(n);
    let next = AtomicUsize::new(0);
    let run = |_: usize| {
        let mut state = init();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            work(&mut state, i);
        }
    };
    pool.run(workers.max(1), &run);
}

/// A raw output pointer shared by the threads of [`parallel_for`], each
/// writing a disjoint part.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);

impl SharedMut {
    /// The pointer (a method, so closures capture the `Sync` wrapper).
    #[inline(always)]
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the kernels only write disjoint ranges through it while the
// owning buffer outlives the parallel section.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
