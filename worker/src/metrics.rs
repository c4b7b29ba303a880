//! The worker's metrics: names, units and descriptions in one place.

pub const NODE_DURATION: &str = "weft_node_duration_seconds";
pub const NODE_RETRIES: &str = "weft_node_retries_total";
pub const NODE_PANICS: &str = "weft_node_panics_total";
pub const ACTOR_RESTARTS: &str = "weft_actor_restarts_total";
pub const TIMEOUTS: &str = "weft_worker_timeouts_total";
pub const TIMEOUT_LATENESS: &str = "weft_timeout_lateness_seconds";
pub const WORKER_CAPACITY: &str = "weft_worker_capacity";
pub const WORKER_INFLIGHT: &str = "weft_worker_inflight_runs";
pub const RUNS_EXECUTED: &str = "weft_worker_runs_total";
pub const WIRE_ERRORS: &str = "weft_wire_decode_errors_total";
pub const RESULT_RETRIES: &str = "weft_result_delivery_retries_total";
pub const MODEL_DURATION: &str = "weft_model_request_duration_seconds";
pub const MODEL_TOKENS: &str = "weft_model_tokens_total";
pub const GUARDRAIL_FINDINGS: &str = "weft_guardrail_findings_total";

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        NODE_DURATION,
        Unit::Seconds,
        "Node execution time, by workflow and node kind."
    );
    describe_counter!(
        NODE_RETRIES,
        "Node attempts retried under the node's retry policy, by node kind."
    );
    describe_counter!(
        NODE_PANICS,
        "Node executions that panicked (caught; the node failed with node_panicked)."
    );
    describe_counter!(
        ACTOR_RESTARTS,
        "Actor restarts by the supervisor, by actor kind."
    );
    describe_counter!(
        TIMEOUTS,
        "Timeouts fired on this worker, by level (workflow, node, model)."
    );
    describe_histogram!(
        TIMEOUT_LATENESS,
        Unit::Seconds,
        "How long after its deadline a timeout was handled."
    );
    describe_gauge!(WORKER_CAPACITY, "Runs this worker holds at once.");
    describe_gauge!(WORKER_INFLIGHT, "Runs this worker holds now.");
    describe_counter!(RUNS_EXECUTED, "Runs this worker finished, by status.");
    describe_counter!(
        WIRE_ERRORS,
        "NATS messages dropped because they could not be decoded, by subject."
    );
    describe_counter!(
        RESULT_RETRIES,
        "Result deliveries to the coordinator sent again for want of an ack."
    );
    describe_histogram!(
        MODEL_DURATION,
        Unit::Seconds,
        "Model call latency, by model."
    );
    describe_counter!(
        MODEL_TOKENS,
        "Tokens used by model calls, by model and kind (prompt, completion)."
    );
    describe_counter!(
        GUARDRAIL_FINDINGS,
        "Guardrail findings, by scanner and action (block, redact)."
    );
}
