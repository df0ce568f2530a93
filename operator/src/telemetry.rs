//! Telemetry of the operator: metrics recorded through OpenTelemetry and exposed in the
//! Prometheus text format (served on `/metrics` by [`crate::http`]), and the tracing set-up.
//!
//! Every instrument lives in a private OpenTelemetry meter provider whose only reader is the
//! Prometheus exporter writing into a private `prometheus::Registry`, so two [`Metrics`] never
//! share state (handy in tests) and nothing global is installed.
//!
//! Exposed series:
//!
//! | series | labels |
//! | --- | --- |
//! | `juki_reconciles_total` (counter) | `kind`, `result` (`ok`/`error`) |
//! | `juki_reconcile_errors_total` (counter) | `kind`, `step` (`apply`/`job`/`status`) |
//! | `juki_reconcile_duration_seconds` (histogram) | `kind` |
//! | `juki_phase_transitions_total` (counter) | `tier`, `from`, `to` |
//! | `juki_nodes` (gauge) | `tier`, `phase` |
//! | `juki_batch_runs_total` (counter) | `tier`, `batch`, `outcome` |
//! | `juki_api_writes_total` (counter) | `kind` |
//! | `juki_node_expected_online` (gauge, 0/1) | `namespace`, `node`, `tier`, `prefecture` |
//! | `juki_node_phase` (gauge, 1) | the same and `phase`: one series per node, its phase now |
//! | `juki_node_fault` (gauge, 1) | the same and `fault`: one series per fault now |
//!
//! The per-node series are plain `prometheus` gauges in the same registry, not OpenTelemetry
//! instruments: an OpenTelemetry gauge cannot forget an attribute set, and a node's old phase,
//! a cleared fault and a deleted node must leave `/metrics` (a series that stays would keep an
//! alert firing). So a node has two series plus one per fault (kube-state-metrics emits every
//! phase with 0/1 instead; at 1,789 nodes and 7 phases that would be 12,500 series, not 3,600).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;

/// Bucket bounds of `juki_reconcile_duration_seconds`: reconciles are API round trips, from a
/// few milliseconds to (pathologically) tens of seconds.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The operator's metrics. Cloning is cheap (one `Arc`); every clone records into the same
/// registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: prometheus::Registry,
    // Kept alive for as long as any clone exists: dropping the provider shuts the reader down.
    provider: SdkMeterProvider,
    reconciles: Counter<u64>,
    reconcile_errors: Counter<u64>,
    reconcile_duration: Histogram<f64>,
    transitions: Counter<u64>,
    nodes: Gauge<u64>,
    /// Every (tier, phase) ever reported to `juki_nodes`, so a pair that disappears from a later
    /// `set_nodes` is set to 0 instead of keeping its stale value.
    node_keys: Mutex<BTreeSet<(String, String)>>,
    batch_runs: Counter<u64>,
    api_writes: Counter<u64>,
    health: NodeHealthSeries,
    /// Runs of each JobSchedule by state (running, late, failed), replaced as a whole per round.
    schedule_runs: prometheus::IntGaugeVec,
}

/// The per-node monitoring series and, per node, the label values last set, so that what
/// changed or went is removed.
struct NodeHealthSeries {
    expected_online: prometheus::IntGaugeVec,
    phase: prometheus::IntGaugeVec,
    fault: prometheus::IntGaugeVec,
    shown: Mutex<HashMap<(String, String), NodeHealth>>,
}

const NODE_LABELS: [&str; 4] = ["namespace", "node", "tier", "prefecture"];

/// What `/metrics` shows of one node: its place in the tree, whether the calendar wants it
/// Online, its phase and its faults now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    pub namespace: String,
    pub node: String,
    pub tier: String,
    /// "01".."47"; empty for the national node.
    pub prefecture: String,
    pub expected_online: bool,
    pub phase: String,
    pub faults: Vec<String>,
}

impl NodeHealth {
    fn labels(&self) -> [&str; 4] {
        [&self.namespace, &self.node, &self.tier, &self.prefecture]
    }

