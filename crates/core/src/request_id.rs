//! `x-request-id`: echoed when the client sent a sane one, generated otherwise.

/// A client-supplied id is accepted only if it is short and made of
/// characters that are safe to put in logs and headers.
pub fn accept_client_id(value: &str) -> Option<&str> {
    let v = value.trim();
    if v.is_empty() || v.len() > 128 {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        Some(v)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_accepted_only_when_safe() {
        assert_eq!(accept_client_id(" abc-123 "), Some("abc-123"));
        assert_eq!(accept_client_id("a\nb"), None);
        assert_eq!(accept_client_id(&"x".repeat(129)), None);
        assert_eq!(accept_client_id(""), None);
    }
}
