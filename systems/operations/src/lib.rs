//! edgeworks-operations: the functions that run the platform rather than a
//! product: `health` and `queue-worker`, the one worker that registers every
//! system's job kinds.
//!
//! It owns their routes and handlers. It must never hold a system's rules:
//! a system adds its job kind here with one `register` line.
#![deny(missing_docs)]

pub mod health;
pub mod queue_worker;
