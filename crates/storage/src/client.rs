//! The S3 client: presigning (local, no round trip) and the few operations
//! the upload pipeline performs itself, over any `HttpClient`.

use edgeworks_core::http_client::{HttpClient, DEFAULT_TIMEOUT_MS};
use edgeworks_core::Request;

use crate::config::S3Config;
use crate::error::S3Error;
use crate::key::ObjectKey;
use crate::request::{
    self as rq, CompletedPart, CompletedUpload, CopiedObject, MultipartUpload, ObjectHead, ObjectPrefix, PartTarget,
    PresignedRequest, PutUrlOptions, UploadedPart,
};
use crate::sigv4::SigningTime;

/// ListParts pages are at most 1000 parts and an upload at most 10000, so
/// more pages than this means the server is looping.
const MAX_LIST_PAGES: usize = 11;

#[derive(Debug, Clone)]
pub struct S3Client<C> {
    config: S3Config,
    http: C,
    timeout_ms: u32,
}

impl<C: HttpClient> S3Client<C> {
    pub fn new(config: S3Config, http: C) -> Self {
        S3Client {
            config,
            http,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }

    /// Deadline for each call this client makes.
    pub fn with_timeout_ms(mut self, timeout_ms: u32) -> Self {
        self.timeout_ms = timeout_ms;
        self
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// A URL to upload one object with a single PUT.
    pub fn presign_put(
        &self,
        bucket: &str,
        key: &ObjectKey,
        options: &PutUrlOptions,
        expires_secs: u32,
        at: SigningTime,
    ) -> Result<PresignedRequest, S3Error> {
        rq::presign_put(&self.config, bucket, key, options, expires_secs, at)
    }

    /// A URL to download one object.
    pub fn presign_get(
        &self,
        bucket: &str,
        key: &ObjectKey,
        expires_secs: u32,
        at: SigningTime,
    ) -> Result<PresignedRequest, S3Error> {
        rq::presign_get(&self.config, bucket, key, expires_secs, at)
    }

    /// A URL to upload part `part_number` (1..=10000) of a multipart upload.
    pub fn presign_upload_part(
        &self,
        bucket: &str,
        key: &ObjectKey,
        upload_id: &str,
        part_number: u16,
        expires_secs: u32,
        at: SigningTime,
    ) -> Result<PresignedRequest, S3Error> {
        let part = PartTarget { upload_id, part_number };
        rq::presign_upload_part(
            &self.config,
            bucket,
            key,
            part,
            &PutUrlOptions::default(),
            expires_secs,
            at,
        )
    }

    /// A URL to upload part `part_number` that pins the part's length and
    /// SHA-256 (`options.content_type` is ignored: parts have none).
    pub fn presign_upload_part_checked(
        &self,
        bucket: &str,
        key: &ObjectKey,
        part: PartTarget<'_>,
        options: &PutUrlOptions,
        expires_secs: u32,
        at: SigningTime,
    ) -> Result<PresignedRequest, S3Error> {
        rq::presign_upload_part(&self.config, bucket, key, part, options, expires_secs, at)
    }

    async fn send(&self, req: Request) -> Result<edgeworks_core::Response, S3Error> {
        Ok(self.http.send(req, self.timeout_ms).await?)
    }

    /// Creates a bucket in the client's region; one that already exists and
    /// that these credentials can use counts as created, so setup scripts
    /// and tests can run repeatedly. (AWS says `BucketAlreadyOwnedByYou`;
    /// single-tenant servers such as s3s-fs say `BucketAlreadyExists`, which
    /// on AWS means someone else's bucket — a HeadBucket tells them apart.)
    pub async fn create_bucket(&self, bucket: &str, at: SigningTime) -> Result<(), S3Error> {
        let req = rq::create_bucket(&self.config, bucket, at)?;
        match rq::check_status(&self.send(req).await?) {
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) if e.code() == Some("BucketAlreadyExists") => {
                let head = rq::head_bucket(&self.config, bucket, at)?;
                match rq::check_status(&self.send(head).await?) {
                    Ok(()) => Ok(()),
                    Err(_) => Err(e),
                }
            }
            other => other,
        }
    }

    pub async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &ObjectKey,
        content_type: Option<&str>,
        at: SigningTime,
    ) -> Result<MultipartUpload, S3Error> {
        let req = rq::create_multipart_upload(&self.config, bucket, key, content_type, false, at)?;
        rq::parse_create_multipart_upload(&self.send(req).await?)
    }

