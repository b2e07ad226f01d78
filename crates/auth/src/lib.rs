//! edgeworks-auth: who is calling and how often they may.
//!
//! It owns JWT verification ([`jwt`]: HS256 with the project secret, ES256 /
//! RS256 against the project's JWKS), the rate-limit arithmetic and headers
//! ([`ratelimit`], the reference for the SQL bucket), and webhook signatures
//! ([`webhooks`], HMAC over a timestamped body, for the callbacks of seeds
//! 001 and 004; [`standard_webhooks`], the Standard Webhooks form with a
//! signed message id, for seed 004's processing webhooks). All of it is pure: keys, the time and the HTTP client
//! arrive as arguments.
//!
//! It must never read the environment or a clock itself, never log a token
//! or a secret, and never touch js-sys.

pub mod jwt;
pub mod ratelimit;
pub mod standard_webhooks;
pub mod webhooks;
