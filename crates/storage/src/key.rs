//! Object keys, always scoped to their owner: `<user_id>/<path>`.
//!
//! A key that reaches S3 has passed through here. Each way a key can be
//! wrong has its own [`KeyRejection`] with a stable code, so a client (and a
//! test) can tell a traversal attempt from an over-long name. The allowed
//! characters are the ones Supabase Storage accepts (its `InvalidKey` rule,
//! S3's "safe characters" plus a few that need care), so a key valid here is
//! valid on Supabase, AWS S3, R2 and MinIO alike.

use edgeworks_core::ApiError;
use serde_json::json;

/// S3's limit on a key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;
/// User ids are UUIDs in Supabase; this bound only guards the prefix.
const MAX_OWNER_BYTES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRejection {
    Empty,
    TooLong,
    ControlCharacter,
    Backslash,
    AbsolutePath,
    EmptySegment,
    DotSegment,
    UnsupportedCharacter,
    InvalidOwner,
    NotUserScoped,
    WrongOwner,
}

impl KeyRejection {
    pub const ALL: [KeyRejection; 11] = [
        KeyRejection::Empty,
        KeyRejection::TooLong,
        KeyRejection::ControlCharacter,
        KeyRejection::Backslash,
        KeyRejection::AbsolutePath,
        KeyRejection::EmptySegment,
        KeyRejection::DotSegment,
        KeyRejection::UnsupportedCharacter,
        KeyRejection::InvalidOwner,
        KeyRejection::NotUserScoped,
        KeyRejection::WrongOwner,
    ];

    /// Stable, machine-readable reason.
    pub fn code(self) -> &'static str {
        match self {
            KeyRejection::Empty => "key_empty",
            KeyRejection::TooLong => "key_too_long",
            KeyRejection::ControlCharacter => "key_control_character",
            KeyRejection::Backslash => "key_backslash",
            KeyRejection::AbsolutePath => "key_absolute_path",
            KeyRejection::EmptySegment => "key_empty_segment",
            KeyRejection::DotSegment => "key_dot_segment",
            KeyRejection::UnsupportedCharacter => "key_unsupported_character",
            KeyRejection::InvalidOwner => "key_invalid_owner",
            KeyRejection::NotUserScoped => "key_not_user_scoped",
            KeyRejection::WrongOwner => "key_wrong_owner",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            KeyRejection::Empty => "the object path is empty",
            KeyRejection::TooLong => "the object key is longer than 1024 bytes",
            KeyRejection::ControlCharacter => "the object path contains a control character",
            KeyRejection::Backslash => "the object path contains a backslash; use '/' between folders",
            KeyRejection::AbsolutePath => "the object path must be relative (no leading '/')",
            KeyRejection::EmptySegment => "the object path has an empty segment ('//' or a trailing '/')",
            KeyRejection::DotSegment => "the object path has a '.' or '..' segment",
            KeyRejection::UnsupportedCharacter => {
                "the object path has a character storage does not accept; use letters, digits, space and !-_.*'()&$@=;:+,?"
            }
            KeyRejection::InvalidOwner => "the owner id is not a valid key prefix",
            KeyRejection::NotUserScoped => "the object key does not start with an owner folder",
            KeyRejection::WrongOwner => "the object belongs to another user",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            KeyRejection::WrongOwner => 403,
            _ => 422,
        }
    }

    /// The client-facing error, in the shape every validation failure has
    /// (`details.fields = [{field, code, message}]`); `field` names the
    /// request field the path came from.
    pub fn to_api_error(self, field: &str) -> ApiError {
        let details = json!({ "fields": [{ "field": field, "code": self.code(), "message": self.message() }] });
        match self {
            KeyRejection::WrongOwner => ApiError::forbidden(self.code(), self.message()).with_details(details),
            _ => ApiError::unprocessable(format!("{field}: {}", self.message()), details),
        }
    }
}

impl std::fmt::Display for KeyRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for KeyRejection {}

impl From<KeyRejection> for ApiError {
    fn from(r: KeyRejection) -> ApiError {
        r.to_api_error("path")
    }
}

/// A validated, owner-scoped object key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    key: String,
    owner_len: usize,
}

