//! Metrics in the Prometheus text format on `/metrics`, from a private registry (nothing global).
//!
//! | series | labels |
//! | --- | --- |
//! | `juki_callcenter_http_requests_total` (counter) | `method`, `route`, `status` |
//! | `juki_callcenter_auth_refusals_total` (counter) | `status` (`401`, `403`), `route` |
//! | `juki_callcenter_tickets_filed_total` (counter) | `kind`, `channel` |
//! | `juki_callcenter_alerts_total` (counter) | `outcome` (`opened`, `attached`, `duplicate`, `resolved`) |
//! | `juki_callcenter_search_duration_seconds` (histogram) | `kind` (`search`, `suggest`) |

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    refusals: IntCounterVec,
    filed: IntCounterVec,
    alerts: IntCounterVec,
    search: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let requests = counter(
            "juki_callcenter_http_requests_total",
            "HTTP requests by route and status",
            &["method", "route", "status"],
        );
        let refusals = counter(
            "juki_callcenter_auth_refusals_total",
            "Requests refused by authentication or authorisation",
            &["status", "route"],
        );
        let filed = counter(
            "juki_callcenter_tickets_filed_total",
            "Tickets filed",
            &["kind", "channel"],
        );
        let alerts = counter(
            "juki_callcenter_alerts_total",
            "Alerts received by the webhook, by what became of them",
            &["outcome"],
        );
        let search = HistogramVec::new(
            HistogramOpts::new(
                "juki_callcenter_search_duration_seconds",
                "Search and suggestion latency",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(search.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            requests,
            refusals,
            filed,
            alerts,
            search,
        }
    }

    pub fn request(&self, method: &str, route: &str, status: u16) {
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
    }

    pub fn refused(&self, status: u16, route: &str) {
        self.refusals
            .with_label_values(&[&status.to_string(), route])
            .inc();
    }

    pub fn filed(&self, kind: &str, channel: &str) {
        self.filed.with_label_values(&[kind, channel]).inc();
    }

    pub fn alerts(&self, outcome: &str, n: usize) {
        self.alerts.with_label_values(&[outcome]).inc_by(n as u64);
    }

    pub fn search(&self, kind: &str, seconds: f64) {
        self.search.with_label_values(&[kind]).observe(seconds);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        let _ = encoder.encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}
