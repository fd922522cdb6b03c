//! Served responses checked against the committed JSON Schemas (`schema/`), which
//! `tests/it/contract.rs` keeps equal to the Rust types.

use std::sync::OnceLock;

use serde_json::Value;

fn validator(file: &str) -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema")
        .join(file);
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn check(v: &jsonschema::Validator, what: &str, body: &Value) {
    let errors: Vec<String> = v
        .iter_errors(body)
        .take(5)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what} does not match its schema: {errors:#?}");
}

/// A `GET /api/models` body (list, page or search).
pub fn assert_models_response(body: &Value) {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    check(
        V.get_or_init(|| validator("models.schema.json")),
        "models response",
        body,
    );
}

/// A `GET /api/cache/warm-models` body.
pub fn assert_status_response(body: &Value) {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    check(
        V.get_or_init(|| validator("status.schema.json")),
        "status response",
        body,
    );
}

/// A `GET /api/models/changes` body.
pub fn assert_changes_response(body: &Value) {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    check(
        V.get_or_init(|| validator("changes.schema.json")),
        "changes response",
        body,
    );
}
