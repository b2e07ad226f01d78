//! Webhook signatures: `t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"{t}.{body}"`, as sent by our own callers and checked on callbacks.
//!
//! The timestamp is signed, so a captured request cannot be replayed after
//! the tolerance window. Several `v1=` entries may appear (a sender signing
//! with both the old and the new secret during rotation); any match is
//! accepted. Comparisons are constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use edgeworks_core::ApiError;

/// Default replay window, each way.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
const MAX_HEADER_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signing secret is configured: a deployment error, not the caller's.
    #[error("webhook secret is not configured")]
    NoSecret,
    #[error("signature header is missing")]
    Missing,
    /// Not `k=v` pairs, a repeated or non-numeric `t`, or a `v1` that is
    /// not 64 hex digits.
    #[error("signature header is malformed")]
    Malformed,
    #[error("signature header has no timestamp")]
    MissingTimestamp,
    #[error("signature header has no v1 signature")]
    MissingSignature,
    /// Signed with a different secret, or the body or timestamp changed.
    #[error("signature does not match")]
    Mismatch,
    #[error("signature timestamp is too old")]
    TooOld,
    #[error("signature timestamp is in the future")]
    FromFuture,
}

impl SignatureError {
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::NoSecret => "internal",
            SignatureError::Missing => "signature_missing",
            SignatureError::Malformed => "signature_malformed",
            SignatureError::MissingTimestamp => "signature_missing_timestamp",
            SignatureError::MissingSignature => "signature_missing_v1",
            SignatureError::Mismatch => "signature_mismatch",
            SignatureError::TooOld => "signature_expired",
            SignatureError::FromFuture => "signature_from_future",
        }
    }
}

impl From<SignatureError> for ApiError {
    fn from(e: SignatureError) -> ApiError {
        match e {
            // Say nothing about configuration to the caller.
            SignatureError::NoSecret => ApiError::internal(),
            other => ApiError::unauthorized(other.code(), other.to_string()),
        }
    }
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; the fallback is unreachable but
    // keeps this function total.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
        return [0; 32];
    };
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

/// The header value for `body` signed at `timestamp_secs`.
pub fn sign(secret: &[u8], timestamp_secs: i64, body: &[u8]) -> String {
    let t = timestamp_secs.to_string();
    format!("t={t},v1={}", hex::encode(mac(secret, &t, body)))
}

