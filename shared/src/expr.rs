//! CEL expressions over the run context (`input`, `steps`, and later `env`).
//!
//! Used by `condition` branches and `output` fields. Compiled once when a
//! definition is validated; evaluated on the worker for each run.

use serde_json::Value;

/// The variables an expression may name.
pub const CONTEXT_ROOTS: &[&str] = &["input", "steps", "env"];

/// A root context holding CEL's standard library, built once:
/// `Context::default()` builds the library again for every evaluation, which
/// cost more than evaluating a typical expression. Each evaluation binds its
/// variables in a child scope of this one.
fn stdlib() -> &'static cel::Context<'static, 'static> {
    static STDLIB: std::sync::OnceLock<cel::Context<'static, 'static>> = std::sync::OnceLock::new();
    STDLIB.get_or_init(cel::Context::default)
}

/// A compiled CEL expression with its source.
pub struct Expr {
    source: String,
    program: cel::Program,
    /// The context roots it names: only these are converted for CEL.
    roots: Vec<&'static str>,
    /// For an expression that only selects (`steps.work.output.n`, the most
    /// common output field): its root and field names, followed straight
    /// through the context's JSON — no conversion to CEL values and back.
    path: Option<Vec<String>>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl Expr {
    /// Compiles `source`, and refuses variables that are not in the context
    /// (a typo like `inptu.x` is caught here, not at run time).
    pub fn compile(source: &str) -> Result<Expr, String> {
        check_shape(source)?;
        let program = std::panic::catch_unwind(|| cel::Program::compile(source))
            .map_err(|_| "the expression could not be parsed".to_string())?
            .map_err(|e| e.to_string().trim().to_string())?;
        let refs = program.references();
        // Sorted: the library lists them from a hash set, and the same
        // definition must get the same error every time.
        let mut unknown: Vec<&str> = refs
            .variables()
            .into_iter()
            .filter(|v| !CONTEXT_ROOTS.contains(v))
            .collect();
        unknown.sort_unstable();
        if !unknown.is_empty() {
            return Err(format!(
                "unknown variable {}; an expression may use {}",
                unknown
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                CONTEXT_ROOTS.join(", ")
            ));
        }
        let roots = CONTEXT_ROOTS
            .iter()
            .copied()
            .filter(|r| refs.has_variable(*r))
            .collect();
        Ok(Expr {
            source: source.to_string(),
            program,
            roots,
            path: selection_path(source),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against a context object (`{"input": …, "steps": …}`).
    pub fn eval(&self, context: &Value) -> Result<Value, String> {
        // A selection whose every step exists is that JSON value (CEL would
        // give the same, with an object's keys in hash order). Anything else,
        // errors included, is CEL's to judge.
        if let Some(path) = &self.path {
            let mut at = context.get(&path[0]);
            for field in &path[1..] {
                at = at.and_then(|v| v.as_object()).and_then(|o| o.get(field));
            }
            if let Some(v) = at {
                return Ok(v.clone());
            }
        }
        self.eval_cel(context)
    }

    /// Evaluates with CEL, whatever the expression.
    fn eval_cel(&self, context: &Value) -> Result<Value, String> {
        let mut ctx = stdlib().new_inner_scope();
        // Converting a root is a deep copy: only those named, straight from
        // the context (an output field naming `steps` does not pay for `input`).
        for root in &self.roots {
            let v = context.get(*root).unwrap_or(&Value::Null);
            ctx.add_variable_from_value(*root, to_cel(v));
        }
        let out = self.program.execute(&ctx).map_err(|e| e.to_string())?;
        out.json().map_err(|e| e.to_string())
    }

    /// Evaluates and insists on a boolean.
    pub fn eval_bool(&self, context: &Value) -> Result<bool, String> {
        match self.eval(context)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "expected a bool, got {}",
                match other {
                    Value::Null => "null",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    Value::Array(_) => "a list",
                    Value::Object(_) => "a map",
                    Value::Bool(_) => "a bool",
                }
            )),
        }
    }
}

/// The root and field names of an expression that is only a selection
/// chain from a context root (`input.a.b`), else `None`.
fn selection_path(source: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = source.split('.').map(|p| p.trim().to_string()).collect();
    let identifier = |p: &String| {
        let mut chars = p.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (CONTEXT_ROOTS.contains(&parts[0].as_str()) && parts.iter().all(identifier)).then_some(parts)
}

/// Longest expression accepted, in bytes.
pub const MAX_EXPR_LEN: usize = 4_096;
/// Deepest nesting of brackets, and most `.` selections, accepted. The CEL
/// parser and evaluator recurse on both; without a bound a crafted expression
/// overflows the stack, and a stack overflow cannot be caught.
pub const MAX_EXPR_DEPTH: usize = 8;
pub const MAX_EXPR_SELECTIONS: usize = 64;
/// Deepest chain of operators accepted. The parser nests `1 + 1 + …` (and
/// `-`, `*`, `/`, `%`, comparisons, `in`, `?:`, indexing, calls) one level
/// per operator, and the evaluator recurses once per level: about 50 levels
/// overflow a 2 MiB thread stack in a debug build (the coordinator's request
/// threads, the worker's). `&&`, `||` and `,` do not nest: each of their
/// operands starts again from the enclosing bracket.
pub const MAX_EXPR_NESTING: usize = 32;

fn check_shape(source: &str) -> Result<(), String> {
    if source.len() > MAX_EXPR_LEN {
        return Err(format!(
            "the expression is {} bytes; at most {MAX_EXPR_LEN}",
            source.len()
        ));
    }
    let chars: Vec<char> = source.chars().collect();
    let (mut depth, mut max, mut dots) = (0usize, 0usize, 0usize);
    // Operator levels along the current path, and at each open bracket.
    let (mut nest, mut max_nest, mut bases) = (0usize, 0usize, Vec::new());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev = if i == 0 { ' ' } else { chars[i - 1] };
        let mut width = 1;
        match c {
            '"' | '\'' => width = string_len(&chars, i)?,
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
                bases.push(nest);
                nest += 1;
            }
            // The bracketed expression is one level on the path it is in
            // (`a[0][0]` and `a.f().g()` nest as `1 + 1 + 1` does).
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                nest = bases.pop().unwrap_or(0) + 1;
            }
            '&' | '|' if next == Some(c) => {
                nest = bases.last().map_or(0, |b| b + 1);
                width = 2;
            }
            ',' => nest = bases.last().map_or(0, |b| b + 1),
            '+' | '-' | '*' | '/' | '%' | '<' | '>' | '?' => nest += 1,
            '=' | '!' if next == Some('=') => {
                nest += 1;
                width = 2;
            }
            '.' if !prev.is_ascii_digit() => dots += 1,
            'i' if next == Some('n')
                && !is_ident(prev)
                && !chars.get(i + 2).copied().is_some_and(is_ident) =>
            {
                nest += 1;
                width = 2;
            }
            _ => {}
        }
        max_nest = max_nest.max(nest);
        i += width;
    }
    if max > MAX_EXPR_DEPTH {
        return Err(format!(
            "brackets nest {max} deep; at most {MAX_EXPR_DEPTH}"
        ));
    }
    if dots > MAX_EXPR_SELECTIONS {
        return Err(format!(
            "{dots} field selections; at most {MAX_EXPR_SELECTIONS}"
        ));
    }
    if max_nest > MAX_EXPR_NESTING {
        return Err(format!(
            "operators, calls and brackets nest {max_nest} deep; at most {MAX_EXPR_NESTING} \
             (`&&` and `||` do not count)"
        ));
    }
    Ok(())
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Characters of the string literal that starts at `chars[start]` (a quote),
/// by CEL's rules: `'…'` or `"…"` on one line, `'''…'''` or `"""…"""`,
/// backslash escapes unless raw (`r"…"`). Where in doubt it ends the string
/// early (any `r` before the quote makes it raw), so that what follows is
/// still counted by [`check_shape`]; a string that does not end is refused,
/// not taken to run to the end of the expression.
fn string_len(chars: &[char], start: usize) -> Result<usize, String> {
    let q = chars[start];
    let raw = start > 0 && matches!(chars[start - 1], 'r' | 'R');
    let triple = chars.get(start + 1) == Some(&q) && chars.get(start + 2) == Some(&q);
    let mut j = start + if triple { 3 } else { 1 };
    while j < chars.len() {
        let c = chars[j];
        if c == '\\' && !raw {
            j += 2;
            continue;
        }
        if triple {
            if c == q && chars.get(j + 1) == Some(&q) && chars.get(j + 2) == Some(&q) {
                return Ok(j + 3 - start);
            }
        } else if c == q {
            return Ok(j + 1 - start);
        } else if c == '\n' || c == '\r' {
            break;
        }
        j += 1;
    }
    Err("the expression has a string that does not end".into())
}

