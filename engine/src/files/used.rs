//! Reading a cache file and marking it used: caches that keep within a
//! byte budget evict the least recently used files first, and a file's
//! modification time is when it was last used.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::SystemTime;

/// Reads the whole file and sets its modification time to now (best effort:
/// a read-only cache folder still serves its files).
pub fn read_marking_used(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let _ = file.set_modified(SystemTime::now());
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn reading_refreshes_the_modification_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry");
        std::fs::write(&path, b"bytes").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        assert_eq!(read_marking_used(&path).unwrap(), b"bytes");
        let used = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(used > old + Duration::from_secs(3000));
    }
}