    fn with<'a>(&'a self, extra: &'a str) -> [&'a str; 5] {
        let [a, b, c, d] = self.labels();
        [a, b, c, d, extra]
    }
}

impl NodeHealthSeries {
    fn new(registry: &prometheus::Registry) -> NodeHealthSeries {
        let vec = |name: &str, help: &str, extra: Option<&str>| {
            let mut labels = NODE_LABELS.to_vec();
            labels.extend(extra);
            let gauge = prometheus::IntGaugeVec::new(prometheus::Opts::new(name, help), &labels)
                .expect("valid metric and label names");
            registry
                .register(Box::new(gauge.clone()))
                .expect("the per-node series are registered once per registry");
            gauge
        };
        NodeHealthSeries {
            expected_online: vec(
                "juki_node_expected_online",
                "1 when the calendar, extensions and overrides say the node should be Online now, else 0.",
                None,
            ),
            phase: vec(
                "juki_node_phase",
                "The node's phase now (1; one series per node).",
                Some("phase"),
            ),
            fault: vec(
                "juki_node_fault",
                "A fault of the node now: the difference between what the calendar expects and what the node does (1; one series per fault).",
                Some("fault"),
            ),
            shown: Mutex::new(HashMap::new()),
        }
    }

    fn remove(&self, old: &NodeHealth) {
        // Absent series are fine to remove: the result says only whether one existed.
        let _ = self.expected_online.remove_label_values(&old.labels());
        let _ = self.phase.remove_label_values(&old.with(&old.phase));
        for f in &old.faults {
            let _ = self.fault.remove_label_values(&old.with(f));
        }
    }

    fn set(&self, new: NodeHealth) {
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        let key = (new.namespace.clone(), new.node.clone());
        if let Some(old) = shown.get(&key) {
            if *old == new {
                return;
            }
            if old.labels() != new.labels() {
                self.remove(old);
            } else {
                if old.phase != new.phase {
                    let _ = self.phase.remove_label_values(&old.with(&old.phase));
                }
                for f in old.faults.iter().filter(|f| !new.faults.contains(f)) {
                    let _ = self.fault.remove_label_values(&old.with(f));
                }
            }
        }
        self.expected_online
            .with_label_values(&new.labels())
            .set(i64::from(new.expected_online));
        self.phase.with_label_values(&new.with(&new.phase)).set(1);
        for f in &new.faults {
            self.fault.with_label_values(&new.with(f)).set(1);
        }
        shown.insert(key, new);
    }

    fn retain(&self, keep: &dyn Fn(&str, &str) -> bool) {
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        shown.retain(|(ns, name), old| {
            let kept = keep(ns, name);
            if !kept {
                self.remove(old);
            }
            kept
        });
    }
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
        // Best effort; the reader is a pull reader, so there is nothing to flush.
        let _ = self.provider.shutdown();
    }
}

impl Metrics {
    /// A fresh, empty set of metrics with its own registry.
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
        let meter = provider.meter("juki-operator");

        // Counter names get their `_total` suffix and histograms their unit suffix from the
        // exporter.
        let reconciles = meter
            .u64_counter("juki_reconciles")
            .with_description("Reconciles run, by custom-resource kind and result.")
            .build();
        let reconcile_errors = meter
            .u64_counter("juki_reconcile_errors")
            .with_description("Reconciles that returned an error, by custom-resource kind.")
            .build();
        let reconcile_duration = meter
            .f64_histogram("juki_reconcile_duration")
            .with_unit("s")
            .with_description("Wall-clock time of one reconcile, by custom-resource kind.")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build();
        let transitions = meter
            .u64_counter("juki_phase_transitions")
            .with_description("Node phase transitions applied, by tier, old and new phase.")
            .build();
        let nodes = meter
            .u64_gauge("juki_nodes")
            .with_description("Nodes per tier and phase, as last observed.")
            .build();
        let batch_runs = meter
            .u64_counter("juki_batch_runs")
            .with_description("Batch runs, by tier, batch and outcome.")
            .build();
        let api_writes = meter
            .u64_counter("juki_api_writes")
            .with_description("Kubernetes API writes made by the operator, by object kind.")
            .build();

