//! Redaction of secrets before anything is logged or echoed.
//!
//! Two passes: known secret values (taken from the environment by name) are
//! replaced wherever they appear, and anything shaped like a JWT or a bearer
//! credential is replaced even when we did not know it was a secret.

use std::borrow::Cow;

pub const REDACTED: &str = "[REDACTED]";

/// Env names whose values are treated as secrets.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL", "JWKS"]
        .iter()
        .any(|s| n.contains(s))
}

#[derive(Debug, Clone)]
pub struct Redactor {
    secrets: Vec<String>,
    /// The pairs of bytes a secret or a credential pattern starts with: the
    /// single pass that finds nothing to redact (almost every line) looks up
    /// each position's two bytes here and compares further only on a hit.
    starts: PairSet,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::from_env([])
    }
}

/// A set of byte pairs, one bit each (8 KiB).
#[derive(Clone)]
struct PairSet(Box<[u64; 1024]>);

impl std::fmt::Debug for PairSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairSet")
    }
}

impl PairSet {
    fn empty() -> PairSet {
        PairSet(Box::new([0; 1024]))
    }
    fn index(a: u8, b: u8) -> usize {
        usize::from(a) << 8 | usize::from(b)
    }
    fn insert(&mut self, a: u8, b: u8) {
        let i = PairSet::index(a, b);
        self.0[i >> 6] |= 1 << (i & 63);
    }
    fn contains(&self, a: u8, b: u8) -> bool {
        let i = PairSet::index(a, b);
        self.0[i >> 6] & (1 << (i & 63)) != 0
    }
    /// `a` then `b`, either case (a credential prefix matches case-insensitively).
    fn insert_any_case(&mut self, a: u8, b: u8) {
        for a in [a.to_ascii_lowercase(), a.to_ascii_uppercase()] {
            for b in [b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
                self.insert(a, b);
            }
        }
    }
}

/// The bytes a credential pattern ([`redact_patterns`]) can start with.
const PATTERN_STARTS: [u8; 9] = *b"ebBaAxXkK";

impl Redactor {
    /// Collects the values of secret-named variables (short values are
    /// ignored: redacting "1" everywhere would only destroy the log).
    pub fn from_env<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut secrets: Vec<String> = vars
            .into_iter()
            .filter(|(k, v)| is_secret_name(k) && v.len() >= 8)
            .map(|(_, v)| v.to_string())
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let mut r = Redactor {
            secrets,
            starts: PairSet::empty(),
        };
        r.index();
        r
    }

    pub fn add(&mut self, secret: &str) {
        if secret.len() >= 8 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
            self.index();
        }
    }

    fn index(&mut self) {
        let mut starts = PairSet::empty();
        // Every secret is at least 8 bytes, every pattern at least 3.
        for s in &self.secrets {
            starts.insert(s.as_bytes()[0], s.as_bytes()[1]);
        }
        starts.insert(b'e', b'y');
        for p in CREDENTIAL_PREFIXES {
            starts.insert_any_case(p[0], p[1]);
        }
        self.starts = starts;
    }

    /// Whether `text` holds a secret or a credential-shaped run, in one pass
    /// over its bytes: each position costs one look-up of its two bytes; only
    /// where some secret or pattern starts with them are those compared.
    fn needs_redaction(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        for i in 0..bytes.len().saturating_sub(1) {
            if !self.starts.contains(bytes[i], bytes[i + 1]) {
                continue;
            }
            if self.secrets.iter().any(|s| bytes[i..].starts_with(s.as_bytes())) {
                return true;
            }
            if credential_at(bytes, i).is_some() {
                return true;
            }
        }
        false
    }

    pub fn redact(&self, text: &str) -> String {
        self.redact_cow(text).into_owned()
    }

    /// `text` itself when it carries nothing to redact (the common case: one
    /// scan, no copy), else the redacted copy.
    pub fn redact_cow<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.needs_redaction(text) {
            return Cow::Borrowed(text);
        }
        // Something is there: the exact passes (rare, so their cost is not the point).
        if !self.secrets.iter().any(|s| text.contains(s.as_str())) {
            return redact_patterns_cow(text);
        }
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        Cow::Owned(redact_patterns_cow(&out).into_owned())
    }

    /// Like [`Redactor::redact`], handing `text` back untouched (no copy) when
    /// nothing in it is redacted.
    pub fn redact_owned(&self, text: String) -> String {
        let redacted = match self.redact_cow(&text) {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        };
        redacted.unwrap_or(text)
    }
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Replaces JWT-shaped tokens (`eyJ….….…`) and the credential after
/// `Bearer ` / `apikey=`-style prefixes.
pub fn redact_patterns(text: &str) -> String {
    redact_patterns_cow(text).into_owned()
}

