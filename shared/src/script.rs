//! The JavaScript sandbox's compile check, shared by validation (coordinator)
//! and execution (worker).
//!
//! A script is the body of a function of one argument, `ctx`. It is compiled
//! with the `Function` constructor, which parses the text strictly as a
//! function body: nothing in it runs at compile time, and text cannot close the
//! function and run code outside it.
//!
//! The sandbox: an rquickjs runtime with the ECMAScript built-ins only — no
//! `std`/`os` modules, no `require`, no `fetch`, no filesystem, network or
//! host objects — with a memory limit, a stack limit and an interrupt handler
//! that stops the script at its deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::{Context, Ctx, Function, Runtime};

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
) -> Result<Runtime, ScriptError> {
    let rt = Runtime::new().map_err(|e| ScriptError::Runtime(e.to_string()))?;
    rt.set_memory_limit(memory);
    rt.set_max_stack_size(STACK_LIMIT);
    rt.set_interrupt_handler(Some(Box::new(move || {
        cancel.load(Ordering::Relaxed) || Instant::now() >= deadline
    })));
    Ok(rt)
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

fn compile<'js>(ctx: &Ctx<'js>, code: &str) -> Result<Function<'js>, String> {
    let ctor: Function = ctx.globals().get("Function").map_err(|e| e.to_string())?;
    ctor.call(("ctx", code)).map_err(|e| exception_text(ctx, e))
}

/// Checks that `code` compiles as a function body. Runs none of it.
pub fn check(code: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let rt = new_runtime(
        CHECK_MEMORY_LIMIT,
        deadline,
        Arc::new(AtomicBool::new(false)),
    )
    .map_err(|e| e.to_string())?;
    let context = Context::full(&rt).map_err(|e| e.to_string())?;
    context.with(|ctx| compile(&ctx, code).map(|_| ()))
}

/// What QuickJS leaves as the exception when it cannot even allocate the
/// out-of-memory error. A script that itself throws `null` is reported as out
/// of memory too: a rare case, and one that is still a clean failure.
const NULL_EXCEPTION: &str = "null";

/// Runs `code` with `ctx_json` as its argument and returns its result as JSON
/// text (`null` for `undefined`). Blocking: call it off the async threads.
pub fn run(code: &str, ctx_json: &str, limits: &Limits) -> Result<String, ScriptError> {
    let rt = new_runtime(limits.memory_bytes, limits.deadline, limits.cancel.clone())?;
    let context = Context::full(&rt).map_err(|e| ScriptError::Runtime(e.to_string()))?;
    let interrupted = || limits.cancel.load(Ordering::Relaxed) || Instant::now() >= limits.deadline;
    let result = context.with(|ctx| {
        let func = compile(&ctx, code).map_err(ScriptError::Compile)?;
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
    fn compile_check_runs_nothing_and_cannot_be_escaped() {
        assert!(check("return 1").is_ok());
        assert!(check("return (").is_err());
        // Text that tries to close the function body is a syntax error.
        assert!(check("}); while(true){} (function(){").is_err());
        // An endless loop in the body is not run by the check.
        assert!(check("while(true){}").is_ok());
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