impl ObjectKey {
    /// `<user_id>/<relative>`, with `relative` checked segment by segment.
    pub fn for_user(user_id: &str, relative: &str) -> Result<ObjectKey, KeyRejection> {
        check_owner(user_id)?;
        check_relative(relative)?;
        let key = format!("{user_id}/{relative}");
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyRejection::TooLong);
        }
        Ok(ObjectKey {
            key,
            owner_len: user_id.len(),
        })
    }

    /// Validates a complete key whose first segment is its owner (keys read
    /// back from the database or from a storage event).
    pub fn parse(full: &str) -> Result<ObjectKey, KeyRejection> {
        check_relative(full)?;
        let Some((owner, rest)) = full.split_once('/') else {
            return Err(KeyRejection::NotUserScoped);
        };
        check_owner(owner)?;
        ObjectKey::for_user(owner, rest)
    }

    /// Like [`ObjectKey::parse`], and the owner must be `user_id`.
    pub fn parse_owned_by(full: &str, user_id: &str) -> Result<ObjectKey, KeyRejection> {
        let key = ObjectKey::parse(full)?;
        if key.owner() != user_id {
            return Err(KeyRejection::WrongOwner);
        }
        Ok(key)
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    pub fn owner(&self) -> &str {
        &self.key[..self.owner_len]
    }

    /// The part after `<owner>/`.
    pub fn relative(&self) -> &str {
        &self.key[self.owner_len + 1..]
    }

    /// The last segment (the file name).
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

fn check_owner(owner: &str) -> Result<(), KeyRejection> {
    let ok = !owner.is_empty()
        && owner.len() <= MAX_OWNER_BYTES
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(KeyRejection::InvalidOwner)
    }
}

/// Characters Supabase Storage accepts in a key besides `/`.
fn is_portable_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " !-_.*'()&$@=;:+,?".contains(c)
}

fn check_relative(path: &str) -> Result<(), KeyRejection> {
    if path.is_empty() {
        return Err(KeyRejection::Empty);
    }
    if path.len() > MAX_KEY_BYTES {
        return Err(KeyRejection::TooLong);
    }
    if path.chars().any(char::is_control) {
        return Err(KeyRejection::ControlCharacter);
    }
    if path.contains('\\') {
        return Err(KeyRejection::Backslash);
    }
    if path.starts_with('/') {
        return Err(KeyRejection::AbsolutePath);
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err(KeyRejection::EmptySegment);
        }
        if segment == "." || segment == ".." {
            return Err(KeyRejection::DotSegment);
        }
    }
    if !path.chars().all(|c| c == '/' || is_portable_char(c)) {
        return Err(KeyRejection::UnsupportedCharacter);
    }
    Ok(())
}

