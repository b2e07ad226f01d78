//! code-execution (POST `{language, code, stdin?, timeout_ms?}`, a signed-in user):
//! runs the code once in the sandbox and answers how it ended — `ok`, `error` (the
//! script's message and line), `timeout` (its fuel ran out), `memory_limit`,
//! `output_limit` — with stdout and stderr (bounded), the value of the last
//! expression, the duration, the fuel used and the peak memory. Every run is
//! recorded in `code_executions`, which the user can read (RLS) but not write: the
//! record is the function's account of the run.

use edgeworks_core::{ApiError, Method};
use edgeworks_input::validate::Field;
use edgeworks_runtime::{CodeReport, CodeRun, Ctx, Language, Outcome};
use edgeworks_service::{Json, Route, ServiceDb, Settings, User};
use serde_json::{json, Value};

use crate::settings::{Limits, MEMORY_LIMIT_BYTES};

/// POST, signed-in users, 10 burst / one every 5 s per user (`RATE_LIMIT_CODE_EXECUTION`
/// overrides): each run may take up to a second of CPU.
/// Runs code in the host's sandbox: it links that capability.
pub const ROUTE: Route = Route::new(&[Method::Post])
    .rate_limit("10/0.2")
    .capabilities(edgeworks_runtime::caps::SANDBOX);

edgeworks_input::input! {
    /// What code-execution takes.
    pub struct ExecuteRequest {
        /// `javascript`, `typescript` or `python`.
        pub language: Language = Field::string().required().one_of(&["javascript", "typescript", "python"]),
        /// The program; its size in bytes is checked against the limit.
        pub code: String = Field::string().required().non_blank(),
        /// What `readline()` / `input()` read.
        pub stdin: Option<String> = Field::string(),
        /// The CPU budget in milliseconds, as fuel (at most the configured maximum).
        pub timeout_ms: Option<u32> = Field::integer().range(1, 3_600_000),
    }
}

/// The handler.
pub async fn handle(
    user: User,
    db: ServiceDb,
    ctx: Ctx,
    limits: Settings<Limits>,
    Json(req): Json<ExecuteRequest>,
) -> Result<Json<Value>, ApiError> {
    let run = plan(&req, &limits)?;
    let timeout_ms = limits.fuel_for(req.timeout_ms).0;
    let report = match ctx.host().run_code(run.clone()).await {
        None => {
            return Err(ApiError::unavailable(
                "sandbox_unavailable",
                "this function has no code sandbox installed",
            ))
        }
        Some(Err(e)) => {
            ctx.log().error("sandbox failed", json!({ "reason": e }));
            return Err(ApiError::new(
                500,
                "sandbox_failed",
                "the sandbox could not run the code",
            ));
        }
        Some(Ok(report)) => report,
    };
    ctx.log().info(
        "code executed",
        json!({
            "language": run.language.as_str(), "outcome": report.outcome.as_str(),
            "fuel_used": report.fuel_used, "duration_ms": report.duration_ms.round(),
        }),
    );
    let record = record(&user.id, &run, timeout_ms, &report);
    let inserted: Result<Vec<Value>, _> =
        db.0.execute(db.0.from("code_executions").insert(record.to_string()).select("id"))
            .await;
    let id = match inserted {
        Ok(rows) => rows.first().and_then(|r| r.get("id")).cloned().unwrap_or(Value::Null),
        Err(e) => {
            // The run happened and its answer is worth more than its record.
            ctx.log()
                .warn("recording the execution failed", json!({ "reason": e.to_string() }));
            Value::Null
        }
    };
    Ok(Json(response(id, &run, timeout_ms, &limits, &report)))
}

fn field_error(field: &str, message: String) -> ApiError {
    ApiError::unprocessable(
        "request failed validation",
        json!({ "fields": [{ "field": field, "code": "too_large", "message": message }] }),
    )
}

/// The run a request asks for, within the limits.
pub fn plan(req: &ExecuteRequest, limits: &Limits) -> Result<CodeRun, ApiError> {
    if req.code.len() > limits.max_code_bytes {
        return Err(field_error(
            "code",
            format!(
                "at most {} bytes of code ({} sent)",
                limits.max_code_bytes,
                req.code.len()
            ),
        ));
    }
    let stdin = req.stdin.clone().unwrap_or_default();
    if stdin.len() > limits.max_stdin_bytes {
        return Err(field_error(
            "stdin",
            format!(
                "at most {} bytes of stdin ({} sent)",
                limits.max_stdin_bytes,
                stdin.len()
            ),
        ));
    }
    Ok(CodeRun {
        language: req.language,
        code: req.code.clone(),
        stdin,
        fuel: limits.fuel_for(req.timeout_ms).1,
        output_limit: limits.output_bytes,
    })
}

/// Postgres text and jsonb hold no NUL; a script can print one.
fn no_nul(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn no_nul_json(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(no_nul(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(no_nul_json).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (no_nul(&k), no_nul_json(v))).collect()),
        other => other,
    }
}

