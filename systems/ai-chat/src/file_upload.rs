//! file-upload: files users attach to chats, 10 MB at most, typed by their
//! content, stored through the Storage API in `chat-files` under
//! `<user id>/<upload id>/<name>`, with a `file_uploads` row.
//!
//! | call | what |
//! |---|---|
//! | `POST /file-upload` `{file_name, size, conversation_id?}` | a `pending` row and a signed upload URL; the browser PUTs the bytes there (they never pass through the function) |
//! | `POST /file-upload/complete` `{upload_id}` | the stored bytes are checked: size, type by magic bytes; `uploaded`, or 413/415 and the object removed |
//! | `POST /file-upload?name=<file name>` with the raw bytes (≤ 10 MB) | the same checks on the body, then stored (for small files and non-browser clients) |
//! | `GET /file-upload?id=` | the caller's file and a short-lived download URL |
//! | `DELETE /file-upload?id=` | removes the object and the row |
//!
//! The bucket is private and has no policies for users: only this function
//! (service role) reads and writes it, after checking the row's owner, so
//! another user's file is a 404 whatever its id.

use edgeworks_core::http_client::HttpClient;
use edgeworks_core::{ApiError, Method, Request, Response};
use edgeworks_db::Db;
use edgeworks_input::input;
use edgeworks_input::validate::Field;
use edgeworks_runtime::{Ctx, HostHttp, Reply};
use edgeworks_service::{FromRequest, Json, Parts, Query, Route, ServiceDb, User};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::ledger;
use crate::upload::{self, Sniffed, BUCKET, MAX_FILE_BYTES, SNIFF_BYTES};

/// GET, POST, DELETE; signed-in users; bodies up to 10 MB (direct uploads).
pub const ROUTE: Route = Route::new(&[Method::Get, Method::Post, Method::Delete])
    .rate_limit("30/0.5")
    .max_body_bytes(MAX_FILE_BYTES as usize);

/// How long a signed upload URL is valid (the Storage API's fixed two hours).
const UPLOAD_URL_SECS: u32 = 7200;
const DOWNLOAD_URL_SECS: u32 = 600;

input! {
    /// `POST /file-upload`: ask for an upload URL.
    pub struct Prepare {
        /// The file's name (for display; the type comes from the content).
        pub file_name: String = Field::string().required().non_blank().max_chars(255),
        /// Its size in bytes.
        pub size: u64 = Field::integer().required().range(1, i64::MAX),
        /// The conversation it belongs to.
        pub conversation_id: Option<String> = Field::uuid(),
    }
}

input! {
    /// `POST /file-upload/complete`.
    pub struct Complete {
        /// The upload.
        pub upload_id: String = Field::uuid().required(),
    }
}

input! {
    /// `GET` / `DELETE ?id=`.
    pub struct ById {
        /// The upload.
        pub id: String = Field::uuid().required(),
    }
}

input! {
    /// The query of a direct upload.
    pub struct Direct {
        /// The file's name.
        pub name: String = Field::string().required().non_blank().max_chars(255),
        /// The conversation it belongs to.
        pub conversation_id: Option<String> = Field::uuid(),
    }
}

/// Which call a request is.
pub enum Call {
    /// Ask for an upload URL.
    Prepare(Prepare),
    /// Check an upload.
    Complete(Complete),
    /// Upload the body itself.
    Direct(Direct, Vec<u8>),
    /// Read one.
    Get(ById),
    /// Delete one.
    Delete(ById),
}

fn is_json(parts: &Parts) -> bool {
    parts
        .req
        .headers
        .get("content-type")
        .map(|c| c.to_ascii_lowercase().starts_with("application/json"))
        .unwrap_or(false)
}

impl FromRequest for Call {
    async fn from_request(parts: &Parts) -> Result<Self, ApiError> {
        let complete = parts.req.path().trim_end_matches('/').ends_with("/complete");
        match parts.req.method {
            Method::Get => Ok(Call::Get(Query::<ById>::from_request(parts).await?.0)),
            Method::Delete => Ok(Call::Delete(Query::<ById>::from_request(parts).await?.0)),
            Method::Post if complete => Ok(Call::Complete(Json::<Complete>::from_request(parts).await?.0)),
            Method::Post if is_json(parts) => Ok(Call::Prepare(Json::<Prepare>::from_request(parts).await?.0)),
            Method::Post => {
                let q = Query::<Direct>::from_request(parts).await?.0;
                Ok(Call::Direct(q, parts.req.body.clone()))
            }
            _ => Err(ApiError::not_found("no_such_endpoint", "no such file-upload endpoint")),
        }
    }
}

