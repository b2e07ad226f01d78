//! JWT verification for every function: HS256 with the project secret, and
//! ES256 / RS256 against the project's JWKS (Supabase's asymmetric signing
//! keys). Pure: the caller passes the keys and the current time.
//!
//! Each way a token can fail is its own [`JwtError`] variant with its own
//! stable error code, so logs and clients can tell an expired session from a
//! forged token. The algorithm is taken from the header only to pick a
//! verification routine from a fixed allow-list; key material is never used
//! for an algorithm it was not published for (an HS256 token is never checked
//! against a JWKS key, which closes the classic "public key as HMAC secret"
//! confusion).

mod jwks;
mod principal;
mod remote;

pub use jwks::{Jwk, JwkKind, Jwks, JwksError};
pub use principal::{Principal, TokenPolicy, ROLE_ANON, ROLE_AUTHENTICATED, ROLE_SERVICE_ROLE};
pub use remote::{jwks_url, verify_with_remote_jwks, AuthError, JwksCache, JWKS_FETCH_TIMEOUT_MS};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use edgeworks_core::ApiError;

/// Tokens longer than this are refused before any decoding. Supabase access
/// tokens are well under 4 KiB even with large `app_metadata`.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY_SECS: i64 = 30;

/// The signature algorithms this verifier accepts. Anything else in a
/// token's `alg` header is [`JwtError::AlgNotAllowed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Hs256,
    Es256,
    Rs256,
}

impl Alg {
    /// Exact, case-sensitive match as RFC 7518 registers the names.
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "HS256" => Some(Alg::Hs256),
            "ES256" => Some(Alg::Es256),
            "RS256" => Some(Alg::Rs256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }
}

/// Why a token was refused. Messages never contain token content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three dot-separated segments, an empty header, or too long.
    #[error("token is not a well-formed JWT")]
    Malformed,
    /// A segment is not unpadded base64url.
    #[error("token segment is not valid base64url")]
    BadEncoding,
    /// The header is not a JSON object with a string `alg`, or it carries a
    /// `crit` extension we do not implement.
    #[error("token header is invalid")]
    BadHeader,
    /// The payload is not a JSON object, or a registered claim has the wrong type.
    #[error("token claims are invalid")]
    BadClaims,
    /// `alg: none`: an unsigned token.
    #[error("unsigned tokens are not accepted")]
    AlgNone,
    /// An algorithm outside the allow-list, or one this deployment has no
    /// key for (HS256 without a project secret, ES256/RS256 without a JWKS).
    #[error("token signing algorithm is not allowed")]
    AlgNotAllowed,
    /// The key the token names cannot be used with the token's algorithm
    /// (wrong `kty`, a JWK `alg` that differs, or an HS256 token naming a
    /// public key).
    #[error("token algorithm does not match its signing key")]
    KeyMismatch,
    /// An asymmetric token without `kid` while more than one key could apply.
    #[error("token does not name its signing key")]
    MissingKid,
    /// The token's `kid` is not in the key set. The caller may refetch the
    /// JWKS once (keys rotate) before giving up.
    #[error("token signing key is unknown")]
    UnknownKid,
    /// The signature does not verify: the token was altered, or it was
    /// signed by a different key. (These two cannot be told apart.)
    #[error("token signature is invalid")]
    BadSignature,
    /// The token has no `exp`; tokens that never expire are refused.
    #[error("token has no expiry")]
    MissingExp,
    #[error("token has expired")]
    Expired,
    /// `nbf` is later than now plus leeway.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iat` is later than now plus leeway.
    #[error("token was issued in the future")]
    IssuedInFuture,
    /// `role` is missing or not one of anon, authenticated, service_role.
    #[error("token role is not allowed")]
    RoleNotAllowed,
    /// An `authenticated` token without a `sub`.
    #[error("token has no subject")]
    MissingSubject,
    /// A user token whose `sub` is not a uuid, or an API-key role (anon,
    /// service_role) that carries a `sub`.
    #[error("token subject is not valid")]
    BadSubject,
    /// A user token without an accepted `aud`, or an API-key role that
    /// carries an `aud`.
    #[error("token audience is not accepted")]
    BadAudience,
    /// A user token whose `iss` is not this project's auth server.
    #[error("token issuer is not accepted")]
    BadIssuer,
}

