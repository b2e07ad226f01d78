//! The S3 client against a real S3 server: s3s-fs, started here on a free
//! loopback port over a temporary directory (or the stack's endpoint, when
//! `S3_ENDPOINT` and keys are in the environment: the gateway's
//! `/storage/v1/s3`, which checks each signature and re-signs for its
//! s3s-fs). URLs are presigned by our signer and used with a plain HTTP
//! client, so the server — not our own code — decides whether each
//! signature is valid.
//!
//! The binary comes from `scripts/lib/tools.sh` (`ew_ensure_s3s`); when it
//! is missing these tests fail and say so, rather than skip.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::{Method, Request, Response};
use edgeworks_storage::{
    CompletedPart, Credentials, Endpoint, ObjectKey, PresignedRequest, PutUrlOptions, S3Client, S3Config, S3Error,
    SigningTime, MIN_PART_BYTES,
};
use edgeworks_testkit::{block_on, NativeClient};

const TIMEOUT_MS: u32 = 30_000;
const USER: &str = "0d8e5c3a-1b2f-4c6d-8e9f-000000000042";

/// A running server and the client for it; stops the server it started.
struct Storage {
    client: S3Client<NativeClient>,
    bucket: String,
    child: Option<Child>,
    dir: Option<PathBuf>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn now() -> SigningTime {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    SigningTime::from_unix_secs(i64::try_from(secs).unwrap()).unwrap()
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{tag}-{}-{nanos}", std::process::id())
}

fn s3s_fs_binary() -> PathBuf {
    let cache = std::env::var_os("EDGEWORKS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/edgeworks"));
    let bin = cache.join("tools/bin/s3s-fs");
    assert!(
        bin.is_file(),
        "s3s-fs is not installed at {} — install it with `source scripts/lib/tools.sh && ew_ensure_s3s` \
         (scripts/test does this); these tests need a real S3 server",
        bin.display()
    );
    bin
}

fn wait_until_listening(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("s3s-fs exited during startup: {status}");
        }
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(100)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("s3s-fs did not listen on 127.0.0.1:{port} within 10 s");
}

fn start() -> Storage {
    let lookup = |k: &str| std::env::var(k).ok();
    if lookup("S3_ENDPOINT").is_some() {
        // The stack's server: use its keys and a bucket of our own.
        let config = S3Config::from_lookup(lookup).expect("S3_* variables from the stack");
        let storage = Storage {
            client: S3Client::new(config, NativeClient).with_timeout_ms(TIMEOUT_MS),
            bucket: "ew-provider-tests".into(),
            child: None,
            dir: None,
        };
        // Once per test binary: the tests run in parallel, and s3s-fs answers a
        // CreateBucket racing another for the same name with a 500.
        static BUCKET: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        BUCKET.get_or_init(|| {
            block_on(storage.client.create_bucket(&storage.bucket, now())).expect("create the test bucket")
        });
        return storage;
    }

    let bin = s3s_fs_binary();
    let dir = std::env::temp_dir().join(unique("ew-s3s-fs"));
    std::fs::create_dir_all(&dir).unwrap();
    let access = "EWTESTACCESSKEY";
    let secret = unique("ew-test-secret");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(&bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            access,
            "--secret-key",
            &secret,
        ])
        .arg(&dir)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", bin.display()));
    wait_until_listening(port, &mut child);
    let config = S3Config::new(
        Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        "us-east-1",
        Credentials::new(access, secret),
    );
    let storage = Storage {
        client: S3Client::new(config, NativeClient).with_timeout_ms(TIMEOUT_MS),
        bucket: "uploads".into(),
        child: Some(child),
        dir: Some(dir),
    };
    block_on(storage.client.create_bucket(&storage.bucket, now())).expect("create the test bucket");
    storage
}

/// Uses a presigned request the way a browser would: its URL, its signed
/// headers, no credentials.
fn use_presigned(p: &PresignedRequest, body: &[u8]) -> Response {
    let method = Method::parse(p.method).unwrap();
    use_url(method, &p.url, p, body)
}

fn use_url(method: Method, url: &str, p: &PresignedRequest, body: &[u8]) -> Response {
    let mut req = Request::new(method, url);
    for (k, v) in &p.headers {
        // The transport sets content-length from the body itself.
        if k != "content-length" {
            req.headers.set(k, v.clone());
        }
    }
    req.body = body.to_vec();
    block_on(NativeClient.send(req, TIMEOUT_MS)).expect("the server answers")
}

/// The S3 error code in a refusal's body.
fn code_of(resp: &Response) -> Option<String> {
    S3Error::from_response(resp.status, &resp.body)
        .code()
        .map(str::to_string)
}

