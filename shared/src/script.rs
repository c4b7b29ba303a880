//! The JavaScript sandbox's compile check, shared by validation (coordinator)
//! and execution (worker).
//!
//! A script is the body of a function of one argument, `ctx`, in strict mode.
//! It is wrapped as the default export of a module and compiled with
//! QuickJS's compile-only flag, so validating a script runs none of it — not
//! even text that closes the function early and adds code around it. (QuickJS's
//! `Function` constructor would not do: it builds source text and evaluates
//! it.) At run time that same module is evaluated inside the sandbox.
//!
//! The sandbox: an rquickjs runtime with the ECMAScript built-ins only — no
//! `std`/`os` modules, no `require`, no `fetch`, no filesystem, network or
//! host objects — with a memory limit, a stack limit and an interrupt handler
//! that stops the script at its deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::{Context, Ctx, Function, Module, Runtime};
use std::sync::atomic::AtomicUsize;

/// Memory a compile check may use.
const CHECK_MEMORY_LIMIT: usize = 16 * 1024 * 1024;
const STACK_LIMIT: usize = 512 * 1024;

/// Limits one script execution runs under.
#[derive(Clone, Debug)]
pub struct Limits {
    pub memory_bytes: usize,
    pub deadline: Instant,
    /// Set to stop the script early (run cancelled or timed out above).
    pub cancel: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScriptError {
    #[error("script does not compile: {0}")]
    Compile(String),
    #[error("script threw: {0}")]
    Thrown(String),
    #[error("script ran out of memory")]
    OutOfMemory,
    #[error("script interrupted at its deadline")]
    Interrupted,
    #[error("script result is not JSON: {0}")]
    BadResult(String),
    #[error("script runtime could not start: {0}")]
    Runtime(String),
}

fn new_runtime(
    memory: usize,
    deadline: Instant,
    cancel: Arc<AtomicBool>,
    polls: Arc<AtomicUsize>,
) -> Result<Runtime, ScriptError> {
    let rt = Runtime::new().map_err(|e| ScriptError::Runtime(e.to_string()))?;
    rt.set_memory_limit(memory);
    rt.set_max_stack_size(STACK_LIMIT);
    rt.set_interrupt_handler(Some(Box::new(move || {
        polls.fetch_add(1, Ordering::Relaxed);
        cancel.load(Ordering::Relaxed) || Instant::now() >= deadline
    })));
    Ok(rt)
}

fn wrap(code: &str) -> String {
    format!("export default function (ctx) {{\n{code}\n}}\n")
}

fn exception_text(ctx: &Ctx<'_>, err: rquickjs::Error) -> String {
    if let rquickjs::Error::Exception = err {
        let caught = ctx.catch();
        if let Some(ex) = caught.as_exception() {
            let name: Option<String> = ex.get("name").ok();
            let message = ex.message().unwrap_or_default();
            return match name {
                Some(n) if !n.is_empty() => format!("{n}: {message}"),
                _ => message,
            };
        }
        if caught.is_null() || caught.is_undefined() {
            return NULL_EXCEPTION.into();
        }
        if let Ok(s) = caught.get::<rquickjs::Coerced<String>>() {
            return s.0;
        }
        return "unknown exception".into();
    }
    err.to_string()
}

/// Compiles and evaluates the module, returning its function. Evaluating
/// the module only defines the function, unless the text added code around it,
/// which then runs here, inside the sandbox, like the body would.
fn instantiate<'js>(ctx: &Ctx<'js>, code: &str) -> Result<Function<'js>, rquickjs::Error> {
    let declared = Module::declare(ctx.clone(), "script", wrap(code))?;
    let (module, promise) = declared.eval()?;
    promise.finish::<()>()?;
    module.get("default")
}

/// Checks that `code` compiles as a function body. Runs none of it.
pub fn check(code: &str) -> Result<(), String> {
    check_counting(code).0
}

/// [`check`], and how often the interrupt handler was polled (only running
/// code polls it: tests use it to show that nothing ran).
fn check_counting(code: &str) -> (Result<(), String>, usize) {
    let polls = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(2);
    let result = (|| {
        let rt = new_runtime(
            CHECK_MEMORY_LIMIT,
            deadline,
            Arc::new(AtomicBool::new(false)),
            polls.clone(),
        )
        .map_err(|e| e.to_string())?;
        let context = Context::full(&rt).map_err(|e| e.to_string())?;
        context.with(|ctx| {
            Module::declare(ctx.clone(), "script", wrap(code))
                .map(|_| ())
                .map_err(|e| exception_text(&ctx, e))
        })
    })();
    (result, polls.load(Ordering::Relaxed))
}

/// What QuickJS leaves as the exception when it cannot even allocate the
/// out-of-memory error. A script that itself throws `null` is reported as out
/// of memory too: a rare case, and one that is still a clean failure.
const NULL_EXCEPTION: &str = "null";

