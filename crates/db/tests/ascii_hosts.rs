//! The PostgREST base URL (`{SUPABASE_URL}/rest/v1`) is checked by our own
//! small parser (crates/db/src/query.rs), not the `url` crate: no URL or IDNA
//! tables in the wasm. Hosts must be ASCII (punycode `xn--` labels included);
//! a host with non-ASCII characters is a clear error when a query is sent,
//! never a panic. Outbound `fetch` URLs are parsed by the JS host, which keeps
//! full IDNA.

use edgeworks_db::{parse_base_url, Db, DbError};
use edgeworks_testkit::{block_on, json_response, FakeServer};
use serde_json::Value;

#[test]
fn a_non_ascii_host_is_a_clear_error_not_a_panic() {
    assert!(parse_base_url("https://bücher.example/rest/v1").is_err());

    let db = Db::new(
        edgeworks_testkit::NativeClient,
        "https://bücher.example/rest/v1",
        "k",
        "t",
    );
    let err = block_on(db.rpc::<Value>("claim_jobs", &serde_json::json!({}))).unwrap_err();
    match &err {
        DbError::Decode(msg) => {
            assert!(msg.starts_with("could not build query"), "{msg}");
            assert!(msg.contains("ASCII"), "{msg}");
        }
        other => panic!("expected a build error, got {other:?}"),
    }
    assert_eq!(edgeworks_core::ApiError::from(err).status(), 500);
}

#[test]
fn ascii_and_punycode_hosts_still_parse() {
    for u in [
        "https://abcdefghijklmnop.supabase.co/rest/v1",
        "https://xn--bcher-kva.example/rest/v1",
        "http://127.0.0.1:54321/rest/v1",
        "http://localhost:54321/rest/v1",
        "https://EXAMPLE.com/",
    ] {
        let parsed = parse_base_url(u).unwrap_or_else(|e| panic!("{u}: {e}"));
        assert!(parsed.is_ascii());
    }
    assert_eq!(
        parse_base_url("https://EXAMPLE.com/").as_deref(),
        Ok("https://example.com")
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
