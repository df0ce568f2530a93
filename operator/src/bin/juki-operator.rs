//! juki-operator: starts and stops the tiers of the network on the operating calendar.
//! Thin: parses flags, wires telemetry, leader election and the controllers together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use juki_operator::clock::parse_clock;
use juki_operator::controller::{self, FinalExchange, Settings};
use juki_operator::leader::LeaderElector;
use juki_operator::resources::SqliteVolume;
use juki_operator::telemetry::{Metrics, init_logging};

#[derive(Parser)]
#[command(name = "juki-operator", version, about = "The jukinet operator")]
struct Args {
    /// Time source: real, fixed:INSTANT or fast:INSTANT,xFACTOR (RFC 3339 instants).
    #[arg(long, env = "JUKI_CLOCK", default_value = "real")]
    clock: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "JUKI_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
    /// Log as JSON lines.
    #[arg(long, env = "JUKI_LOG_JSON")]
    log_json: bool,
    /// Seconds (real time) a node may stay Starting before it is Failed.
    #[arg(long, default_value_t = 300)]
    readiness_timeout: u64,
    /// Seconds (real time) the final request may take.
    #[arg(long, default_value_t = 30)]
    final_timeout: u64,
    /// How the final request / final answer exchange is done.
    #[arg(long, value_enum, default_value = "call")]
    final_exchange: FinalExchange,
    /// Where the embedded SQLite database of a node lives.
    #[arg(long, value_enum, default_value = "pvc")]
    sqlite_volume: SqliteVolume,
    /// Publish a Normal Event for every phase change (Starting, Online, Draining, …). Without
    /// it only notable ones get an Event: warnings, overrides, suspension, batch outcomes.
    #[arg(long, env = "JUKI_TRANSITION_EVENTS")]
    transition_events: bool,
    /// Most node reconciles at once (0: no limit). Without a limit a wave of the whole country
    /// ran ~1,800 at once: as many API requests in flight, answered with 504s by a saturated API
    /// server, and the operator's memory grew with them. At full size 96 issued the stop wave's
    /// scale-downs in 15 s (32: 38 s) for 77 MiB.
    #[arg(long, env = "JUKI_CONCURRENCY", default_value_t = 96)]
    concurrency: u16,
    /// Most nodes running their daily batch Jobs at once (0: no limit); the others wait in
    /// DailyBatch (reason BatchQueued), first stopped first served. Nodes still Stopping (pods
    /// going, for up to --readiness-timeout) count against the limit too: at window end the
    /// whole country stops at once, and its pod deletions come before the batches.
    #[arg(long, env = "JUKI_MAX_BATCH_NODES", default_value_t = 100)]
    max_batch_nodes: usize,
    /// Longest real wait between two looks at an object.
    #[arg(long, default_value_t = 60)]
    max_requeue: u64,
    /// Watch only this namespace (its nodes must form a whole topology); all namespaces when unset.
    #[arg(long, env = "JUKI_NAMESPACE")]
    namespace: Option<String>,
    /// Run leader election on this Lease (namespace/name); without it, this replica leads alone.
    #[arg(long, env = "JUKI_LEADER_LEASE")]
    leader_lease: Option<String>,
    /// The operator's certificate (PEM, CN operator) for the final request to nodes with
    /// spec.tls; with --node-tls-key and --node-tls-ca.
    #[arg(long, env = "JUKI_NODE_TLS_CERT", requires_all = ["node_tls_key", "node_tls_ca"])]
    node_tls_cert: Option<std::path::PathBuf>,
    /// The private key of --node-tls-cert (PEM).
    #[arg(long, env = "JUKI_NODE_TLS_KEY", requires_all = ["node_tls_cert", "node_tls_ca"])]
    node_tls_key: Option<std::path::PathBuf>,
    /// The project CA (PEM) that signed the nodes' certificates.
    #[arg(long, env = "JUKI_NODE_TLS_CA", requires_all = ["node_tls_cert", "node_tls_key"])]
    node_tls_ca: Option<std::path::PathBuf>,
    /// Ed25519 public keys (64 hex digits each, comma-separated) whose signature
    /// (`spec.signature` of a FileDelivery) every node requires before it stages a delivered
    /// file; rendered into each node's configuration. Unset: signatures are not checked.
    #[arg(long, env = "JUKI_DELIVERY_KEYS", value_parser = delivery_keys)]
    delivery_keys: Option<String>,
    /// Run nodes without spec.tls, as plain HTTP that authenticates no caller (their pods get
    /// JUKI_INSECURE_PLAIN_HTTP). Without it such a node is Failed with reason PlainHttpRefused
    /// and nothing of it runs: demos and tests only, or behind NetworkPolicies.
    #[arg(long, env = "JUKI_ALLOW_PLAIN_HTTP")]
    allow_plain_http: bool,
    /// The OpenTelemetry collector (OTLP/HTTP base URL, http://HOST:PORT) the operator exports
    /// its reconcile spans to, and its nodes' pods their update spans. Unset: no span leaves.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = otlp_endpoint)]
    otlp_endpoint: Option<String>,
    /// Publish per node what the calendar expects of it, its phase and its faults
    /// (juki_node_expected_online, juki_node_phase, juki_node_fault: what the alert rules
    /// evaluate). `false` leaves them out, for a cluster watched otherwise or to measure their
    /// cost (the monitoring bench).
    #[arg(long, env = "JUKI_NODE_HEALTH_SERIES", default_value_t = true, action = clap::ArgAction::Set)]
    node_health_series: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    let exporting = juki_telemetry::init(args.otlp_endpoint.as_deref(), "juki-operator", vec![])?;
    let clock = parse_clock(&args.clock)?;
    let client = kube::Client::try_default().await?;
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(juki_operator::http::serve(
        args.metrics_addr,
        metrics.clone(),
        ready.clone(),
    ));

