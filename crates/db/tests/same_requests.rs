//! The requests our builder makes are the ones postgrest-rs 1.6 made (through
//! reqwest and url) before it left: the expected strings were produced by
//! postgrest-rs for the same chains and are kept as literals, with one
//! deliberate change: a space in a query value is `%20` where postgrest-rs
//! wrote `+` (the local stack's postrust-server does not read `+` as a space;
//! `tests/live_postgrest.rs`). Headers are compared sorted (their order means
//! nothing to PostgREST).

use edgeworks_db::{parse_base_url, query_encode, Builder, Db};
use edgeworks_testkit::NativeClient;

const BASE: &str = "http://127.0.0.1:54321/rest/v1";
/// Everything that could break out of a value: separators, escapes, quotes,
/// PostgREST's own syntax, non-ASCII and control characters.
const ADV: &str = "a b,c(d)'e\"f&g=h#i%j+k/l?m;n:o@p~q*r-s.t_u\\v\u{e9}\u{1F600}\t\r\n\u{1}x";

fn show(b: Builder) -> String {
    let r = b.build().unwrap();
    let mut h: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    h.sort();
    format!(
        "{} {}\n{}\n{}",
        r.method.as_str(),
        r.url,
        h.join("\n"),
        String::from_utf8(r.body).unwrap()
    )
}

