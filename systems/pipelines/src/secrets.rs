//! Secrets of the OAuth flow: tokens sealed at rest, the signed `state`,
//! and PKCE.
//!
//! * **Tokens at rest** are AES-256-GCM ciphertexts,
//!   `v1.<key id>.<nonce b64url>.<ciphertext+tag b64url>`, bound to their
//!   row by associated data (`<user id>|<platform>|<kind>`), so a ciphertext
//!   copied into another user's row, or an access token swapped for a
//!   refresh token, does not open. Keys come from `OAUTH_TOKEN_KEYS`
//!   (`<id>:<base64 32 bytes>,...`): the first seals, every one opens, so a
//!   key is rotated by putting a new one first and dropping the old one once
//!   every token has been refreshed (refreshes reseal with the first key).
//! * **`state`** is `<payload b64url>.<HMAC-SHA256 b64url>` over
//!   `{u: user, p: platform, n: nonce, e: expiry}`: it names the user who
//!   started the flow, so a code delivered to someone else's session is
//!   refused, and the nonce is spent once in the database (replay).
//! * **PKCE**: the verifier is derived from the state's nonce with the state
//!   secret (HMAC), so nothing has to be stored between the redirect and the
//!   callback, and only the holder of the secret can derive it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What can go wrong opening or configuring secrets. Messages never hold
/// key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// `OAUTH_TOKEN_KEYS` is missing or malformed.
    BadKeys(String),
    /// The ciphertext is not ours, was tampered with, or its key is gone.
    CannotOpen,
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretError::BadKeys(m) => write!(f, "OAUTH_TOKEN_KEYS: {m}"),
            SecretError::CannotOpen => f.write_str("a stored token could not be decrypted"),
        }
    }
}

struct Key {
    id: String,
    cipher: Aes256Gcm,
}

/// Seals and opens tokens. Debug prints key ids only.
pub struct TokenSealer {
    keys: Vec<Key>,
}

impl std::fmt::Debug for TokenSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        write!(f, "TokenSealer {{ key_ids: {ids:?} }}")
    }
}

impl TokenSealer {
    /// Parses `<id>:<base64 of 32 bytes>[,<id>:<...>]`.
    pub fn from_spec(spec: &str) -> Result<TokenSealer, SecretError> {
        let mut keys = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, b64) = entry
                .split_once(':')
                .ok_or_else(|| SecretError::BadKeys("each key is <id>:<base64 of 32 bytes>".into()))?;
            let id_ok = !id.is_empty()
                && id.len() <= 32
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !id_ok {
                return Err(SecretError::BadKeys("a key id is 1-32 of A-Z a-z 0-9 _ -".into()));
            }
            let bytes = STANDARD
                .decode(b64.trim())
                .or_else(|_| URL_SAFE_NO_PAD.decode(b64.trim()))
                .map_err(|_| SecretError::BadKeys(format!("key {id} is not base64")))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| SecretError::BadKeys(format!("key {id} is not 32 bytes")))?;
            if keys.iter().any(|k: &Key| k.id == id) {
                return Err(SecretError::BadKeys(format!("key id {id} appears twice")));
            }
            keys.push(Key {
                id: id.to_string(),
                cipher,
            });
        }
        if keys.is_empty() {
            return Err(SecretError::BadKeys("no key given".into()));
        }
        Ok(TokenSealer { keys })
    }

    /// The key new ciphertexts use.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `plaintext` for `binding` with the current key and `nonce`
    /// (12 random bytes from the caller's CSPRNG).
    pub fn seal(&self, plaintext: &str, binding: &str, nonce: [u8; 12]) -> String {
        let key = &self.keys[0];
        let sealed = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: binding.as_bytes(),
                },
            )
            // AES-GCM encryption fails only for messages over 64 GiB.
            .unwrap_or_default();
        format!(
            "v1.{}.{}.{}",
            key.id,
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(sealed)
        )
    }

    /// Opens a sealed token; its key must still be configured and the
    /// binding must be the one it was sealed for.
    pub fn open(&self, sealed: &str, binding: &str) -> Result<String, SecretError> {
        let mut parts = sealed.split('.');
        let (Some("v1"), Some(id), Some(nonce), Some(body), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SecretError::CannotOpen);
        };
        let key = self.keys.iter().find(|k| k.id == id).ok_or(SecretError::CannotOpen)?;
        let nonce: [u8; 12] = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(SecretError::CannotOpen)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| SecretError::CannotOpen)?;
        let plain = key
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &body,
                    aad: binding.as_bytes(),
                },
            )
            .map_err(|_| SecretError::CannotOpen)?;
        String::from_utf8(plain).map_err(|_| SecretError::CannotOpen)
    }
}

/// The associated data of a token: whose, for which platform, which kind.
pub fn token_binding(user_id: &str, platform: &str, kind: &str) -> String {
    format!("{user_id}|{platform}|{kind}")
}

/// What a `state` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateClaims {
    /// The user who started the flow.
    pub u: String,
    /// The platform.
    pub p: String,
    /// A random nonce, spent once.
    pub n: String,
    /// Expiry, Unix seconds.
    pub e: i64,
}

/// Why a `state` was refused. Each is a 400 with its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateError {
    /// Not of our format, or its signature does not match.
    Invalid,
    /// Past its expiry.
    Expired,
    /// Started by another user, or for another platform.
    Mismatch,
}

impl StateError {
    /// The error code clients see.
    pub fn code(self) -> &'static str {
        match self {
            StateError::Invalid => "state_invalid",
            StateError::Expired => "state_expired",
            StateError::Mismatch => "state_mismatch",
        }
    }
}

