//! Identifiers: UUID v4 (random) and v7 (time-ordered), made from an [`Rng`]
//! and a [`Clock`] so tests can pin them, and a strict UUID syntax check.

use crate::platform::{Clock, Rng};

/// A random (version 4) UUID, lower-case hyphenated.
pub fn uuid_v4(rng: &mut dyn Rng) -> String {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

/// A version 7 UUID (RFC 9562): 48-bit big-endian Unix milliseconds, then
/// random bits, so ids sort roughly by creation time (good for B-tree
/// locality). Ids made in the same millisecond are not ordered among
/// themselves; nothing here relies on that.
pub fn uuid_v7(clock: &dyn Clock, rng: &mut dyn Rng) -> String {
    // Times before the epoch cannot be represented; clamp rather than wrap.
    let ms = clock.now_ms().clamp(0, (1i64 << 48) - 1) as u64;
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

fn format_uuid(b: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    s
}

/// `8-4-4-4-12` hex digits, either case, any version. Braces, URNs and the
/// unhyphenated form are refused: ids travel in URLs and filters, and one
/// spelling keeps comparisons simple.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The millisecond timestamp inside a v7 UUID, if `s` is one.
pub fn uuid_v7_timestamp_ms(s: &str) -> Option<i64> {
    if !is_uuid(s) || s.as_bytes()[14] != b'7' {
        return None;
    }
    let hex: String = s[..13].chars().filter(|c| *c != '-').collect();
    i64::from_str_radix(&hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{FixedClock, SeededRng};

    #[test]
    fn v4_has_version_and_variant_and_differs_per_call() {
        let mut rng = SeededRng(7);
        let a = uuid_v4(&mut rng);
        let b = uuid_v4(&mut rng);
        assert!(is_uuid(&a) && is_uuid(&b));
        assert_ne!(a, b);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn v7_embeds_the_clock_in_its_first_48_bits() {
        let ms = 1_700_000_000_123;
        let id = uuid_v7(&FixedClock(ms), &mut SeededRng(1));
        assert!(is_uuid(&id));
        assert_eq!(&id[14..15], "7");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(uuid_v7_timestamp_ms(&id), Some(ms));
        assert_eq!(&id[..13], "018bcfe5-687b");
    }

    #[test]
    fn v7_ids_sort_by_time_across_milliseconds() {
        let mut rng = SeededRng(3);
        let ids: Vec<String> = (0..50)
            .map(|i| uuid_v7(&FixedClock(1_700_000_000_000 + i * 7), &mut rng))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn v7_clamps_times_before_the_epoch() {
        let id = uuid_v7(&FixedClock(-5), &mut SeededRng(1));
        assert_eq!(uuid_v7_timestamp_ms(&id), Some(0));
    }

    #[test]
    fn is_uuid_accepts_only_the_hyphenated_form() {
        assert!(is_uuid("7D3C9C5E-4F7E-4A59-9A51-0E6F0D7C9A10"));
        assert!(is_uuid("00000000-0000-0000-0000-000000000000"));
        assert!(!is_uuid("7d3c9c5e4f7e4a599a510e6f0d7c9a10"));
        assert!(!is_uuid("{7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a10}"));
        assert!(!is_uuid("7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a1g"));
        assert!(!is_uuid("7d3c9c5e-4f7e-4a59-9a510-e6f0d7c9a10"));
        assert!(!is_uuid("7d3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a10 "));
        assert!(!is_uuid("é3c9c5e-4f7e-4a59-9a51-0e6f0d7c9a1"));
    }
}
