//! The project's JWKS, fetched from Supabase Auth and cached in the isolate.
//!
//! The cache is an optimisation only (many isolates each hold their own).
//! Keys rotate, so a token naming an unknown `kid` may trigger one refetch;
//! a minimum interval between fetches keeps a stream of made-up kids from
//! turning every request into a fetch against the auth server.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{split, Alg, Claims, Jwks, JwtError, Verifier};
use edgeworks_core::http_client::HttpClient;
use edgeworks_core::ApiError;
use edgeworks_core::{Method, Request};

pub const JWKS_FETCH_TIMEOUT_MS: u32 = 5_000;
/// A key set larger than this is not a key set.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// `{SUPABASE_URL}/auth/v1/.well-known/jwks.json`.
pub fn jwks_url(supabase_url: &str) -> String {
    format!("{}/auth/v1/.well-known/jwks.json", supabase_url.trim_end_matches('/'))
}

/// Cached keys plus the timing state that decides when to fetch again.
#[derive(Debug, Clone)]
pub struct JwksCache {
    keys: Option<Arc<Jwks>>,
    fetched_at_ms: i64,
    last_attempt_ms: Option<i64>,
    ttl_ms: i64,
    min_refetch_interval_ms: i64,
}

impl Default for JwksCache {
    fn default() -> Self {
        JwksCache::new(JwksCache::DEFAULT_TTL_MS, JwksCache::DEFAULT_MIN_REFETCH_INTERVAL_MS)
    }
}

impl JwksCache {
    /// Supabase documents a JWKS cache of about ten minutes.
    pub const DEFAULT_TTL_MS: i64 = 10 * 60 * 1000;
    pub const DEFAULT_MIN_REFETCH_INTERVAL_MS: i64 = 30 * 1000;

    /// `const` so the runtime can keep one in a `static Mutex`.
    pub const fn new(ttl_ms: i64, min_refetch_interval_ms: i64) -> JwksCache {
        JwksCache {
            keys: None,
            fetched_at_ms: 0,
            last_attempt_ms: None,
            ttl_ms,
            min_refetch_interval_ms,
        }
    }

    pub fn keys(&self) -> Option<Arc<Jwks>> {
        self.keys.clone()
    }

    pub fn fetched_at_ms(&self) -> Option<i64> {
        self.keys.as_ref().map(|_| self.fetched_at_ms)
    }

    /// True when a fetch (successful or not) started less than the minimum
    /// interval ago. A clock that went backwards does not throttle forever.
    fn throttled(&self, now_ms: i64) -> bool {
        self.last_attempt_ms
            .is_some_and(|t| now_ms >= t && now_ms - t < self.min_refetch_interval_ms)
    }

    /// Whether keys must be fetched before verifying an asymmetric token:
    /// none cached (always; there is nothing to verify with), or the cached
    /// set is older than the TTL (then at most once per minimum interval,
    /// serving the stale set meanwhile, so a failing auth server is not
    /// hammered).
    pub fn needs_fetch(&self, now_ms: i64) -> bool {
        if self.keys.is_none() {
            return true;
        }
        let age = now_ms.saturating_sub(self.fetched_at_ms);
        (age >= self.ttl_ms || age < 0) && !self.throttled(now_ms)
    }

    /// After [`JwtError::UnknownKid`]: refetch only if no fetch started
    /// within the minimum interval. Whatever kids a caller invents, the
    /// auth server sees at most one fetch per interval per isolate.
    pub fn should_refetch_for_unknown_kid(&self, now_ms: i64) -> bool {
        !self.throttled(now_ms)
    }

    /// Records that a fetch is starting, so concurrent requests in the same
    /// isolate do not start another one for the same reason.
    pub fn begin_fetch(&mut self, now_ms: i64) {
        self.last_attempt_ms = Some(now_ms);
    }

