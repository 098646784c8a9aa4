//! Atomic file replacement with one rule for what may be replaced.
//!
//! The rule: a writer replaces a *regular file* or creates a new one. It
//! refuses a path that is a symbolic link (whatever it points to: writing
//! through it would change a file elsewhere, replacing it would silently
//! drop the link), a folder, a FIFO, a socket or a device (`/dev/null`
//! included). Folders above the file may be links; only the last component
//! is checked.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Checks that `path` may be replaced by a writer (see the module docs):
/// absent, or a regular file that is not a symbolic link.
pub fn check_target(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot write `{}`: {e}", path.display()))),
    };
    let ty = meta.file_type();
    if ty.is_file() {
        return Ok(());
    }
    let what = if ty.is_symlink() {
        "a symbolic link; flow does not write through links (remove it, or name the file it points to)"
    } else if ty.is_dir() {
        "a folder"
    } else {
        special_kind(&ty)
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("refusing to write `{}`: it is {what}", path.display()),
    ))
}

#[cfg(unix)]
fn special_kind(ty: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ty.is_fifo() {
        "a FIFO (named pipe), not a regular file"
    } else if ty.is_socket() {
        "a socket, not a regular file"
    } else if ty.is_char_device() || ty.is_block_device() {
        "a device, not a regular file"
    } else {
        "not a regular file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &fs::FileType) -> &'static str {
    "not a regular file"
}

/// Writes `bytes` to `path` atomically: a new temporary file in the same
/// folder (created exclusively, so nothing planted there is followed) is
/// filled, flushed to disk and renamed over `path`, so readers see the old
/// file or the new one, never a part. Missing parent folders are created.
/// `path` must pass [`check_target`]. On failure the temporary file is
/// removed and `path` is untouched. New files get the usual mode (0666 less
/// the umask), like any file a program creates.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot write to `{}`: the path does not name a file", path.display()),
        ));
    };
    check_target(path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create folder `{}`: {e}", dir.display())))?;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file: File| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write `{}`: {e}", tmp.display())))
        // Checked again just before the rename: something may have appeared.
        .and_then(|()| check_target(path))
        .and_then(|()| {
            fs::rename(&tmp, path)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot write `{}`: {e}", path.display())))
        });
    match result {
        Ok(()) => {
            sync_folder(dir);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Makes a rename durable (best effort: not every file system allows it).
fn sync_folder(dir: &Path) {
    #[cfg(unix)]
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn creates_parents_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(entries(&dir.path().join("a/b")), ["out.txt"]);
    }

    #[test]
    fn folders_and_nameless_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert!(err.to_string().contains("does not name a file"), "{err}");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let err = write_atomic(&dir.path().join("sub"), b"x").unwrap_err();
        assert!(err.to_string().contains("it is a folder"), "{err}");
        assert_eq!(entries(dir.path()), ["sub"]);
    }

    #[cfg(unix)]
    #[test]
    fn links_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.txt");
        fs::write(&target, "keep").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_atomic(&link, b"x").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        // A dangling link is refused too.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(write_atomic(&dangling, b"x").is_err());
        assert!(!dir.path().join("nowhere").exists());
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = write_atomic(&fifo, b"x").unwrap_err();
            assert!(err.to_string().contains("FIFO"), "{err}");
        }
        let err = check_target(Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("device"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn new_files_get_the_ordinary_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomic(&path, b"x").unwrap();
        let plain = dir.path().join("plain.bin");
        fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&plain));
    }
}
