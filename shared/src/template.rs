//! `{{ path }}` templates over the run context, for API and AI nodes.
//!
//! A path is dotted: `input.customer.email`, `steps.fetch.output.body.id`,
//! `env.BASE_URL`, `callback.url` (async API nodes); a number indexes a list
//! (`input.items.0.sku`). In a JSON value, a string that is exactly one
//! template takes the value's JSON type (`"{{input.n}}"` → `7`); anywhere else
//! the value is written as text (strings bare, other values as JSON).

use serde_json::Value;

/// Roots a template may start with.
pub const ROOTS: &[&str] = &["input", "steps", "env", "callback"];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` in template")]
    Unclosed,
    #[error("empty `{{{{ }}}}` in template")]
    Empty,
    #[error("template path `{0}` must start with one of: input, steps, env, callback")]
    UnknownRoot(String),
    #[error("template `{{{{{0}}}}}` has no value in this run")]
    Missing(String),
}

/// The template paths in `s`, checked for syntax and roots.
pub fn paths(s: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let path = after[..close].trim();
        if path.is_empty() {
            return Err(TemplateError::Empty);
        }
        let root = path.split('.').next().unwrap_or("");
        if !ROOTS.contains(&root) {
            return Err(TemplateError::UnknownRoot(path.to_string()));
        }
        out.push(path.to_string());
        rest = &after[close + 2..];
    }
    Ok(out)
}

/// Looks a dotted path up in the context.
pub fn lookup<'a>(ctx: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = ctx;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders a template to text.
pub fn render(s: &str, ctx: &Value) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let path = after[..close].trim();
        let v = lookup(ctx, path).ok_or_else(|| TemplateError::Missing(path.to_string()))?;
        out.push_str(&as_text(v));
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders every string in a JSON value; a string that is exactly one
/// template becomes the value itself.
pub fn render_value(v: &Value, ctx: &Value) -> Result<Value, TemplateError> {
    Ok(match v {
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with("{{")
                && t.ends_with("}}")
                && t[2..].find("{{").is_none()
                && t.matches("}}").count() == 1
            {
                let path = t[2..t.len() - 2].trim();
                lookup(ctx, path)
                    .cloned()
                    .ok_or_else(|| TemplateError::Missing(path.to_string()))?
            } else {
                Value::String(render(s, ctx)?)
            }
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), render_value(x, ctx)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_text_and_values() {
        let ctx = json!({"input": {"n": 7, "name": "ada", "items": [{"sku": "a1"}]}, "steps": {"s": {"output": {"ok": true}}}, "env": {"BASE": "http://h"}});
        assert_eq!(
            render("{{env.BASE}}/users/{{ input.name }}?n={{input.n}}", &ctx).unwrap(),
            "http://h/users/ada?n=7"
        );
        assert_eq!(render("{{input.items.0.sku}}", &ctx).unwrap(), "a1");
        let body = json!({"n": "{{input.n}}", "ok": "{{steps.s.output.ok}}", "msg": "hi {{input.name}}", "list": ["{{input.n}}"]});
        assert_eq!(
            render_value(&body, &ctx).unwrap(),
            json!({"n": 7, "ok": true, "msg": "hi ada", "list": [7]})
        );
        assert_eq!(
            render("{{input.missing}}", &ctx),
            Err(TemplateError::Missing("input.missing".into()))
        );
    }

    #[test]
    fn checks_syntax_and_roots() {
        assert_eq!(
            paths("a {{input.x}} b {{env.Y}}").unwrap(),
            vec!["input.x", "env.Y"]
        );
        assert_eq!(paths("{{input.x"), Err(TemplateError::Unclosed));
        assert!(matches!(
            paths("{{secrets.x}}"),
            Err(TemplateError::UnknownRoot(_))
        ));
        assert_eq!(paths("{{ }}"), Err(TemplateError::Empty));
    }
}
