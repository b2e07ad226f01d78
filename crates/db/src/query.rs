//! A PostgREST query builder: the subset of postgrest-rs 1.6 we use, same
//! method names and the same requests (query string, headers, body), without
//! reqwest, http or url in the wasm and without parsing a URL per request.
//!
//! Names and values are encoded as postgrest-rs did through `url`'s
//! `query_pairs_mut` (alphanumerics and `*-._` stay, every other byte is
//! `%XX`), so a value can never add a parameter (`&`, `=`), end the query
//! (`#`) or be read as an escape (`%`, `+`) — with one difference: a space is
//! `%20`, not form encoding's `+`. PostgREST (Haskell) reads `+` as a space but
//! the local stack's postrust-server keeps it a `+`, so with postgrest-rs a
//! value with a space never matched there; `%20` is a space to both.

use edgeworks_core::http::Headers;
use edgeworks_core::{Method, Request};

/// A table query or an `/rpc` call, built by chaining and sent by
/// `Db::execute` / `Db::send`. No `Debug`: it holds the credentials.
#[derive(Clone)]
#[must_use = "a query does nothing until it is sent with Db::execute or Db::send"]
pub struct Builder {
    method: Method,
    /// `{rest_url}/{table}` (or `/rpc/{function}`), its segment percent-encoded;
    /// `Err` when the base URL was refused (reported when sent).
    url: Result<String, &'static str>,
    queries: Vec<(String, String)>,
    prefer: Option<&'static str>,
    range: Option<String>,
    body: Option<String>,
    apikey: std::sync::Arc<str>,
    authorization: std::sync::Arc<str>,
}

impl Builder {
    pub(crate) fn new(
        base: &Result<String, &'static str>,
        segments: &[&str],
        apikey: std::sync::Arc<str>,
        authorization: std::sync::Arc<str>,
    ) -> Self {
        let url = base.as_ref().map_err(|e| *e).map(|b| {
            let mut u = String::with_capacity(b.len() + 32);
            u.push_str(b);
            for seg in segments {
                u.push('/');
                encode_path_segment(seg, &mut u);
            }
            u
        });
        Builder {
            method: Method::Get,
            url,
            queries: Vec::new(),
            prefer: None,
            range: None,
            body: None,
            apikey,
            authorization,
        }
    }

    /// Vertical filtering: `select=<columns>`.
    pub fn select<T: Into<String>>(mut self, columns: T) -> Self {
        self.queries.push(("select".to_string(), columns.into()));
        self
    }

    /// `order=<columns>` (`col.desc,other.asc`).
    pub fn order<T: Into<String>>(mut self, columns: T) -> Self {
        self.queries.push(("order".to_string(), columns.into()));
        self
    }

    /// At most `count` rows: `Range: 0-<count-1>` (`limit=0` for none).
    pub fn limit(self, count: usize) -> Self {
        match count.checked_sub(1) {
            Some(last) => self.range(0, last),
            None => {
                let mut b = self;
                b.queries.push(("limit".to_string(), "0".to_string()));
                b
            }
        }
    }

    /// Rows `low..=high`: `Range: <low>-<high>`.
    pub fn range(mut self, low: usize, high: usize) -> Self {
        self.range = Some(format!("{low}-{high}"));
        self
    }

    /// `<column>=eq.<value>`.
    pub fn eq<T: AsRef<str>, U: AsRef<str>>(self, column: T, value: U) -> Self {
        self.op(column.as_ref(), "eq.", value.as_ref())
    }

    /// `<column>=neq.<value>`.
    pub fn neq<T: AsRef<str>, U: AsRef<str>>(self, column: T, value: U) -> Self {
        self.op(column.as_ref(), "neq.", value.as_ref())
    }

