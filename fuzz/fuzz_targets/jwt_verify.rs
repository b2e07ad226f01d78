//! Fuzzes JWT verification and JWKS parsing.
//!
//! The first input byte picks what the rest is:
//! 0: a raw token, verified against a fixed HS256 secret and a fixed JWKS;
//! 1: `header 0xFF payload`, signed here with the HS256 secret, so the
//!    claims and time checks behind a valid signature get exercised too;
//! 2: a JWKS document, parsed and then used to verify a fixed ES256 token.
//! Beyond "never panics", it checks the verifier's promises on anything it
//! accepts.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use edgeworks_auth::jwt::{
    peek_header, Alg, Jwks, JwtError, Principal, TokenPolicy, Verifier, DEFAULT_LEEWAY_SECS,
};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::Signer;

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret!";
const NOW: i64 = 1_800_000_000;

struct Fixture {
    jwks: Jwks,
    es_token: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).expect("fixed scalar is valid");
        let point = key.verifying_key().to_encoded_point(false);
        let x = URL_SAFE_NO_PAD.encode(point.x().expect("uncompressed"));
        let y = URL_SAFE_NO_PAD.encode(point.y().expect("uncompressed"));
        let jwks = Jwks::parse(&format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"k1","x":"{x}","y":"{y}"}}]}}"#
        ))
        .expect("fixture jwks parses");
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k1"}"#);
        let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"role":"anon","exp":{}}}"#, NOW + 60));
        let input = format!("{header}.{claims}");
        let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
        let es_token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        Fixture { jwks, es_token }
    })
}

fn hs256(header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).expect("hmac takes any key");
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let verifier = Verifier::new(Some(SECRET.to_vec()));
    match mode % 3 {
        0 => {
            let Ok(token) = std::str::from_utf8(rest) else {
                return;
            };
            // Forging a signature by mutation is not expected; if it ever
            // verifies, it must at least be unexpired.
            if let Ok(claims) = verifier.verify(token, Some(&f.jwks), NOW) {
                assert!(NOW < claims.exp() + DEFAULT_LEEWAY_SECS);
            }
            let _ = peek_header(token);
        }
        1 => {
            let (header, payload) = match rest.iter().position(|b| *b == 0xFF) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&br#"{"alg":"HS256"}"#[..], rest),
            };
            let token = hs256(header, payload);
            match verifier.verify(&token, Some(&f.jwks), NOW) {
                Ok(claims) => {
                    assert!(
                        NOW < claims.exp().saturating_add(DEFAULT_LEEWAY_SECS),
                        "accepted an expired token"
                    );
                    if let Some(nbf) = claims.nbf() {
                        assert!(
                            nbf <= NOW + DEFAULT_LEEWAY_SECS,
                            "accepted a not-yet-valid token"
                        );
                    }
                    if let Some(iat) = claims.iat() {
                        assert!(
                            iat <= NOW + DEFAULT_LEEWAY_SECS,
                            "accepted a token from the future"
                        );
                    }
                    if let Ok(p) = Principal::from_claims(&claims, &TokenPolicy::default()) {
                        assert!(
                            ["anon", "authenticated", "service_role"].contains(&p.role.as_str())
                        );
                        assert_eq!(p.is_service_role, p.role == "service_role");
                        assert_eq!(p.user_id.is_some(), p.role == "authenticated");
                        // An API-key role never arrives on a token minted for a user.
                        if p.role != "authenticated" {
                            assert!(claims.get("aud").is_none_or(|a| a.is_null()));
                            assert!(claims.get("sub").is_none_or(|s| s.is_null()));
                        }
                    }
                }
                // We signed it with the HS256 secret: if the header says
                // HS256, the signature can never be the complaint.
                Err(e) => {
                    if peek_header(&token).is_ok_and(|h| h.alg == Alg::Hs256) {
                        assert_ne!(e, JwtError::BadSignature);
                    }
                }
            }
        }
        _ => {
            let Ok(doc) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(jwks) = Jwks::parse(doc) {
                let _ = Verifier::new(None).verify(&f.es_token, Some(&jwks), NOW);
            }
        }
    }
});
