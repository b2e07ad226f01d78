//! Structured JSON logs, one line per event, always with the request id.
//! Every line passes through the redactor: secrets from the environment and
//! anything shaped like a JWT or credential never reach the output.

use std::rc::Rc;

use edgeworks_core::redact::Redactor;
use edgeworks_core::time::format_rfc3339_ms;
use serde_json::{json, Map, Value};

use crate::host::{Host, Level};

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
        Logger {
            host,
            function: function.into(),
            request_id: request_id.into(),
            redactor: redactor.into(),
            debug,
        }
    }

    /// The redacted JSON line for an event (public so tests can check it).
    pub fn line(&self, level: Level, msg: &str, fields: Value) -> String {
        let mut obj = Map::new();
        obj.insert("ts".into(), json!(format_rfc3339_ms(self.host.now_ms())));
        obj.insert("level".into(), json!(level.as_str()));
        obj.insert("fn".into(), json!(&*self.function));
        obj.insert("request_id".into(), json!(&*self.request_id));
        obj.insert("msg".into(), json!(msg));
        if let Value::Object(extra) = fields {
            for (k, v) in extra {
                obj.insert(k, v);
            }
        }
        // Most lines carry no secret: then the line built is the line written.
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
    /// Something degraded but handled.
    pub fn warn(&self, msg: &str, fields: Value) {
        self.write(Level::Warn, msg, fields);
    }
    /// A failure on our side.
    pub fn error(&self, msg: &str, fields: Value) {
        self.write(Level::Error, msg, fields);
    }
}
