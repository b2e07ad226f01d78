//! Redaction of secrets before anything is logged or echoed.
//!
//! Two passes: known secret values (taken from the environment by name) are
//! replaced wherever they appear, and anything shaped like a JWT or a bearer
//! credential is replaced even when we did not know it was a secret.

pub const REDACTED: &str = "[REDACTED]";

/// Env names whose values are treated as secrets.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL", "JWKS"]
        .iter()
        .any(|s| n.contains(s))
}

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

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
        Redactor { secrets }
    }

    pub fn add(&mut self, secret: &str) {
        if secret.len() >= 8 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        redact_patterns(&out)
    }
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Replaces JWT-shaped tokens (`eyJ….….…`) and the credential after
/// `Bearer ` / `apikey=`-style prefixes.
pub fn redact_patterns(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
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
        // Copy one UTF-8 character.
        let ch_len = utf8_len(bytes[i]);
        let end = (i + ch_len).min(bytes.len());
        out.push_str(&text[i..end]);
        i = end;
    }
    out
}

fn utf8_len(b: u8) -> usize {
    match b {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

fn credential_prefix(b: &[u8]) -> Option<usize> {
    const PREFIXES: [&[u8]; 6] = [
        b"bearer ",
        b"apikey=",
        b"api_key=",
        b"x-goog-api-key: ",
        b"x-api-key: ",
        b"key=",
    ];
    for p in PREFIXES {
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
    fn multibyte_text_survives() {
        assert_eq!(redact_patterns("héllo wörld ✓"), "héllo wörld ✓");
    }
}
