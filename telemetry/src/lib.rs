//! Spans leave the process: the operator's reconciles and the node services' update spans are
//! exported over OTLP/HTTP (protobuf) to a collector when an endpoint is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, the standard variable: the base URL, `/v1/traces` is added).
//! Without one nothing is exported, and recording a span costs only building it.
//!
//! A span is written down with the ids its caller made, not new ones from an SDK tracer: the node
//! services carry W3C trace context across tiers themselves (a prefecture's span names the CS's
//! span as its parent, taken from the relayed envelope), so the ids in the exported spans are the
//! ones in the `traceparent` headers and in the history rows.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanProcessor};

/// The environment variable naming the collector's base URL (as the OpenTelemetry SDKs read it).
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// How long one export request may take before it is given up (the batch is dropped: spans are
/// diagnostics, never worth blocking or buffering the service for).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{ENDPOINT_ENV} {endpoint:?}: {rule}")]
    Endpoint { endpoint: String, rule: String },
    #[error("starting the span export: {0}")]
    Start(String),
}

struct Export {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

static EXPORT: OnceLock<Export> = OnceLock::new();

/// Checks an OTLP base URL: plain `http://host:port` (the export client has no TLS; a collector
/// beside the cluster's nodes, or its in-cluster Service, is reached in plain HTTP).
pub fn check_endpoint(endpoint: &str) -> Result<String, Error> {
    let fail = |rule: &str| Error::Endpoint {
        endpoint: endpoint.to_owned(),
        rule: rule.to_owned(),
    };
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| fail("must start with http:// (the span export speaks plain HTTP)"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(fail("must name a host, as http://HOST:PORT"));
    }
    Ok(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
}

/// Starts exporting this process's spans to `endpoint` (an OTLP base URL), naming the process
/// `service` with `attributes` as its resource. Without an endpoint, nothing is exported. A
/// second call is refused (the first export stays).
pub fn init(
    endpoint: Option<&str>,
    service: &'static str,
    attributes: Vec<(&'static str, String)>,
) -> Result<bool, Error> {
    let Some(endpoint) = endpoint.filter(|e| !e.trim().is_empty()) else {
        return Ok(false);
    };
    let traces_url = check_endpoint(endpoint.trim())?;
    let client = OwnRuntime::new().map_err(|e| Error::Start(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(traces_url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| Error::Start(e.to_string()))?;
    let mut processor = BatchSpanProcessor::builder(exporter).build();
    let resource = Resource::builder_empty()
        .with_service_name(service)
        .with_attributes(attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)))
        .build();
    processor.set_resource(&resource);
    let export = Export {
        processor,
        scope: InstrumentationScope::builder(service)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    };
    EXPORT
        .set(export)
        .map_err(|_| Error::Start("the span export is already running".into()))?;
    Ok(true)
}

/// Sends what is still buffered (at the end of the process).
pub fn flush() {
    if let Some(export) = EXPORT.get()
        && let Err(error) = export.processor.force_flush()
    {
        tracing::warn!(%error, "could not flush the last spans");
    }
}

/// One span, recorded when it [ends](Span::end).
#[derive(Debug)]
pub struct Span {
    name: &'static str,
    trace_id: TraceId,
    span_id: SpanId,
    parent: SpanId,
    parent_is_remote: bool,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    status: Status,
}

impl Span {
    /// A span starting now with the caller's ids (32 and 16 hex digits, as in `traceparent`).
    /// Ids that do not parse make a span that is never exported.
    pub fn start(name: &'static str, trace_id: &str, span_id: &str) -> Span {
        Span {
            name,
            trace_id: TraceId::from_hex(trace_id).unwrap_or(TraceId::INVALID),
            span_id: SpanId::from_hex(span_id).unwrap_or(SpanId::INVALID),
            parent: SpanId::INVALID,
            parent_is_remote: false,
            kind: SpanKind::Internal,
            start: SystemTime::now(),
            attributes: Vec::new(),
            status: Status::Unset,
        }
    }

    /// The span that caused this one, in another process (`remote`) or in this one.
    pub fn child_of(mut self, parent_span_id: &str, remote: bool) -> Span {
        self.parent = SpanId::from_hex(parent_span_id).unwrap_or(SpanId::INVALID);
        self.parent_is_remote = remote;
        self
    }

    pub fn kind(mut self, kind: SpanKind) -> Span {
        self.kind = kind;
        self
    }

    pub fn started_at(mut self, start: SystemTime) -> Span {
        self.start = start;
        self
    }

    pub fn attr(mut self, key: &'static str, value: impl Into<Value>) -> Span {
        self.attributes.push(KeyValue::new(key, value));
        self
    }

    /// Marks the span failed, with why.
    pub fn fail(&mut self, message: impl Into<Cow<'static, str>>) {
        self.status = Status::error(message);
    }

    /// Ends the span now and hands it to the export (nothing happens without one).
    pub fn end(self) {
        let Some(export) = EXPORT.get() else {
            return;
        };
        if self.trace_id == TraceId::INVALID || self.span_id == SpanId::INVALID {
            return;
        }
        export.processor.on_end(self.into_data(&export.scope));
    }

    fn into_data(self, scope: &InstrumentationScope) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                self.span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: self.parent,
            parent_span_is_remote: self.parent_is_remote,
            span_kind: self.kind,
            name: Cow::Borrowed(self.name),
            start_time: self.start,
            end_time: SystemTime::now().max(self.start),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: self.status,
            instrumentation_scope: scope.clone(),
        }
    }
}

/// The OTLP exporter's HTTP client, on a runtime of its own: the batch processor exports from
/// its own thread, outside the service's runtime (actix's or the operator's), and hyper needs a
/// Tokio runtime to connect. One worker thread; it exists only while spans are exported.
#[derive(Debug)]
struct OwnRuntime {
    runtime: tokio::runtime::Runtime,
    client: opentelemetry_http::hyper::HyperClient,
}

impl OwnRuntime {
    fn new() -> std::io::Result<OwnRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()?;
        let client =
            opentelemetry_http::hyper::HyperClient::with_default_connector(EXPORT_TIMEOUT, None);
        Ok(OwnRuntime { runtime, client })
    }
}