/// JSON → CEL. Whole numbers become `int` (CEL has no implicit conversion
/// between `int` and `uint`, and users write `input.n * 2`); others `double`.
fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(std::sync::Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(std::sync::Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: std::collections::HashMap<String, cel::Value> =
                m.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::Map(map.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_over_input_and_steps() {
        let ctx = json!({"input": {"n": 3}, "steps": {"a": {"output": {"total": 7}}}});
        let e = Expr::compile("input.n + steps.a.output.total > 9").unwrap();
        assert!(e.eval_bool(&ctx).unwrap());
        let e = Expr::compile("steps.a.output.total * 2").unwrap();
        assert_eq!(e.eval(&ctx).unwrap(), json!(14));
    }

    #[test]
    fn binds_only_the_roots_it_names() {
        let e = Expr::compile("steps.a.output.total * 2").unwrap();
        assert_eq!(e.roots, ["steps"]);
        // `input` is not converted, so whatever it holds does not matter.
        let ctx = json!({"input": [[[[1]]]], "steps": {"a": {"output": {"total": 7}}}});
        assert_eq!(e.eval(&ctx).unwrap(), json!(14));
        let e = Expr::compile("has(input.x) ? env.A : 'none'").unwrap();
        assert_eq!(e.roots, ["input", "env"]);
        assert_eq!(
            e.eval(&json!({"input": {"x": 1}, "env": {"A": "a"}}))
                .unwrap(),
            json!("a")
        );
        assert!(Expr::compile("1 + 2").unwrap().roots.is_empty());
    }

    #[test]
    fn a_selection_is_followed_through_the_json_as_cel_would() {
        let ctx = json!({
            "input": {"n": 3, "big": 18446744073709551615u64, "neg": -4, "f": 1.5,
                      "s": "x", "nil": null, "list": [1, {"a": 2}],
                      "deep": {"b": {"c": {"d": true}}}},
            "steps": {"work": {"output": {"n": 4, "obj": {"z": 1, "a": [2, 3]}}}},
        });
        for (source, fast) in [
            ("input", true),
            ("input.n", true),
            ("input.big", true),
            ("input.neg", true),
            ("input.f", true),
            ("input.s", true),
            ("input.nil", true),
            ("input.list", true),
            ("input . deep . b.c.d", true),
            ("steps.work.output.n", true),
            ("steps.work.output.obj", true),
            // Not selections: CEL alone.
            ("input.n + 1", false),
            ("input.list[1].a", false),
            ("has(input.n)", false),
            // Selections that fail: CEL's error, as before.
            ("input.missing", true),
            ("input.n.x", true),
            ("input.nil.x", true),
            ("steps.other.output", true),
            ("env.A", true),
        ] {
            let e = Expr::compile(source).unwrap();
            assert_eq!(e.path.is_some(), fast, "{source}");
            assert_eq!(e.eval(&ctx), e.eval_cel(&ctx), "{source}");
        }
        assert!(Expr::compile("input.missing").unwrap().eval(&ctx).is_err());
        // An object selected keeps its keys' order (CEL's map does not).
        let obj = Expr::compile("steps.work.output.obj")
            .unwrap()
            .eval(&ctx)
            .unwrap();
        assert_eq!(
            obj.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["z", "a"]
        );
    }

    #[test]
    fn unknown_variables_are_named_in_a_stable_order() {
        for _ in 0..20 {
            let err = Expr::compile("zeta + inptu.x + alpha").unwrap_err();
            assert!(
                err.starts_with("unknown variable `alpha`, `inptu`, `zeta`;"),
                "{err}"
            );
        }
    }

    #[test]
    fn rejects_bad_syntax_and_unknown_variables() {
        assert!(Expr::compile("input.n >").is_err());
        let err = Expr::compile("inptu.n > 1").unwrap_err();
        assert!(err.contains("inptu"), "{err}");
    }

    #[test]
    fn deep_or_long_expressions_are_refused_not_a_stack_overflow() {
        assert!(Expr::compile(&format!("{}1{}", "(".repeat(12), ")".repeat(12))).is_err());
        assert!(Expr::compile(&format!("input{}", ".a".repeat(5_000))).is_err());
        assert!(Expr::compile(&"1 + ".repeat(2_000)).is_err());
        // Chains of operators nest as deep as brackets do.
        let chain = |op: &str, n: usize| format!("1{}", format!(" {op} 1").repeat(n));
        for op in ["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "in"] {
            assert!(Expr::compile(&chain(op, 40)).is_err(), "{op}");
        }
        assert!(Expr::compile(&format!("[[1]]{} == 1", "[0]".repeat(40))).is_err());
        assert!(Expr::compile(&format!("input.a{} == 1", ".size()".repeat(40))).is_err());
        assert!(Expr::compile(&format!("{}1", "true ? 1 : ".repeat(40))).is_err());
        // A string cannot hide what follows it.
        for s in [r#""\\""#, r#"'\\'"#, r#"r"\""#, r#""""\\""""#] {
            let e = format!("{s} == '' || {}1{} == 1", "(".repeat(20), ")".repeat(20));
            let err = Expr::compile(&e).unwrap_err();
            assert!(err.contains("nest"), "{e}: {err}");
        }
        assert!(Expr::compile("input.s == 'does not end || true").is_err());
        assert!(Expr::compile("input.s == \"one\nline\"").is_err());
        // What is not deep is fine: long `||` chains, strings full of operators.
        let any_of = (0..60)
            .map(|i| format!("input.s == 'v{i}'"))
            .collect::<Vec<_>>()
            .join(" || ");
        assert!(Expr::compile(&any_of).is_ok());
        let ops = format!("input.s == \"{}((((((((((\"", "+1".repeat(100));
        assert!(Expr::compile(&ops).is_ok(), "{ops}");
        let quoted = r#"input.s in ['a', "b\"", '''c'd''', """e"f""", r'\', "\\"]"#;
        assert!(Expr::compile(quoted).is_ok(), "{quoted}");
        assert!(Expr::compile("size(input.items) > 2 && input.items[0].name == 'a.b.c'").is_ok());
        assert!(Expr::compile("1.5 + 2.25 > 3.0").is_ok());
    }

    /// The deepest expression of each shape that is accepted compiles and
    /// evaluates on a 2 MiB stack (a thread's default) in a debug build; a
    /// stack overflow would abort the test.
    #[test]
    fn the_deepest_accepted_expressions_do_not_overflow_the_stack() {
        type Shape = fn(usize) -> String;
        let shapes: [(&str, Shape); 7] = [
            ("sum", |k| format!("1{} > 0", "+1".repeat(k))),
            ("comparisons", |k| format!("1{}", " == 1".repeat(k))),
            ("grouped", |k| {
                format!("{}1{} > 0", "(".repeat(k), "+1)".repeat(k))
            }),
            ("both", |k| {
                format!(
                    "{}1{}{} > 0",
                    "(".repeat(8),
                    "+1)".repeat(8),
                    "*1".repeat(k)
                )
            }),
            ("calls", |k| format!("input.a{} == 1", ".size()".repeat(k))),
            ("indexing", |k| format!("[[1]]{} == 1", "[0]".repeat(k))),
            ("ternaries", |k| format!("{}1", "true ? 1 : ".repeat(k))),
        ];
        for (name, shape) in shapes {
            let deepest = (1..)
                .take_while(|&k| Expr::compile(&shape(k)).is_ok())
                .last()
                .unwrap_or_else(|| panic!("{name}: even 1 is refused"));
            assert!(deepest >= 6, "{name}: only {deepest} accepted");
            let src = shape(deepest);
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let x = Expr::compile(&src).unwrap();
                    let _ = x.eval(&json!({"input": {"a": "x"}}));
                })
                .unwrap()
                .join()
                .unwrap_or_else(|_| panic!("{name} {deepest}"));
        }
    }

    #[test]
    fn non_bool_condition_is_an_error() {
        let e = Expr::compile("input.n").unwrap();
        assert!(e.eval_bool(&json!({"input": {"n": 1}})).is_err());
    }
}
