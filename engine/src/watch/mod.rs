//! File watching for `flow watch`: which saves matter, debounced, robust to
//! editors that save by writing a temporary file and renaming it over the
//! original (parent folders are watched and paths matched, never the file's
//! inode).

mod set;
mod watcher;

pub use set::{normalize, WatchSet};
pub use watcher::FileWatcher;
