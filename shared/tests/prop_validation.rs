//! Validation, tried systematically: definitions generated as JSON — mostly
//! well-formed, then mutated (ids, kinds, configs, expressions, scripts,
//! edges, timeouts, guardrails) — never make `parse_and_validate` panic, and
//! every error it reports has a code, a message and, where it is about a node,
//! the id of a node of the document. What validates has one input, one output
//! and no cycle (checked here by an independent DFS over the JSON).

mod common;

use common::cases;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use weft_shared::validate::{parse_and_validate, ValidationError};

const KINDS: &[&str] = &[
    "input",
    "condition",
    "script",
    "output",
    "api",
    "async_api",
    "ai",
    "human",
];

/// Codes about the workflow as a whole: never a node id.
const WORKFLOW_CODES: &[&str] = &[
    "invalid_document",
    "invalid_name",
    "missing_input",
    "missing_output",
];
/// Codes that are workflow-level or node-level depending on where they arise.
const EITHER_CODES: &[&str] = &["timeout_out_of_range", "invalid_guardrails"];

// ---------------------------------------------------------------- strategies

fn node_id() -> BoxedStrategy<String> {
    prop_oneof![
        // A small pool, so that edges and duplicates find each other.
        6 => prop::sample::select(vec!["in", "out", "a", "b", "c", "d", "cond", "_x", "n1"])
            .prop_map(str::to_string),
        3 => "[a-zA-Z_][a-zA-Z0-9_]{0,12}",
        1 => "[0-9][a-z0-9]{0,4}",
        1 => prop::sample::select(vec!["", " ", "a b", "a-b", "a.b", "é", "ñode", "日本", "🦀", "a\u{0}b", "in\n"])
            .prop_map(str::to_string),
        1 => "\\PC{0,10}",
        1 => "[a-z_]{65,90}",
        // 64 bytes exactly: the longest valid id.
        1 => Just("a".repeat(64)),
    ]
    .boxed()
}

fn kind() -> BoxedStrategy<String> {
    prop_oneof![
        8 => prop::sample::select(KINDS.to_vec()).prop_map(str::to_string),
        1 => prop::sample::select(vec!["Input", "teleport", "", "script ", "Human", "map"])
            .prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ]
    .boxed()
}

/// Random JSON, small.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// CEL: mostly valid, some with unknown variables, unbalanced brackets, junk.
fn cel_expr() -> BoxedStrategy<String> {
    let tokens = prop::sample::select(vec![
        "input", "steps", "env", "inptu", "x", ".", "n", "a", "output", "v", "(", ")", "[", "]",
        "{", "}", "1", "2.5", "'s'", "\"", "+", "-", "*", "/", "%", ">", "<", "==", "!=", "&&",
        "||", "!", "?", ":", "true", "null", "size(", "has(", ",", " ", "in", "0x", "1u", "b'",
        "\\", "=>",
    ]);
    prop_oneof![
        4 => prop::sample::select(vec![
            "input.n > 1",
            "steps.a.output.v == 'x'",
            "true",
            "input.items.size() > 0 && env.FLAG == 'on'",
            "has(input.x) ? input.x : 0",
            "[1, 2, 3].exists(i, i > input.n)",
            "{'a': 1}.a",
            "steps.big.output.branch == 'yes'",
            "input.s.matches('^a+$')",
        ])
        .prop_map(str::to_string),
        3 => prop::collection::vec(tokens, 0..12).prop_map(|t| t.concat()),
        1 => prop::sample::select(vec![
            "input.n >", "(input.n", "input.n)", "[[[", "}}}", "", " ", "inptu.n > 1",
            "foo", "input.s.matches('(')", "1 +", "'unterminated", "input.n > 1 ) (",
            // Nested, but shallow: deeper nesting overflows the stack in
            // the CEL parser (reported, not fixed here).
            "((((((((1))))))))",
            "[[[[[[[[1]]]]]]]]",
        ])
        .prop_map(str::to_string),
        1 => "\\PC{0,24}",
    ]
    .boxed()
}

