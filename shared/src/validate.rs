//! Definition → [`Plan`]: every check at once, each error naming its node.
//!
//! The coordinator validates on create, update and deploy; the worker builds the
//! same plan from the definition a run carries, so both sides agree on what a
//! definition means.

use crate::expr::Expr;
use crate::model::*;
use crate::script;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// One problem in a definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationError {
    /// The node the problem is in (for an edge: the node it leaves); absent
    /// for problems of the workflow as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// A stable code: `unknown_kind`, `dangling_edge`, `cycle`, …
    pub code: &'static str,
    pub message: String,
}

impl ValidationError {
    fn at(node: &str, code: &'static str, message: impl Into<String>) -> Self {
        ValidationError {
            node_id: Some(node.to_string()),
            code,
            message: message.into(),
        }
    }
    fn workflow(code: &'static str, message: impl Into<String>) -> Self {
        ValidationError {
            node_id: None,
            code,
            message: message.into(),
        }
    }
}

/// One input field that does not match the input node's schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InputError {
    /// JSON Pointer to the offending field (`""` for the input as a whole).
    pub field: String,
    pub message: String,
}

/// A checked node: its parsed spec and compiled expressions.
#[derive(Debug)]
pub struct PlanNode {
    pub id: String,
    pub spec: NodeSpec,
    /// Condition: (branch, `when`); output: (field, expression).
    pub exprs: Vec<(String, Expr)>,
    pub timeout_ms: Option<u64>,
    pub retry: RetryPolicy,
    pub fault: Option<Fault>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanEdge {
    pub from: usize,
    pub to: usize,
    pub branch: Option<String>,
}

/// A definition that passed validation, ready to execute.
#[derive(Debug)]
pub struct Plan {
    pub name: String,
    pub timeout_ms: u64,
    pub nodes: Vec<PlanNode>,
    pub edges: Vec<PlanEdge>,
    /// Edge indices leaving / entering each node.
    pub out_edges: Vec<Vec<usize>>,
    pub in_edges: Vec<Vec<usize>>,
    pub input: usize,
    pub output: usize,
    /// Workflow-level guardrails (AI nodes without their own use these).
    pub guardrails: Option<crate::guardrails::GuardrailsConfig>,
    input_schema: Option<jsonschema::Validator>,
}

impl Plan {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Checks a run's input against the input node's schema, listing every
    /// mismatch by field. Values are not echoed back (they may be secret).
    pub fn check_input(&self, input: &Value) -> Result<(), Vec<InputError>> {
        match &self.input_schema {
            Some(v) => schema_errors(v, input),
            None => Ok(()),
        }
    }
}

/// Every mismatch of `value` against a compiled schema, by field; values are
/// not echoed back (`masked`).
fn schema_errors(v: &jsonschema::Validator, value: &Value) -> Result<(), Vec<InputError>> {
    let errors: Vec<InputError> = v
        .iter_errors(value)
        .map(|e| InputError {
            field: e.instance_path().to_string(),
            message: e.masked().to_string(),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks a value against a JSON Schema (a human node's `schema`), listing
/// every mismatch by field; values are not echoed back. A schema that does
/// not compile is one error at `""`.
pub fn check_against_schema(schema: &Value, value: &Value) -> Result<(), Vec<InputError>> {
    let validator = jsonschema::validator_for(schema).map_err(|e| {
        vec![InputError {
            field: String::new(),
            message: format!("the schema does not compile: {e}"),
        }]
    })?;
    schema_errors(&validator, value)
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && id.len() <= 64
}

fn check_timeout(errors: &mut Vec<ValidationError>, node: Option<&str>, what: &str, ms: u64) {
    check_timeout_max(errors, node, what, ms, MAX_TIMEOUT_MS);
}

/// The longest timeout a workflow may ask for: 600 s, or 30 days when it has
/// a `human` node (its runs wait without a worker).
pub fn max_workflow_timeout_ms(def: &WorkflowDefinition) -> u64 {
    if def.nodes.iter().any(|n| n.kind == "human") {
        MAX_HUMAN_TIMEOUT_MS
    } else {
        MAX_TIMEOUT_MS
    }
}

fn check_timeout_max(
    errors: &mut Vec<ValidationError>,
    node: Option<&str>,
    what: &str,
    ms: u64,
    max: u64,
) {
    if ms == 0 || ms > max {
        let mut message = format!("{what} timeout {ms} ms is out of range (1 to {max} ms)");
        if max == MAX_TIMEOUT_MS && what != "model" {
            message.push_str(&format!(
                "; up to {MAX_HUMAN_TIMEOUT_MS} ms (30 days) for a workflow with a `human` node and for the `human` node itself"
            ));
        }
        errors.push(match node {
            Some(n) => ValidationError::at(n, "timeout_out_of_range", message),
            None => ValidationError::workflow("timeout_out_of_range", message),
        });
    }
}

fn parse_config<T: serde::de::DeserializeOwned + Default>(
    node: &Node,
    errors: &mut Vec<ValidationError>,
    allow_missing: bool,
) -> Option<T> {
    if node.config.is_null() && allow_missing {
        return Some(T::default());
    }
    match serde_json::from_value::<T>(node.config.clone()) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(ValidationError::at(
                &node.id,
                "invalid_config",
                format!("config of a `{}` node: {e}", node.kind),
            ));
            None
        }
    }
}

fn parse_required<T: serde::de::DeserializeOwned>(
    node: &Node,
    errors: &mut Vec<ValidationError>,
) -> Option<T> {
    match serde_json::from_value::<T>(node.config.clone()) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(ValidationError::at(
                &node.id,
                "invalid_config",
                format!("config of a `{}` node: {e}", node.kind),
            ));
            None
        }
    }
}

fn compile_exprs(
    node_id: &str,
    items: impl IntoIterator<Item = (String, String)>,
    what: &str,
    errors: &mut Vec<ValidationError>,
) -> Vec<(String, Expr)> {
    let mut out = Vec::new();
    for (name, src) in items {
        match Expr::compile(&src) {
            Ok(e) => out.push((name, e)),
            Err(msg) => errors.push(ValidationError::at(
                node_id,
                "expression_does_not_compile",
                format!("{what} `{name}`: {msg}"),
            )),
        }
    }
    out
}

fn check_templates<'a>(
    node_id: &str,
    items: impl IntoIterator<Item = (&'a str, Vec<String>)>,
    allow_callback: bool,
    errors: &mut Vec<ValidationError>,
) {
    for (what, texts) in items {
        for t in texts {
            match crate::template::paths(&t) {
                Ok(paths) => {
                    if !allow_callback && paths.iter().any(|p| p.starts_with("callback")) {
                        errors.push(ValidationError::at(
                            node_id,
                            "invalid_template",
                            format!("{what}: `callback` is only known to async_api nodes"),
                        ));
                    }
                }
                Err(e) => errors.push(ValidationError::at(
                    node_id,
                    "invalid_template",
                    format!("{what}: {e}"),
                )),
            }
        }
    }
}

fn strings_of(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(strings_of).collect(),
        Value::Object(m) => m.values().flat_map(strings_of).collect(),
        _ => vec![],
    }
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

fn check_api(node_id: &str, cfg: &ApiConfig, is_async: bool, errors: &mut Vec<ValidationError>) {
    if !METHODS.contains(&cfg.method.to_ascii_uppercase().as_str()) {
        errors.push(ValidationError::at(
            node_id,
            "invalid_config",
            format!(
                "method `{}` is not one of {}",
                cfg.method,
                METHODS.join(", ")
            ),
        ));
    }
    if cfg.url.trim().is_empty() {
        errors.push(ValidationError::at(
            node_id,
            "invalid_config",
            "url is empty",
        ));
    }
    if cfg.max_response_bytes == 0 || cfg.max_response_bytes > 64 * 1024 * 1024 {
        errors.push(ValidationError::at(
            node_id,
            "invalid_config",
            "max_response_bytes must be between 1 and 67108864",
        ));
    }
    check_templates(
        node_id,
        [
            ("url", vec![cfg.url.clone()]),
            (
                "headers",
                cfg.headers
                    .iter()
                    .flat_map(|(k, v)| [k.clone(), v.clone()])
                    .collect(),
            ),
            (
                "query",
                cfg.query
                    .iter()
                    .flat_map(|(k, v)| [k.clone(), v.clone()])
                    .collect(),
            ),
            (
                "body",
                cfg.body.as_ref().map(strings_of).unwrap_or_default(),
            ),
        ],
        is_async,
        errors,
    );
}

fn check_guardrails(
    node_id: Option<&str>,
    g: &crate::guardrails::GuardrailsConfig,
    errors: &mut Vec<ValidationError>,
) {
    for msg in crate::guardrails::check(g) {
        let message = format!("guardrails: {msg}");
        errors.push(match node_id {
            Some(n) => ValidationError::at(n, "invalid_guardrails", message),
            None => ValidationError::workflow("invalid_guardrails", message),
        });
    }
}

fn check_ai(node_id: &str, cfg: &AiConfig, errors: &mut Vec<ValidationError>) {
    if cfg.base_url.trim().is_empty() {
        errors.push(ValidationError::at(
            node_id,
            "invalid_config",
            "base_url is empty",
        ));
    }
    if cfg.model.trim().is_empty() {
        errors.push(ValidationError::at(
            node_id,
            "invalid_config",
            "model is empty",
        ));
    }
    if let Some(t) = cfg.temperature {
        if !(0.0..=2.0).contains(&t) {
            errors.push(ValidationError::at(
                node_id,
                "invalid_config",
                format!("temperature {t} is out of range (0 to 2)"),
            ));
        }
    }
    if let Some(t) = cfg.model_timeout_ms {
        check_timeout(errors, Some(node_id), "model", t);
    }
    check_templates(
        node_id,
        [
            ("base_url", vec![cfg.base_url.clone()]),
            ("api_key", cfg.api_key.iter().cloned().collect()),
            ("system", cfg.system.iter().cloned().collect()),
            ("user", vec![cfg.user.clone()]),
        ],
        false,
        errors,
    );
    if let Some(g) = &cfg.guardrails {
        check_guardrails(Some(node_id), g, errors);
    }
}

/// The environment variables a definition names (`env.NAME` anywhere in its
/// templates, expressions or scripts): only these travel with a run.
pub fn env_refs(def: &WorkflowDefinition) -> std::collections::BTreeSet<String> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"\benv\.([A-Za-z_][A-Za-z0-9_]*)").expect("valid regex")
    });
    let mut out = std::collections::BTreeSet::new();
    for node in &def.nodes {
        for s in strings_of(&node.config) {
            for c in re.captures_iter(&s) {
                out.insert(c[1].to_string());
            }
        }
    }
    out
}

