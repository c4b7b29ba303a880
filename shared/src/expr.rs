//! CEL expressions over the run context (`input`, `steps`, and later `env`).
//!
//! Used by `condition` branches and `output` fields. Compiled once when a
//! definition is validated; evaluated on the worker for each run.

use serde_json::Value;

/// The variables an expression may name.
pub const CONTEXT_ROOTS: &[&str] = &["input", "steps", "env"];

/// A compiled CEL expression with its source.
pub struct Expr {
    source: String,
    program: cel::Program,
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
        let unknown: Vec<&str> = refs
            .variables()
            .into_iter()
            .filter(|v| !CONTEXT_ROOTS.contains(v))
            .collect();
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
        Ok(Expr {
            source: source.to_string(),
            program,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against a context object (`{"input": …, "steps": …}`).
    pub fn eval(&self, context: &Value) -> Result<Value, String> {
        let mut ctx = cel::Context::default();
        for root in CONTEXT_ROOTS {
            let v = context.get(*root).cloned().unwrap_or(Value::Null);
            ctx.add_variable_from_value(*root, to_cel(&v));
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

/// Longest expression accepted, in bytes.
pub const MAX_EXPR_LEN: usize = 4_096;
/// Deepest nesting of brackets, and most `.` selections, accepted. The CEL
/// parser and evaluator recurse on both; without a bound a crafted expression
/// overflows the stack, and a stack overflow cannot be caught.
pub const MAX_EXPR_DEPTH: usize = 8;
pub const MAX_EXPR_SELECTIONS: usize = 64;

fn check_shape(source: &str) -> Result<(), String> {
    if source.len() > MAX_EXPR_LEN {
        return Err(format!(
            "the expression is {} bytes; at most {MAX_EXPR_LEN}",
            source.len()
        ));
    }
    let (mut depth, mut max, mut dots) = (0usize, 0usize, 0usize);
    let mut in_str: Option<char> = None;
    let mut prev = ' ';
    for c in source.chars() {
        match in_str {
            Some(q) => {
                if c == q && prev != '\\' {
                    in_str = None;
                }
            }
            None => match c {
                '"' | '\'' => in_str = Some(c),
                '(' | '[' | '{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                '.' if !prev.is_ascii_digit() => dots += 1,
                _ => {}
            },
        }
        prev = c;
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
    Ok(())
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
        assert!(Expr::compile("size(input.items) > 2 && input.items[0].name == 'a.b.c'").is_ok());
        assert!(Expr::compile("1.5 + 2.25 > 3.0").is_ok());
    }

    #[test]
    fn non_bool_condition_is_an_error() {
        let e = Expr::compile("input.n").unwrap();
        assert!(e.eval_bool(&json!({"input": {"n": 1}})).is_err());
    }
}