impl JwtError {
    /// The stable `code` in the error envelope.
    pub fn code(self) -> &'static str {
        match self {
            JwtError::Malformed => "token_malformed",
            JwtError::BadEncoding => "token_bad_encoding",
            JwtError::BadHeader => "token_bad_header",
            JwtError::BadClaims => "token_bad_claims",
            JwtError::AlgNone => "token_unsigned",
            JwtError::AlgNotAllowed => "token_alg_not_allowed",
            JwtError::KeyMismatch => "token_key_mismatch",
            JwtError::MissingKid => "token_missing_kid",
            JwtError::UnknownKid => "token_unknown_kid",
            JwtError::BadSignature => "token_bad_signature",
            JwtError::MissingExp => "token_missing_exp",
            JwtError::Expired => "token_expired",
            JwtError::NotYetValid => "token_not_yet_valid",
            JwtError::IssuedInFuture => "token_issued_in_future",
            JwtError::RoleNotAllowed => "token_role_not_allowed",
            JwtError::MissingSubject => "token_missing_subject",
            JwtError::BadSubject => "token_bad_subject",
            JwtError::BadAudience => "token_bad_audience",
            JwtError::BadIssuer => "token_bad_issuer",
        }
    }
}

impl From<JwtError> for ApiError {
    fn from(e: JwtError) -> ApiError {
        ApiError::unauthorized(e.code(), e.to_string())
            .with_header("www-authenticate", "Bearer error=\"invalid_token\"")
    }
}

/// The verified payload. Registered claims have typed accessors; anything
/// else is available through [`Claims::get`].
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    map: Map<String, Value>,
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
}

impl Claims {
    fn from_payload(payload: &[u8]) -> Result<Claims, JwtError> {
        let map: Map<String, Value> = serde_json::from_slice(payload).map_err(|_| JwtError::BadClaims)?;
        let exp = numeric_date(&map, "exp")?.ok_or(JwtError::MissingExp)?;
        let nbf = numeric_date(&map, "nbf")?;
        let iat = numeric_date(&map, "iat")?;
        for name in ["sub", "role", "email", "iss"] {
            if map.get(name).is_some_and(|v| !v.is_string() && !v.is_null()) {
                return Err(JwtError::BadClaims);
            }
        }
        Ok(Claims { map, exp, nbf, iat })
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }
    fn str_claim(&self, name: &str) -> Option<&str> {
        self.map.get(name).and_then(Value::as_str)
    }
    pub fn sub(&self) -> Option<&str> {
        self.str_claim("sub")
    }
    pub fn role(&self) -> Option<&str> {
        self.str_claim("role")
    }
    pub fn email(&self) -> Option<&str> {
        self.str_claim("email")
    }
    pub fn iss(&self) -> Option<&str> {
        self.str_claim("iss")
    }
    /// Expiry, seconds since the epoch (always present on a verified token).
    pub fn exp(&self) -> i64 {
        self.exp
    }
    pub fn nbf(&self) -> Option<i64> {
        self.nbf
    }
    pub fn iat(&self) -> Option<i64> {
        self.iat
    }

    fn check_times(&self, now_secs: i64, leeway_secs: i64) -> Result<(), JwtError> {
        // RFC 7519: the token is valid strictly before `exp`.
        if now_secs >= self.exp.saturating_add(leeway_secs) {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = self.nbf {
            if nbf > now_secs.saturating_add(leeway_secs) {
                return Err(JwtError::NotYetValid);
            }
        }
        if let Some(iat) = self.iat {
            if iat > now_secs.saturating_add(leeway_secs) {
                return Err(JwtError::IssuedInFuture);
            }
        }
        Ok(())
    }
}

/// A NumericDate may be fractional (RFC 7519 §2); whole seconds suffice here.
fn numeric_date(map: &Map<String, Value>, name: &str) -> Result<Option<i64>, JwtError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64() {
                // `as` saturates, so absurd values become i64::MIN/MAX and
                // fail (or pass) the time checks deterministically.
                Ok(Some(f.floor() as i64))
            } else {
                Err(JwtError::BadClaims)
            }
        }
        Some(_) => Err(JwtError::BadClaims),
    }
}

/// The parts of a token that can be read before its signature is checked.
/// Only use these to choose keys; never trust them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedHeader {
    pub alg: Alg,
    pub kid: Option<String>,
}

struct SplitToken<'a> {
    header: UnverifiedHeader,
    signing_input: &'a [u8],
    payload_b64: &'a str,
    signature_b64: &'a str,
}

fn b64(segment: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| JwtError::BadEncoding)
}

