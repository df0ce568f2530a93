//! Metrics recorded through OpenTelemetry and exposed in the Prometheus text format on
//! `/metrics` (the same approach as the operator: a private meter provider whose only reader is
//! the Prometheus exporter writing into a private registry; nothing global is installed).
//!
//! | series | labels |
//! | --- | --- |
//! | `juki_node_http_requests_total` (counter) | `method`, `route`, `status` |
//! | `juki_node_updates_total` (counter) | `stage` (`accepted`, `relayed`, `applied`, `duplicate`) |
//! | `juki_node_updates_held` (gauge) | — updates waiting because the upstream is outside its window |
//! | `juki_node_outbox_depth` (gauge) | — updates not yet confirmed by the upstream |
//! | `juki_node_relay_duration_seconds` (histogram) | `result` (`ok`, `error`) |
//! | `juki_node_relay_errors_total` (counter) | — |
//! | `juki_node_relay_rejected_total` (counter) | — attempts refused with a permanent 4xx |
//! | `juki_node_auth_refusals_total` (counter) | `status` (`401`, `403`), `route` — requests refused by authentication or the tree rules |
//! | `juki_node_provisions_total` (counter) | `outcome` (`provided`, `not_found`, `refused`, `disclosed`) |
//! | `juki_node_delivery_bytes_total` (counter) | `direction`: `served` (content sent to the tier below: the egress of file delivery), `fetched` (received from the upstream) |
//! | `juki_node_link_up` (gauge, 0/1) | `upstream` (`host:port`) — the last probe of the upstream's `/healthz` answered 2xx |
//! | `juki_node_link_rtt_seconds` (gauge) | `upstream` — round trip of the last successful probe |
//! | `juki_node_last_relay_success_timestamp_seconds` (gauge) | — when the upstream last confirmed a relay batch (Unix time; its age is `time() - …`) |
//! | `juki_node_wide_area_total` (counter) | `event`: filings here (`move_out_filed`, `moved_in`, `move_out_cancelled`, `issuance_requested`) and messages fetched from the upstream (`message_<kind>`) |

use std::fmt;
use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;