        let health = NodeHealthSeries::new(&registry);
        let schedule_runs = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "juki_schedule_runs",
                "Runs of a JobSchedule now: running, late (not done by the deadline) and failed (no retry left, in the record kept).",
            ),
            &["namespace", "schedule", "state"],
        )
        .expect("valid metric and label names");
        registry
            .register(Box::new(schedule_runs.clone()))
            .expect("the schedule series are registered once per registry");
        Metrics {
            inner: Arc::new(Inner {
                registry,
                provider,
                reconciles,
                reconcile_errors,
                reconcile_duration,
                transitions,
                nodes,
                node_keys: Mutex::new(BTreeSet::new()),
                batch_runs,
                api_writes,
                health,
                schedule_runs,
            }),
        }
    }

    /// Records one reconcile of an object of `kind` that took `seconds` and succeeded, or failed
    /// at `failed_step`.
    pub fn reconcile(&self, kind: &str, seconds: f64, failed_step: Option<&str>) {
        let kind_kv = KeyValue::new("kind", kind.to_owned());
        let result = if failed_step.is_none() { "ok" } else { "error" };
        self.inner
            .reconciles
            .add(1, &[kind_kv.clone(), KeyValue::new("result", result)]);
        self.inner
            .reconcile_duration
            .record(seconds.max(0.0), std::slice::from_ref(&kind_kv));
        if let Some(step) = failed_step {
            let step_kv = KeyValue::new("step", step.to_owned());
            self.inner.reconcile_errors.add(1, &[kind_kv, step_kv]);
        }
    }

    /// Records one phase transition of a node of `tier`.
    pub fn transition(&self, tier: &str, from: &str, to: &str) {
        self.inner.transitions.add(
            1,
            &[
                KeyValue::new("tier", tier.to_owned()),
                KeyValue::new("from", from.to_owned()),
                KeyValue::new("to", to.to_owned()),
            ],
        );
    }

    /// Sets `juki_nodes` to the given (tier, phase, count) triples. A (tier, phase) reported
    /// before but absent now reads 0. A pair listed twice gets the later count.
    pub fn set_nodes(&self, counts: &[(String, String, u64)]) {
        let mut keys = self
            .inner
            .node_keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current: BTreeSet<(String, String)> = counts
            .iter()
            .map(|(tier, phase, _)| (tier.clone(), phase.clone()))
            .collect();
        for (tier, phase) in keys.difference(&current) {
            self.inner.nodes.record(0, &node_attrs(tier, phase));
        }
        for (tier, phase, count) in counts {
            self.inner.nodes.record(*count, &node_attrs(tier, phase));
        }
        keys.extend(current);
    }

    /// Records one run of `batch` on `tier` that ended with `outcome`.
    pub fn batch(&self, tier: &str, batch: &str, outcome: &str) {
        self.inner.batch_runs.add(
            1,
            &[
                KeyValue::new("tier", tier.to_owned()),
                KeyValue::new("batch", batch.to_owned()),
                KeyValue::new("outcome", outcome.to_owned()),
            ],
        );
    }

    /// Counts one write (create, replace, patch, delete) the operator made to the API server
    /// for an object of `kind`.
    pub fn api_write(&self, kind: &str) {
        self.inner
            .api_writes
            .add(1, &[KeyValue::new("kind", kind.to_owned())]);
    }

    /// Shows a node's expected phase, phase and faults, replacing what was shown of it.
    pub fn set_node_health(&self, health: NodeHealth) {
        self.inner.health.set(health);
    }

    /// Removes every series of the nodes for which `keep(namespace, name)` is false: nodes
    /// deleted, or gone while the watch was down.
    pub fn retain_nodes(&self, keep: &dyn Fn(&str, &str) -> bool) {
        self.inner.health.retain(keep);
    }

    /// Removes every series of one node.
    pub fn forget_node(&self, namespace: &str, name: &str) {
        self.retain_nodes(&|ns, n| (ns, n) != (namespace, name));
    }

    /// Shows a JobSchedule's runs by state: running, late, failed.
    pub fn set_schedule_runs(
        &self,
        namespace: &str,
        schedule: &str,
        running: i64,
        late: i64,
        failed: i64,
    ) {
        for (state, count) in [("running", running), ("late", late), ("failed", failed)] {
            self.inner
                .schedule_runs
                .with_label_values(&[namespace, schedule, state])
                .set(count);
        }
    }

    /// Removes the series of a JobSchedule that is gone.
    pub fn forget_schedule(&self, namespace: &str, schedule: &str) {
        for state in ["running", "late", "failed"] {
            let _ = self
                .inner
                .schedule_runs
                .remove_label_values(&[namespace, schedule, state]);
        }
    }

    /// All metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.inner.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|err| format!("# error encoding metrics: {err}\n"))
    }
}

