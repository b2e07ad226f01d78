//! edgeworks-input: what a request body may hold before any logic sees it.
//!
//! It owns declarative validation ([`validate`]: every field error at once,
//! one 422 shape), cleaning user text and the content denylist
//! ([`sanitize`]), and list paging ([`pagination`]: bounded limits, opaque
//! keyset cursors).
//!
//! It must never do I/O, and never echo refused content back (a denylist hit
//! names a category, not the words).

pub mod pagination;
pub mod sanitize;
pub mod validate;
