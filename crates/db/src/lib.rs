//! edgeworks-db: typed access to the database through PostgREST.
//!
//! Requests are built with our own query builder (`query::Builder`: the
//! subset of postgrest-rs's we use, same names and the same requests) and
//! sent through the one HTTP client the function was
//! given, so the same code runs on fetch in wasm and over TCP in native
//! tests. Anything that must be atomic is one SQL function over `/rpc`.
//! This crate never holds business rules: those live in the crates that own
//! them (the queue's in `edgeworks-queue`).

use edgeworks_core::http_client::{HttpClient, TransportError};
use edgeworks_core::{ApiError, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

mod query;
pub use query::{parse_base_url, query_encode, Builder};

/// Deadline for one PostgREST round trip.
pub const DB_TIMEOUT_MS: u32 = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub enum DbError {
    /// PostgREST could not be reached (or did not answer in time).
    Transport(TransportError),
    /// PostgREST answered with an error (a SQL exception, RLS, a missing row).
    Api {
        status: u16,
        /// The Postgres SQLSTATE or PostgREST `PGRSTxxx` code.
        code: Option<String>,
        message: String,
        details: Option<String>,
        hint: Option<String>,
    },
    /// The answer did not have the shape we expected.
    Decode(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Transport(e) => write!(f, "database unreachable: {e}"),
            DbError::Api {
                status, code, message, ..
            } => write!(
                f,
                "database error {status} {}: {message}",
                code.as_deref().unwrap_or("-")
            ),
            DbError::Decode(m) => write!(f, "unexpected database answer: {m}"),
        }
    }
}

impl std::error::Error for DbError {}

impl DbError {
    /// The SQLSTATE / PostgREST code, when PostgREST gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            DbError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            DbError::Api { message, .. } => message,
            DbError::Decode(m) => m,
            DbError::Transport(_) => "database unreachable",
        }
    }
}

/// Unexpected database failures become a generic 500 or 503 for the client;
/// the cause goes to the log by the caller. Callers that expect a specific
/// SQL error (a refused lease, a limit) match on `DbError::code` first.
impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match &e {
            DbError::Transport(_) => ApiError::unavailable("database_unavailable", "the database is unreachable"),
            DbError::Api { status: 401 | 403, .. } => ApiError::forbidden("forbidden", "not allowed"),
            DbError::Api { code: Some(c), .. } if c == "42501" => ApiError::forbidden("forbidden", "not allowed"),
            _ => ApiError::internal(),
        }
    }
}

#[derive(Deserialize)]
struct PgrstError {
    code: Option<String>,
    message: Option<String>,
    details: Option<String>,
    hint: Option<String>,
}

/// A PostgREST endpoint reached as one role (the caller's JWT, or the
/// service-role key for system work).
pub struct Db<C: HttpClient> {
    client: C,
    endpoint: Endpoint,
}

/// Where a [`Db`] sends its requests and as whom: the URL checked and the
/// keys in their headers' form. Built once, it can back many handles
/// ([`Db::at`]) without being parsed again.
#[derive(Clone)]
pub struct Endpoint(Arc<EndpointParts>);

struct EndpointParts {
    rest_url: String,
    /// `rest_url` checked and normalized, or why it was refused (reported
    /// by every request, never a panic).
    base: Result<String, &'static str>,
    apikey: Arc<str>,
    authorization: Arc<str>,
}

impl Endpoint {
    /// As [`Db::new`] takes them.
    pub fn new(rest_url: &str, apikey: &str, bearer: &str) -> Endpoint {
        let rest_url = rest_url.trim_end_matches('/').to_string();
        Endpoint(Arc::new(EndpointParts {
            base: parse_base_url(&rest_url),
            rest_url,
            apikey: apikey.into(),
            authorization: format!("Bearer {bearer}").into(),
        }))
    }
}

