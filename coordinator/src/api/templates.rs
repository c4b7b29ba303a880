//! Built-in workflow templates: listed, read, and used to create a workflow
//! (a draft, not deployed). Each is a JSON file in `src/templates/`, compiled
//! in; a test checks that every one is a valid definition and that its
//! `required_env` names exactly the variables the definition uses.

use super::auth::AuthUser;
use super::error::{ApiError, ApiPath, ErrorBody};
use super::openapi::WorkflowDefinitionSchema;
use super::workflows::check;
use super::{Page, St};
use crate::model::Workflow;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::OnceLock;
use weft_shared::error::ErrorCode;

/// The template files (add one here and in `src/templates/`).
const SOURCES: &[&str] = &[
    include_str!("../templates/classify-and-route.json"),
    include_str!("../templates/call-api-and-summarise.json"),
];

/// A variable a template's workflow needs before it can run.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequiredEnv {
    pub name: String,
    /// Whether it should be created as a secure variable.
    pub secure: bool,
    pub notes: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub description: String,
    pub required_env: Vec<RequiredEnv>,
    /// The workflow definition, as `POST /v1/workflows` takes it.
    #[schema(value_type = WorkflowDefinitionSchema)]
    pub definition: Value,
}

/// A template as the list shows it: without its definition.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TemplateSummary {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub required_env: &'static [RequiredEnv],
}

/// Every built-in template, in the order of [`SOURCES`].
pub fn all() -> &'static [Template] {
    static ALL: OnceLock<Vec<Template>> = OnceLock::new();
    ALL.get_or_init(|| {
        SOURCES
            .iter()
            .map(|s| serde_json::from_str(s).expect("built-in templates parse (checked by tests)"))
            .collect()
    })
}

fn find(id: &str) -> Result<&'static Template, ApiError> {
    all().iter().find(|t| t.id == id).ok_or_else(|| {
        ApiError::not_found("template")
            .details(json!({"templates": all().iter().map(|t| &t.id).collect::<Vec<_>>()}))
    })
}

/// `GET /v1/templates`: id, name, description and required variables.
#[utoipa::path(
    get,
    path = "/v1/templates",
    operation_id = "list_templates",
    tag = "templates",
    summary = "List the built-in templates (one page)",
    responses((status = 200, description = "Every template, without definitions", body = Page<TemplateSummary>))
)]
pub async fn list(_who: AuthUser) -> impl IntoResponse {
    let items = all()
        .iter()
        .map(|t| TemplateSummary {
            id: &t.id,
            name: &t.name,
            description: &t.description,
            required_env: &t.required_env,
        })
        .collect();
    Json(Page::all(items))
}

/// `GET /v1/templates/{id}`: the template with its definition.
#[utoipa::path(
    get,
    path = "/v1/templates/{id}",
    operation_id = "get_template",
    tag = "templates",
    summary = "Read a template with its definition",
    params(("id" = String, Path, description = "Template id")),
    responses(
        (status = 200, description = "The template", body = Template),
        (status = 404, description = "`not_found`: no such template (the ids in `details.templates`)", body = ErrorBody),
    )
)]
pub async fn get(
    _who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(find(&id)?.clone()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FromTemplateBody {
    /// The new workflow's name (not blank); default: the template definition's.
    #[schema(pattern = r"\S")]
    name: Option<String>,
}

/// `POST /v1/workflows/from-template/{template_id}` with an optional body
/// `{"name"}`: a new workflow (a draft) from the template. Set the variables
/// in `required_env`, then deploy it.
#[utoipa::path(
    post,
    path = "/v1/workflows/from-template/{template_id}",
    operation_id = "create_workflow_from_template",
    tag = "templates",
    summary = "Create a workflow (a draft) from a template",
    description = "Set the variables in the template's `required_env`, then deploy it.",
    params(("template_id" = String, Path, description = "Template id")),
    request_body(content = Option<FromTemplateBody>, description = "Optional; an empty body keeps the template's name"),
    responses(
        (status = 201, description = "Created, not deployed", body = Workflow,
            headers(("location" = String, description = "The workflow's URL"))),
        (status = 400, description = "`invalid_json`, `invalid_request`, or `invalid_definition` (e.g. a bad name)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such template", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
    )
)]
pub async fn create_from(
    st: St,
    who: AuthUser,
    ApiPath(template_id): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let t = find(&template_id)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
        } else {
            ApiError::new(ErrorCode::InvalidRequest, e.body_text())
        }
    })?;
    // No body, or `null`, keeps the template's name.
    let b: Option<FromTemplateBody> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            let code = if e.is_data() {
                ErrorCode::InvalidRequest
            } else {
                ErrorCode::InvalidJson
            };
            ApiError::new(code, format!("body: {e}"))
        })?
    };
    let mut definition = t.definition.clone();
    if let Some(name) = b.and_then(|b| b.name) {
        definition["name"] = json!(name);
    }
    let def = check(&st, &definition)?;
    let wf = st.store.create_workflow(&def, Some(&who.user.id)).await?;
    tracing::info!(workflow_id = %wf.id, template = %t.id, "workflow created from template");
    st.audit(
        &who.principal,
        "workflow",
        "workflow.created",
        Some(&wf.id),
        format!("created workflow `{}` from template `{}`", wf.name, t.id),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        [("location", format!("/v1/workflows/{}", wf.id))],
        Json(wf),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_template_is_a_valid_definition_naming_its_required_env() {
        assert!(all().len() >= 2);
        let mut ids = BTreeSet::new();
        for t in all() {
            assert!(ids.insert(&t.id), "duplicate template id {}", t.id);
            let (def, _) = weft_shared::validate::parse_and_validate(&t.definition)
                .unwrap_or_else(|e| panic!("template {}: {e:?}", t.id));
            let used = weft_shared::validate::env_refs(&def);
            let declared: BTreeSet<String> =
                t.required_env.iter().map(|v| v.name.clone()).collect();
            assert_eq!(used, declared, "template {}", t.id);
            for k in ["LLM_BASE_URL", "LLM_API_KEY"] {
                assert!(used.contains(k), "template {} does not use {k}", t.id);
            }
        }
    }
}
