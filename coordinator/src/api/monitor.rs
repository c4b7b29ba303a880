//! The run monitor: for a workflow and a date range (and the run list's
//! other filters), total runs, P50/P90/P99 response time and failure rate —
//! for runs and for model runs. Percentiles are exact (nearest rank over every
//! matching run in the store), never estimated from a sample.

use super::auth::AuthUser;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::runs::FilterQuery;
use super::St;
use crate::access::Role;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use std::collections::BTreeMap;
use weft_shared::model::RunStatus;

/// Nearest-rank percentile of an ascending slice (`p` in 0..=100).
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole != 0).then(|| part as f64 / whole as f64)
}

/// The run monitor of a workflow over the filters given.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Monitor {
    pub workflow_id: String,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub runs: RunStats,
    pub model_runs: ModelRunStats,
}

/// Runs: response times are acceptance to end, over ended runs.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunStats {
    pub total: u64,
    pub ended: u64,
    /// Runs by status (statuses with none left out).
    pub by_status: BTreeMap<String, u64>,
    /// (failed + timed out) / ended; null when none ended.
    pub failure_rate: Option<f64>,
    pub p50_ms: Option<u64>,
    pub p90_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

/// Model calls of those runs.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelRunStats {
    pub total: u64,
    pub failed: u64,
    /// failed / total; null when there were none.
    pub failure_rate: Option<f64>,
    pub p50_ms: Option<u64>,
    pub p90_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/monitor",
    operation_id = "get_monitor",
    tag = "runs",
    summary = "The run monitor: totals, failure rate, P50/P90/P99 for runs and model runs",
    description = "Percentiles are exact (nearest rank over every matching run).",
    params(
        ("id" = String, Path, description = "Workflow id"),
        ("status" = Option<RunStatus>, Query, description = "Runs in this status only", nullable = false),
        ("trigger" = Option<super::runs::RunMode>, Query, description = "`sync` or `async`", nullable = false),
        ("from_ms" = Option<u64>, Query, description = "Accepted at or after (Unix ms)", maximum = 9223372036854775807_u64, nullable = false),
        ("to_ms" = Option<u64>, Query, description = "Accepted before (Unix ms); after `from_ms`", maximum = 9223372036854775807_u64, nullable = false),
    ),
    responses(
        (status = 200, description = "The monitor", body = Monitor),
        (status = 400, description = "`invalid_request`: a bad filter or an unknown parameter", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
    )
)]
pub async fn monitor(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(mut q): ApiQuery<FilterQuery>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Viewer).await?;
    if st.store.get_workflow(&id).await?.is_none() {
        return Err(ApiError::not_found("workflow"));
    }
    q.workflow_id = Some(id.clone());
    q.cursor = None;
    let filter = q.to_filter()?;
    let runs = st.store.run_sample(&filter).await?;
    let models = st.store.model_sample(&filter).await?;
    let count = |s: RunStatus| {
        runs.by_status
            .iter()
            .find(|(x, _)| *x == s)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    let total: u64 = runs.by_status.iter().map(|(_, n)| n).sum();
    let ended = runs.durations_ms.len() as u64;
    let failures = count(RunStatus::Failed) + count(RunStatus::TimedOut);
    let by_status = runs
        .by_status
        .iter()
        .map(|(s, n)| (s.as_str().to_string(), *n))
        .collect();
    let d = &runs.durations_ms;
    let m = &models.durations_ms;
    Ok(Json(Monitor {
        workflow_id: id,
        from_ms: filter.from_ms,
        to_ms: filter.to_ms,
        runs: RunStats {
            total,
            ended,
            by_status,
            failure_rate: rate(failures, ended),
            p50_ms: percentile(d, 50.0),
            p90_ms: percentile(d, 90.0),
            p99_ms: percentile(d, 99.0),
            max_ms: d.last().copied(),
        },
        model_runs: ModelRunStats {
            total: m.len() as u64,
            failed: models.failed,
            failure_rate: rate(models.failed, m.len() as u64),
            p50_ms: percentile(m, 50.0),
            p90_ms: percentile(m, 90.0),
            p99_ms: percentile(m, 99.0),
            prompt_tokens: models.prompt_tokens,
            completion_tokens: models.completion_tokens,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1, 2, 3], 0.0), Some(1));
    }
}
