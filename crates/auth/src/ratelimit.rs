//! Rate limiting: the token-bucket arithmetic, the response headers, the
//! key a caller is limited under, and the per-function configuration.
//!
//! Buckets live in Postgres (isolates are many and short-lived), updated by
//! one SQL function in one round trip. This module is the reference for
//! that function; both must compute exactly this:
//!
//! ```text
//! input:  key text, cost int (>= 1), capacity int (>= 1),
//!         refill_per_sec double precision (> 0), now_ms bigint
//! state:  (tokens double precision, updated_ms bigint) per key;
//!         a key with no row starts as (capacity, now_ms)
//! 1. elapsed_ms = greatest(0, now_ms - updated_ms)      -- a clock that went back refills nothing
//! 2. tokens     = least(capacity, tokens + (elapsed_ms * refill_per_sec) / 1000.0)
//! 3. updated_ms = greatest(updated_ms, now_ms)
//! 4. if cost <= tokens: tokens = tokens - cost; allowed = true
//!    else:              allowed = false                  -- a refused request costs nothing
//! 5. store (tokens, updated_ms); return (allowed, tokens)
//! ```
//!
//! The row must be read and written under a row lock in one statement
//! (`insert ... on conflict (key) do update ... returning`), so concurrent
//! requests cannot both spend the same token. [`Decision::from_tokens`] turns
//! the returned `(allowed, tokens)` into the headers below.
//!
//! Headers: `X-RateLimit-Limit` (capacity), `X-RateLimit-Remaining` (whole
//! tokens left), `X-RateLimit-Reset` (seconds until the bucket is full
//! again; delta seconds, not a timestamp), and on refusal `Retry-After`
//! (seconds until `cost` tokens are available).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use edgeworks_core::http::Headers;
use edgeworks_core::ApiError;

/// A bucket's configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Burst size: the most requests (of cost 1) accepted at once.
    pub capacity: u32,
    /// Sustained rate: tokens added per second.
    pub refill_per_sec: f64,
}

/// One bucket's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub updated_ms: i64,
}

/// The outcome of one `take`, with everything the headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u64,
    /// 0 when allowed.
    pub retry_after_secs: u64,
    pub reset_secs: u64,
}

impl Bucket {
    /// A new key's bucket: full.
    pub fn full(capacity: u32, now_ms: i64) -> Bucket {
        Bucket {
            tokens: capacity as f64,
            updated_ms: now_ms,
        }
    }

    /// Steps 1 to 4 of the algorithm in the module docs.
    pub fn take(&mut self, cost: u32, capacity: u32, refill_per_sec: f64, now_ms: i64) -> Decision {
        let cap = capacity as f64;
        let rate = sane_rate(refill_per_sec);
        let elapsed_ms = now_ms.saturating_sub(self.updated_ms).max(0) as f64;
        let tokens = if self.tokens.is_finite() { self.tokens } else { 0.0 };
        self.tokens = cap.min(tokens + (elapsed_ms * rate) / 1000.0);
        self.updated_ms = self.updated_ms.max(now_ms);
        let allowed = (cost as f64) <= self.tokens;
        if allowed {
            self.tokens -= cost as f64;
        }
        Decision::from_tokens(
            allowed,
            self.tokens,
            cost,
            Limit {
                capacity,
                refill_per_sec,
            },
        )
    }
}

/// A rate of zero, negative or NaN would make every wait infinite; treat
/// it as the slowest meaningful rate instead of dividing by it.
fn sane_rate(r: f64) -> f64 {
    if r.is_finite() && r > 0.0 {
        r
    } else {
        f64::MIN_POSITIVE
    }
}

/// Whole seconds, rounded up, clamped to a day (a header value, not a promise).
fn secs_ceil(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else {
        x.ceil().min(86_400.0) as u64
    }
}

