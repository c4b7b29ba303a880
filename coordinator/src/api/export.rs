//! Export and import: a workflow version as a zip archive, and a zip archive
//! as a new workflow or as the new draft of an existing one.
//!
//! The archive holds three JSON files:
//!
//! | file | what |
//! | --- | --- |
//! | `flow_definition.json` | the definition, as `POST /v1/workflows` takes it |
//! | `app_definition.json` | format, workflow name and description, version number and time, the timeout and guardrails, the endpoint's mode and timeouts |
//! | `env_variables.json` | `{"variables": [{name, notes, secure, value}]}`; a secure variable has no `value` key at all |
//!
//! Never in an archive: API keys, sharing, the endpoint's push target (URL,
//! access token) and signing secret, audit records. Importing applies the
//! archive's endpoint mode and timeouts to the draft (validated as
//! `PUT …/endpoint` does; 400 `invalid_archive` naming the field); an
//! archive whose `endpoint.mode` is `null` (written before endpoints
//! existed) leaves them as they are.
//!
//! Importing validates the definition exactly as create does (400
//! `invalid_definition`, every error listed); a body that is not a zip, or
//! lacks a file, or holds a file that is not what it should be, is 400
//! `invalid_archive`. Variables: a name the workflow lacks is created; a name
//! it has with another value or secure flag is a conflict, resolved by
//! `on_conflict` (`keep`, the default, or `overwrite`); a secure variable
//! (which comes without its value) is never created — it is reported in
//! `needs_value` for someone to set — and only its secure flag can overwrite
//! an existing plain variable (whose value is then encrypted in place).
//! Variables of the workflow that the archive does not name are left alone.

use super::auth::AuthUser;
use super::endpoint::field_error;
use super::env::check_name;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::openapi::ZipArchive;
use super::workflows::check;
use super::{Page, St};
use crate::access::Role;
use crate::endpoint::{
    check_mode, check_settings, EndpointSettings, FieldError, DEFAULT_TIMEOUT_MS,
};
use crate::model::{DraftBackup, EnvVarRow, Workflow};
use crate::store::EnvWrite;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Cursor, Read, Write};
use weft_shared::error::ErrorCode;
use weft_shared::time::now_ms;

pub const FLOW_FILE: &str = "flow_definition.json";
pub const APP_FILE: &str = "app_definition.json";
pub const ENV_FILE: &str = "env_variables.json";
/// The archive format, in `app_definition.json`.
pub const FORMAT: &str = "weft-export/1";
/// Largest file an archive may hold, uncompressed (a guard against zip bombs).
const MAX_ENTRY_BYTES: u64 = 8 * 1024 * 1024;
/// Most entries an archive may hold.
const MAX_ENTRIES: usize = 64;

fn bad_archive(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArchive, message)
}

/// The files of a zip archive by name. Directories and macOS metadata
/// (`__MACOSX/`) are skipped; each file is bounded in size.
pub fn read_zip(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, ApiError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| bad_archive(format!("the body is not a readable zip archive: {e}")))?;
    if zip.len() > MAX_ENTRIES {
        return Err(bad_archive(format!(
            "the archive holds {} entries; at most {MAX_ENTRIES} are read",
            zip.len()
        )));
    }
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let entry = zip
            .by_index(i)
            .map_err(|e| bad_archive(format!("entry {i} of the archive is unreadable: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| bad_archive(format!("entry {i} has an unreadable name: {e}")))?
            .into_owned();
        if entry.is_dir() || name.starts_with("__MACOSX/") {
            continue;
        }
        if entry.size() > MAX_ENTRY_BYTES {
            return Err(bad_archive(format!(
                "`{name}` is {} bytes uncompressed; the limit is {MAX_ENTRY_BYTES}",
                entry.size()
            )));
        }
        let mut data = Vec::new();
        // The size in the header may lie: read one byte past the limit.
        entry
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(|e| bad_archive(format!("`{name}` cannot be decompressed: {e}")))?;
        if data.len() as u64 > MAX_ENTRY_BYTES {
            return Err(bad_archive(format!(
                "`{name}` is over {MAX_ENTRY_BYTES} bytes uncompressed"
            )));
        }
        if out.insert(name.clone(), data).is_some() {
            return Err(bad_archive(format!(
                "`{name}` appears twice in the archive"
            )));
        }
    }
    Ok(out)
}

/// A zip archive of `files` (deflated).
pub fn write_zip(files: &[(&str, &[u8])]) -> Result<Vec<u8>, ApiError> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    for (name, data) in files {
        zip.start_file(*name, opts).map_err(ApiError::internal)?;
        zip.write_all(data).map_err(ApiError::internal)?;
    }
    Ok(zip.finish().map_err(ApiError::internal)?.into_inner())
}