#[test]
fn every_chain_makes_the_request_postgrest_rs_made() {
    let db = Db::new(NativeClient, BASE, "anon-key", "user-jwt");
    let cases: Vec<(Builder, &str)> = vec![
        (
            db.from("jobs").select("id,status").eq("status", "pending").limit(3),
            r#"GET http://127.0.0.1:54321/rest/v1/jobs?select=id%2Cstatus&status=eq.pending
accept: application/json
apikey: anon-key
authorization: Bearer user-jwt
range-unit: items
range: 0-2
"#,
        ),
        (
            db.from("pipeline_predictions")
                .select("*")
                .eq("id", "1")
                .eq("user_id", "u"),
            r#"GET http://127.0.0.1:54321/rest/v1/pipeline_predictions?select=*&id=eq.1&user_id=eq.u
accept: application/json
apikey: anon-key
authorization: Bearer user-jwt
"#,
        ),
        (
            db.from("oauth_connections")
                .select("*")
                .eq("user_id", "u")
                .order("platform"),
            r#"GET http://127.0.0.1:54321/rest/v1/oauth_connections?select=*&user_id=eq.u&order=platform
accept: application/json
apikey: anon-key
authorization: Bearer user-jwt
"#,
        ),
        (
            db.from("messages")
                .select("role,content")
                .eq("conversation_id", "c")
                .eq("user_id", "u")
                .in_("status", ["complete", "stopped"])
                .neq("content", "")
                .order("created_at.desc,role.asc")
                .limit(100),
            r#"GET http://127.0.0.1:54321/rest/v1/messages?select=role%2Ccontent&conversation_id=eq.c&user_id=eq.u&status=in.%28complete%2Cstopped%29&content=neq.&order=created_at.desc%2Crole.asc
accept: application/json
apikey: anon-key
authorization: Bearer user-jwt
range-unit: items
range: 0-99
"#,
        ),
        (
            db.from("code_executions").insert("{\"a\":1}").select("id"),
            r#"POST http://127.0.0.1:54321/rest/v1/code_executions?select=id
accept: application/json
apikey: anon-key
authorization: Bearer user-jwt
content-type: application/json
prefer: return=representation
{"a":1}"#,
        ),
        (
            db.from("file_uploads")
                .eq("id", "x")
                .update("{\"s\":\"y\"}")
                .select("id,status"),
            r#"PATCH http://127.0.0.1:54321/rest/v1/file_uploads?id=eq.x&select=id%2Cstatus
accept: application/json
apikey: anon-key
authorization: Bearer user-jwt
content-type: application/json
prefer: return=representation
{"s":"y"}"#,
        ),
        (
            db.from("file_uploads").eq("id", "x").delete(),
            r#"DELETE http://127.0.0.1:54321/rest/v1/file_uploads?id=eq.x
accept: application/json
apikey: anon-key
authorization: Bearer user-jwt
content-type: application/json
prefer: return=representation
"#,
        ),
        (
            db.from("t")
                .eq("name", ADV)
                .neq(ADV, ADV)
                .in_("c", [ADV, "b"])
                .select(ADV)
                .order(ADV),
            r#"GET http://127.0.0.1:54321/rest/v1/t?name=eq.a%20b%2Cc%28d%29%27e%22f%26g%3Dh%23i%25j%2Bk%2Fl%3Fm%3Bn%3Ao%40p%7Eq*r-s.t_u%5Cv%C3%A9%F0%9F%98%80%09%0D%0A%01x&a%20b%2Cc%28d%29%27e%22f%26g%3Dh%23i%25j%2Bk%2Fl%3Fm%3Bn%3Ao%40p%7Eq*r-s.t_u%5Cv%C3%A9%F0%9F%98%80%09%0D%0A%01x=neq.a%20b%2Cc%28d%29%27e%22f%26g%3Dh%23i%25j%2Bk%2Fl%3Fm%3Bn%3Ao%40p%7Eq*r-s.t_u%5Cv%C3%A9%F0%9F%98%80%09%0D%0A%01x&c=in.%28a%20b%2Cc%28d%29%27e%22f%26g%3Dh%23i%25j%2Bk%2Fl%3Fm%3Bn%3Ao%40p%7Eq*r-s.t_u%5Cv%C3%A9%F0%9F%98%80%09%0D%0A%01x%2Cb%29&select=a%20b%2Cc%28d%29%27e%22f%26g%3Dh%23i%25j%2Bk%2Fl%3Fm%3Bn%3Ao%40p%7Eq*r-s.t_u%5Cv%C3%A9%F0%9F%98%80%09%0D%0A%01x&order=a%20b%2Cc%28d%29%27e%22f%26g%3Dh%23i%25j%2Bk%2Fl%3Fm%3Bn%3Ao%40p%7Eq*r-s.t_u%5Cv%C3%A9%F0%9F%98%80%09%0D%0A%01x
accept: application/json
apikey: anon-key
authorization: Bearer user-jwt
"#,
        ),
        (
            db.from("t").eq("x", "eq.1&y=eq.2").eq("or", "(a.eq.1)").range(5, 9),
            r#"GET http://127.0.0.1:54321/rest/v1/t?x=eq.eq.1%26y%3Deq.2&or=eq.%28a.eq.1%29
accept: application/json
apikey: anon-key
authorization: Bearer user-jwt
range-unit: items
range: 5-9
"#,
        ),
        (
            db.from("t"),
            r#"GET http://127.0.0.1:54321/rest/v1/t
accept: application/json
apikey: anon-key
authorization: Bearer user-jwt
"#,
        ),
        (
            db.rpc_builder("claim_jobs", "{\"p_batch\":5}".to_string()),
            r#"POST http://127.0.0.1:54321/rest/v1/rpc/claim_jobs
accept: application/json
apikey: anon-key
authorization: Bearer user-jwt
content-type: application/json
{"p_batch":5}"#,
        ),
    ];
    for (i, (b, want)) in cases.into_iter().enumerate() {
        assert_eq!(show(b), want, "case {i}");
    }
}

/// A query read back as a server does (`+` a space too, as form decoding).
fn decode_query(q: &str) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    q.split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (dec(k), dec(v))
        })
        .collect()
}

