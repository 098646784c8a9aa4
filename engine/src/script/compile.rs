//! Loading a script: parse it and every module it imports, check its
//! functions, read its port declarations, and hash what it is made of.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use rhai::{Dynamic, Position, Scope, AST};

use super::errors::{self, Failure};
use super::modules::{imports_of, ModuleSet, Resolver};
use super::paths::{import_target, Shown};
use super::ports::{self, Ports};
use super::sandbox::{self, Watch, MAX_MODULES};
use super::worker;

/// A loaded script, shared by every node that uses it until its file or a
/// module it imports changes.
pub(crate) struct Compiled {
    /// The script file, canonical.
    pub(crate) file: PathBuf,
    /// The optimised code that runs.
    pub(crate) ast: AST,
    /// The modules it imports.
    pub(crate) modules: Arc<ModuleSet>,
    /// Its declared ports.
    pub(crate) ports: Ports,
    /// The script file then each module, with the hash of the content read.
    pub(crate) files: Vec<(PathBuf, blake3::Hash)>,
    /// Hash of the script and its modules: changes whenever one of them does.
    pub(crate) fingerprint: String,
}

impl Compiled {
    /// Whether the script, whose content now hashes `main_hash`, and the
    /// modules it imports still hash as they did when it was loaded.
    pub(crate) fn is_current(&self, main_hash: &blake3::Hash) -> bool {
        let mut files = self.files.iter();
        files.next().is_some_and(|(_, h)| h == main_hash)
            && files.all(|(path, h)| read_script(path).is_ok_and(|b| blake3::hash(&b) == *h))
    }
}

/// Scripts and modules are at most this large (like graph files).
pub const MAX_SCRIPT_BYTES: u64 = 16 << 20;

fn read_script(file: &Path) -> std::io::Result<Vec<u8>> {
    crate::files::read_bounded(file, MAX_SCRIPT_BYTES, "script")
}

/// The source text of `file` and its hash.
pub(crate) fn read(file: &Path, shown: &Shown) -> Result<(String, blake3::Hash), String> {
    let bytes = read_script(file).map_err(|e| format!("cannot read `{}`: {e}", shown.path(file)))?;
    let hash = blake3::hash(&bytes);
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("`{}` is not UTF-8 text (invalid byte at offset {})", shown.path(file), e.utf8_error().valid_up_to()))?;
    Ok((text, hash))
}

/// Parses `text` as the file `file` (unoptimised; source set to the path).
fn parse(file: &Path, text: &str, shown: &Shown) -> Result<AST, String> {
    let mut ast = sandbox::compiler().compile(text).map_err(|e| errors::parse(&shown.path(file), &e))?;
    ast.set_source(file.display().to_string());
    Ok(ast)
}

/// Loads the script `file` whose content is `text` (hashing `hash`).
pub(crate) fn compile(file: &Path, text: &str, hash: blake3::Hash, shown: &Shown, timeout: Duration) -> Result<Compiled, String> {
    let main = parse(file, text, shown)?;
    let located = |pos: Position, msg: &str| errors::at(&shown.path(file), pos, msg);
    check_functions(&main).map_err(|m| located(Position::new(1, 1), &m))?;
    let (modules, mut files) = load_modules(file, &main, shown)?;
    files.insert(0, (file.to_path_buf(), hash));

    let ast = sandbox::optimize(&main);
    let modules = Arc::new(modules);
    let ports = declared_ports(file, &ast, main, &modules, shown, timeout)?;

    let root = file.parent().unwrap_or(file);
    let mut fingerprint = blake3::Hasher::new();
    for (path, hash) in &files {
        let rel = path.strip_prefix(root).unwrap_or(path);
        fingerprint.update(rel.to_string_lossy().as_bytes());
        fingerprint.update(&[0]);
        fingerprint.update(hash.as_bytes());
    }
    Ok(Compiled {
        file: file.to_path_buf(),
        ast,
        modules,
        ports,
        files,
        fingerprint: fingerprint.finalize().to_hex().to_string(),
    })
}