#[async_trait::async_trait]
impl HttpClient for OwnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_a_plain_http_base_url() {
        assert_eq!(
            check_endpoint("http://otel-collector.monitoring:4318/").unwrap(),
            "http://otel-collector.monitoring:4318/v1/traces"
        );
        for (bad, rule) in [
            ("https://collector:4318", "must start with http://"),
            ("collector:4318", "must start with http://"),
            ("http://", "must name a host"),
            ("http:// x", "must name a host"),
        ] {
            let error = check_endpoint(bad).unwrap_err().to_string();
            assert!(
                error.contains(ENDPOINT_ENV) && error.contains(rule),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn a_span_keeps_the_callers_ids_and_parent() {
        let scope = InstrumentationScope::builder("test").build();
        let mut span = Span::start(
            "relay",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        )
        .child_of("b7ad6b7169203331", true)
        .kind(SpanKind::Server)
        .attr("juki.tier", "prefecture");
        span.fail("upstream refused");
        let data = span.into_data(&scope);
        assert_eq!(
            data.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(data.span_context.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(data.parent_span_id.to_string(), "b7ad6b7169203331");
        assert!(data.parent_span_is_remote);
        assert_eq!(data.span_kind, SpanKind::Server);
        assert!(data.end_time >= data.start_time);
        assert_eq!(
            data.attributes,
            vec![KeyValue::new("juki.tier", "prefecture")]
        );
        assert_eq!(data.status, Status::error("upstream refused"));
    }

    #[test]
    fn bad_ids_make_a_span_that_is_not_exported() {
        let span = Span::start("x", "not hex", "0000000000000000");
        assert_eq!(span.trace_id, TraceId::INVALID);
        assert_eq!(span.span_id, SpanId::INVALID);
        span.end(); // no export, no panic
    }
}
