//! A JSON Web Key Set (RFC 7517) reduced to what we verify with: EC P-256
//! keys (ES256) and RSA keys (RS256). Keys we cannot use are skipped rather
//! than failing the whole set, so one exotic key published next to ours
//! (an Ed25519 key, say) does not take authentication down.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use serde_json::Value;

use super::{Alg, JwtError};

/// RSA moduli below this are too weak to trust (NIST deprecated 1024-bit).
const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("key set is not valid JSON")]
    NotJson,
    #[error("key set has no `keys` array")]
    NoKeys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwkKind {
    /// `kty: EC`, `crv: P-256`.
    EcP256,
    /// `kty: RSA`.
    Rsa,
}

#[derive(Debug, Clone)]
enum KeyMaterial {
    Ec(p256::ecdsa::VerifyingKey),
    Rsa(RsaPublicKey),
}

/// One usable public key.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it declares one.
    pub alg: Option<String>,
    material: KeyMaterial,
}

impl Jwk {
    pub fn kind(&self) -> JwkKind {
        match self.material {
            KeyMaterial::Ec(_) => JwkKind::EcP256,
            KeyMaterial::Rsa(_) => JwkKind::Rsa,
        }
    }

    /// Whether this key may verify tokens signed with `alg`: the key type
    /// must fit, and a declared JWK `alg` must equal it exactly.
    pub fn allows(&self, alg: Alg) -> bool {
        let kind_fits = matches!(
            (alg, self.kind()),
            (Alg::Es256, JwkKind::EcP256) | (Alg::Rs256, JwkKind::Rsa)
        );
        kind_fits && self.alg.as_deref().is_none_or(|a| a == alg.as_str())
    }

    pub(super) fn verify_digest(&self, alg: Alg, digest: &[u8], signature: &[u8]) -> Result<(), JwtError> {
        if !self.allows(alg) {
            return Err(JwtError::KeyMismatch);
        }
        match &self.material {
            KeyMaterial::Ec(key) => {
                // JWS carries ES256 signatures as raw r||s (64 bytes), not DER.
                let sig = p256::ecdsa::Signature::from_slice(signature).map_err(|_| JwtError::BadSignature)?;
                key.verify_prehash(digest, &sig).map_err(|_| JwtError::BadSignature)
            }
            KeyMaterial::Rsa(key) => key
                .verify(Pkcs1v15Sign::new::<sha2::Sha256>(), digest, signature)
                .map_err(|_| JwtError::BadSignature),
        }
    }

    fn from_json(v: &Value) -> Option<Jwk> {
        let s = |name: &str| v.get(name).and_then(Value::as_str);
        // A key published for encryption must not verify signatures.
        if s("use").is_some_and(|u| u != "sig") {
            return None;
        }
        if let Some(ops) = v.get("key_ops") {
            let ops = ops.as_array()?;
            if !ops.iter().any(|o| o.as_str() == Some("verify")) {
                return None;
            }
        }
        let material = match s("kty")? {
            "EC" => {
                if s("crv")? != "P-256" {
                    return None;
                }
                let x = URL_SAFE_NO_PAD.decode(s("x")?).ok()?;
                let y = URL_SAFE_NO_PAD.decode(s("y")?).ok()?;
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(0x04);
                sec1.extend_from_slice(&x);
                sec1.extend_from_slice(&y);
                // Rejects points that are not on the curve.
                KeyMaterial::Ec(p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).ok()?)
            }
            "RSA" => {
                let n = BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(s("n")?).ok()?);
                let e = BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(s("e")?).ok()?);
                let key = RsaPublicKey::new(n, e).ok()?;
                if key.n().bits() < MIN_RSA_BITS {
                    return None;
                }
                KeyMaterial::Rsa(key)
            }
            _ => return None,
        };
        Some(Jwk {
            kid: s("kid").map(str::to_string),
            alg: s("alg").map(str::to_string),
            material,
        })
    }
}

/// The usable keys of a JWKS document.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<Jwk>,
    skipped: usize,
}

impl Jwks {
    pub fn parse(json: &str) -> Result<Jwks, JwksError> {
        let doc: Value = serde_json::from_str(json).map_err(|_| JwksError::NotJson)?;
        let entries = doc.get("keys").and_then(Value::as_array).ok_or(JwksError::NoKeys)?;
        let mut keys = Vec::new();
        let mut skipped = 0;
        for entry in entries {
            match Jwk::from_json(entry) {
                Some(k) => keys.push(k),
                None => skipped += 1,
            }
        }
        Ok(Jwks { keys, skipped })
    }

    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// How many entries were ignored (unsupported type or curve, not for
    /// signing, or invalid). Worth a log line, not an error.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The key to verify an `alg` token naming `kid` with.
    pub fn select(&self, alg: Alg, kid: Option<&str>) -> Result<&Jwk, JwtError> {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).peekable();
                if named.peek().is_none() {
                    return Err(JwtError::UnknownKid);
                }
                named.find(|k| k.allows(alg)).ok_or(JwtError::KeyMismatch)
            }
            None => {
                // Without a kid we only guess when the guess is unambiguous.
                let mut fitting = self.keys.iter().filter(|k| k.allows(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Ok(k),
                    _ => Err(JwtError::MissingKid),
                }
            }
        }
    }
}