impl<C: HttpClient> Db<C> {
    /// `rest_url` is `{SUPABASE_URL}/rest/v1`; `apikey` is the project key
    /// the gateway wants; `bearer` is the JWT whose role PostgREST assumes.
    pub fn new(client: C, rest_url: &str, apikey: &str, bearer: &str) -> Self {
        Db::at(client, &Endpoint::new(rest_url, apikey, bearer))
    }

    /// A handle on an endpoint built beforehand.
    pub fn at(client: C, endpoint: &Endpoint) -> Self {
        Db {
            client,
            endpoint: endpoint.clone(),
        }
    }

    pub fn rest_url(&self) -> &str {
        &self.endpoint.0.rest_url
    }

    /// A query builder on a table or view (postgrest-rs syntax).
    pub fn from(&self, table: &str) -> Builder {
        let e = &self.endpoint.0;
        Builder::new(&e.base, &[table], e.apikey.clone(), e.authorization.clone())
    }

    /// Calls a SQL function: `POST /rpc/<function>` with named JSON args.
    ///
    /// Arguments whose value is JSON null are left out, so the SQL default
    /// (null for every optional argument of ours) applies: a PostgREST-
    /// compatible server is not guaranteed to pass an explicit null through
    /// as SQL NULL (postrust-server passes an empty string).
    pub async fn rpc<T: DeserializeOwned>(&self, function: &str, args: &Value) -> Result<T, DbError> {
        // Only the decoding depends on `T`: the call itself is one
        // function, not one copy per answer type.
        let (status, body) = self.rpc_send_value(function, args).await?;
        decode(status, &body)
    }

    async fn rpc_send_value(&self, function: &str, args: &Value) -> Result<(u16, Vec<u8>), DbError> {
        let body = match args {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        };
        self.send(self.rpc_builder(function, body.to_string())).await
    }

    /// [`Db::rpc`] with the arguments serialised straight from a type, no
    /// JSON tree in between. The type must leave out the arguments it has no
    /// value for (`#[serde(skip_serializing_if = "Option::is_none")]`), for
    /// the reason [`Db::rpc`] leaves out nulls.
    pub async fn rpc_with<A: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        function: &str,
        args: &A,
    ) -> Result<T, DbError> {
        let (status, body) = self.rpc_send(function, args).await?;
        decode(status, &body)
    }

    /// An `/rpc` call as [`Db::rpc_with`] makes it, answered with the status
    /// and raw body (errors decoded), for a caller that decodes the answer
    /// itself (with [`decode`]).
    pub async fn rpc_send<A: Serialize + ?Sized>(&self, function: &str, args: &A) -> Result<(u16, Vec<u8>), DbError> {
        let body =
            serde_json::to_string(args).map_err(|e| DbError::Decode(format!("could not encode arguments: {e}")))?;
        self.send(self.rpc_builder(function, body)).await
    }

    /// The request of an `/rpc` call with `body` (a JSON object) as it is.
    pub fn rpc_builder(&self, function: &str, body: String) -> Builder {
        let e = &self.endpoint.0;
        Builder::new(&e.base, &["rpc", function], e.apikey.clone(), e.authorization.clone()).rpc(body)
    }

    /// Sends a built query and decodes the JSON answer.
    pub async fn execute<T: DeserializeOwned>(&self, builder: Builder) -> Result<T, DbError> {
        let (status, body) = self.send(builder).await?;
        decode(status, &body)
    }

    /// Sends a built query; returns status and raw body (errors decoded).
    pub async fn send(&self, builder: Builder) -> Result<(u16, Vec<u8>), DbError> {
        let req = to_request(builder)?;
        let resp = self.client.send(req, DB_TIMEOUT_MS).await.map_err(DbError::Transport)?;
        if resp.status >= 400 {
            return Err(api_error(resp.status, &resp.body));
        }
        Ok((resp.status, resp.body))
    }
}

