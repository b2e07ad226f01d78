//! The three document types the pipeline takes, what a file name and a
//! declared type must agree on, and what the first bytes of a file say it
//! really is. The declaration is checked before any URL is issued; the
//! sniffing is repeated by the server on the stored bytes, so a renamed
//! binary is refused whatever the client said.

use serde::{Deserialize, Serialize};

/// A type the pipeline processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum DocumentType {
    /// `application/pdf`, `.pdf`.
    Pdf,
    /// Word 2007+, `.docx` (a ZIP container).
    Docx,
    /// `text/plain`, `.txt` (UTF-8 without NUL bytes).
    Txt,
}

/// The MIME type of a DOCX file.
pub const DOCX_MIME: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// How many leading bytes [`sniff`] reads.
pub const SNIFF_BYTES: usize = 4096;

/// Why a declaration is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeRejection {
    /// Not one of PDF, DOCX, TXT.
    UnsupportedType,
    /// The extension is not one of `.pdf`, `.docx`, `.txt` (executables among them).
    UnsupportedExtension,
    /// The extension names another type than the declared one.
    ExtensionMismatch,
}

impl TypeRejection {
    /// The stable error code.
    pub fn code(self) -> &'static str {
        match self {
            TypeRejection::UnsupportedType => "unsupported_file_type",
            TypeRejection::UnsupportedExtension => "unsupported_file_extension",
            TypeRejection::ExtensionMismatch => "extension_type_mismatch",
        }
    }

    /// What to tell the client.
    pub fn message(self) -> &'static str {
        match self {
            TypeRejection::UnsupportedType => "only PDF, DOCX and plain-text documents are accepted",
            TypeRejection::UnsupportedExtension => "the file name must end in .pdf, .docx or .txt",
            TypeRejection::ExtensionMismatch => "the file name's extension does not match the declared content type",
        }
    }
}

impl DocumentType {
    /// Every type.
    pub const ALL: [DocumentType; 3] = [DocumentType::Pdf, DocumentType::Docx, DocumentType::Txt];

    /// Its MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            DocumentType::Pdf => "application/pdf",
            DocumentType::Docx => DOCX_MIME,
            DocumentType::Txt => "text/plain",
        }
    }

    /// Its extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            DocumentType::Pdf => "pdf",
            DocumentType::Docx => "docx",
            DocumentType::Txt => "txt",
        }
    }

    /// The type of a MIME type (parameters such as `; charset=utf-8` ignored).
    pub fn from_mime(mime: &str) -> Option<DocumentType> {
        let essence = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        DocumentType::ALL.into_iter().find(|t| t.mime() == essence)
    }

    /// The type a file name's extension names.
    pub fn from_filename(name: &str) -> Option<DocumentType> {
        let (_, ext) = name.rsplit_once('.')?;
        let ext = ext.to_ascii_lowercase();
        DocumentType::ALL.into_iter().find(|t| t.extension() == ext)
    }
}

/// Checks that `filename` and `content_type` name the same supported type.
pub fn check_declared(filename: &str, content_type: &str) -> Result<DocumentType, TypeRejection> {
    let by_name = DocumentType::from_filename(filename).ok_or(TypeRejection::UnsupportedExtension)?;
    let by_mime = DocumentType::from_mime(content_type).ok_or(TypeRejection::UnsupportedType)?;
    if by_name != by_mime {
        return Err(TypeRejection::ExtensionMismatch);
    }
    Ok(by_mime)
}

/// What the first bytes of a file are. `None`: none of the three (an
/// executable, an image, binary data). A prefix cut inside a UTF-8 sequence
/// still counts as text.
pub fn sniff(prefix: &[u8]) -> Option<DocumentType> {
    let prefix = &prefix[..prefix.len().min(SNIFF_BYTES)];
    // PDF readers accept the header anywhere in the first KiB; producers write it first.
    if prefix.starts_with(b"%PDF-") {
        return Some(DocumentType::Pdf);
    }
    // DOCX is a ZIP whose first entry is normally [Content_Types].xml; any local
    // file header is accepted (a ZIP is what the container check can see).
    if prefix.starts_with(b"PK\x03\x04") {
        return Some(DocumentType::Docx);
    }
    if looks_like_text(prefix) {
        return Some(DocumentType::Txt);
    }
    None
}

fn looks_like_text(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return false;
    }
    let valid = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        // A multi-byte character cut by the end of the prefix is still text.
        Err(e) if e.error_len().is_none() && bytes.len() - e.valid_up_to() < 4 => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return false,
    };
    // Tabs, newlines, carriage returns and form feeds are text; other C0 controls are not.
    !valid
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c') && (c as u32) < 0x20 || c == '\x7f')
}

/// Whether what was sniffed is what was declared.
pub fn sniffed_matches(declared: DocumentType, prefix: &[u8]) -> bool {
    sniff(prefix) == Some(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declaration_needs_a_supported_type_and_a_matching_extension() {
        assert_eq!(check_declared("report.PDF", "application/pdf"), Ok(DocumentType::Pdf));
        assert_eq!(
            check_declared("notes.txt", "text/plain; charset=utf-8"),
            Ok(DocumentType::Txt)
        );
        assert_eq!(check_declared("cv.docx", DOCX_MIME), Ok(DocumentType::Docx));
        assert_eq!(
            check_declared("setup.exe", "application/pdf"),
            Err(TypeRejection::UnsupportedExtension)
        );
        assert_eq!(
            check_declared("setup.exe", "application/x-msdownload"),
            Err(TypeRejection::UnsupportedExtension)
        );
        assert_eq!(
            check_declared("a.pdf", "image/png"),
            Err(TypeRejection::UnsupportedType)
        );
        assert_eq!(
            check_declared("a.txt", "application/pdf"),
            Err(TypeRejection::ExtensionMismatch)
        );
        assert_eq!(
            check_declared("pdf", "application/pdf"),
            Err(TypeRejection::UnsupportedExtension)
        );
    }

    #[test]
    fn first_bytes_tell_the_real_type() {
        assert_eq!(sniff(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3"), Some(DocumentType::Pdf));
        assert_eq!(sniff(b"PK\x03\x04\x14\x00\x06\x00"), Some(DocumentType::Docx));
        assert_eq!(sniff("hello, world\n\tna\u{ef}ve".as_bytes()), Some(DocumentType::Txt));
        // A UTF-8 character cut at the end of the prefix.
        assert_eq!(sniff(&"caf\u{e9}".as_bytes()[..4]), Some(DocumentType::Txt));
    }

    #[test]
    fn binaries_are_none_of_the_three() {
        assert_eq!(sniff(b"MZ\x90\x00\x03\x00\x00\x00"), None);
        assert_eq!(sniff(b"\x7fELF\x02\x01\x01"), None);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n"), None);
        assert_eq!(sniff(b"text then \x00 a NUL"), None);
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(&[0xff, 0xfe, 0x00, 0x41]), None);
        assert!(!sniffed_matches(DocumentType::Pdf, b"MZ\x90\x00"));
        assert!(sniffed_matches(DocumentType::Pdf, b"%PDF-1.4"));
    }
}
