//! edgeworks-pipelines: seed 003's content pipelines — ai-replicate,
//! social-connect, run-pipelines, job-processor — and the job kinds they
//! register with the queue's one worker (`pipeline_step`, `replicate_poll`).
//!
//! It owns: cron expressions and next runs in IANA time zones with stated
//! DST rules ([`cron`]), the OAuth wire formats of six platforms
//! ([`oauth`]), sealed tokens, signed `state` and PKCE ([`secrets`]),
//! single-flight token refresh ([`tokens`]), Replicate's wire format
//! ([`replicate`]), the step runner ([`steps`]) and the four functions'
//! handlers. Pure logic takes time and randomness as arguments and is
//! tested natively; I/O goes through the runtime's `Ctx`.
//!
//! It must never return, log or store a platform token in the clear,
//! never touch js-sys, and never change a queue row except through the
//! queue's SQL API and this system's SQL functions.
#![deny(missing_docs)]

pub mod ai_replicate;
pub mod cron;
pub mod job_processor;
pub mod oauth;
pub mod replicate;
pub mod run_pipelines;
pub mod secrets;
pub mod settings;
pub mod social_connect;
pub mod steps;
pub mod tokens;

use edgeworks_core::{ApiError, Request};
use edgeworks_llm::chat::ChatProvider;
use edgeworks_queue::Registry;
use edgeworks_runtime::{Ctx, Env, HostHttp};
use edgeworks_service::{FromEnv, FromRequest, Parts};

pub use ai_replicate::ReplicatePoll;
pub use settings::{OAuthSettings, PipelineSettings, ReplicateSettings};
pub use steps::PipelineStep;

/// Every job kind this system registers.
pub const JOB_KINDS: &[&str] = &[steps::KIND, "replicate_poll"];

/// The request as received (a webhook needs the exact body bytes; a
/// handler serving several methods needs the method).
pub struct Incoming(pub Request);

impl FromRequest for Incoming {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        Ok(Incoming(parts.req.clone()))
    }
}

/// Everything the job kinds need, parsed once per isolate.
pub struct PipelineSetup {
    /// Runs, steps, schedules.
    pub pipeline: PipelineSettings,
    /// Platforms.
    pub oauth: OAuthSettings,
    /// Replicate.
    pub replicate: ReplicateSettings,
    /// The text provider of `generate-content` (Gemini with a key, the
    /// labelled offline provider without).
    pub provider: ChatProvider,
}

impl FromEnv for PipelineSetup {
    fn from_env(env: &Env) -> Result<Self, ApiError> {
        Ok(PipelineSetup {
            pipeline: PipelineSettings::from_env(env)?,
            oauth: OAuthSettings::from_env(env)?,
            replicate: ReplicateSettings::from_env(env)?,
            provider: ChatProvider::from_lookup(env.lookup())
                .map_err(|e| ApiError::new(500, "misconfigured", e.to_string()))?,
        })
    }
}

impl PipelineSetup {
    /// Registers this system's job kinds.
    pub fn register<'a>(&'a self, registry: Registry<'a, HostHttp>, ctx: &Ctx) -> Registry<'a, HostHttp> {
        registry
            .register(PipelineStep {
                ctx: ctx.clone(),
                settings: &self.pipeline,
                oauth: &self.oauth,
                provider: &self.provider,
            })
            .register(ReplicatePoll {
                ctx: ctx.clone(),
                settings: &self.replicate,
            })
    }
}