/// The value of the script's last expression (JSON text from the sandbox).
fn result_value(report: &CodeReport) -> Value {
    report
        .result
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .map(no_nul_json)
        .unwrap_or(Value::Null)
}

/// The row written to `code_executions`.
pub fn record(user_id: &str, run: &CodeRun, timeout_ms: u32, report: &CodeReport) -> Value {
    json!({
        "user_id": user_id,
        "language": run.language.as_str(),
        "code": run.code,
        "stdin": run.stdin,
        "outcome": report.outcome.as_str(),
        "stdout": no_nul(&report.stdout),
        "stderr": no_nul(&report.stderr),
        "result": result_value(report),
        "error_message": report.error.as_ref().map(|e| no_nul(&e.message)),
        "error_line": report.error.as_ref().and_then(|e| e.line),
        "duration_ms": report.duration_ms,
        "fuel_used": report.fuel_used,
        "fuel_limit": run.fuel,
        "timeout_ms": timeout_ms,
        "peak_memory_bytes": report.peak_memory_bytes,
    })
}

/// The answer to the caller.
pub fn response(id: Value, run: &CodeRun, timeout_ms: u32, limits: &Limits, report: &CodeReport) -> Value {
    json!({
        "id": id,
        "language": run.language.as_str(),
        "outcome": report.outcome.as_str(),
        "stdout": report.stdout,
        "stderr": report.stderr,
        "output_truncated": report.outcome == Outcome::OutputLimit,
        "result": result_value(report),
        "error": report.error.as_ref().map(|e| json!({ "message": e.message, "line": e.line })),
        "duration_ms": (report.duration_ms * 10.0).round() / 10.0,
        "fuel_used": report.fuel_used,
        "peak_memory_bytes": report.peak_memory_bytes,
        "limits": {
            "timeout_ms": timeout_ms,
            "fuel": run.fuel,
            "memory_bytes": MEMORY_LIMIT_BYTES,
            "output_bytes": limits.output_bytes,
            "code_bytes": limits.max_code_bytes,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_input::validate::Validate;
    use edgeworks_runtime::CodeError;

    fn request(body: &str) -> Result<ExecuteRequest, ApiError> {
        ExecuteRequest::schema().parse(body.as_bytes())
    }

    fn report(outcome: Outcome) -> CodeReport {
        CodeReport {
            outcome,
            stdout: "a\0b".into(),
            stderr: String::new(),
            result: Some(r#"{"k":"v\u0000"}"#.into()),
            error: None,
            fuel_used: 10,
            peak_memory_bytes: 1 << 20,
            duration_ms: 1.26,
        }
    }

    #[test]
    fn a_request_becomes_a_run_with_fuel_for_its_timeout() {
        let req = request(r#"{"language": "typescript", "code": "1", "timeout_ms": 100}"#).unwrap();
        let run = plan(&req, &Limits::default()).unwrap();
        assert_eq!(run.language, Language::Typescript);
        assert_eq!(run.fuel, 5_000_000);
        assert_eq!(run.output_limit, 64 * 1024);
        assert_eq!(run.stdin, "");
    }

    #[test]
    fn unknown_languages_and_blank_code_are_refused_with_their_fields() {
        let e = request(r#"{"language": "ruby", "code": " "}"#).unwrap_err();
        assert_eq!(e.status(), 422);
        let fields = e.details().unwrap().to_string();
        assert!(fields.contains("language") && fields.contains("code"), "{fields}");
    }

    #[test]
    fn code_and_stdin_over_their_limits_are_422() {
        let limits = Limits {
            max_code_bytes: 4,
            max_stdin_bytes: 2,
            ..Limits::default()
        };
        let big = request(r#"{"language": "python", "code": "12345"}"#).unwrap();
        let e = plan(&big, &limits).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.details().unwrap().to_string().contains("\"code\""));
        let stdin = request(r#"{"language": "python", "code": "1", "stdin": "abc"}"#).unwrap();
        assert!(plan(&stdin, &limits)
            .unwrap_err()
            .details()
            .unwrap()
            .to_string()
            .contains("stdin"));
    }

    #[test]
    fn the_record_holds_no_nul_and_the_answer_says_what_was_cut() {
        let req = request(r#"{"language": "javascript", "code": "x"}"#).unwrap();
        let run = plan(&req, &Limits::default()).unwrap();
        let mut r = report(Outcome::OutputLimit);
        r.error = Some(CodeError {
            message: "E\0".into(),
            line: Some(2),
        });
        let row = record("u", &run, 1000, &r);
        assert!(!row.to_string().contains("\\u0000"), "{row}");
        assert_eq!(row["result"], json!({ "k": "v\u{FFFD}" }));
        let answer = response(json!("id"), &run, 1000, &Limits::default(), &r);
        assert_eq!(answer["output_truncated"], json!(true));
        assert_eq!(answer["duration_ms"], json!(1.3));
        assert_eq!(answer["limits"]["memory_bytes"], json!(64 * 1024 * 1024));
        assert_eq!(answer["error"]["line"], json!(2));
    }
}
