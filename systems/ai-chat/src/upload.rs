//! What file-upload decides without I/O: a file's type from its first
//! bytes (never its name), which types a chat may carry, object paths under
//! the user's folder, and safe file names.

/// The largest file: 10 MB (10 × 1024 × 1024 bytes), as seed 002 says.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// How many leading bytes type detection reads.
pub const SNIFF_BYTES: usize = 4096;
/// The bucket.
pub const BUCKET: &str = "chat-files";

/// What the first bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// A type chats accept, with its MIME type.
    Allowed(&'static str),
    /// A program (PE, ELF, Mach-O, script with a `#!` line): never accepted.
    Executable(&'static str),
    /// Anything else binary.
    Unknown,
}

/// The type of a file from its first bytes (`head`, up to [`SNIFF_BYTES`]);
/// `file_name` only refines plain text into JSON, CSV or Markdown.
pub fn sniff(head: &[u8], file_name: &str) -> Sniffed {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"MZ") {
        return Sniffed::Executable("Windows executable (PE)");
    }
    if starts(b"\x7fELF") {
        return Sniffed::Executable("ELF executable");
    }
    if starts(&[0xfe, 0xed, 0xfa, 0xce])
        || starts(&[0xfe, 0xed, 0xfa, 0xcf])
        || starts(&[0xce, 0xfa, 0xed, 0xfe])
        || starts(&[0xcf, 0xfa, 0xed, 0xfe])
        || starts(&[0xca, 0xfe, 0xba, 0xbe])
    {
        return Sniffed::Executable("Mach-O executable");
    }
    if starts(b"#!") {
        return Sniffed::Executable("script with an interpreter line");
    }
    if starts(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]) {
        return Sniffed::Allowed("image/png");
    }
    if starts(&[0xff, 0xd8, 0xff]) {
        return Sniffed::Allowed("image/jpeg");
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Sniffed::Allowed("image/gif");
    }
    if head.len() >= 12 && starts(b"RIFF") && &head[8..12] == b"WEBP" {
        return Sniffed::Allowed("image/webp");
    }
    if starts(b"%PDF-") {
        return Sniffed::Allowed("application/pdf");
    }
    if is_text(head) {
        let ext = file_name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        return Sniffed::Allowed(match ext.as_str() {
            "json" => "application/json",
            "csv" => "text/csv",
            "md" | "markdown" => "text/markdown",
            _ => "text/plain",
        });
    }
    Sniffed::Unknown
}

/// UTF-8 (a character cut at the end of the sample is fine) without NUL
/// or other control characters besides whitespace.
fn is_text(head: &[u8]) -> bool {
    if head.is_empty() {
        return false;
    }
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // Only an incomplete last character is acceptable.
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return false,
    };
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}

/// A file name safe in an object key and a header: ASCII letters, digits,
/// `.`, `_`, `-` (anything else becomes `_`), no leading dot, at most 100
/// characters keeping the extension.
pub fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    let cleaned = if cleaned.is_empty() {
        "file".to_string()
    } else {
        cleaned
    };
    if cleaned.len() <= 100 {
        return cleaned;
    }
    match cleaned.rsplit_once('.') {
        Some((stem, ext)) if ext.len() <= 10 => format!("{}.{ext}", &stem[..100 - ext.len() - 1]),
        _ => cleaned[..100].to_string(),
    }
}

/// `<user id>/<upload id>/<safe name>`: every object sits in its owner's folder.
pub fn object_path(user_id: &str, upload_id: &str, file_name: &str) -> String {
    format!("{user_id}/{upload_id}/{}", safe_name(file_name))
}

/// The total size in a `Content-Range: bytes a-b/total` header.
pub fn total_from_content_range(v: &str) -> Option<u64> {
    v.rsplit_once('/')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_decides_not_the_name() {
        let exe = b"MZ\x90\x00\x03\x00\x00\x00";
        assert!(matches!(sniff(exe, "cat.png"), Sniffed::Executable(_)));
        let png = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0];
        assert_eq!(sniff(&png, "notes.txt"), Sniffed::Allowed("image/png"));
        assert_eq!(sniff(b"%PDF-1.7\n", "x"), Sniffed::Allowed("application/pdf"));
        assert_eq!(sniff(b"\x7fELF\x02", "x.txt"), Sniffed::Executable("ELF executable"));
        assert!(matches!(sniff(b"#!/bin/sh\nrm -rf /", "a.txt"), Sniffed::Executable(_)));
        assert_eq!(sniff(&[0, 1, 2, 3, 0xff], "data.bin"), Sniffed::Unknown);
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 ", "a"), Sniffed::Allowed("image/webp"));
    }

    #[test]
    fn text_is_utf8_without_control_characters_and_the_name_refines_it() {
        assert_eq!(
            sniff("héllo\nworld".as_bytes(), "a.txt"),
            Sniffed::Allowed("text/plain")
        );
        assert_eq!(sniff(b"{\"a\": 1}", "a.JSON"), Sniffed::Allowed("application/json"));
        assert_eq!(sniff(b"a,b\n1,2", "t.csv"), Sniffed::Allowed("text/csv"));
        assert_eq!(sniff(b"abc\0def", "a.txt"), Sniffed::Unknown);
        // A sample cut inside a multi-byte character is still text.
        let cut = &"aé".as_bytes()[..2];
        assert_eq!(sniff(cut, "a.txt"), Sniffed::Allowed("text/plain"));
        assert_eq!(sniff(b"\xff\xfe\xfa", "a.txt"), Sniffed::Unknown);
    }

    #[test]
    fn names_are_made_safe_for_keys_and_paths_stay_in_the_owners_folder() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("my photo (1).png"), "my_photo__1_.png");
        assert_eq!(safe_name(".htaccess"), "htaccess");
        assert_eq!(safe_name(""), "file");
        let long = format!("{}.png", "a".repeat(300));
        let s = safe_name(&long);
        assert_eq!((s.len(), s.ends_with(".png")), (100, true));
        assert_eq!(object_path("u", "i", "a/../b.txt"), "u/i/b.txt");
    }

    #[test]
    fn content_range_gives_the_total_size() {
        assert_eq!(total_from_content_range("bytes 0-4095/10485761"), Some(10_485_761));
        assert_eq!(total_from_content_range("bytes */0"), Some(0));
        assert_eq!(total_from_content_range("garbage"), None);
    }
}
