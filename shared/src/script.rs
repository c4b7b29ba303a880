//! The JavaScript sandbox's compile check, shared by validation (coordinator)
//! and execution (worker).
//!
//! A script is the body of a function of one argument, `ctx`, in strict mode:
//! `(function (ctx) { <code> })`. Validation compiles that expression as a
//! module's default export with QuickJS's compile-only flag, so it runs none of
//! the script (QuickJS's `Function` constructor would not do: it builds source
//! text and evaluates it); text that closes the function early lands inside the
//! parentheses and is a syntax error. At run time the same expression is
//! evaluated in a reused, locked-down context (see `LOCKDOWN`).
//!
//! The sandbox: an rquickjs runtime with the ECMAScript built-ins only — no
//! `std`/`os` modules, no `require`, no `fetch`, no filesystem, network or
//! host objects — with a memory limit, a stack limit and an interrupt handler
//! that stops the script at its deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::{Context, Ctx, Function, Module, Persistent, Runtime};
use std::collections::HashMap;
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

/// The check's form of a script: the same parenthesised function expression
/// that [`run`] evaluates, as a module's default export so it can be compiled
/// without running. Text that tries to close the function early ends up
/// inside the parentheses and is a syntax error in both.
fn wrap(code: &str) -> String {
    format!("export default (function (ctx) {{\n{code}\n}});\n")
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

/// Freezes the global object and everything reachable from it (every
/// intrinsic and its prototype), once per sandbox: a script can then change
/// nothing another script would see, so one sandbox can serve many runs.
const LOCKDOWN: &str = r#"(() => {
  const seen = new Set();
  const freeze = (o) => {
    if (o === null || (typeof o !== "object" && typeof o !== "function") || seen.has(o)) return;
    seen.add(o);
    Object.freeze(o);
    for (const k of Reflect.ownKeys(o)) {
      const d = Object.getOwnPropertyDescriptor(o, k);
      if (!d) continue;
      if ("value" in d) freeze(d.value);
      if (d.get) freeze(d.get);
      if (d.set) freeze(d.set);
    }
    freeze(Object.getPrototypeOf(o));
  };
  freeze(globalThis);
})();"#;

/// Runs between forced collections of cyclic garbage.
const GC_EVERY: u32 = 256;

/// Runs one sandbox serves before it is replaced (bounds slow leaks).
const MAX_USES: u32 = 10_000;

/// A runtime and a locked-down context, kept by one blocking thread.
/// Building a full context (every intrinsic) costs far more than running a
/// typical script, so it is done once per thread, not once per run.
struct Sandbox {
    /// Compiled scripts by source text: compiling cost more than running a
    /// typical script. A compiled function holds no state between calls —
    /// each call gets a fresh `ctx`, strict mode hides the function from its
    /// body, and the context is frozen — so reusing it leaks nothing.
    /// Emptied under the context's lock before the context goes (`Drop`).
    functions: HashMap<String, Persistent<Function<'static>>>,
    // Field order matters: the context must drop before its runtime.
    context: Context,
    rt: Runtime,
    uses: u32,
    /// Memory the locked-down sandbox holds by itself; a run's limit sits on
    /// top of it. Measured once: measuring walks every object.
    base_bytes: usize,
}

/// Compiled scripts one sandbox keeps; past that it forgets them all.
const MAX_FUNCTIONS: usize = 256;

impl Drop for Sandbox {
    fn drop(&mut self) {
        let functions = std::mem::take(&mut self.functions);
        self.context.with(|_| drop(functions));
    }
}

thread_local! {
    static SANDBOX: std::cell::RefCell<Option<Sandbox>> = const { std::cell::RefCell::new(None) };
}

fn fresh_sandbox() -> Result<Sandbox, ScriptError> {
    let fail = |e: rquickjs::Error| ScriptError::Runtime(e.to_string());
    let rt = Runtime::new().map_err(fail)?;
    rt.set_max_stack_size(STACK_LIMIT);
    let context = Context::full(&rt).map_err(fail)?;
    context.with(|ctx| {
        ctx.eval::<(), _>(LOCKDOWN)
            .map_err(|e| ScriptError::Runtime(exception_text(&ctx, e)))
    })?;
    rt.run_gc();
    let base_bytes = rt.memory_usage().malloc_size.max(0) as usize;
    Ok(Sandbox {
        functions: HashMap::new(),
        context,
        rt,
        uses: 0,
        base_bytes,
    })
}

/// Runs `code` with `ctx_json` as its argument and returns its result as JSON
/// text (`null` for `undefined`). Blocking: call it off the async threads.
///
/// Each thread reuses one sandbox (see [`LOCKDOWN`]); the memory limit is set
/// above what the sandbox already holds, the interrupt handler is this run's,
/// and a sandbox that ran out of memory or was interrupted is thrown away.
pub fn run(code: &str, ctx_json: &str, limits: &Limits) -> Result<String, ScriptError> {
    SANDBOX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|s| s.uses >= MAX_USES) {
            *slot = None;
            *slot = Some(fresh_sandbox()?);
        }
        let sb = slot.as_mut().expect("set above");
        sb.uses += 1;
        sb.rt
            .set_memory_limit(sb.base_bytes.saturating_add(limits.memory_bytes));
        let (cancel, deadline) = (limits.cancel.clone(), limits.deadline);
        sb.rt.set_interrupt_handler(Some(Box::new(move || {
            cancel.load(Ordering::Relaxed) || Instant::now() >= deadline
        })));
        let result = execute(sb, code, ctx_json, limits);
        sb.rt.set_interrupt_handler(None);
        sb.rt.set_memory_limit(usize::MAX);
        // Reference counting frees most garbage at once; cycles wait for a
        // collection now and then (a collection per run costs more than most runs).
        if sb.uses % GC_EVERY == 0 {
            sb.rt.run_gc();
        }
        if matches!(
            result,
            Err(ScriptError::OutOfMemory | ScriptError::Interrupted | ScriptError::Runtime(_))
        ) {
            *slot = None;
        }
        result
    })
}