impl Decision {
    /// Headers for a bucket left with `tokens` after a `take` of `cost`.
    /// Used directly with the SQL function's `(allowed, tokens)` result.
    pub fn from_tokens(allowed: bool, tokens: f64, cost: u32, limit: Limit) -> Decision {
        let rate = sane_rate(limit.refill_per_sec);
        let tokens = if tokens.is_finite() { tokens.max(0.0) } else { 0.0 };
        let cap = limit.capacity as f64;
        let reset_secs = secs_ceil((cap - tokens) / rate);
        let retry_after_secs = if allowed {
            0
        } else if cost as f64 > cap {
            // Can never pass; point at a full bucket rather than at infinity.
            reset_secs.max(1)
        } else {
            secs_ceil((cost as f64 - tokens) / rate).max(1)
        };
        Decision {
            allowed,
            limit: limit.capacity,
            remaining: tokens.floor() as u64,
            retry_after_secs,
            reset_secs,
        }
    }

    /// `X-RateLimit-*`, plus `Retry-After` when refused. Names lower-case.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset_secs.to_string()),
        ];
        if !self.allowed {
            h.push(("retry-after", self.retry_after_secs.to_string()));
        }
        h
    }

    pub fn apply(&self, headers: &mut Headers) {
        for (k, v) in self.headers() {
            headers.set(k, v);
        }
    }

    /// `Err(429 rate_limited)` with all the headers when refused.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.allowed {
            return Ok(());
        }
        // too_many_requests sets retry-after itself.
        let mut e = ApiError::too_many_requests(self.retry_after_secs);
        for (k, v) in self.headers().into_iter().filter(|(k, _)| *k != "retry-after") {
            e = e.with_header(k, v);
        }
        Err(e)
    }
}

/// Where the client's address is read from: a header and how many proxies
/// we trust to have appended to it.
///
/// Which address the platform vouches for: every proxy in front of the
/// function that speaks `x-forwarded-for` APPENDS the address it accepted the
/// connection from, so only the right-hand entries were written by someone we
/// trust; everything to their left came from the client (or its own proxies)
/// and may be forged. Keying on the first hop, as this once did, let a client
/// pick its own bucket by sending a new `x-forwarded-for` per request.
///
/// - Locally, `scripts/local/gateway.ts` replaces any client
///   `x-forwarded-for` with its socket peer: one value, one trusted hop.
/// - On Supabase, requests reach the edge runtime through the platform's API
///   gateway, which appends the address it saw to `x-forwarded-for`; Supabase
///   does not document the edge-function headers as a contract (its Auth
///   server added its own `Sb-Forwarded-For` for this same reason). The
///   default, the rightmost entry, is what the nearest proxy appended. If a
///   deployment sits behind more proxies that each append, raise
///   `RATE_LIMIT_TRUSTED_HOPS`; if its edge sets a single-value header that it
///   overwrites (Cloudflare's `cf-connecting-ip`), name it in
///   `RATE_LIMIT_CLIENT_IP_HEADER`.
///
/// Authenticated callers are keyed by user id instead, so this only decides
/// how anonymous callers share buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpSource {
    /// Lower-case header name.
    pub header: String,
    /// Entries counted from the right: 1 = the last one.
    pub trusted_hops: usize,
}

impl Default for ClientIpSource {
    fn default() -> Self {
        ClientIpSource {
            header: "x-forwarded-for".to_string(),
            trusted_hops: 1,
        }
    }
}

/// More hops than any real proxy chain; a larger setting is a typo.
const MAX_TRUSTED_HOPS: usize = 16;

impl ClientIpSource {
    pub const HEADER_VAR: &'static str = "RATE_LIMIT_CLIENT_IP_HEADER";
    pub const HOPS_VAR: &'static str = "RATE_LIMIT_TRUSTED_HOPS";

