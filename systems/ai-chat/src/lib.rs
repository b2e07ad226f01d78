//! edgeworks-ai-chat: the AI chat platform of seed 002 (chat-completion,
//! websocket-handler, file-upload; code execution is its own system).
//!
//! It owns the one request shape for every provider ([`request`]), getting
//! an answer with fallbacks, streaming, stop and resume ([`answer`]), the
//! money and the stream log through its SQL functions ([`ledger`]: reserve
//! the worst case before the call, settle from usage or the reservation
//! after), users' own provider keys sealed with AES-GCM ([`keys`]), the
//! settings ([`settings`]), a conversation's live room ([`room`]: the client
//! protocol, per-connection limits, ordered delivery, Realtime frames) and
//! files by content ([`upload`]: magic bytes, names, paths) and the
//! functions' handlers and routes ([`chat_completion`],
//! [`websocket_handler`], [`file_upload`]).
//!
//! Provider wire formats live in `edgeworks-llm`; this crate never builds a
//! provider request itself, never touches js-sys, never writes a message,
//! usage or budget row except through the migration's SQL functions, and
//! never logs, returns or stores a plaintext key.
#![deny(missing_docs)]

pub mod answer;
pub mod chat_completion;
pub mod file_upload;
pub mod keys;
pub mod ledger;
pub mod request;
pub mod room;
pub mod settings;
pub mod upload;
pub mod websocket_handler;
