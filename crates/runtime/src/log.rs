//! Structured JSON logs, one line per event, always with the request id.
//! Every line passes through the redactor: secrets from the environment and
//! anything shaped like a JWT or credential never reach the output.

use std::rc::Rc;

use std::fmt::Write as _;

use edgeworks_core::error::push_json_str;
use edgeworks_core::redact::Redactor;
use edgeworks_core::time::{format_rfc3339_ms, push_rfc3339_ms};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::host::{Host, Level};

/// The keys every line carries.
const RESERVED: [&str; 5] = ["ts", "level", "fn", "request_id", "msg"];

/// The request's logger; writes through the host.
#[derive(Clone)]
pub struct Logger {
    host: Rc<dyn Host>,
    function: Rc<str>,
    request_id: Rc<str>,
    redactor: Rc<Redactor>,
    debug: bool,
}

impl Logger {
    /// A logger for one request.
    pub fn new(
        host: Rc<dyn Host>,
        function: &str,
        request_id: &str,
        redactor: impl Into<Rc<Redactor>>,
        debug: bool,
    ) -> Self {
        Logger::with_ids(host, function.into(), request_id.into(), redactor, debug)
    }

    /// [`Logger::new`] sharing the ids the request's `Ctx` holds.
    pub(crate) fn with_ids(
        host: Rc<dyn Host>,
        function: Rc<str>,
        request_id: Rc<str>,
        redactor: impl Into<Rc<Redactor>>,
        debug: bool,
    ) -> Self {
        Logger {
            host,
            function,
            request_id,
            redactor: redactor.into(),
            debug,
        }
    }

    /// The redacted JSON line for an event (public so tests can check it).
    /// Written straight into one buffer: `ts`, `level`, `fn`, `request_id`,
    /// `msg`, then the fields in their order.
    pub fn line(&self, level: Level, msg: &str, fields: Value) -> String {
        let extra = match fields {
            Value::Object(extra) => extra,
            _ => Map::new(),
        };
        if extra.keys().any(|k| RESERVED.contains(&k.as_str())) {
            return self.line_overriding(level, msg, extra);
        }
        let mut out = self.head(level, msg);
        for (k, v) in &extra {
            out.push(',');
            push_json_str(&mut out, k);
            out.push(':');
            let _ = write!(out, "{v}");
        }
        out.push('}');
        // Most lines carry no secret: then the line built is the line written.
        self.redactor.redact_owned(out)
    }

    /// [`Logger::line`] with the fields serialised straight from a type (a
    /// struct), no JSON tree in between. Its field names must not be the
    /// line's own keys (`ts`, `level`, `fn`, `request_id`, `msg`): unlike a
    /// map's, they are fixed in the code, so they are never checked here.
    pub fn line_with<F: Serialize + ?Sized>(&self, level: Level, msg: &str, fields: &F) -> String {
        let mut out = self.head(level, msg);
        match serde_json::to_string(fields) {
            // `{"a":1}`: its members follow the fixed keys, its brace closes the line.
            Ok(members) if members.len() > 2 && members.starts_with('{') => {
                out.push(',');
                out.push_str(&members[1..]);
            }
            _ => out.push('}'),
        }
        self.redactor.redact_owned(out)
    }

    /// The line of the request itself, written once per request.
    pub(crate) fn request(&self, method: &str, path: &str, status: u16, ms: u64) {
        let mut out = self.head(Level::Info, "request");
        out.push_str(",\"method\":");
        push_json_str(&mut out, method);
        out.push_str(",\"path\":");
        push_json_str(&mut out, path);
        let _ = write!(out, ",\"status\":{status},\"ms\":{ms}}}");
        self.host.write_log(Level::Info, &self.redactor.redact_owned(out));
    }

    /// `{"ts":…,"level":…,"fn":…,"request_id":…,"msg":…` (no closing brace).
    fn head(&self, level: Level, msg: &str) -> String {
        let mut out = String::with_capacity(192);
        out.push_str("{\"ts\":\"");
        push_rfc3339_ms(&mut out, self.host.now_ms());
        out.push_str("\",\"level\":\"");
        out.push_str(level.as_str());
        out.push_str("\",\"fn\":");
        push_json_str(&mut out, &self.function);
        out.push_str(",\"request_id\":");
        push_json_str(&mut out, &self.request_id);
        out.push_str(",\"msg\":");
        push_json_str(&mut out, msg);
        out
    }

    /// A field named like one of the line's own keys replaces it (as it
    /// always has); rare, so built through a map.
    fn line_overriding(&self, level: Level, msg: &str, extra: Map<String, Value>) -> String {
        let mut obj = Map::new();
        obj.insert("ts".into(), json!(format_rfc3339_ms(self.host.now_ms())));
        obj.insert("level".into(), json!(level.as_str()));
        obj.insert("fn".into(), json!(&*self.function));
        obj.insert("request_id".into(), json!(&*self.request_id));
        obj.insert("msg".into(), json!(msg));
        for (k, v) in extra {
            obj.insert(k, v);
        }
        self.redactor.redact_owned(Value::Object(obj).to_string())
    }

