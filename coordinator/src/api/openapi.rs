//! The OpenAPI 3.1 document, served at `GET /openapi.json` (no auth).
//!
//! Operations come from the `#[utoipa::path]` annotation on each handler,
//! collected by the route table in `mod.rs` (a route without one does not
//! compile); schemas come from the types the handlers take and return. Then,
//! in one place rather than on every handler:
//!
//! - the security schemes (`bearerAuth`, `apiKey` in `x-api-key`) apply to
//!   every `/v1/**` operation except the callbacks (their URL carries a
//!   one-time token), each with 401 and 403 responses;
//! - every `/v1/**` operation can answer 500 `internal`, and 400
//!   `invalid_request` when it has parameters (one may not be UTF-8);
//! - the workflow definition's schema is the JSON Schema users read,
//!   `docs/workflow.schema.json`, embedded with its `$defs` as components;
//! - links ([`LINKS`]): where an id a response returns is used next, for
//!   readers and for stateful fuzzing (create → deploy → run → cancel).

use super::error::ErrorBody;
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{OpenApi, PartialSchema, ToSchema};

/// What the document says outside the operations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weft coordinator API",
        description = "Define, deploy and run AI workflows on a Weft cluster. Every error is \
            `{\"error\": {\"code\", \"message\", \"details\"}}` with a stable `code`; lists are \
            `{\"items\", \"next_cursor\"}`, paged with `?limit=&cursor=`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    // Schemas that only parameters name (utoipa collects those of bodies).
    components(schemas(ErrorBody, super::runs::RunMode, super::export::OnConflict)),
    tags(
        (name = "workflows", description = "Workflow definitions and their lifecycle: deploy, undeploy, the active switch"),
        (name = "archives", description = "Export and import as zip archives, and the drafts an import replaced"),
        (name = "templates", description = "Built-in workflow templates"),
        (name = "runs", description = "Starting, reading and cancelling runs, and the run monitor"),
        (name = "env", description = "Environment variables per workflow"),
        (name = "callbacks", description = "Resuming async API nodes"),
        (name = "access", description = "Users and their tokens, workflows' API keys, sharing, and the audit log"),
        (name = "system", description = "Health, readiness, metrics, workers and this document"),
    )
)]
struct ApiDoc;

/// The document as JSON, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "system",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object))
)]
pub async fn serve() -> impl IntoResponse {
    axum::Json(document())
}

/// A link: the response of operation `from` with `status` links to every
/// operation on `to` and the paths under it that take exactly `params` (name,
/// runtime expression) as their path parameters.
struct Link {
    from: &'static str,
    status: &'static str,
    params: &'static [(&'static str, &'static str)],
    to: &'static str,
}

const fn link(
    from: &'static str,
    status: &'static str,
    params: &'static [(&'static str, &'static str)],
    to: &'static str,
) -> Link {
    Link {
        from,
        status,
        params,
        to,
    }
}

const LINKS: &[Link] = &[
    link(
        "create_workflow",
        "201",
        &[("id", "$response.body#/id")],
        "/v1/workflows/{id}",
    ),
    link(
        "create_workflow_from_template",
        "201",
        &[("id", "$response.body#/id")],
        "/v1/workflows/{id}",
    ),
    link(
        "import_workflow",
        "201",
        &[("id", "$response.body#/workflow/id")],
        "/v1/workflows/{id}",
    ),
    link(
        "deploy_workflow",
        "201",
        &[("id", "$response.body#/workflow_id")],
        "/v1/workflows/{id}",
    ),
    link(
        "start_run",
        "200",
        &[("id", "$response.body#/id")],
        "/v1/runs/{id}",
    ),
    link(
        "start_run",
        "202",
        &[("id", "$response.body#/run_id")],
        "/v1/runs/{id}",
    ),
    link(
        "create_env_var",
        "201",
        &[("id", "$request.path.id"), ("name", "$response.body#/name")],
        "/v1/workflows/{id}/env/{name}",
    ),
    // The first item of a list.
    link(
        "list_workflows",
        "200",
        &[("id", "$response.body#/items/0/id")],
        "/v1/workflows/{id}",
    ),
    link(
        "list_runs",
        "200",
        &[("id", "$response.body#/items/0/id")],
        "/v1/runs/{id}",
    ),
    link(
        "list_templates",
        "200",
        &[("id", "$response.body#/items/0/id")],
        "/v1/templates/{id}",
    ),
    link(
        "list_templates",
        "200",
        &[("template_id", "$response.body#/items/0/id")],
        "/v1/workflows/from-template/{template_id}",
    ),
    link(
        "list_env_vars",
        "200",
        &[
            ("id", "$request.path.id"),
            ("name", "$response.body#/items/0/name"),
        ],
        "/v1/workflows/{id}/env/{name}",
    ),
];

