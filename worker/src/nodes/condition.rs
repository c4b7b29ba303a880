//! `condition`: the first branch whose CEL `when` holds is taken; else the
//! default branch; else the node fails with `no_branch_matched`.

use super::{Attempt, NodeError, NodeOutput};
use serde_json::json;
use weft_shared::error::ErrorCode;
use weft_shared::model::ConditionConfig;

pub fn execute(a: &Attempt, cfg: &ConditionConfig) -> Result<NodeOutput, NodeError> {
    let node = &a.plan.nodes[a.idx];
    for (name, expr) in &node.exprs {
        let holds = expr.eval_bool(&a.context).map_err(|e| {
            NodeError::new(ErrorCode::ExpressionError, format!("branch `{name}`: {e}"))
        })?;
        if holds {
            return Ok(NodeOutput {
                value: json!({"branch": name}),
                branch: Some(name.clone()),
            });
        }
    }
    match &cfg.default {
        Some(d) => Ok(NodeOutput {
            value: json!({"branch": d}),
            branch: Some(d.clone()),
        }),
        None => Err(NodeError::new(
            ErrorCode::NoBranchMatched,
            "no branch matched and there is no default",
        )),
    }
}
