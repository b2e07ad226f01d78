//! CORS: the preflight answer and the headers added to every response.
//! The allowed headers are the ones supabase-js sends.

use crate::http::{Headers, Response};

pub const ALLOWED_HEADERS: &str = "authorization, x-client-info, apikey, content-type, x-request-id, prefer, range";
pub const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
pub const EXPOSED_HEADERS: &str =
    "x-request-id, retry-after, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset";

/// Allowed origins, from a comma-separated env value; empty or `*` means any
/// (also the default).
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    origins: Option<Vec<String>>,
}

impl CorsPolicy {
    pub fn from_env_value(value: Option<&str>) -> Self {
        let origins = match value.map(str::trim) {
            None | Some("") | Some("*") => None,
            Some(list) => Some(
                list.split(',')
                    .map(|s| s.trim().trim_end_matches('/').to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
        };
        CorsPolicy { origins }
    }

    /// The value for `Access-Control-Allow-Origin`, or None when the origin
    /// is not allowed (then no CORS headers are sent and the browser blocks).
    pub fn allow_origin(&self, request_origin: Option<&str>) -> Option<String> {
        self.allowed_origin(request_origin).map(str::to_string)
    }

    /// [`CorsPolicy::allow_origin`] without the copy: `*`, or the request's
    /// origin as it is allowed.
    pub fn allowed_origin<'a>(&self, request_origin: Option<&'a str>) -> Option<&'a str> {
        match &self.origins {
            None => Some("*"),
            Some(list) => {
                let o = request_origin?.trim_end_matches('/');
                list.iter().any(|a| a == o).then_some(o)
            }
        }
    }

    /// The CORS headers of a reply to a request from `request_origin`, in the
    /// order they are sent, each handed to `put`; with `preflight`, the
    /// preflight's too. The one place their names, values and order are kept:
    /// [`CorsPolicy::apply`], [`CorsPolicy::preflight`] and the pipeline's
    /// refusals (crates/runtime) all write them from here.
    pub fn each_header(&self, request_origin: Option<&str>, preflight: bool, mut put: impl FnMut(&'static str, &str)) {
        if let Some(origin) = self.allowed_origin(request_origin) {
            if origin != "*" {
                put("vary", "Origin");
            }
            put("access-control-allow-origin", origin);
            put("access-control-expose-headers", EXPOSED_HEADERS);
            if preflight {
                put("access-control-allow-headers", ALLOWED_HEADERS);
                put("access-control-allow-methods", ALLOWED_METHODS);
                put("access-control-max-age", "86400");
            }
        }
    }

    pub fn apply(&self, request_origin: Option<&str>, headers: &mut Headers) {
        self.each_header(request_origin, false, |name, value| headers.set(name, value));
    }

    pub fn preflight(&self, request_origin: Option<&str>) -> Response {
        let mut r = Response::new(204);
        self.each_header(request_origin, true, |name, value| r.headers.set(name, value));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_allows_any_origin() {
        let p = CorsPolicy::from_env_value(None);
        let r = p.preflight(Some("https://app.example"));
        assert_eq!(r.status, 204);
        assert_eq!(r.headers.get("access-control-allow-origin"), Some("*"));
        assert!(r
            .headers
            .get("access-control-allow-headers")
            .unwrap()
            .contains("x-client-info"));
    }

    #[test]
    fn listed_origins_are_echoed_and_others_refused() {
        let p = CorsPolicy::from_env_value(Some("https://a.example, https://b.example/"));
        assert_eq!(
            p.allow_origin(Some("https://b.example")).as_deref(),
            Some("https://b.example")
        );
        assert_eq!(p.allow_origin(Some("https://evil.example")), None);
        assert_eq!(p.allow_origin(None), None);
    }
}
