//! The modules a script imports: found and compiled when the script loads,
//! served from memory when it runs. The running script never touches the
//! disk: an `import` it did not declare as a string literal at load time
//! does not resolve.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rhai::{Engine, EvalAltResult, Expr, GlobalRuntimeState, Module, ModuleResolver, Position, Scope, Shared, Stmt, AST};

/// One `import "path"` statement of a script file.
pub(crate) struct Import {
    /// The path as written, or `None` when it is not a string literal.
    pub(crate) path: Option<String>,
    /// Where the statement is.
    pub(crate) pos: Position,
}

/// Every `import` of `ast`, top level and inside functions, in source order.
pub(crate) fn imports_of(ast: &AST) -> Vec<Import> {
    let mut found = Vec::new();
    ast.walk(&mut |path| {
        if let Some(rhai::ASTNode::Stmt(Stmt::Import(x, pos))) = path.last() {
            let path = match &x.0 {
                Expr::StringConstant(s, _) => Some(s.to_string()),
                _ => None,
            };
            found.push(Import { path, pos: *pos });
        }
        true
    });
    found.sort_by_key(|i| (i.pos.line(), i.pos.position()));
    found
}

/// The compiled modules of one script and which import leads to which.
#[derive(Default)]
pub(crate) struct ModuleSet {
    /// The op's script file: the importer when rhai names no source.
    pub(crate) main: PathBuf,
    /// (importing file, path as written) -> imported file.
    pub(crate) links: HashMap<(PathBuf, String), PathBuf>,
    /// File -> its compiled code (source set to the file's path): every
    /// imported module, and the script itself (a module may import it).
    pub(crate) asts: HashMap<PathBuf, AST>,
}

impl ModuleSet {
    fn module(
        &self,
        engine: &Engine,
        global: &mut GlobalRuntimeState,
        importer: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let importer = importer.map_or_else(|| self.main.clone(), PathBuf::from);
        let file = self.links.get(&(importer, path.to_string())).ok_or_else(|| {
            EvalAltResult::ErrorModuleNotFound(format!("{path} (import paths must be string literals)"), pos)
        })?;
        let ast = self.asts.get(file).ok_or_else(|| EvalAltResult::ErrorModuleNotFound(path.to_string(), pos))?;
        Module::eval_ast_as_new_raw(engine, &mut Scope::new(), global, ast)
            .map(Shared::new)
            .map_err(|e| EvalAltResult::ErrorInModule(file.display().to_string(), e, pos).into())
    }
}

/// [`ModuleSet`] as rhai's module resolver.
pub(crate) struct Resolver(pub(crate) Arc<ModuleSet>);

impl ModuleResolver for Resolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let mut global = engine.new_global_runtime_state();
        self.0.module(engine, &mut global, source, path, pos)
    }

    fn resolve_raw(
        &self,
        engine: &Engine,
        global: &mut GlobalRuntimeState,
        _scope: &mut Scope,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let source = global.source().map(str::to_string);
        self.0.module(engine, global, source.as_deref(), path, pos)
    }
}