    fn write(&self, level: Level, msg: &str, fields: Value) {
        self.host.write_log(level, &self.line(level, msg, fields));
    }

    /// Only with `LOG_LEVEL=debug`.
    pub fn debug(&self, msg: &str, fields: Value) {
        if self.debug {
            self.write(Level::Debug, msg, fields);
        }
    }
    /// A normal event.
    pub fn info(&self, msg: &str, fields: Value) {
        self.write(Level::Info, msg, fields);
    }
    /// A normal event whose fields are a struct (see [`Logger::line_with`]).
    pub fn info_with<F: Serialize + ?Sized>(&self, msg: &str, fields: &F) {
        self.host
            .write_log(Level::Info, &self.line_with(Level::Info, msg, fields));
    }
    /// Something degraded but handled.
    pub fn warn(&self, msg: &str, fields: Value) {
        self.write(Level::Warn, msg, fields);
    }
    /// A failure on our side.
    pub fn error(&self, msg: &str, fields: Value) {
        self.write(Level::Error, msg, fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::RefCell;

    use edgeworks_core::http_client::TransportError;
    use edgeworks_core::{Request, Response};

    use crate::host::LocalFuture;

    #[derive(Default)]
    struct Recorder(RefCell<Vec<String>>);

    impl Host for Recorder {
        fn now_ms(&self) -> i64 {
            1_700_000_000_123
        }
        fn fill_random(&self, buf: &mut [u8]) {
            buf.fill(7);
        }
        fn write_log(&self, _: Level, line: &str) {
            self.0.borrow_mut().push(line.to_string());
        }
        fn send(&self, _: Request, _: u32) -> LocalFuture<'static, Result<Response, TransportError>> {
            Box::pin(async { Err(TransportError::Network("none".into())) })
        }
        fn sleep(&self, _: u32) -> LocalFuture<'static, ()> {
            Box::pin(async {})
        }
    }

    fn logger(host: Rc<Recorder>) -> Logger {
        let redactor = Redactor::from_env([("API_KEY", "secret-value-123")]);
        Logger::new(host, "fn\"x", "req-1", redactor, false)
    }

    #[test]
    fn a_line_with_struct_fields_is_the_line_of_the_same_map() {
        #[derive(Serialize)]
        struct Queued<'a> {
            job_id: &'a str,
            note: Option<&'a str>,
            position: u32,
        }
        let host = Rc::new(Recorder::default());
        let log = logger(host.clone());
        let fields = Queued {
            job_id: "j\"1",
            note: None,
            position: 3,
        };
        assert_eq!(
            log.line_with(Level::Info, "queued", &fields),
            log.line(
                Level::Info,
                "queued",
                json!({"job_id": "j\"1", "position": 3, "note": null})
            )
        );
        assert_eq!(
            log.line_with(Level::Info, "m", &json!({})),
            log.line(Level::Info, "m", json!({}))
        );
        let secret = Queued {
            job_id: "secret-value-123",
            note: None,
            position: 1,
        };
        assert!(!log.line_with(Level::Info, "m", &secret).contains("secret-value-123"));
    }

    #[test]
    fn a_line_carries_the_fixed_keys_then_the_fields() {
        let host = Rc::new(Recorder::default());
        let line = logger(host.clone()).line(Level::Warn, "m\ns", json!({"a": 1, "b": {"c": [true, null]}}));
        assert!(
            line.starts_with(r#"{"ts":"2023-11-14T22:13:20.123Z","level":"warn""#),
            "{line}"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({"ts": "2023-11-14T22:13:20.123Z", "level": "warn", "fn": "fn\"x", "request_id": "req-1",
                   "msg": "m\ns", "a": 1, "b": {"c": [true, null]}})
        );
    }

    #[test]
    fn a_field_named_like_a_fixed_key_replaces_it() {
        let host = Rc::new(Recorder::default());
        let line = logger(host).line(Level::Info, "m", json!({"msg": "other", "x": 1}));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "other");
        assert_eq!(line.matches("\"msg\"").count(), 1);
    }

    #[test]
    fn the_request_line_is_json_and_redacted() {
        let host = Rc::new(Recorder::default());
        logger(host.clone()).request("GET", "/f?key=secret-value-123&q=\"", 200, 3);
        let lines = host.0.borrow();
        assert!(!lines[0].contains("secret-value-123"), "{}", lines[0]);
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["ms"], 3);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["msg"], "request");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "plain",
            "q\"uote\\back",
            "line\nbreak\r\ttab",
            "\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}",
            "é ✓ 😀",
            "",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }
}
