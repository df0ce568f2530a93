//! A leader whose renewals hang (its API server connection stalls, the process is paused) stops
//! acting before another replica may take the lease: `keep` returns within the renew deadline,
//! counted from the start of the last successful renewal, always below the lease duration.
//! Against a fake API server that answers lease reads and writes, then stops answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use juki_operator::leader::{LeaderElector, LeaderLost};
use kube::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The lease as the fake API server holds it: held by `me`, renewed now.
fn lease_json() -> String {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "juki", "namespace": "default", "resourceVersion": "1"},
        "spec": {
            "holderIdentity": "me",
            "leaseDurationSeconds": 3,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0
        }
    })
    .to_string()
}

/// Serves lease GETs and PUTs until `paused`, then holds every request unanswered. Records when
/// each answered request arrived.
async fn fake_api_server(paused: Arc<AtomicBool>, answered: Arc<Mutex<Vec<Instant>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (paused, answered) = (paused.clone(), answered.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request: the head, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let arrived = Instant::now();
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    if paused.load(Ordering::SeqCst) {
                        // The leader's renewal hangs: never answer.
                        std::future::pending::<()>().await;
                    }
                    answered.lock().await.push(arrived);
                    let body = lease_json();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn a_leader_whose_renewals_hang_stops_before_the_lease_can_be_taken() {
    let paused = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let url = fake_api_server(paused.clone(), answered.clone()).await;
    let config = kube::Config::new(url.parse().unwrap());
    let client = Client::try_from(config).unwrap();
    let lease_duration = Duration::from_secs(3);
    let elector = LeaderElector::new(client, "default", "juki", "me")
        .with_durations(lease_duration, Duration::from_millis(300));
    assert!(elector.renew_deadline() < lease_duration);
    let keep = tokio::spawn(async move { elector.keep().await });

    // A few good renewals, then the API server stops answering.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    paused.store(true, Ordering::SeqCst);
    let result = tokio::time::timeout(lease_duration * 3, keep)
        .await
        .expect("keep() never gave up while its renewals hung")
        .unwrap();
    let returned = Instant::now();
    let last_answered = *answered
        .lock()
        .await
        .last()
        .expect("some renewals succeeded");
    assert!(
        matches!(result, Err(LeaderLost::RenewFailed { .. })),
        "{result:?}"
    );
    // The lease written by the last good renewal (renewTime at or after `last_answered`)
    // lets another replica take it only `lease_duration` later: the leader stopped before.
    let gap = returned - last_answered;
    assert!(
        gap < lease_duration,
        "the leader acted {gap:?} after its last renewal; the lease lasts {lease_duration:?}"
    );
}