fn too_large(size: u64) -> ApiError {
    ApiError::new(
        413,
        "file_too_large",
        format!("files are at most {MAX_FILE_BYTES} bytes (10 MB); this one is {size}"),
    )
    .with_details(json!({ "max_bytes": MAX_FILE_BYTES, "size": size }))
}

fn refused_type(s: &Sniffed) -> ApiError {
    let (code, what) = match s {
        Sniffed::Executable(kind) => ("executable_refused", format!("the content is a {kind}")),
        _ => (
            "unsupported_media_type",
            "the content is not a type chats accept".to_string(),
        ),
    };
    ApiError::new(
        415,
        code,
        format!("{what}; accepted: PNG, JPEG, GIF, WebP, PDF, UTF-8 text (txt, md, csv, json)"),
    )
}

/// The Storage API as the service role.
struct Storage {
    http: HostHttp,
    base: String,
    key: String,
}

impl Storage {
    fn new(ctx: &Ctx) -> Result<Storage, ApiError> {
        let env = ctx.env();
        let url = env.get("SUPABASE_URL").filter(|u| !u.is_empty());
        let key = env.get("SUPABASE_SERVICE_ROLE_KEY").filter(|k| !k.is_empty());
        match (url, key) {
            (Some(u), Some(k)) => Ok(Storage {
                http: ctx.http(),
                base: format!("{}/storage/v1", u.trim_end_matches('/')),
                key: k.to_string(),
            }),
            _ => Err(ApiError::new(
                500,
                "misconfigured",
                "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are required",
            )),
        }
    }

    fn request(&self, method: Method, path: &str) -> Request {
        let mut r = Request::new(method, format!("{}{path}", self.base));
        r.headers.set("apikey", self.key.as_str());
        r.headers.set("authorization", format!("Bearer {}", self.key));
        r
    }

    async fn send(&self, r: Request) -> Result<Response, ApiError> {
        self.http
            .send(r, 30_000)
            .await
            .map_err(|e| ApiError::upstream("storage_unavailable", format!("the Storage API did not answer: {e}")))
    }

    fn failed(resp: &Response) -> ApiError {
        let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        let msg = v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("storage refused the request");
        match resp.status {
            413 => too_large(0).with_details(json!({ "max_bytes": MAX_FILE_BYTES, "storage": msg })),
            415 => ApiError::new(415, "unsupported_media_type", msg.to_string()),
            _ => ApiError::upstream(
                "storage_failed",
                format!("the Storage API answered {}: {msg}", resp.status),
            ),
        }
    }

    async fn sign_upload(&self, path: &str) -> Result<(String, String), ApiError> {
        let resp = self
            .send(self.request(Method::Post, &format!("/object/upload/sign/{BUCKET}/{path}")))
            .await?;
        if resp.status >= 300 {
            return Err(Storage::failed(&resp));
        }
        #[derive(Deserialize)]
        struct Signed {
            url: String,
            token: Option<String>,
        }
        let s: Signed = serde_json::from_slice(&resp.body)
            .map_err(|_| ApiError::upstream("storage_failed", "the Storage API sent no upload URL"))?;
        Ok((format!("{}{}", self.base, s.url), s.token.unwrap_or_default()))
    }

    async fn put(&self, path: &str, content_type: &str, bytes: Vec<u8>) -> Result<(), ApiError> {
        let mut r = self.request(Method::Post, &format!("/object/{BUCKET}/{path}"));
        r.headers.set("content-type", content_type);
        r.body = bytes;
        let resp = self.send(r).await?;
        if resp.status >= 300 {
            return Err(Storage::failed(&resp));
        }
        Ok(())
    }