/// JavaScript function bodies: mostly valid, some unbalanced, some hostile.
fn js_code() -> BoxedStrategy<String> {
    let tokens = prop::sample::select(vec![
        "return ",
        "ctx",
        ".input",
        ".steps",
        ".n",
        "(",
        ")",
        "{",
        "}",
        "[",
        "]",
        ";",
        "1",
        "'",
        "\"",
        "`",
        "${",
        "+",
        "=>",
        "function",
        "let x = ",
        "if (",
        "else",
        "while(true)",
        "throw ",
        "new Error('e')",
        "/*",
        "*/",
        "//",
        "\n",
        "await ",
        "yield ",
        "import(",
        "x",
        ",",
        "=",
        "...",
    ]);
    prop_oneof![
        4 => prop::sample::select(vec![
            "return 1",
            "return {v: ctx.input.n * 2}",
            "const a = [1, 2, 3]; return a.map(x => x * 2)",
            "if (ctx.input.flag) { return 'y' } return 'n'",
            "let s = 0; for (let i = 0; i < 3; i++) { s += i } return s",
            "return ctx.steps",
            "",
        ])
        .prop_map(str::to_string),
        3 => prop::collection::vec(tokens, 0..16).prop_map(|t| t.concat()),
        1 => prop::sample::select(vec![
            "return (", "}", "{", "} export const x = 1; {", "return `${", "/*", "with (x) {}",
            "import fs from 'fs'", "}; while(true){}; function f(){", "return 1 }}}", "'\\u{'",
            "delete x", "return 08",
        ])
        .prop_map(str::to_string),
        1 => "\\PC{0,32}",
    ]
    .boxed()
}

fn valid_js() -> BoxedStrategy<&'static str> {
    prop::sample::select(vec![
        "return 1",
        "return {v: ctx.input.n * 2}",
        "const a = [1, 2, 3]; return a.map(x => x * 2)",
        "if (ctx.input.flag) { return 'y' } return 'n'",
        "return ctx.steps",
        "",
    ])
    .boxed()
}

/// Strings that may hold `{{ }}` templates.
fn template_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "https://example.com/x",
            "https://example.com/{{input.id}}",
            "{{env.BASE_URL}}/v1",
            "{{callback.url}}",
            "{{ steps.a.output.body.id }}",
            "Bearer {{env.KEY}}",
            "plain",
        ])
        .prop_map(str::to_string),
        1 => prop::sample::select(vec!["{{", "{{}}", "{{ }}", "{{nope.x}}", "}}{{", "{{input", "", "  "])
            .prop_map(str::to_string),
        1 => "\\PC{0,16}",
    ]
    .boxed()
}

fn guardrails() -> BoxedStrategy<Value> {
    let scanner = prop_oneof![
        Just(json!({"scanner": "pii_detection", "action": "redact", "kinds": ["email", "iban"]})),
        Just(json!({"scanner": "pii_detection", "kinds": ["ssn"]})),
        Just(json!({"scanner": "jailbreak_detection"})),
        Just(json!({"scanner": "jailbreak_detection", "action": "redact"})),
        Just(json!({"scanner": "toxicity", "terms": ["darn"], "action": "redact"})),
        Just(json!({"scanner": "toxicity", "terms": []})),
        Just(json!({"scanner": "toxicity", "terms": [""]})),
        Just(json!({"scanner": "model", "model": "guard"})),
        Just(json!({"scanner": "model", "model": ""})),
        Just(json!({"scanner": "teleport"})),
        any_json(),
    ];
    prop_oneof![
        4 => (
            prop::collection::vec(scanner.clone(), 0..3),
            prop::collection::vec(scanner, 0..3)
        )
            .prop_map(|(i, o)| json!({"input": i, "output": o})),
        1 => any_json(),
    ]
    .boxed()
}

fn timeout() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (1u64..=600_000).prop_map(|n| json!(n)),
        1 => Just(json!(0)),
        1 => Just(json!(600_001)),
        1 => Just(json!(u64::MAX)),
        1 => any::<u64>().prop_map(|n| json!(n)),
        1 => prop::sample::select(vec![json!(-1), json!(1.5), json!("100"), json!(null), json!([])]),
    ]
    .boxed()
}

