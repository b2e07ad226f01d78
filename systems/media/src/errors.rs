//! The media SQL functions' errors (SQLSTATE `EM...`, migration
//! 20261201001100) as client errors. The same failure has the same status
//! and code from every function.

use edgeworks_core::ApiError;
use edgeworks_db::DbError;
use serde_json::{json, Value};

use crate::catalog::job_type_names;

/// The 400 for a job type the catalogue does not list.
pub fn unknown_job_type(given: &str) -> ApiError {
    ApiError::bad_request(
        "unknown_job_type",
        format!("jobType must be one of: {}", job_type_names().join(", ")),
    )
    .with_details(json!({ "jobType": given.chars().take(64).collect::<String>(), "validJobTypes": job_type_names() }))
}

fn detail_json(e: &DbError) -> Option<Value> {
    match e {
        DbError::Api { details: Some(d), .. } => serde_json::from_str(d).ok(),
        _ => None,
    }
}

/// Maps a media SQL function's error.
pub fn map_media_error(e: DbError) -> ApiError {
    let message = e.message().to_string();
    match e.code() {
        Some("EM400") if message == "unknown_job_type" => unknown_job_type(""),
        Some("EM400") if message == "path_not_owned" => ApiError::bad_request(
            "invalid_output_path",
            "an output path is not under the job owner's storage prefix",
        )
        .with_details(json!({ "reason": "path_not_owned" })),
        Some("EM400") => ApiError::bad_request(&message, "the report does not fit this job"),
        Some("EM402") => ApiError::new(402, "insufficient_credits", "not enough credits for this job type")
            .with_details(detail_json(&e).unwrap_or(Value::Null)),
        Some("EM404") if message == "user_not_found" => ApiError::unauthorized(
            "user_not_found",
            "the token's user does not exist (deleted?); sign in again",
        ),
        Some("EM404") => ApiError::not_found(&message, "no such row, or not yours"),
        Some("EM409") if message == "illegal_transition" => {
            let detail = match &e {
                DbError::Api { details, .. } => details.clone(),
                _ => None,
            };
            ApiError::conflict(
                "illegal_transition",
                "jobs move queued -> processing -> completed | failed only",
            )
            .with_details(json!({ "transition": detail }))
        }
        Some("EM409") if message == "lease_expired" => ApiError::conflict(
            "lease_expired",
            "this claim's lease expired; the job went back to the queue and this report changed nothing",
        ),
        Some("EM409") | Some("EQ409") => ApiError::conflict(
            "lease_lost",
            "this lease token does not hold the job (expired, cancelled or claimed again)",
        ),
        Some("22023") => ApiError::new(422, "invalid_argument", message),
        _ => ApiError::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, message: &str, details: Option<&str>) -> DbError {
        DbError::Api {
            status: 400,
            code: Some(code.into()),
            message: message.into(),
            details: details.map(str::to_string),
            hint: None,
        }
    }

    #[test]
    fn unknown_job_type_lists_every_valid_type() {
        let e = unknown_job_type("sdxl_image_ultra");
        assert_eq!((e.status(), e.code()), (400, "unknown_job_type"));
        assert_eq!(e.details().unwrap()["validJobTypes"].as_array().unwrap().len(), 10);
        assert!(e.message().contains("video7b_high_enhanced"));
    }

    #[test]
    fn each_sql_error_has_its_status_and_code() {
        let credits = map_media_error(api(
            "EM402",
            "insufficient_credits",
            Some(r#"{"required":2,"balance":1}"#),
        ));
        assert_eq!((credits.status(), credits.code()), (402, "insufficient_credits"));
        assert_eq!(credits.details().unwrap()["required"], 2);
        let illegal = map_media_error(api("EM409", "illegal_transition", Some("completed -> processing")));
        assert_eq!((illegal.status(), illegal.code()), (409, "illegal_transition"));
        assert_eq!(
            map_media_error(api("EM409", "lease_expired", None)).code(),
            "lease_expired"
        );
        assert_eq!(map_media_error(api("EM409", "lease_lost", None)).code(), "lease_lost");
        assert_eq!(map_media_error(api("EQ409", "lease lost", None)).status(), 409);
        let path = map_media_error(api("EM400", "path_not_owned", None));
        assert_eq!((path.status(), path.code()), (400, "invalid_output_path"));
        assert_eq!(
            map_media_error(api("EM404", "project_not_found", None)).code(),
            "project_not_found"
        );
        assert_eq!(map_media_error(api("EM404", "user_not_found", None)).status(), 401);
        assert_eq!(map_media_error(api("22023", "p_prompt too long", None)).status(), 422);
        assert_eq!(map_media_error(api("XX000", "boom", None)).status(), 500);
    }
}