    // Ready once the API server answers, leader or standby: a standby that is never Ready would
    // stall every rolling update of a 2-replica Deployment (and it is ready to take over).
    client
        .apiserver_version()
        .await
        .map_err(|e| anyhow::anyhow!("reaching the API server: {e}"))?;
    ready.store(true, Ordering::SeqCst);

    let elector = match &args.leader_lease {
        Some(lease) => {
            let (ns, name) = lease.split_once('/').ok_or_else(|| {
                anyhow::anyhow!("--leader-lease {lease:?}: expected NAMESPACE/NAME")
            })?;
            let identity = std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("juki-operator-{}", std::process::id()));
            let elector = LeaderElector::new(client.clone(), ns, name, &identity);
            tracing::info!(%identity, lease, "waiting to lead");
            elector.acquire().await?;
            tracing::info!(%identity, "leading");
            Some(elector)
        }
        None => None,
    };
    tracing::info!(clock = ?clock, spans = exporting, "juki-operator running");

    let settings = Settings {
        readiness_timeout: Duration::from_secs(args.readiness_timeout),
        final_timeout: Duration::from_secs(args.final_timeout),
        final_exchange: args.final_exchange,
        sqlite_volume: args.sqlite_volume,
        max_requeue: Duration::from_secs(args.max_requeue.max(1)),
        transition_events: args.transition_events,
        transition_poll: Duration::from_secs(5),
        concurrency: args.concurrency,
        max_batch_nodes: args.max_batch_nodes,
        delivery_keys: args.delivery_keys.clone(),
        allow_plain_http: args.allow_plain_http,
        otlp_endpoint: args.otlp_endpoint.clone(),
        node_health_series: args.node_health_series,
        namespace: args.namespace.clone(),
        node_tls: match (args.node_tls_cert, args.node_tls_key, args.node_tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                for (flag, file) in [
                    ("--node-tls-cert", &cert),
                    ("--node-tls-key", &key),
                    ("--node-tls-ca", &ca),
                ] {
                    std::fs::metadata(file)
                        .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", file.display()))?;
                }
                Some(juki_operator::node_client::OperatorTls { cert, key, ca })
            }
            _ => None,
        },
    };
    let controllers = controller::run(client, clock, metrics, settings);
    match elector {
        Some(elector) => {
            tokio::select! {
                _ = controllers => {}
                lost = elector.keep() => {
                    // Another replica may already be acting: stop at once, let the Deployment restart us.
                    if let Err(e) = lost {
                        tracing::error!(error = %e, "lost leadership; exiting");
                        std::process::exit(1);
                    }
                }
                _ = tokio::signal::ctrl_c() => elector.release().await,
            }
        }
        None => {
            tokio::select! {
                _ = controllers => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    juki_telemetry::flush();
    Ok(())
}

/// `--otlp-endpoint`: an OTLP/HTTP base URL, checked here so that a typo fails the operator's
/// start rather than every node's span export.
fn otlp_endpoint(text: &str) -> Result<String, String> {
    juki_telemetry::check_endpoint(text.trim()).map_err(|e| e.to_string())?;
    Ok(text.trim().to_owned())
}

/// `--delivery-keys`: each key 64 hex digits, checked here so that a typo fails the operator's
/// start rather than every node's.
fn delivery_keys(text: &str) -> Result<String, String> {
    let keys: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    if keys.is_empty() {
        return Err("no key given".into());
    }
    match keys
        .iter()
        .position(|k| k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Some(i) => Err(format!(
            "key {i}: {:?} is not an Ed25519 public key (64 hex digits)",
            keys[i].chars().take(80).collect::<String>()
        )),
        None => Ok(keys.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_otlp_endpoint_is_a_plain_http_base_url() {
        assert_eq!(
            otlp_endpoint(" http://collector:4318 "),
            Ok("http://collector:4318".into())
        );
        let refused = otlp_endpoint("collector:4318").unwrap_err();
        assert!(refused.contains("must start with http://"), "{refused}");
    }

    #[test]
    fn delivery_keys_are_64_hex_digits_each_and_a_bad_one_is_named() {
        let key = "ab".repeat(32);
        assert_eq!(
            delivery_keys(&format!(" {key}, {key} ,")),
            Ok(format!("{key},{key}"))
        );
        assert_eq!(
            delivery_keys(&format!("{key},xyz")),
            Err("key 1: \"xyz\" is not an Ed25519 public key (64 hex digits)".into())
        );
        assert_eq!(delivery_keys(" , "), Err("no key given".into()));
    }
}
