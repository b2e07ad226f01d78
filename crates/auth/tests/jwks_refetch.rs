//! The remote-JWKS helper against a local fake auth server whose key set
//! rotates: the refetch-once-on-unknown-kid path over real HTTP.

use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use edgeworks_auth::jwt::{verify_with_remote_jwks, AuthError, JwksCache, JwtError, Verifier};
use edgeworks_core::ApiError;
use edgeworks_testkit::{block_on, json_response, FakeServer, NativeClient};
use p256::ecdsa::signature::Signer;
use serde_json::{json, Value};

const T0: i64 = 1_800_000_000_000;

fn key(seed: u8) -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_bytes(&[seed; 32].into()).unwrap()
}

fn jwk(seed: u8, kid: &str) -> Value {
    let point = key(seed).verifying_key().to_encoded_point(false);
    json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    })
}

fn es256(seed: u8, kid: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "typ": "JWT", "kid": kid}).to_string());
    let claims = json!({"sub": "u-1", "role": "authenticated", "exp": T0 / 1000 + 3600});
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig: p256::ecdsa::Signature = key(seed).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

/// First answer has only the old key; every later answer has both.
fn rotating_server() -> FakeServer {
    FakeServer::start(|_, idx| {
        let keys = if idx == 0 {
            vec![jwk(1, "old")]
        } else {
            vec![jwk(1, "old"), jwk(2, "new")]
        };
        json_response(200, &json!({ "keys": keys }).to_string())
    })
}

#[test]
fn unknown_kid_triggers_one_refetch_that_finds_the_rotated_key() {
    let server = rotating_server();
    let url = format!("{}/auth/v1/.well-known/jwks.json", server.base_url);
    let cache = Mutex::new(JwksCache::new(600_000, 30_000));
    let verifier = Verifier::new(None);
    let verify = |token: &str, now: i64| {
        block_on(verify_with_remote_jwks(
            &NativeClient,
            &url,
            &cache,
            &verifier,
            token,
            now,
        ))
    };

    // Cold start: one fetch, the old key verifies.
    assert!(verify(&es256(1, "old"), T0).is_ok());
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.requests()[0].path(), "/auth/v1/.well-known/jwks.json");

    // 40 s later a token signed with the rotated-in key: one refetch, accepted.
    let claims = verify(&es256(2, "new"), T0 + 40_000).unwrap();
    assert_eq!(claims.sub(), Some("u-1"));
    assert_eq!(server.requests().len(), 2);

    // Now cached: no further fetches for either key.
    assert!(verify(&es256(2, "new"), T0 + 41_000).is_ok());
    assert!(verify(&es256(1, "old"), T0 + 42_000).is_ok());
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn made_up_kids_cannot_force_a_fetch_per_request() {
    let server = rotating_server();
    let url = format!("{}/jwks", server.base_url);
    let cache = Mutex::new(JwksCache::new(600_000, 30_000));
    let verifier = Verifier::new(None);
    let verify = |token: &str, now: i64| {
        block_on(verify_with_remote_jwks(
            &NativeClient,
            &url,
            &cache,
            &verifier,
            token,
            now,
        ))
    };

    assert!(verify(&es256(1, "old"), T0).is_ok());
    // The first unknown kid right after a fetch: no refetch (we just fetched).
    for i in 0..20 {
        let r = verify(&es256(3, &format!("bogus-{i}")), T0 + 1_000 + i);
        assert_eq!(r.unwrap_err(), AuthError::Token(JwtError::UnknownKid));
    }
    assert_eq!(server.requests().len(), 1);
    // After the minimum interval, one refetch; it still lacks the kid.
    assert_eq!(
        verify(&es256(3, "bogus-x"), T0 + 31_000).unwrap_err(),
        AuthError::Token(JwtError::UnknownKid)
    );
    assert_eq!(server.requests().len(), 2);
    assert_eq!(
        verify(&es256(3, "bogus-y"), T0 + 32_000).unwrap_err(),
        AuthError::Token(JwtError::UnknownKid)
    );
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn auth_server_failure_with_nothing_cached_is_a_503_not_a_401() {
    let server = FakeServer::start(|_, _| json_response(500, r#"{"error":"down"}"#));
    let cache = Mutex::new(JwksCache::default());
    let err = block_on(verify_with_remote_jwks(
        &NativeClient,
        &format!("{}/jwks", server.base_url),
        &cache,
        &Verifier::new(None),
        &es256(1, "old"),
        T0,
    ))
    .unwrap_err();
    assert_eq!(err, AuthError::KeysUnavailable);
    let api: ApiError = err.into();
    assert_eq!((api.status(), api.code()), (503, "auth_keys_unavailable"));
}

#[test]
fn stale_keys_are_served_while_the_auth_server_is_down() {
    let server = FakeServer::start(|_, idx| {
        if idx == 0 {
            json_response(200, &json!({ "keys": [jwk(1, "old")] }).to_string())
        } else {
            json_response(503, "{}")
        }
    });
    let url = format!("{}/jwks", server.base_url);
    let cache = Mutex::new(JwksCache::new(600_000, 30_000));
    let verifier = Verifier::new(None);
    assert!(block_on(verify_with_remote_jwks(
        &NativeClient,
        &url,
        &cache,
        &verifier,
        &es256(1, "old"),
        T0
    ))
    .is_ok());
    // Past the TTL the refresh fails, the stale set still verifies.
    let later = T0 + 700_000;
    assert!(block_on(verify_with_remote_jwks(
        &NativeClient,
        &url,
        &cache,
        &verifier,
        &es256(1, "old"),
        later
    ))
    .is_ok());
    assert_eq!(server.requests().len(), 2);
    // And the failure is not retried on every request.
    assert!(block_on(verify_with_remote_jwks(
        &NativeClient,
        &url,
        &cache,
        &verifier,
        &es256(1, "old"),
        later + 1
    ))
    .is_ok());
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn hs256_tokens_never_fetch_keys() {
    let server = rotating_server();
    let secret = b"local-secret-local-secret-local-secret".to_vec();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(json!({"role": "anon", "exp": T0 / 1000 + 60}).to_string());
    let input = format!("{header}.{payload}");
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
    mac.update(input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    let cache = Mutex::new(JwksCache::default());
    let claims = block_on(verify_with_remote_jwks(
        &NativeClient,
        &format!("{}/jwks", server.base_url),
        &cache,
        &Verifier::new(Some(secret)),
        &token,
        T0,
    ))
    .unwrap();
    assert_eq!(claims.role(), Some("anon"));
    assert!(server.requests().is_empty());
}