    /// A multipart upload whose parts carry SHA-256 checksums
    /// (`x-amz-checksum-algorithm: SHA256`).
    pub async fn create_multipart_upload_sha256(
        &self,
        bucket: &str,
        key: &ObjectKey,
        content_type: Option<&str>,
        at: SigningTime,
    ) -> Result<MultipartUpload, S3Error> {
        let req = rq::create_multipart_upload(&self.config, bucket, key, content_type, true, at)?;
        rq::parse_create_multipart_upload(&self.send(req).await?)
    }

    /// Every part uploaded so far, following continuation pages.
    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &ObjectKey,
        upload_id: &str,
        at: SigningTime,
    ) -> Result<Vec<UploadedPart>, S3Error> {
        let mut parts = Vec::new();
        let mut marker = None;
        for _ in 0..MAX_LIST_PAGES {
            let req = rq::list_parts(&self.config, bucket, key, upload_id, marker, at)?;
            let page = rq::parse_list_parts(&self.send(req).await?)?;
            parts.extend(page.parts);
            match page.next_marker {
                Some(m) if Some(m) != marker => marker = Some(m),
                Some(_) => break,
                None => {
                    // Not every server lists in order (s3s-fs lists in directory order).
                    parts.sort_by_key(|p| p.part_number);
                    return Ok(parts);
                }
            }
        }
        Err(S3Error::InvalidResponse {
            status: 200,
            reason: "ListParts did not finish paging".into(),
        })
    }

    pub async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[CompletedPart],
        at: SigningTime,
    ) -> Result<CompletedUpload, S3Error> {
        let req = rq::complete_multipart_upload(&self.config, bucket, key, upload_id, parts, at)?;
        rq::parse_complete_multipart_upload(&self.send(req).await?)
    }

    pub async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &ObjectKey,
        upload_id: &str,
        at: SigningTime,
    ) -> Result<(), S3Error> {
        let req = rq::abort_multipart_upload(&self.config, bucket, key, upload_id, at)?;
        rq::check_status(&self.send(req).await?)
    }

    pub async fn head_object(&self, bucket: &str, key: &ObjectKey, at: SigningTime) -> Result<ObjectHead, S3Error> {
        let req = rq::head_object(&self.config, bucket, key, at)?;
        rq::parse_head_object(&self.send(req).await?)
    }

    /// The first `max_bytes` of an object (fewer if it is shorter), to sniff
    /// its real content type without downloading it.
    pub async fn get_object_prefix(
        &self,
        bucket: &str,
        key: &ObjectKey,
        max_bytes: u64,
        at: SigningTime,
    ) -> Result<ObjectPrefix, S3Error> {
        let req = rq::get_object_prefix(&self.config, bucket, key, max_bytes, at)?;
        rq::parse_get_object_prefix(self.send(req).await?, max_bytes)
    }

    /// Bytes `first..=last` of an object (fewer at its end).
    pub async fn get_object_range(
        &self,
        bucket: &str,
        key: &ObjectKey,
        first: u64,
        last: u64,
        at: SigningTime,
    ) -> Result<Vec<u8>, S3Error> {
        let req = rq::get_object_range(&self.config, bucket, key, first, last, at)?;
        let resp = self.send(req).await?;
        rq::check_status(&resp)?;
        Ok(resp.body)
    }

    /// Deleting a missing key succeeds, as in S3.
    pub async fn delete_object(&self, bucket: &str, key: &ObjectKey, at: SigningTime) -> Result<(), S3Error> {
        let req = rq::delete_object(&self.config, bucket, key, at)?;
        rq::check_status(&self.send(req).await?)
    }

    pub async fn copy_object(
        &self,
        source_bucket: &str,
        source: &ObjectKey,
        dest_bucket: &str,
        dest: &ObjectKey,
        at: SigningTime,
    ) -> Result<CopiedObject, S3Error> {
        let req = rq::copy_object(&self.config, source_bucket, source, dest_bucket, dest, at)?;
        rq::parse_copy_object(&self.send(req).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;
    use crate::sigv4::Credentials;
    use edgeworks_core::Response;
    use edgeworks_testkit::{block_on, FakeServer, NativeClient};

    fn client(base: &str) -> S3Client<NativeClient> {
        let config = S3Config::new(
            Endpoint::parse(base).unwrap(),
            "us-east-1",
            Credentials::new("AKID", "SECRET"),
        );
        S3Client::new(config, NativeClient).with_timeout_ms(2000)
    }

    fn xml(status: u16, body: &str) -> Response {
        let mut r = Response::new(status);
        r.headers.set("content-type", "application/xml");
        r.body = body.as_bytes().to_vec();
        r
    }

    fn at() -> SigningTime {
        SigningTime::from_unix_secs(1_700_000_000).unwrap()
    }

    #[test]
    fn list_parts_follows_continuation_pages() {
        let server = FakeServer::start(|req, i| {
            let marker = req.query_param("part-number-marker");
            match (i, marker.as_deref()) {
                (0, None) => xml(200, "<ListPartsResult><IsTruncated>true</IsTruncated><NextPartNumberMarker>1</NextPartNumberMarker><Part><PartNumber>1</PartNumber><ETag>\"a\"</ETag><Size>5</Size></Part></ListPartsResult>"),
                (1, Some("1")) => xml(200, "<ListPartsResult><IsTruncated>false</IsTruncated><Part><PartNumber>2</PartNumber><ETag>\"b\"</ETag><Size>6</Size></Part></ListPartsResult>"),
                _ => xml(500, "<Error><Code>Unexpected</Code></Error>"),
            }
        });
        let key = ObjectKey::for_user("u1", "f.bin").unwrap();
        let parts = block_on(client(&server.base_url).list_parts("uploads", &key, "UP", at())).unwrap();
        assert_eq!(
            parts.iter().map(|p| (p.part_number, p.size)).collect::<Vec<_>>(),
            [(1, 5), (2, 6)]
        );
        let reqs = server.requests();
        assert_eq!(reqs[0].query_param("uploadId").as_deref(), Some("UP"));
        assert!(reqs[0].headers.get("authorization").is_some());
    }

    #[test]
    fn a_server_that_repeats_its_marker_is_not_followed_forever() {
        let server = FakeServer::start(|_, _| {
            xml(200, "<ListPartsResult><IsTruncated>true</IsTruncated><NextPartNumberMarker>1</NextPartNumberMarker></ListPartsResult>")
        });
        let key = ObjectKey::for_user("u1", "f.bin").unwrap();
        let e = block_on(client(&server.base_url).list_parts("uploads", &key, "UP", at())).unwrap_err();
        assert!(matches!(e, S3Error::InvalidResponse { .. }));
        assert!(server.requests().len() <= 2);
    }

    #[test]
    fn a_refused_connection_is_a_transport_error_mapped_to_503() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let key = ObjectKey::for_user("u1", "f.bin").unwrap();
        let e = block_on(client(&format!("http://127.0.0.1:{port}")).head_object("uploads", &key, at())).unwrap_err();
        assert!(matches!(e, S3Error::Transport(_)));
        assert_eq!(e.to_api_error().status(), 503);
    }
}