fn split(token: &str) -> Result<SplitToken<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    if h.is_empty() || p.is_empty() {
        return Err(JwtError::Malformed);
    }
    let header_json = b64(h)?;
    let header: Map<String, Value> = serde_json::from_slice(&header_json).map_err(|_| JwtError::BadHeader)?;
    let alg = header.get("alg").and_then(Value::as_str).ok_or(JwtError::BadHeader)?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    let alg = Alg::parse(alg).ok_or(JwtError::AlgNotAllowed)?;
    // RFC 7515 §4.1.11: a recipient must reject extensions it does not understand.
    if header.contains_key("crit") {
        return Err(JwtError::BadHeader);
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::BadHeader),
    };
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    Ok(SplitToken {
        header: UnverifiedHeader { alg, kid },
        signing_input,
        payload_b64: p,
        signature_b64: s,
    })
}

/// Reads the header without verifying anything (to decide whether keys are
/// needed and which `kid` to look for).
pub fn peek_header(token: &str) -> Result<UnverifiedHeader, JwtError> {
    split(token).map(|t| t.header)
}

/// Verifies tokens. `hs_secret` is the project JWT secret
/// (`SUPABASE_JWT_SECRET` / `JWT_SECRET`, read by the runtime); without it
/// HS256 tokens are refused.
#[derive(Clone)]
pub struct Verifier {
    hs_secret: Option<Vec<u8>>,
    pub leeway_secs: i64,
}

impl std::fmt::Debug for Verifier {
    // The secret must never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hs_secret", &self.hs_secret.as_ref().map(|_| "<redacted>"))
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl Verifier {
    /// An empty secret counts as none: HMAC with an empty key is forgeable
    /// by anyone.
    pub fn new(hs_secret: Option<Vec<u8>>) -> Verifier {
        Verifier {
            hs_secret: hs_secret.filter(|s| !s.is_empty()),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    pub fn with_leeway(mut self, leeway_secs: i64) -> Verifier {
        self.leeway_secs = leeway_secs.max(0);
        self
    }

    pub fn has_hs_secret(&self) -> bool {
        self.hs_secret.is_some()
    }

    /// Verifies signature, then `exp` / `nbf` / `iat`. `jwks` is needed for
    /// ES256 and RS256 tokens.
    pub fn verify(&self, token: &str, jwks: Option<&Jwks>, now_secs: i64) -> Result<Claims, JwtError> {
        self.verify_split(split(token)?, jwks, now_secs)
    }

    /// [`Verifier::verify`] of a token already split (its header read once
    /// by a caller that chose the keys by it).
    fn verify_split(&self, t: SplitToken<'_>, jwks: Option<&Jwks>, now_secs: i64) -> Result<Claims, JwtError> {
        let payload = b64(t.payload_b64)?;
        let signature = b64(t.signature_b64)?;
        if signature.is_empty() {
            return Err(JwtError::BadSignature);
        }
        match t.header.alg {
            Alg::Hs256 => {
                // A kid that names a published (asymmetric) key means someone
                // is trying to pass a public key off as an HMAC secret.
                if let (Some(kid), Some(jwks)) = (&t.header.kid, jwks) {
                    if jwks.keys().iter().any(|k| k.kid.as_deref() == Some(kid.as_str())) {
                        return Err(JwtError::KeyMismatch);
                    }
                }
                let secret = self.hs_secret.as_deref().ok_or(JwtError::AlgNotAllowed)?;
                let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| JwtError::AlgNotAllowed)?;
                mac.update(t.signing_input);
                // `verify_slice` compares in constant time.
                mac.verify_slice(&signature).map_err(|_| JwtError::BadSignature)?;
            }
            alg @ (Alg::Es256 | Alg::Rs256) => {
                let jwks = jwks.ok_or(JwtError::AlgNotAllowed)?;
                let key = jwks.select(alg, t.header.kid.as_deref())?;
                let digest = Sha256::digest(t.signing_input);
                key.verify_digest(alg, &digest, &signature)?;
            }
        }
        let claims = Claims::from_payload(&payload)?;
        claims.check_times(now_secs, self.leeway_secs)?;
        Ok(claims)
    }

    /// [`Verifier::verify`] followed by [`Principal::from_claims`].
    pub fn principal(
        &self,
        token: &str,
        jwks: Option<&Jwks>,
        now_secs: i64,
        policy: &TokenPolicy,
    ) -> Result<Principal, JwtError> {
        Principal::from_claims(&self.verify(token, jwks, now_secs)?, policy)
    }
}

#[cfg(test)]
pub(crate) mod test_keys;

#[cfg(test)]
mod tests;