    /// `<column>=in.(a,b,...)`. Like postgrest-rs, values are joined as they
    /// are: a value with a comma or parenthesis must be quoted by the caller.
    pub fn in_<T, U, V>(mut self, column: T, values: U) -> Self
    where
        T: AsRef<str>,
        U: IntoIterator<Item = V>,
        V: AsRef<str>,
    {
        let mut list = String::from("in.(");
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            list.push_str(v.as_ref());
        }
        list.push(')');
        self.queries.push((column.as_ref().to_string(), list));
        self
    }

    fn op(mut self, column: &str, op: &str, value: &str) -> Self {
        let mut v = String::with_capacity(op.len() + value.len());
        v.push_str(op);
        v.push_str(value);
        self.queries.push((column.to_string(), v));
        self
    }

    /// `POST` the JSON `body` (a row or an array of rows); the rows come back.
    pub fn insert<T: Into<String>>(mut self, body: T) -> Self {
        self.method = Method::Post;
        self.prefer = Some("return=representation");
        self.body = Some(body.into());
        self
    }

    /// `PATCH` the filtered rows with the JSON `body`; they come back.
    pub fn update<T: Into<String>>(mut self, body: T) -> Self {
        self.method = Method::Patch;
        self.prefer = Some("return=representation");
        self.body = Some(body.into());
        self
    }

    /// `DELETE` the filtered rows; they come back.
    pub fn delete(mut self) -> Self {
        self.method = Method::Delete;
        self.prefer = Some("return=representation");
        self
    }

    /// `POST` with `params` (a JSON object) as the body: a `/rpc` call.
    pub(crate) fn rpc(mut self, params: String) -> Self {
        self.method = Method::Post;
        self.body = Some(params);
        self
    }

    /// The request PostgREST receives.
    pub fn build(self) -> Result<Request, String> {
        let mut url = self.url.map_err(|e| format!("invalid SUPABASE_URL: {e}"))?;
        for (i, (k, v)) in self.queries.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            query_encode(k, &mut url);
            url.push('=');
            query_encode(v, &mut url);
        }
        for (name, v) in [("apikey", &*self.apikey), ("authorization", &*self.authorization)] {
            if !valid_header_value(v) {
                return Err(format!("the {name} header has characters a header cannot carry"));
            }
        }
        let mut headers = Headers::new();
        headers.append("apikey", &*self.apikey);
        headers.append("authorization", &*self.authorization);
        headers.append("accept", "application/json");
        if let Some(r) = self.range {
            headers.append("range-unit", "items");
            headers.append("range", r);
        }
        if let Some(p) = self.prefer {
            headers.append("prefer", p);
        }
        if !matches!(self.method, Method::Get | Method::Head) {
            headers.append("content-type", "application/json");
        }
        Ok(Request {
            method: self.method,
            url,
            headers,
            body: self.body.map(String::into_bytes).unwrap_or_default(),
        })
    }
}

/// Visible ASCII, space and tab (and obs-text), as `http::HeaderValue` takes.
fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escape(b: u8, out: &mut String) {
    out.push('%');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// A query name or value: `form_urlencoded::byte_serialize`'s set (alphanumerics
/// and `*-._` stay, everything else `%XX`) but a space is `%20`, not `+`,
/// which not every PostgREST reads as a space.
pub fn query_encode(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            _ => push_escape(b, out),
        }
    }
}

/// A path segment: unreserved characters stay, everything else (`/`, `?`,
/// `#`, `%`, spaces, non-ASCII) is escaped, so a name is always one segment.
fn encode_path_segment(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => push_escape(b, out),
        }
    }
}

/// Checks a PostgREST base URL (`{SUPABASE_URL}/rest/v1`) without a URL
/// parser and returns it normalized as the `url` crate would: scheme and host
/// lowercase, the default port left out, no trailing `/`. http or https; the
/// host ASCII (a punycode `xn--` label is fine, a Unicode one is refused:
/// encode it); no userinfo, query or fragment. The reason never repeats the
/// URL (it may carry a password).
pub fn parse_base_url(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim_end_matches('/');
    let (scheme, rest) = raw.split_once("://").ok_or("no http:// or https:// scheme")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return Err("the scheme must be http or https"),
    };
    if rest.contains(['?', '#']) {
        return Err("a query or fragment is not allowed");
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("credentials in the URL are not allowed");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("an unclosed IPv6 bracket")?;
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err("an invalid IPv6 address");
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after the IPv6 address")?),
        };
        (&authority[..h.len() + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host");
    }
    if !host.is_ascii() {
        return Err("the host must be ASCII (use its punycode xn-- form)");
    }
    if !host.starts_with('[')
        && !host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err("the host has characters a host name cannot have");
    }
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err("an invalid port");
            }
            let n: u32 = p.parse().map_err(|_| "an invalid port")?;
            if n > 65535 {
                return Err("an invalid port");
            }
            let n = n.to_string();
            (n != default_port).then_some(n)
        }
    };
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@%".contains(&b))
    {
        return Err("the path has characters a URL path cannot have");
    }
    let mut out = String::with_capacity(raw.len());
    out.push_str(&scheme);
    out.push_str("://");
    out.push_str(&host.to_ascii_lowercase());
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p);
    }
    out.push_str(path);
    Ok(out)
}
