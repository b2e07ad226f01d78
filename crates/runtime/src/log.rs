//! Structured JSON logs, one line per event, always with the request id.
//! Every line passes through the redactor: secrets from the environment and
//! anything shaped like a JWT or credential never reach the console.

use std::rc::Rc;

use edgeworks_core::redact::Redactor;
use serde_json::{json, Map, Value};
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn console_log(s: &str);
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(s: &str);
}

#[derive(Clone)]
pub struct Logger {
    function: Rc<str>,
    request_id: Rc<str>,
    redactor: Rc<Redactor>,
    debug: bool,
}

impl Logger {
    pub fn new(function: &str, request_id: &str, redactor: Redactor, debug: bool) -> Self {
        Logger {
            function: function.into(),
            request_id: request_id.into(),
            redactor: Rc::new(redactor),
            debug,
        }
    }

    /// The redacted JSON line for an event (public so tests can check it).
    pub fn line(&self, level: &str, msg: &str, fields: Value) -> String {
        let mut obj = Map::new();
        obj.insert("ts".into(), json!(js_sys::Date::new_0().to_iso_string().as_string()));
        obj.insert("level".into(), json!(level));
        obj.insert("fn".into(), json!(&*self.function));
        obj.insert("request_id".into(), json!(&*self.request_id));
        obj.insert("msg".into(), json!(msg));
        if let Value::Object(extra) = fields {
            for (k, v) in extra {
                obj.insert(k, v);
            }
        }
        self.redactor.redact(&Value::Object(obj).to_string())
    }

    pub fn debug(&self, msg: &str, fields: Value) {
        if self.debug {
            console_log(&self.line("debug", msg, fields));
        }
    }
    pub fn info(&self, msg: &str, fields: Value) {
        console_log(&self.line("info", msg, fields));
    }
    pub fn warn(&self, msg: &str, fields: Value) {
        console_error(&self.line("warn", msg, fields));
    }
    pub fn error(&self, msg: &str, fields: Value) {
        console_error(&self.line("error", msg, fields));
    }
}
