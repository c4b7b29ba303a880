//! The workflows the load generator deploys, and the input it sends them.
//!
//! - `trivial`: input → script → output, sync.
//! - `async`: the same workflow, submitted async and polled to its end.
//! - `ai`: input → AI node (the mock model, `mock-1`, at `{{env.LLM_BASE_URL}}`)
//!   → output, sync or async.
//! - `fanout`: input → four scripts in parallel → an output joining them, sync.

use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Trivial,
    Async,
    Ai,
    Fanout,
}

/// How a run is submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunMode {
    /// Wait for the result in the request.
    Sync,
    /// 202, then poll the status.
    Async,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Sync => "sync",
            RunMode::Async => "async",
        }
    }
}

/// Settings of the `ai` workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct AiSettings {
    /// Reference the `LLM_API_KEY` variable (set only when a key is given).
    pub with_api_key: bool,
    /// The workflow's `timeout_ms`; the model call may take all of it.
    pub timeout_ms: u64,
    /// The AI node's `model_timeout_ms`, when shorter (to make model
    /// timeouts fire: timeout lateness under load).
    pub model_timeout_ms: Option<u64>,
}

impl Default for AiSettings {
    fn default() -> Self {
        AiSettings {
            with_api_key: false,
            timeout_ms: 60_000,
            model_timeout_ms: None,
        }
    }
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Trivial => "trivial",
            Scenario::Async => "async",
            Scenario::Ai => "ai",
            Scenario::Fanout => "fanout",
        }
    }

    /// How runs are submitted unless `--mode` says otherwise.
    pub fn default_mode(self) -> RunMode {
        match self {
            Scenario::Async => RunMode::Async,
            _ => RunMode::Sync,
        }
    }

    /// The workflow definition to create.
    pub fn definition(self, ai: &AiSettings) -> Value {
        match self {
            Scenario::Trivial | Scenario::Async => trivial(self.name()),
            Scenario::Ai => ai_definition(ai),
            Scenario::Fanout => fanout(),
        }
    }

    /// The body of each run request.
    pub fn run_body(self) -> Value {
        match self {
            Scenario::Ai => {
                json!({"input": {"text": "Summarise: the printer on floor 3 is out of toner again."}})
            }
            _ => json!({"input": {"n": 41}}),
        }
    }
}

fn trivial(name: &str) -> Value {
    json!({
        "name": format!("weft-load-{name}"),
        "description": "weft-load: input → script → output",
        "timeout_ms": 10_000,
        "nodes": [
            {"id": "start", "kind": "input", "config": {"schema": {"type": "object", "required": ["n"], "properties": {"n": {"type": "number"}}}}},
            {"id": "work", "kind": "script", "config": {"code": "return {n: ctx.input.n + 1};"}},
            {"id": "result", "kind": "output", "config": {"fields": {"n": "steps.work.output.n"}}}
        ],
        "edges": [
            {"from": "start", "to": "work"},
            {"from": "work", "to": "result"}
        ]
    })
}

fn fanout() -> Value {
    let branches = ["a", "b", "c", "d"];
    let mut nodes =
        vec![json!({"id": "start", "kind": "input", "config": {"schema": {"type": "object"}}})];
    let mut edges = Vec::new();
    let mut fields = serde_json::Map::new();
    for (i, b) in branches.iter().enumerate() {
        let id = format!("branch_{b}");
        nodes.push(json!({
            "id": id,
            "kind": "script",
            "config": {"code": format!("return ctx.input.n * {};", i + 2)}
        }));
        edges.push(json!({"from": "start", "to": id}));
        edges.push(json!({"from": id, "to": "result"}));
        fields.insert(b.to_string(), json!(format!("steps.{id}.output")));
    }
    nodes.push(json!({"id": "result", "kind": "output", "config": {"fields": fields}}));
    json!({
        "name": "weft-load-fanout",
        "description": "weft-load: input → four parallel scripts → output joining them",
        "timeout_ms": 10_000,
        "nodes": nodes,
        "edges": edges
    })
}

fn ai_definition(ai: &AiSettings) -> Value {
    let mut config = json!({
        "base_url": "{{env.LLM_BASE_URL}}",
        "model": "mock-1",
        "system": "Answer in one sentence.",
        "user": "{{input.text}}",
        "max_tokens": 32,
        "model_timeout_ms": ai.model_timeout_ms.unwrap_or(ai.timeout_ms)
    });
    if ai.with_api_key {
        config["api_key"] = json!("{{env.LLM_API_KEY}}");
    }
    json!({
        "name": "weft-load-ai",
        "description": "weft-load: input → ai (mock model) → output",
        "timeout_ms": ai.timeout_ms,
        "nodes": [
            {"id": "start", "kind": "input", "config": {"schema": {"type": "object", "required": ["text"]}}},
            {"id": "chat", "kind": "ai", "config": config},
            {"id": "result", "kind": "output", "config": {"fields": {"reply": "steps.chat.output.content"}}}
        ],
        "edges": [
            {"from": "start", "to": "chat"},
            {"from": "chat", "to": "result"}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(def: &Value) -> Vec<&str> {
        def["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["kind"].as_str().expect("kind"))
            .collect()
    }

    #[test]
    fn shapes() {
        let ai = AiSettings::default();
        assert_eq!(
            kinds(&Scenario::Trivial.definition(&ai)),
            ["input", "script", "output"]
        );
        assert_eq!(
            kinds(&Scenario::Async.definition(&ai)),
            ["input", "script", "output"]
        );
        let fan = Scenario::Fanout.definition(&ai);
        assert_eq!(
            kinds(&fan),
            ["input", "script", "script", "script", "script", "output"]
        );
        assert_eq!(fan["edges"].as_array().expect("edges").len(), 8);
        assert_eq!(
            fan["nodes"][5]["config"]["fields"]["d"],
            "steps.branch_d.output"
        );
        let def = Scenario::Ai.definition(&ai);
        assert_eq!(kinds(&def), ["input", "ai", "output"]);
        assert_eq!(
            def["nodes"][1]["config"]["base_url"],
            "{{env.LLM_BASE_URL}}"
        );
        assert_eq!(def["nodes"][1]["config"]["model"], "mock-1");
        assert!(def["nodes"][1]["config"].get("api_key").is_none());
        let keyed = Scenario::Ai.definition(&AiSettings {
            with_api_key: true,
            timeout_ms: 120_000,
            model_timeout_ms: Some(250),
        });
        assert_eq!(
            keyed["nodes"][1]["config"]["api_key"],
            "{{env.LLM_API_KEY}}"
        );
        assert_eq!(keyed["timeout_ms"], 120_000);
        assert_eq!(keyed["nodes"][1]["config"]["model_timeout_ms"], 250);
        assert_eq!(def["nodes"][1]["config"]["model_timeout_ms"], 60_000);
    }

    #[test]
    fn modes() {
        assert_eq!(Scenario::Async.default_mode(), RunMode::Async);
        assert_eq!(Scenario::Trivial.default_mode(), RunMode::Sync);
        assert_eq!(Scenario::Ai.default_mode(), RunMode::Sync);
        assert_eq!(
            Scenario::Ai.run_body()["input"]["text"]
                .as_str()
                .map(str::is_empty),
            Some(false)
        );
    }
}
