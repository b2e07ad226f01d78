//! edgeworks-media: the media-generation queue of seed 001 (queue-job,
//! job-callback, generate-admin-image, and what the native reference worker
//! shares with them).
//!
//! It owns the job-type catalogue (queue routing, model variants, durations,
//! credit costs, negative prompts), the normalisation of the output paths
//! workers report, the deterministic PNG renderer, the handlers and routes
//! of its functions, and the mapping of the media SQL functions' errors to
//! client errors. Credits, leases and transitions are decided in SQL
//! (migration 20261201001100), in the transaction that changes the job.
//!
//! It must never touch js-sys, never write queue or credit rows except
//! through the media SQL functions, and never put the worker secret, a
//! lease token or an S3 key in a log line or an error.

pub mod catalog;
pub mod errors;
pub mod generate_admin_image;
pub mod job_callback;
pub mod paths;
pub mod queue_job;
pub mod render;
pub mod settings;

pub use settings::MediaSettings;