/// A node's parsed spec and compiled expressions.
type Checked = (NodeSpec, Vec<(String, Expr)>);

/// Parses and checks one node; `None` when it cannot be used.
fn check_node(node: &Node, errors: &mut Vec<ValidationError>) -> Option<Checked> {
    if let Some(t) = node.timeout_ms {
        let max = if node.kind == "human" {
            MAX_HUMAN_TIMEOUT_MS
        } else {
            MAX_TIMEOUT_MS
        };
        check_timeout_max(errors, Some(&node.id), "node", t, max);
    }
    if let Some(r) = &node.retry {
        if r.max_attempts == 0 || r.max_attempts > 10 {
            errors.push(ValidationError::at(
                &node.id,
                "invalid_retry",
                format!(
                    "retry.max_attempts {} is out of range (1 to 10)",
                    r.max_attempts
                ),
            ));
        }
    }
    match node.kind.as_str() {
        "input" => {
            let cfg: InputConfig = parse_config(node, errors, true)?;
            if let Some(schema) = &cfg.schema {
                if let Err(e) = jsonschema::validator_for(schema) {
                    errors.push(ValidationError::at(
                        &node.id,
                        "invalid_schema",
                        format!("input schema: {e}"),
                    ));
                    return None;
                }
            }
            Some((NodeSpec::Input(cfg), vec![]))
        }
        "condition" => {
            let cfg: ConditionConfig = parse_required(node, errors)?;
            if cfg.branches.is_empty() {
                errors.push(ValidationError::at(
                    &node.id,
                    "invalid_config",
                    "a condition needs at least one branch",
                ));
            }
            let mut seen = HashSet::new();
            for b in &cfg.branches {
                if !seen.insert(b.name.as_str()) {
                    errors.push(ValidationError::at(
                        &node.id,
                        "duplicate_branch",
                        format!("branch `{}` is named twice", b.name),
                    ));
                }
            }
            let exprs = compile_exprs(
                &node.id,
                cfg.branches
                    .iter()
                    .map(|b| (b.name.clone(), b.when.clone())),
                "branch",
                errors,
            );
            Some((NodeSpec::Condition(cfg), exprs))
        }
        "script" => {
            let cfg: ScriptConfig = parse_required(node, errors)?;
            if let Err(msg) = script::check(&cfg.code) {
                errors.push(ValidationError::at(
                    &node.id,
                    "script_does_not_compile",
                    format!("script: {msg}"),
                ));
            }
            Some((NodeSpec::Script(cfg), vec![]))
        }
        "output" => {
            let cfg: OutputConfig = parse_config(node, errors, true)?;
            let exprs = compile_exprs(&node.id, cfg.fields.clone(), "field", errors);
            Some((NodeSpec::Output(cfg), exprs))
        }
        "api" | "async_api" => {
            let cfg: ApiConfig = parse_required(node, errors)?;
            check_api(&node.id, &cfg, node.kind == "async_api", errors);
            let spec = if node.kind == "api" {
                NodeSpec::Api(cfg)
            } else {
                NodeSpec::AsyncApi(cfg)
            };
            Some((spec, vec![]))
        }
        "ai" => {
            let cfg: AiConfig = parse_required(node, errors)?;
            check_ai(&node.id, &cfg, errors);
            Some((NodeSpec::Ai(cfg), vec![]))
        }
        "human" => {
            let cfg: HumanConfig = parse_required(node, errors)?;
            if cfg.prompt.trim().is_empty() {
                errors.push(ValidationError::at(
                    &node.id,
                    "invalid_config",
                    "prompt is empty",
                ));
            }
            check_templates(
                &node.id,
                [("prompt", vec![cfg.prompt.clone()])],
                false,
                errors,
            );
            if let Some(schema) = &cfg.schema {
                if let Err(e) = jsonschema::validator_for(schema) {
                    errors.push(ValidationError::at(
                        &node.id,
                        "invalid_schema",
                        format!("value schema: {e}"),
                    ));
                }
            }
            Some((NodeSpec::Human(cfg), vec![]))
        }
        other => {
            errors.push(ValidationError::at(
                &node.id,
                "unknown_kind",
                format!(
                    "unknown node kind `{other}`; known kinds: {}",
                    NODE_KINDS.join(", ")
                ),
            ));
            None
        }
    }
}

