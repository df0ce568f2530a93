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
async fn client(
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

/// Sends the final request to the node at `base_url`; returns its final answer (JSON text).
pub async fn final_request(
    base_url: &str,
    tls: &OperatorTls,
    timeout: Duration,
) -> Result<String, String> {
    let client = client(base_url, tls, timeout).await?;
    post_final_request(&client, "/admin/v1/final-request", timeout).await
}

/// Posts the final request to `path` through `client` (straight to a node, or through the API
/// server's service proxy); returns the final answer (JSON text) or why there is none.
pub async fn post_final_request(
    client: &kube::Client,
    path: &str,
    timeout: Duration,
) -> Result<String, String> {
    let request = ::http::Request::post(path)
        .header("content-type", "application/json")
        .body(b"{}".to_vec())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, client.request_text(request)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(format!("node unreachable: {e}")),
        Err(_) => Err(format!("no final answer within {timeout:?}")),
    }
}
