//! The threads scripts run on.
//!
//! rhai walks nested arrays and maps recursively (size checks, drops), and a
//! script can nest them as deep as its time allows (each level costs a walk
//! of the levels below, so the depth grows with the square root of the
//! deadline): on the 2 MiB stack of a blocking-pool thread that overflows,
//! and a stack overflow aborts the process. Scripts therefore run on threads
//! with a [`STACK_SIZE`] stack, which the OS commits only as it is used.
//! Spawning such a thread costs about 50 µs, far more than the script call
//! itself, so the threads are kept: an idle pool as large as the most calls
//! that ever ran at once.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;

/// Stack of a script thread.
const STACK_SIZE: usize = 256 << 20;

/// What a job hands back to its worker: the delivery of its result, done
/// once the worker is idle again (so the next call finds it).
type Deliver = Box<dyn FnOnce() + Send>;
type Job = Box<dyn FnOnce() -> Deliver + Send>;

/// Workers waiting for a job.
static IDLE: Mutex<Vec<Sender<Job>>> = Mutex::new(Vec::new());

/// Runs `f` on a script thread and waits for it; a panic inside becomes an
/// error.
pub(crate) fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (done, result) = mpsc::sync_channel(1);
    let mut job: Job = Box::new(move || {
        let outcome = catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            format!("the script engine panicked: {message}")
        });
        Box::new(move || {
            let _ = done.send(outcome);
        })
    });
    loop {
        let idle = IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let worker = match idle {
            Some(worker) => worker,
            None => spawn()?,
        };
        match worker.send(job) {
            Ok(()) => break,
            // That worker is gone; try another.
            Err(mpsc::SendError(back)) => job = back,
        }
    }
    result.recv().map_err(|_| "the script's thread stopped before it finished".to_string())?
}

/// A new worker thread, waiting for jobs on the returned sender.
fn spawn() -> Result<Sender<Job>, String> {
    let (sender, jobs) = mpsc::channel::<Job>();
    let me = sender.clone();
    std::thread::Builder::new()
        .name("flow-script".into())
        .stack_size(STACK_SIZE)
        .spawn(move || {
            for job in jobs {
                let deliver = job();
                IDLE.lock().unwrap_or_else(|e| e.into_inner()).push(me.clone());
                deliver();
            }
        })
        .map_err(|e| format!("cannot start a thread for scripts: {e}"))?;
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_jobs_and_survives_panics() {
        assert_eq!(run(|| 6 * 7).unwrap(), 42);
        let err = run(|| -> i32 { panic!("boom") }).unwrap_err();
        assert!(err.contains("panicked: boom"), "{err}");
        assert_eq!(run(|| "again").unwrap(), "again");
    }
}
