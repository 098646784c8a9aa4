//! Where scripts are: the naming rule of script ops, the paths shown in
//! messages, and which files an `import` may reach.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::diagnostics::did_you_mean;

/// Prefix of ops that name a script of a `scripts/` folder.
pub(crate) const PREFIX: &str = "script.";
/// Extension of script files.
pub(crate) const EXTENSION: &str = "rhai";

/// Whether `name` names a script op: `script.NAME` or a path ending `.rhai`.
pub(crate) fn is_script_op(name: &str) -> bool {
    name.starts_with(PREFIX) || name.ends_with(".rhai")
}

/// The script file of op `name` for a graph in `graph_dir`, canonical.
///
/// `script.NAME` is `scripts/NAME.rhai` in the graph's folder or, failing
/// that, in the closest folder above it that has one; any other name ending
/// `.rhai` is a path relative to the graph's folder.
pub(crate) fn locate(name: &str, graph_dir: &Path, shown: &Shown) -> Result<PathBuf, String> {
    let Some(stem) = name.strip_prefix(PREFIX) else {
        let file = graph_dir.join(name);
        return canonical_file(&file).ok_or_else(|| format!("script file `{}` not found", shown.path(&file)));
    };
    if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!(
            "`{name}`: a script name is letters, digits, `_` and `-` (`script.NAME` loads \
             scripts/NAME.rhai); name other files by their path, e.g. `op: lib/x.rhai`"
        ));
    }
    let file_name = format!("{stem}.{EXTENSION}");
    let base = absolute(graph_dir);
    if let Some(file) = base.ancestors().find_map(|dir| canonical_file(&dir.join("scripts").join(&file_name))) {
        return Ok(file);
    }
    let names = available(graph_dir);
    let help = did_you_mean(name, names.iter().map(String::as_str))
        .map(|h| format!("; {h}"))
        .unwrap_or_default();
    Err(format!(
        "no `scripts/{file_name}` in the graph's folder `{}` or any folder above it{help}",
        shown.path(&base)
    ))
}

/// `script.NAME` for every `scripts/NAME.rhai` visible from `graph_dir`
/// (the closest of each name wins), sorted.
pub(crate) fn available(graph_dir: &Path) -> Vec<String> {
    let mut names = BTreeSet::new();
    for dir in absolute(graph_dir).ancestors() {
        let Ok(entries) = std::fs::read_dir(dir.join("scripts")) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_script = path.extension().is_some_and(|e| e == EXTENSION) && path.is_file();
            if let (true, Some(stem)) = (is_script, path.file_stem().and_then(|s| s.to_str())) {
                names.insert(format!("{PREFIX}{stem}"));
            }
        }
    }
    names.into_iter().collect()
}

/// The file `import` `path` names from the script file `importer`, canonical:
/// relative to the importer's folder, `.rhai` added when missing, and inside
/// `root` (the folder of the op's script) or refused.
pub(crate) fn import_target(root: &Path, importer: &Path, path: &str, shown: &Shown) -> Result<PathBuf, String> {
    let refused = || {
        format!(
            "import `{path}` refused: a script may only import modules inside its own folder `{}`",
            shown.path(root)
        )
    };
    let mut file = importer.parent().unwrap_or(root).join(path).into_os_string();
    if !path.ends_with(".rhai") {
        file.push(".rhai");
    }
    let file = normalize(Path::new(&file));
    if !file.starts_with(root) {
        return Err(refused());
    }
    let canonical = canonical_file(&file).ok_or_else(|| format!("module `{path}` not found: no file `{}`", shown.path(&file)))?;
    if !canonical.starts_with(root) {
        return Err(refused());
    }
    Ok(canonical)
}

/// Shows paths the way the graph's folder is shown (as given on the command
/// line), so that `graphs/g.yaml` and `scripts/x.rhai` read alike.
#[derive(Clone, Debug)]
pub(crate) struct Shown {
    given: PathBuf,
    canonical: PathBuf,
}

impl Shown {
    /// Paths relative to the graph folder `graph_dir` as given.
    pub(crate) fn new(graph_dir: &Path) -> Shown {
        Shown { given: graph_dir.to_path_buf(), canonical: absolute(graph_dir) }
    }