/// The `{name}`s of a path template.
fn path_params(path: &str) -> Vec<&str> {
    path.split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(p, _)| p))
        .collect()
}

/// Adds [`LINKS`] to the operations' responses.
fn add_links(paths: &mut Map<String, Value>) {
    let mut targets: Vec<(String, Vec<String>, String)> = Vec::new();
    for (path, item) in paths.iter() {
        for op in item.as_object().into_iter().flat_map(|m| m.values()) {
            if let Some(id) = op["operationId"].as_str() {
                let params = path_params(path).into_iter().map(String::from).collect();
                targets.push((path.clone(), params, id.to_string()));
            }
        }
    }
    for Link {
        from: source,
        status,
        params,
        to: target,
    } in LINKS
    {
        let mut links = Map::new();
        for (path, path_params, id) in &targets {
            let mut names: Vec<&str> = params.iter().map(|(n, _)| *n).collect();
            let mut have: Vec<&str> = path_params.iter().map(String::as_str).collect();
            names.sort_unstable();
            have.sort_unstable();
            if path.starts_with(target) && names == have {
                let parameters: Map<String, Value> = params
                    .iter()
                    .map(|(n, e)| (n.to_string(), json!(e)))
                    .collect();
                links.insert(
                    id.clone(),
                    json!({"operationId": id, "parameters": parameters}),
                );
            }
        }
        let response = paths
            .values_mut()
            .flat_map(|item| {
                item.as_object_mut()
                    .into_iter()
                    .flat_map(|m| m.values_mut())
            })
            .find(|op| op["operationId"] == *source)
            .and_then(|op| op["responses"].get_mut(*status))
            .unwrap_or_else(|| panic!("LINKS names {source} {status}, which is not documented"));
        assert!(
            !links.is_empty(),
            "LINKS: nothing on {target} to link {source} to"
        );
        if let Value::Object(existing) = &mut response["links"] {
            existing.extend(links);
        } else {
            response["links"] = Value::Object(links);
        }
    }
}

const SECURED_PREFIX: &str = "/v1/";
const UNSECURED_PREFIX: &str = "/v1/callbacks/";

fn build() -> Value {
    let mut doc = ApiDoc::openapi();
    doc.merge(super::Operations::openapi());
    let mut doc = serde_json::to_value(&doc).expect("the OpenAPI document serializes");

    let components = doc["components"]
        .as_object_mut()
        .expect("the document has components");
    components.insert(
        "securitySchemes".into(),
        json!({
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token: `Authorization: Bearer <token>`.",
            },
            "apiKey": {
                "type": "apiKey",
                "in": "header",
                "name": "x-api-key",
                "description": "The same token in the `x-api-key` header.",
            },
        }),
    );
    let schemas = components["schemas"]
        .as_object_mut()
        .expect("the document has schemas");
    embed_workflow_schema(schemas);

    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        })
    };
    let paths = doc["paths"]
        .as_object_mut()
        .expect("the document has paths");
    add_links(paths);
    add_definition_examples(paths);
    for (path, item) in paths.iter_mut() {
        if !path.starts_with(SECURED_PREFIX) {
            continue;
        }
        let secured = !path.starts_with(UNSECURED_PREFIX);
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            let params = op["parameters"].as_array().map_or(0, Vec::len);
            let responses = op["responses"]
                .as_object_mut()
                .expect("every operation has responses");
            if secured {
                responses.entry("401").or_insert_with(|| {
                    error(
                        "`unauthorized`: no valid token in `Authorization: Bearer` or `x-api-key`",
                    )
                });
                responses
                    .entry("403")
                    .or_insert_with(|| error("`forbidden`: the token may not do this"));
            }
            if params > 0 {
                responses.entry("400").or_insert_with(|| {
                    error("`invalid_request`: a parameter that cannot be read (e.g. not UTF-8)")
                });
            }
            responses
                .entry("500")
                .or_insert_with(|| error("`internal`: a fault in the coordinator (see its log)"));
            if secured {
                op["security"] = json!([{"bearerAuth": []}, {"apiKey": []}]);
            }
        }
    }
    doc
}