/// One of the three files: at the top of the archive, or in one folder (as
/// when an unpacked export is zipped again).
fn file<'a>(files: &'a BTreeMap<String, Vec<u8>>, name: &str) -> Result<&'a [u8], ApiError> {
    let found: Vec<_> = files
        .iter()
        .filter(|(path, _)| path.as_str() == name || path.rsplit('/').next() == Some(name))
        .collect();
    match found.as_slice() {
        [(_, data)] => Ok(data.as_slice()),
        [] => Err(bad_archive(format!(
            "the archive has no `{name}`; an export holds {FLOW_FILE}, {APP_FILE} and {ENV_FILE}"
        ))
        .details(json!({"missing": name, "files": files.keys().collect::<Vec<_>>()}))),
        _ => Err(bad_archive(format!(
            "the archive holds more than one `{name}`"
        ))),
    }
}

fn json_file(files: &BTreeMap<String, Vec<u8>>, name: &str) -> Result<Value, ApiError> {
    serde_json::from_slice(file(files, name)?).map_err(|e| {
        bad_archive(format!("`{name}` is not valid JSON: {e}")).details(json!({"file": name}))
    })
}

/// A variable as `env_variables.json` holds it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedVar {
    pub name: String,
    /// Absent for a secure variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default)]
    pub secure: bool,
    #[serde(default)]
    pub notes: String,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct EnvFile {
    variables: Vec<ArchivedVar>,
}

/// What an import brings: the definition (not yet validated), variables
/// and the endpoint's mode and timeouts (checked).
struct Archive {
    definition: Value,
    variables: Vec<ArchivedVar>,
    endpoint: Option<EndpointSettings>,
}

/// The endpoint section of `app_definition.json`; `None` when its `mode` is
/// `null` or it is absent. `min_ms`: the shortest timeout allowed.
fn archived_endpoint(app: &Value, min_ms: u64) -> Result<Option<EndpointSettings>, ApiError> {
    let Some(ep) = app.get("endpoint").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let in_file = |e: FieldError| {
        field_error(
            ErrorCode::InvalidArchive,
            FieldError {
                message: format!("`{APP_FILE}` endpoint: {}", e.message),
                ..e
            },
        )
    };
    let not_ms = |field: &'static str| {
        in_file(FieldError {
            field,
            message: format!("{field} must be a whole number of milliseconds"),
            details: json!({"field": field}),
        })
    };
    let Some(ep) = ep.as_object() else {
        return Err(bad_archive(format!(
            "`{APP_FILE}`: endpoint must be an object"
        )));
    };
    let mode = match ep.get("mode") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(m)) => check_mode(m).map_err(in_file)?,
        Some(other) => check_mode(&other.to_string()).map_err(in_file)?,
    };
    let sync_timeout_ms = match ep.get("sync_timeout_ms") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_MS,
        Some(v) => v.as_u64().ok_or_else(|| not_ms("sync_timeout_ms"))?,
    };
    let async_timeout_ms = match ep.get("async_timeout_ms") {
        None => Some(DEFAULT_TIMEOUT_MS),
        Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| not_ms("async_timeout_ms"))?),
    };
    let s = EndpointSettings {
        mode,
        sync_timeout_ms,
        async_timeout_ms,
        push_url: None,
    };
    check_settings(&s, min_ms).map_err(in_file)?;
    Ok(Some(s))
}

