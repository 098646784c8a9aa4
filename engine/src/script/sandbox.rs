//! The sandbox scripts run in: the rhai engines, their limits, the wall-clock
//! deadline and cancellation, and where `print` goes.
//!
//! rhai's core has no file, network or process access; only its standard
//! package is registered (no `sleep`: it is replaced by an error), plus the
//! tensor API. `eval` is a disabled keyword, `import` goes through
//! the script's module set, which only serves modules from the script's
//! own folder.
//!
//! Each call gets its own [`Engine`]: `Engine::new_raw` is a constant and the
//! packages are shared modules built once, so a per-call engine costs a few
//! small allocations (see `benches/scripts.rs`). That lets the call's
//! deadline, cancellation token and message sink live in plain owned
//! closures, with nothing shared between concurrent calls. Calls run on the
//! pooled script threads (`worker.rs`), which have large stacks.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use candle_core::Device;
use rhai::packages::{Package, StandardPackage};
use rhai::{Dynamic, Engine, EvalAltResult, Module, OptimizationLevel, Position, Shared, Token, FLOAT, INT};

use super::modules::Resolver;
use crate::context::OpContext;

/// Operations a single call may run (a rhai operation is roughly a statement
/// or an expression step: a few seconds of pure script work).
pub const MAX_OPERATIONS: u64 = 100_000_000;
/// Nested function calls.
pub const MAX_CALL_LEVELS: usize = 64;
/// Nesting of expressions at the top level and inside functions.
pub const MAX_EXPR_DEPTHS: (usize, usize) = (64, 32);
/// Bytes in one string.
pub const MAX_STRING_SIZE: usize = 16 << 20;
/// Elements in arrays (nested arrays count together).
pub const MAX_ARRAY_SIZE: usize = 1_000_000;
/// Entries in object maps (nested maps count together).
pub const MAX_MAP_SIZE: usize = 100_000;
/// Modules a script may import, transitively.
pub const MAX_MODULES: usize = 64;
/// Elements of a tensor a script may create (1 GiB of f32).
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 28;
/// Wall-clock limit of one call unless `FLOW_SCRIPT_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Environment variable overriding the deadline, in seconds (`0.5`, `120`).
pub const TIMEOUT_ENV: &str = "FLOW_SCRIPT_TIMEOUT";

/// Operations between two looks at the clock and the cancellation flag.
const CHECK_EVERY: u64 = 1024;

/// The deadline from `FLOW_SCRIPT_TIMEOUT`, else [`DEFAULT_TIMEOUT`].
pub(crate) fn timeout_from_env() -> Result<Duration, String> {
    let Some(raw) = std::env::var_os(TIMEOUT_ENV) else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let text = raw.to_string_lossy();
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{TIMEOUT_ENV}={text}: expected a positive number of seconds"))
}

/// Why a call was stopped from outside the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The wall-clock deadline passed.
    Deadline,
    /// The run was cancelled (Ctrl-C).
    Cancelled,
}

/// What one call watches while it runs.
pub(crate) struct Watch {
    deadline: Instant,
    /// The node's context: cancellation and messages. Absent while loading.
    ctx: Option<OpContext>,
}

impl Watch {
    /// Starts the clock of a call now.
    pub(crate) fn start(timeout: Duration, ctx: Option<OpContext>) -> Arc<Watch> {
        Arc::new(Watch { deadline: Instant::now() + timeout, ctx })
    }

    fn progress(&self, ops: u64) -> Option<Dynamic> {
        if ops % CHECK_EVERY != 0 {
            return None;
        }
        if self.ctx.as_ref().is_some_and(OpContext::is_cancelled) {
            return Some(Dynamic::from(Stop::Cancelled));
        }
        (Instant::now() >= self.deadline).then(|| Dynamic::from(Stop::Deadline))
    }

    fn message(&self, text: &str) {
        if let Some(ctx) = &self.ctx {
            ctx.message(text);
        }
    }
}

/// Limits and language options shared by the compiler and the runners.
fn configure(engine: &mut Engine) {
    engine
        .set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(MAX_EXPR_DEPTHS.0, MAX_EXPR_DEPTHS.1)
        .set_max_string_size(MAX_STRING_SIZE)
        .set_max_array_size(MAX_ARRAY_SIZE)
        .set_max_map_size(MAX_MAP_SIZE)
        .set_max_modules(MAX_MODULES)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(true)
        .disable_symbol("eval");
}

/// The engine that parses scripts. Unoptimised ASTs keep map literals as
/// written, which the port declarations are located with; the run ASTs are
/// optimised afterwards with [`optimize`].
pub(crate) fn compiler() -> &'static Engine {
    static COMPILER: OnceLock<Engine> = OnceLock::new();
    COMPILER.get_or_init(|| {
        let mut engine = Engine::new_raw();
        configure(&mut engine);
        engine.set_optimization_level(OptimizationLevel::None);
        // `default` is a reserved word in rhai, but it is the natural key of a
        // port's default value (`#{ type: "int", default: 3 }`).
        #[allow(deprecated)] // rhai marks this hook volatile, not deprecated
        engine.on_parse_token(|token, _, _| match token {
            Token::Reserved(word) if word.as_str() == "default" => Token::Identifier(word),
            token => token,
        });
        engine
    })
}

/// An optimised copy of `ast` for running.
pub(crate) fn optimize(ast: &rhai::AST) -> rhai::AST {
    let mut engine = Engine::new_raw();
    configure(&mut engine);
    let source = ast.source().map(str::to_string);
    let mut out = engine.optimize_ast(&rhai::Scope::new(), ast.clone(), OptimizationLevel::Simple);
    if let Some(source) = source {
        out.set_source(source);
    }
    out
}

/// rhai's standard package, built once.
fn standard() -> Shared<Module> {
    static STANDARD: OnceLock<Shared<Module>> = OnceLock::new();
    STANDARD.get_or_init(|| StandardPackage::new().as_shared_module()).clone()
}

/// flow's additions, built once: the tensor API, and `sleep` refused (it
/// would block past the deadline, which is only checked between operations).
fn flow_package() -> Shared<Module> {
    static FLOW: OnceLock<Shared<Module>> = OnceLock::new();
    FLOW.get_or_init(|| {
        let mut module = Module::new();
        super::tensor_api::register(&mut module);
        module.set_native_fn("sleep", |_: INT| no_sleep());
        module.set_native_fn("sleep", |_: FLOAT| no_sleep());
        module.build_index();
        module.into()
    })
    .clone()
}

fn no_sleep() -> Result<(), Box<EvalAltResult>> {
    Err(EvalAltResult::ErrorRuntime("`sleep` is not available in flow scripts".into(), Position::NONE).into())
}

/// An engine for one call: the packages, the script's modules, the call's
/// deadline and context, and `device` for the tensors it creates.
pub(crate) fn runner(modules: Resolver, watch: Arc<Watch>, device: &Device) -> Engine {
    let mut engine = Engine::new_raw();
    configure(&mut engine);
    engine.register_global_module(standard());
    engine.register_global_module(flow_package());
    engine.set_module_resolver(modules);
    engine.set_default_tag(Dynamic::from(device.clone()));
    let w = Arc::clone(&watch);
    engine.on_progress(move |ops| w.progress(ops));
    let w = Arc::clone(&watch);
    engine.on_print(move |text| w.message(text));
    engine.on_debug(move |text, _, pos| match pos.line() {
        Some(line) => watch.message(&format!("[line {line}] {text}")),
        None => watch.message(text),
    });
    engine
}
