//! `flow cache stats` and `flow cache clear`.

use std::path::PathBuf;

use flow_engine::cache::{default_disk_budget, DiskTier};
pub use flow_engine::limits::human_bytes;

use super::common::cache_dir;
use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

fn open(dir: &Option<PathBuf>) -> Result<(PathBuf, DiskTier), u8> {
    let dir = cache_dir(dir);
    let budget = default_disk_budget().map_err(|e| {
        errln!("error: {e:#}");
        EXIT_INVALID
    })?;
    DiskTier::open(dir.join("v1")).map(|d| (dir.clone(), d.with_budget(budget))).map_err(|e| {
        errln!("error: cannot open the cache at {}: {e}", dir.display());
        EXIT_INVALID
    })
}

/// Prints the number of entries and bytes in the disk cache.
pub fn stats(dir: Option<PathBuf>) -> u8 {
    match open(&dir) {
        Ok((path, disk)) => {
            let s = disk.stats();
            outln!("cache: {}", path.display());
            outln!("entries: {}", s.entries);
            outln!("bytes: {} ({})", s.bytes, human_bytes(s.bytes));
            outln!("memo files: {} ({})", s.memo_files, human_bytes(s.memo_bytes));
            let used = s.bytes + s.memo_bytes;
            let budget = disk.budget();
            let share = if budget == 0 { 100.0 } else { used as f64 * 100.0 / budget as f64 };
            outln!(
                "budget: {} ({share:.1}% used; least recently used entries go first; --disk-budget or FLOW_DISK_BUDGET)",
                human_bytes(budget)
            );
            EXIT_OK
        }
        Err(code) => code,
    }
}

/// Removes every entry of the disk cache.
pub fn clear(dir: Option<PathBuf>) -> u8 {
    match open(&dir) {
        Ok((path, disk)) => match disk.clear() {
            Ok(s) => {
                outln!(
                    "removed {} entries ({}) and {} memo files ({}) from {}",
                    s.entries,
                    human_bytes(s.bytes),
                    s.memo_files,
                    human_bytes(s.memo_bytes),
                    path.display()
                );
                EXIT_OK
            }
            Err(e) => {
                errln!("error: {e}");
                EXIT_FAILED
            }
        },
        Err(code) => code,
    }
}
