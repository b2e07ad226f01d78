//! edgeworks-queue: the Postgres job queue, both halves.
//!
//! It owns the job state machine and the retry schedule ([`state`], the Rust
//! statement of the rules the SQL enforces), the typed SQL API ([`sql`]: one
//! `/rpc` round trip per verb, lease-fenced), the names of the queue's
//! SQLSTATEs and statuses, their one mapping to HTTP errors, and the one
//! worker ([`worker`]) that claims across every registered job kind and
//! dispatches each job to its [`JobHandler`].
//!
//! It must never complete or fail a job without the claim's lease token, and
//! never decide what a job does: systems register job handlers for that.

pub mod call_budget;
pub mod housekeeping;
pub mod sql;
pub mod state;
pub mod worker;

pub use call_budget::{call_budget_ms, isolate_worker_id, worker_id};
pub use sql::*;
pub use state::{should_retry, transition, Backoff, JobEvent, JobStatus, LEGAL_TRANSITIONS};
pub use worker::{BatchReport, JobContext, JobHandler, JobOutcome, Registry, RetryPolicy, Worker};
