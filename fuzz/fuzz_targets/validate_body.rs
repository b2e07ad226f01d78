//! Fuzzes request-body validation: arbitrary bytes go through
//! `Schema::parse` (JSON parse, validate, deserialise) like a request body,
//! and every JSON value that parses is checked against the schema directly.
//! Checks that the 422 report agrees with `errors()` and stays bounded, and
//! that no accepted field carries a NUL (Postgres cannot store one).
#![no_main]

use edgeworks_input::validate::{Field, Schema, MAX_REPORTED_ERRORS};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn schema() -> Schema {
    Schema::object()
        .field(
            "session_id",
            Field::string().required().non_blank().max_chars(200),
        )
        .field(
            "message",
            Field::string().required().min_chars(1).max_chars(4000),
        )
        .field("priority", Field::integer().range(0, 10))
        .field("temperature", Field::number().range_f64(0.0, 2.0))
        .field("stream", Field::boolean())
        .field("model", Field::string().one_of(&["fast", "smart"]))
        .field("job_id", Field::uuid())
        .field(
            "tags",
            Field::array(Field::string().max_chars(32)).max_items(20),
        )
        .field(
            "messages",
            Field::array(Field::object(
                Schema::object()
                    .field(
                        "role",
                        Field::string()
                            .required()
                            .one_of(&["user", "assistant", "system"]),
                    )
                    .field("content", Field::string().required().max_chars(1000)),
            ))
            .max_items(100),
        )
        .field(
            "options",
            Field::object(
                Schema::object()
                    .field("depth", Field::integer().range(1, 3))
                    .deny_unknown_fields(),
            ),
        )
        .field("metadata", Field::any())
}

const FIELDS: [&str; 10] = [
    "session_id", "message", "priority", "temperature", "stream", "model", "job_id", "tags", "messages",
    "metadata",
];

fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let schema = schema();
    match schema.parse::<Value>(data) {
        Ok(v) => {
            assert!(schema.errors(&v).is_empty());
            // Unknown fields are ignored (and dropped by typed bodies); the
            // listed ones reach SQL, so none may hold a NUL.
            assert!(!FIELDS.iter().any(|f| v.get(*f).is_some_and(holds_nul)));
        }
        Err(e) => assert!(
            e.status() == 400 || e.status() == 422,
            "unexpected status {}",
            e.status()
        ),
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let errors = schema.errors(&v);
        assert!(errors.len() <= MAX_REPORTED_ERRORS);
        match schema.validate(&v) {
            Ok(()) => assert!(errors.is_empty()),
            Err(e) => {
                assert_eq!(e.status(), 422);
                let listed = e
                    .details()
                    .and_then(|d| d["fields"].as_array())
                    .map_or(0, Vec::len);
                assert_eq!(listed, errors.len());
            }
        }
    }
});
