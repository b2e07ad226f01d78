//! `chat-submit` (POST): validate and clean the question, verify the caller,
//! rate-limit, then one SQL call creates or locks the session, enforces the
//! question limit, stores the question and enqueues the job.
//! Answers `{success, data: {job_id, status, estimated_duration_ms, queue_position}}`.

use edgeworks_auth::ratelimit::Limit;
use edgeworks_chat_queue::{estimate_duration_ms, submit, Settings};
use edgeworks_core::{ApiError, Method, Request, Response};
use edgeworks_input::sanitize::Denylist;
use edgeworks_runtime::{export_handler, Ctx, Options};
use edgeworks_service::{authenticate, rate_limit, service_db};
use serde_json::json;

const LIMIT: Limit = Limit {
    capacity: 30,
    refill_per_sec: 0.5,
};

fn denylist(ctx: &Ctx) -> Result<Denylist, ApiError> {
    let mut list = Denylist::default_list();
    if let Some(extra) = ctx.env().get("CONTENT_DENYLIST") {
        let parsed = Denylist::parse(extra).map_err(|_| {
            ApiError::new(
                500,
                "misconfigured",
                "CONTENT_DENYLIST is not in the category:term|term;... format",
            )
        })?;
        list.extend(parsed);
    }
    Ok(list)
}

async fn chat_submit(req: Request, ctx: Ctx) -> Result<Response, ApiError> {
    let env = ctx.env();
    let settings = Settings::from_lookup(|k| env.get(k).map(str::to_string))?;
    let body = submit::prepare(&req.body, &settings, &denylist(&ctx)?)?;
    let caller = authenticate(&ctx, &req).await?;
    let user_id = caller.user_id()?.to_string();
    let decision = rate_limit(&ctx, &req, Some(&caller), "chat-submit", LIMIT, 1).await?;

    let db = service_db(&ctx)?;
    let done = submit::submit(&db, &user_id, &body, &settings).await?;
    let estimate = estimate_duration_ms(
        done.queue_position,
        done.avg_processing_ms,
        done.samples,
        done.active_workers,
        settings.prior_duration_ms,
    );
    ctx.log().info(
        "question queued",
        json!({ "job_id": done.job_id, "session_id": done.session_id, "position": done.queue_position }),
    );
    let mut response = Response::ok(&json!({
        "job_id": done.job_id,
        "status": "pending",
        "estimated_duration_ms": estimate,
        "queue_position": done.queue_position,
        "session_id": done.session_id,
        "questions_remaining": done.max_questions.saturating_sub(done.question_count),
    }));
    if let Some(d) = decision {
        d.apply(&mut response.headers);
    }
    Ok(response)
}

export_handler!(
    chat_submit,
    Options {
        methods: &[Method::Post],
        ..Options::default()
    }
);
