//! Declarative validation of JSON request bodies.
//!
//! A [`Schema`] lists an object's fields and their rules; validating a body
//! reports every field error at once as a 422 `validation_failed` with
//! `details.fields = [{field, code, message}]`, so a client can fix a form in
//! one round trip.
//!
//! ```
//! use edgeworks_input::validate::{Field, Schema};
//! let schema = Schema::object()
//!     .field("session_id", Field::string().required().max_chars(200))
//!     .field("priority", Field::integer().range(0, 10))
//!     .field("tags", Field::array(Field::string().max_chars(32)).max_items(10));
//! assert!(schema.validate(&serde_json::json!({"session_id": "s1", "priority": 3})).is_ok());
//! ```
//!
//! Conventions:
//! - Unknown fields are ignored by default (clients written against the
//!   seeds send extra fields; the handler's typed struct drops them), or
//!   refused with [`Schema::deny_unknown_fields`].
//! - `null` is the same as absent: an optional field may be `null`, a
//!   required one may not.
//! - Lengths count Unicode scalar values (`char`s), not bytes, so a limit of
//!   200 means the same for English and Japanese.
//! - Integers accept JSON numbers with no fractional part (`3` and `3.0`).
//! - Field paths read `options.temperature`, `messages[2].content`; an error
//!   about the body as a whole has the path `body`.
//! - No string anywhere in a validated body may contain NUL (`\u0000`),
//!   code `contains_nul`: Postgres `text` and `jsonb` cannot store it, so a
//!   NUL that got past validation would surface as a 500 from SQL. This holds
//!   for every string field whatever its other rules, and for every string
//!   and key inside a [`Field::any`] value.
//! - At most [`MAX_REPORTED_ERRORS`] errors are reported; when checking
//!   stopped early `details.truncated = true`, so a huge array can make
//!   neither a huge response nor a long walk.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use edgeworks_core::ApiError;

pub const MAX_REPORTED_ERRORS: usize = 50;

/// One failed rule. `code` is stable; `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

/// The rules for one value.
#[derive(Debug, Clone)]
pub struct Field {
    kind: Kind,
    required: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    String(StringRules),
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Number {
        min: Option<f64>,
        max: Option<f64>,
    },
    Boolean,
    Array {
        item: Box<Field>,
        min_items: Option<usize>,
        max_items: Option<usize>,
    },
    Object(Schema),
    Any,
}

#[derive(Debug, Clone, Default)]
struct StringRules {
    min_chars: Option<usize>,
    max_chars: Option<usize>,
    non_blank: bool,
    one_of: Option<Vec<String>>,
    uuid: bool,
}

impl Field {
    pub fn string() -> Field {
        Field::of(Kind::String(StringRules::default()))
    }
    pub fn integer() -> Field {
        Field::of(Kind::Integer { min: None, max: None })
    }
    pub fn number() -> Field {
        Field::of(Kind::Number { min: None, max: None })
    }
    pub fn boolean() -> Field {
        Field::of(Kind::Boolean)
    }
    /// An array whose every element must satisfy `item`.
    pub fn array(item: Field) -> Field {
        Field::of(Kind::Array {
            item: Box::new(item),
            min_items: None,
            max_items: None,
        })
    }
    /// A nested object.
    pub fn object(schema: Schema) -> Field {
        Field::of(Kind::Object(schema))
    }
    /// Any JSON value (only presence is checked, if required).
    pub fn any() -> Field {
        Field::of(Kind::Any)
    }
    /// A string that is a hyphenated UUID.
    pub fn uuid() -> Field {
        Field::string().with_string(|r| r.uuid = true)
    }

    fn of(kind: Kind) -> Field {
        Field { kind, required: false }
    }

    pub fn required(mut self) -> Field {
        self.required = true;
        self
    }

    fn with_string(mut self, f: impl FnOnce(&mut StringRules)) -> Field {
        if let Kind::String(r) = &mut self.kind {
            f(r);
        } else {
            debug_assert!(false, "string rule on a non-string field");
        }
        self
    }

    // Rules that do not fit the field's type are programming errors; they
    // trip a debug assertion (tests catch them) and are otherwise ignored.