/// What `ports()` of the script `file` declares; `run_ast` is its optimised
/// code and `main` the unoptimised one, which locates declaration errors.
fn declared_ports(
    file: &Path,
    run_ast: &AST,
    main: AST,
    modules: &Arc<ModuleSet>,
    shown: &Shown,
    timeout: Duration,
) -> Result<Ports, String> {
    let (script, run_ast, modules, owned) = (file.to_path_buf(), run_ast.clone(), Resolver(Arc::clone(modules)), shown.clone());
    let declare = move || {
        let at = |pos: Position, msg: &str| errors::at(&owned.path(&script), pos, msg);
        let engine = sandbox::runner(modules, Watch::start(timeout, None), &Device::Cpu);
        let declared = engine.call_fn::<Dynamic>(&mut Scope::new(), &run_ast, "ports", ()).map_err(|e| {
            match errors::eval(e, "ports", &script.display().to_string(), &owned, timeout) {
                Failure::Error(m) => m,
                Failure::Interrupted => at(Position::NONE, "interrupted"),
            }
        })?;
        ports::parse(declared, &main).map_err(|(pos, m)| at(pos, &format!("in `ports()`: {m}")))
    };
    worker::run(declare).map_err(|e| errors::at(&shown.path(file), Position::NONE, &e))?
}

/// `fn run(i)` and `fn ports()` must be there.
fn check_functions(ast: &AST) -> Result<(), String> {
    let arity = |name: &str| ast.iter_functions().filter(|f| f.name == name).map(|f| f.params.len()).collect::<Vec<_>>();
    let (run, ports) = (arity("run"), arity("ports"));
    if run.is_empty() {
        return Err("the script has no `fn run(i)` (it receives a map of the inputs and returns a map of the outputs)".into());
    }
    if !run.contains(&1) {
        return Err("`fn run` should take one parameter: the map of the inputs".into());
    }
    if !ports.contains(&0) {
        return Err(
            "the script has no `fn ports()` (it returns #{ inputs: #{ name: \"type\", ... }, outputs: #{ ... }, doc: \"...\" })"
                .into(),
        );
    }
    Ok(())
}

/// Every module `main` (the script `file`) imports, transitively, compiled,
/// with each module file and its hash (sorted by path).
fn load_modules(file: &Path, main: &AST, shown: &Shown) -> Result<(ModuleSet, Vec<(PathBuf, blake3::Hash)>), String> {
    let root = file.parent().unwrap_or(file).to_path_buf();
    let mut set = ModuleSet { main: file.to_path_buf(), ..ModuleSet::default() };
    set.asts.insert(file.to_path_buf(), sandbox::optimize(main));
    let mut hashes = HashMap::new();
    let mut pending = vec![(file.to_path_buf(), main.clone())];
    while let Some((importer, ast)) = pending.pop() {
        for import in imports_of(&ast) {
            let at = |msg: &str| errors::at(&shown.path(&importer), import.pos, msg);
            let Some(path) = import.path else {
                return Err(at("import paths must be string literals (flow tracks the modules a script uses)"));
            };
            let target = import_target(&root, &importer, &path, shown).map_err(|m| at(&m))?;
            set.links.insert((importer.clone(), path), target.clone());
            if set.asts.contains_key(&target) {
                continue;
            }
            if hashes.len() == MAX_MODULES {
                return Err(at(&format!("a script may import at most {MAX_MODULES} modules")));
            }
            let (text, hash) = read(&target, shown)?;
            let module = parse(&target, &text, shown)?;
            hashes.insert(target.clone(), hash);
            set.asts.insert(target.clone(), sandbox::optimize(&module));
            pending.push((target, module));
        }
    }
    let mut files: Vec<_> = hashes.into_iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((set, files))
}
