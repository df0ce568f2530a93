//! A real OpenTelemetry Collector for the trace tests (`tests/cluster/otelcol`, built by
//! `build.sh`): OTLP/HTTP in on every address of the host, so that the real node's pods reach it
//! at the host end of the node's veth ([`HOST_IP`]); the spans out as OTLP JSON lines in a file
//! of its own that the test reads. Stopped and its directory removed when dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{poll_until, unique_name};

/// The host's address on the real node's veth (tests/cluster/node.sh): what its pods reach the
/// host (and the API server) at.
pub const HOST_IP: &str = "10.199.0.1";

#[derive(Debug)]
pub struct Collector {
    pub port: u16,
    dir: PathBuf,
    _child: tokio::process::Child,
}

/// One exported span, flattened: its process's resource and its own fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSpan {
    pub service: String,
    pub resource: BTreeMap<String, String>,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP's SpanKind number (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i64,
    pub attributes: BTreeMap<String, String>,
    /// OTLP's status code (0 unset, 1 ok, 2 error).
    pub status: i64,
}

impl Collector {
    /// Starts `binary` and returns once its OTLP/HTTP port accepts connections.
    pub async fn start(binary: &Path) -> Collector {
        let dir = std::env::temp_dir().join(unique_name("otelcol"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("0.0.0.0:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let config = dir.join("config.yaml");
        std::fs::write(&config, config_yaml(port, &dir.join("spans.jsonl"))).unwrap();
        let log = std::fs::File::create(dir.join("otelcol.log")).unwrap();
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config={}", config.display()))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let collector = Collector {
            port,
            dir,
            _child: child,
        };
        let listening = poll_until("the collector listening", Duration::from_secs(60), || {
            let connected = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            async move { connected }
        })
        .await;
        listening.unwrap_or_else(|e| panic!("{e}\n{}", collector.log()));
        collector
    }

    /// The OTLP base URL the real node's pods (and the host) reach the collector at.
    pub fn endpoint(&self) -> String {
        format!("http://{HOST_IP}:{}", self.port)
    }

    /// Every span the collector has written so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        let text = std::fs::read_to_string(self.dir.join("spans.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .flat_map(|export| parse_export(&export))
            .collect()
    }

    /// The collector's own log, for a failure's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("otelcol.log")).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The OTLP receiver (HTTP only), a short batch and the file exporter.
fn config_yaml(port: u16, spans: &Path) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      http:
        endpoint: 0.0.0.0:{port}
processors:
  batch:
    timeout: 200ms
exporters:
  file:
    path: {}
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [file]
",
        spans.display()
    )
}

/// An OTLP/JSON value as text (strings as they are, numbers and booleans printed).
fn any_value(value: &Value) -> String {
    for key in ["stringValue", "intValue", "doubleValue", "boolValue"] {
        match &value[key] {
            Value::Null => continue,
            Value::String(s) => return s.clone(),
            other => return other.to_string(),
        }
    }
    value.to_string()
}

fn attributes(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            (
                kv["key"].as_str().unwrap_or_default().to_owned(),
                any_value(&kv["value"]),
            )
        })
        .collect()
}

/// The spans of one line of the file exporter (an OTLP/JSON ExportTraceServiceRequest).
fn parse_export(export: &Value) -> Vec<ExportedSpan> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut spans = Vec::new();
    for resource_spans in export["resourceSpans"].as_array().into_iter().flatten() {
        let resource = attributes(&resource_spans["resource"]["attributes"]);
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans["scopeSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for span in scope["spans"].as_array().into_iter().flatten() {
                spans.push(ExportedSpan {
                    service: service.clone(),
                    resource: resource.clone(),
                    name: text(&span["name"]),
                    trace_id: text(&span["traceId"]),
                    span_id: text(&span["spanId"]),
                    parent_span_id: text(&span["parentSpanId"]),
                    kind: span["kind"].as_i64().unwrap_or_default(),
                    attributes: attributes(&span["attributes"]),
                    status: span["status"]["code"].as_i64().unwrap_or_default(),
                });
            }
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_otlp_json_line_flattens_into_spans_with_their_resource() {
        let line = serde_json::json!({"resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "juki-node"}},
                {"key": "juki.node", "value": {"stringValue": "pref-41"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
                "parentSpanId": "b7ad6b7169203331", "name": "apply relayed update", "kind": 5,
                "attributes": [{"key": "juki.seq", "value": {"intValue": "3"}}],
                "status": {}}]}]}]});
        let spans = parse_export(&line);
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.service, "juki-node");
        assert_eq!(span.resource["juki.node"], "pref-41");
        assert_eq!(span.parent_span_id, "b7ad6b7169203331");
        assert_eq!(span.kind, 5);
        assert_eq!(span.attributes["juki.seq"], "3");
        assert_eq!(span.status, 0);
    }
}