fn to_request(builder: Builder) -> Result<Request, DbError> {
    builder
        .build()
        .map_err(|e| DbError::Decode(format!("could not build query: {e}")))
}

fn api_error(status: u16, body: &[u8]) -> DbError {
    match serde_json::from_slice::<PgrstError>(body) {
        Ok(e) => DbError::Api {
            status,
            code: e.code,
            message: e.message.unwrap_or_else(|| format!("HTTP {status}")),
            details: e.details,
            hint: e.hint,
        },
        Err(_) => DbError::Api {
            status,
            code: None,
            message: format!("HTTP {status}"),
            details: None,
            hint: None,
        },
    }
}

/// A PostgREST answer decoded as [`Db::execute`] decodes it (an empty body
/// or a 204 is JSON null).
pub fn decode<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, DbError> {
    let body: &[u8] = if body.is_empty() || status == 204 {
        b"null"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| DbError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_core::Method;
    use edgeworks_testkit::{block_on, json_response, FakeServer};

    #[test]
    fn rpc_posts_named_args_with_both_keys() {
        let server = FakeServer::start(|_, _| json_response(200, "{\"ok\":true}"));
        let db = Db::new(
            edgeworks_testkit::NativeClient,
            &format!("{}/rest/v1/", server.base_url),
            "anon-key",
            "user-jwt",
        );
        let v: Value = block_on(db.rpc("claim_jobs", &serde_json::json!({"p_batch": 5, "p_kinds": null}))).unwrap();
        assert_eq!(v["ok"], true);
        let got = &server.requests()[0];
        assert_eq!(got.method, Method::Post);
        assert_eq!(got.path(), "/rest/v1/rpc/claim_jobs");
        assert_eq!(got.headers.get("apikey"), Some("anon-key"));
        assert_eq!(got.headers.get("authorization"), Some("Bearer user-jwt"));
        let args: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(args["p_batch"], 5);
        assert!(args.get("p_kinds").is_none(), "null args are left to their SQL default");
    }

    #[test]
    fn postgrest_errors_keep_sqlstate_and_message() {
        let server = FakeServer::start(|_, _| {
            json_response(
                400,
                r#"{"code":"P0001","message":"lease_lost","details":null,"hint":null}"#,
            )
        });
        let db = Db::new(
            edgeworks_testkit::NativeClient,
            &format!("{}/rest/v1", server.base_url),
            "k",
            "t",
        );
        let err = block_on(db.rpc::<Value>("complete_job", &serde_json::json!({}))).unwrap_err();
        assert_eq!(err.code(), Some("P0001"));
        assert_eq!(err.message(), "lease_lost");
        assert_eq!(ApiError::from(err).status(), 500);
    }

    #[test]
    fn table_queries_use_postgrest_filter_syntax() {
        let server = FakeServer::start(|_, _| json_response(200, "[]"));
        let db = Db::new(
            edgeworks_testkit::NativeClient,
            &format!("{}/rest/v1", server.base_url),
            "k",
            "t",
        );
        let rows: Vec<Value> =
            block_on(db.execute(db.from("jobs").select("id,status").eq("status", "pending").limit(3))).unwrap();
        assert!(rows.is_empty());
        let got = &server.requests()[0];
        assert_eq!(got.path(), "/rest/v1/jobs");
        assert_eq!(got.query_param("status").as_deref(), Some("eq.pending"));
        assert_eq!(got.headers.get("range"), Some("0-2"));
    }

    #[test]
    fn unreachable_database_maps_to_503() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let db = Db::new(
            edgeworks_testkit::NativeClient,
            &format!("http://127.0.0.1:{port}/rest/v1"),
            "k",
            "t",
        );
        let err = block_on(db.rpc::<Value>("x", &serde_json::json!({}))).unwrap_err();
        assert!(matches!(err, DbError::Transport(_)));
        assert_eq!(ApiError::from(err).status(), 503);
    }
}
