//! The operator's final request to a node: through the API server's service proxy, or, to a
//! node that serves mutual TLS (`spec.tls`), straight to the node. Such a node's admin API
//! answers only the `operator` identity, and the API server's service proxy cannot present a
//! client certificate, so the final request goes straight to the node's Service over HTTPS with
//! the operator's certificate. kube's client does the HTTPS (rustls, the project CA as the only
//! root, the operator's certificate as its client identity), from a kubeconfig built in memory.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};

/// The operator's identity toward the nodes (`--node-tls-cert`, `--node-tls-key`,
/// `--node-tls-ca`): a certificate with CN `operator` from the project CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// An HTTPS client for the node at `base_url` (e.g. `https://pref-13.juki-pref-13.svc:8080`).
pub async fn client(
    base_url: &str,
    tls: &OperatorTls,
    timeout: Duration,
) -> Result<kube::Client, String> {
    let path = |p: &PathBuf| Some(p.display().to_string());
    let kubeconfig = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "node".into(),
            cluster: Some(Cluster {
                server: Some(base_url.into()),
                certificate_authority: path(&tls.ca),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "operator".into(),
            auth_info: Some(AuthInfo {
                client_certificate: path(&tls.cert),
                client_key: path(&tls.key),
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: "node".into(),
            context: Some(Context {
                cluster: "node".into(),
                user: Some("operator".into()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some("node".into()),
        ..Kubeconfig::default()
    };
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("the operator's TLS identity: {e}"))?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    kube::Client::try_from(config).map_err(|e| format!("the operator's TLS identity: {e}"))
}

/// How the operator reaches one node's admin API: a client and the path prefix the admin
/// paths go under.
#[derive(Clone)]
pub struct NodeRoute {
    pub client: kube::Client,
    pub prefix: String,
}

impl std::fmt::Debug for NodeRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRoute")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl NodeRoute {
    /// Through the API server's service proxy (the node's Service, port `port`).
    pub fn proxy(client: &kube::Client, namespace: &str, name: &str, port: i32) -> NodeRoute {
        NodeRoute {
            client: client.clone(),
            prefix: format!("/api/v1/namespaces/{namespace}/services/{name}:{port}/proxy"),
        }
    }

    /// Straight to a node that serves mutual TLS, at `base_url`, with the operator's identity.
    pub async fn direct(
        base_url: &str,
        tls: &OperatorTls,
        timeout: Duration,
    ) -> Result<NodeRoute, String> {
        Ok(NodeRoute {
            client: client(base_url, tls, timeout).await?,
            prefix: String::new(),
        })
    }
}

/// A node's answer to an admin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error tag of a node's error body (`{"error": ...}`), if it is one.
    pub fn error_tag(&self) -> Option<String> {
        let body: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        body.get("error")?.as_str().map(str::to_owned)
    }

    /// The body as text, cut to `max` characters (for statuses and logs).
    pub fn excerpt(&self, max: usize) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(max)
            .collect()
    }
}

/// Sends `method path` with `body` (JSON when `json`, bytes otherwise) to the node and reads
/// the whole answer, whatever its status; Err only when no answer came.
pub async fn call(
    route: &NodeRoute,
    method: ::http::Method,
    path: &str,
    body: Vec<u8>,
    json: bool,
    timeout: Duration,
) -> Result<Answer, String> {
    use http_body_util::BodyExt;
    let content_type = if json {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let request = ::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", route.prefix))
        .header("content-type", content_type)
        .body(kube::client::Body::from(body))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = route
            .client
            .send(request)
            .await
            .map_err(|e| format!("node unreachable: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the node's answer: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Answer { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// How long the node may wait for its upstream within the operator's `timeout`: a quarter less
/// (at least a second), so that the node's own answer, done or not, arrives before the operator
/// gives up on it.
pub fn node_wait(timeout: Duration) -> Duration {
    (timeout * 3 / 4).max(Duration::from_secs(1))
}

/// Posts the final request to the node, asking it to answer within [`node_wait`]; returns its
/// final answer (JSON text) or why there is none.
pub async fn final_request(route: &NodeRoute, timeout: Duration) -> Result<String, String> {
    let path = format!(
        "/admin/v1/final-request?timeoutSeconds={}",
        node_wait(timeout).as_secs()
    );
    let answer = call(
        route,
        ::http::Method::POST,
        &path,
        b"{}".to_vec(),
        true,
        timeout,
    )
    .await?;
    if answer.ok() {
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    } else {
        Err(format!(
            "node answered {}: {}",
            answer.status,
            answer.excerpt(300)
        ))
    }
}

/// What a node's final answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalOutcome {
    /// Every update reached the upstream (`done: true`): the answer as received.
    Received(String),
    /// Not every update reached the upstream (`done: false`): why, and how many wait for
    /// tomorrow in the node's outbox.
    Held(String),
}

/// Reads a node's final answer (`{done, lastSeq, confirmedSeq, heldForTomorrow, reason?}`); an
/// answer that is not one is kept as received, cut to 500 characters.
pub fn judge_final_answer(body: &str) -> FinalOutcome {
    let kept: String = body.chars().take(500).collect();
    let Ok(answer) = serde_json::from_str::<serde_json::Value>(body) else {
        return FinalOutcome::Received(kept);
    };
    if answer["done"] != serde_json::Value::Bool(false) {
        return FinalOutcome::Received(kept);
    }
    let number = |key: &str| answer[key].as_i64().unwrap_or(0);
    let reason = answer["reason"]
        .as_str()
        .unwrap_or("the upstream did not confirm every update");
    FinalOutcome::Held(format!(
        "{reason}; {} update(s) held for tomorrow (confirmed seq {} of {})",
        number("heldForTomorrow"),
        number("confirmedSeq"),
        number("lastSeq")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_answer_not_done_is_held_with_the_nodes_reason_and_count() {
        let held = judge_final_answer(
            r#"{"done": false, "lastSeq": 12, "confirmedSeq": 9, "heldForTomorrow": 3,
                "reason": "the upstream refused: 503"}"#,
        );
        assert_eq!(
            held,
            FinalOutcome::Held(
                "the upstream refused: 503; 3 update(s) held for tomorrow (confirmed seq 9 of 12)"
                    .into()
            )
        );
        let done = r#"{"done":true,"lastSeq":12,"confirmedSeq":12,"heldForTomorrow":0}"#;
        assert_eq!(
            judge_final_answer(done),
            FinalOutcome::Received(done.into())
        );
        assert_eq!(
            judge_final_answer("not json"),
            FinalOutcome::Received("not json".into())
        );
    }

    #[test]
    fn the_node_is_asked_to_answer_before_the_operator_gives_up() {
        assert_eq!(node_wait(Duration::from_secs(40)), Duration::from_secs(30));
        assert_eq!(
            node_wait(Duration::from_millis(500)),
            Duration::from_secs(1)
        );
    }
}
