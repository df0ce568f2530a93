//! The link probe: every `probe_interval` the node service asks its upstream's `/healthz` and
//! exports whether the link answered and how fast (`juki_node_link_up`,
//! `juki_node_link_rtt_seconds`). Beside the operator's view of the nodes (their phases), the
//! alert rules tell a broken network between two Online nodes from a node that is down. The
//! national server has no upstream and probes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{RelayControl, client};
use crate::node::Node;

/// What one probe of the upstream found.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Up { rtt: Duration },
    Down { why: String },
}

impl Link {
    /// A probe's answer after `rtt`: up only on a 2xx (a 5xx is an answer, but not a link that
    /// carries relays).
    pub fn judge(answer: Result<client::Response, String>, rtt: Duration) -> Link {
        match answer {
            Ok(r) if (200..300).contains(&r.status) => Link::Up { rtt },
            Ok(r) => Link::Down {
                why: format!("/healthz answered {}", r.status),
            },
            Err(why) => Link::Down { why },
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self, Link::Up { .. })
    }

    /// The round trip of a link that is up.
    pub fn rtt(&self) -> Option<Duration> {
        match self {
            Link::Up { rtt } => Some(*rtt),
            Link::Down { .. } => None,
        }
    }
}

/// Probes `upstream` once, waiting at most `timeout`.
pub async fn probe(upstream: &str, timeout: Duration) -> Link {
    let url = format!("{}/healthz", upstream.trim_end_matches('/'));
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || client::get(&url, timeout))
        .await
        .unwrap_or_else(|e| Err(format!("probe task: {e}")));
    Link::judge(answer, started.elapsed())
}

/// Probes the upstream for as long as the node serves, recording each result in the metrics
/// and logging each change of the link's state.
pub async fn run(node: Node, control: Arc<RelayControl>) {
    let Some(upstream) = control.upstream.clone() else {
        return;
    };
    let interval = control.settings.probe_interval;
    let timeout = interval.min(Duration::from_secs(10));
    let target = client::authority(&upstream).unwrap_or_else(|_| upstream.clone());
    let mut was_up: Option<bool> = None;
    loop {
        let link = probe(&upstream, timeout).await;
        node.metrics.link(&target, link.rtt());
        if was_up != Some(link.is_up()) {
            match &link {
                Link::Up { rtt } => {
                    tracing::info!(upstream = %target, rtt_ms = rtt.as_millis() as u64, "link to the upstream up")
                }
                Link::Down { why } => {
                    tracing::warn!(upstream = %target, error = %why, "link to the upstream down")
                }
            }
            was_up = Some(link.is_up());
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_2xx_is_a_link_up() {
        let rtt = Duration::from_millis(3);
        let answer = |status| {
            Ok(client::Response {
                status,
                body: Vec::new(),
            })
        };
        assert_eq!(Link::judge(answer(200), rtt), Link::Up { rtt });
        assert_eq!(
            Link::judge(answer(503), rtt),
            Link::Down {
                why: "/healthz answered 503".into()
            }
        );
        assert_eq!(
            Link::judge(Err("connection refused".into()), rtt),
            Link::Down {
                why: "connection refused".into()
            }
        );
    }
}