/// Turns a client-supplied file name into one safe key segment: the last
/// component of any path is kept, characters storage refuses become `_`,
/// leading dots and surrounding spaces are dropped, and the result is cut
/// to 200 bytes keeping the extension. `None` when nothing usable is left.
pub fn portable_file_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let mapped: String = last
        .chars()
        .map(|c| if is_portable_char(c) { c } else { '_' })
        .collect();
    let trimmed = mapped.trim().trim_start_matches('.').trim();
    if trimmed.is_empty() || trimmed.chars().all(|c| c == '_' || c == '.') {
        return None;
    }
    const MAX: usize = 200;
    if trimmed.len() <= MAX {
        return Some(trimmed.to_string());
    }
    // Portable characters are ASCII, so byte slicing is on char boundaries.
    let (stem, ext) = match trimmed.rfind('.') {
        Some(i) if trimmed.len() - i <= 16 => (&trimmed[..i], &trimmed[i..]),
        _ => (trimmed, ""),
    };
    Some(format!("{}{}", &stem[..MAX - ext.len()], ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "7f9c2d1e-0000-4000-8000-000000000001";

    #[test]
    fn a_good_key_is_prefixed_with_its_owner() {
        let k = ObjectKey::for_user(USER, "photos/2024/cat (1).jpg").unwrap();
        assert_eq!(k.as_str(), format!("{USER}/photos/2024/cat (1).jpg"));
        assert_eq!(k.owner(), USER);
        assert_eq!(k.relative(), "photos/2024/cat (1).jpg");
        assert_eq!(k.file_name(), "cat (1).jpg");
        assert_eq!(ObjectKey::parse(k.as_str()).unwrap(), k);
    }

    #[test]
    fn each_bad_relative_path_is_refused_with_its_own_reason() {
        let long = "a".repeat(MAX_KEY_BYTES - USER.len());
        let cases: &[(&str, KeyRejection)] = &[
            ("", KeyRejection::Empty),
            (&long, KeyRejection::TooLong),
            ("a\u{0}b", KeyRejection::ControlCharacter),
            ("a\nb", KeyRejection::ControlCharacter),
            ("a\u{7f}b", KeyRejection::ControlCharacter),
            ("a\\b", KeyRejection::Backslash),
            ("/etc/passwd", KeyRejection::AbsolutePath),
            ("a//b", KeyRejection::EmptySegment),
            ("a/", KeyRejection::EmptySegment),
            ("../other-user/x", KeyRejection::DotSegment),
            ("a/../../b", KeyRejection::DotSegment),
            ("a/./b", KeyRejection::DotSegment),
            ("caf\u{e9}.txt", KeyRejection::UnsupportedCharacter),
            ("100%.txt", KeyRejection::UnsupportedCharacter),
            ("a#b", KeyRejection::UnsupportedCharacter),
        ];
        for (path, want) in cases {
            assert_eq!(ObjectKey::for_user(USER, path), Err(*want), "{path:?}");
        }
    }

    #[test]
    fn the_length_limit_counts_the_owner_prefix_in_utf8_bytes() {
        let fits = "a".repeat(MAX_KEY_BYTES - USER.len() - 1);
        assert!(ObjectKey::for_user(USER, &fits).is_ok());
        let over = "a".repeat(MAX_KEY_BYTES - USER.len());
        assert_eq!(ObjectKey::for_user(USER, &over), Err(KeyRejection::TooLong));
    }

    #[test]
    fn dots_inside_names_are_fine() {
        for ok in ["...", "a..b", ".hidden", "v1.2/file.tar.gz"] {
            assert!(ObjectKey::for_user(USER, ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn owner_must_be_one_safe_segment() {
        for bad in ["", "a/b", "..", "u s", "x\u{e9}"] {
            assert_eq!(
                ObjectKey::for_user(bad, "f.txt"),
                Err(KeyRejection::InvalidOwner),
                "{bad:?}"
            );
        }
        assert_eq!(
            ObjectKey::for_user(&"u".repeat(129), "f.txt"),
            Err(KeyRejection::InvalidOwner)
        );
    }

    #[test]
    fn parsing_a_full_key_requires_an_owner_folder_and_the_right_owner() {
        assert_eq!(ObjectKey::parse("file.txt"), Err(KeyRejection::NotUserScoped));
        assert_eq!(ObjectKey::parse("/u/file.txt"), Err(KeyRejection::AbsolutePath));
        assert_eq!(ObjectKey::parse("u/../v/file.txt"), Err(KeyRejection::DotSegment));
        assert_eq!(
            ObjectKey::parse_owned_by("someone-else/file.txt", USER),
            Err(KeyRejection::WrongOwner)
        );
        assert!(ObjectKey::parse_owned_by(&format!("{USER}/file.txt"), USER).is_ok());
    }

    #[test]
    fn every_reason_has_a_distinct_code_and_maps_to_a_client_error() {
        let mut codes: Vec<_> = KeyRejection::ALL.iter().map(|r| r.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), KeyRejection::ALL.len());
        for r in KeyRejection::ALL {
            let e = r.to_api_error("path");
            assert!(matches!(e.status(), 403 | 422), "{r:?}");
            assert_eq!(e.details().unwrap()["fields"][0]["code"], r.code());
            assert_eq!(e.details().unwrap()["fields"][0]["field"], "path");
        }
        let e = ApiError::from(KeyRejection::DotSegment);
        assert_eq!((e.status(), e.code()), (422, "validation_failed"));
        let e = ApiError::from(KeyRejection::WrongOwner);
        assert_eq!((e.status(), e.code()), (403, "key_wrong_owner"));
    }

    #[test]
    fn portable_file_name_keeps_the_last_component_and_replaces_the_rest() {
        assert_eq!(
            portable_file_name("C:\\Users\\me\\Report (final).PDF").as_deref(),
            Some("Report (final).PDF")
        );
        assert_eq!(portable_file_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(portable_file_name("фото 1.jpg").as_deref(), Some("____ 1.jpg"));
        assert_eq!(portable_file_name("  ..hidden  ").as_deref(), Some("hidden"));
        assert_eq!(portable_file_name("..."), None);
        assert_eq!(portable_file_name("фото"), None);
        let long = format!("{}.jpeg", "x".repeat(300));
        let cut = portable_file_name(&long).unwrap();
        assert_eq!(cut.len(), 200);
        assert!(cut.ends_with(".jpeg"));
        for name in ["a/b\\c", "\u{0}x", "x/..", "%%%.txt"] {
            if let Some(n) = portable_file_name(name) {
                assert!(ObjectKey::for_user(USER, &n).is_ok(), "{name:?} -> {n:?}");
            }
        }
    }
}
