//! JavaScript and TypeScript in a sandbox.
//!
//! boa evaluates the script in a fresh context with the ECMAScript built-ins and
//! nothing else the host could be reached through: `console`, `print` and `readline`
//! write to and read from the sandbox's own buffers, `Date` sees a coarse clock the
//! host passes in (whole seconds), `Math.random` draws from a per-run seed, dynamic
//! `import()` has no loader. boa's own loop and recursion limits are not what stops a
//! runaway (they are per call frame, and miss regex backtracking and native callbacks);
//! the fuel pass at every loop header of this module does.
//!
//! TypeScript is run by erasing its types first (edgeworks-sandbox-typescript), inside
//! the sandbox, so the
//! stripper too is bounded by fuel and memory.
#![deny(missing_docs)]

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use boa_engine::context::time::FixedClock;
use boa_engine::object::ObjectInitializer;
use boa_engine::property::Attribute;
use boa_engine::{js_string, Context, JsError, JsResult, JsValue, NativeFunction, Source};
use edgeworks_sandbox_guest::{write, Outcome, Stream};

/// The name scripts are reported under in stack traces and error lines.
const SCRIPT_NAME: &str = "main.js";

/// Bit of `flags`: the code is TypeScript; erase its types before evaluating.
pub const FLAG_TYPESCRIPT: u32 = 1;

thread_local! {
    static STDIN: RefCell<(String, usize)> = const { RefCell::new((String::new(), 0)) };
}

/// Evaluates `code` once and reports how it ended.
pub fn run(code: &str, stdin: &str, now_ms: f64, flags: u32) -> Outcome {
    let stripped;
    let source = if flags & FLAG_TYPESCRIPT != 0 {
        match edgeworks_sandbox_typescript::strip_types(code) {
            Ok(js) => {
                stripped = js;
                stripped.as_str()
            }
            Err(e) => {
                return Outcome::Error {
                    message: format!("SyntaxError: {}", e.message),
                    line: Some(e.line),
                }
            }
        }
    } else {
        code
    };
    STDIN.with(|s| *s.borrow_mut() = (stdin.to_owned(), 0));

    // Whole seconds only: a script gets the date, not a timer to measure with.
    let coarse = if now_ms.is_finite() && now_ms > 0.0 {
        (now_ms / 1000.0).floor() as u64 * 1000
    } else {
        0
    };
    let mut context = match Context::builder()
        .clock(Rc::new(FixedClock::from_millis(coarse)))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Error {
                message: format!("InternalError: {e}"),
                line: None,
            }
        }
    };
    // The engine's own limits stay generous: fuel and the memory ceiling stop runaways;
    // these only turn very deep recursion into a catchable RangeError before the
    // native stack runs out.
    context.runtime_limits_mut().disable_loop_iteration_limit();
    if let Err(e) = install_globals(&mut context) {
        return error_outcome(e, &mut context);
    }

    let result = context.eval(Source::from_bytes(source).with_path(Path::new(SCRIPT_NAME)));
    // Promise reactions queued by the script run before the result is taken.
    let jobs = context.run_jobs();
    match (result, jobs) {
        (Ok(value), Ok(())) => Outcome::Ok(render(&value, &mut context)),
        (Err(e), _) | (Ok(_), Err(e)) => error_outcome(e, &mut context),
    }
}

fn install_globals(context: &mut Context) -> JsResult<()> {
    let console = ObjectInitializer::new(context)
        .function(NativeFunction::from_fn_ptr(log_stdout), js_string!("log"), 0)
        .function(NativeFunction::from_fn_ptr(log_stdout), js_string!("info"), 0)
        .function(NativeFunction::from_fn_ptr(log_stdout), js_string!("debug"), 0)
        .function(NativeFunction::from_fn_ptr(log_stderr), js_string!("error"), 0)
        .function(NativeFunction::from_fn_ptr(log_stderr), js_string!("warn"), 0)
        .build();
    context.register_global_property(js_string!("console"), console, Attribute::all())?;
    context.register_global_builtin_callable(js_string!("print"), 0, NativeFunction::from_fn_ptr(log_stdout))?;
    context.register_global_builtin_callable(js_string!("readline"), 0, NativeFunction::from_fn_ptr(readline))?;
    Ok(())
}