/// Checks a signature header (`None` when the request had none). Returns
/// the signed timestamp. The signature is checked before the time window,
/// so "expired" is only ever said about authentic requests.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<i64, SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(SignatureError::Missing)?;
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp: Option<&str> = None;
    let mut candidates: Vec<[u8; 32]> = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.split_once('=').ok_or(SignatureError::Malformed)?;
        let (k, v) = (k.trim(), v.trim());
        match k {
            "t" => {
                let digits = !v.is_empty() && v.len() <= 12 && v.bytes().all(|b| b.is_ascii_digit());
                if timestamp.is_some() || !digits {
                    return Err(SignatureError::Malformed);
                }
                timestamp = Some(v);
            }
            "v1" => {
                let mut sig = [0u8; 32];
                hex::decode_to_slice(v, &mut sig).map_err(|_| SignatureError::Malformed)?;
                candidates.push(sig);
            }
            // Other schemes (v0, future versions) are not ours to judge.
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    if candidates.is_empty() {
        return Err(SignatureError::MissingSignature);
    }
    let expected = mac(secret, t, body);
    let matched = candidates
        .iter()
        .fold(subtle::Choice::from(0u8), |acc, c| acc | expected.ct_eq(c));
    if !bool::from(matched) {
        return Err(SignatureError::Mismatch);
    }
    let ts: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    let tolerance = tolerance_secs.max(0);
    if now_secs.saturating_sub(ts) > tolerance {
        return Err(SignatureError::TooOld);
    }
    if ts.saturating_sub(now_secs) > tolerance {
        return Err(SignatureError::FromFuture);
    }
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"whsec_test_secret";
    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"job-1","status":"succeeded"}"#;

    fn check(header: &str) -> Result<i64, SignatureError> {
        verify(SECRET, Some(header), BODY, NOW, DEFAULT_TOLERANCE_SECS)
    }

    #[test]
    fn a_fresh_signature_verifies() {
        let h = sign(SECRET, NOW, BODY);
        assert!(h.starts_with("t=1700000000,v1="));
        assert_eq!(h.len(), "t=1700000000,v1=".len() + 64);
        assert_eq!(check(&h), Ok(NOW));
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        let mut m = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        m.update(format!("{NOW}.").as_bytes());
        m.update(BODY);
        let want = hex::encode(m.finalize().into_bytes());
        assert_eq!(sign(SECRET, NOW, BODY), format!("t={NOW},v1={want}"));
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let old = sign(b"old-secret", NOW, BODY);
        let new = sign(SECRET, NOW, BODY);
        let both = format!("{}, v1={}, v0=legacy", old, new.split("v1=").nth(1).unwrap());
        assert_eq!(check(&both), Ok(NOW));
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let good = sign(SECRET, NOW, BODY);
        assert_eq!(verify(SECRET, None, BODY, NOW, 300), Err(SignatureError::Missing));
        assert_eq!(verify(b"", Some(&good), BODY, NOW, 300), Err(SignatureError::NoSecret));
        assert_eq!(check("garbage"), Err(SignatureError::Malformed));
        assert_eq!(check("t=abc,v1=00"), Err(SignatureError::Malformed));
        assert_eq!(check(&format!("t=1,{good}")), Err(SignatureError::Malformed));
        assert_eq!(check("t=1700000000,v1=xyz"), Err(SignatureError::Malformed));
        assert_eq!(check(&"v1=".repeat(2000)), Err(SignatureError::Malformed));
        assert_eq!(
            check(&format!("v1={}", "0".repeat(64))),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(check("t=1700000000"), Err(SignatureError::MissingSignature));
        assert_eq!(check(&sign(b"wrong", NOW, BODY)), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(SECRET, Some(&good), b"{}", NOW, 300),
            Err(SignatureError::Mismatch)
        );
        let shifted = good.replace("t=1700000000", "t=1700000001");
        assert_eq!(check(&shifted), Err(SignatureError::Mismatch));
        assert_eq!(check(&sign(SECRET, NOW - 301, BODY)), Err(SignatureError::TooOld));
        assert_eq!(check(&sign(SECRET, NOW + 301, BODY)), Err(SignatureError::FromFuture));
        assert_eq!(check(&sign(SECRET, NOW - 300, BODY)), Ok(NOW - 300));
        assert_eq!(check(&sign(SECRET, NOW + 300, BODY)), Ok(NOW + 300));
    }

    #[test]
    fn errors_map_to_401s_with_distinct_codes_except_missing_secret() {
        use SignatureError::*;
        let all = [
            Missing,
            Malformed,
            MissingTimestamp,
            MissingSignature,
            Mismatch,
            TooOld,
            FromFuture,
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), all.len());
        for e in all {
            let api: ApiError = e.into();
            assert_eq!((api.status(), api.code()), (401, e.code()));
        }
        let api: ApiError = NoSecret.into();
        assert_eq!(api.status(), 500);
        assert!(!api.message().contains("secret"));
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic_and_never_verify(header in "\\PC{0,120}", body in prop::collection::vec(any::<u8>(), 0..64)) {
            prop_assert!(verify(SECRET, Some(&header), &body, NOW, 300).is_err());
        }

        #[test]
        fn sign_then_verify_round_trips(body in prop::collection::vec(any::<u8>(), 0..256), skew in -300i64..=300) {
            prop_assert_eq!(verify(SECRET, Some(&sign(SECRET, NOW + skew, &body)), &body, NOW, 300), Ok(NOW + skew));
        }
    }
}