fn parse_archive(bytes: &[u8], min_timeout_ms: u64) -> Result<Archive, ApiError> {
    let files = read_zip(bytes)?;
    let definition = json_file(&files, FLOW_FILE)?;
    let app = json_file(&files, APP_FILE)?;
    if !app.is_object() {
        return Err(bad_archive(format!("`{APP_FILE}` must be a JSON object")));
    }
    if let Some(f) = app.get("format") {
        if f != FORMAT {
            return Err(bad_archive(format!(
                "`{APP_FILE}` has format {f}; this coordinator reads `{FORMAT}`"
            )));
        }
    }
    let endpoint = archived_endpoint(&app, min_timeout_ms)?;
    let env: EnvFile = serde_json::from_value(json_file(&files, ENV_FILE)?).map_err(|e| {
        bad_archive(format!("`{ENV_FILE}`: {e}")).details(json!({"file": ENV_FILE}))
    })?;
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for v in &env.variables {
        if let Err(e) = check_name(&v.name) {
            problems.push(e.message);
        }
        if !seen.insert(v.name.as_str()) {
            problems.push(format!("variable `{}` appears twice", v.name));
        }
        match (v.secure, &v.value) {
            (true, Some(_)) => problems.push(format!(
                "secure variable `{}` carries a value; archives never hold secure values",
                v.name
            )),
            (false, None) => problems.push(format!("variable `{}` has no value", v.name)),
            _ => {}
        }
    }
    if !problems.is_empty() {
        return Err(bad_archive(format!(
            "`{ENV_FILE}` has {} problem{}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ))
        .details(json!({"file": ENV_FILE, "errors": problems})));
    }
    Ok(Archive {
        definition,
        variables: env.variables,
        endpoint,
    })
}

/// How a conflicting variable is resolved.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    #[default]
    Keep,
    Overwrite,
}

/// What an import did with each variable of the archive, by name.
#[derive(Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EnvReport {
    /// Names the workflow lacked: created.
    pub created: Vec<String>,
    /// Conflicts resolved by `overwrite`.
    pub overwritten: Vec<String>,
    /// Conflicts resolved by `keep`: the workflow's variable is untouched.
    pub kept: Vec<String>,
    /// Already the same (for a secure variable: already secure).
    pub unchanged: Vec<String>,
    /// Secure variables the workflow lacks: not created, as the archive has
    /// no value for them; set them before running.
    pub needs_value: Vec<String>,
}

/// Decides each archived variable against the workflow's `existing` ones.
/// `seal` encrypts a value for a variable that becomes secure.
fn plan_env(
    workflow_id: &str,
    archived: &[ArchivedVar],
    existing: &[EnvVarRow],
    on_conflict: OnConflict,
    seal: impl Fn(&str) -> Result<String, ApiError>,
) -> Result<(Vec<EnvWrite>, EnvReport), ApiError> {
    let now = now_ms();
    let by_name: HashMap<&str, &EnvVarRow> =
        existing.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut writes = Vec::new();
    let mut report = EnvReport::default();
    for a in archived {
        let name = a.name.clone();
        let Some(e) = by_name.get(a.name.as_str()) else {
            match &a.value {
                Some(value) if !a.secure => {
                    writes.push(EnvWrite::Create(EnvVarRow {
                        workflow_id: workflow_id.to_string(),
                        name: a.name.clone(),
                        value: value.clone(),
                        secure: false,
                        notes: a.notes.clone(),
                        created_at_ms: now,
                        updated_at_ms: now,
                    }));
                    report.created.push(name);
                }
                _ => report.needs_value.push(name),
            }
            continue;
        };
        let same = match (&a.value, a.secure) {
            (_, true) => e.secure,
            (Some(v), false) => !e.secure && &e.value == v,
            (None, false) => true, // refused when the archive was parsed
        };
        if same {
            report.unchanged.push(name);
            continue;
        }
        if on_conflict == OnConflict::Keep {
            report.kept.push(name);
            continue;
        }
        let value = match &a.value {
            Some(v) if !a.secure => v.clone(),
            // Secure in the archive, plain here: encrypt the value in place.
            _ => seal(&e.value)?,
        };
        writes.push(EnvWrite::Replace(EnvVarRow {
            value,
            secure: a.secure,
            notes: a.notes.clone(),
            updated_at_ms: now,
            ..(*e).clone()
        }));
        report.overwritten.push(name);
    }
    Ok((writes, report))
}

// ---- export ----------------------------------------------------------------

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// A version number, or `draft`; default: the deployed version (or, when
    /// undeployed, the newest ever published).
    #[param(pattern = "^(draft|[0-9]{1,9})$")]
    version: Option<String>,
}