    pub fn store(&mut self, jwks: Jwks, now_ms: i64) {
        self.keys = Some(Arc::new(jwks));
        self.fetched_at_ms = now_ms;
        self.last_attempt_ms = Some(now_ms);
    }

    /// A failed fetch keeps the old keys (if any) and counts as an attempt.
    pub fn record_failure(&mut self, now_ms: i64) {
        self.last_attempt_ms = Some(now_ms);
    }
}

/// Why [`verify_with_remote_jwks`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Token(#[from] JwtError),
    /// An asymmetric token arrived and no keys could be fetched: our
    /// problem, not the caller's, hence 503 rather than 401.
    #[error("signing keys are unavailable")]
    KeysUnavailable,
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Token(t) => t.into(),
            AuthError::KeysUnavailable => ApiError::unavailable(
                "auth_keys_unavailable",
                "cannot verify the token right now: signing keys are unavailable",
            )
            .with_header("retry-after", "5"),
        }
    }
}

fn lock(cache: &Mutex<JwksCache>) -> MutexGuard<'_, JwksCache> {
    // A poisoned lock only means a panic elsewhere; the cache data is still
    // consistent (every mutation is a single assignment).
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Fetches and stores the key set; the lock is never held across the await.
async fn refresh<C: HttpClient + ?Sized>(client: &C, url: &str, cache: &Mutex<JwksCache>, now_ms: i64) {
    let mut req = Request::new(Method::Get, url);
    req.headers.set("accept", "application/json");
    let parsed = match client.send(req, JWKS_FETCH_TIMEOUT_MS).await {
        Ok(resp) if resp.status == 200 && resp.body.len() <= MAX_JWKS_BYTES => {
            std::str::from_utf8(&resp.body).ok().and_then(|s| Jwks::parse(s).ok())
        }
        _ => None,
    };
    let mut c = lock(cache);
    match parsed {
        Some(jwks) => c.store(jwks, now_ms),
        None => c.record_failure(now_ms),
    }
}

/// Verifies `token`, fetching the project's JWKS from `jwks_url` when the
/// cache is empty or stale, and refetching once if the token names a key
/// the cached set lacks (subject to [`JwksCache::should_refetch_for_unknown_kid`]).
/// HS256 tokens are verified with the verifier's secret and never cause a fetch.
pub async fn verify_with_remote_jwks<C: HttpClient + ?Sized>(
    client: &C,
    jwks_url: &str,
    cache: &Mutex<JwksCache>,
    verifier: &Verifier,
    token: &str,
    now_ms: i64,
) -> Result<Claims, AuthError> {
    let now_secs = now_ms.div_euclid(1000);
    let split = split(token)?;
    if split.header.alg == Alg::Hs256 {
        // Cached keys (if any) still let the verifier spot an HS256 token
        // that names a public key.
        let keys = lock(cache).keys();
        return Ok(verifier.verify_split(split, keys.as_deref(), now_secs)?);
    }
    let fetch_now = {
        let mut c = lock(cache);
        let due = c.needs_fetch(now_ms);
        if due {
            c.begin_fetch(now_ms);
        }
        due
    };
    if fetch_now {
        refresh(client, jwks_url, cache, now_ms).await;
    }
    let keys = lock(cache).keys().ok_or(AuthError::KeysUnavailable)?;
    match verifier.verify(token, Some(&keys), now_secs) {
        Err(JwtError::UnknownKid) => {
            let refetch = {
                let mut c = lock(cache);
                let allowed = c.should_refetch_for_unknown_kid(now_ms);
                if allowed {
                    c.begin_fetch(now_ms);
                }
                allowed
            };
            if !refetch {
                return Err(JwtError::UnknownKid.into());
            }
            refresh(client, jwks_url, cache, now_ms).await;
            let keys = lock(cache).keys().ok_or(AuthError::KeysUnavailable)?;
            Ok(verifier.verify(token, Some(&keys), now_secs)?)
        }
        other => Ok(other?),
    }
}