#[test]
fn adversarial_names_and_values_stay_one_parameter_and_round_trip() {
    let db = Db::new(NativeClient, BASE, "k", "t");
    let values = [
        ADV,
        "",
        " ",
        "+",
        "%",
        "%25",
        "%zz",
        "&select=*",
        "x&role=eq.admin",
        "1)&or=(id.gt.0",
        "a=b=c",
        "#frag",
        "?q",
        "eq.1",
        "in.(1,2)",
        "\"quoted, with comma\"",
        "ünïcödé 中文 🎉",
        "\u{7f}\u{1f}\u{85}\u{2028}",
    ];
    for v in values {
        let r = db.from("t").eq("c", v).neq(v, "x").in_("d", [v, v]).build().unwrap();
        let (_, q) = r.url.split_once('?').unwrap();
        assert!(
            q.bytes().all(|b| b.is_ascii_alphanumeric() || b"*-._%&=".contains(&b)),
            "{q}"
        );
        assert_eq!(
            decode_query(q),
            vec![
                ("c".to_string(), format!("eq.{v}")),
                (v.to_string(), "neq.x".to_string()),
                ("d".to_string(), format!("in.({v},{v})")),
            ],
            "{v:?}"
        );
    }
    let mut s = String::new();
    query_encode("a b+c&d=e%f/g~h*i", &mut s);
    assert_eq!(s, "a%20b%2Bc%26d%3De%25f%2Fg%7Eh*i");
}

#[test]
fn a_table_or_function_name_is_always_one_path_segment() {
    let db = Db::new(NativeClient, BASE, "k", "t");
    let r = db.from("a/../b?c=d#e f").build().unwrap();
    assert_eq!(r.url, format!("{BASE}/a%2F..%2Fb%3Fc%3Dd%23e%20f"));
    let r = db.rpc_builder("../x", "{}".into()).build().unwrap();
    assert_eq!(r.url, format!("{BASE}/rpc/..%2Fx"));
}

#[test]
fn limit_zero_asks_for_no_rows_instead_of_panicking() {
    let db = Db::new(NativeClient, BASE, "k", "t");
    let r = db.from("t").limit(0).build().unwrap();
    assert_eq!(r.url, format!("{BASE}/t?limit=0"));
    assert_eq!(r.headers.get("range"), None);
}

#[test]
fn credentials_a_header_cannot_carry_are_an_error_that_does_not_repeat_them() {
    let db = Db::new(NativeClient, BASE, "k", "secret\r\nx-evil: 1");
    let err = db.from("t").build().unwrap_err();
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn base_urls_are_normalized_as_url_did() {
    // Expected values are what postgrest-rs (url) made of them.
    for (raw, want) in [
        ("https://EXAMPLE.com:443/rest/v1/", "https://example.com/rest/v1"),
        ("HTTP://Host-1.example:80/rest/v1", "http://host-1.example/rest/v1"),
        ("http://[::1]:3000/rest/v1", "http://[::1]:3000/rest/v1"),
        (
            "https://xn--bcher-kva.example:8443/x/rest/v1",
            "https://xn--bcher-kva.example:8443/x/rest/v1",
        ),
        ("http://127.0.0.1:54321/rest/v1", "http://127.0.0.1:54321/rest/v1"),
        (
            "https://abcdefghijklmnop.supabase.co/rest/v1",
            "https://abcdefghijklmnop.supabase.co/rest/v1",
        ),
    ] {
        assert_eq!(parse_base_url(raw).as_deref(), Ok(want), "{raw}");
    }
}

#[test]
fn bad_base_urls_are_refused_with_a_reason_that_does_not_repeat_them() {
    for raw in [
        "",
        "example.com/rest/v1",
        "ftp://example.com/rest/v1",
        "https://user:hunter2@example.com/rest/v1",
        "https://example.com/rest/v1?x=1",
        "https://example.com/rest/v1#f",
        "https://bücher.example/rest/v1",
        "https://exa mple.com/rest/v1",
        "https://example..com/rest/v1",
        "https://:443/rest/v1",
        "https://example.com:/rest/v1",
        "https://example.com:65536/rest/v1",
        "https://example.com:99999999999999999999/rest/v1",
        "https://example.com:-1/rest/v1",
        "https://[::1/rest/v1",
        "https://[zz]/rest/v1",
        "https://example.com/rest v1",
        "https://example.com/rëst/v1",
        "https://example.com\\@evil.com/rest/v1",
    ] {
        let reason = parse_base_url(raw).expect_err(raw);
        assert!(!reason.contains("hunter2") && !reason.contains("example"), "{reason}");
    }
}