const RELAY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The node's metrics; clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    requests: Counter<u64>,
    updates: Counter<u64>,
    held: Gauge<u64>,
    outbox_depth: Gauge<u64>,
    relay_duration: Histogram<f64>,
    relay_errors: Counter<u64>,
    relay_rejected: Counter<u64>,
    wide_area: Counter<u64>,
    auth_refusals: Counter<u64>,
    provisions: Counter<u64>,
    delivery_bytes: Counter<u64>,
    link_up: Gauge<u64>,
    link_rtt: Gauge<f64>,
    last_relay_success: Gauge<f64>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("a fresh registry accepts the OpenTelemetry collector");
        let provider = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_resource(Resource::builder_empty().build())
            .build();
        let meter = provider.meter("juki-node");
        let requests = meter
            .u64_counter("juki_node_http_requests")
            .with_description("HTTP requests served, by method, route and status.")
            .build();
        let updates = meter
            .u64_counter("juki_node_updates")
            .with_description(
                "Updates by stage: accepted from the existing system, relayed (confirmed by the upstream), applied from below, duplicate relays acknowledged.",
            )
            .build();
        let held = meter
            .u64_gauge("juki_node_updates_held")
            .with_description(
                "Updates held in the outbox because the upstream is outside its online window.",
            )
            .build();
        let outbox_depth = meter
            .u64_gauge("juki_node_outbox_depth")
            .with_description("Updates in the outbox not yet confirmed by the upstream.")
            .build();
        let relay_duration = meter
            .f64_histogram("juki_node_relay_duration")
            .with_unit("s")
            .with_description("Round trip of one relay request to the upstream.")
            .with_boundaries(RELAY_BUCKETS.to_vec())
            .build();
        let relay_errors = meter
            .u64_counter("juki_node_relay_errors")
            .with_description("Relay attempts that failed (and will be retried).")
            .build();
        let relay_rejected = meter
            .u64_counter("juki_node_relay_rejected")
            .with_description(
                "Relay attempts the upstream refused with a permanent 4xx (the outbox is held until the cause is fixed).",
            )
            .build();
        let wide_area = meter
            .u64_counter("juki_node_wide_area")
            .with_description(
                "Wide-area service events: filings at this node and messages fetched from the upstream, by event.",
            )
            .build();
        let auth_refusals = meter
            .u64_counter("juki_node_auth_refusals")
            .with_description(
                "Requests refused: 401 without an identity, 403 when the tree rules forbid it.",
            )
            .build();
        let provisions = meter
            .u64_counter("juki_node_provisions")
            .with_description(
                "Agency queries and disclosures, by outcome (each is in provision_log).",
            )
            .build();
        let delivery_bytes = meter
            .u64_counter("juki_node_delivery_bytes")
            .with_description(
                "File delivery content bytes: served to the tier below, fetched from the upstream.",
            )
            .build();
        let link_up = meter
            .u64_gauge("juki_node_link_up")
            .with_description(
                "1 when the last probe of the upstream's /healthz answered 2xx, else 0.",
            )
            .build();
        let link_rtt = meter
            .f64_gauge("juki_node_link_rtt")
            .with_unit("s")
            .with_description("Round trip of the last successful probe of the upstream.")
            .build();
        let last_relay_success = meter
            .f64_gauge("juki_node_last_relay_success_timestamp")
            .with_unit("s")
            .with_description("When the upstream last confirmed a relay batch (Unix time).")
            .build();
        Metrics {
            inner: Arc::new(Inner {
                link_up,
                link_rtt,
                last_relay_success,
                delivery_bytes,
                auth_refusals,
                provisions,
                registry,
                provider,
                requests,
                updates,
                held,
                outbox_depth,
                relay_duration,
                relay_errors,
                relay_rejected,
                wide_area,
            }),
        }
    }

    pub fn request(&self, method: &str, route: &str, status: u16) {
        self.inner.requests.add(
            1,
            &[
                KeyValue::new("method", method.to_owned()),
                KeyValue::new("route", route.to_owned()),
                KeyValue::new("status", i64::from(status)),
            ],
        );
    }

    /// Counts `n` updates at `stage` (`accepted`, `relayed`, `applied`, `duplicate`).
    pub fn updates(&self, stage: &'static str, n: u64) {
        if n > 0 {
            self.inner.updates.add(n, &[KeyValue::new("stage", stage)]);
        }
    }

    pub fn set_held(&self, n: u64) {
        self.inner.held.record(n, &[]);
    }

    pub fn set_outbox_depth(&self, n: u64) {
        self.inner.outbox_depth.record(n, &[]);
    }

    pub fn relay(&self, seconds: f64, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.inner
            .relay_duration
            .record(seconds, &[KeyValue::new("result", result)]);
        if !ok {
            self.inner.relay_errors.add(1, &[]);
        }
    }

    /// Records a probe of the link to `upstream` (`host:port`): up with its round trip, or
    /// down (`None`; the last round trip stays).
    pub fn link(&self, upstream: &str, rtt: Option<std::time::Duration>) {
        let attrs = [KeyValue::new("upstream", upstream.to_owned())];
        self.inner.link_up.record(u64::from(rtt.is_some()), &attrs);
        if let Some(rtt) = rtt {
            self.inner.link_rtt.record(rtt.as_secs_f64(), &attrs);
        }
    }

    /// Records when the upstream last confirmed a relay batch.
    pub fn relay_succeeded(&self, at: jiff::Timestamp) {
        self.inner
            .last_relay_success
            .record(at.as_millisecond() as f64 / 1000.0, &[]);
    }

    /// Counts a permanent refusal of a relay batch by the upstream.
    pub fn relay_rejected(&self) {
        self.inner.relay_rejected.add(1, &[]);
    }

    /// Counts `n` wide-area events (see the table above).
    pub fn wide_area(&self, event: &str, n: u64) {
        if n > 0 {
            self.inner
                .wide_area
                .add(n, &[KeyValue::new("event", event.to_owned())]);
        }
    }

    /// Counts a request refused with `status` (401 or 403) on `route`.
    pub fn auth_refused(&self, status: u16, route: &str) {
        self.inner.auth_refusals.add(
            1,
            &[
                KeyValue::new("status", i64::from(status)),
                KeyValue::new("route", route.to_owned()),
            ],
        );
    }

    /// Counts one provision-log entry by outcome.
    pub fn provision(&self, outcome: &'static str) {
        self.inner
            .provisions
            .add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// Counts `n` bytes of delivered content `served` below or `fetched` from the upstream.
    pub fn delivery_bytes(&self, direction: &'static str, n: u64) {
        if n > 0 {
            self.inner
                .delivery_bytes
                .add(n, &[KeyValue::new("direction", direction)]);
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let families = self.inner.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_exposed() {
        let m = Metrics::new();
        m.request("POST", "/v1/updates", 201);
        m.updates("accepted", 3);
        m.set_outbox_depth(3);
        m.set_held(1);
        m.relay(0.01, true);
        m.wide_area("moved_in", 1);
        m.auth_refused(403, "/v1/relay");
        m.provision("provided");
        let text = m.render();
        for needle in [
            "juki_node_http_requests_total{method=\"POST\",route=\"/v1/updates\",status=\"201\"} 1",
            "juki_node_updates_total{stage=\"accepted\"} 3",
            "juki_node_outbox_depth 3",
            "juki_node_updates_held 1",
            "juki_node_relay_duration_seconds_count{result=\"ok\"} 1",
            "juki_node_wide_area_total{event=\"moved_in\"} 1",
            "juki_node_auth_refusals_total{route=\"/v1/relay\",status=\"403\"} 1",
            "juki_node_provisions_total{outcome=\"provided\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
