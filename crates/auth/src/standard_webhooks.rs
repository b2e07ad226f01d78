//! Webhook signatures in the Standard Webhooks form (standardwebhooks.com):
//! headers `webhook-id`, `webhook-timestamp` (unix seconds) and
//! `webhook-signature`, a space-separated list of `v1,<base64 HMAC-SHA256>`
//! over `"{id}.{timestamp}.{body}"`. Secrets are `whsec_<base64 key>`; a
//! secret without the prefix is used as raw bytes.
//!
//! The id is signed, so a receiver that remembers ids it has processed can
//! tell a replay (same id) from a new delivery; the timestamp is signed, so a
//! captured request stops verifying after the tolerance. Any one matching
//! `v1` entry verifies (senders sign with old and new secret during
//! rotation). Comparisons are constant-time. The errors are those of
//! [`crate::webhooks`], so both forms fail with the same codes.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::webhooks::SignatureError;

/// The three headers of a delivery, as received (`None` when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery<'a> {
    /// `webhook-id`: unique per message; retries of one message reuse it.
    pub id: Option<&'a str>,
    /// `webhook-timestamp`: unix seconds, as decimal digits.
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`: `v1,<base64>` entries separated by spaces.
    pub signature: Option<&'a str>,
}

const MAX_ID_LEN: usize = 256;
const MAX_SIGNATURE_HEADER_LEN: usize = 4096;

/// The key bytes of a secret: `whsec_` + base64, or the raw text otherwise.
/// `None` for an empty secret or a `whsec_` one that is not base64.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let secret = secret.trim();
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).ok()?,
        None => secret.as_bytes().to_vec(),
    };
    (!key.is_empty()).then_some(key)
}

fn present(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; the fallback only keeps this total.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().into()
}

/// The `webhook-signature` value for `body` sent as message `id` at `timestamp_secs`.
pub fn sign(key: &[u8], id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let sig = mac(key, id, &timestamp_secs.to_string(), body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(sig))
}

/// Checks a delivery; returns its signed timestamp. The signature is checked
/// before the time window, so "expired" is only said of authentic requests.
pub fn verify(
    key: &[u8],
    delivery: Delivery<'_>,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<i64, SignatureError> {
    if key.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let id = present(delivery.id).ok_or(SignatureError::Missing)?;
    let t = present(delivery.timestamp).ok_or(SignatureError::MissingTimestamp)?;
    let header = present(delivery.signature).ok_or(SignatureError::Missing)?;
    if id.len() > MAX_ID_LEN || id.chars().any(char::is_control) || header.len() > MAX_SIGNATURE_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    if t.len() > 12 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    let mut candidates: Vec<[u8; 32]> = Vec::new();
    for entry in header.split(' ').filter(|e| !e.is_empty()) {
        let (version, sig) = entry.split_once(',').ok_or(SignatureError::Malformed)?;
        // Other versions (v1a: asymmetric) are not ours to judge.
        if version != "v1" {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .map_err(|_| SignatureError::Malformed)?;
        let sig: [u8; 32] = bytes.try_into().map_err(|_| SignatureError::Malformed)?;
        candidates.push(sig);
    }
    if candidates.is_empty() {
        return Err(SignatureError::MissingSignature);
    }
    let expected = mac(key, id, t, body);
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

    // The example of the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn key() -> Vec<u8> {
        secret_key(SPEC_SECRET).unwrap()
    }

    fn delivery<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> Delivery<'a> {
        Delivery {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn the_specification_example_signs_and_verifies() {
        assert_eq!(sign(&key(), SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        let ts = SPEC_TS.to_string();
        assert_eq!(
            verify(&key(), delivery(SPEC_ID, &ts, SPEC_SIG), SPEC_BODY, SPEC_TS + 10, 300),
            Ok(SPEC_TS)
        );
    }

    #[test]
    fn any_v1_entry_may_match_and_other_versions_are_skipped() {
        let ts = SPEC_TS.to_string();
        let header = format!("v1a,AAAA v1,{} {SPEC_SIG}", "A".repeat(43) + "=");
        assert_eq!(
            verify(&key(), delivery(SPEC_ID, &ts, &header), SPEC_BODY, SPEC_TS, 300),
            Ok(SPEC_TS)
        );
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let k = key();
        let ts = SPEC_TS.to_string();
        let check = |d: Delivery<'_>, body: &[u8], now: i64| verify(&k, d, body, now, 300);
        assert_eq!(
            verify(&[], delivery(SPEC_ID, &ts, SPEC_SIG), SPEC_BODY, SPEC_TS, 300),
            Err(SignatureError::NoSecret)
        );
        assert_eq!(
            check(Delivery::default(), SPEC_BODY, SPEC_TS),
            Err(SignatureError::Missing)
        );
        let no_ts = Delivery {
            timestamp: None,
            ..delivery(SPEC_ID, &ts, SPEC_SIG)
        };
        assert_eq!(check(no_ts, SPEC_BODY, SPEC_TS), Err(SignatureError::MissingTimestamp));
        assert_eq!(
            check(delivery(SPEC_ID, "12a", SPEC_SIG), SPEC_BODY, SPEC_TS),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(delivery(SPEC_ID, &ts, "garbage"), SPEC_BODY, SPEC_TS),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(delivery(SPEC_ID, &ts, "v1,!!!"), SPEC_BODY, SPEC_TS),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(delivery(SPEC_ID, &ts, "v1a,xyz"), SPEC_BODY, SPEC_TS),
            Err(SignatureError::MissingSignature)
        );
        assert_eq!(
            check(delivery(SPEC_ID, &ts, SPEC_SIG), b"{}", SPEC_TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(delivery("msg_other", &ts, SPEC_SIG), SPEC_BODY, SPEC_TS),
            Err(SignatureError::Mismatch)
        );
        let later = (SPEC_TS + 1).to_string();
        assert_eq!(
            check(delivery(SPEC_ID, &later, SPEC_SIG), SPEC_BODY, SPEC_TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(delivery(SPEC_ID, &ts, SPEC_SIG), SPEC_BODY, SPEC_TS + 301),
            Err(SignatureError::TooOld)
        );
        assert_eq!(
            check(delivery(SPEC_ID, &ts, SPEC_SIG), SPEC_BODY, SPEC_TS - 301),
            Err(SignatureError::FromFuture)
        );
        assert_eq!(
            check(delivery(SPEC_ID, &ts, SPEC_SIG), SPEC_BODY, SPEC_TS + 300),
            Ok(SPEC_TS)
        );
    }

    #[test]
    fn secrets_are_whsec_base64_or_raw_text() {
        assert_eq!(secret_key("whsec_AAEC"), Some(vec![0, 1, 2]));
        assert_eq!(secret_key("plain"), Some(b"plain".to_vec()));
        assert_eq!(secret_key("whsec_***"), None);
        assert_eq!(secret_key("  "), None);
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic_and_never_verify(sig in "\\PC{0,120}", id in "\\PC{0,40}", body in prop::collection::vec(any::<u8>(), 0..64)) {
            let ts = SPEC_TS.to_string();
            prop_assert!(verify(&key(), delivery(&id, &ts, &sig), &body, SPEC_TS, 300).is_err());
        }

        #[test]
        fn sign_then_verify_round_trips(body in prop::collection::vec(any::<u8>(), 0..256), id in "[a-zA-Z0-9_]{1,40}", skew in -300i64..=300) {
            let ts = (SPEC_TS + skew).to_string();
            let sig = sign(&key(), &id, SPEC_TS + skew, &body);
            prop_assert_eq!(verify(&key(), delivery(&id, &ts, &sig), &body, SPEC_TS, 300), Ok(SPEC_TS + skew));
        }
    }
}
