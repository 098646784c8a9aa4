//! A persistent pool of worker threads for fine-grained parallel work: an
//! LLM decode step dispatches a few hundred small jobs per token, far too
//! many to start threads or wake sleeping ones for each. Workers spin for a
//! short while after a job (the next one usually comes within microseconds),
//! then park until woken.
//!
//! [`Pool::run`] splits a job into `n` tasks taken dynamically by the
//! calling thread and the workers; it returns when every task is done and
//! no worker can still touch the job.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread;

/// How many times an idle worker checks for a new job before it parks
/// (about 50 µs).
const SPINS: u32 = 20_000;

/// One dispatched job, on the caller's stack while it runs.
struct Job<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
}

impl Job<'_> {
    /// Runs tasks until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= self.n {
                return;
            }
            (self.task)(i);
            self.done.fetch_add(1, SeqCst);
        }
    }
}

#[derive(Default)]
struct Shared {
    /// The current job (a `*const Job` with its lifetime erased), or null.
    job: AtomicPtr<()>,
    /// Bumped for every job.
    epoch: AtomicU64,
    /// Workers that may be using `job`.
    active: AtomicUsize,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A pool of `threads - 1` workers plus the calling thread.
pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    /// One job at a time; a second caller runs its job alone.
    dispatch: Mutex<()>,
}

impl Pool {
    /// A pool that runs jobs on `threads` threads in all (the caller included).
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared::default());
        for i in 1..threads {
            let mine = Arc::clone(&shared);
            let spawned = thread::Builder::new().name(format!("flow-kernel-{i}")).spawn(move || worker(&mine));
            if spawned.is_err() {
                // Fewer workers only means less parallelism.
                return Pool { shared, threads: i, dispatch: Mutex::new(()) };
            }
        }
        Pool { shared, threads, dispatch: Mutex::new(()) }
    }

    /// The process-wide pool, sized like candle's CPU work
    /// (`RAYON_NUM_THREADS`, else the number of cores).
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| Pool::new(candle_core::utils::get_num_threads()))
    }

    /// Threads that work on a job (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `task(i)` for every `i` in `0..n`, in parallel; returns when all
    /// are done.
    pub fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        let job = Job { task, n, next: AtomicUsize::new(0), done: AtomicUsize::new(0) };
        let guard = match self.dispatch.try_lock() {
            Ok(g) if n > 1 && self.threads > 1 => g,
            _ => return job.work(),
        };
        let s = &self.shared;
        s.job.store(&job as *const Job as *mut (), SeqCst);
        s.epoch.fetch_add(1, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _lock = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        job.work();
        while job.done.load(SeqCst) < n {
            std::hint::spin_loop();
        }
        // No worker may pick the job up from now on; wait for those that did.
        s.job.store(std::ptr::null_mut(), SeqCst);
        while s.active.load(SeqCst) > 0 {
            std::hint::spin_loop();
        }
        drop(guard);
    }
}

fn worker(s: &Shared) {
    let mut seen = s.epoch.load(SeqCst);
    loop {
        let mut spins = 0;
        while s.epoch.load(SeqCst) == seen {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let lock = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.sleepers.fetch_add(1, SeqCst);
            let _lock = s
                .wake
                .wait_while(lock, |_| s.epoch.load(SeqCst) == seen)
                .unwrap_or_else(PoisonError::into_inner);
            s.sleepers.fetch_sub(1, SeqCst);
        }
        seen = s.epoch.load(SeqCst);
        s.active.fetch_add(1, SeqCst);
        let job = s.job.load(SeqCst) as *const Job;
        if !job.is_null() {
            // SAFETY: a non-null job stays alive until `active` drops to 0:
            // `run` nulls the pointer before it waits for `active`, and this
            // worker raised `active` before loading the pointer (both SeqCst).
            unsafe { &*job }.work();
        }
        s.active.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[test]
    fn every_task_runs_exactly_once_job_after_job() {
        let pool = Pool::new(3);
        for n in [0usize, 1, 2, 7, 100, 1000] {
            let counts: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
            pool.run(n, &|i| {
                counts[i].fetch_add(1, SeqCst);
            });
            assert!(counts.iter().all(|c| c.load(SeqCst) == 1), "n = {n}");
        }
    }

    #[test]
    fn parked_workers_wake_up_and_concurrent_callers_do_not_deadlock() {
        let pool = Arc::new(Pool::new(2));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let total = AtomicUsize::new(0);
        pool.run(64, &|i| {
            total.fetch_add(i, SeqCst);
        });
        assert_eq!(total.load(SeqCst), 64 * 63 / 2);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let sum = AtomicUsize::new(0);
                        pool.run(16, &|i| {
                            sum.fetch_add(i, SeqCst);
                        });
                        assert_eq!(sum.load(SeqCst), 120);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