    /// The first bytes and the total size, or `None` when nothing was uploaded.
    async fn head(&self, path: &str) -> Result<Option<(Vec<u8>, u64)>, ApiError> {
        let mut r = self.request(Method::Get, &format!("/object/authenticated/{BUCKET}/{path}"));
        r.headers.set("range", format!("bytes=0-{}", SNIFF_BYTES - 1));
        let resp = self.send(r).await?;
        match resp.status {
            206 => {
                let total = resp
                    .headers
                    .get("content-range")
                    .and_then(upload::total_from_content_range)
                    .unwrap_or(resp.body.len() as u64);
                Ok(Some((resp.body, total)))
            }
            200 => {
                let total = resp.body.len() as u64;
                let mut body = resp.body;
                body.truncate(SNIFF_BYTES);
                Ok(Some((body, total)))
            }
            // An empty object cannot satisfy a range.
            416 => Ok(Some((Vec::new(), 0))),
            400 | 404 => Ok(None),
            _ => Err(Storage::failed(&resp)),
        }
    }

    async fn remove(&self, path: &str) {
        let _ = self
            .send(self.request(Method::Delete, &format!("/object/{BUCKET}/{path}")))
            .await;
    }

    async fn sign_download(&self, path: &str) -> Result<String, ApiError> {
        let mut r = self.request(Method::Post, &format!("/object/sign/{BUCKET}/{path}"));
        r.headers.set("content-type", "application/json");
        r.body = json!({ "expiresIn": DOWNLOAD_URL_SECS }).to_string().into_bytes();
        let resp = self.send(r).await?;
        if resp.status >= 300 {
            return Err(Storage::failed(&resp));
        }
        let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        let url = v
            .get("signedURL")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::upstream("storage_failed", "the Storage API sent no download URL"))?;
        Ok(format!("{}{url}", self.base))
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
struct Row {
    id: String,
    user_id: String,
    conversation_id: Option<String>,
    object_path: String,
    file_name: String,
    mime_type: String,
    size_bytes: i64,
    status: String,
    created_at: Value,
}

const COLUMNS: &str = "id,user_id,conversation_id,object_path,file_name,mime_type,size_bytes,status,created_at";

async fn own_row(db: &Db<HostHttp>, user_id: &str, id: &str) -> Result<Row, ApiError> {
    let rows: Vec<Row> = db
        .execute(
            db.from("file_uploads")
                .select(COLUMNS)
                .eq("id", id)
                .eq("user_id", user_id),
        )
        .await
        .map_err(ledger::map_error)?;
    rows.into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("file_not_found", "no such file of yours"))
}

async fn check_conversation(db: &Db<HostHttp>, user_id: &str, id: Option<&str>) -> Result<(), ApiError> {
    let Some(id) = id else {
        return Ok(());
    };
    let rows: Vec<Value> = db
        .execute(
            db.from("conversations")
                .select("id")
                .eq("id", id)
                .eq("user_id", user_id),
        )
        .await
        .map_err(ledger::map_error)?;
    if rows.is_empty() {
        return Err(ApiError::not_found(
            "conversation_not_found",
            "no such conversation of yours",
        ));
    }
    Ok(())
}

async fn insert_row(
    db: &Db<HostHttp>,
    ctx: &Ctx,
    user_id: &str,
    file_name: &str,
    size: u64,
    mime: &str,
    conversation_id: Option<&str>,
) -> Result<Row, ApiError> {
    let id = edgeworks_core::ids::uuid_v4(&mut ctx.rng());
    let row = json!({
        "id": id, "user_id": user_id, "conversation_id": conversation_id,
        "object_path": upload::object_path(user_id, &id, file_name),
        "file_name": file_name.chars().take(255).collect::<String>(), "mime_type": mime,
        "size_bytes": size, "status": "pending",
    });
    let rows: Vec<Row> = db
        .execute(db.from("file_uploads").insert(row.to_string()).select(COLUMNS))
        .await
        .map_err(ledger::map_error)?;
    rows.into_iter()
        .next()
        .ok_or_else(|| ApiError::upstream("db_failed", "the row was not created"))
}

async fn set_status(db: &Db<HostHttp>, id: &str, patch: Value) -> Result<Row, ApiError> {
    let rows: Vec<Row> = db
        .execute(
            db.from("file_uploads")
                .eq("id", id)
                .update(patch.to_string())
                .select(COLUMNS),
        )
        .await
        .map_err(ledger::map_error)?;
    rows.into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("file_not_found", "no such file of yours"))
}

fn ok(v: Value) -> Reply {
    Response::ok(&v).into()
}

