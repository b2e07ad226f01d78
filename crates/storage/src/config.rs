//! Where the S3 endpoint is and how to sign for it, read from the function's
//! environment by name so the runtime's `Env` (or a test's map) feeds it.
//!
//! Addressing is path-style, `{endpoint}/{bucket}/{key}`, because it is the
//! one form every target accepts (Supabase Storage, MinIO, R2, s3s-fs, AWS).
//! The endpoint may carry a path prefix — Supabase serves S3 under
//! `{SUPABASE_URL}/storage/v1/s3` — and the prefix is part of what is signed.

use edgeworks_core::ApiError;

use crate::sigv4::Credentials;

pub const ENV_ENDPOINT: &str = "S3_ENDPOINT";
pub const ENV_REGION: &str = "S3_REGION";
pub const ENV_ACCESS_KEY_ID: &str = "S3_ACCESS_KEY_ID";
pub const ENV_SECRET_ACCESS_KEY: &str = "S3_SECRET_ACCESS_KEY";
/// Optional: temporary credentials (Supabase's user-scoped S3 sessions).
pub const ENV_SESSION_TOKEN: &str = "S3_SESSION_TOKEN";
/// Used to derive the endpoint when `S3_ENDPOINT` is not set.
pub const ENV_SUPABASE_URL: &str = "SUPABASE_URL";
/// The S3 path under a Supabase project URL.
pub const SUPABASE_S3_PATH: &str = "/storage/v1/s3";

/// A parsed endpoint: scheme, `host[:port]` (default ports dropped, since
/// the signed `host` must equal what the transport sends), and a path prefix
/// without a trailing slash (empty for none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: String,
    pub authority: String,
    pub path_prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let url = url.trim();
        let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
            ("https", r)
        } else if let Some(r) = url.strip_prefix("http://") {
            ("http", r)
        } else {
            return Err("must start with http:// or https://".into());
        };
        if rest.contains(['?', '#']) {
            return Err("must not contain a query or fragment".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err("has no host".into());
        }
        if authority.contains('@') {
            return Err("must not contain credentials".into());
        }
        let valid_authority = authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'));
        if !valid_authority {
            return Err("has an invalid host".into());
        }
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        let authority = authority
            .strip_suffix(default_port)
            .unwrap_or(authority)
            .to_ascii_lowercase();
        let prefix = path.trim_end_matches('/');
        // The prefix is signed as decoded text and re-encoded; restricting it
        // to unreserved characters makes both forms the same string.
        let valid_prefix = prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~'));
        if !valid_prefix || prefix.contains("//") {
            return Err("has a path prefix with characters that would need encoding".into());
        }
        Ok(Endpoint {
            scheme: scheme.into(),
            authority,
            path_prefix: prefix.into(),
        })
    }

    /// `scheme://authority`
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.path_prefix)
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub endpoint: Endpoint,
    pub region: String,
    pub credentials: Credentials,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint.to_string())
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// What is wrong with the configuration; names the variable, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3ConfigError {
    Missing(&'static str),
    Invalid { name: &'static str, reason: String },
}

impl std::fmt::Display for S3ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3ConfigError::Missing(n) => write!(f, "{n} is not set"),
            S3ConfigError::Invalid { name, reason } => write!(f, "{name} {reason}"),
        }
    }
}

impl std::error::Error for S3ConfigError {}

impl From<S3ConfigError> for ApiError {
    fn from(e: S3ConfigError) -> ApiError {
        ApiError::unavailable(
            "storage_not_configured",
            format!("object storage is not configured: {e}"),
        )
    }
}

impl S3Config {
    pub fn new(endpoint: Endpoint, region: impl Into<String>, credentials: Credentials) -> Self {
        S3Config {
            endpoint,
            region: region.into(),
            credentials,
        }
    }