/// Checks a definition and builds its plan, or lists every error found.
pub fn validate(def: &WorkflowDefinition) -> Result<Plan, Vec<ValidationError>> {
    let mut errors = Vec::new();
    if def.name.trim().is_empty() {
        errors.push(ValidationError::workflow(
            "invalid_name",
            "the workflow needs a name",
        ));
    }
    check_timeout_max(
        &mut errors,
        None,
        "workflow",
        def.timeout_ms,
        max_workflow_timeout_ms(def),
    );
    if let Some(g) = &def.guardrails {
        check_guardrails(None, g, &mut errors);
    }

    // Nodes.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut checked: Vec<Option<Checked>> = Vec::with_capacity(def.nodes.len());
    for (i, node) in def.nodes.iter().enumerate() {
        if !valid_id(&node.id) {
            errors.push(ValidationError::at(
                &node.id,
                "invalid_node_id",
                format!(
                    "node id `{}` must start with a letter or `_` and hold only letters, digits and `_` (64 at most)",
                    node.id
                ),
            ));
        }
        if index.insert(node.id.as_str(), i).is_some() {
            errors.push(ValidationError::at(
                &node.id,
                "duplicate_node_id",
                format!("node id `{}` is used twice", node.id),
            ));
        }
        checked.push(check_node(node, &mut errors));
    }

    let kind_of = |i: usize| def.nodes[i].kind.as_str();
    let inputs: Vec<usize> = (0..def.nodes.len())
        .filter(|&i| kind_of(i) == "input")
        .collect();
    let outputs: Vec<usize> = (0..def.nodes.len())
        .filter(|&i| kind_of(i) == "output")
        .collect();
    match inputs.len() {
        0 => errors.push(ValidationError::workflow(
            "missing_input",
            "the workflow has no `input` node",
        )),
        1 => {}
        _ => {
            for &i in &inputs[1..] {
                errors.push(ValidationError::at(
                    &def.nodes[i].id,
                    "multiple_inputs",
                    "a workflow has exactly one `input` node",
                ));
            }
        }
    }
    match outputs.len() {
        0 => errors.push(ValidationError::workflow(
            "missing_output",
            "the workflow has no `output` node",
        )),
        1 => {}
        _ => {
            for &i in &outputs[1..] {
                errors.push(ValidationError::at(
                    &def.nodes[i].id,
                    "multiple_outputs",
                    "a workflow has exactly one `output` node",
                ));
            }
        }
    }

    // Edges.
    let mut edges = Vec::new();
    let mut seen_edges = HashSet::new();
    for e in &def.edges {
        let (from, to) = (
            index.get(e.from.as_str()).copied(),
            index.get(e.to.as_str()).copied(),
        );
        let owner = if from.is_some() { &e.from } else { &e.to };
        let (Some(from), Some(to)) = (from, to) else {
            let missing: Vec<&str> = [&e.from, &e.to]
                .into_iter()
                .filter(|n| !index.contains_key(n.as_str()))
                .map(|s| s.as_str())
                .collect();
            errors.push(ValidationError::at(
                owner,
                "dangling_edge",
                format!(
                    "edge {} → {} names no node `{}`",
                    e.from,
                    e.to,
                    missing.join("`, `")
                ),
            ));
            continue;
        };
        if !seen_edges.insert((from, to, e.branch.clone())) {
            errors.push(ValidationError::at(
                &e.from,
                "duplicate_edge",
                format!("edge {} → {} is given twice", e.from, e.to),
            ));
            continue;
        }
        if kind_of(to) == "input" {
            errors.push(ValidationError::at(
                &e.from,
                "edge_into_input",
                format!("edge {} → {} enters the input node", e.from, e.to),
            ));
        }
        if kind_of(from) == "output" {
            errors.push(ValidationError::at(
                &e.from,
                "edge_from_output",
                format!("edge {} → {} leaves the output node", e.from, e.to),
            ));
        }
        match (&checked[from], &e.branch) {
            (Some((NodeSpec::Condition(c), _)), Some(b)) => {
                let known = c.branches.iter().any(|x| &x.name == b)
                    || c.default.as_deref() == Some(b.as_str());
                if !known {
                    errors.push(ValidationError::at(
                        &e.from,
                        "unknown_branch",
                        format!(
                            "edge {} → {} takes branch `{b}`, which the condition does not have",
                            e.from, e.to
                        ),
                    ));
                }
            }
            (Some((NodeSpec::Condition(_), _)), None) => errors.push(ValidationError::at(
                &e.from,
                "missing_branch",
                format!(
                    "edge {} → {} leaves a condition and must name its `branch`",
                    e.from, e.to
                ),
            )),
            (_, Some(b)) if kind_of(from) != "condition" => errors.push(ValidationError::at(
                &e.from,
                "unexpected_branch",
                format!(
                    "edge {} → {} names branch `{b}` but does not leave a condition",
                    e.from, e.to
                ),
            )),
            _ => {}
        }
        edges.push(PlanEdge {
            from,
            to,
            branch: e.branch.clone(),
        });
    }
    let n = def.nodes.len();
    let mut out_edges = vec![Vec::new(); n];
    let mut in_edges = vec![Vec::new(); n];
    for (k, e) in edges.iter().enumerate() {
        out_edges[e.from].push(k);
        in_edges[e.to].push(k);
    }

    // Cycles: depth-first search, naming each cycle once by its nodes.
    let mut color = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    let mut stack: Vec<usize> = Vec::new();
    let mut reported: HashSet<Vec<usize>> = HashSet::new();
    fn dfs(
        u: usize,
        edges: &[PlanEdge],
        out_edges: &[Vec<usize>],
        color: &mut [u8],
        stack: &mut Vec<usize>,
        found: &mut Vec<Vec<usize>>,
    ) {
        color[u] = 1;
        stack.push(u);
        for &k in &out_edges[u] {
            let v = edges[k].to;
            if color[v] == 1 {
                let pos = stack.iter().position(|&x| x == v).unwrap_or(0);
                found.push(stack[pos..].to_vec());
            } else if color[v] == 0 {
                dfs(v, edges, out_edges, color, stack, found);
            }
        }
        stack.pop();
        color[u] = 2;
    }
    let mut cycles = Vec::new();
    for u in 0..n {
        if color[u] == 0 {
            dfs(u, &edges, &out_edges, &mut color, &mut stack, &mut cycles);
        }
    }
    for cycle in cycles {
        let mut key = cycle.clone();
        key.sort_unstable();
        if reported.insert(key) {
            let mut names: Vec<&str> = cycle.iter().map(|&i| def.nodes[i].id.as_str()).collect();
            names.push(names[0]);
            errors.push(ValidationError::at(
                &def.nodes[cycle[0]].id,
                "cycle",
                format!("cycle: {}", names.join(" → ")),
            ));
        }
    }

    // Reachability from the input node(s).
    if !inputs.is_empty() {
        let mut reached = vec![false; n];
        let mut queue = inputs.clone();
        for &i in &inputs {
            reached[i] = true;
        }
        while let Some(u) = queue.pop() {
            for &k in &out_edges[u] {
                let v = edges[k].to;
                if !reached[v] {
                    reached[v] = true;
                    queue.push(v);
                }
            }
        }
        for (i, r) in reached.iter().enumerate() {
            if !r {
                errors.push(ValidationError::at(
                    &def.nodes[i].id,
                    "unreachable_node",
                    format!(
                        "node `{}` cannot be reached from the input node",
                        def.nodes[i].id
                    ),
                ));
            }
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    let input = inputs[0];
    let output = outputs[0];
    let input_schema = match &checked[input] {
        Some((NodeSpec::Input(InputConfig { schema: Some(s) }), _)) => {
            jsonschema::validator_for(s).ok()
        }
        _ => None,
    };
    let nodes = def
        .nodes
        .iter()
        .zip(checked)
        .map(|(node, c)| {
            let (spec, exprs) = c.expect("every node checked when there are no errors");
            let retry = node.retry.clone().unwrap_or_else(|| spec.default_retry());
            PlanNode {
                id: node.id.clone(),
                spec,
                exprs,
                timeout_ms: node.timeout_ms,
                retry,
                fault: node.fault,
            }
        })
        .collect();
    Ok(Plan {
        name: def.name.clone(),
        timeout_ms: def.timeout_ms,
        nodes,
        edges,
        out_edges,
        in_edges,
        input,
        output,
        guardrails: def.guardrails.clone(),
        input_schema,
    })
}

/// Parses definition JSON and validates it: the one entry point for text
/// from outside. A document that is not even the right shape is one error.
pub fn parse_and_validate(
    json: &Value,
) -> Result<(WorkflowDefinition, Plan), Vec<ValidationError>> {
    let def: WorkflowDefinition = serde_json::from_value(json.clone()).map_err(|e| {
        vec![ValidationError::workflow(
            "invalid_document",
            format!("definition: {e}"),
        )]
    })?;
    let plan = validate(&def)?;
    Ok((def, plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(v: Value) -> WorkflowDefinition {
        serde_json::from_value(v).unwrap()
    }

    fn codes(errs: &[ValidationError]) -> Vec<(&str, Option<&str>)> {
        errs.iter()
            .map(|e| (e.code, e.node_id.as_deref()))
            .collect()
    }

    pub fn four_node() -> Value {
        json!({
            "name": "score",
            "timeout_ms": 5000,
            "nodes": [
                {"id": "in", "kind": "input", "config": {"schema": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}}},
                {"id": "double", "kind": "script", "config": {"code": "return {v: ctx.input.n * 2}"}},
                {"id": "big", "kind": "condition", "config": {"branches": [{"name": "yes", "when": "steps.double.output.v > 10"}], "default": "no"}},
                {"id": "out", "kind": "output", "config": {"fields": {"v": "steps.double.output.v", "big": "steps.big.output.branch == 'yes'"}}}
            ],
            "edges": [
                {"from": "in", "to": "double"},
                {"from": "double", "to": "big"},
                {"from": "big", "to": "out", "branch": "yes"},
                {"from": "big", "to": "out", "branch": "no"}
            ]
        })
    }

    #[test]
    fn a_good_definition_validates() {
        let plan = validate(&def(four_node())).unwrap();
        assert_eq!(plan.nodes.len(), 4);
        assert!(plan.check_input(&json!({"n": 1})).is_ok());
        let errs = plan.check_input(&json!({"n": "x"})).unwrap_err();
        assert_eq!(errs[0].field, "/n");
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_node() {
        let d = def(json!({
            "name": "bad",
            "timeout_ms": 0,
            "nodes": [
                {"id": "a", "kind": "frobnicate"},
                {"id": "b", "kind": "script", "config": {"code": "return ("}},
                {"id": "c", "kind": "condition", "config": {"branches": [{"name": "x", "when": "input.n >"}]}},
                {"id": "d", "kind": "script", "config": {"code": "return 1"}, "timeout_ms": 999999999},
                {"id": "e", "kind": "script", "config": {"code": "return 1"}},
                {"id": "f", "kind": "script", "config": {"code": "return 1"}}
            ],
            "edges": [
                {"from": "a", "to": "ghost"},
                {"from": "e", "to": "f"},
                {"from": "f", "to": "e"}
            ]
        }));
        let errs = validate(&d).unwrap_err();
        let c = codes(&errs);
        for want in [
            ("timeout_out_of_range", None),
            ("unknown_kind", Some("a")),
            ("script_does_not_compile", Some("b")),
            ("expression_does_not_compile", Some("c")),
            ("timeout_out_of_range", Some("d")),
            ("missing_input", None),
            ("missing_output", None),
            ("dangling_edge", Some("a")),
        ] {
            assert!(c.contains(&want), "missing {want:?} in {c:?}");
        }
        let cycle = errs
            .iter()
            .find(|e| e.code == "cycle")
            .expect("cycle reported");
        assert!(cycle.message.contains("e → f → e"), "{}", cycle.message);
    }

    #[test]
    fn unreachable_nodes_are_named() {
        let mut v = four_node();
        v["nodes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "lonely", "kind": "script", "config": {"code": "return 1"}}));
        let errs = validate(&def(v)).unwrap_err();
        assert_eq!(codes(&errs), vec![("unreachable_node", Some("lonely"))]);
    }

    #[test]
    fn condition_edges_must_name_known_branches() {
        let mut v = four_node();
        v["edges"][2]["branch"] = json!("maybe");
        v["edges"][0]["branch"] = json!("oops");
        let errs = validate(&def(v)).unwrap_err();
        let c = codes(&errs);
        assert!(c.contains(&("unknown_branch", Some("big"))), "{c:?}");
        assert!(c.contains(&("unexpected_branch", Some("in"))), "{c:?}");
    }

    #[test]
    fn human_nodes_allow_long_waits_and_check_their_config() {
        let human = |timeout: Value, node_timeout: Value, config: Value| {
            def(json!({
                "name": "h", "timeout_ms": timeout,
                "nodes": [
                    {"id": "in", "kind": "input"},
                    {"id": "ask", "kind": "human", "timeout_ms": node_timeout, "config": config},
                    {"id": "out", "kind": "output"}
                ],
                "edges": [{"from": "in", "to": "ask"}, {"from": "ask", "to": "out"}]
            }))
        };
        let ok = json!({"prompt": "Approve {{input.amount}}?", "schema": {"type": "boolean"}});
        let thirty_days = json!(MAX_HUMAN_TIMEOUT_MS);
        assert!(validate(&human(thirty_days.clone(), thirty_days.clone(), ok.clone())).is_ok());
        assert!(validate(&human(json!(1000), Value::Null, ok.clone())).is_ok());
        let errs = validate(&human(
            json!(MAX_HUMAN_TIMEOUT_MS + 1),
            json!(MAX_HUMAN_TIMEOUT_MS + 1),
            json!({"prompt": " ", "schema": {"type": "nope"}}),
        ))
        .unwrap_err();
        let c = codes(&errs);
        for want in [
            ("timeout_out_of_range", None),
            ("timeout_out_of_range", Some("ask")),
            ("invalid_config", Some("ask")),
            ("invalid_schema", Some("ask")),
        ] {
            assert!(c.contains(&want), "missing {want:?} in {c:?}");
        }
        let errs = validate(&human(
            json!(1000),
            Value::Null,
            json!({"prompt": "{{callback.url}}"}),
        ))
        .unwrap_err();
        assert_eq!(codes(&errs), vec![("invalid_template", Some("ask"))]);
        // Without a human node the 600 s bound stands, for workflow and nodes.
        let mut long = four_node();
        long["timeout_ms"] = json!(MAX_TIMEOUT_MS + 1);
        long["nodes"][1]["timeout_ms"] = json!(MAX_TIMEOUT_MS + 1);
        let errs = validate(&def(long)).unwrap_err();
        assert_eq!(
            codes(&errs),
            vec![
                ("timeout_out_of_range", None),
                ("timeout_out_of_range", Some("double"))
            ]
        );
    }

    #[test]
    fn wrong_shape_is_one_error() {
        let errs = parse_and_validate(&json!({"name": "x", "nodes": 3})).unwrap_err();
        assert_eq!(errs[0].code, "invalid_document");
    }
}