    pub fn min_chars(self, n: usize) -> Field {
        self.with_string(|r| r.min_chars = Some(n))
    }
    pub fn max_chars(self, n: usize) -> Field {
        self.with_string(|r| r.max_chars = Some(n))
    }
    /// Refuses strings that are empty or only whitespace.
    pub fn non_blank(self) -> Field {
        self.with_string(|r| r.non_blank = true)
    }
    /// The string must equal one of `values` exactly (an enum).
    pub fn one_of(self, values: &[&str]) -> Field {
        self.with_string(|r| r.one_of = Some(values.iter().map(|v| v.to_string()).collect()))
    }

    /// Inclusive bounds for `integer()` (and, converted, for `number()`).
    pub fn range(mut self, min: i64, max: i64) -> Field {
        match &mut self.kind {
            Kind::Integer { min: lo, max: hi } => (*lo, *hi) = (Some(min), Some(max)),
            Kind::Number { min: lo, max: hi } => (*lo, *hi) = (Some(min as f64), Some(max as f64)),
            _ => debug_assert!(false, "range on a non-numeric field"),
        }
        self
    }
    /// Inclusive bounds for `number()`.
    pub fn range_f64(mut self, min: f64, max: f64) -> Field {
        match &mut self.kind {
            Kind::Number { min: lo, max: hi } => (*lo, *hi) = (Some(min), Some(max)),
            _ => debug_assert!(false, "range_f64 on a non-number field"),
        }
        self
    }

    pub fn min_items(mut self, n: usize) -> Field {
        match &mut self.kind {
            Kind::Array { min_items, .. } => *min_items = Some(n),
            _ => debug_assert!(false, "min_items on a non-array field"),
        }
        self
    }
    pub fn max_items(mut self, n: usize) -> Field {
        match &mut self.kind {
            Kind::Array { max_items, .. } => *max_items = Some(n),
            _ => debug_assert!(false, "max_items on a non-array field"),
        }
        self
    }

    fn check(&self, path: &str, value: &Value, out: &mut Errors) {
        match (&self.kind, value) {
            (Kind::Any, v) => {
                if holds_nul(v) {
                    out.push(path, "contains_nul", NUL_MESSAGE.into());
                }
            }
            (Kind::String(rules), Value::String(s)) => rules.check(path, s, out),
            (Kind::Integer { min, max }, Value::Number(n)) => match integer_value(n) {
                Some(i) => {
                    let below = min.is_some_and(|m| i < m as i128);
                    let above = max.is_some_and(|m| i > m as i128);
                    if below || above {
                        out.push(path, "out_of_range", range_message(*min, *max));
                    }
                }
                None => out.push(path, "wrong_type", "must be an integer".into()),
            },
            (Kind::Number { min, max }, Value::Number(n)) => {
                // JSON numbers are finite; a number serde cannot give as
                // f64 is out of any range.
                let in_range = n
                    .as_f64()
                    .is_some_and(|x| min.is_none_or(|m| x >= m) && max.is_none_or(|m| x <= m));
                if !in_range {
                    out.push(path, "out_of_range", range_message(*min, *max));
                }
            }
            (Kind::Boolean, Value::Bool(_)) => {}
            (
                Kind::Array {
                    item,
                    min_items,
                    max_items,
                },
                Value::Array(items),
            ) => {
                if let Some(m) = min_items.filter(|m| items.len() < *m) {
                    out.push(path, "too_few_items", format!("must have at least {m} items"));
                }
                if let Some(m) = max_items.filter(|m| items.len() > *m) {
                    // Checking every element of an over-long array wastes
                    // CPU on a body we refuse anyway.
                    out.push(path, "too_many_items", format!("must have at most {m} items"));
                    return;
                }
                for (i, v) in items.iter().enumerate() {
                    if out.full() {
                        // Stop walking; the client already has plenty to fix.
                        out.truncated = true;
                        return;
                    }
                    if v.is_null() {
                        out.push(&format!("{path}[{i}]"), "required", "must not be null".into());
                    } else {
                        item.check(&format!("{path}[{i}]"), v, out);
                    }
                }
            }
            (Kind::Object(schema), Value::Object(_)) => schema.check(path, value, out),
            (kind, _) => out.push(path, "wrong_type", format!("must be {}", kind.describe())),
        }
    }
}

