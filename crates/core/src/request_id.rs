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

/// Formats 16 random bytes as a UUID v4 string.
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
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

    #[test]
    fn uuid_v4_sets_version_and_variant() {
        let u = uuid_v4([0xff; 16]);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    }
}