    /// Reads `S3_ENDPOINT` (or, when absent, `{SUPABASE_URL}/storage/v1/s3`),
    /// `S3_REGION`, `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY` and the
    /// optional `S3_SESSION_TOKEN`. Empty values count as missing.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<S3Config, S3ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let (endpoint_var, endpoint_url) = match get(ENV_ENDPOINT) {
            Some(e) => (ENV_ENDPOINT, e),
            None => match get(ENV_SUPABASE_URL) {
                Some(base) => (
                    ENV_SUPABASE_URL,
                    format!("{}{SUPABASE_S3_PATH}", base.trim_end_matches('/')),
                ),
                None => return Err(S3ConfigError::Missing(ENV_ENDPOINT)),
            },
        };
        let endpoint = Endpoint::parse(&endpoint_url).map_err(|reason| S3ConfigError::Invalid {
            name: endpoint_var,
            reason,
        })?;
        let region = get(ENV_REGION).ok_or(S3ConfigError::Missing(ENV_REGION))?;
        if !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(S3ConfigError::Invalid {
                name: ENV_REGION,
                reason: "must be letters, digits, '-' or '_'".into(),
            });
        }
        let access = get(ENV_ACCESS_KEY_ID).ok_or(S3ConfigError::Missing(ENV_ACCESS_KEY_ID))?;
        if access.contains('/') || access.chars().any(char::is_whitespace) {
            // A slash would shift every field of the credential scope.
            return Err(S3ConfigError::Invalid {
                name: ENV_ACCESS_KEY_ID,
                reason: "must not contain '/' or whitespace".into(),
            });
        }
        let secret = get(ENV_SECRET_ACCESS_KEY).ok_or(S3ConfigError::Missing(ENV_SECRET_ACCESS_KEY))?;
        let mut credentials = Credentials::new(access, secret);
        if let Some(token) = get(ENV_SESSION_TOKEN) {
            credentials = credentials.with_session_token(token);
        }
        Ok(S3Config {
            endpoint,
            region,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    const KEYS: [(&str, &str); 3] = [
        ("S3_REGION", "us-east-1"),
        ("S3_ACCESS_KEY_ID", "AKID"),
        ("S3_SECRET_ACCESS_KEY", "the-secret-value"),
    ];

    #[test]
    fn endpoint_keeps_a_path_prefix_and_drops_default_ports_and_trailing_slashes() {
        let e = Endpoint::parse("https://Proj.supabase.co:443/storage/v1/s3/").unwrap();
        assert_eq!(e.authority, "proj.supabase.co");
        assert_eq!(e.path_prefix, "/storage/v1/s3");
        assert_eq!(e.to_string(), "https://proj.supabase.co/storage/v1/s3");
        let e = Endpoint::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!((e.authority.as_str(), e.path_prefix.as_str()), ("127.0.0.1:9000", ""));
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for bad in [
            "ftp://x",
            "x.com",
            "https://",
            "https://u:p@h",
            "https://h/p?x=1",
            "https://h/a b",
            "https://h/a%20b",
            "https://h//x",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_reads_every_variable_and_the_optional_session_token() {
        let mut vars = KEYS.to_vec();
        vars.push(("S3_ENDPOINT", "http://127.0.0.1:9000"));
        vars.push(("S3_SESSION_TOKEN", "tok"));
        let c = S3Config::from_lookup(env(&vars)).unwrap();
        assert_eq!(c.endpoint.origin(), "http://127.0.0.1:9000");
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.credentials.access_key_id, "AKID");
        assert_eq!(c.credentials.session_token.as_deref(), Some("tok"));
    }

    #[test]
    fn endpoint_falls_back_to_the_supabase_storage_path() {
        let mut vars = KEYS.to_vec();
        vars.push(("SUPABASE_URL", "https://abc.supabase.co/"));
        let c = S3Config::from_lookup(env(&vars)).unwrap();
        assert_eq!(c.endpoint.to_string(), "https://abc.supabase.co/storage/v1/s3");
    }

    #[test]
    fn missing_and_invalid_variables_are_named_without_their_values() {
        assert_eq!(
            S3Config::from_lookup(env(&KEYS)),
            Err(S3ConfigError::Missing("S3_ENDPOINT"))
        );
        let mut vars = KEYS.to_vec();
        vars.push(("S3_ENDPOINT", "http://h"));
        vars.retain(|(k, _)| *k != "S3_SECRET_ACCESS_KEY");
        vars.push(("S3_SECRET_ACCESS_KEY", "  "));
        assert_eq!(
            S3Config::from_lookup(env(&vars)),
            Err(S3ConfigError::Missing("S3_SECRET_ACCESS_KEY"))
        );
        let mut vars = KEYS.to_vec();
        vars.push(("S3_ENDPOINT", "nope://the-secret-value"));
        let e = S3Config::from_lookup(env(&vars)).unwrap_err();
        assert!(!e.to_string().contains("the-secret-value"));
        let api = ApiError::from(e);
        assert_eq!((api.status(), api.code()), (503, "storage_not_configured"));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let mut vars = KEYS.to_vec();
        vars.push(("S3_ENDPOINT", "http://h"));
        let c = S3Config::from_lookup(env(&vars)).unwrap();
        assert!(!format!("{c:?}").contains("the-secret-value"));
    }
}