impl Kind {
    fn describe(&self) -> &'static str {
        match self {
            Kind::String(_) => "a string",
            Kind::Integer { .. } => "an integer",
            Kind::Number { .. } => "a number",
            Kind::Boolean => "true or false",
            Kind::Array { .. } => "an array",
            Kind::Object(_) => "an object",
            Kind::Any => "any value",
        }
    }
}

/// Exact integer value, widened so u64 values above i64::MAX compare
/// correctly; floats count only when whole and exactly representable.
fn integer_value(n: &serde_json::Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        return Some(i as i128);
    }
    if let Some(u) = n.as_u64() {
        return Some(u as i128);
    }
    let f = n.as_f64()?;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    (f.fract() == 0.0 && f.abs() <= EXACT).then_some(f as i128)
}

fn range_message<T: std::fmt::Display>(min: Option<T>, max: Option<T>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("must be between {a} and {b}"),
        (Some(a), None) => format!("must be at least {a}"),
        (None, Some(b)) => format!("must be at most {b}"),
        (None, None) => "is out of range".into(),
    }
}

const NUL_MESSAGE: &str = "must not contain the NUL character (\\u0000)";

/// Whether any string or object key inside `v` contains NUL. serde_json caps
/// nesting at 128 levels, so the recursion is bounded.
fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

