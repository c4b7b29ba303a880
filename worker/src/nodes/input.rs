//! `input`: the run's input, already checked against the schema by the
//! coordinator, becomes the node's output.

use super::NodeError;
use super::{Attempt, NodeOutput};

pub fn execute(a: &Attempt) -> Result<NodeOutput, NodeError> {
    Ok(NodeOutput::value(
        a.context.get("input").cloned().unwrap_or_default(),
    ))
}
