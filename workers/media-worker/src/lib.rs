//! media-worker: the reference worker of seed 001 — what a GPU box runs.
//!
//! It claims from `sdxl_queue` and `wan_queue` with leases (one SQL call,
//! `media_claim_jobs`, which also expires jobs past their TTL), heartbeats
//! each lease (`media_heartbeat`, which is also how a cancel reaches it),
//! runs a backend (the deterministic local renderer, or a remote image API
//! speaking OpenAI's `/v1/images/generations`), uploads the outputs through
//! the presigned URLs job-callback hands it, and reports to job-callback
//! signed with Standard Webhooks. On SIGINT/SIGTERM it stops claiming and
//! hands its claimed jobs back (`media_release_job`).
//!
//! This file holds what is decided without I/O (settings, what a job
//! produces, the reports' bodies, the remote API's wire format) so it is
//! tested natively; `main.rs` does the I/O. It must never log the worker
//! secret, the service key or a lease token.

pub mod backend;
pub mod config;
pub mod plan;

pub use config::{Config, Wake};
pub use plan::{JobPlan, Output};
