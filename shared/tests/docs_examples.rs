//! The documented format and its examples agree with the code: every example
//! in docs/examples matches docs/workflow.schema.json and passes validation,
//! and definitions the validator refuses for their shape the schema refuses too.

use serde_json::{json, Value};
use std::path::PathBuf;

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(docs().join("workflow.schema.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str::<Value>(&text).unwrap()).unwrap()
}

#[test]
fn every_example_matches_the_schema_and_validates() {
    let schema = schema();
    let mut n = 0;
    for entry in std::fs::read_dir(docs().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let errors: Vec<String> = schema.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        if let Err(e) = weft_shared::validate::parse_and_validate(&doc) {
            panic!("{}: {e:?}", path.display());
        }
        n += 1;
    }
    assert!(n >= 3, "expected the documented examples");
}

#[test]
fn the_schema_refuses_what_the_parser_refuses() {
    let schema = schema();
    for bad in [
        json!({"nodes": []}),
        json!({"name": "x", "nodes": [], "extra": 1}),
        json!({"name": "x", "nodes": [{"id": "a", "kind": "script"}]}),
        json!({"name": "x", "nodes": [{"id": "a", "kind": "input", "colour": "red"}]}),
        json!({"name": "x", "nodes": [], "edges": [{"from": "a"}]}),
        json!({"name": "x", "timeout_ms": 0, "nodes": []}),
    ] {
        assert!(!schema.is_valid(&bad), "schema accepted {bad}");
        assert!(
            weft_shared::validate::parse_and_validate(&bad).is_err(),
            "validator accepted {bad}"
        );
    }
}

#[test]
fn schema_and_validator_agree_on_the_bounds_of_human_waits() {
    let schema = schema();
    let def = |timeout: u64, kind: &str, node_timeout: u64| {
        let config = if kind == "human" {
            json!({"prompt": "ok?"})
        } else {
            json!({"code": "return 1"})
        };
        json!({"name": "x", "timeout_ms": timeout, "nodes": [
            {"id": "in", "kind": "input"},
            {"id": "step", "kind": kind, "timeout_ms": node_timeout, "config": config},
            {"id": "out", "kind": "output"}],
            "edges": [{"from": "in", "to": "step"}, {"from": "step", "to": "out"}]})
    };
    let thirty_days = 30 * 24 * 3_600_000;
    for (doc, ok) in [
        (def(600_000, "script", 600_000), true),
        (def(600_001, "script", 1_000), false),
        (def(600_000, "script", 600_001), false),
        (def(thirty_days, "human", thirty_days), true),
        (def(thirty_days + 1, "human", 1_000), false),
        (def(1_000, "human", thirty_days + 1), false),
        (
            json!({"name": "x", "nodes": [{"id": "h", "kind": "human", "config": {"prompt": "p", "extra": 1}}]}),
            false,
        ),
    ] {
        assert_eq!(schema.is_valid(&doc), ok, "schema on {doc}");
        assert_eq!(
            weft_shared::validate::parse_and_validate(&doc).is_ok(),
            ok,
            "validator on {doc}"
        );
    }
}
