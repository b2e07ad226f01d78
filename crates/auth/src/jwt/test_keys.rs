//! Fixed test keys and token builders for the JWT tests.
//!
//! The RSA key is a 2048-bit key generated once for this test suite (key
//! generation in a debug build takes seconds, so it is embedded rather than
//! generated per run). It protects nothing.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const RSA_N: &str = "tMD8-aC3n9ZBK-AuqOZStTkUMFhsDJ7uXO8U82V5Eew1aMB9Uabp3ujiArZ90SaQt3jUgkhvdneBSyUMyIJyJum57j2SnTfR_1MsD3lGLsi_wERC6Q2ixcyVYefRwOxhmrMCSKe_L92QX5aQardGtNBJBOGuFFfL83cmImZpiGlz2S9VgYbQNAE-DSQsb41WCyo15XSUOpK2Zo19JmYKalJ_Zl4IikBPFjqmr6iY7XDBKK1VKDyTjb3Cvg-NRKufQgyvmEyf83TsJMP2eR1GyYNI17I2Ve9jPEOFt5cqMS13yQaz6RqynX6inyctxP31ZF5r9QmRyRiKwYOQ-9Ulow";
const RSA_D: &str = "IjLHSjWRuGCRqQr72QHm0RnRC4qXOtYRFC054gknXHA79KtCqqGxavbV2ByN9nXc-JGYZ2PsDtZydHS4k_E2Rs1-26fzpuJKTYv_cJgJ4s0hlm9z12M4kkLwWntBUMaIevv2aSevwQ8jAyrZ_Q7bBlfIEO_f_0JTOKeo4-ZLfj7fOVZGmSqjDOrBqkxB-aQZmwRAWbyrPuEiJ13Ffzfep171o0R5RO5uZv7tv1ABNiFnwQ0LEQyjoUrFhttbvWoUnvhPEjDOjh0H1LJkhXo7-e67ZjaOi8Rav-20Ag6Z0Br9fX5uZTBVKELfverOWgXFxyvJVUyORcoNujYoB5kAjQ";
const RSA_P: &str = "9xVH5s9pETBNTMoPsJxGHbOa_OStluTW7Okg2LCh7ZyCHzIyKd28kP-kz242JI5quIdLouFWBIA-fVOwRuk-ZpH01MuCjkgsqkUr8wVZ55qD8wjmv-DYw3otxbiKpQ6UR4OtIPUQRHifnU_o7x-FpyyuAL8Tdp_CHCOcubs22u0";
const RSA_Q: &str = "u0bpxu139E-cpEhGKaK86FDU8moky4aDH5q4-9rPcIIXqo4_XoQN_dWQcnznAC7dR-lJFX1HJbqF3wzOkKgMMeJLnQRPFgmPd2ynJx7vD0e3eE7yA4ZXFJvO6jZDrbNE2QLMlbelgWehHRkZGNY2av_Mkcvfy--ITVnDE7V-oM8";

fn big(b64: &str) -> BigUint {
    BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(b64).unwrap())
}

pub fn rsa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaPrivateKey::from_components(
            big(RSA_N),
            BigUint::from(65537u32),
            big(RSA_D),
            vec![big(RSA_P), big(RSA_Q)],
        )
        .unwrap()
    })
}

/// A deterministic P-256 key; distinct seeds give distinct keys.
pub fn ec_key(seed: u8) -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_bytes(&[seed; 32].into()).unwrap()
}

pub fn ec_jwk(key: &p256::ecdsa::SigningKey, kid: &str) -> Value {
    let point = key.verifying_key().to_encoded_point(false);
    json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    })
}

pub fn rsa_jwk(kid: &str) -> Value {
    let key = rsa_key();
    json!({
        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    })
}

pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Builds `header.payload.signature` with whatever `sign` returns.
pub fn make_token(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{h}.{p}");
    let sig = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

pub fn hmac(secret: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

pub fn hs256(secret: &[u8], claims: &Value) -> String {
    make_token(&json!({"alg": "HS256", "typ": "JWT"}), claims, |m| hmac(secret, m))
}

pub fn es256(key: &p256::ecdsa::SigningKey, kid: &str, claims: &Value) -> String {
    make_token(&json!({"alg": "ES256", "typ": "JWT", "kid": kid}), claims, |m| {
        let sig: p256::ecdsa::Signature = key.sign(m);
        sig.to_bytes().to_vec()
    })
}

pub fn rs256(kid: &str, claims: &Value) -> String {
    make_token(&json!({"alg": "RS256", "typ": "JWT", "kid": kid}), claims, |m| {
        rsa_key()
            .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(m))
            .unwrap()
    })
}
