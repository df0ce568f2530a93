//! The operator's tiny HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (liveness) and
//! `/readyz` (readiness), on plain hyper 1 HTTP/1 with no framework.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /metrics` | 200, `text/plain; version=0.0.4`, [`Metrics::render`] |
//! | `GET /healthz` | 200 `ok` |
//! | `GET /readyz` | 200 `ready` while the flag is true, else 503 `not ready` |
//! | anything else | 404 (405 for another method on a known path) |
//!
//! `HEAD` is answered like `GET` (hyper drops the body).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::telemetry::Metrics;

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` and serves until the task is dropped or accepting fails. `ready` is read on
/// every `/readyz` request.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_listener(listener, metrics, ready).await
}

/// Serves on an already bound listener (bind port 0 and read `local_addr` to learn the port).
/// Each connection runs on its own task; a broken connection never stops the server.
pub async fn serve_listener(
    listener: TcpListener,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Per-connection errors (the peer hung up before accept, too many open files for a
            // moment) must not end the server.
            Err(err) if is_transient_accept_error(&err) => {
                tracing::debug!(error = %err, "accept failed, continuing");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            Err(err) => return Err(err),
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = respond(&req, &metrics, &ready);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(err) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "http connection ended with an error");
            }
        });
    }
}

fn is_transient_accept_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut
    ) || err
        .raw_os_error()
        .is_some_and(|code| code == 23 || code == 24) // ENFILE, EMFILE
}

fn respond<B>(req: &Request<B>, metrics: &Metrics, ready: &AtomicBool) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        _ if ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Sends one HTTP/1.1 request with `Connection: close` and returns the whole response.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
            .await
            .expect("response within 5 s")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn status_line(response: &str) -> &str {
        response.lines().next().unwrap_or_default()
    }

    fn body(response: &str) -> &str {
        response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }

    async fn start() -> (
        SocketAddr,
        Metrics,
        Arc<AtomicBool>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        let ready = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (metrics, ready) = (metrics.clone(), ready.clone());
            async move {
                serve_listener(listener, metrics, ready).await.unwrap();
            }
        });
        (addr, metrics, ready, task)
    }

    #[tokio::test]
    async fn http_serves_metrics_health_and_readiness() {
        let (addr, metrics, ready, task) = start().await;
        metrics.reconcile("JukiNode", 0.01, None);

        let response = request(addr, "GET", "/metrics").await;
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK", "{response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{response}"
        );
        assert!(
            body(&response).contains("juki_reconciles_total"),
            "{response}"
        );
        assert!(
            body(&response).contains(r#"juki_reconciles_total{kind="JukiNode",result="ok"} 1"#),
            "{response}"
        );
        // The monitoring series the alert rules read.
        metrics.set_node_health(crate::telemetry::NodeHealth {
            namespace: "pref-13".into(),
            node: "cs-131016".into(),
            tier: "CS".into(),
            prefecture: "13".into(),
            expected_online: true,
            phase: "Offline".into(),
            faults: vec!["NotOnline".into()],
        });
        let response = request(addr, "GET", "/metrics").await;
        let text = body(&response);
        for line in [
            r#"juki_node_expected_online{namespace="pref-13",node="cs-131016",prefecture="13",tier="CS"} 1"#,
            r#"juki_node_phase{namespace="pref-13",node="cs-131016",phase="Offline",prefecture="13",tier="CS"} 1"#,
            r#"juki_node_fault{fault="NotOnline",namespace="pref-13",node="cs-131016",prefecture="13",tier="CS"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }

        let response = request(addr, "GET", "/healthz").await;
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
        assert_eq!(body(&response), "ok\n");

        let response = request(addr, "GET", "/readyz").await;
        assert_eq!(status_line(&response), "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body(&response), "not ready\n");

        ready.store(true, Ordering::Release);
        let response = request(addr, "GET", "/readyz").await;
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
        assert_eq!(body(&response), "ready\n");

        let response = request(addr, "GET", "/nope").await;
        assert_eq!(status_line(&response), "HTTP/1.1 404 Not Found");

        let response = request(addr, "POST", "/healthz").await;
        assert_eq!(status_line(&response), "HTTP/1.1 405 Method Not Allowed");

        let response = request(addr, "HEAD", "/healthz").await;
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
        assert_eq!(body(&response), "");

        task.abort();
    }

    #[tokio::test]
    async fn http_survives_garbage_and_keeps_serving() {
        let (addr, _metrics, _ready, task) = start().await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"\x00\x01 not http\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        drop(stream);

        let response = request(addr, "GET", "/healthz").await;
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
        task.abort();
    }

    #[tokio::test]
    async fn http_serve_reports_bind_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let err = serve(addr, Metrics::new(), Arc::new(AtomicBool::new(true)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
