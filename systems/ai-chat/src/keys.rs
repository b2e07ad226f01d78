//! Users' own provider keys, sealed with AES-256-GCM before they reach the
//! database and opened only to make a call.
//!
//! - The encryption keys come from `AI_KEY_ENCRYPTION_KEYS`:
//!   `<id>:<base64 of 32 bytes>[,<id>:<base64>...]`. The first one seals; all
//!   of them open, so a key can be rotated in by putting it first and the old
//!   one retired once every row was re-sealed (a user saving their key again
//!   re-seals it with the first).
//! - Each seal has a fresh 96-bit nonce from the host's CSPRNG and binds the
//!   row it belongs to as associated data (`user id` and `provider`), so a
//!   ciphertext copied to another user's row or another provider does not open.
//! - A plaintext key never appears in `Debug`, an error or a log line; the
//!   types here print `[REDACTED]`.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use edgeworks_core::ApiError;

/// The environment variable holding the encryption keys.
pub const KEYS_VAR: &str = "AI_KEY_ENCRYPTION_KEYS";

/// The encryption keys, the sealing one first.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

/// A sealed key as stored: which encryption key, nonce and ciphertext (base64).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Sealed {
    /// The encryption key's id.
    pub key_id: String,
    /// 12 bytes, base64.
    pub nonce: String,
    /// Ciphertext and tag, base64.
    pub ciphertext: String,
}

/// Why a sealed key could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed with a key id that is no longer configured.
    UnknownKeyId,
    /// Tampered with, moved to another row, or not ours.
    Corrupt,
}

fn is_key_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Keyring {
    /// Parses `AI_KEY_ENCRYPTION_KEYS`. Errors name the problem, never a value.
    pub fn parse(raw: &str) -> Result<Keyring, String> {
        let mut keys: Vec<(String, [u8; 32])> = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, b64) = entry
                .split_once(':')
                .ok_or_else(|| format!("{KEYS_VAR}: each entry is <id>:<base64 of 32 bytes>"))?;
            if !is_key_id(id) {
                return Err(format!("{KEYS_VAR}: a key id is 1-32 of A-Z a-z 0-9 _ -"));
            }
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|_| format!("{KEYS_VAR}: key {id} is not base64"))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| format!("{KEYS_VAR}: key {id} must be 32 bytes"))?;
            if keys.iter().any(|(k, _)| k == id) {
                return Err(format!("{KEYS_VAR}: key id {id} appears twice"));
            }
            keys.push((id.to_string(), key));
        }
        if keys.is_empty() {
            return Err(format!("{KEYS_VAR} holds no key"));
        }
        Ok(Keyring { keys })
    }

    /// The id of the key that seals.
    pub fn active_id(&self) -> &str {
        self.keys.first().map(|(id, _)| id.as_str()).unwrap_or("")
    }

    fn aad(user_id: &str, provider: &str) -> Vec<u8> {
        format!("edgeworks-ai-key:v1:{user_id}:{provider}").into_bytes()
    }

    /// Seals `api_key` for `user_id`'s `provider` row with `nonce` (fresh
    /// from a CSPRNG for every seal).
    pub fn seal(&self, user_id: &str, provider: &str, api_key: &str, nonce: [u8; 12]) -> Result<Sealed, ApiError> {
        let (id, key) = self
            .keys
            .first()
            .ok_or_else(|| ApiError::new(500, "misconfigured", format!("{KEYS_VAR} holds no key")))?;
        let cipher = Aes256Gcm::new(key.into());
        let aad = Keyring::aad(user_id, provider);
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: api_key.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| ApiError::internal())?;
        Ok(Sealed {
            key_id: id.clone(),
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(ciphertext),
        })
    }

    /// Opens a sealed key of `user_id`'s `provider` row.
    pub fn open(&self, user_id: &str, provider: &str, sealed: &Sealed) -> Result<ApiKey, OpenError> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .ok_or(OpenError::UnknownKeyId)?;
        let nonce: [u8; 12] = STANDARD
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(OpenError::Corrupt)?;
        let ciphertext = STANDARD.decode(&sealed.ciphertext).map_err(|_| OpenError::Corrupt)?;
        let aad = Keyring::aad(user_id, provider);
        let plain = Aes256Gcm::new(key.into())
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::Corrupt)?;
        String::from_utf8(plain).map(ApiKey).map_err(|_| OpenError::Corrupt)
    }
}

/// A plaintext provider key; prints as `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// What a provider key may look like: 8-512 visible ASCII characters. Keys
/// go into HTTP headers, where a newline or non-ASCII byte would be refused
/// (or worse, split the header).
pub fn check_api_key(key: &str) -> Result<(), ApiError> {
    let ok = (8..=512).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "the request has invalid fields",
            serde_json::json!({ "fields": [{
                "field": "api_key",
                "code": "invalid_api_key",
                "message": "must be 8 to 512 visible ASCII characters",
            }]}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(spec).unwrap()
    }

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HxscGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAAA=";

    #[test]
    fn a_sealed_key_opens_for_its_own_row_only() {
        let r = ring(K1);
        let s = r.seal("u1", "openai", "sk-user-key-abcdef", [7; 12]).unwrap();
        assert_eq!(s.key_id, "k1");
        assert!(!s.ciphertext.contains("sk-user"));
        assert_eq!(r.open("u1", "openai", &s).unwrap().0, "sk-user-key-abcdef");
        assert_eq!(r.open("u2", "openai", &s), Err(OpenError::Corrupt));
        assert_eq!(r.open("u1", "mistral", &s), Err(OpenError::Corrupt));
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_still_opens_the_old_ones() {
        let old = ring(K1).seal("u1", "openai", "sk-old-sealed-key", [1; 12]).unwrap();
        let rotated = ring(&format!("{K2},{K1}"));
        assert_eq!(rotated.open("u1", "openai", &old).unwrap().0, "sk-old-sealed-key");
        assert_eq!(
            rotated.seal("u1", "openai", "x-12345678", [2; 12]).unwrap().key_id,
            "k2"
        );
        assert_eq!(ring(K2).open("u1", "openai", &old), Err(OpenError::UnknownKeyId));
    }

    #[test]
    fn a_tampered_ciphertext_does_not_open() {
        let r = ring(K1);
        let mut s = r.seal("u1", "openai", "sk-user-key-abcdef", [7; 12]).unwrap();
        let mut bytes = STANDARD.decode(&s.ciphertext).unwrap();
        bytes[0] ^= 1;
        s.ciphertext = STANDARD.encode(bytes);
        assert_eq!(r.open("u1", "openai", &s), Err(OpenError::Corrupt));
    }

    #[test]
    fn configuration_errors_never_echo_key_material() {
        for bad in ["", "k1", "k1:!!!", "k1:AAAA", "bad id:AAAA", &format!("{K1},{K1}")] {
            let e = Keyring::parse(bad).unwrap_err();
            assert!(!e.contains("AAECAwQF"), "{e}");
        }
        assert!(!format!("{:?}", ring(K1)).contains("AAECAwQF"));
        assert_eq!(format!("{:?}", ApiKey("sk-secret".into())), "[REDACTED]");
    }

    #[test]
    fn keys_with_line_breaks_or_too_short_are_refused() {
        assert!(check_api_key("sk-abcdefgh").is_ok());
        assert!(check_api_key("sk-abc\r\nx-evil: 1").is_err());
        assert!(check_api_key("short").is_err());
    }
}
