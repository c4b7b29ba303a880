//! `output`: builds the run's result, one CEL expression per field.

use super::{Attempt, NodeError, NodeOutput};
use serde_json::{Map, Value};
use weft_shared::error::ErrorCode;

pub fn execute(a: &Attempt) -> Result<NodeOutput, NodeError> {
    let node = &a.plan.nodes[a.idx];
    let mut out = Map::new();
    for (field, expr) in &node.exprs {
        let v = expr.eval(&a.context).map_err(|e| {
            NodeError::new(ErrorCode::ExpressionError, format!("field `{field}`: {e}"))
        })?;
        out.insert(field.clone(), v);
    }
    Ok(NodeOutput::value(Value::Object(out)))
}