fn put_object(s: &Storage, key: &ObjectKey, body: &[u8], content_type: &str) {
    let opts = PutUrlOptions {
        content_type: Some(content_type.into()),
        content_length: Some(body.len() as u64),
        checksum_sha256: None,
    };
    let url = s.client.presign_put(&s.bucket, key, &opts, 300, now()).unwrap();
    let resp = use_presigned(&url, body);
    assert_eq!(
        resp.status,
        200,
        "presigned PUT refused: {}",
        String::from_utf8_lossy(&resp.body)
    );
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn a_presigned_put_from_a_plain_client_is_stored_and_head_reports_its_size() {
    let s = start();
    let key = ObjectKey::for_user(USER, "photos/cat (1).png").unwrap();
    let body = pattern(70_001, 7);
    put_object(&s, &key, &body, "image/png");

    let head = block_on(s.client.head_object(&s.bucket, &key, now())).unwrap();
    assert_eq!(head.content_length, 70_001);
    assert_eq!(head.content_type.as_deref(), Some("image/png"));

    let get = s.client.presign_get(&s.bucket, &key, 300, now()).unwrap();
    let resp = use_presigned(&get, b"");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, body, "downloaded bytes differ");
}

#[test]
fn a_three_part_multipart_upload_completes_and_reads_back_byte_exact() {
    let s = start();
    let key = ObjectKey::for_user(USER, "videos/clip.mp4").unwrap();
    let upload = block_on(
        s.client
            .create_multipart_upload(&s.bucket, &key, Some("video/mp4"), now()),
    )
    .unwrap();
    assert!(!upload.upload_id.is_empty());

    let five_mib = usize::try_from(MIN_PART_BYTES).unwrap();
    let parts_data = [pattern(five_mib, 1), pattern(five_mib, 2), pattern(1_234_567, 3)];
    let mut completed = Vec::new();
    for (i, data) in parts_data.iter().enumerate() {
        let number = u16::try_from(i + 1).unwrap();
        let url = s
            .client
            .presign_upload_part(&s.bucket, &key, &upload.upload_id, number, 600, now())
            .unwrap();
        let resp = use_presigned(&url, data);
        assert_eq!(
            resp.status,
            200,
            "part {number}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        let etag = resp
            .headers
            .get("etag")
            .expect("UploadPart answers with an ETag")
            .to_string();
        completed.push(CompletedPart {
            part_number: number,
            etag,
        });
    }

    let listed = block_on(s.client.list_parts(&s.bucket, &key, &upload.upload_id, now())).unwrap();
    let sizes: Vec<(u16, u64)> = listed.iter().map(|p| (p.part_number, p.size)).collect();
    assert_eq!(sizes, [(1, MIN_PART_BYTES), (2, MIN_PART_BYTES), (3, 1_234_567)]);

    // Reported out of order on purpose: the client sorts before completing.
    completed.reverse();
    block_on(
        s.client
            .complete_multipart_upload(&s.bucket, &key, &upload.upload_id, &completed, now()),
    )
    .unwrap();

    let expected: Vec<u8> = parts_data.concat();
    let head = block_on(s.client.head_object(&s.bucket, &key, now())).unwrap();
    assert_eq!(head.content_length, expected.len() as u64);
    assert_eq!(head.content_type.as_deref(), Some("video/mp4"));
    let resp = use_presigned(&s.client.presign_get(&s.bucket, &key, 300, now()).unwrap(), b"");
    assert_eq!(resp.status, 200);
    assert!(
        resp.body == expected,
        "multipart object differs from the parts ({} vs {} bytes)",
        resp.body.len(),
        expected.len()
    );

    let prefix = block_on(s.client.get_object_prefix(&s.bucket, &key, 16, now())).unwrap();
    assert_eq!(prefix.bytes, expected[..16]);
    assert_eq!(prefix.total_size, Some(expected.len() as u64));
}

#[test]
fn expired_tampered_and_other_key_urls_are_refused_with_403() {
    let s = start();
    let key = ObjectKey::for_user(USER, "docs/a.txt").unwrap();
    let other = ObjectKey::for_user(USER, "docs/b.txt").unwrap();
    put_object(&s, &key, b"secret a", "text/plain");
    put_object(&s, &other, b"secret b", "text/plain");

    // Control: the untouched URL works, so each 403 below is the signature.
    let good = s.client.presign_get(&s.bucket, &key, 300, now()).unwrap();
    assert_eq!(use_presigned(&good, b"").status, 200);

    let signed_two_hours_ago = SigningTime::from_unix_secs(now().unix_secs() - 7200).unwrap();
    let expired = s.client.presign_get(&s.bucket, &key, 60, signed_two_hours_ago).unwrap();
    let resp = use_presigned(&expired, b"");
    assert_eq!(resp.status, 403, "expired URL: {}", String::from_utf8_lossy(&resp.body));
    assert_eq!(code_of(&resp).as_deref(), Some("AccessDenied"));

    let tampered = good.url.replace("X-Amz-Expires=300", "X-Amz-Expires=600");
    assert_ne!(tampered, good.url);
    let resp = use_url(Method::Get, &tampered, &good, b"");
    assert_eq!(
        resp.status,
        403,
        "tampered URL: {}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(code_of(&resp).as_deref(), Some("SignatureDoesNotMatch"));

    let other_key = good.url.replace("/docs/a.txt?", "/docs/b.txt?");
    assert_ne!(other_key, good.url);
    let resp = use_url(Method::Get, &other_key, &good, b"");
    assert_eq!(
        resp.status,
        403,
        "URL for another key: {}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(code_of(&resp).as_deref(), Some("SignatureDoesNotMatch"));
    assert_ne!(resp.body, b"secret b");
}

#[test]
fn a_presigned_put_refuses_a_body_of_another_size_or_type() {
    let s = start();
    let key = ObjectKey::for_user(USER, "docs/sized.txt").unwrap();
    let opts = PutUrlOptions {
        content_type: Some("text/plain".into()),
        content_length: Some(10),
        checksum_sha256: None,
    };
    let url = s.client.presign_put(&s.bucket, &key, &opts, 300, now()).unwrap();

    let resp = use_presigned(&url, b"eleven byte");
    assert_eq!(
        resp.status,
        403,
        "oversized body: {}",
        String::from_utf8_lossy(&resp.body)
    );

    let mut wrong_type = url.clone();
    wrong_type.headers.insert("content-type".into(), "text/html".into());
    assert_eq!(use_url(Method::Put, &url.url, &wrong_type, b"ten bytes!").status, 403);

    assert_eq!(use_presigned(&url, b"ten bytes!").status, 200);
    let head = block_on(s.client.head_object(&s.bucket, &key, now())).unwrap();
    assert_eq!(head.content_length, 10);
}

#[test]
fn an_aborted_multipart_upload_is_gone() {
    let s = start();
    let key = ObjectKey::for_user(USER, "tmp/abandoned.bin").unwrap();
    let upload = block_on(s.client.create_multipart_upload(&s.bucket, &key, None, now())).unwrap();
    let url = s
        .client
        .presign_upload_part(&s.bucket, &key, &upload.upload_id, 1, 60, now())
        .unwrap();
    assert_eq!(use_presigned(&url, b"some bytes").status, 200);
    block_on(
        s.client
            .abort_multipart_upload(&s.bucket, &key, &upload.upload_id, now()),
    )
    .unwrap();

    let part = CompletedPart {
        part_number: 1,
        etag: "x".into(),
    };
    let err = block_on(
        s.client
            .complete_multipart_upload(&s.bucket, &key, &upload.upload_id, &[part], now()),
    )
    .unwrap_err();
    assert!(matches!(err, S3Error::Service { .. }), "{err}");
    assert!(block_on(s.client.head_object(&s.bucket, &key, now()))
        .unwrap_err()
        .is_not_found());
}

#[test]
fn copy_ranged_get_and_delete_work_on_stored_objects() {
    let s = start();
    let key = ObjectKey::for_user(USER, "in/report.pdf").unwrap();
    let copy = ObjectKey::for_user(USER, "out/report copy.pdf").unwrap();
    let body = b"%PDF-1.7 the rest of the document".to_vec();
    put_object(&s, &key, &body, "application/pdf");

    block_on(s.client.copy_object(&s.bucket, &key, &s.bucket, &copy, now())).unwrap();
    let prefix = block_on(s.client.get_object_prefix(&s.bucket, &copy, 8, now())).unwrap();
    assert_eq!(prefix.bytes, b"%PDF-1.7");
    assert_eq!(prefix.total_size, Some(body.len() as u64));

    // Asking for more than there is returns what there is.
    let all = block_on(s.client.get_object_prefix(&s.bucket, &key, 4096, now())).unwrap();
    assert_eq!(all.bytes, body);

    block_on(s.client.delete_object(&s.bucket, &key, now())).unwrap();
    let err = block_on(s.client.head_object(&s.bucket, &key, now())).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.to_api_error().status(), 404);
    assert!(block_on(s.client.head_object(&s.bucket, &copy, now())).is_ok());
}

#[test]
fn wrong_credentials_are_refused_and_reported_as_our_misconfiguration() {
    let s = start();
    let mut config = s.client.config().clone();
    config.credentials = Credentials::new(config.credentials.access_key_id.clone(), "not-the-secret");
    let bad = S3Client::new(config, NativeClient).with_timeout_ms(TIMEOUT_MS);
    let key = ObjectKey::for_user(USER, "x.txt").unwrap();
    let err = block_on(bad.head_object(&s.bucket, &key, now())).unwrap_err();
    assert!(matches!(err, S3Error::Service { status: 403, .. }), "{err}");
    assert_eq!(err.to_api_error().status(), 502);
}