    /// From `RATE_LIMIT_CLIENT_IP_HEADER` and `RATE_LIMIT_TRUSTED_HOPS`
    /// (the `RATE_LIMIT_` prefix lets the local stack pass them through like
    /// the limits themselves). Unset or empty means the default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ClientIpSource, LimitConfigError> {
        let mut source = ClientIpSource::default();
        if let Some(h) = lookup(Self::HEADER_VAR).map(|h| h.trim().to_ascii_lowercase()) {
            if !h.is_empty() {
                if !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    return Err(LimitConfigError::ClientIp {
                        var: Self::HEADER_VAR.to_string(),
                    });
                }
                source.header = h;
            }
        }
        if let Some(n) = lookup(Self::HOPS_VAR).map(|n| n.trim().to_string()) {
            if !n.is_empty() {
                source.trusted_hops = n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_TRUSTED_HOPS).contains(n))
                    .ok_or_else(|| LimitConfigError::ClientIp {
                        var: Self::HOPS_VAR.to_string(),
                    })?;
            }
        }
        Ok(source)
    }

    /// The client's address per this source, or `None` when the header is
    /// missing, has fewer entries than trusted hops, or the entry is not an
    /// IP address (optionally with a port). There is no fallback to another
    /// header: any header we did not configure may have come from the client.
    pub fn client_ip(&self, headers: &Headers) -> Option<IpAddr> {
        // Repeated header lines are one comma-separated list (RFC 9110 §5.3).
        let entries: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&self.header))
            .flat_map(|(_, v)| v.split(','))
            .collect();
        let index = entries.len().checked_sub(self.trusted_hops)?;
        parse_ip(entries[index])
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse::<IpAddr>().ok())?;
    // ::ffff:1.2.3.4 is the IPv4 client 1.2.3.4.
    Some(ip.to_canonical())
}

