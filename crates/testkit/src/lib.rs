//! edgeworks-testkit: native test support, never linked into a function.
//!
//! A blocking HTTP/1.1 client implementing `HttpClient` over std TCP (so
//! provider clients and the database layer can be exercised natively), and
//! a local fake server (bound to 127.0.0.1) whose answers a test scripts,
//! recording every request it received; and [`NativeHost`], the runtime's
//! `Host` for native tests, so a handler runs with a `Ctx` outside wasm.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use edgeworks_core::http::Headers;
use edgeworks_core::http_client::{HttpClient, TransportError};
use edgeworks_core::{Method, Request, Response};

pub use pollster::block_on;

mod host;
pub use host::NativeHost;

/// Blocking HTTP/1.1 client (http:// only), one connection per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeClient;

impl HttpClient for NativeClient {
    async fn send(&self, req: Request, timeout_ms: u32) -> Result<Response, TransportError> {
        send_blocking(&req, timeout_ms)
    }
}

fn split_url(url: &str) -> Result<(String, String), TransportError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| TransportError::Network(format!("only http:// is supported: {url}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_string(), path.to_string()))
}

pub fn send_blocking(req: &Request, timeout_ms: u32) -> Result<Response, TransportError> {
    let (host, path) = split_url(&req.url)?;
    let timeout = Duration::from_millis(timeout_ms.max(1) as u64);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)
        .map_err(|e| TransportError::Network(e.to_string()))?
        .next()
        .ok_or_else(|| TransportError::Network("no address".into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| TransportError::Network(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
        req.method.as_str(),
        path,
        host
    );
    for (k, v) in req.headers.iter() {
        if k != "host" && k != "content-length" && k != "connection" {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", req.body.len()));
    let io = |e: std::io::Error| {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            TransportError::Timeout { after_ms: timeout_ms }
        } else {
            TransportError::Network(e.to_string())
        }
    };
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(&req.body).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader).map_err(io)?;
    let body = read_body(
        &mut reader,
        &headers,
        req.method == Method::Head || status == 204 || status == 304,
    )
    .map_err(io)?;
    Ok(Response { status, headers, body })
}

fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<(u16, Headers)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status line {line:?}")))?;
    Ok((status, read_headers(r)?))
}

fn read_headers<R: BufRead>(r: &mut R) -> std::io::Result<Headers> {
    let mut headers = Headers::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.append(k.trim(), v.trim());
        }
    }
    Ok(headers)
}

fn read_body<R: BufRead>(r: &mut R, headers: &Headers, no_body: bool) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if no_body {
        return Ok(body);
    }
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                let _ = r.read_line(&mut end);
                break;
            }
            let mut chunk = vec![0; n];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = headers.get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

/// What a fake server's script answers for one request.
pub type Script = dyn Fn(&Request, usize) -> Response + Send + Sync;

/// A fake upstream on 127.0.0.1:<random port>. The script gets each request
/// and its 0-based index; every request is recorded for assertions. The
/// server stops when dropped.
pub struct FakeServer {
    pub base_url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
}

impl FakeServer {
    pub fn start(script: impl Fn(&Request, usize) -> Response + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (reqs, stop2) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, script) = (reqs.clone(), script.clone());
                thread::spawn(move || {
                    let _ = serve_one(conn, &reqs, &*script);
                });
            }
        });
        FakeServer {
            base_url: format!("http://{addr}"),
            requests,
            stop,
            addr,
        }
    }

    /// Requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve_one(conn: TcpStream, reqs: &Mutex<Vec<Request>>, script: &Script) -> std::io::Result<()> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let mut parts = line.split_whitespace();
    let method = Method::parse(parts.next().unwrap_or("")).unwrap_or(Method::Get);
    let target = parts.next().unwrap_or("/").to_string();
    let headers = read_headers(&mut r)?;
    let no_body = headers.get("content-length").is_none_or(|v| v == "0") && headers.get("transfer-encoding").is_none();
    let body = read_body(&mut r, &headers, no_body)?;
    let host = headers.get("host").unwrap_or("127.0.0.1").to_string();
    let req = Request {
        method,
        url: format!("http://{host}{target}"),
        headers,
        body,
    };
    let index = {
        let mut g = reqs.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        g.push(req.clone());
        g.len() - 1
    };
    let resp = script(&req, index);
    let mut head = format!("HTTP/1.1 {} X\r\nconnection: close\r\n", resp.status);
    for (k, v) in resp.headers.iter() {
        if k != "content-length" && k != "connection" {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", resp.body.len()));
    writer.write_all(head.as_bytes())?;
    writer.write_all(&resp.body)?;
    writer.flush()
}

/// A JSON response for fake-server scripts.
pub fn json_response(status: u16, body: &str) -> Response {
    let mut r = Response::new(status);
    r.headers.set("content-type", "application/json");
    r.body = body.as_bytes().to_vec();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_server_records_requests_and_answers_by_script() {
        let server =
            FakeServer::start(|req, i| json_response(200 + i as u16, &format!("{{\"len\":{}}}", req.body.len())));
        let mut req = Request::new(Method::Post, format!("{}/v1/x?y=1", server.base_url));
        req.headers.set("x-test", "a");
        req.body = b"hello".to_vec();
        let resp = block_on(NativeClient.send(req, 2000)).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"{\"len\":5}");
        let got = server.requests();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path(), "/v1/x");
        assert_eq!(got[0].headers.get("x-test"), Some("a"));
    }

    #[test]
    fn connection_refused_is_a_network_error() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let req = Request::new(Method::Get, format!("http://127.0.0.1:{port}/"));
        assert!(matches!(
            block_on(NativeClient.send(req, 500)),
            Err(TransportError::Network(_))
        ));
    }
}
