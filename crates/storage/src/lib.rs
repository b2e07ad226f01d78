//! edgeworks-storage: object storage over the S3 protocol, for Supabase Storage, AWS S3, R2,
//! MinIO and the local s3s-fs alike.
//!
//! SigV4 is computed here, in Rust, so a presigned URL costs no round trip;
//! request building, signing and XML parsing are pure and natively tested
//! (the signer against AWS's published vectors), and the transport is the
//! runtime's `HttpClient`. Object keys are always owner-scoped and
//! validated ([`ObjectKey`]) before they reach a URL. The bucket policy
//! ([`policy`]: size limits and MIME types from config.toml) is checked here
//! before an upload URL is issued.
//!
//! It must never put a secret key in a URL or a log, and never touch js-sys.

pub mod client;
pub mod config;
pub mod error;
pub mod key;
pub mod policy;
pub mod request;
pub mod sigv4;
pub mod xml;

pub use client::S3Client;
pub use config::{Endpoint, S3Config, S3ConfigError};
pub use error::S3Error;
pub use key::{portable_file_name, KeyRejection, ObjectKey, MAX_KEY_BYTES};
pub use request::{
    check_bucket_name, CompletedPart, CompletedUpload, CopiedObject, MultipartUpload, ObjectHead, ObjectPrefix,
    PartTarget, PresignedRequest, PutUrlOptions, UploadedPart, CHECKSUM_SHA256_HEADER, MAX_PART_NUMBER, MIN_PART_BYTES,
};
pub use sigv4::{Credentials, SigningTime, MAX_PRESIGN_EXPIRES_SECS};