fn hmac(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length; the fallback is unreachable.
    let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return [0; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Signs claims into a `state` value.
pub fn sign_state(secret: &[u8], claims: &StateClaims) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let sig = hmac(secret, &[b"oauth-state.", payload.as_bytes()]);
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Verifies a `state`: signature first (so nothing is said about forged
/// values), then expiry, then that it belongs to `user` and `platform`.
pub fn verify_state(
    secret: &[u8],
    state: &str,
    user: &str,
    platform: &str,
    now_secs: i64,
) -> Result<StateClaims, StateError> {
    if state.len() > 1024 {
        return Err(StateError::Invalid);
    }
    let (payload, sig) = state.split_once('.').ok_or(StateError::Invalid)?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| StateError::Invalid)?;
    let expected = hmac(secret, &[b"oauth-state.", payload.as_bytes()]);
    if sig.len() != 32 || !bool::from(expected.ct_eq(sig.as_slice())) {
        return Err(StateError::Invalid);
    }
    let raw = URL_SAFE_NO_PAD.decode(payload).map_err(|_| StateError::Invalid)?;
    let claims: StateClaims = serde_json::from_slice(&raw).map_err(|_| StateError::Invalid)?;
    if now_secs > claims.e {
        return Err(StateError::Expired);
    }
    if claims.u != user || claims.p != platform {
        return Err(StateError::Mismatch);
    }
    Ok(claims)
}

/// The PKCE verifier for a state nonce (43 base64url characters).
pub fn pkce_verifier(secret: &[u8], nonce: &str) -> String {
    URL_SAFE_NO_PAD.encode(hmac(secret, &[b"pkce-verifier.", nonce.as_bytes()]))
}

/// The S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str =
        "k2:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,k1:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    #[test]
    fn a_sealed_token_opens_only_for_its_binding() {
        let s = TokenSealer::from_spec(KEYS).unwrap();
        let sealed = s.seal("secret-access-token", "u1|twitter|access", [7; 12]);
        assert!(sealed.starts_with("v1.k2."));
        assert!(!sealed.contains("secret-access-token"));
        assert_eq!(s.open(&sealed, "u1|twitter|access").unwrap(), "secret-access-token");
        assert_eq!(s.open(&sealed, "u2|twitter|access"), Err(SecretError::CannotOpen));
        assert_eq!(s.open(&sealed, "u1|twitter|refresh"), Err(SecretError::CannotOpen));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(s.open(&tampered, "u1|twitter|access"), Err(SecretError::CannotOpen));
    }

    #[test]
    fn rotation_opens_old_keys_and_seals_with_the_first() {
        let old = TokenSealer::from_spec("k1:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=").unwrap();
        let sealed = old.seal("t", "b", [1; 12]);
        let rotated = TokenSealer::from_spec(KEYS).unwrap();
        assert_eq!(rotated.open(&sealed, "b").unwrap(), "t");
        assert_eq!(rotated.current_key_id(), "k2");
        let dropped = TokenSealer::from_spec("k2:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        assert_eq!(dropped.open(&sealed, "b"), Err(SecretError::CannotOpen));
    }

    #[test]
    fn bad_key_specs_are_refused_without_echoing_keys() {
        for spec in [
            "",
            "k1",
            "k1:notbase64!!",
            "k1:AAAA",
            "bad id:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ] {
            let e = TokenSealer::from_spec(spec).unwrap_err();
            assert!(!e.to_string().contains("AAEC"));
        }
        let dbg = format!("{:?}", TokenSealer::from_spec(KEYS).unwrap());
        assert_eq!(dbg, "TokenSealer { key_ids: [\"k2\", \"k1\"] }");
    }

    fn claims() -> StateClaims {
        StateClaims {
            u: "user-1".into(),
            p: "twitter".into(),
            n: "nonce-0123456789abcdef".into(),
            e: 1_000_600,
        }
    }

    #[test]
    fn a_state_verifies_for_its_user_and_platform_until_it_expires() {
        let state = sign_state(b"state-secret", &claims());
        assert_eq!(
            verify_state(b"state-secret", &state, "user-1", "twitter", 1_000_000),
            Ok(claims())
        );
        assert_eq!(
            verify_state(b"state-secret", &state, "user-1", "twitter", 1_000_601),
            Err(StateError::Expired)
        );
        assert_eq!(
            verify_state(b"state-secret", &state, "user-2", "twitter", 1_000_000),
            Err(StateError::Mismatch)
        );
        assert_eq!(
            verify_state(b"state-secret", &state, "user-1", "google", 1_000_000),
            Err(StateError::Mismatch)
        );
    }

    #[test]
    fn a_tampered_or_foreign_state_is_invalid() {
        let state = sign_state(b"state-secret", &claims());
        assert_eq!(
            verify_state(b"other", &state, "user-1", "twitter", 0),
            Err(StateError::Invalid)
        );
        let mut forged = claims();
        forged.e = i64::MAX;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let sig = state.split_once('.').unwrap().1;
        assert_eq!(
            verify_state(
                b"state-secret",
                &format!("{forged_payload}.{sig}"),
                "user-1",
                "twitter",
                0
            ),
            Err(StateError::Invalid)
        );
        for junk in ["", ".", "abc", "a.b.c", &"x".repeat(2000)] {
            assert_eq!(
                verify_state(b"state-secret", junk, "user-1", "twitter", 0),
                Err(StateError::Invalid)
            );
        }
    }

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let v = pkce_verifier(b"s", "n");
        assert_eq!(v.len(), 43);
        assert_ne!(v, pkce_verifier(b"s", "m"));
    }
}
