//! The media worker process: claims, heartbeats, renders, uploads, reports
//! (see lib.rs for what it does and must never do).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgeworks_core::http_client::{HttpClient, TransportError};
use edgeworks_core::{Request, Response};
use media_worker::backend::{generate_openai, render_local};
use media_worker::config::Backend;
use media_worker::plan::{completed_report, enhance, Claim};
use media_worker::{Config, JobPlan, Output};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio_postgres::{AsyncMessage, NoTls};

fn log(level: &str, msg: &str, fields: Value) {
    let mut line = json!({ "level": level, "msg": msg, "worker": "media-worker" });
    if let (Value::Object(l), Value::Object(f)) = (&mut line, fields) {
        l.extend(f);
    }
    println!("{line}");
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The core HTTP trait over reqwest, so the backends tested with the
/// testkit's client run unchanged here.
#[derive(Clone)]
struct Http(reqwest::Client);

impl HttpClient for Http {
    async fn send(&self, req: Request, timeout_ms: u32) -> Result<Response, TransportError> {
        let method = reqwest::Method::from_bytes(req.method.as_str().as_bytes())
            .map_err(|e| TransportError::Network(e.to_string()))?;
        let mut r = self
            .0
            .request(method, &req.url)
            .timeout(Duration::from_millis(u64::from(timeout_ms)));
        for (k, v) in req.headers.iter() {
            r = r.header(k, v);
        }
        let res = r
            .body(req.body)
            .send()
            .await
            .map_err(|e| TransportError::Network(e.without_url().to_string()))?;
        let mut out = Response::new(res.status().as_u16());
        for (k, v) in res.headers() {
            if let Ok(v) = v.to_str() {
                out.headers.append(k.as_str(), v);
            }
        }
        out.body = res
            .bytes()
            .await
            .map_err(|e| TransportError::Network(e.without_url().to_string()))?
            .to_vec();
        Ok(out)
    }
}

struct Worker {
    cfg: Config,
    db: tokio_postgres::Client,
    http: Http,
    wake: Notify,
    shutdown: watch::Receiver<bool>,
    deliveries: AtomicU64,
    boot: u128,
}

/// How a job ended for this worker.
enum Ending {
    Done,
    Stopped(&'static str),
}

impl Worker {
    async fn claim(&self) -> Result<Option<Claim>, tokio_postgres::Error> {
        let rows = self
            .db
            .query(
                "select c::text from public.media_claim_jobs($1, $2, 1, $3) c",
                &[&self.cfg.worker_id, &self.cfg.queues, &(self.cfg.lease_seconds as i32)],
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Sends a report to job-callback, signed; retried (same webhook id, so
    /// a retry of a delivery that did arrive is acknowledged, not applied
    /// twice) on transport errors and 5xx.
    async fn report(&self, body: &Value) -> Result<(u16, Value), String> {
        let bytes = body.to_string().into_bytes();
        let id = format!(
            "msg_{:x}_{}",
            self.boot,
            self.deliveries.fetch_add(1, Ordering::Relaxed)
        );
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut r = self
                .http
                .0
                .post(&self.cfg.callback_url)
                .header("content-type", "application/json")
                .timeout(Duration::from_secs(30));
            if let Some(anon) = &self.cfg.anon_key {
                r = r.header("apikey", anon);
            }
            if let Some(key) = &self.cfg.webhook_key {
                let t = now_secs();
                r = r
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", t.to_string())
                    .header(
                        "webhook-signature",
                        edgeworks_auth::standard_webhooks::sign(key, &id, t, &bytes),
                    );
            } else if let Some(service) = &self.cfg.service_key {
                r = r.header("authorization", format!("Bearer {service}"));
            }
            match r.body(bytes.clone()).send().await {
                Ok(res) if res.status().is_server_error() => last = format!("job-callback answered {}", res.status()),
                Ok(res) => {
                    let status = res.status().as_u16();
                    let v = match res.bytes().await {
                        Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
                        Err(_) => Value::Null,
                    };
                    return Ok((status, v));
                }
                Err(e) => last = e.without_url().to_string(),
            }
        }
        Err(last)
    }

    async fn heartbeat(&self, claim: &Claim) -> bool {
        let row = self
            .db
            .query_one(
                "select public.media_heartbeat($1::text::uuid, $2::text::uuid, $3)::text",
                &[&claim.job_id, &claim.lease_token, &(self.cfg.lease_seconds as i32)],
            )
            .await;
        match row
            .ok()
            .and_then(|r| serde_json::from_str::<Value>(&r.get::<_, String>(0)).ok())
        {
            Some(v) => v["continue"].as_bool().unwrap_or(false),
            // The database is unreachable: keep working; the lease decides.
            None => true,
        }
    }

    async fn release(&self, claim: &Claim) {
        let _ = self
            .db
            .execute(
                "select public.media_release_job($1::text::uuid, $2::text::uuid)",
                &[&claim.job_id, &claim.lease_token],
            )
            .await;
    }

    async fn upload(&self, target: &Value, output: &Output) -> Result<(), String> {
        let url = target["url"].as_str().ok_or("no upload URL")?;
        let mut r = self.http.0.put(url).timeout(Duration::from_secs(120));
        if let Some(headers) = target["headers"].as_object() {
            for (k, v) in headers {
                if let Some(v) = v.as_str() {
                    r = r.header(k.as_str(), v);
                }
            }
        }
        let res = r
            .body(output.bytes.clone())
            .send()
            .await
            .map_err(|e| format!("upload failed: {}", e.without_url()))?;
        if !res.status().is_success() {
            return Err(format!("storage refused the upload ({})", res.status()));
        }
        Ok(())
    }

    /// Runs one claimed job to its end.
    async fn run(self: &Arc<Self>, claim: Claim) -> Ending {
        let Some(plan) = JobPlan::of(&claim) else {
            let body = json!({"jobId": claim.job_id, "leaseToken": claim.lease_token, "status": "failed",
                              "errorMessage": format!("this worker does not know job type {}", claim.job_type)});
            let _ = self.report(&body).await;
            return Ending::Done;
        };
        // Heartbeats run beside everything after the claim (a slow first
        // report must not cost the lease); a refused one (cancelled, lease
        // lost) flips `stop`.
        let (stop_tx, mut stop) = watch::channel(false);
        let beat = {
            let me = self.clone();
            let claim = claim.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(me.cfg.heartbeat_every()).await;
                    if !me.heartbeat(&claim).await {
                        let _ = stop_tx.send(true);
                        return;
                    }
                }
            })
        };
        let start = json!({"jobId": claim.job_id, "leaseToken": claim.lease_token, "status": "processing",
                           "progress": 0});
        match self.report(&start).await {
            Ok((200, _)) => {}
            Ok((status, v)) => {
                log(
                    "warn",
                    "job not started",
                    json!({"job_id": claim.job_id, "status": status, "error": v["error"]["code"]}),
                );
                beat.abort();
                return Ending::Stopped("refused");
            }
            Err(e) => {
                log(
                    "warn",
                    "job-callback unreachable",
                    json!({"job_id": claim.job_id, "error": e}),
                );
                beat.abort();
                // Back to the queue now rather than when the lease lapses.
                self.release(&claim).await;
                return Ending::Stopped("unreachable");
            }
        };

        let ending = self.work(&claim, &plan, &mut stop).await;
        beat.abort();
        ending
    }

    async fn work(&self, claim: &Claim, plan: &JobPlan, stop: &mut watch::Receiver<bool>) -> Ending {
        let mut shutdown = self.shutdown.clone();
        // The local backend's simulated generation time, with progress reports.
        let steps = plan.render_ms / 200;
        for step in 1..=steps {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                self.release(claim).await;
                return Ending::Stopped("shutdown");
            }
            if *stop.borrow() {
                log(
                    "info",
                    "job stopped: cancelled or lease lost",
                    json!({"job_id": claim.job_id}),
                );
                return Ending::Stopped("cancelled");
            }
            let body = json!({"jobId": claim.job_id, "leaseToken": claim.lease_token, "status": "processing",
                              "progress": (step * 100 / (steps + 1)) as u32});
            if let Ok((409, _)) = self.report(&body).await {
                return Ending::Stopped("cancelled");
            }
        }
        if let Some(message) = &plan.fail_with {
            let body = json!({"jobId": claim.job_id, "leaseToken": claim.lease_token, "status": "failed",
                              "errorMessage": message});
            let _ = self.report(&body).await;
            return Ending::Done;
        }
        let outputs = match &self.cfg.backend {
            Backend::Local => Ok(render_local(claim, plan)),
            Backend::OpenAi {
                base_url,
                api_key,
                model,
            } => generate_openai(&self.http, base_url, api_key, model, claim, plan).await,
        };
        let outputs = match outputs {
            Ok(o) => o,
            Err(e) => {
                let body = json!({"jobId": claim.job_id, "leaseToken": claim.lease_token, "status": "failed",
                                  "errorMessage": e.0});
                let _ = self.report(&body).await;
                return Ending::Done;
            }
        };
        // Upload URLs are asked for now, when the outputs and their type are
        // known, so their lifetime need not cover the generation.
        let content_type = outputs.first().map_or("image/png", |o| o.content_type.as_str());
        let ask = json!({"jobId": claim.job_id, "leaseToken": claim.lease_token, "status": "processing",
                         "progress": 99, "uploads": {"count": outputs.len().min(4), "contentType": content_type}});
        let uploads = match self.report(&ask).await {
            Ok((200, v)) => v["uploads"].as_array().cloned().unwrap_or_default(),
            Ok(_) => return Ending::Stopped("cancelled"),
            Err(e) => {
                log(
                    "warn",
                    "job-callback unreachable",
                    json!({"job_id": claim.job_id, "error": e}),
                );
                return Ending::Stopped("unreachable");
            }
        };
        let mut paths = Vec::new();
        for (output, target) in outputs.iter().zip(&uploads) {
            if let Err(e) = self.upload(target, output).await {
                let body = json!({"jobId": claim.job_id, "leaseToken": claim.lease_token, "status": "failed",
                                  "errorMessage": e});
                let _ = self.report(&body).await;
                return Ending::Done;
            }
            paths.push(target["path"].as_str().unwrap_or_default().to_string());
        }
        if paths.is_empty() {
            let body = json!({"jobId": claim.job_id, "leaseToken": claim.lease_token, "status": "failed",
                              "errorMessage": "no upload URLs were issued"});
            let _ = self.report(&body).await;
            return Ending::Done;
        }
        let enhanced = plan.enhanced.then(|| enhance(&claim.prompt));
        let body = completed_report(claim, plan, &paths, enhanced.as_deref());
        match self.report(&body).await {
            Ok((200, _)) => Ending::Done,
            Ok((status, v)) => {
                log(
                    "warn",
                    "completion refused",
                    json!({"job_id": claim.job_id, "status": status, "error": v["error"]["code"]}),
                );
                Ending::Stopped("refused")
            }
            Err(e) => {
                log(
                    "warn",
                    "job-callback unreachable",
                    json!({"job_id": claim.job_id, "error": e}),
                );
                Ending::Stopped("unreachable")
            }
        }
    }

    /// One job slot: claim, run, repeat; wait for a wake-up when idle.
    async fn slot(self: Arc<Self>, n: usize) {
        let mut shutdown = self.shutdown.clone();
        loop {
            if *shutdown.borrow() {
                return;
            }
            // Registered before the claim, so a notification that arrives
            // between an empty claim and the wait is not lost.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.claim().await {
                Ok(Some(claim)) => {
                    log(
                        "info",
                        "claimed",
                        json!({"job_id": claim.job_id, "job_type": claim.job_type, "slot": n}),
                    );
                    let job_id = claim.job_id.clone();
                    let ending = self.run(claim).await;
                    let how = match ending {
                        Ending::Done => "done",
                        Ending::Stopped(why) => why,
                    };
                    log("info", "job ended", json!({"job_id": job_id, "ending": how}));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    log("error", "claim failed", json!({"error": e.to_string()}));
                    if self.db.is_closed() {
                        // No reconnect logic here: exit and let the supervisor start a
                        // fresh process; jobs this one held come back when their leases lapse.
                        log("error", "database connection lost; exiting", json!({}));
                        std::process::exit(1);
                    }
                }
            }
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(self.cfg.idle_wait()) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

async fn connect(
    cfg: &Config,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    String,
> {
    let (client, conn) = tokio_postgres::connect(&cfg.db_url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    Ok((client, conn))
}

async fn run(cfg: Config) -> Result<(), String> {
    let (db, conn) = connect(&cfg).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            log("error", "database connection ended", json!({"error": e.to_string()}));
        }
    });
    if !cfg.db_role.is_empty() {
        db.batch_execute(&format!("set role \"{}\"", cfg.db_role.replace('"', "")))
            .await
            .map_err(|e| format!("cannot set role {}: {e}", cfg.db_role))?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = Arc::new(Worker {
        http: Http(reqwest::Client::new()),
        db,
        wake: Notify::new(),
        shutdown: stop_rx,
        deliveries: AtomicU64::new(0),
        boot: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        cfg,
    });

    // The LISTEN session lives as long as this function (the whole process).
    let mut _listener = None;
    if worker.cfg.wake == media_worker::Wake::Notify {
        let (listener, mut conn) = connect(&worker.cfg).await?;
        let me = worker.clone();
        tokio::spawn(async move {
            while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                match msg {
                    Ok(AsyncMessage::Notification(_)) => me.wake.notify_waiters(),
                    Ok(_) => {}
                    Err(e) => {
                        log(
                            "error",
                            "LISTEN connection failed; polling only",
                            json!({"error": e.to_string()}),
                        );
                        return;
                    }
                }
            }
        });
        let channels: String = worker
            .cfg
            .queues
            .iter()
            .map(|q| format!("listen \"jobs_{q}\";"))
            .collect();
        listener
            .batch_execute(&channels)
            .await
            .map_err(|e| format!("LISTEN failed: {e}"))?;
        _listener = Some(listener);
    }

    log(
        "info",
        "media worker started",
        json!({"worker_id": worker.cfg.worker_id, "queues": worker.cfg.queues, "concurrency": worker.cfg.concurrency,
               "wake": format!("{:?}", worker.cfg.wake).to_lowercase()}),
    );
    let slots: Vec<_> = (0..worker.cfg.concurrency)
        .map(|n| tokio::spawn(worker.clone().slot(n)))
        .collect();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    log("info", "shutting down: releasing claimed jobs", json!({}));
    let _ = stop_tx.send(true);
    for s in slots {
        let _ = s.await;
    }
    let _ = worker
        .db
        .execute(
            "select public.heartbeat_worker($1, $2, 'stopped')",
            &[&worker.cfg.worker_id, &worker.cfg.queues],
        )
        .await;
    log("info", "media worker stopped", json!({}));
    Ok(())
}

fn main() -> ExitCode {
    let default_id = format!("media-worker-{}", std::process::id());
    let cfg = match Config::from_lookup(|k| std::env::var(k).ok(), &default_id) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("media-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("media-worker: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("media-worker: {e}");
            ExitCode::from(1)
        }
    }
}
