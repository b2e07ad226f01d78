//! SHA-256 of a whole file and of each of its planned parts, in one pass over
//! the bytes in chunks of any size: the whole-file hash is the document's
//! identity (dedup, verification), the part hashes are signed into each
//! part's URL so the storage refuses a part whose bytes differ.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Hex (lower case) of a SHA-256.
pub fn hex_of(hash: &[u8; 32]) -> String {
    hex::encode(hash)
}

/// Base64 (standard, padded) of a SHA-256: the form of `x-amz-checksum-sha256`.
pub fn base64_of(hash: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(hash)
}

/// Whether `s` is a lower-case hex SHA-256.
pub fn is_hex_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` is a base64 SHA-256.
pub fn is_base64_sha256(s: &str) -> bool {
    s.len() == 44
        && base64::engine::general_purpose::STANDARD
            .decode(s)
            .is_ok_and(|b| b.len() == 32)
}

/// The digests of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct FileDigests {
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
    /// Base64 SHA-256 of each part, in part order.
    pub part_sha256: Vec<String>,
}

/// Hashes a file fed in order, in chunks of any size.
#[derive(Clone)]
pub struct FileHasher {
    whole: Sha256,
    part: Sha256,
    part_size: u64,
    in_part: u64,
    parts: Vec<[u8; 32]>,
}

impl FileHasher {
    /// A hasher cutting parts every `part_size` bytes (0: one part).
    pub fn new(part_size: u64) -> FileHasher {
        FileHasher {
            whole: Sha256::new(),
            part: Sha256::new(),
            part_size: if part_size == 0 { u64::MAX } else { part_size },
            in_part: 0,
            parts: Vec::new(),
        }
    }

    /// The next bytes of the file.
    pub fn update(&mut self, mut chunk: &[u8]) {
        self.whole.update(chunk);
        while !chunk.is_empty() {
            let room = self.part_size - self.in_part;
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(chunk.len());
            self.part.update(&chunk[..take]);
            self.in_part += take as u64;
            chunk = &chunk[take..];
            if self.in_part == self.part_size {
                let done = std::mem::take(&mut self.part);
                self.parts.push(done.finalize().into());
                self.in_part = 0;
            }
        }
    }

    /// The digests (a trailing partial part is the last part).
    pub fn finish(mut self) -> FileDigests {
        if self.in_part > 0 || self.parts.is_empty() {
            self.parts.push(self.part.finalize().into());
        }
        let whole: [u8; 32] = self.whole.finalize().into();
        FileDigests {
            sha256: hex_of(&whole),
            part_sha256: self.parts.iter().map(base64_of).collect(),
        }
    }
}

/// The whole-file SHA-256 of bytes fed in ranges (the server's verification
/// of a stored object), as hex.
#[derive(Clone, Default)]
pub struct StreamHash(Sha256);

impl StreamHash {
    /// The next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// Hex of the hash.
    pub fn finish_hex(self) -> String {
        hex_of(&self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn the_known_vectors_come_out() {
        let mut h = FileHasher::new(0);
        h.update(b"abc");
        let d = h.finish();
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            d.part_sha256,
            vec!["ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=".to_string()]
        );
        assert_eq!(FileHasher::new(4).finish().sha256, EMPTY_HEX);
        assert!(is_hex_sha256(EMPTY_HEX));
        assert!(!is_hex_sha256(&EMPTY_HEX.to_uppercase()));
        assert!(is_base64_sha256("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="));
        assert!(!is_base64_sha256("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0"));
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_digests(data in prop::collection::vec(any::<u8>(), 0..3000), cut in 1usize..700, part in 1u64..900) {
            let mut chunked = FileHasher::new(part);
            for c in data.chunks(cut) { chunked.update(c); }
            let got = chunked.finish();
            let mut whole = StreamHash::default();
            whole.update(&data);
            prop_assert_eq!(&got.sha256, &whole.finish_hex());
            let expected: Vec<String> = if data.is_empty() {
                vec![base64_of(&Sha256::digest(b"").into())]
            } else {
                data.chunks(part as usize).map(|p| base64_of(&Sha256::digest(p).into())).collect()
            };
            prop_assert_eq!(got.part_sha256, expected);
        }
    }
}