/// The key a request is limited under: `user:<id>` when authenticated,
/// else `ip:<address>`, else `ip:unknown` (all unidentifiable callers
/// share one bucket). IPv6 clients are keyed by their /64, since one
/// subscriber usually holds a whole /64 and could rotate through it.
pub fn limit_key(user_id: Option<&str>, headers: &Headers, source: &ClientIpSource) -> String {
    if let Some(id) = user_id.map(str::trim).filter(|id| !id.is_empty()) {
        return format!("user:{id}");
    }
    match source.client_ip(headers) {
        Some(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            let net = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("ip:{net}/64")
        }
        None => "ip:unknown".to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitConfigError {
    #[error("{var} must look like <capacity>/<refill_per_sec>, e.g. 10/0.5")]
    Syntax { var: String },
    #[error("{var}: capacity must be a whole number from 1 to 1000000")]
    Capacity { var: String },
    #[error("{var}: refill_per_sec must be a number greater than 0 and at most 1000000")]
    Rate { var: String },
    #[error("{var} must be a header name, or for the hop count a whole number from 1 to 16")]
    ClientIp { var: String },
}

/// `RATE_LIMIT_<FUNCTION>`: the function name upper-cased with `-` as `_`
/// (`chat-submit` → `RATE_LIMIT_CHAT_SUBMIT`).
pub fn env_var_name(function: &str) -> String {
    let name: String = function
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("RATE_LIMIT_{name}")
}

impl Limit {
    /// Parses `<capacity>/<refill_per_sec>`: capacity a whole number in
    /// 1..=1000000, refill a decimal in (0, 1000000] (`10/0.5` = bursts of
    /// 10, one request every 2 s sustained). Spaces around the parts are
    /// allowed; `var` only labels errors.
    pub fn parse(value: &str, var: &str) -> Result<Limit, LimitConfigError> {
        let (cap, rate) = value
            .split_once('/')
            .ok_or_else(|| LimitConfigError::Syntax { var: var.into() })?;
        let (cap, rate) = (cap.trim(), rate.trim());
        let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits_only(cap) {
            return Err(LimitConfigError::Capacity { var: var.into() });
        }
        let capacity: u32 = cap
            .parse()
            .ok()
            .filter(|c| (1..=1_000_000).contains(c))
            .ok_or_else(|| LimitConfigError::Capacity { var: var.into() })?;
        // Plain decimals only: no signs, exponents, inf or nan.
        let decimal = !rate.is_empty()
            && rate.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && rate.bytes().filter(|b| *b == b'.').count() <= 1
            && rate.bytes().any(|b| b.is_ascii_digit());
        let refill_per_sec: f64 = rate
            .parse()
            .ok()
            .filter(|r: &f64| decimal && *r > 0.0 && *r <= 1_000_000.0)
            .ok_or_else(|| LimitConfigError::Rate { var: var.into() })?;
        Ok(Limit {
            capacity,
            refill_per_sec,
        })
    }

    /// The limit for `function`: `RATE_LIMIT_<FUNCTION>` if `lookup` has it,
    /// else `default`. A present but invalid value is an error (a typo must
    /// not silently mean "default").
    pub fn for_function(
        function: &str,
        lookup: impl Fn(&str) -> Option<String>,
        default: Limit,
    ) -> Result<Limit, LimitConfigError> {
        let var = env_var_name(function);
        match lookup(&var) {
            Some(v) if !v.trim().is_empty() => Limit::parse(&v, &var),
            _ => Ok(default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_full_bucket_allows_a_burst_then_refuses() {
        let mut b = Bucket::full(3, 0);
        for left in [2, 1, 0] {
            let d = b.take(1, 3, 1.0, 0);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let d = b.take(1, 3, 1.0, 0);
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.retry_after_secs, d.reset_secs), (0, 1, 3));
    }

    #[test]
    fn tokens_refill_at_the_configured_rate_up_to_capacity() {
        let mut b = Bucket {
            tokens: 0.0,
            updated_ms: 0,
        };
        assert!(!b.take(1, 10, 0.5, 1_999).allowed);
        assert!(b.take(1, 10, 0.5, 2_000).allowed);
        let d = b.take(1, 10, 0.5, 1_000_000);
        assert_eq!(d.remaining, 9);
        assert_eq!(b.tokens, 9.0);
    }

    #[test]
    fn refusal_costs_nothing_and_names_the_wait() {
        let mut b = Bucket {
            tokens: 0.5,
            updated_ms: 0,
        };
        let d = b.take(3, 10, 0.25, 0);
        assert!(!d.allowed);
        assert_eq!(b.tokens, 0.5);
        assert_eq!(d.retry_after_secs, 10); // (3 - 0.5) / 0.25
        assert_eq!(d.reset_secs, 38); // (10 - 0.5) / 0.25
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let mut b = Bucket {
            tokens: 0.0,
            updated_ms: 10_000,
        };
        assert!(!b.take(1, 5, 100.0, 0).allowed);
        assert_eq!(b.updated_ms, 10_000);
        assert!(b.take(1, 5, 100.0, 10_010).allowed);
    }

    #[test]
    fn cost_above_capacity_is_always_refused() {
        let mut b = Bucket::full(5, 0);
        let d = b.take(6, 5, 1.0, 0);
        assert!(!d.allowed);
        assert!(d.retry_after_secs >= 1);
        assert_eq!(b.tokens, 5.0);
    }

    #[test]
    fn headers_carry_limit_remaining_reset_and_retry_after_on_refusal() {
        let mut b = Bucket::full(2, 0);
        let ok = b.take(1, 2, 0.1, 0);
        assert_eq!(
            ok.headers(),
            vec![
                ("x-ratelimit-limit", "2".to_string()),
                ("x-ratelimit-remaining", "1".to_string()),
                ("x-ratelimit-reset", "10".to_string()),
            ]
        );
        assert!(ok.check().is_ok());
        b.take(1, 2, 0.1, 0);
        let no = b.take(1, 2, 0.1, 0);
        let err = no.check().unwrap_err();
        assert_eq!((err.status(), err.code()), (429, "rate_limited"));
        let resp = err.into_response("r");
        assert_eq!(resp.headers.get("retry-after"), Some("10"));
        assert_eq!(resp.headers.get("x-ratelimit-remaining"), Some("0"));
        assert_eq!(resp.headers.get("x-ratelimit-reset"), Some("20"));
        assert_eq!(resp.headers.iter().filter(|(k, _)| *k == "retry-after").count(), 1);
        let mut h = Headers::new();
        no.apply(&mut h);
        assert_eq!(h.get("x-ratelimit-limit"), Some("2"));
    }

    #[test]
    fn decision_from_sql_result_matches_local_take() {
        let limit = Limit {
            capacity: 10,
            refill_per_sec: 2.0,
        };
        let mut b = Bucket {
            tokens: 4.2,
            updated_ms: 0,
        };
        let local = b.take(1, 10, 2.0, 0);
        assert_eq!(Decision::from_tokens(true, b.tokens, 1, limit), local);
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().copied().collect()
    }

    #[test]
    fn limit_key_prefers_the_user() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let src = ClientIpSource::default();
        assert_eq!(limit_key(Some("u-1"), &h, &src), "user:u-1");
        assert_eq!(limit_key(Some("  "), &h, &src), "ip:203.0.113.9");
    }

    #[test]
    fn client_ip_is_the_validated_entry_the_nearest_proxy_appended() {
        let src = ClientIpSource::default();
        let key = |pairs: &[(&str, &str)]| limit_key(None, &headers(pairs), &src);
        assert_eq!(
            key(&[("x-forwarded-for", " 10.0.0.1, 10.0.0.2 , 203.0.113.9 ")]),
            "ip:203.0.113.9"
        );
        assert_eq!(key(&[("x-forwarded-for", "203.0.113.9:5555")]), "ip:203.0.113.9");
        assert_eq!(key(&[("x-forwarded-for", "::ffff:198.51.100.7")]), "ip:198.51.100.7");
        assert_eq!(
            key(&[("x-forwarded-for", "[2001:db8:aa:bb:1:2:3:4]:443")]),
            "ip:2001:db8:aa:bb::/64"
        );
        assert_eq!(
            key(&[("x-forwarded-for", "2001:db8:aa:bb::9")]),
            "ip:2001:db8:aa:bb::/64"
        );
        assert_eq!(key(&[("x-forwarded-for", "unknown")]), "ip:unknown");
        assert_eq!(key(&[]), "ip:unknown");
    }

    #[test]
    fn forged_left_hand_entries_do_not_change_the_key() {
        let src = ClientIpSource::default();
        let honest = limit_key(None, &headers(&[("x-forwarded-for", "203.0.113.9")]), &src);
        for forged in [
            "198.51.100.1, 203.0.113.9",
            "evil, 203.0.113.9",
            "1.1.1.1,2.2.2.2, 203.0.113.9",
        ] {
            assert_eq!(limit_key(None, &headers(&[("x-forwarded-for", forged)]), &src), honest);
        }
        // A client's own header line before the proxy's counts as the same list.
        let split = headers(&[("x-forwarded-for", "198.51.100.1"), ("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(limit_key(None, &split, &src), honest);
    }

    #[test]
    fn headers_the_client_can_write_are_not_a_fallback() {
        let src = ClientIpSource::default();
        let h = headers(&[("x-real-ip", "198.51.100.1"), ("cf-connecting-ip", "198.51.100.2")]);
        assert_eq!(limit_key(None, &h, &src), "ip:unknown");
        let h = headers(&[("x-forwarded-for", "garbage"), ("x-real-ip", "198.51.100.1")]);
        assert_eq!(limit_key(None, &h, &src), "ip:unknown");
    }

    #[test]
    fn trusted_hops_and_header_are_configurable() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let two = ClientIpSource::from_lookup(env(&[("RATE_LIMIT_TRUSTED_HOPS", "2")])).unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.1")]);
        assert_eq!(limit_key(None, &h, &two), "ip:203.0.113.9");
        // Fewer entries than trusted proxies: the chain is not what we were told.
        assert_eq!(
            limit_key(None, &headers(&[("x-forwarded-for", "10.0.0.1")]), &two),
            "ip:unknown"
        );

        let cf = ClientIpSource::from_lookup(env(&[("RATE_LIMIT_CLIENT_IP_HEADER", " CF-Connecting-IP ")])).unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6"), ("cf-connecting-ip", "203.0.113.9")]);
        assert_eq!(limit_key(None, &h, &cf), "ip:203.0.113.9");

        assert_eq!(
            ClientIpSource::from_lookup(env(&[])).unwrap(),
            ClientIpSource::default()
        );
        for bad in [
            &[("RATE_LIMIT_TRUSTED_HOPS", "0")][..],
            &[("RATE_LIMIT_TRUSTED_HOPS", "17")][..],
            &[("RATE_LIMIT_TRUSTED_HOPS", "two")][..],
            &[("RATE_LIMIT_CLIENT_IP_HEADER", "x forwarded")][..],
        ] {
            let pairs: Vec<(String, String)> = bad.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let lookup = move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert!(matches!(
                ClientIpSource::from_lookup(lookup),
                Err(LimitConfigError::ClientIp { .. })
            ));
        }
    }

    #[test]
    fn config_parses_capacity_and_rate() {
        assert_eq!(
            Limit::parse("10/0.5", "V"),
            Ok(Limit {
                capacity: 10,
                refill_per_sec: 0.5
            })
        );
        assert_eq!(
            Limit::parse(" 60 / 1 ", "V"),
            Ok(Limit {
                capacity: 60,
                refill_per_sec: 1.0
            })
        );
        assert_eq!(
            Limit::parse("5/.25", "V"),
            Ok(Limit {
                capacity: 5,
                refill_per_sec: 0.25
            })
        );
        for bad in ["10", "10/", "/1", "x/1", "-1/1", "0/1", "1000001/1", "1.5/1"] {
            assert!(Limit::parse(bad, "V").is_err(), "{bad}");
        }
        for bad in [
            "10/0",
            "10/-1",
            "10/inf",
            "10/NaN",
            "10/1e3",
            "10/1.2.3",
            "10/.",
            "10/2000000",
        ] {
            assert_eq!(
                Limit::parse(bad, "V"),
                Err(LimitConfigError::Rate { var: "V".into() }),
                "{bad}"
            );
        }
    }

    #[test]
    fn config_comes_from_the_functions_env_var() {
        assert_eq!(env_var_name("chat-submit"), "RATE_LIMIT_CHAT_SUBMIT");
        let default = Limit {
            capacity: 30,
            refill_per_sec: 0.5,
        };
        let env = |k: &str| (k == "RATE_LIMIT_QUEUE_JOB").then(|| "5/0.1".to_string());
        assert_eq!(
            Limit::for_function("queue-job", env, default),
            Ok(Limit {
                capacity: 5,
                refill_per_sec: 0.1
            })
        );
        assert_eq!(Limit::for_function("health", env, default), Ok(default));
        let broken = |_: &str| Some("five per minute".to_string());
        let err = Limit::for_function("queue-job", broken, default).unwrap_err();
        assert!(err.to_string().contains("RATE_LIMIT_QUEUE_JOB"));
    }

    proptest! {
        /// Over any request sequence with non-decreasing times, the cost
        /// accepted between any two request times t0 <= t1 is at most
        /// capacity + refill * (t1 - t0).
        #[test]
        fn accepted_cost_never_exceeds_capacity_plus_refill(
            capacity in 1u32..50,
            refill in 0.01f64..20.0,
            steps in prop::collection::vec((0i64..3_000, 1u32..6), 1..60),
        ) {
            let mut b = Bucket::full(capacity, 0);
            let mut now = 0i64;
            let mut accepted: Vec<(i64, u32)> = Vec::new();
            for (dt, cost) in steps {
                now += dt;
                let d = b.take(cost, capacity, refill, now);
                prop_assert!(b.tokens >= -1e-9 && b.tokens <= capacity as f64 + 1e-9);
                prop_assert_eq!(d.allowed, d.retry_after_secs == 0);
                if d.allowed {
                    accepted.push((now, cost));
                }
            }
            for (i, (t0, _)) in accepted.iter().enumerate() {
                let mut sum = 0f64;
                for (t1, c) in &accepted[i..] {
                    sum += *c as f64;
                    let bound = capacity as f64 + refill * (t1 - t0) as f64 / 1000.0;
                    prop_assert!(sum <= bound + 1e-6, "{sum} > {bound} in [{t0}, {t1}]");
                }
            }
        }

        /// With arbitrary (even backwards) times the bound holds on the
        /// bucket's own clock, the latest time seen.
        #[test]
        fn backwards_times_cannot_mint_tokens(
            capacity in 1u32..20,
            refill in 0.01f64..5.0,
            times in prop::collection::vec(-5_000i64..5_000, 1..60),
        ) {
            let mut b = Bucket::full(capacity, times[0]);
            let start = b.updated_ms;
            let mut accepted = 0f64;
            for t in times {
                if b.take(1, capacity, refill, t).allowed {
                    accepted += 1.0;
                }
            }
            let bound = capacity as f64 + refill * (b.updated_ms - start) as f64 / 1000.0;
            prop_assert!(accepted <= bound + 1e-6);
        }

        #[test]
        fn odd_inputs_never_panic(tokens in any::<f64>(), updated in any::<i64>(), cost in any::<u32>(),
                                  cap in any::<u32>(), rate in any::<f64>(), now in any::<i64>()) {
            let mut b = Bucket { tokens, updated_ms: updated };
            let d = b.take(cost, cap, rate, now);
            let _ = d.headers();
        }
    }
}
