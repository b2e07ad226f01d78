//! edgeworks-queue: the Postgres job queue, both halves.
//!
//! It owns the job state machine and the retry schedule ([`state`], the Rust
//! statement of the rules the SQL enforces), the typed SQL API ([`sql`]: one
//! `/rpc` round trip per verb, lease-fenced), the names of the queue's
//! SQLSTATEs and statuses, and their one mapping to HTTP errors.
//!
//! It must never complete or fail a job without the claim's lease token, and
//! never decide what a job does: systems register job handlers for that.

pub mod sql;
pub mod state;

pub use sql::*;
pub use state::{should_retry, transition, Backoff, JobEvent, JobStatus, LEGAL_TRANSITIONS};
