//! How a file of a given size is uploaded: one presigned PUT up to
//! [`SINGLE_PUT_MAX_BYTES`], otherwise an S3 multipart upload in parts of
//! [`PART_BYTES`] (the last one shorter). Client and server compute the same
//! plan from the size, so neither has to trust the other's part list.

use serde::{Deserialize, Serialize};

/// The largest document accepted (50 MiB).
pub const MAX_FILE_BYTES: u64 = 50 * 1024 * 1024;
/// Files up to this size go in one PUT.
pub const SINGLE_PUT_MAX_BYTES: u64 = 5 * 1024 * 1024;
/// The part size of a multipart upload (S3's minimum for every part but the last).
pub const PART_BYTES: u64 = 5 * 1024 * 1024;

/// How the bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum UploadMethod {
    /// One presigned PUT.
    Single,
    /// S3 multipart, one presigned URL per part.
    Multipart,
}

/// One part: bytes `offset..offset + size` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PartRange {
    /// 1-based.
    pub part_number: u32,
    /// First byte.
    #[cfg_attr(test, ts(type = "number"))]
    pub offset: u64,
    /// Length in bytes.
    #[cfg_attr(test, ts(type = "number"))]
    pub size: u64,
}

/// The plan for one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct UploadPlan {
    /// Single or multipart.
    pub method: UploadMethod,
    /// Bytes per part (the whole file for a single PUT).
    #[cfg_attr(test, ts(type = "number"))]
    pub part_size: u64,
    /// The parts, in order; one for a single PUT.
    pub parts: Vec<PartRange>,
}

/// Why a size cannot be uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRejection {
    /// Zero bytes.
    Empty,
    /// Over [`MAX_FILE_BYTES`].
    TooLarge,
}

/// The plan for a file of `size` bytes.
pub fn plan(size: u64) -> Result<UploadPlan, SizeRejection> {
    if size == 0 {
        return Err(SizeRejection::Empty);
    }
    if size > MAX_FILE_BYTES {
        return Err(SizeRejection::TooLarge);
    }
    if size <= SINGLE_PUT_MAX_BYTES {
        return Ok(UploadPlan {
            method: UploadMethod::Single,
            part_size: size,
            parts: vec![PartRange {
                part_number: 1,
                offset: 0,
                size,
            }],
        });
    }
    let count = size.div_ceil(PART_BYTES);
    let parts = (0..count)
        .map(|i| {
            let offset = i * PART_BYTES;
            PartRange {
                part_number: (i + 1) as u32,
                offset,
                size: PART_BYTES.min(size - offset),
            }
        })
        .collect();
    Ok(UploadPlan {
        method: UploadMethod::Multipart,
        part_size: PART_BYTES,
        parts,
    })
}

/// The parts of `plan` still to send, given the part numbers the server says
/// are stored (its ListParts-reconciled session). Stored parts whose size is
/// not the planned one are sent again.
pub fn remaining(plan: &UploadPlan, stored: &[(u32, u64)]) -> Vec<PartRange> {
    plan.parts
        .iter()
        .filter(|p| !stored.iter().any(|(n, size)| *n == p.part_number && *size == p.size))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_files_go_in_one_put() {
        let p = plan(1024).unwrap();
        assert_eq!(p.method, UploadMethod::Single);
        assert_eq!(
            p.parts,
            vec![PartRange {
                part_number: 1,
                offset: 0,
                size: 1024
            }]
        );
        assert_eq!(plan(SINGLE_PUT_MAX_BYTES).unwrap().method, UploadMethod::Single);
    }

    #[test]
    fn a_twelve_megabyte_file_is_three_parts_the_last_one_short() {
        let p = plan(12 * 1024 * 1024).unwrap();
        assert_eq!(p.method, UploadMethod::Multipart);
        let sizes: Vec<u64> = p.parts.iter().map(|p| p.size).collect();
        assert_eq!(sizes, vec![PART_BYTES, PART_BYTES, 2 * 1024 * 1024]);
        assert_eq!(p.parts[2].offset, 2 * PART_BYTES);
    }

    #[test]
    fn empty_and_oversized_files_are_refused() {
        assert_eq!(plan(0), Err(SizeRejection::Empty));
        assert_eq!(plan(MAX_FILE_BYTES + 1), Err(SizeRejection::TooLarge));
        assert_eq!(plan(51 * 1024 * 1024), Err(SizeRejection::TooLarge));
        assert_eq!(plan(MAX_FILE_BYTES).unwrap().parts.len(), 10);
    }

    #[test]
    fn resuming_skips_stored_parts_of_the_planned_size_only() {
        let p = plan(12 * 1024 * 1024).unwrap();
        let left = remaining(&p, &[(1, PART_BYTES), (3, 5)]);
        assert_eq!(left.iter().map(|p| p.part_number).collect::<Vec<_>>(), vec![2, 3]);
        assert!(remaining(&p, &[(1, PART_BYTES), (2, PART_BYTES), (3, 2 * 1024 * 1024)]).is_empty());
    }

    proptest! {
        #[test]
        fn parts_tile_the_file_exactly(size in 1u64..=MAX_FILE_BYTES) {
            let p = plan(size).unwrap();
            let mut next = 0;
            for (i, part) in p.parts.iter().enumerate() {
                prop_assert_eq!(part.part_number as usize, i + 1);
                prop_assert_eq!(part.offset, next);
                prop_assert!(part.size > 0);
                if i + 1 < p.parts.len() { prop_assert_eq!(part.size, PART_BYTES); }
                next += part.size;
            }
            prop_assert_eq!(next, size);
        }
    }
}
