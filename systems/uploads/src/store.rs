//! The S3 client of the functions, from the environment, and the signing
//! time from the request's clock.

use edgeworks_core::{ApiError, Clock};
use edgeworks_runtime::{Ctx, HostHttp};
use edgeworks_service::{FromRequest, Parts};
use edgeworks_storage::{S3Client, S3Config, SigningTime};

/// Object storage (S3 protocol) as the functions reach it.
pub struct Storage(pub S3Client<HostHttp>);

impl FromRequest for Storage {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        let config = S3Config::from_lookup(parts.ctx.env().lookup())
            .map_err(|e| ApiError::new(500, "misconfigured", e.to_string()))?;
        Ok(Storage(S3Client::new(config, parts.ctx.http())))
    }
}

/// Now, for SigV4.
pub fn signing_time(ctx: &Ctx) -> Result<SigningTime, ApiError> {
    SigningTime::from_unix_secs(ctx.clock().now_ms().div_euclid(1000)).ok_or_else(ApiError::internal)
}