/// A config for `kind`: the right shape with random content, mostly.
fn config_for(kind: &str) -> BoxedStrategy<Value> {
    let right: BoxedStrategy<Value> = match kind {
        "input" => prop_oneof![
            Just(json!({})),
            Just(json!({"schema": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}})),
            Just(json!({"schema": {"type": "nope"}})),
            Just(json!({"schema": {"pattern": "("}})),
            Just(json!({"schema": {"$ref": "#/definitions/a", "definitions": {"a": {"$ref": "#/definitions/a"}}}})),
            Just(json!({"schema": {"$ref": "http://example.invalid/schema.json"}})),
            Just(json!({"schema": true})),
            Just(json!({"schema": 7})),
            any_json().prop_map(|s| json!({"schema": s})),
        ]
        .boxed(),
        "condition" => (
            prop::collection::vec(
                (prop::sample::select(vec!["yes", "no", "a", "b", ""]), cel_expr())
                    .prop_map(|(n, w)| json!({"name": n, "when": w})),
                0..4,
            ),
            prop::option::of(prop::sample::select(vec!["no", "yes", "other"])),
        )
            .prop_map(|(branches, default)| {
                let mut c = json!({"branches": branches});
                if let Some(d) = default {
                    c["default"] = json!(d);
                }
                c
            })
            .boxed(),
        "script" => js_code().prop_map(|code| json!({"code": code})).boxed(),
        "output" => prop::collection::btree_map("[a-z]{1,4}", cel_expr(), 0..4)
            .prop_map(|f| json!({"fields": f}))
            .boxed(),
        "api" | "async_api" => (
            prop::sample::select(vec!["GET", "post", "PUT", "DELETE", "TRACE", ""]),
            template_text(),
            prop::collection::btree_map("[A-Za-z-]{1,8}", template_text(), 0..3),
            prop::option::of(any_json()),
            prop::sample::select(vec![0u64, 1, 1024, 64 * 1024 * 1024, 64 * 1024 * 1024 + 1]),
        )
            .prop_map(|(m, url, headers, body, max)| {
                let mut c = json!({"method": m, "url": url, "headers": headers, "max_response_bytes": max});
                if let Some(b) = body {
                    c["body"] = b;
                }
                c
            })
            .boxed(),
        "ai" => (
            template_text(),
            prop::sample::select(vec!["gpt-x", "", " "]),
            template_text(),
            prop::option::of(prop::sample::select(vec![0.0f64, 0.7, 2.0, 2.5, -1.0])),
            prop::option::of(prop::sample::select(vec![0u64, 1, 30_000, 600_001])),
            prop::option::of(guardrails()),
        )
            .prop_map(|(base, model, user, temp, mt, g)| {
                let mut c = json!({"base_url": base, "model": model, "user": user,
                                   "api_key": "{{env.LLM_API_KEY}}", "system": "be brief"});
                if let Some(t) = temp {
                    c["temperature"] = json!(t);
                }
                if let Some(t) = mt {
                    c["model_timeout_ms"] = json!(t);
                }
                if let Some(g) = g {
                    c["guardrails"] = g;
                }
                c
            })
            .boxed(),
        "human" => (
            template_text(),
            prop::option::of(prop_oneof![
                Just(json!({"type": "boolean"})),
                Just(json!({"type": "nope"})),
                any_json(),
            ]),
        )
            .prop_map(|(prompt, schema)| {
                let mut c = json!({"prompt": prompt});
                if let Some(s) = schema {
                    c["schema"] = s;
                }
                c
            })
            .boxed(),
        _ => any_json().boxed(),
    };
    prop_oneof![
        6 => right,
        1 => Just(Value::Null),
        1 => any_json(),
        1 => Just(json!({"unknown_field": 1})),
    ]
    .boxed()
}

/// A node of a random kind with a config for some kind (usually its own).
fn node() -> BoxedStrategy<Value> {
    (kind(), node_id(), prop::sample::select(KINDS.to_vec()))
        .prop_flat_map(|(k, id, other)| {
            let cfg_kind = k.clone();
            (
                Just(k),
                Just(id),
                prop_oneof![5 => config_for(&cfg_kind), 1 => config_for(other)],
                prop::option::of(timeout()),
                prop::option::of((0u32..14).prop_map(|n| json!({"max_attempts": n}))),
                prop::option::of(prop::sample::select(vec!["panic", "hang", "explode"])),
                any::<bool>(),
            )
        })
        .prop_map(|(k, id, cfg, t, retry, fault, omit_cfg)| {
            let mut n = json!({"id": id, "kind": k});
            if !omit_cfg {
                n["config"] = cfg;
            }
            if let Some(t) = t {
                n["timeout_ms"] = t;
            }
            if let Some(r) = retry {
                n["retry"] = r;
            }
            if let Some(f) = fault {
                n["fault"] = json!(f);
            }
            n
        })
        .boxed()
}

fn branch() -> BoxedStrategy<Option<String>> {
    prop::option::of(
        prop::sample::select(vec!["yes", "no", "a", "b", "other", ""]).prop_map(str::to_string),
    )
    .boxed()
}

