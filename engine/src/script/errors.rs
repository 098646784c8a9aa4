//! Script errors as `path:line:col: message`, with the path shown relative
//! to the graph's folder and the rhai call chain unwrapped.

use std::time::Duration;

use rhai::{EvalAltResult, ParseError, Position};

use super::paths::Shown;
use super::sandbox::{Stop, MAX_ARRAY_SIZE, MAX_CALL_LEVELS, MAX_MAP_SIZE, MAX_OPERATIONS, MAX_STRING_SIZE, TIMEOUT_ENV};

/// `shown:line:col: message`, or `shown: message` without a position.
pub(crate) fn at(shown: &str, pos: Position, message: &str) -> String {
    match (pos.line(), pos.position()) {
        (Some(line), Some(col)) => format!("{shown}:{line}:{col}: {message}"),
        (Some(line), None) => format!("{shown}:{line}: {message}"),
        _ => format!("{shown}: {message}"),
    }
}

/// A syntax error of the file `shown`.
pub(crate) fn parse(shown: &str, err: &ParseError) -> String {
    at(shown, err.position(), &err.err_type().to_string())
}

/// How a call ended when it did not return.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The run was cancelled while the script ran.
    Interrupted,
    /// Anything else, as a located message.
    Error(String),
}

/// Turns a rhai error of a call of the script function `entry` into a
/// located message. `main` is the op's script file (as rhai names it: its
/// canonical path), where errors without a source of their own happened;
/// `timeout` is the call's deadline.
pub(crate) fn eval(err: Box<EvalAltResult>, entry: &str, main: &str, shown: &Shown, timeout: Duration) -> Failure {
    let mut file = main.to_string();
    let mut located = (file.clone(), Position::NONE);
    let mut calls = vec![format!("`{entry}`")];
    let mut err = err;
    loop {
        match *err {
            EvalAltResult::ErrorInFunctionCall(name, source, inner, pos) => {
                if !pos.is_none() {
                    located = (file.clone(), pos);
                }
                if !source.is_empty() {
                    file = source;
                }
                calls.push(format!("`{name}`"));
                err = inner;
            }
            EvalAltResult::ErrorInModule(module, inner, pos) => {
                if !pos.is_none() {
                    located = (file.clone(), pos);
                }
                calls.push(format!("module `{}`", shown.source(&module)));
                file = module;
                err = inner;
            }
            _ => break,
        }
    }
    let pos = err.take_position();
    if !pos.is_none() {
        located = (file, pos);
    }
    let message = match describe(*err, timeout) {
        Some(m) => m,
        None => return Failure::Interrupted,
    };
    let message = if calls.len() > 1 {
        calls.reverse();
        format!("{message} (in {})", calls.join(", called from "))
    } else {
        message
    };
    Failure::Error(at(&shown.source(&located.0), located.1, &message))
}

/// The message of one error, position removed; `None` for a cancellation.
fn describe(err: EvalAltResult, timeout: Duration) -> Option<String> {
    Some(match err {
        EvalAltResult::ErrorRuntime(value, _) => match value.into_immutable_string() {
            Ok(s) if !s.is_empty() => s.to_string(),
            Ok(_) => "runtime error".to_string(),
            Err(kind) => format!("runtime error (a value of type {kind} was thrown)"),
        },
        EvalAltResult::ErrorTerminated(token, _) => match token.try_cast::<Stop>() {
            Some(Stop::Cancelled) => return None,
            _ => format!(
                "timed out after {}s (set {TIMEOUT_ENV} to the number of seconds a script may run)",
                timeout.as_secs_f64()
            ),
        },
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("too many operations: stopped after {MAX_OPERATIONS} (an endless loop?)")
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            format!("stack overflow: more than {MAX_CALL_LEVELS} nested function calls (endless recursion?)")
        }
        EvalAltResult::ErrorDataTooLarge(what, _) => format!(
            "{what} too large: scripts are limited to strings of {MAX_STRING_SIZE} bytes, arrays of \
             {MAX_ARRAY_SIZE} elements and maps of {MAX_MAP_SIZE} entries"
        ),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwraps_calls_to_the_innermost_location() {
        let shown = Shown::new(std::path::Path::new("/"));
        let inner = EvalAltResult::ErrorRuntime("boom".into(), Position::new(7, 3));
        let err = EvalAltResult::ErrorInFunctionCall(
            "run".into(),
            String::new(),
            EvalAltResult::ErrorInFunctionCall("helper".into(), "/s/lib.rhai".into(), inner.into(), Position::new(4, 9)).into(),
            Position::NONE,
        );
        match eval(err.into(), "ports", "/s/main.rhai", &shown, Duration::from_secs(1)) {
            Failure::Error(m) => assert_eq!(m, "/s/lib.rhai:7:3: boom (in `helper`, called from `run`, called from `ports`)"),
            f => panic!("{f:?}"),
        }
        let stopped = EvalAltResult::ErrorTerminated(rhai::Dynamic::from(Stop::Cancelled), Position::NONE);
        assert!(matches!(eval(stopped.into(), "run", "/s/main.rhai", &shown, Duration::from_secs(1)), Failure::Interrupted));
        let ops = EvalAltResult::ErrorTooManyOperations(Position::NONE);
        match eval(ops.into(), "run", "/s/main.rhai", &shown, Duration::from_secs(1)) {
            Failure::Error(m) => assert!(m.starts_with("/s/main.rhai: too many operations"), "{m}"),
            f => panic!("{f:?}"),
        }
    }
}