/// Compiles a script as a function expression, evaluated in the frozen
/// context. Text that closes the function early runs here, in the sandbox,
/// like the body.
fn compile<'js>(
    ctx: &Ctx<'js>,
    code: &str,
    interrupted: impl Fn() -> bool,
) -> Result<Function<'js>, ScriptError> {
    let opts = {
        let mut o = rquickjs::context::EvalOptions::default();
        o.strict = true;
        o
    };
    let source = format!("(function (ctx) {{\n{code}\n}})");
    match ctx.eval_with_options(source, opts) {
        Ok(f) => Ok(f),
        Err(e @ rquickjs::Error::Exception) => {
            let text = exception_text(ctx, e);
            if interrupted() {
                return Err(ScriptError::Interrupted);
            }
            Err(if text.starts_with("SyntaxError") {
                ScriptError::Compile(text)
            } else {
                ScriptError::Thrown(text)
            })
        }
        Err(e) => Err(ScriptError::Runtime(e.to_string())),
    }
}

fn execute(
    sb: &mut Sandbox,
    code: &str,
    ctx_json: &str,
    limits: &Limits,
) -> Result<String, ScriptError> {
    let interrupted = || limits.cancel.load(Ordering::Relaxed) || Instant::now() >= limits.deadline;
    let functions = &mut sb.functions;
    sb.context.with(|ctx| {
        let func = match functions.get(code) {
            Some(f) => f
                .clone()
                .restore(&ctx)
                .map_err(|e| ScriptError::Runtime(e.to_string()))?,
            None => {
                let f = compile(&ctx, code, interrupted)?;
                if functions.len() >= MAX_FUNCTIONS {
                    functions.clear();
                }
                functions.insert(code.to_string(), Persistent::save(&ctx, f.clone()));
                f
            }
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
    })
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
        let (result, polls) = check_counting("while(true){}");
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(polls, 0, "the body did not run during the check");
        // Text that closes the function early is mostly a syntax error, and
        // whatever compiles is never run by the check (at run time it runs
        // inside the sandbox, under its deadline).
        for code in ["} while(true){} function f(){", "} for(;;){} {"] {
            assert!(check(code).is_err(), "{code} must not compile");
        }
        for code in [
            "} while(true){} function f(){",
            "}); while(true){} (function(){",
        ] {
            let (_, polls) = check_counting(code);
            assert_eq!(polls, 0, "{code} ran during the check");
        }
    }

    #[test]
    fn no_state_leaks_between_scripts_on_one_sandbox() {
        // The same thread reuses its sandbox: nothing a script does is seen by the next.
        for attempt in [
            "globalThis.leak = ctx.input",
            "Array.prototype.leak = 1",
            "Object.prototype.toString = () => 'pwned'",
            "JSON.parse = () => 1",
        ] {
            let err = run(attempt, r#"{"input": "secret"}"#, &limits(1000)).unwrap_err();
            assert!(
                matches!(err, ScriptError::Thrown(ref m) if m.contains("TypeError")),
                "{attempt}: {err:?}"
            );
        }
        let out = run(
            "return [typeof globalThis.leak, [].leak === undefined, String({}), JSON.parse('2')]",
            "{}",
            &limits(1000),
        );
        assert_eq!(out.unwrap(), r#"["undefined",true,"[object Object]",2]"#);
        // Local state is per run.
        assert_eq!(
            run("let n = 1; return n", "{}", &limits(1000)).unwrap(),
            "1"
        );
        assert_eq!(
            run("let n = 2; return n", "{}", &limits(1000)).unwrap(),
            "2"
        );
    }

    #[test]
    fn a_compiled_script_is_reused_without_carrying_state() {
        // The second and third runs take the compiled function from the
        // thread's cache; each sees only its own argument.
        let code = "if (this !== undefined) throw new Error('this is shared'); \
                    ctx.seen = (ctx.seen || 0) + 1; return [ctx.input, ctx.seen]";
        for input in ["a", "b", "c"] {
            let out = run(code, &format!(r#"{{"input": "{input}"}}"#), &limits(1000));
            assert_eq!(out.unwrap(), format!(r#"["{input}",1]"#));
        }
        SANDBOX.with(|cell| {
            let slot = cell.borrow();
            assert!(slot.as_ref().unwrap().functions.contains_key(code));
        });
    }

    #[test]
    fn a_sandbox_is_replaced_after_running_out_of_memory() {
        let err = run(
            "let a = []; while (true) { a.push('x'.repeat(1024)); }",
            "{}",
            &limits(10_000),
        )
        .unwrap_err();
        assert_eq!(err, ScriptError::OutOfMemory);
        assert_eq!(run("return 1 + 1", "{}", &limits(1000)).unwrap(), "2");
    }

    #[test]
    fn code_that_closes_the_function_early_does_not_compile_at_run_time_either() {
        let err = run("} while(true){} function f(){", "{}", &limits(100)).unwrap_err();
        assert!(matches!(err, ScriptError::Compile(_)), "{err:?}");
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
