//! edgeworks-uploads-protocol: the rules of seed 004's upload pipeline that
//! both ends must apply identically, so the browser client and the functions
//! share one statement of each.
//!
//! It owns the accepted document types and content sniffing ([`file_type`]),
//! the part plan and resume arithmetic ([`plan`]), the file and part digests
//! ([`digest`]), the ETA smoothing ([`eta`]), per-user feature-flag rollout
//! ([`flags`]), the client's retry schedule ([`retry`]) and the wire shapes
//! the client reads ([`api`], from which its TypeScript types are generated).
//!
//! It must never do I/O, read a clock or draw randomness itself (they come
//! in as arguments), and never depend on wasm bindings: it compiles the same
//! natively, in the functions and in the browser.
#![deny(missing_docs)]

pub mod api;
pub mod digest;
pub mod eta;
pub mod file_type;
pub mod flags;
pub mod plan;
pub mod retry;
