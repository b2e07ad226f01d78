use serde_json::{json, Value};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::test_keys::*;
use super::*;

const NOW: i64 = 1_800_000_000;
const SECRET: &[u8] = b"super-secret-jwt-token-with-at-least-32-characters-long";

fn user_claims() -> Value {
    json!({
        "sub": "7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a10",
        "role": "authenticated",
        "aud": "authenticated",
        "iss": "https://abcd.supabase.co/auth/v1",
        "email": "ada@example.com",
        "app_metadata": {"provider": "email", "plan": "pro"},
        "iat": NOW - 60,
        "exp": NOW + 3600,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// What a function on project `abcd` derives from its environment.
fn project_policy() -> TokenPolicy {
    TokenPolicy::from_lookup(|k| (k == "SUPABASE_URL").then(|| "https://abcd.supabase.co/".to_string()))
}

fn principal_of(claims: &Value) -> Result<Principal, JwtError> {
    Principal::from_claims(&verify_hs(&hs256(SECRET, claims))?, &project_policy())
}

fn hs_verifier() -> Verifier {
    Verifier::new(Some(SECRET.to_vec()))
}

fn key_set() -> Jwks {
    Jwks::parse(&jwks(&[ec_jwk(&ec_key(1), "ec-1"), rsa_jwk("rsa-1")])).unwrap()
}

fn verify_hs(token: &str) -> Result<Claims, JwtError> {
    hs_verifier().verify(token, None, NOW)
}

fn verify_asym(token: &str) -> Result<Claims, JwtError> {
    Verifier::new(None).verify(token, Some(&key_set()), NOW)
}

#[test]
fn valid_hs256_token_yields_its_claims_and_principal() {
    let token = hs256(SECRET, &user_claims());
    let claims = verify_hs(&token).unwrap();
    assert_eq!(claims.sub(), Some("7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a10"));
    assert_eq!(claims.exp(), NOW + 3600);
    let p = hs_verifier().principal(&token, None, NOW, &project_policy()).unwrap();
    assert_eq!(p.user_id.as_deref(), Some("7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a10"));
    assert_eq!(p.role, "authenticated");
    assert_eq!(p.email.as_deref(), Some("ada@example.com"));
    assert_eq!(p.app_metadata["plan"], "pro");
    assert!(!p.is_service_role);
    assert!(p.is_authenticated());
}

#[test]
fn valid_es256_token_verifies_against_the_jwks() {
    let token = es256(&ec_key(1), "ec-1", &user_claims());
    assert_eq!(verify_asym(&token).unwrap().role(), Some("authenticated"));
}

#[test]
fn valid_rs256_token_verifies_against_the_jwks() {
    let token = rs256("rsa-1", &user_claims());
    assert_eq!(verify_asym(&token).unwrap().email(), Some("ada@example.com"));
}

#[test]
fn fractional_numeric_dates_are_accepted() {
    let token = hs256(SECRET, &with(user_claims(), "exp", json!((NOW + 10) as f64 + 0.5)));
    assert_eq!(verify_hs(&token).unwrap().exp(), NOW + 10);
}

#[test]
fn alg_none_is_rejected_in_any_spelling() {
    for alg in ["none", "None", "NONE"] {
        let token = make_token(&json!({"alg": alg}), &user_claims(), |_| Vec::new());
        assert_eq!(verify_hs(&token), Err(JwtError::AlgNone), "{alg}");
        assert_eq!(verify_asym(&token), Err(JwtError::AlgNone), "{alg}");
    }
}

#[test]
fn algorithms_outside_the_allow_list_are_rejected() {
    for alg in ["HS512", "HS384", "RS512", "PS256", "ES384", "EdDSA", "hs256"] {
        let token = make_token(&json!({"alg": alg, "kid": "ec-1"}), &user_claims(), |m| hmac(SECRET, m));
        assert_eq!(verify_hs(&token), Err(JwtError::AlgNotAllowed), "{alg}");
    }
}

#[test]
fn hs256_is_rejected_when_no_project_secret_is_configured() {
    let token = hs256(SECRET, &user_claims());
    assert_eq!(verify_asym(&token), Err(JwtError::AlgNotAllowed));
}

#[test]
fn asymmetric_tokens_are_rejected_when_no_jwks_is_given() {
    let token = es256(&ec_key(1), "ec-1", &user_claims());
    assert_eq!(verify_hs(&token), Err(JwtError::AlgNotAllowed));
}

#[test]
fn hs256_token_signed_with_a_public_key_naming_that_key_is_a_key_mismatch() {
    // The classic confusion: use the published RSA modulus as an HMAC secret.
    let public = rsa_jwk("rsa-1")["n"].as_str().unwrap().as_bytes().to_vec();
    let token = make_token(&json!({"alg": "HS256", "kid": "rsa-1"}), &user_claims(), |m| {
        hmac(&public, m)
    });
    let verifier = hs_verifier();
    assert_eq!(
        verifier.verify(&token, Some(&key_set()), NOW),
        Err(JwtError::KeyMismatch)
    );
}

#[test]
fn hs256_token_signed_with_a_public_key_without_kid_fails_the_signature() {
    let public = rsa_jwk("rsa-1")["n"].as_str().unwrap().as_bytes().to_vec();
    let token = hs256(&public, &user_claims());
    assert_eq!(
        hs_verifier().verify(&token, Some(&key_set()), NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn token_whose_alg_does_not_fit_the_named_key_type_is_a_key_mismatch() {
    // An RS256 token naming the EC key, and an ES256 token naming the RSA key.
    let token1 = rs256("ec-1", &user_claims());
    assert_eq!(verify_asym(&token1), Err(JwtError::KeyMismatch));
    let token2 = es256(&ec_key(1), "rsa-1", &user_claims());
    assert_eq!(verify_asym(&token2), Err(JwtError::KeyMismatch));
}

#[test]
fn token_whose_alg_differs_from_the_jwk_declared_alg_is_a_key_mismatch() {
    let mut jwk = rsa_jwk("rsa-1");
    jwk["alg"] = json!("RS384");
    let set = Jwks::parse(&jwks(&[jwk])).unwrap();
    let token = rs256("rsa-1", &user_claims());
    assert_eq!(
        Verifier::new(None).verify(&token, Some(&set), NOW),
        Err(JwtError::KeyMismatch)
    );
}

#[test]
fn tampered_payload_fails_the_signature() {
    let token = hs256(SECRET, &user_claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(with(user_claims(), "role", json!("service_role")).to_string());
    assert_eq!(verify_hs(&parts.join(".")), Err(JwtError::BadSignature));

    let token = es256(&ec_key(1), "ec-1", &user_claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(with(user_claims(), "sub", json!("someone-else")).to_string());
    assert_eq!(verify_asym(&parts.join(".")), Err(JwtError::BadSignature));
}

#[test]
fn token_signed_by_a_different_key_fails_the_signature() {
    let token = hs256(b"another-secret-of-reasonable-length-000000", &user_claims());
    assert_eq!(verify_hs(&token), Err(JwtError::BadSignature));
    let token = es256(&ec_key(2), "ec-1", &user_claims());
    assert_eq!(verify_asym(&token), Err(JwtError::BadSignature));
}

#[test]
fn signature_of_the_wrong_shape_fails_the_signature() {
    let token = make_token(&json!({"alg": "ES256", "kid": "ec-1"}), &user_claims(), |_| {
        vec![7u8; 70]
    });
    assert_eq!(verify_asym(&token), Err(JwtError::BadSignature));
    let token = make_token(&json!({"alg": "RS256", "kid": "rsa-1"}), &user_claims(), |_| {
        vec![7u8; 64]
    });
    assert_eq!(verify_asym(&token), Err(JwtError::BadSignature));
    let unsigned = hs256(SECRET, &user_claims());
    let cut = &unsigned[..unsigned.rfind('.').unwrap() + 1];
    assert_eq!(verify_hs(cut), Err(JwtError::BadSignature));
}

#[test]
fn truncated_or_oversized_tokens_are_malformed() {
    let token = hs256(SECRET, &user_claims());
    let two_parts = &token[..token.rfind('.').unwrap()];
    assert_eq!(verify_hs(two_parts), Err(JwtError::Malformed));
    assert_eq!(verify_hs(""), Err(JwtError::Malformed));
    assert_eq!(verify_hs("a.b.c.d"), Err(JwtError::Malformed));
    assert_eq!(verify_hs(&format!(".{token}")), Err(JwtError::Malformed));
    let huge = hs256(SECRET, &with(user_claims(), "pad", json!("x".repeat(MAX_TOKEN_LEN))));
    assert_eq!(verify_hs(&huge), Err(JwtError::Malformed));
}

#[test]
fn garbage_base64_is_a_bad_encoding() {
    assert_eq!(verify_hs("!!!.???.***"), Err(JwtError::BadEncoding));
    let token = hs256(SECRET, &user_claims());
    let (head, _) = token.split_once('.').unwrap();
    assert_eq!(verify_hs(&format!("{head}.pay*load.c2ln")), Err(JwtError::BadEncoding));
    // Padding is not part of JWS's base64url.
    assert_eq!(verify_hs(&format!("{head}.e30=.c2ln")), Err(JwtError::BadEncoding));
}

#[test]
fn unusable_headers_are_bad_headers() {
    let claims = user_claims();
    let not_json = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode("not json"),
        URL_SAFE_NO_PAD.encode("{}")
    );
    assert_eq!(verify_hs(&not_json), Err(JwtError::BadHeader));
    for header in [
        json!({"typ": "JWT"}),
        json!({"alg": 256}),
        json!({"alg": "HS256", "kid": 5}),
        json!({"alg": "HS256", "crit": ["exp"]}),
    ] {
        let t = make_token(&header, &claims, |m| hmac(SECRET, m));
        assert_eq!(verify_hs(&t), Err(JwtError::BadHeader), "{header}");
    }
}

#[test]
fn signed_payload_that_is_not_a_claims_object_is_bad_claims() {
    for claims in [
        json!([1, 2]),
        json!("x"),
        with(user_claims(), "exp", json!("tomorrow")),
        with(user_claims(), "sub", json!(42)),
    ] {
        assert_eq!(verify_hs(&hs256(SECRET, &claims)), Err(JwtError::BadClaims), "{claims}");
    }
}

#[test]
fn token_without_expiry_is_refused() {
    let mut claims = user_claims();
    claims.as_object_mut().unwrap().remove("exp");
    assert_eq!(verify_hs(&hs256(SECRET, &claims)), Err(JwtError::MissingExp));
}

#[test]
fn expiry_is_enforced_with_leeway() {
    let just_inside = hs256(
        SECRET,
        &with(user_claims(), "exp", json!(NOW - DEFAULT_LEEWAY_SECS + 1)),
    );
    assert!(verify_hs(&just_inside).is_ok());
    let at_edge = hs256(SECRET, &with(user_claims(), "exp", json!(NOW - DEFAULT_LEEWAY_SECS)));
    assert_eq!(verify_hs(&at_edge), Err(JwtError::Expired));
    let strict = hs_verifier().with_leeway(0);
    let exp_now = hs256(SECRET, &with(user_claims(), "exp", json!(NOW)));
    assert_eq!(strict.verify(&exp_now, None, NOW), Err(JwtError::Expired));
}

#[test]
fn not_before_is_enforced_with_leeway() {
    let soon = hs256(SECRET, &with(user_claims(), "nbf", json!(NOW + DEFAULT_LEEWAY_SECS)));
    assert!(verify_hs(&soon).is_ok());
    let later = hs256(
        SECRET,
        &with(user_claims(), "nbf", json!(NOW + DEFAULT_LEEWAY_SECS + 1)),
    );
    assert_eq!(verify_hs(&later), Err(JwtError::NotYetValid));
}

#[test]
fn issued_at_in_the_future_beyond_leeway_is_refused() {
    let skewed = hs256(SECRET, &with(user_claims(), "iat", json!(NOW + 10)));
    assert!(verify_hs(&skewed).is_ok());
    let future = hs256(
        SECRET,
        &with(user_claims(), "iat", json!(NOW + DEFAULT_LEEWAY_SECS + 1)),
    );
    assert_eq!(verify_hs(&future), Err(JwtError::IssuedInFuture));
}

#[test]
fn unknown_kid_is_distinguishable() {
    let token = es256(&ec_key(3), "rotated-in", &user_claims());
    assert_eq!(verify_asym(&token), Err(JwtError::UnknownKid));
}

#[test]
fn missing_kid_is_only_accepted_when_one_key_fits() {
    let claims = user_claims();
    let no_kid = make_token(&json!({"alg": "ES256"}), &claims, |m| {
        let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(&ec_key(1), m);
        sig.to_bytes().to_vec()
    });
    // One EC key in the set: unambiguous.
    assert!(verify_asym(&no_kid).is_ok());
    let two_ec = Jwks::parse(&jwks(&[ec_jwk(&ec_key(1), "a"), ec_jwk(&ec_key(2), "b")])).unwrap();
    assert_eq!(
        Verifier::new(None).verify(&no_kid, Some(&two_ec), NOW),
        Err(JwtError::MissingKid)
    );
}

#[test]
fn every_rejection_has_its_own_code_and_is_a_401() {
    let all = [
        JwtError::Malformed,
        JwtError::BadEncoding,
        JwtError::BadHeader,
        JwtError::BadClaims,
        JwtError::AlgNone,
        JwtError::AlgNotAllowed,
        JwtError::KeyMismatch,
        JwtError::MissingKid,
        JwtError::UnknownKid,
        JwtError::BadSignature,
        JwtError::MissingExp,
        JwtError::Expired,
        JwtError::NotYetValid,
        JwtError::IssuedInFuture,
        JwtError::RoleNotAllowed,
        JwtError::MissingSubject,
        JwtError::BadSubject,
        JwtError::BadAudience,
        JwtError::BadIssuer,
    ];
    let codes: std::collections::BTreeSet<&str> = all.iter().map(|e| e.code()).collect();
    assert_eq!(codes.len(), all.len());
    for e in all {
        let api: ApiError = e.into();
        assert_eq!(api.status(), 401);
        assert_eq!(api.code(), e.code());
        assert!(api.code().starts_with("token_"));
    }
}

#[test]
fn principal_distinguishes_the_three_roles() {
    let anon = Principal::from_claims(
        &verify_hs(&hs256(SECRET, &json!({"role": "anon", "exp": NOW + 5}))).unwrap(),
        &project_policy(),
    )
    .unwrap();
    assert_eq!(
        (anon.user_id.clone(), anon.role.as_str(), anon.is_service_role),
        (None, "anon", false)
    );
    assert_eq!(anon.app_metadata, Value::Null);
    let svc = Principal::from_claims(
        &verify_hs(&hs256(SECRET, &json!({"role": "service_role", "exp": NOW + 5}))).unwrap(),
        &project_policy(),
    )
    .unwrap();
    assert!(svc.is_service_role);
    assert!(!svc.is_authenticated());
}

#[test]
fn principal_refuses_other_roles_and_subjectless_users() {
    for role in [json!("postgres"), json!("supabase_admin"), Value::Null] {
        let claims = verify_hs(&hs256(SECRET, &with(user_claims(), "role", role))).unwrap();
        assert_eq!(
            Principal::from_claims(&claims, &project_policy()),
            Err(JwtError::RoleNotAllowed)
        );
    }
    let mut no_sub = user_claims();
    no_sub.as_object_mut().unwrap().remove("sub");
    let claims = verify_hs(&hs256(SECRET, &no_sub)).unwrap();
    assert_eq!(
        Principal::from_claims(&claims, &project_policy()),
        Err(JwtError::MissingSubject)
    );
}

#[test]
fn user_token_whose_subject_is_not_a_uuid_is_a_bad_subject() {
    for sub in [
        "not-a-uuid",
        "7d3c9c5e4f7e4a599a510e6f0d7c9a10",
        "7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a10 ",
    ] {
        assert_eq!(
            principal_of(&with(user_claims(), "sub", json!(sub))),
            Err(JwtError::BadSubject),
            "{sub}"
        );
    }
    let huge = "a".repeat(10_000);
    assert_eq!(
        principal_of(&with(user_claims(), "sub", json!(huge))),
        Err(JwtError::BadSubject)
    );
    // Upper-case hex is still the same user, keyed one way.
    let upper = principal_of(&with(
        user_claims(),
        "sub",
        json!("7D3C9C5E-4F7E-4A59-9A51-0E6F0D7C9A10"),
    ))
    .unwrap();
    assert_eq!(upper.user_id.as_deref(), Some("7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a10"));
}

#[test]
fn user_token_needs_an_accepted_audience() {
    for aud in [
        json!("some-other-service"),
        json!(""),
        json!(7),
        json!(["x", "y"]),
        Value::Null,
    ] {
        assert_eq!(
            principal_of(&with(user_claims(), "aud", aud.clone())),
            Err(JwtError::BadAudience),
            "{aud}"
        );
    }
    let mut no_aud = user_claims();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(principal_of(&no_aud), Err(JwtError::BadAudience));
    // RFC 7519 allows a list; one accepted entry is enough.
    assert!(principal_of(&with(user_claims(), "aud", json!(["other", "authenticated"]))).is_ok());
}

#[test]
fn accepted_audiences_are_configurable() {
    let policy = TokenPolicy::from_lookup(|k| (k == "JWT_AUDIENCES").then(|| " mobile , web ".to_string()));
    let claims = |aud: &str| verify_hs(&hs256(SECRET, &with(user_claims(), "aud", json!(aud)))).unwrap();
    assert!(Principal::from_claims(&claims("web"), &policy).is_ok());
    assert!(Principal::from_claims(&claims("mobile"), &policy).is_ok());
    assert_eq!(
        Principal::from_claims(&claims("authenticated"), &policy),
        Err(JwtError::BadAudience)
    );
    // Blank means unset, not "accept nothing".
    let blank = TokenPolicy::from_lookup(|k| (k == "JWT_AUDIENCES").then(|| " , ".to_string()));
    assert_eq!(blank, TokenPolicy::default());
}

#[test]
fn user_token_from_another_issuer_is_refused_when_the_project_url_is_known() {
    for iss in [
        json!("https://other.supabase.co/auth/v1"),
        json!("https://abcd.supabase.co"),
        json!("supabase"),
    ] {
        assert_eq!(
            principal_of(&with(user_claims(), "iss", iss.clone())),
            Err(JwtError::BadIssuer),
            "{iss}"
        );
    }
    let mut no_iss = user_claims();
    no_iss.as_object_mut().unwrap().remove("iss");
    assert_eq!(principal_of(&no_iss), Err(JwtError::BadIssuer));
    assert!(principal_of(&with(user_claims(), "iss", json!("https://abcd.supabase.co/auth/v1/"))).is_ok());
    // Without SUPABASE_URL or JWT_ISSUERS there is nothing to compare with.
    let claims = verify_hs(&hs256(SECRET, &no_iss)).unwrap();
    assert!(Principal::from_claims(&claims, &TokenPolicy::from_lookup(|_| None)).is_ok());
    // JWT_ISSUERS wins over SUPABASE_URL (a custom auth domain).
    let custom = TokenPolicy::from_lookup(|k| match k {
        "JWT_ISSUERS" => Some("https://auth.example.com/auth/v1".to_string()),
        "SUPABASE_URL" => Some("https://abcd.supabase.co".to_string()),
        _ => None,
    });
    let claims = verify_hs(&hs256(SECRET, &user_claims())).unwrap();
    assert_eq!(Principal::from_claims(&claims, &custom), Err(JwtError::BadIssuer));
    let claims = verify_hs(&hs256(
        SECRET,
        &with(user_claims(), "iss", json!("https://auth.example.com/auth/v1")),
    ))
    .unwrap();
    assert!(Principal::from_claims(&claims, &custom).is_ok());
}

#[test]
fn api_key_roles_carry_no_audience_and_no_subject() {
    // What Supabase's keys look like: accepted.
    for role in ["anon", "service_role"] {
        let key = json!({"iss": "supabase", "ref": "abcd", "role": role, "iat": NOW - 60, "exp": NOW + 3600});
        assert_eq!(principal_of(&key).unwrap().role, role);
    }
    // A service_role claim on a user-shaped token is not the service role.
    let disguised = with(user_claims(), "role", json!("service_role"));
    assert_eq!(principal_of(&disguised), Err(JwtError::BadAudience));
    let svc = json!({"role": "service_role", "exp": NOW + 5});
    assert_eq!(
        principal_of(&with(svc.clone(), "aud", json!("service_role"))),
        Err(JwtError::BadAudience)
    );
    assert_eq!(
        principal_of(&with(svc, "sub", json!("7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a10"))),
        Err(JwtError::BadSubject)
    );
    let anon = json!({"role": "anon", "exp": NOW + 5});
    assert_eq!(
        principal_of(&with(anon, "aud", json!("authenticated"))),
        Err(JwtError::BadAudience)
    );
}

#[test]
fn verifier_debug_output_does_not_contain_the_secret() {
    let shown = format!("{:?}", hs_verifier());
    assert!(!shown.contains("super-secret"));
    assert!(shown.contains("redacted"));
}

#[test]
fn empty_secret_counts_as_no_secret() {
    let v = Verifier::new(Some(Vec::new()));
    assert!(!v.has_hs_secret());
    assert_eq!(
        v.verify(&hs256(b"", &user_claims()), None, NOW),
        Err(JwtError::AlgNotAllowed)
    );
}

#[test]
fn jwks_parse_skips_keys_it_cannot_use() {
    let ec = ec_jwk(&ec_key(1), "ok-ec");
    let mut off_curve = ec.clone();
    off_curve["y"] = off_curve["x"].clone();
    let mut enc = ec.clone();
    enc["use"] = json!("enc");
    let mut p384 = ec.clone();
    p384["crv"] = json!("P-384");
    let mut weak_rsa = rsa_jwk("weak");
    let n = URL_SAFE_NO_PAD.decode(weak_rsa["n"].as_str().unwrap()).unwrap();
    weak_rsa["n"] = json!(URL_SAFE_NO_PAD.encode(&n[..128]));
    let set = Jwks::parse(&jwks(&[
        ec,
        rsa_jwk("ok-rsa"),
        off_curve,
        enc,
        p384,
        weak_rsa,
        json!({"kty": "oct", "k": "c2VjcmV0"}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}),
        json!("not an object"),
    ]))
    .unwrap();
    let kids: Vec<_> = set.keys().iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids, ["ok-ec", "ok-rsa"]);
    assert_eq!(set.skipped(), 7);
    assert_eq!(set.keys()[0].kind(), JwkKind::EcP256);
}

#[test]
fn jwks_parse_rejects_documents_without_a_key_array() {
    assert_eq!(Jwks::parse("{").unwrap_err(), JwksError::NotJson);
    assert_eq!(Jwks::parse(r#"{"keys": {}}"#).unwrap_err(), JwksError::NoKeys);
    assert_eq!(Jwks::parse("[]").unwrap_err(), JwksError::NoKeys);
    assert!(Jwks::parse(r#"{"keys": []}"#).unwrap().keys().is_empty());
}

#[test]
fn jwks_cache_fetches_when_empty_and_when_stale() {
    let mut cache = JwksCache::new(600_000, 30_000);
    assert!(cache.needs_fetch(0));
    cache.store(Jwks::default(), 1_000);
    assert!(!cache.needs_fetch(1_000 + 599_999));
    assert!(cache.needs_fetch(1_000 + 600_000));
    // A failed refresh of a stale set waits out the minimum interval.
    cache.record_failure(700_000);
    assert!(!cache.needs_fetch(700_000 + 29_999));
    assert!(cache.needs_fetch(700_000 + 30_000));
}

#[test]
fn jwks_cache_with_no_keys_always_wants_a_fetch() {
    let mut cache = JwksCache::default();
    cache.record_failure(5_000);
    assert!(cache.needs_fetch(5_001));
}

#[test]
fn jwks_cache_allows_one_unknown_kid_refetch_per_interval() {
    let mut cache = JwksCache::new(600_000, 30_000);
    cache.store(Jwks::default(), 0);
    assert!(!cache.should_refetch_for_unknown_kid(10_000));
    assert!(cache.should_refetch_for_unknown_kid(30_000));
    cache.begin_fetch(30_000);
    // However many different kids arrive, nothing more for 30 s.
    assert!(!cache.should_refetch_for_unknown_kid(30_001));
    assert!(!cache.should_refetch_for_unknown_kid(59_999));
    assert!(cache.should_refetch_for_unknown_kid(60_000));
    // A clock that jumped backwards does not lock refetching out.
    assert!(cache.should_refetch_for_unknown_kid(1_000));
}

#[test]
fn jwks_url_is_under_auth_v1() {
    assert_eq!(
        jwks_url("https://abc.supabase.co/"),
        "https://abc.supabase.co/auth/v1/.well-known/jwks.json"
    );
}