/// Runs `code` with `ctx_json` as its argument and returns its result as JSON
/// text (`null` for `undefined`). Blocking: call it off the async threads.
pub fn run(code: &str, ctx_json: &str, limits: &Limits) -> Result<String, ScriptError> {
    let rt = new_runtime(
        limits.memory_bytes,
        limits.deadline,
        limits.cancel.clone(),
        Arc::new(AtomicUsize::new(0)),
    )?;
    let context = Context::full(&rt).map_err(|e| ScriptError::Runtime(e.to_string()))?;
    let interrupted = || limits.cancel.load(Ordering::Relaxed) || Instant::now() >= limits.deadline;
    let result = context.with(|ctx| {
        let func = match instantiate(&ctx, code) {
            Ok(f) => f,
            Err(e @ rquickjs::Error::Exception) => {
                let text = exception_text(&ctx, e);
                if interrupted() {
                    return Err(ScriptError::Interrupted);
                }
                return Err(if text.starts_with("SyntaxError") {
                    ScriptError::Compile(text)
                } else {
                    ScriptError::Thrown(text)
                });
            }
            Err(e) => return Err(ScriptError::Runtime(e.to_string())),
        };
        let arg = ctx
            .json_parse(ctx_json)
            .map_err(|e| ScriptError::Runtime(exception_text(&ctx, e)))?;
        let value: rquickjs::Value = match func.call((arg,)) {
            Ok(v) => v,
            Err(e) => {
                let text = exception_text(&ctx, e);
                if interrupted() || text.contains("interrupted") {
                    return Err(ScriptError::Interrupted);
                }
                if text.contains("out of memory") || text == NULL_EXCEPTION {
                    return Err(ScriptError::OutOfMemory);
                }
                return Err(ScriptError::Thrown(text));
            }
        };
        match ctx.json_stringify(value) {
            Ok(Some(s)) => s
                .to_string()
                .map_err(|e| ScriptError::BadResult(e.to_string())),
            Ok(None) => Ok("null".to_string()),
            Err(e) => {
                let text = exception_text(&ctx, e);
                if text.contains("out of memory") {
                    Err(ScriptError::OutOfMemory)
                } else {
                    Err(ScriptError::BadResult(text))
                }
            }
        }
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ms: u64) -> Limits {
        Limits {
            memory_bytes: 8 * 1024 * 1024,
            deadline: Instant::now() + Duration::from_millis(ms),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn runs_a_function_body_over_ctx() {
        let out = run(
            "return {sum: ctx.input.a + ctx.input.b}",
            r#"{"input":{"a":1,"b":2}}"#,
            &limits(1000),
        );
        assert_eq!(out.unwrap(), r#"{"sum":3}"#);
    }

    #[test]
    fn compile_check_runs_nothing() {
        assert!(check("return 1").is_ok());
        assert!(check("return (").is_err());
        // Neither the body nor text that closes the function early and adds
        // code around it is run by the check: no interrupt poll happens.
        for code in [
            "while(true){}",
            "} while(true){} function f(){",
            "} for(;;){} {",
        ] {
            let (result, polls) = check_counting(code);
            assert!(result.is_ok(), "{code}: {result:?}");
            assert_eq!(polls, 0, "{code} ran during the check");
        }
        let (_, polls) = check_counting("}); while(true){} (function(){");
        assert_eq!(polls, 0);
    }

    #[test]
    fn code_added_around_the_function_still_runs_in_the_sandbox() {
        let err = run("} while(true){} function f(){", "{}", &limits(100)).unwrap_err();
        assert_eq!(err, ScriptError::Interrupted);
    }

    #[test]
    fn endless_loop_stops_at_deadline() {
        let start = Instant::now();
        let err = run("while(true){}", "{}", &limits(100)).unwrap_err();
        assert_eq!(err, ScriptError::Interrupted);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn unbounded_allocation_fails_cleanly() {
        let err = run(
            "let a = []; while(true) { a.push('x'.repeat(1024)); }",
            "{}",
            &limits(10_000),
        )
        .unwrap_err();
        assert_eq!(err, ScriptError::OutOfMemory);
    }

    #[test]
    fn no_host_access() {
        for code in [
            "return require('fs').readFileSync('/etc/passwd')",
            "return std.loadFile('/etc/passwd')",
            "return fetch('http://127.0.0.1:1')",
            "return new XMLHttpRequest()",
            "return os.open('/etc/passwd')",
        ] {
            let err = run(code, "{}", &limits(1000)).unwrap_err();
            assert!(
                matches!(err, ScriptError::Thrown(ref m) if m.contains("ReferenceError")),
                "{code}: {err:?}"
            );
        }
    }
}
