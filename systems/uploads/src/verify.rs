//! Completion checks against what the storage holds, never what the client
//! says: the object's size, its first bytes (sniffed) and its whole SHA-256,
//! read back in ranges. A refused object is deleted, so a mismatching file
//! never stays stored under a document.

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::ApiError;
use edgeworks_storage::{CompletedPart, ObjectKey, S3Client, S3Error, SigningTime, UploadedPart};
use edgeworks_uploads_protocol::digest::StreamHash;
use edgeworks_uploads_protocol::file_type::{sniff, DocumentType, SNIFF_BYTES};
use serde_json::json;

/// What a verified object turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its size.
    pub size: u64,
    /// The sniffed type (equal to the declared one).
    pub sniffed: DocumentType,
}

/// What a document declared.
#[derive(Debug, Clone)]
pub struct Declared<'a> {
    /// Bucket.
    pub bucket: &'a str,
    /// Key.
    pub key: &'a ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// Type.
    pub content_type: DocumentType,
    /// Hex SHA-256.
    pub sha256: &'a str,
}

/// Maps a storage failure to the client's error.
pub fn storage_error(e: S3Error) -> ApiError {
    e.to_api_error()
}

/// Which of the planned parts (`expected`: number and size) the storage does
/// not hold at the planned size.
pub fn missing_parts(expected: &[(u32, u64)], stored: &[UploadedPart]) -> Vec<u32> {
    expected
        .iter()
        .filter(|(n, size)| {
            !stored
                .iter()
                .any(|p| u32::from(p.part_number) == *n && p.size == *size && !p.etag.is_empty())
        })
        .map(|(n, _)| *n)
        .collect()
}

/// The completion list for the planned parts, from what the storage holds.
pub fn completion_list(expected: &[(u32, u64)], stored: &[UploadedPart]) -> Vec<CompletedPart> {
    expected
        .iter()
        .filter_map(|(n, _)| stored.iter().find(|p| u32::from(p.part_number) == *n))
        .map(|p| CompletedPart {
            part_number: p.part_number,
            etag: p.etag.clone(),
        })
        .collect()
}

async fn refuse<C: HttpClient>(s3: &S3Client<C>, d: &Declared<'_>, at: SigningTime, err: ApiError) -> ApiError {
    // Best effort: a delete that fails leaves an object no document points to as verified.
    let _ = s3.delete_object(d.bucket, d.key, at).await;
    err
}

/// Ranges of `chunk` bytes covering `size` bytes, as (first, last).
pub fn ranges(size: u64, chunk: u64) -> Vec<(u64, u64)> {
    let chunk = chunk.max(1);
    (0..size.div_ceil(chunk))
        .map(|i| (i * chunk, ((i + 1) * chunk).min(size) - 1))
        .collect()
}

/// The hex SHA-256 of the stored object, read in ranges. The next range is
/// requested before the current one is hashed, so the transfer overlaps the
/// hashing (the request starts when its future is first polled).
async fn hash_object<C: HttpClient>(
    s3: &S3Client<C>,
    d: &Declared<'_>,
    chunk_bytes: u64,
    at: SigningTime,
) -> Result<String, ApiError> {
    let read = |(first, last): (u64, u64)| async move {
        let bytes = s3
            .get_object_range(d.bucket, d.key, first, last, at)
            .await
            .map_err(storage_error)?;
        if bytes.len() as u64 != last - first + 1 {
            return Err(ApiError::upstream(
                "storage_short_read",
                "the storage answered a range with the wrong length",
            ));
        }
        Ok(bytes)
    };
    let mut hash = StreamHash::default();
    let mut pending = ranges(d.size, chunk_bytes).into_iter();
    let Some(first) = pending.next() else {
        return Ok(hash.finish_hex());
    };
    let mut current = read(first).await?;
    for range in pending {
        let (next, ()) = futures_util::future::join(read(range), async { hash.update(&current) }).await;
        current = next?;
    }
    hash.update(&current);
    Ok(hash.finish_hex())
}

/// Checks the stored object against the declaration; deletes it when it
/// does not match. `Ok(None)`: nothing is stored under the key yet.
pub async fn verify_object<C: HttpClient>(
    s3: &S3Client<C>,
    d: &Declared<'_>,
    chunk_bytes: u64,
    at: SigningTime,
) -> Result<Option<Verified>, ApiError> {
    let head = match s3.head_object(d.bucket, d.key, at).await {
        Ok(h) => h,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(storage_error(e)),
    };
    if head.content_length != d.size {
        let e = ApiError::new(
            422,
            "size_mismatch",
            "the stored file is not the size that was declared",
        )
        .with_details(json!({ "declared": d.size, "stored": head.content_length }));
        return Err(refuse(s3, d, at, e).await);
    }
    let prefix = s3
        .get_object_prefix(d.bucket, d.key, SNIFF_BYTES as u64, at)
        .await
        .map_err(storage_error)?;
    let sniffed = sniff(&prefix.bytes);
    if sniffed != Some(d.content_type) {
        let e = ApiError::new(
            422,
            "content_type_mismatch",
            "the file's content is not what its name and declared type say; it was deleted",
        )
        .with_details(json!({ "declared": d.content_type.mime(), "sniffed": sniffed.map(|t| t.mime()) }));
        return Err(refuse(s3, d, at, e).await);
    }
    let hash = hash_object(s3, d, chunk_bytes, at).await?;
    if hash != d.sha256 {
        let e = ApiError::new(
            422,
            "hash_mismatch",
            "the stored bytes do not have the SHA-256 that was declared; the file was deleted",
        );
        return Err(refuse(s3, d, at, e).await);
    }
    Ok(Some(Verified {
        size: head.content_length,
        sniffed: d.content_type,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(n: u16, size: u64) -> UploadedPart {
        UploadedPart {
            part_number: n,
            etag: format!("\"e{n}\""),
            size,
            last_modified: None,
        }
    }

    #[test]
    fn parts_missing_or_of_the_wrong_size_are_reported() {
        let expected = [(1, 10), (2, 10), (3, 4)];
        assert_eq!(missing_parts(&expected, &[stored(1, 10), stored(3, 5)]), vec![2, 3]);
        assert!(missing_parts(&expected, &[stored(3, 4), stored(1, 10), stored(2, 10)]).is_empty());
    }

    #[test]
    fn ranges_cover_the_object_exactly() {
        assert_eq!(ranges(10, 4), vec![(0, 3), (4, 7), (8, 9)]);
        assert_eq!(ranges(8, 4), vec![(0, 3), (4, 7)]);
        assert!(ranges(0, 4).is_empty());
        assert_eq!(ranges(3, 0), vec![(0, 0), (1, 1), (2, 2)]);
    }

    #[test]
    fn the_completion_list_follows_the_plan_not_the_listing() {
        let list = completion_list(&[(1, 10), (2, 4)], &[stored(2, 4), stored(1, 10), stored(7, 1)]);
        assert_eq!(
            list.iter()
                .map(|p| (p.part_number, p.etag.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "\"e1\""), (2, "\"e2\"")]
        );
    }
}
