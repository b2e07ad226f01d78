//! The workspace pins `idna_adapter` to 1.0.x (Cargo.lock): IDNA without
//! Unicode tables, about 49 KB less gzipped wasm per function. The URL crate
//! then takes ASCII hosts (punycode `xn--` labels included) and refuses a host
//! with non-ASCII characters. Our outbound hosts (SUPABASE_URL, provider APIs,
//! S3 endpoints) are ASCII; such a host must fail as a clear error, never a
//! panic. Outbound `fetch` URLs are parsed by the JS host, which keeps full IDNA.

use edgeworks_db::{Db, DbError};
use edgeworks_testkit::{block_on, json_response, FakeServer};
use serde_json::Value;

#[test]
fn a_non_ascii_host_is_a_clear_error_not_a_panic() {
    let err = url::Url::parse("https://bücher.example/rest/v1").unwrap_err();
    assert_eq!(
        err,
        url::ParseError::IdnaError,
        "ASCII-only IDNA refuses a Unicode host"
    );

    let db = Db::new(
        edgeworks_testkit::NativeClient,
        "https://bücher.example/rest/v1",
        "k",
        "t",
    );
    let err = block_on(db.rpc::<Value>("claim_jobs", &serde_json::json!({}))).unwrap_err();
    match &err {
        DbError::Decode(msg) => assert!(msg.starts_with("could not build query"), "{msg}"),
        other => panic!("expected a build error, got {other:?}"),
    }
}

#[test]
fn ascii_and_punycode_hosts_still_parse() {
    for u in [
        "https://abcdefghijklmnop.supabase.co/rest/v1",
        "https://generativelanguage.googleapis.com/v1beta/models",
        "https://s3.eu-central-1.amazonaws.com/bucket/key",
        "https://xn--bcher-kva.example/rest/v1",
        "http://127.0.0.1:54321/rest/v1",
        "https://EXAMPLE.com/",
    ] {
        let parsed = url::Url::parse(u).unwrap_or_else(|e| panic!("{u}: {e}"));
        assert!(parsed.host_str().unwrap().is_ascii());
    }
    assert_eq!(
        url::Url::parse("https://EXAMPLE.com/").unwrap().host_str(),
        Some("example.com")
    );
}

#[test]
fn an_ascii_rest_url_still_reaches_postgrest() {
    let server = FakeServer::start(|_, _| json_response(200, "{\"ok\":true}"));
    let db = Db::new(
        edgeworks_testkit::NativeClient,
        &format!("{}/rest/v1", server.base_url),
        "k",
        "t",
    );
    let v: Value = block_on(db.rpc("claim_jobs", &serde_json::json!({}))).unwrap();
    assert_eq!(v["ok"], true);
}