/// A definition from `docs/examples/` as the example body of every operation
/// that takes one (a fuzzer starts from it too).
fn add_definition_examples(paths: &mut Map<String, Value>) {
    let example: Value = serde_json::from_str(include_str!("../../../docs/examples/triage.json"))
        .expect("docs/examples/triage.json is JSON (checked by tests)");
    let schema_ref = format!("#/components/schemas/{}", WorkflowDefinitionSchema::name());
    for item in paths.values_mut() {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            if let Some(media) = op.pointer_mut("/requestBody/content/application~1json") {
                if media["schema"]["$ref"] == schema_ref.as_str() {
                    media["example"] = example.clone();
                }
            }
        }
    }
}

/// The definition schema's `$defs`, as components named `WorkflowDefinition.<def>`.
fn def_name(def: &str) -> String {
    format!("WorkflowDefinition.{def}")
}

/// Puts `docs/workflow.schema.json` in place of the [`WorkflowDefinitionSchema`]
/// placeholder: the root as `WorkflowDefinition`, each of its `$defs` as a
/// component of its own, `$ref`s rewritten to point at them.
fn embed_workflow_schema(schemas: &mut Map<String, Value>) {
    let mut root: Value = serde_json::from_str(include_str!("../../../docs/workflow.schema.json"))
        .expect("docs/workflow.schema.json is JSON (checked by tests)");
    let root = root
        .as_object_mut()
        .expect("the workflow schema is an object");
    for k in ["$schema", "$id"] {
        root.remove(k);
    }
    let defs = root.remove("$defs").unwrap_or_default();
    for (name, mut def) in defs.as_object().cloned().unwrap_or_default() {
        rewrite_refs(&mut def);
        schemas.insert(def_name(&name), def);
    }
    let mut root = Value::Object(root.clone());
    rewrite_refs(&mut root);
    schemas.insert(WorkflowDefinitionSchema::name().into_owned(), root);
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(def) = r.strip_prefix("#/$defs/") {
                    *r = format!("#/components/schemas/{}", def_name(def));
                }
            }
            m.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// Stands for a workflow definition in the types' schemas (`value_type`);
/// replaced by `docs/workflow.schema.json` when the document is built.
pub struct WorkflowDefinitionSchema;

impl PartialSchema for WorkflowDefinitionSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("replaced by docs/workflow.schema.json"))
            .into()
    }
}

impl ToSchema for WorkflowDefinitionSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "WorkflowDefinition".into()
    }
}

/// A zip archive (`flow_definition.json`, `app_definition.json`,
/// `env_variables.json`), as export returns and import takes it.
pub struct ZipArchive;

impl PartialSchema for ZipArchive {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .content_media_type("application/zip")
            .into()
    }
}

impl ToSchema for ZipArchive {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ref_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|v| walk(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local refs only");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn it_is_openapi_3_1() {
        assert!(document()["openapi"].as_str().unwrap().starts_with("3.1"));
    }

    /// Routes come from `route_table!` only, so [`super::super::ROUTES`] is
    /// every route served (the suite checks the document against it).
    #[test]
    fn routes_are_added_only_by_the_route_table() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut found = Vec::new();
        for f in files {
            let src = std::fs::read_to_string(&f).unwrap();
            for name in ["route", "route_service", "nest", "nest_service"] {
                let call = format!(".{name}(");
                found.extend(std::iter::repeat_n(
                    format!("{} {call}", f.display()),
                    src.matches(&call).count(),
                ));
            }
        }
        // The two in `route_table!`: the authenticated routes and the open ones.
        assert_eq!(
            found.len(),
            2,
            "routes are added in `route_table!` (api/mod.rs) and nowhere else: {found:#?}"
        );
    }
}