/// `GET /v1/workflows/{id}/export?version=N|draft`: the zip.
/// Editors and owners export; viewers may not.
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/export",
    operation_id = "export_workflow",
    tag = "archives",
    summary = "Export a version (or the draft) as a zip archive",
    description = "`flow_definition.json`, `app_definition.json` and `env_variables.json`; \
        secure variables' values are left out.",
    params(("id" = String, Path, description = "Workflow id"), ExportQuery),
    responses(
        (status = 200, description = "The archive", content_type = "application/zip", body = ZipArchive,
            headers(("content-disposition" = String, description = "`attachment; filename=\"<name>-v<N>.zip\"`"))),
        (status = 400, description = "`invalid_request`: `version` is not a number or `draft`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workflow or version", body = ErrorBody),
        (status = 409, description = "`not_deployed`: no version to export (pass `version=draft`)", body = ErrorBody),
    )
)]
pub async fn export(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    let wf = st
        .store
        .get_workflow(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    let number = match q.version.as_deref() {
        Some("draft") => None,
        Some(n) => Some(n.parse::<u32>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("version `{n}` is not a version number or `draft`"),
            )
        })?),
        None => Some(wf.deployed_version.or(wf.latest_version).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotDeployed,
                "workflow has no deployed version to export; pass version=draft to export the draft",
            )
        })?),
    };
    let (definition, created_at_ms, endpoint) = match number {
        None => {
            let (endpoint, _) = st
                .store
                .get_endpoint(&id)
                .await?
                .ok_or_else(|| ApiError::not_found("workflow"))?;
            (wf.definition.clone(), wf.updated_at_ms, endpoint.settings)
        }
        Some(n) => {
            let v = st
                .store
                .get_version(&id, n)
                .await?
                .ok_or_else(|| ApiError::not_found(&format!("version {n} of this workflow")))?;
            (v.definition, v.created_at_ms, v.endpoint.settings)
        }
    };
    let app = json!({
        "format": FORMAT,
        "workflow": {
            "name": definition.name,
            "description": definition.description,
            "created_at_ms": wf.created_at_ms,
            "exported_from": wf.id,
        },
        "version": {
            // null for the draft.
            "number": number,
            "draft": number.is_none(),
            "created_at_ms": created_at_ms,
        },
        "exported_at_ms": now_ms(),
        "timeout_ms": definition.timeout_ms,
        "guardrails": definition.guardrails,
        // The endpoint's mode and timeouts (`async_timeout_ms` null: none).
        // Never the push target (URL, access token) or signing secret.
        "endpoint": {
            "mode": endpoint.mode.as_str(),
            "sync_timeout_ms": endpoint.sync_timeout_ms,
            "async_timeout_ms": endpoint.async_timeout_ms,
        },
    });
    let variables: Vec<ArchivedVar> = st
        .store
        .list_env(&id)
        .await?
        .into_iter()
        .map(|v| ArchivedVar {
            // A secure value is left out entirely, not masked.
            value: (!v.secure).then_some(v.value),
            name: v.name,
            secure: v.secure,
            notes: v.notes,
        })
        .collect();
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).map_err(ApiError::internal);
    let flow = pretty(&serde_json::to_value(&definition).map_err(ApiError::internal)?)?;
    let env = pretty(&serde_json::to_value(EnvFile { variables }).map_err(ApiError::internal)?)?;
    let zip = write_zip(&[
        (FLOW_FILE, &flow),
        (APP_FILE, &pretty(&app)?),
        (ENV_FILE, &env),
    ])?;
    let filename = format!(
        "{}-{}.zip",
        slug(&definition.name),
        number.map_or("draft".to_string(), |n| format!("v{n}"))
    );
    tracing::info!(workflow_id = %id, version = ?number, "workflow exported");
    st.audit(
        &who.principal,
        "workflow",
        "workflow.exported",
        Some(&id),
        format!(
            "exported `{}` ({})",
            wf.name,
            number.map_or("draft".to_string(), |n| format!("version {n}"))
        ),
    )
    .await;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        zip,
    )
        .into_response())
}

/// A file-name-safe form of a workflow name.
fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if s.trim_matches('-').is_empty() {
        "workflow".into()
    } else {
        s
    }
}