fn format_args(args: &[JsValue], context: &mut Context) -> String {
    let mut line = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        match arg.as_string() {
            Some(s) => line.push_str(&s.to_std_string_escaped()),
            None => line.push_str(&display(arg, context)),
        }
    }
    line.push('\n');
    line
}

fn log_stdout(_: &JsValue, args: &[JsValue], context: &mut Context) -> JsResult<JsValue> {
    write(Stream::Stdout, format_args(args, context).as_bytes());
    Ok(JsValue::undefined())
}

fn log_stderr(_: &JsValue, args: &[JsValue], context: &mut Context) -> JsResult<JsValue> {
    write(Stream::Stderr, format_args(args, context).as_bytes());
    Ok(JsValue::undefined())
}

/// The next line of stdin without its newline, or `null` at the end.
fn readline(_: &JsValue, _: &[JsValue], _: &mut Context) -> JsResult<JsValue> {
    Ok(STDIN.with(|s| {
        let mut s = s.borrow_mut();
        let (text, pos) = &mut *s;
        if *pos >= text.len() {
            return JsValue::null();
        }
        let rest = &text[*pos..];
        let (line, used) = match rest.find('\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        let value = JsValue::from(js_string!(line));
        *pos += used;
        value
    }))
}

/// How a value is shown in console output: strings raw, everything else as boa shows it.
fn display(value: &JsValue, _context: &mut Context) -> String {
    value.display().to_string()
}

/// The script's completion value as JSON text: the value itself when JSON can hold
/// it, otherwise the string boa displays for it; `None` for `undefined`.
fn render(value: &JsValue, context: &mut Context) -> Option<String> {
    if value.is_undefined() {
        return None;
    }
    if value.is_callable() || value.is_symbol() || value.is_bigint() {
        return Some(json_string(&display(value, context)));
    }
    match value.to_json(context) {
        Ok(Some(json)) => Some(integral(json).to_string()),
        _ => Some(json_string(&display(value, context))),
    }
}

/// boa hands every number over as an f64, which serde_json prints as `2.0`; JSON
/// text from JavaScript prints integral numbers without a fraction (`JSON.stringify`).
fn integral(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    const SAFE: f64 = 9_007_199_254_740_991.0;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= SAFE => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, integral(v))).collect()),
        other => other,
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn error_outcome(error: JsError, context: &mut Context) -> Outcome {
    let text = match error.try_native(context) {
        Ok(native) => native.to_string(),
        Err(_) => format!("Uncaught {}", error),
    };
    let shown = error.to_string();
    // The error object's `stack` starts at the innermost frame; boa's own position
    // for an error created inside a function can be the outermost call's.
    let stack = error
        .clone()
        .into_opaque(context)
        .ok()
        .and_then(|v| v.as_object())
        .and_then(|o| o.get(js_string!("stack"), context).ok())
        .and_then(|v| v.as_string())
        .map(|s| s.to_std_string_escaped());
    let line = stack
        .as_deref()
        .and_then(line_of)
        .or_else(|| line_of(&shown))
        .or_else(|| line_of(&text));
    // The first line is the message; the rest (boa's backtrace) is noise to a caller.
    let message = text.lines().next().unwrap_or("").trim();
    // boa marks parser errors as raised by native code; the caller's code it was.
    let message = message.strip_suffix(" (native)").unwrap_or(message);
    // The position boa appends is reported as `line` (it can name the wrong frame).
    let message = match message.rfind(&format!(" ({SCRIPT_NAME}:")) {
        Some(at) if message.ends_with(')') => &message[..at],
        _ => message,
    }
    .to_owned();
    Outcome::Error { message, line }
}

/// The first `main.js:<line>:<column>` in an error's text, or boa's parser's
/// `line <n>`.
fn line_of(text: &str) -> Option<u32> {
    let needle = format!("{SCRIPT_NAME}:");
    if let Some(at) = text.find(&needle) {
        let digits: String = text[at + needle.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse() {
            return Some(n);
        }
    }
    let at = text.find("line ")?;
    let digits: String = text[at + 5..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

edgeworks_sandbox_guest::sandbox_exports!(run);