/// The handler.
pub async fn handle(user: User, call: Call, db: ServiceDb, ctx: Ctx) -> Result<Reply, ApiError> {
    let storage = Storage::new(&ctx)?;
    match call {
        Call::Prepare(p) => {
            if p.size > MAX_FILE_BYTES {
                return Err(too_large(p.size));
            }
            check_conversation(&db, &user.id, p.conversation_id.as_deref()).await?;
            let row = insert_row(
                &db,
                &ctx,
                &user.id,
                &p.file_name,
                p.size,
                "application/octet-stream",
                p.conversation_id.as_deref(),
            )
            .await?;
            let (signed_url, token) = storage.sign_upload(&row.object_path).await?;
            Ok(ok(json!({
                "upload_id": row.id, "path": row.object_path, "bucket": BUCKET, "status": row.status,
                "signed_url": signed_url, "token": token, "method": "PUT",
                "max_bytes": MAX_FILE_BYTES, "expires_in": UPLOAD_URL_SECS,
            })))
        }
        Call::Complete(c) => {
            let row = own_row(&db, &user.id, &c.upload_id).await?;
            if row.status == "uploaded" {
                return Ok(ok(json!(row)));
            }
            if row.status != "pending" {
                return Err(ApiError::conflict(
                    "upload_rejected",
                    "this upload was refused; start a new one",
                ));
            }
            let Some((head, total)) = storage.head(&row.object_path).await? else {
                return Err(ApiError::conflict(
                    "upload_missing",
                    "nothing was uploaded yet: PUT the file to signed_url first",
                ));
            };
            let verdict = if total > MAX_FILE_BYTES {
                Err(too_large(total))
            } else {
                match upload::sniff(&head, &row.file_name) {
                    Sniffed::Allowed(mime) => Ok(mime),
                    other => Err(refused_type(&other)),
                }
            };
            match verdict {
                Ok(mime) => {
                    let row = set_status(
                        &db,
                        &row.id,
                        json!({ "status": "uploaded", "mime_type": mime, "size_bytes": total }),
                    )
                    .await?;
                    ctx.log().info(
                        "file uploaded",
                        json!({ "upload_id": row.id, "mime_type": mime, "bytes": total }),
                    );
                    Ok(ok(json!(row)))
                }
                Err(e) => {
                    storage.remove(&row.object_path).await;
                    set_status(&db, &row.id, json!({ "status": "rejected" })).await?;
                    Err(e)
                }
            }
        }
        Call::Direct(q, body) => {
            let size = body.len() as u64;
            if size == 0 {
                return Err(ApiError::new(422, "empty_file", "the body is empty"));
            }
            if size > MAX_FILE_BYTES {
                return Err(too_large(size));
            }
            let mime = match upload::sniff(&body[..body.len().min(SNIFF_BYTES)], &q.name) {
                Sniffed::Allowed(m) => m,
                other => return Err(refused_type(&other)),
            };
            check_conversation(&db, &user.id, q.conversation_id.as_deref()).await?;
            let row = insert_row(&db, &ctx, &user.id, &q.name, size, mime, q.conversation_id.as_deref()).await?;
            if let Err(e) = storage.put(&row.object_path, mime, body).await {
                set_status(&db, &row.id, json!({ "status": "rejected" })).await?;
                return Err(e);
            }
            let row = set_status(&db, &row.id, json!({ "status": "uploaded" })).await?;
            Ok(ok(json!(row)))
        }
        Call::Get(q) => {
            let row = own_row(&db, &user.id, &q.id).await?;
            let url = if row.status == "uploaded" {
                Some(storage.sign_download(&row.object_path).await?)
            } else {
                None
            };
            let mut v = json!(row);
            v["download_url"] = json!(url);
            v["expires_in"] = json!(url.as_ref().map(|_| DOWNLOAD_URL_SECS));
            Ok(ok(v))
        }
        Call::Delete(q) => {
            let row = own_row(&db, &user.id, &q.id).await?;
            storage.remove(&row.object_path).await;
            db.execute::<Value>(db.from("file_uploads").eq("id", &row.id).delete())
                .await
                .map_err(ledger::map_error)?;
            Ok(ok(json!({ "id": row.id, "deleted": true })))
        }
    }
}