/// [`redact_patterns`] without the copy when nothing matches.
pub fn redact_patterns_cow(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut from = 0;
    while let Some(m) = next_credential(text.as_bytes(), from) {
        let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
        o.push_str(&text[copied..m.keep_end]);
        if m.end > m.keep_end {
            o.push_str(REDACTED);
        }
        copied = m.end;
        from = m.end;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

/// A credential-shaped run: `[start, keep_end)` stays (a prefix such as
/// `Bearer `), `[keep_end, end)` is replaced (nothing when empty).
struct Credential {
    keep_end: usize,
    end: usize,
}

/// The first credential-shaped run starting at or after `from`. Every match
/// starts with one of a few ASCII letters, so other bytes (UTF-8 continuation
/// bytes included) are passed over with one comparison; a match always ends
/// on a character boundary (it stops at ASCII bytes or the end).
fn next_credential(bytes: &[u8], from: usize) -> Option<Credential> {
    let mut i = from;
    while i < bytes.len() {
        if !PATTERN_STARTS.contains(&bytes[i]) {
            i += 1;
            continue;
        }
        if let Some(c) = credential_at(bytes, i) {
            return Some(c);
        }
        i += 1;
    }
    None
}

/// The credential-shaped run starting exactly at `i`, if any.
fn credential_at(bytes: &[u8], i: usize) -> Option<Credential> {
    if bytes[i..].starts_with(b"eyJ") && (i == 0 || !is_b64url(bytes[i - 1])) {
        // Scan a b64url run with at least one dot.
        let mut j = i;
        let mut dots = 0;
        while j < bytes.len() && (is_b64url(bytes[j]) || bytes[j] == b'.') {
            if bytes[j] == b'.' {
                dots += 1;
            }
            j += 1;
        }
        if dots >= 1 && j - i >= 16 {
            return Some(Credential { keep_end: i, end: j });
        }
    }
    if let Some(skip) = credential_prefix(&bytes[i..]) {
        let mut j = i + skip;
        while j < bytes.len() && !bytes[j].is_ascii_whitespace() && !b"\"',;&".contains(&bytes[j]) {
            j += 1;
        }
        return Some(Credential {
            keep_end: i + skip,
            end: j,
        });
    }
    None
}

/// What a credential follows (matched in either case).
const CREDENTIAL_PREFIXES: [&[u8]; 6] = [
    b"bearer ",
    b"apikey=",
    b"api_key=",
    b"x-goog-api-key: ",
    b"x-api-key: ",
    b"key=",
];

fn credential_prefix(b: &[u8]) -> Option<usize> {
    // Every prefix starts with one of these letters (either case).
    if !matches!(b.first().map(u8::to_ascii_lowercase), Some(b'b' | b'a' | b'x' | b'k')) {
        return None;
    }
    for p in CREDENTIAL_PREFIXES {
        if b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p) {
            return Some(p.len());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shaped_tokens_are_redacted() {
        let t = "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc_DEF-123 done";
        let r = redact_patterns(t);
        assert!(!r.contains("eyJ"), "{r}");
        assert!(r.contains("token [REDACTED] done"));
    }

    #[test]
    fn bearer_and_key_params_are_redacted() {
        let r = redact_patterns("Authorization: Bearer sk-live-abc123 and url?key=AIzaXYZ&x=1");
        assert!(!r.contains("sk-live-abc123"));
        assert!(!r.contains("AIzaXYZ"));
        assert!(r.contains("&x=1"));
    }

    #[test]
    fn env_secret_values_are_redacted_wherever_they_appear() {
        let red = Redactor::from_env([("GEMINI_API_KEY", "plain-secret-value"), ("PORT", "54321")]);
        let r = red.redact("calling with plain-secret-value on 54321");
        assert_eq!(r, "calling with [REDACTED] on 54321");
    }

    #[test]
    fn a_line_with_nothing_to_redact_is_not_copied() {
        let red = Redactor::from_env([("GEMINI_API_KEY", "plain-secret-value")]);
        let line = r#"{"level":"info","msg":"request","path":"/functions/v1/health","status":200}"#;
        assert!(matches!(red.redact_cow(line), Cow::Borrowed(_)));
        assert!(matches!(red.redact_cow("key=abc"), Cow::Owned(_)));
        assert!(matches!(red.redact_cow("x plain-secret-value"), Cow::Owned(_)));
    }

    /// The scanner before it skipped to candidate bytes: one character at a time.
    fn patterns_one_char_at_a_time(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i..].starts_with(b"eyJ") && (i == 0 || !is_b64url(bytes[i - 1])) {
                let mut j = i;
                let mut dots = 0;
                while j < bytes.len() && (is_b64url(bytes[j]) || bytes[j] == b'.') {
                    dots += usize::from(bytes[j] == b'.');
                    j += 1;
                }
                if dots >= 1 && j - i >= 16 {
                    out.push_str(REDACTED);
                    i = j;
                    continue;
                }
            }
            if let Some(skip) = credential_prefix(&bytes[i..]) {
                out.push_str(&text[i..i + skip]);
                let mut j = i + skip;
                while j < bytes.len() && !bytes[j].is_ascii_whitespace() && !b"\"',;&".contains(&bytes[j]) {
                    j += 1;
                }
                if j > i + skip {
                    out.push_str(REDACTED);
                }
                i = j;
                continue;
            }
            let c = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + c]);
            i += c;
        }
        out
    }

    #[test]
    fn skipping_to_candidates_redacts_exactly_what_the_char_by_char_scan_did() {
        // Pieces that start, almost start, or break a match, combined every way up to
        // four long (deterministic: no randomness in the test).
        let pieces = [
            "eyJ",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
            "eyJabc.d",
            "xeyJaaaaaaaaaaaaaaa.b",
            "Bearer ",
            "bearer tok",
            "BEARER  ",
            "apikey=",
            "api_key=v",
            "x-goog-api-key: k",
            "X-API-KEY: v",
            "key=",
            "KEY=&",
            "k",
            "e",
            "é",
            "✓ ",
            " ",
            "\"",
            "a.b",
            ";",
        ];
        let mut level = vec![String::new()];
        let mut cases = Vec::new();
        for _ in 0..4 {
            level = level
                .iter()
                .flat_map(|c| pieces.iter().map(move |p| format!("{c}{p}")))
                .collect();
            cases.extend(level.iter().cloned());
        }
        for c in &cases {
            assert_eq!(redact_patterns(c), patterns_one_char_at_a_time(c), "input {c:?}");
        }
    }

    #[test]
    fn the_one_pass_check_finds_whatever_the_exact_passes_redact() {
        let red = Redactor::from_env([
            ("GEMINI_API_KEY", "plain-secret-value"),
            (
                "SUPABASE_SERVICE_ROLE_KEY",
                "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZSJ9.sig",
            ),
            ("S3_SECRET_ACCESS_KEY", "Zsecret0001"),
        ]);
        let pieces = [
            "plain-secret-valu",
            "plain-secret-value",
            "Zsecret000",
            "Zsecret0001",
            "eyJhbGciOiJIUzI1NiJ9",
            ".eyJyb2xlIjoic2VydmljZSJ9.sig",
            "Bearer ",
            "key=",
            "{\"msg\":\"request\",",
            "é",
            " ",
        ];
        let mut level = vec![String::new()];
        for _ in 0..3 {
            level = level
                .iter()
                .flat_map(|c| pieces.iter().map(move |p| format!("{c}{p}")))
                .collect();
            for c in &level {
                let exact = red
                    .secrets
                    .iter()
                    .fold(c.clone(), |t, s| t.replace(s.as_str(), REDACTED));
                let exact = redact_patterns(&exact);
                assert_eq!(red.redact(c), exact, "input {c:?}");
                if exact == *c && !red.needs_redaction(c) {
                    assert!(matches!(red.redact_cow(c), Cow::Borrowed(_)));
                }
            }
        }
    }

    #[test]
    fn multibyte_text_survives() {
        assert_eq!(redact_patterns("héllo wörld ✓"), "héllo wörld ✓");
    }
}