// ---- import ----------------------------------------------------------------

/// The zip body, checked for its content type.
fn zip_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/zip" && mime != "application/x-zip-compressed" {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the archive as the body with `Content-Type: application/zip`",
        ));
    }
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the archive is too large (max_body_bytes)",
            )
        } else {
            ApiError::new(ErrorCode::InvalidRequest, e.body_text())
        }
    })
}

fn sealer(st: &St) -> impl Fn(&str) -> Result<String, ApiError> + '_ {
    move |plain| {
        st.crypto
            .encrypt(plain)
            .map_err(|e| ApiError::new(ErrorCode::EncryptionUnavailable, e.to_string()))
    }
}

/// What an import did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Imported {
    pub workflow: Workflow,
    /// The draft it replaced, when `backup=true`; null otherwise.
    pub backup: Option<DraftBackup>,
    pub env: EnvReport,
}

/// `POST /v1/workflows/import`: the archive as a new workflow (a draft, not
/// deployed), with its variables.
#[utoipa::path(
    post,
    path = "/v1/workflows/import",
    operation_id = "import_workflow",
    tag = "archives",
    summary = "Import an archive as a new workflow (a draft)",
    request_body(content = ZipArchive, content_type = "application/zip"),
    responses(
        (status = 201, description = "Created, not deployed", body = Imported,
            headers(("location" = String, description = "The workflow's URL"))),
        (status = 400, description = "`invalid_archive` (not a zip, a file missing or malformed) or `invalid_definition` (every error in `details.errors`)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/zip`", body = ErrorBody),
    )
)]
pub async fn import_new(
    st: St,
    who: AuthUser,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let archive = parse_archive(
        &zip_body(&headers, body)?,
        st.config.endpoint_min_timeout_ms,
    )?;
    let def = check(&st, &archive.definition)?;
    let (writes, report) = plan_env("", &archive.variables, &[], OnConflict::Keep, sealer(&st))?;
    let rows: Vec<EnvVarRow> = writes
        .into_iter()
        .filter_map(|w| match w {
            EnvWrite::Create(r) => Some(r),
            EnvWrite::Replace(_) => None,
        })
        .collect();
    let wf = st
        .store
        .import_workflow(&def, &rows, archive.endpoint.as_ref(), Some(&who.user.id))
        .await?;
    tracing::info!(workflow_id = %wf.id, variables = rows.len(), "workflow imported");
    st.audit(
        &who.principal,
        "workflow",
        "workflow.imported",
        Some(&wf.id),
        format!(
            "imported `{}` as a new workflow with {} variable(s)",
            wf.name,
            rows.len()
        ),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        [("location", format!("/v1/workflows/{}", wf.id))],
        Json(Imported {
            workflow: wf,
            backup: None,
            env: report,
        }),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Save the draft being replaced (listed at `…/backups`).
    #[serde(default)]
    backup: bool,
    /// `keep` (default) or `overwrite`, for each conflicting variable.
    #[serde(default)]
    on_conflict: OnConflict,
}

/// `POST /v1/workflows/{id}/import?backup=&on_conflict=`: the archive as the
/// workflow's new draft. The deployed version is untouched until a deploy;
/// variable changes apply at once (variables are not versioned).
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/import",
    operation_id = "import_draft",
    tag = "archives",
    summary = "Import an archive as a workflow's new draft",
    description = "The deployed version is untouched until a deploy; variable changes apply at once.",
    params(("id" = String, Path, description = "Workflow id"), ImportQuery),
    request_body(content = ZipArchive, content_type = "application/zip"),
    responses(
        (status = 200, description = "Imported", body = Imported),
        (status = 400, description = "`invalid_archive`, `invalid_definition` or `invalid_request` (a bad parameter)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
        (status = 409, description = "`encryption_unavailable`: a variable to make secure, and no encryption key", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/zip`", body = ErrorBody),
    )
)]
pub async fn import_into(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    if st.store.get_workflow(&id).await?.is_none() {
        return Err(ApiError::not_found("workflow"));
    }
    let archive = parse_archive(
        &zip_body(&headers, body)?,
        st.config.endpoint_min_timeout_ms,
    )?;
    let def = check(&st, &archive.definition)?;
    let existing = st.store.list_env(&id).await?;
    let (writes, report) = plan_env(
        &id,
        &archive.variables,
        &existing,
        q.on_conflict,
        sealer(&st),
    )?;
    let (wf, backup) = st
        .store
        .import_draft(&id, &def, q.backup, &writes, archive.endpoint.as_ref())
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    st.forget_env(&id);
    tracing::info!(workflow_id = %id, backup = q.backup, variables = writes.len(), "workflow draft imported");
    st.audit(
        &who.principal,
        "workflow",
        "workflow.imported",
        Some(&id),
        format!(
            "imported a new draft of `{}`{}; {} variable(s) written",
            wf.name,
            if q.backup {
                ", the old draft backed up"
            } else {
                ""
            },
            writes.len()
        ),
    )
    .await;
    Ok(Json(Imported {
        workflow: wf,
        backup,
        env: report,
    }))
}

/// `GET /v1/workflows/{id}/backups`: drafts an import replaced, newest first.
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/backups",
    operation_id = "list_backups",
    tag = "archives",
    summary = "Drafts an import replaced (one page)",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "Every backup, newest first", body = Page<DraftBackup>),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
    )
)]
pub async fn backups(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Viewer).await?;
    if st.store.get_workflow(&id).await?.is_none() {
        return Err(ApiError::not_found("workflow"));
    }
    Ok(Json(Page::all(st.store.list_backups(&id).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, value: &str, secure: bool) -> EnvVarRow {
        EnvVarRow {
            workflow_id: "w".into(),
            name: name.into(),
            value: value.into(),
            secure,
            notes: String::new(),
            created_at_ms: 1,
            updated_at_ms: 1,
        }
    }

    fn var(name: &str, value: Option<&str>, secure: bool) -> ArchivedVar {
        ArchivedVar {
            name: name.into(),
            value: value.map(str::to_string),
            secure,
            notes: String::new(),
        }
    }

    #[test]
    fn zip_round_trips_and_garbage_is_invalid_archive() {
        let z = write_zip(&[("a.json", b"{}"), ("dir/b.json", b"[1]")]).unwrap();
        let files = read_zip(&z).unwrap();
        assert_eq!(files["a.json"], b"{}");
        assert_eq!(file(&files, "b.json").unwrap(), b"[1]");
        assert_eq!(
            read_zip(b"not a zip").unwrap_err().code,
            ErrorCode::InvalidArchive
        );
        assert_eq!(
            file(&files, "c.json").unwrap_err().code,
            ErrorCode::InvalidArchive
        );
    }

    #[test]
    fn variables_are_created_kept_overwritten_or_need_a_value() {
        let existing = [
            row("SAME", "1", false),
            row("DIFF", "old", false),
            row("WAS_PLAIN", "p", false),
            row("SECRET", "ciphertext", true),
        ];
        let archived = [
            var("NEW", Some("n"), false),
            var("SAME", Some("1"), false),
            var("DIFF", Some("new"), false),
            var("WAS_PLAIN", None, true),
            var("SECRET", None, true),
            var("NEW_SECRET", None, true),
        ];
        let seal = |p: &str| Ok(format!("sealed:{p}"));
        let (w, r) = plan_env("w", &archived, &existing, OnConflict::Keep, seal).unwrap();
        assert_eq!(r.created, ["NEW"]);
        assert_eq!(r.kept, ["DIFF", "WAS_PLAIN"]);
        assert_eq!(r.unchanged, ["SAME", "SECRET"]);
        assert_eq!(r.needs_value, ["NEW_SECRET"]);
        assert!(r.overwritten.is_empty());
        assert_eq!(w.len(), 1);

        let (w, r) = plan_env("w", &archived, &existing, OnConflict::Overwrite, seal).unwrap();
        assert_eq!(r.overwritten, ["DIFF", "WAS_PLAIN"]);
        assert!(r.kept.is_empty());
        assert!(w.contains(&EnvWrite::Replace(EnvVarRow {
            value: "sealed:p".into(),
            secure: true,
            updated_at_ms: match &w[2] {
                EnvWrite::Replace(r) => r.updated_at_ms,
                _ => 0,
            },
            ..row("WAS_PLAIN", "p", false)
        })));
    }
}