impl StringRules {
    fn check(&self, path: &str, s: &str, out: &mut Errors) {
        // Before every other rule: whatever else is wrong, this value can
        // never reach SQL, and "blank" or "one_of" would hide why.
        if s.contains('\0') {
            out.push(path, "contains_nul", NUL_MESSAGE.into());
            return;
        }
        if self.non_blank && s.trim().is_empty() {
            out.push(path, "blank", "must not be blank".into());
            return;
        }
        // Count only as far as the limit needs: a 10 MB string is not walked twice.
        let limit = self.max_chars.map_or(usize::MAX, |m| m.saturating_add(1));
        let chars = s.chars().take(limit).count();
        if let Some(m) = self.min_chars.filter(|m| chars < *m) {
            out.push(path, "too_short", format!("must be at least {m} characters"));
        }
        if let Some(m) = self.max_chars.filter(|m| chars > *m) {
            out.push(path, "too_long", format!("must be at most {m} characters"));
        }
        if let Some(allowed) = &self.one_of {
            if !allowed.iter().any(|a| a == s) {
                out.push(path, "not_allowed", format!("must be one of: {}", allowed.join(", ")));
            }
        }
        if self.uuid && !edgeworks_core::ids::is_uuid(s) {
            out.push(path, "invalid_uuid", "must be a UUID".into());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unknown {
    Ignore,
    Reject,
}

/// The fields of a JSON object and their rules.
#[derive(Debug, Clone)]
pub struct Schema {
    fields: Vec<(String, Field)>,
    unknown: Unknown,
}

impl Schema {
    pub fn object() -> Schema {
        Schema {
            fields: Vec::new(),
            unknown: Unknown::Ignore,
        }
    }

    pub fn field(mut self, name: &str, rules: Field) -> Schema {
        self.fields.push((name.to_string(), rules));
        self
    }

    /// Report fields the schema does not list (code `unknown_field`).
    pub fn deny_unknown_fields(mut self) -> Schema {
        self.unknown = Unknown::Reject;
        self
    }

    /// Every problem with `value`, in schema order, capped at
    /// [`MAX_REPORTED_ERRORS`] (check [`Schema::validate`] for the 422).
    pub fn errors(&self, value: &Value) -> Vec<FieldError> {
        let mut out = Errors::default();
        if value.is_object() {
            self.check("", value, &mut out);
        } else {
            out.push("", "wrong_type", "request body must be a JSON object".into());
        }
        out.list
    }

    /// `Ok` or a 422 `validation_failed` listing every field error.
    pub fn validate(&self, value: &Value) -> Result<(), ApiError> {
        let mut out = Errors::default();
        if value.is_object() {
            self.check("", value, &mut out);
        } else {
            out.push("", "wrong_type", "request body must be a JSON object".into());
        }
        if out.list.is_empty() {
            return Ok(());
        }
        let fields: Vec<Value> = out
            .list
            .iter()
            .map(|e| json!({ "field": e.field, "code": e.code, "message": e.message }))
            .collect();
        let mut details = json!({ "fields": fields });
        if out.truncated {
            details["truncated"] = json!(true);
        }
        let n = out.list.len();
        let message = if n == 1 {
            format!("{} {}", out.list[0].field, out.list[0].message)
        } else {
            format!(
                "request body has {n}{} invalid fields",
                if out.truncated { "+" } else { "" }
            )
        };
        Err(ApiError::unprocessable(message, details))
    }

    /// A query string as the JSON object this schema checks. A parameter
    /// whose field is an integer, number or boolean becomes one when it
    /// parses as one; otherwise it stays text, so the 422 names the field
    /// instead of a parse error hiding which parameter was wrong.
    pub fn object_from_query(&self, pairs: Vec<(String, String)>) -> Value {
        let mut map = serde_json::Map::new();
        for (name, text) in pairs {
            let kind = self.fields.iter().find(|(n, _)| *n == name).map(|(_, f)| &f.kind);
            let value = match kind {
                Some(Kind::Integer { .. }) => text.trim().parse::<i64>().map(Value::from).ok(),
                Some(Kind::Number { .. }) => text.trim().parse::<f64>().ok().map(Value::from),
                Some(Kind::Boolean) => text.trim().parse::<bool>().ok().map(Value::from),
                _ => None,
            };
            map.insert(name, value.unwrap_or(Value::String(text)));
        }
        Value::Object(map)
    }

    /// Validates an already parsed value, then deserialises it into `T`.
    pub fn parse_value<T: DeserializeOwned>(&self, value: Value) -> Result<T, ApiError> {
        self.validate(&value)?;
        serde_json::from_value(value)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("request body has the wrong shape: {e}")))
    }

    /// Parses a request body, validates it, then deserialises it into `T`.
    /// Bad JSON is a 400 (from [`edgeworks_core::http::parse_json`]); rule failures a 422.
    pub fn parse<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, ApiError> {
        let value: Value = edgeworks_core::http::parse_json(body)?;
        self.parse_value(value)
    }

    fn check(&self, path: &str, value: &Value, out: &mut Errors) {
        let Some(map) = value.as_object() else { return };
        for (name, rules) in &self.fields {
            let child = join(path, name);
            match map.get(name) {
                None | Some(Value::Null) => {
                    if rules.required {
                        out.push(&child, "required", "is required".into());
                    }
                }
                Some(v) => rules.check(&child, v, out),
            }
        }
        if self.unknown == Unknown::Reject {
            for key in map.keys() {
                if !self.fields.iter().any(|(n, _)| n == key) {
                    // Clip what we echo: keys are client-controlled.
                    let shown: String = key.chars().take(64).collect();
                    out.push(&join(path, &shown), "unknown_field", "is not a known field".into());
                }
            }
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

#[derive(Default)]
struct Errors {
    list: Vec<FieldError>,
    truncated: bool,
}

impl Errors {
    fn full(&self) -> bool {
        self.list.len() >= MAX_REPORTED_ERRORS
    }

    fn push(&mut self, path: &str, code: &'static str, message: String) {
        if self.full() {
            self.truncated = true;
            return;
        }
        let field = if path.is_empty() {
            "body".to_string()
        } else {
            path.to_string()
        };
        self.list.push(FieldError { field, code, message });
    }
}

/// A request type that carries its own schema: the body and query
/// extractors validate against it before deserialising, so a handler never
/// sees an unchecked value. Write it with [`input!`](crate::input), which
/// names each field once for both the struct and the schema.
pub trait Validate: DeserializeOwned {
    /// The rules every instance must pass.
    fn schema() -> Schema;
    /// Rules across fields (e.g. "one of a or b"), after the schema passed.
    fn check(&self) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Declares a request type and its schema together, so a field's name is
/// written once:
///
/// ```
/// edgeworks_input::input! {
///     /// What chat-status takes.
///     pub struct StatusQuery {
///         pub job_id: Option<String> = edgeworks_input::validate::Field::uuid(),
///         pub limit: Option<u32> = edgeworks_input::validate::Field::integer().range(1, 100),
///     }
/// }
/// use edgeworks_input::validate::Validate;
/// let q: StatusQuery = StatusQuery::schema().parse(br#"{"limit": 5}"#).unwrap();
/// assert_eq!(q.limit, Some(5));
/// ```
#[macro_export]
macro_rules! input {
    ($(#[$meta:meta])* $vis:vis struct $name:ident {
        $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty = $rule:expr),* $(,)?
    } $(check = $check:path)?) => {
        $(#[$meta])*
        #[derive(Debug, Clone, ::serde::Deserialize)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }
        impl $crate::validate::Validate for $name {
            fn schema() -> $crate::validate::Schema {
                $crate::validate::Schema::object()$(.field(stringify!($field), $rule))*
            }
            $(fn check(&self) -> Result<(), ::edgeworks_core::ApiError> {
                $check(self)
            })?
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chat_schema() -> Schema {
        Schema::object()
            .field("session_id", Field::string().required().non_blank().max_chars(200))
            .field("message", Field::string().required().min_chars(1).max_chars(10))
            .field("priority", Field::integer().range(0, 10))
            .field("temperature", Field::number().range_f64(0.0, 2.0))
            .field("stream", Field::boolean())
            .field("model", Field::string().one_of(&["fast", "smart"]))
            .field("job_id", Field::uuid())
            .field(
                "tags",
                Field::array(Field::string().max_chars(5)).min_items(1).max_items(3),
            )
            .field(
                "options",
                Field::object(Schema::object().field("depth", Field::integer().required().range(1, 3))),
            )
            .field("metadata", Field::any())
    }

    fn fields_of(err: &ApiError) -> Vec<(String, String)> {
        err.details().unwrap()["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["field"].as_str().unwrap().to_string(),
                    f["code"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_valid_body_passes() {
        let body = json!({
            "session_id": "s-1", "message": "hi", "priority": 10, "temperature": 0.7, "stream": true,
            "model": "fast", "job_id": "7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a10", "tags": ["a"],
            "options": {"depth": 2}, "metadata": {"anything": [1, 2]}, "extra": "ignored",
        });
        assert_eq!(chat_schema().validate(&body), Ok(()));
    }

    #[test]
    fn every_field_error_is_reported_at_once() {
        let body = json!({
            "message": "", "priority": 11, "temperature": "hot", "stream": "yes", "model": "huge",
            "job_id": "not-a-uuid", "tags": ["ok", "toolong", 5, null], "options": {"depth": 0},
        });
        let err = chat_schema().validate(&body).unwrap_err();
        assert_eq!(err.status(), 422);
        assert_eq!(err.code(), "validation_failed");
        assert_eq!(
            fields_of(&err),
            pairs(&[
                ("session_id", "required"),
                ("message", "too_short"),
                ("priority", "out_of_range"),
                ("temperature", "wrong_type"),
                ("stream", "wrong_type"),
                ("model", "not_allowed"),
                ("job_id", "invalid_uuid"),
                ("tags", "too_many_items"),
                ("options.depth", "out_of_range"),
            ])
        );
        let first = &err.details().unwrap()["fields"][0];
        assert_eq!(first["message"], "is required");
    }

    #[test]
    fn array_items_are_checked_with_indexed_paths() {
        let body = json!({"session_id": "s", "message": "m", "tags": ["ok", "toolong", 5]});
        let err = chat_schema().validate(&body).unwrap_err();
        assert_eq!(
            fields_of(&err),
            pairs(&[("tags[1]", "too_long"), ("tags[2]", "wrong_type")])
        );
        let err = chat_schema()
            .validate(&json!({"session_id": "s", "message": "m", "tags": []}))
            .unwrap_err();
        assert_eq!(fields_of(&err), pairs(&[("tags", "too_few_items")]));
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let schema = Schema::object().field("t", Field::string().max_chars(3));
        assert!(schema.validate(&json!({"t": "日本語"})).is_ok()); // 9 bytes, 3 chars
        assert!(schema.validate(&json!({"t": "👍👍👍"})).is_ok());
        assert!(schema.validate(&json!({"t": "日本語!"})).is_err());
    }

    #[test]
    fn null_counts_as_absent() {
        let body = json!({"session_id": null, "message": "m", "priority": null});
        let err = chat_schema().validate(&body).unwrap_err();
        assert_eq!(fields_of(&err), pairs(&[("session_id", "required")]));
    }

    #[test]
    fn blank_strings_are_refused_where_asked() {
        let err = chat_schema()
            .validate(&json!({"session_id": " \n\t", "message": "m"}))
            .unwrap_err();
        assert_eq!(fields_of(&err), pairs(&[("session_id", "blank")]));
    }

    #[test]
    fn integers_accept_whole_floats_and_refuse_fractions() {
        let schema = Schema::object().field("n", Field::integer().range(0, 10));
        assert!(schema.validate(&json!({"n": 3.0})).is_ok());
        assert_eq!(
            fields_of(&schema.validate(&json!({"n": 3.5})).unwrap_err()),
            pairs(&[("n", "wrong_type")])
        );
        assert_eq!(
            fields_of(&schema.validate(&json!({"n": u64::MAX})).unwrap_err()),
            pairs(&[("n", "out_of_range")])
        );
        assert_eq!(
            fields_of(&schema.validate(&json!({"n": -1})).unwrap_err()),
            pairs(&[("n", "out_of_range")])
        );
        assert_eq!(
            fields_of(&schema.validate(&json!({"n": 1e300})).unwrap_err()),
            pairs(&[("n", "wrong_type")])
        );
    }

    #[test]
    fn nul_is_refused_in_every_string_field_whatever_its_other_rules() {
        let body = json!({
            "session_id": "s\u{0}1", "message": "\u{0}", "model": "fast\u{0}",
            "job_id": "7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a10\u{0}", "tags": ["a\u{0}"],
        });
        let err = chat_schema().validate(&body).unwrap_err();
        assert_eq!(err.status(), 422);
        assert_eq!(err.code(), "validation_failed");
        assert_eq!(
            fields_of(&err),
            pairs(&[
                ("session_id", "contains_nul"),
                ("message", "contains_nul"),
                ("model", "contains_nul"),
                ("job_id", "contains_nul"),
                ("tags[0]", "contains_nul"),
            ])
        );
        // A lone NUL is neither blank nor too short: it is its own problem.
        let schema = Schema::object().field("w", Field::string().non_blank().min_chars(3));
        assert_eq!(
            fields_of(&schema.validate(&json!({"w": "\u{0}"})).unwrap_err()),
            pairs(&[("w", "contains_nul")])
        );
    }

    #[test]
    fn nul_is_refused_anywhere_inside_a_free_form_value() {
        let schema = Schema::object().field("metadata", Field::any());
        for bad in [json!("x\u{0}"), json!({"a": [1, {"b": "\u{0}"}]}), json!({"k\u{0}": 1})] {
            assert_eq!(
                fields_of(&schema.validate(&json!({ "metadata": bad })).unwrap_err()),
                pairs(&[("metadata", "contains_nul")])
            );
        }
        assert!(schema
            .validate(&json!({"metadata": {"a": ["\\u0000 spelled out is fine", 1, null, true]}}))
            .is_ok());
    }

    #[test]
    fn unknown_fields_are_ignored_unless_denied() {
        let schema = Schema::object().field("a", Field::string());
        assert!(schema.validate(&json!({"a": "x", "b": 1})).is_ok());
        let strict = schema.deny_unknown_fields();
        assert_eq!(
            fields_of(&strict.validate(&json!({"a": "x", "b": 1})).unwrap_err()),
            pairs(&[("b", "unknown_field")])
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_one_error_about_the_body() {
        for v in [json!([]), json!("x"), json!(1), Value::Null] {
            let err = chat_schema().validate(&v).unwrap_err();
            assert_eq!(fields_of(&err), pairs(&[("body", "wrong_type")]));
        }
    }

    #[test]
    fn error_list_is_capped() {
        let schema = Schema::object().field("xs", Field::array(Field::integer()));
        let body = json!({"xs": vec!["no"; 500]});
        let err = schema.validate(&body).unwrap_err();
        assert_eq!(fields_of(&err).len(), MAX_REPORTED_ERRORS);
        assert_eq!(err.details().unwrap()["truncated"], true);
    }

    #[test]
    fn parse_distinguishes_bad_json_from_invalid_fields() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            session_id: String,
            priority: Option<u8>,
        }
        let schema = Schema::object()
            .field("session_id", Field::string().required())
            .field("priority", Field::integer().range(0, 10));
        let ok: Body = schema.parse(br#"{"session_id": "s", "priority": 4}"#).unwrap();
        assert_eq!((ok.session_id.as_str(), ok.priority), ("s", Some(4)));
        assert_eq!(schema.parse::<Body>(b"{oops").unwrap_err().code(), "invalid_json");
        assert_eq!(schema.parse::<Body>(b"{}").unwrap_err().code(), "validation_failed");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
            prop_oneof![Just("session_id"), Just("tags"), Just("options"), Just("depth")].prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("session_id".to_string()),
                        Just("message".to_string()),
                        Just("priority".to_string()),
                        Just("tags".to_string()),
                        Just("options".to_string()),
                        Just("depth".to_string()),
                        Just("job_id".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn validation_never_panics_and_reports_only_when_invalid(v in arb_json()) {
            let schema = chat_schema();
            let errors = schema.errors(&v);
            prop_assert!(errors.len() <= MAX_REPORTED_ERRORS);
            match schema.validate(&v) {
                Ok(()) => prop_assert!(errors.is_empty()),
                Err(e) => {
                    prop_assert_eq!(e.status(), 422);
                    prop_assert_eq!(fields_of(&e).len(), errors.len());
                }
            }
        }

        #[test]
        fn a_nul_anywhere_in_a_string_field_is_refused(
            before in "\\PC{0,20}",
            after in "\\PC{0,20}",
            field in prop_oneof![Just("session_id"), Just("message"), Just("model"), Just("job_id")],
        ) {
            let mut body = json!({"session_id": "s", "message": "m"});
            body[field] = json!(format!("{before}\u{0}{after}"));
            let err = chat_schema().validate(&body).unwrap_err();
            prop_assert!(fields_of(&err).contains(&(field.to_string(), "contains_nul".to_string())));
        }

        #[test]
        fn generated_valid_bodies_pass(
            sid in "[a-zA-Z0-9 ]{0,20}[a-z]",
            msg in "\\PC{1,10}",
            prio in 0i64..=10,
            temp in 0.0f64..=2.0,
            tags in prop::collection::vec("\\PC{0,5}", 1..=3),
            depth in 1i64..=3,
        ) {
            let body = json!({"session_id": sid, "message": msg, "priority": prio, "temperature": temp,
                              "tags": tags, "options": {"depth": depth}});
            prop_assert_eq!(chat_schema().validate(&body), Ok(()));
        }
    }

    #[test]
    fn query_parameters_take_the_type_their_field_declares() {
        let schema = Schema::object()
            .field("limit", Field::integer().range(1, 100))
            .field("session_id", Field::string());
        let v = schema.object_from_query(vec![("limit".into(), "7".into()), ("session_id".into(), "123".into())]);
        assert_eq!(v, json!({"limit": 7, "session_id": "123"}));
        let bad = schema.object_from_query(vec![("limit".into(), "many".into())]);
        assert_eq!(schema.validate(&bad).unwrap_err().status(), 422);
    }

    crate::input! {
        struct OneOf {
            a: Option<String> = Field::string(),
            b: Option<String> = Field::string(),
        } check = one_of_a_or_b
    }

    fn one_of_a_or_b(v: &OneOf) -> Result<(), ApiError> {
        if v.a.is_none() && v.b.is_none() {
            return Err(ApiError::unprocessable("send a or b", json!({})));
        }
        Ok(())
    }

    #[test]
    fn an_input_type_names_its_fields_once_and_runs_its_cross_field_check() {
        let schema = OneOf::schema();
        let parsed: OneOf = schema.parse(br#"{"a": "x"}"#).unwrap();
        assert_eq!(parsed.a.as_deref(), Some("x"));
        assert!(parsed.check().is_ok());
        let neither: OneOf = schema.parse(b"{}").unwrap();
        assert_eq!(neither.check().unwrap_err().status(), 422);
        assert_eq!(
            schema.parse::<OneOf>(br#"{"a": 5}"#).unwrap_err().code(),
            "validation_failed"
        );
    }
}
