//! Reading files whose size a user controls, with a bound: the size is
//! checked before anything is read, the read itself stops one byte past the
//! limit (a file that grows meanwhile is still refused), and only regular
//! files are read (a FIFO, `/dev/zero` or a folder would never end or is no
//! file at all).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

/// The whole content of the regular file `path`, at most `limit` bytes;
/// `what` names the file's role in errors ("graph file", "script", ...).
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> io::Result<Vec<u8>> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() { "a folder" } else { "not a regular file (a device, FIFO or socket)" };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("the {what} `{}` is {kind}", path.display())));
    }
    let too_big = |len: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the {what} `{}` is {len} bytes; the limit is {limit} bytes", path.display()),
        )
    };
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    File::open(path)?.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"12345").unwrap();
        assert_eq!(read_bounded(&p, 5, "file").unwrap(), b"12345");
        let err = read_bounded(&p, 4, "graph file").unwrap_err().to_string();
        assert!(err.contains("graph file") && err.contains("5 bytes; the limit is 4"), "{err}");
    }

    #[test]
    fn sparse_huge_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        File::create(&p).unwrap().set_len(1 << 40).unwrap();
        let err = read_bounded(&p, 1 << 20, "graph file").unwrap_err().to_string();
        assert!(err.contains("1099511627776 bytes"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn devices_fifos_and_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for p in [Path::new("/dev/zero"), Path::new("/dev/null"), dir.path()] {
            let err = read_bounded(p, 1 << 20, "graph file").unwrap_err().to_string();
            assert!(err.contains("folder") || err.contains("not a regular file"), "{err}");
        }
        let fifo = dir.path().join("fifo");
        if std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
            assert!(read_bounded(&fifo, 10, "script").unwrap_err().to_string().contains("not a regular file"));
        }
    }
}
