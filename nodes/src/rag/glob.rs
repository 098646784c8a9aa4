//! A small path-pattern matcher for `docs.load`: `*` matches any run of
//! characters within one path component, `?` one character, and a component
//! that is exactly `**` matches any number of folders (none included). Other
//! characters match themselves. Hidden entries (names starting with `.`) are
//! only matched by a pattern component that starts with `.` itself, and
//! symbolic links to folders are not followed, so a walk always ends.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

/// True if `path` holds a pattern character (`*` or `?`).
pub(crate) fn is_pattern(path: &str) -> bool {
    path.contains(['*', '?'])
}

/// Splits a pattern into the folder before its first pattern component and
/// the pattern components after it (`docs/**/*.md` → `docs`, `[**, *.md]`).
pub(crate) fn split_pattern(pattern: &str) -> (PathBuf, Vec<String>) {
    let parts: Vec<&str> = pattern.split(['/', std::path::MAIN_SEPARATOR]).collect();
    let first = parts.iter().position(|p| is_pattern(p)).unwrap_or(parts.len());
    let mut base: String = parts[..first].join("/");
    if base.is_empty() && pattern.starts_with('/') {
        base.push('/');
    }
    let rest = parts[first..].iter().filter(|p| !p.is_empty()).map(|p| p.to_string()).collect();
    (PathBuf::from(base), rest)
}

/// The files under `base` whose path relative to `base` matches the pattern
/// `components`, sorted.
pub(crate) fn find_files(base: &Path, components: &[String]) -> Result<BTreeSet<PathBuf>> {
    let mut found = BTreeSet::new();
    walk(base, components, &mut found)?;
    Ok(found)
}

fn walk(dir: &Path, pattern: &[String], found: &mut BTreeSet<PathBuf>) -> Result<()> {
    let Some((first, rest)) = pattern.split_first() else {
        return Ok(());
    };
    if first == "**" {
        // Zero folders, then one or more.
        walk(dir, rest, found)?;
        for sub in entries(dir)?.into_iter().filter(|e| e.is_dir && !e.hidden) {
            walk(&sub.path, pattern, found)?;
        }
        return Ok(());
    }
    for entry in entries(dir)? {
        if entry.hidden && !first.starts_with('.') || !component_matches(first, &entry.name) {
            continue;
        }
        if rest.is_empty() {
            if entry.is_file {
                found.insert(entry.path);
            }
        } else if entry.is_dir {
            walk(&entry.path, rest, found)?;
        }
    }
    Ok(())
}

struct Entry {
    path: PathBuf,
    name: String,
    hidden: bool,
    is_dir: bool,
    is_file: bool,
}

/// The entries of `dir`; folders reached through symbolic links count as
/// neither files nor folders. A missing folder has no entries.
fn entries(dir: &Path) -> Result<Vec<Entry>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow!("cannot list `{}`: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| anyhow!("cannot list `{}`: {e}", dir.display()))?;
        let file_type = entry.file_type().map_err(|e| anyhow!("cannot list `{}`: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = file_type.is_file() || file_type.is_symlink() && path.is_file();
        out.push(Entry { hidden: name.starts_with('.'), is_dir: file_type.is_dir(), is_file, path, name });
    }
    Ok(out)
}

/// Whether one path component matches one pattern component (`*`, `?`).
pub(crate) fn component_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative wildcard matching with backtracking to the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_match_stars_and_question_marks() {
        assert!(component_matches("*.md", "a.md"));
        assert!(component_matches("*.md", ".md"));
        assert!(!component_matches("*.md", "a.mdx"));
        assert!(component_matches("a?c", "abc"));
        assert!(!component_matches("a?c", "ac"));
        assert!(component_matches("*", ""));
        assert!(component_matches("*a*b*", "xxaxxbxx"));
        assert!(!component_matches("*a*b", "xxbxxa"));
        assert!(component_matches("ünï*", "ünïcode"));
        assert!(component_matches("exact", "exact"));
        assert!(!component_matches("exact", "exactly"));
    }

    #[test]
    fn patterns_split_at_their_first_wildcard() {
        let (base, rest) = split_pattern("docs/notes/**/*.md");
        assert_eq!(base, PathBuf::from("docs/notes"));
        assert_eq!(rest, ["**", "*.md"]);
        let (base, rest) = split_pattern("*.txt");
        assert_eq!(base, PathBuf::from(""));
        assert_eq!(rest, ["*.txt"]);
        let (base, rest) = split_pattern("/abs/a?/x.md");
        assert_eq!(base, PathBuf::from("/abs"));
        assert_eq!(rest, ["a?", "x.md"]);
        assert!(is_pattern("a/*.md") && is_pattern("a?") && !is_pattern("a/b.md"));
    }

    #[test]
    fn walks_find_files_at_the_right_depths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["a.md", "b.txt", "sub/c.md", "sub/deep/d.md", ".hidden/e.md", "sub/.f.md"] {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "x").unwrap();
        }
        let rel = |set: BTreeSet<PathBuf>| -> Vec<String> {
            set.iter().map(|p| p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/")).collect()
        };
        let find = |pattern: &str| {
            let (base, rest) = split_pattern(pattern);
            rel(find_files(&root.join(base), &rest).unwrap())
        };
        assert_eq!(find("*.md"), ["a.md"]);
        assert_eq!(find("**/*.md"), ["a.md", "sub/c.md", "sub/deep/d.md"]);
        assert_eq!(find("sub/**/*.md"), ["sub/c.md", "sub/deep/d.md"]);
        assert_eq!(find("**/deep/*"), ["sub/deep/d.md"]);
        assert_eq!(find("*/*.md"), ["sub/c.md"]);
        assert_eq!(find("?.txt"), ["b.txt"]);
        assert_eq!(find("**/.*.md"), ["sub/.f.md"]);
        assert_eq!(find(".hidden/*"), [".hidden/e.md"]);
        assert!(find_files(&root.join("missing"), &["*".into()]).unwrap().is_empty());
    }
}