/// A well-formed definition: input → a DAG of middle nodes → output, edges
/// only forward, every node reachable, condition edges labelled.
fn well_formed() -> BoxedStrategy<Value> {
    let middle = prop_oneof![
        3 => valid_js().prop_map(|c| ("script", json!({"code": c}))),
        2 => Just(("condition", json!({"branches": [{"name": "yes", "when": "input.n > 1"}], "default": "no"}))),
        1 => Just(("api", json!({"url": "https://example.com/{{input.id}}", "method": "POST", "body": {"n": "{{input.n}}"}}))),
        1 => Just(("async_api", json!({"url": "https://example.com/cb?u={{callback.url}}"}))),
        1 => Just(("ai", json!({"base_url": "{{env.LLM_BASE_URL}}", "model": "m", "user": "hi {{input.name}}",
                                 "guardrails": {"input": [{"scanner": "pii_detection", "action": "redact"}]}}))),
        1 => Just(("human", json!({"prompt": "Approve {{input.n}}?", "schema": {"type": "boolean"}}))),
    ];
    (
        prop::collection::vec(middle, 0..9),
        prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..6),
        prop::collection::vec(any::<prop::sample::Index>(), 10),
        prop::option::of(1u64..=600_000),
    )
        .prop_map(|(middle, extra, parents, timeout)| {
            let mut nodes = vec![json!({"id": "in", "kind": "input",
                "config": {"schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}})];
            for (i, (k, cfg)) in middle.iter().enumerate() {
                nodes.push(json!({"id": format!("n{i}"), "kind": k, "config": cfg}));
            }
            nodes.push(json!({"id": "out", "kind": "output", "config": {"fields": {"r": "input"}}}));
            let n = nodes.len();
            let mut seen = HashSet::new();
            let mut edges = Vec::new();
            let mut add = |from: usize, to: usize, edges: &mut Vec<Value>| {
                let kind = nodes[from]["kind"].as_str().unwrap().to_string();
                let b = if kind == "condition" {
                    // Alternate the two branches so (from, to, branch) stays unique.
                    if seen.contains(&(from, to, "yes")) { "no" } else { "yes" }
                } else {
                    ""
                };
                if !seen.insert((from, to, b)) {
                    return;
                }
                let mut e = json!({"from": nodes[from]["id"], "to": nodes[to]["id"]});
                if !b.is_empty() {
                    e["branch"] = json!(b);
                }
                edges.push(e);
            };
            // Every node after the input gets a parent before it.
            for to in 1..n {
                let from = parents[to % parents.len()].index(to.min(n - 1));
                // The output has no edges out, so never choose it as a parent.
                add(from, to, &mut edges);
            }
            for (a, b) in extra {
                let (x, y) = (a.index(n - 1), b.index(n - 1));
                let (from, to) = if x < y { (x, y) } else if y < x { (y, x) } else { continue };
                add(from, to.max(1), &mut edges);
            }
            let mut def = json!({"name": "generated", "nodes": nodes, "edges": edges});
            if let Some(t) = timeout {
                def["timeout_ms"] = json!(t);
            }
            def
        })
    .boxed()
}

/// What can be done to a definition to break it (or not).
#[derive(Clone, Debug)]
enum Mutation {
    RemoveNode(prop::sample::Index),
    DuplicateNode(prop::sample::Index),
    AddNode(Value),
    SetId(prop::sample::Index, String),
    SetKind(prop::sample::Index, String),
    SetConfig(prop::sample::Index, Value),
    SetNodeTimeout(prop::sample::Index, Value),
    AddEdge(prop::sample::Index, prop::sample::Index, Option<String>),
    SelfLoop(prop::sample::Index),
    BackEdge(prop::sample::Index),
    DanglingEdge(prop::sample::Index, String, bool),
    RemoveEdge(prop::sample::Index),
    SetBranch(prop::sample::Index, Option<String>),
    SetTimeout(Value),
    SetName(Value),
    SetGuardrails(Value),
    TopLevelField(String, Value),
    RemoveField(&'static str),
    WrongType(&'static str, Value),
}

fn mutation() -> BoxedStrategy<Mutation> {
    use prop::sample::Index;
    let idx = any::<Index>;
    prop_oneof![
        1 => idx().prop_map(Mutation::RemoveNode),
        1 => idx().prop_map(Mutation::DuplicateNode),
        1 => node().prop_map(Mutation::AddNode),
        1 => (idx(), node_id()).prop_map(|(i, s)| Mutation::SetId(i, s)),
        1 => (idx(), kind()).prop_map(|(i, s)| Mutation::SetKind(i, s)),
        1 => (idx(), prop::sample::select(KINDS.to_vec()).prop_flat_map(config_for))
            .prop_map(|(i, c)| Mutation::SetConfig(i, c)),
        1 => (idx(), timeout()).prop_map(|(i, t)| Mutation::SetNodeTimeout(i, t)),
        2 => (idx(), idx(), branch()).prop_map(|(a, b, br)| Mutation::AddEdge(a, b, br)),
        1 => idx().prop_map(Mutation::SelfLoop),
        2 => idx().prop_map(Mutation::BackEdge),
        1 => (idx(), node_id(), any::<bool>()).prop_map(|(i, s, f)| Mutation::DanglingEdge(i, s, f)),
        1 => idx().prop_map(Mutation::RemoveEdge),
        1 => (idx(), branch()).prop_map(|(i, b)| Mutation::SetBranch(i, b)),
        1 => timeout().prop_map(Mutation::SetTimeout),
        1 => prop::sample::select(vec![json!(""), json!("   "), json!("ok"), json!(5), json!(null), json!("名前")])
            .prop_map(Mutation::SetName),
        1 => guardrails().prop_map(Mutation::SetGuardrails),
        1 => ("[a-z_]{1,8}", any_json()).prop_map(|(k, v)| Mutation::TopLevelField(k, v)),
        1 => prop::sample::select(vec!["name", "nodes", "edges", "timeout_ms", "description"])
            .prop_map(Mutation::RemoveField),
        1 => (
            prop::sample::select(vec!["name", "nodes", "edges", "timeout_ms", "description", "guardrails"]),
            any_json()
        )
            .prop_map(|(k, v)| Mutation::WrongType(k, v)),
    ]
    .boxed()
}

fn nodes_mut(def: &mut Value) -> Option<&mut Vec<Value>> {
    def.get_mut("nodes").and_then(Value::as_array_mut)
}

fn id_at(def: &Value, i: &prop::sample::Index) -> Option<Value> {
    let nodes = def.get("nodes")?.as_array()?;
    if nodes.is_empty() {
        return None;
    }
    nodes[i.index(nodes.len())].get("id").cloned()
}

fn ensure_edges(def: &mut Value) -> Option<&mut Vec<Value>> {
    if def.get("edges").is_none() {
        def["edges"] = json!([]);
    }
    def.get_mut("edges").and_then(Value::as_array_mut)
}

fn apply(def: &mut Value, m: &Mutation) {
    if !def.is_object() {
        return;
    }
    match m {
        Mutation::RemoveNode(i) => {
            if let Some(nodes) = nodes_mut(def) {
                if !nodes.is_empty() {
                    let k = i.index(nodes.len());
                    nodes.remove(k);
                }
            }
        }
        Mutation::DuplicateNode(i) => {
            if let Some(nodes) = nodes_mut(def) {
                if !nodes.is_empty() {
                    let n = nodes[i.index(nodes.len())].clone();
                    nodes.push(n);
                }
            }
        }
        Mutation::AddNode(n) => {
            if let Some(nodes) = nodes_mut(def) {
                nodes.push(n.clone());
            }
        }
        Mutation::SetId(i, s) | Mutation::SetKind(i, s) => {
            let field = if matches!(m, Mutation::SetId(..)) {
                "id"
            } else {
                "kind"
            };
            if let Some(nodes) = nodes_mut(def) {
                if !nodes.is_empty() {
                    let k = i.index(nodes.len());
                    if nodes[k].is_object() {
                        nodes[k][field] = json!(s);
                    }
                }
            }
        }
        Mutation::SetConfig(i, v) | Mutation::SetNodeTimeout(i, v) => {
            let field = if matches!(m, Mutation::SetConfig(..)) {
                "config"
            } else {
                "timeout_ms"
            };
            if let Some(nodes) = nodes_mut(def) {
                if !nodes.is_empty() {
                    let k = i.index(nodes.len());
                    if nodes[k].is_object() {
                        nodes[k][field] = v.clone();
                    }
                }
            }
        }
        Mutation::AddEdge(a, b, br) => {
            if let (Some(from), Some(to)) = (id_at(def, a), id_at(def, b)) {
                let mut e = json!({"from": from, "to": to});
                if let Some(br) = br {
                    e["branch"] = json!(br);
                }
                if let Some(edges) = ensure_edges(def) {
                    edges.push(e);
                }
            }
        }
        Mutation::SelfLoop(i) => {
            if let Some(id) = id_at(def, i) {
                if let Some(edges) = ensure_edges(def) {
                    edges.push(json!({"from": id, "to": id}));
                }
            }
        }
        Mutation::BackEdge(i) => {
            // Reverse an existing edge next to it: a cycle of two (or more).
            let e = def
                .get("edges")
                .and_then(Value::as_array)
                .filter(|e| !e.is_empty())
                .map(|e| e[i.index(e.len())].clone());
            if let Some(e) = e {
                let mut back = json!({"from": e.get("to").cloned().unwrap_or(Value::Null),
                                      "to": e.get("from").cloned().unwrap_or(Value::Null)});
                if let Some(b) = e.get("branch") {
                    back["branch"] = b.clone();
                }
                if let Some(edges) = ensure_edges(def) {
                    edges.push(back);
                }
            }
        }
        Mutation::DanglingEdge(i, ghost, ghost_is_from) => {
            let id = id_at(def, i).unwrap_or_else(|| json!("nowhere"));
            let e = if *ghost_is_from {
                json!({"from": ghost, "to": id})
            } else {
                json!({"from": id, "to": ghost})
            };
            if let Some(edges) = ensure_edges(def) {
                edges.push(e);
            }
        }
        Mutation::RemoveEdge(i) => {
            if let Some(edges) = def.get_mut("edges").and_then(Value::as_array_mut) {
                if !edges.is_empty() {
                    let k = i.index(edges.len());
                    edges.remove(k);
                }
            }
        }
        Mutation::SetBranch(i, b) => {
            if let Some(edges) = def.get_mut("edges").and_then(Value::as_array_mut) {
                if !edges.is_empty() {
                    let k = i.index(edges.len());
                    if let Some(o) = edges[k].as_object_mut() {
                        match b {
                            Some(b) => o.insert("branch".into(), json!(b)),
                            None => o.remove("branch"),
                        };
                    }
                }
            }
        }
        Mutation::SetTimeout(v) => def["timeout_ms"] = v.clone(),
        Mutation::SetName(v) => def["name"] = v.clone(),
        Mutation::SetGuardrails(v) => def["guardrails"] = v.clone(),
        Mutation::TopLevelField(k, v) => {
            // Mostly a known field's name (then its value is what is random).
            def[k.as_str()] = v.clone();
        }
        Mutation::RemoveField(k) => {
            def.as_object_mut().unwrap().remove(*k);
        }
        Mutation::WrongType(k, v) => def[*k] = v.clone(),
    }
}

/// A definition of random nodes and random edges between their ids (and some
/// that name no node).
fn chaotic() -> BoxedStrategy<Value> {
    (
        prop::collection::vec(node(), 0..=12),
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                any::<prop::sample::Index>(),
                branch(),
                0u8..10,
                node_id(),
            ),
            0..16,
        ),
        prop::option::of(timeout()),
        prop::sample::select(vec!["w", "", "  ", "ワークフロー"]),
        prop::option::of(guardrails()),
    )
        .prop_map(|(nodes, edges, timeout, name, g)| {
            let ids: Vec<Value> = nodes.iter().map(|n| n["id"].clone()).collect();
            let edges: Vec<Value> = edges
                .into_iter()
                .map(|(a, b, br, ghost, gid)| {
                    let pick = |i: &prop::sample::Index| {
                        if ids.is_empty() || ghost == 0 {
                            json!(gid)
                        } else {
                            ids[i.index(ids.len())].clone()
                        }
                    };
                    let mut e = json!({"from": pick(&a), "to": pick(&b)});
                    if let Some(br) = br {
                        e["branch"] = json!(br);
                    }
                    e
                })
                .collect();
            let mut def = json!({"name": name, "nodes": nodes, "edges": edges});
            if let Some(t) = timeout {
                def["timeout_ms"] = t;
            }
            if let Some(g) = g {
                def["guardrails"] = g;
            }
            def
        })
        .boxed()
}

fn definition() -> BoxedStrategy<Value> {
    let base = prop_oneof![
        3 => well_formed(),
        2 => chaotic(),
        1 => any_json(),
    ];
    let mutations = prop_oneof![
        1 => Just(vec![]),
        3 => prop::collection::vec(mutation(), 1..4),
    ];
    (base, mutations)
        .prop_map(|(mut def, ms)| {
            for m in &ms {
                apply(&mut def, m);
            }
            def
        })
        .boxed()
}

// ---------------------------------------------------------------- checks

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn node_ids(def: &Value) -> Vec<String> {
    def.get("nodes")
        .and_then(Value::as_array)
        .map(|ns| {
            ns.iter()
                .filter_map(|n| str_field(n, "id"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn edge_ids(def: &Value) -> BTreeSet<String> {
    def.get("edges")
        .and_then(Value::as_array)
        .map(|es| {
            es.iter()
                .flat_map(|e| [str_field(e, "from"), str_field(e, "to")])
                .flatten()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// 600 s at most; 30 days when a node is of kind `human`.
fn workflow_timeout_out_of_range(def: &Value) -> bool {
    let has_human = def
        .get("nodes")
        .and_then(Value::as_array)
        .is_some_and(|ns| ns.iter().any(|n| str_field(n, "kind") == Some("human")));
    let max = if has_human {
        30 * 24 * 3_600_000
    } else {
        600_000
    };
    matches!(def.get("timeout_ms").and_then(Value::as_u64), Some(t) if t == 0 || t > max)
}

/// Is the graph the JSON describes acyclic? An independent DFS over ids.
fn acyclic(def: &Value) -> bool {
    let ids = node_ids(def);
    let mut adj: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in def
        .get("edges")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(f), Some(t)) = (str_field(e, "from"), str_field(e, "to")) {
            adj.entry(f).or_default().push(t);
        }
    }
    // 0 unseen, 1 on the path, 2 finished; iterative to need no deep stack.
    let mut state: HashMap<&str, u8> = HashMap::new();
    for start in &ids {
        if state.get(start.as_str()).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        state.insert(start.as_str(), 1);
        while let Some((u, k)) = stack.pop() {
            let next = adj.get(u).and_then(|v| v.get(k)).copied();
            match next {
                Some(v) => {
                    stack.push((u, k + 1));
                    match state.get(v).copied().unwrap_or(0) {
                        1 => return false,
                        0 => {
                            state.insert(v, 1);
                            stack.push((v, 0));
                        }
                        _ => {}
                    }
                }
                None => {
                    state.insert(u, 2);
                }
            }
        }
    }
    true
}

fn check_errors(def: &Value, errors: &[ValidationError]) -> Result<(), TestCaseError> {
    prop_assert!(!errors.is_empty(), "Err with no errors");
    let ids: HashSet<String> = node_ids(def).into_iter().collect();
    let edge_ids = edge_ids(def);
    let has_guardrails = def.get("guardrails").is_some_and(|g| !g.is_null());
    for e in errors {
        prop_assert!(!e.code.trim().is_empty(), "empty code: {e:?}");
        prop_assert!(!e.message.trim().is_empty(), "empty message: {e:?}");
        match &e.node_id {
            Some(n) => {
                prop_assert!(
                    !WORKFLOW_CODES.contains(&e.code),
                    "workflow-level error with a node id: {e:?}"
                );
                let named = ids.contains(n) || (e.code == "dangling_edge" && edge_ids.contains(n));
                prop_assert!(
                    named,
                    "error names `{n}`, not a node of the document: {e:?}"
                );
            }
            None => {
                prop_assert!(
                    WORKFLOW_CODES.contains(&e.code) || EITHER_CODES.contains(&e.code),
                    "node-level error without a node id: {e:?}"
                );
                if e.code == "timeout_out_of_range" {
                    prop_assert!(
                        workflow_timeout_out_of_range(def),
                        "workflow timeout error but the workflow timeout is fine: {e:?}"
                    );
                }
                if e.code == "invalid_guardrails" {
                    prop_assert!(
                        has_guardrails,
                        "workflow guardrails error without any: {e:?}"
                    );
                }
            }
        }
    }
    let wf_timeouts = errors
        .iter()
        .filter(|e| e.code == "timeout_out_of_range" && e.node_id.is_none())
        .count();
    if errors[0].code != "invalid_document" {
        prop_assert_eq!(wf_timeouts, usize::from(workflow_timeout_out_of_range(def)));
    } else {
        prop_assert_eq!(errors.len(), 1, "invalid_document comes alone");
    }
    Ok(())
}

fn check_valid(def: &Value) -> Result<(), TestCaseError> {
    let nodes = def["nodes"]
        .as_array()
        .expect("a valid definition has nodes");
    let kinds: Vec<&str> = nodes.iter().filter_map(|n| str_field(n, "kind")).collect();
    prop_assert_eq!(kinds.iter().filter(|k| **k == "input").count(), 1);
    prop_assert_eq!(kinds.iter().filter(|k| **k == "output").count(), 1);
    prop_assert!(
        kinds.iter().all(|k| KINDS.contains(k)),
        "unknown kind validated: {kinds:?}"
    );
    let ids = node_ids(def);
    let unique: HashSet<&String> = ids.iter().collect();
    prop_assert_eq!(unique.len(), ids.len(), "duplicate ids validated");
    for e in def
        .get("edges")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        prop_assert!(ids.iter().any(|i| Some(i.as_str()) == str_field(e, "from")));
        prop_assert!(ids.iter().any(|i| Some(i.as_str()) == str_field(e, "to")));
    }
    prop_assert!(acyclic(def), "a cyclic definition validated: {def}");
    Ok(())
}

fn check(def: &Value) -> Result<bool, TestCaseError> {
    let first = parse_and_validate(def);
    let second = parse_and_validate(def);
    match (first, second) {
        (Ok((_, plan)), Ok(_)) => {
            check_valid(def)?;
            prop_assert_eq!(plan.nodes.len(), node_ids(def).len());
            Ok(true)
        }
        (Err(a), Err(b)) => {
            prop_assert_eq!(&a, &b, "validation is not deterministic");
            check_errors(def, &a)?;
            Ok(false)
        }
        (a, b) => {
            prop_assert!(
                false,
                "validated once but not twice: {:?} / {:?}",
                a.is_ok(),
                b.is_ok()
            );
            unreachable!()
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// Never a panic; every error well-formed and naming a node of the
    /// document; what validates is one input, one output, no cycle; twice the
    /// same answer.
    #[test]
    fn generated_definitions_validate_soundly(def in definition()) {
        check(&def)?;
    }

    /// Well-formed definitions untouched do validate (the generator is not
    /// only producing garbage), and a back edge on one makes a cycle that is
    /// reported with a node of the cycle.
    #[test]
    fn well_formed_definitions_validate_and_back_edges_are_cycles(
        def in well_formed(),
        which in any::<prop::sample::Index>(),
    ) {
        let r = parse_and_validate(&def);
        prop_assert!(r.is_ok(), "{def}: {:?}", r.err());
        let mut cyclic = def.clone();
        apply(&mut cyclic, &Mutation::BackEdge(which));
        let errs = parse_and_validate(&cyclic).expect_err("a back edge breaks it");
        check_errors(&cyclic, &errs)?;
        // a → b and b → a: always a cycle (whatever else it breaks).
        prop_assert!(errs.iter().any(|e| e.code == "cycle"), "{cyclic}: {errs:?}");
    }

    /// Any JSON at all: never a panic, at most one `invalid_document`.
    #[test]
    fn arbitrary_json_is_refused_cleanly(v in any_json()) {
        check(&v)?;
    }

    /// Each mutation alone, on a definition known to be good.
    #[test]
    fn single_mutations_of_a_good_definition(def in well_formed(), m in mutation()) {
        let mut def = def;
        apply(&mut def, &m);
        check(&def)?;
    }
}

#[test]
fn the_generators_reach_both_outcomes() {
    // A fixed sample: both valid and invalid definitions come out, and many
    // distinct codes, so the properties above are not vacuous.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let strat = definition();
    let (mut ok, mut err) = (0, 0);
    let mut codes = BTreeSet::new();
    for _ in 0..300 {
        let def = strat.new_tree(&mut runner).unwrap().current();
        match parse_and_validate(&def) {
            Ok(_) => ok += 1,
            Err(es) => {
                err += 1;
                codes.extend(es.iter().map(|e| e.code));
            }
        }
    }
    assert!(ok >= 15 && err >= 100, "ok {ok}, err {err}");
    for want in [
        "invalid_document",
        "invalid_node_id",
        "duplicate_node_id",
        "unknown_kind",
        "invalid_config",
        "dangling_edge",
        "cycle",
        "missing_input",
        "missing_output",
        "unreachable_node",
        "expression_does_not_compile",
        "script_does_not_compile",
        "timeout_out_of_range",
    ] {
        assert!(
            codes.contains(want),
            "generator never produced `{want}`: {codes:?}"
        );
    }
}

/// Sanity of the independent cycle check itself.
#[test]
fn own_dfs_finds_cycles() {
    let mut m = Map::new();
    m.insert(
        "nodes".into(),
        json!([{"id": "a"}, {"id": "b"}, {"id": "c"}]),
    );
    m.insert(
        "edges".into(),
        json!([{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]),
    );
    let mut v = Value::Object(m);
    assert!(acyclic(&v));
    v["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "c", "to": "a"}));
    assert!(!acyclic(&v));
    assert!(!acyclic(
        &json!({"nodes": [{"id": "a"}], "edges": [{"from": "a", "to": "a"}]})
    ));
}
