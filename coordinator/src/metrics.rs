//! The coordinator's metrics: names, units and descriptions in one place.
//! Labels stay bounded: workflow ids yes, run ids never.

pub const RUNS_STARTED: &str = "weft_runs_started_total";
pub const RUNS_COMPLETED: &str = "weft_runs_completed_total";
pub const RUN_DURATION: &str = "weft_run_duration_seconds";
pub const TIMEOUTS: &str = "weft_timeouts_total";
pub const PLACEMENT_DURATION: &str = "weft_placement_duration_seconds";
pub const PENDING_RUNS: &str = "weft_pending_runs";
pub const PENDING_OLDEST_AGE: &str = "weft_pending_oldest_age_seconds";
pub const WORKERS: &str = "weft_workers";
pub const WORKERS_LOST: &str = "weft_workers_lost_total";
pub const WIRE_ERRORS: &str = "weft_wire_decode_errors_total";
pub const HTTP_REQUESTS: &str = "weft_http_requests_total";
pub const HTTP_DURATION: &str = "weft_http_request_duration_seconds";
pub const RUNS_REJECTED: &str = "weft_runs_rejected_total";
pub const AUDIT_WRITE_ERRORS: &str = "weft_audit_write_errors_total";
pub const PUSH_DELIVERIES: &str = "weft_push_deliveries_total";
pub const PUSH_ATTEMPTS: &str = "weft_push_attempts_total";
pub const PUSH_DURATION: &str = "weft_push_delivery_duration_seconds";
pub const PUSH_ACTIVE: &str = "weft_push_active_deliveries";
pub const RUNS_WAITING: &str = "weft_runs_waiting";
pub const RUNS_RESUMED: &str = "weft_runs_resumed_total";

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RUNS_STARTED, "Runs accepted, by workflow.");
    describe_counter!(RUNS_COMPLETED, "Runs ended, by workflow and final status.");
    describe_histogram!(
        RUN_DURATION,
        Unit::Seconds,
        "Time from acceptance to end of a run, by workflow."
    );
    describe_counter!(
        TIMEOUTS,
        "Runs ended by a timeout, by the level that fired (workflow, node, model)."
    );
    describe_histogram!(
        PLACEMENT_DURATION,
        Unit::Seconds,
        "Time to choose a worker for a run."
    );
    describe_gauge!(PENDING_RUNS, "Runs waiting for worker capacity.");
    describe_gauge!(
        PENDING_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest run waiting for capacity."
    );
    describe_gauge!(
        WORKERS,
        "Workers known to the coordinator, by state (ready, draining)."
    );
    describe_counter!(
        WORKERS_LOST,
        "Workers declared dead after missing heartbeats."
    );
    describe_counter!(
        WIRE_ERRORS,
        "NATS messages dropped because they could not be decoded, by subject."
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by route and status code.");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, by route."
    );
    describe_counter!(
        RUNS_REJECTED,
        "Run requests refused, by reason (queue_full, no_workers, shutting_down, concurrency_limit, mode_disabled, rate_limited)."
    );
    describe_counter!(
        PUSH_DELIVERIES,
        "Async-push deliveries ended, by outcome (delivered, failed)."
    );
    describe_counter!(
        PUSH_ATTEMPTS,
        "Async-push attempts, by result (success, http_error, timeout, network_error)."
    );
    describe_histogram!(
        PUSH_DURATION,
        Unit::Seconds,
        "Time of one async-push attempt, request to answer."
    );
    describe_gauge!(
        PUSH_ACTIVE,
        "Async-push deliveries held in memory: being sent or waiting to retry."
    );
    describe_counter!(
        AUDIT_WRITE_ERRORS,
        "Audit events that could not be appended (each is also logged at error)."
    );
    describe_gauge!(
        RUNS_WAITING,
        "Runs paused at human nodes, held by no worker."
    );
    describe_counter!(RUNS_RESUMED, "Human nodes answered (runs resumed).");
}
