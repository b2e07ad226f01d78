//! edgeworks-llm: talking to language models.
//!
//! It owns prompt building ([`prompt`]: templates, history within a token
//! budget), the provider-neutral chat interface ([`chat`]), the provider
//! clients ([`gemini`], and [`offline`] for deployments without a key), the
//! multi-provider chat call ([`call`]: OpenAI and Mistral ([`openai`]),
//! Anthropic ([`anthropic`]) and Gemini, buffered or streamed, read through
//! [`stream`]'s event-stream decoder into provider-neutral deltas), each
//! classifying its own failures as retryable or not (the queue's `Backoff`
//! schedules the retry). Request building and response parsing
//! are pure and tested against each provider's real wire format; the
//! transport is any `HttpClient`.
//!
//! It must never log or return an API key, and never touch js-sys.

pub mod anthropic;
pub mod call;
pub mod chat;
pub mod gemini;
pub mod offline;
pub mod openai;
pub mod prompt;
pub mod stream;