    /// `path` (absolute) shown relative to the graph's folder as given, or
    /// as is when they share nothing but the root.
    pub(crate) fn path(&self, path: &Path) -> String {
        let base: Vec<Component> = self.canonical.components().collect();
        let target: Vec<Component> = path.components().collect();
        let common = base.iter().zip(&target).take_while(|(a, b)| a == b).count();
        if common <= 1 {
            return path.display().to_string();
        }
        let mut rel = PathBuf::new();
        for _ in common..base.len() {
            rel.push("..");
        }
        rel.extend(&target[common..]);
        let shown = normalize(&self.given.join(rel));
        if shown.as_os_str().is_empty() {
            ".".to_string()
        } else {
            shown.display().to_string()
        }
    }

    /// A script file given by its canonical path as a rhai source string
    /// (how errors name it), shown.
    pub(crate) fn source(&self, source: &str) -> String {
        self.path(Path::new(source))
    }
}

/// `path` if it is an existing file, canonical.
fn canonical_file(path: &Path) -> Option<PathBuf> {
    path.canonicalize().ok().filter(|p| p.is_file())
}

/// `dir` canonical, else absolute and normalised.
fn absolute(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| {
        let cwd = std::env::current_dir().unwrap_or_default();
        normalize(&cwd.join(dir))
    })
}

/// `path` with `.` dropped and `name/..` folded, without touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            Component::ParentDir if matches!(out.last(), Some(Component::RootDir | Component::Prefix(_))) => {}
            c => out.push(c),
        }
    }
    out.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_paths_like_the_graph_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("graphs")).unwrap();
        let shown = Shown::new(&root.join("graphs"));
        assert_eq!(shown.path(&root.join("scripts/x.rhai")), format!("{}", root.join("scripts/x.rhai").display()));
        let cwd_like = Shown { given: PathBuf::from("graphs"), canonical: root.join("graphs") };
        assert_eq!(cwd_like.path(&root.join("scripts/x.rhai")), "scripts/x.rhai");
        assert_eq!(cwd_like.path(&root.join("graphs/s/x.rhai")), "graphs/s/x.rhai");
        let dot = Shown { given: PathBuf::from("."), canonical: root.clone() };
        assert_eq!(dot.path(&root.join("scripts/x.rhai")), "scripts/x.rhai");
        assert_eq!(dot.path(&root), ".");
    }

    #[test]
    fn finds_the_closest_scripts_folder_and_refuses_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for f in ["scripts/a.rhai", "scripts/b.rhai", "graphs/sub/scripts/a.rhai"] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), "").unwrap();
        }
        let sub = root.join("graphs/sub");
        let shown = Shown::new(&sub);
        assert_eq!(locate("script.a", &sub, &shown).unwrap(), root.join("graphs/sub/scripts/a.rhai"));
        assert_eq!(locate("script.b", &sub, &shown).unwrap(), root.join("scripts/b.rhai"));
        assert_eq!(locate("../../scripts/a.rhai", &sub, &shown).unwrap(), root.join("scripts/a.rhai"));
        let names = available(&sub);
        assert!(names.contains(&"script.a".to_string()) && names.contains(&"script.b".to_string()), "{names:?}");
        let err = locate("script.bb", &sub, &shown).unwrap_err();
        assert!(err.contains("did you mean `script.b`?"), "{err}");
        assert!(locate("script.../x", &sub, &shown).unwrap_err().contains("letters, digits"));
        assert!(locate("nope.rhai", &sub, &shown).unwrap_err().contains("not found"));
    }

    #[test]
    fn imports_stay_inside_the_script_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("scripts/lib")).unwrap();
        std::fs::write(root.join("scripts/lib/u.rhai"), "").unwrap();
        std::fs::write(root.join("outside.rhai"), "").unwrap();
        let scripts = root.join("scripts");
        let main = scripts.join("m.rhai");
        let shown = Shown::new(&root);
        assert_eq!(import_target(&scripts, &main, "lib/u", &shown).unwrap(), scripts.join("lib/u.rhai"));
        assert_eq!(import_target(&scripts, &main, "lib/u.rhai", &shown).unwrap(), scripts.join("lib/u.rhai"));
        let err = import_target(&scripts, &main, "../outside", &shown).unwrap_err();
        assert!(err.contains("refused") && err.contains("scripts`"), "{err}");
        assert!(import_target(&scripts, &main, "/etc/passwd", &shown).unwrap_err().contains("refused"));
        assert!(import_target(&scripts, &main, "lib/none", &shown).unwrap_err().contains("not found"));
    }
}
