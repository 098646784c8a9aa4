//! The disk tier's byte budget: which files to evict when the cache folder
//! holds more than it may. Entries and ops' memos are weighed alike, least
//! recently used first (a hit refreshes an entry's modification time), down
//! to [`LOW_WATER`] of the budget so that the next runs do not evict again
//! at once. When the folder is listed at all is the disk tier's business
//! (see `disk.rs`: a running total, rescans when it passes the budget or
//! periodically).

use std::path::PathBuf;
use std::time::SystemTime;

/// Default budget of the disk tier when `--disk-budget` and
/// `FLOW_DISK_BUDGET` are not given: 10 GiB.
pub const DEFAULT_DISK_BUDGET: u64 = 10 << 30;

/// Eviction stops at this fraction of the budget.
pub const LOW_WATER: f64 = 0.9;

/// One file of the cache folder.
#[derive(Clone, Debug)]
pub struct CachedFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
    /// When it was last used (written, or read for an entry).
    pub used: SystemTime,
}

/// The files to delete so that `files` fit in `budget` bytes: none while
/// they fit; else the least recently used until [`LOW_WATER`] of the budget
/// is reached.
pub fn victims(mut files: Vec<CachedFile>, budget: u64) -> Vec<CachedFile> {
    let mut total: u64 = files.iter().map(|f| f.len).sum();
    if total <= budget {
        return Vec::new();
    }
    let target = (budget as f64 * LOW_WATER) as u64;
    files.sort_by_key(|f| f.used);
    let mut out = Vec::new();
    for f in files {
        if total <= target {
            break;
        }
        total -= f.len;
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn file(name: &str, len: u64, age_s: u64) -> CachedFile {
        CachedFile { path: name.into(), len, used: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 - age_s) }
    }

    fn names(files: &[CachedFile]) -> Vec<String> {
        files.iter().map(|f| f.path.display().to_string()).collect()
    }

    #[test]
    fn nothing_goes_while_everything_fits() {
        assert!(victims(vec![file("a", 50, 9), file("b", 50, 1)], 100).is_empty());
    }

    #[test]
    fn the_least_recently_used_go_first_down_to_the_low_water_mark() {
        let files = vec![file("new", 40, 1), file("old", 40, 30), file("mid", 40, 10), file("older", 10, 20)];
        // 130 bytes for a budget of 100: down to 90, oldest first.
        assert_eq!(names(&victims(files, 100)), ["old"]);
        let files = vec![file("new", 40, 1), file("old", 40, 30), file("mid", 40, 10), file("older", 10, 20)];
        assert_eq!(names(&victims(files, 60)), ["old", "older", "mid"]);
    }

    #[test]
    fn a_zero_budget_empties_the_folder() {
        assert_eq!(victims(vec![file("a", 1, 1), file("b", 1, 2)], 0).len(), 2);
    }
}