fn node_attrs(tier: &str, phase: &str) -> [KeyValue; 2] {
    [
        KeyValue::new("tier", tier.to_owned()),
        KeyValue::new("phase", phase.to_owned()),
    ]
}

/// Installs the global tracing subscriber: filter from `RUST_LOG` (default `info,kube=warn`),
/// one JSON object per line when `json`, else human-readable lines. Calling it again (or after
/// another subscriber was installed) does nothing.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: pod logs and CI logs stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with `series` (name plus labels, as rendered).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().unwrap())
            })
    }

    #[test]
    fn telemetry_reconcile_counts_results_errors_and_durations() {
        let m = Metrics::new();
        m.reconcile("JukiNode", 0.02, None);
        m.reconcile("JukiNode", 0.2, None);
        m.reconcile("JukiNode", 3.0, Some("apply"));
        m.reconcile("JukiTier", 0.001, None);
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                r#"juki_reconciles_total{kind="JukiNode",result="ok"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"juki_reconciles_total{kind="JukiNode",result="error"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"juki_reconcile_errors_total{kind="JukiNode",step="apply"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"juki_reconcile_errors_total{kind="JukiTier"}"#),
            None
        );
        assert_eq!(
            sample(
                &text,
                r#"juki_reconcile_duration_seconds_count{kind="JukiNode"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"juki_reconcile_duration_seconds_bucket{kind="JukiNode",le="0.25"}"#
            ),
            Some(2.0)
        );
        let sum = sample(
            &text,
            r#"juki_reconcile_duration_seconds_sum{kind="JukiNode"}"#,
        )
        .unwrap();
        assert!((sum - 3.22).abs() < 1e-9, "{sum}");
        assert!(text.contains("# TYPE juki_reconciles_total counter"));
        assert!(text.contains("# TYPE juki_reconcile_duration_seconds histogram"));
        assert!(!text.contains("otel_scope"), "{text}");
        assert!(!text.contains("target_info"), "{text}");
    }

    #[test]
    fn telemetry_counters_for_transitions_batches_and_writes() {
        let m = Metrics::new();
        m.transition("hot", "Active", "Draining");
        m.transition("hot", "Active", "Draining");
        m.batch("hot", "nightly", "succeeded");
        m.api_write("JukiNode");
        m.api_write("JukiNode");
        m.api_write("Lease");
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                r#"juki_phase_transitions_total{from="Active",tier="hot",to="Draining"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"juki_batch_runs_total{batch="nightly",outcome="succeeded",tier="hot"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"juki_api_writes_total{kind="JukiNode"}"#),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, r#"juki_api_writes_total{kind="Lease"}"#),
            Some(1.0)
        );
    }

    #[test]
    fn telemetry_nodes_gauge_drops_to_zero_not_stale() {
        let m = Metrics::new();
        let s = |t: &str, p: &str, n: u64| (t.to_owned(), p.to_owned(), n);
        m.set_nodes(&[s("hot", "Active", 3), s("hot", "Sleeping", 2)]);
        let text = m.render();
        assert!(text.contains("# TYPE juki_nodes gauge"), "{text}");
        assert_eq!(
            sample(&text, r#"juki_nodes{phase="Active",tier="hot"}"#),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, r#"juki_nodes{phase="Sleeping",tier="hot"}"#),
            Some(2.0)
        );

        m.set_nodes(&[s("hot", "Active", 5)]);
        let text = m.render();
        assert_eq!(
            sample(&text, r#"juki_nodes{phase="Active",tier="hot"}"#),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, r#"juki_nodes{phase="Sleeping",tier="hot"}"#),
            Some(0.0)
        );

        m.set_nodes(&[]);
        let text = m.render();
        assert_eq!(
            sample(&text, r#"juki_nodes{phase="Active",tier="hot"}"#),
            Some(0.0)
        );
    }

    fn health(node: &str, phase: &str, expected: bool, faults: &[&str]) -> NodeHealth {
        NodeHealth {
            namespace: "pref-13".into(),
            node: node.into(),
            tier: "CS".into(),
            prefecture: "13".into(),
            expected_online: expected,
            phase: phase.into(),
            faults: faults.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn telemetry_node_health_series_follow_the_node_and_leave_with_it() {
        let m = Metrics::new();
        // Rendered labels are sorted by name.
        let at = |node: &str, extra: Option<(&str, &str)>| {
            let mut labels = vec![
                ("namespace", "pref-13"),
                ("node", node),
                ("prefecture", "13"),
                ("tier", "CS"),
            ];
            labels.extend(extra);
            labels.sort();
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!(r#"{k}="{v}""#))
                .collect();
            format!("{{{}}}", labels.join(","))
        };
        m.set_node_health(health("cs-131016", "Offline", true, &["NotOnline"]));
        m.set_node_health(health("cs-131024", "Online", true, &[]));
        let text = m.render();
        assert!(text.contains("# TYPE juki_node_phase gauge"), "{text}");
        let expected = |text: &str, node| {
            sample(
                text,
                &format!("juki_node_expected_online{}", at(node, None)),
            )
        };
        let phase = |text: &str, node, p: &str| {
            sample(
                text,
                &format!("juki_node_phase{}", at(node, Some(("phase", p)))),
            )
        };
        let fault = |text: &str, node, f: &str| {
            sample(
                text,
                &format!("juki_node_fault{}", at(node, Some(("fault", f)))),
            )
        };
        assert_eq!(expected(&text, "cs-131016"), Some(1.0), "{text}");
        assert_eq!(phase(&text, "cs-131016", "Offline"), Some(1.0));
        assert_eq!(fault(&text, "cs-131016", "NotOnline"), Some(1.0));
        assert_eq!(phase(&text, "cs-131024", "Online"), Some(1.0));

        // It comes up: the old phase and the cleared fault leave; the night: expected 0.
        m.set_node_health(health("cs-131016", "Online", true, &[]));
        let text = m.render();
        assert_eq!(phase(&text, "cs-131016", "Offline"), None, "{text}");
        assert_eq!(phase(&text, "cs-131016", "Online"), Some(1.0));
        assert_eq!(fault(&text, "cs-131016", "NotOnline"), None);
        assert!(!text.contains("juki_node_fault{"), "{text}");
        m.set_node_health(health("cs-131016", "Offline", false, &[]));
        assert_eq!(expected(&m.render(), "cs-131016"), Some(0.0));

        // Deleted: every series of it goes, the other node's stay.
        m.set_node_health(health("cs-131016", "Failed", false, &["BatchFailed"]));
        m.forget_node("pref-13", "cs-131016");
        let text = m.render();
        assert!(!text.contains("cs-131016"), "{text}");
        assert_eq!(phase(&text, "cs-131024", "Online"), Some(1.0));
        m.retain_nodes(&|_, _| false);
        assert!(!m.render().contains("juki_node_"), "{}", m.render());
    }

    #[test]
    fn telemetry_clones_share_and_instances_are_separate() {
        let a = Metrics::new();
        let b = a.clone();
        let other = Metrics::new();
        b.api_write("JukiNode");
        assert!(a.render().contains("juki_api_writes_total"));
        assert!(!other.render().contains("juki_api_writes_total"));
    }

    #[test]
    fn telemetry_init_logging_is_idempotent() {
        init_logging(false);
        init_logging(true);
        tracing::info!("logging initialised twice without panicking");
    }
}
