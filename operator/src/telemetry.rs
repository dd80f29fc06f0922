//! Logs (plain or JSON) and, when the standard `OTEL_EXPORTER_OTLP_*` variables name an
//! endpoint, OTLP trace export over gRPC or HTTP/protobuf.
//!
//! Spans are handed from the SDK to a tokio task over a channel and exported there, so the
//! exporters (tonic, async reqwest) always run inside the runtime and never block a worker.

use crate::args::LogFormat;
use anyhow::Context as _;
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

const SERVICE_NAME: &str = "trust-rotation-operator";
const MAX_BATCH: usize = 512;
const BATCH_WINDOW: Duration = Duration::from_millis(200);

/// Flushes pending spans on shutdown.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    flush: Option<mpsc::UnboundedSender<Msg>>,
}

enum Msg {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug)]
struct ChannelProcessor {
    tx: mpsc::UnboundedSender<Msg>,
}

impl SpanProcessor for ChannelProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let _ = self.tx.send(Msg::Span(Box::new(span)));
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

async fn export_loop<E: SpanExporter + 'static>(exporter: E, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch: Vec<SpanData> = Vec::new();
    loop {
        let first = rx.recv().await;
        let mut flushes = Vec::new();
        match first {
            None => break,
            Some(Msg::Span(s)) => batch.push(*s),
            Some(Msg::Flush(done)) => flushes.push(done),
        }
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH && flushes.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Msg::Span(s))) => batch.push(*s),
                Ok(Some(Msg::Flush(done))) => flushes.push(done),
                Ok(None) | Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let spans = std::mem::take(&mut batch);
            let n = spans.len();
            if let Err(e) = exporter.export(spans).await {
                tracing::warn!(error = %e, spans = n, "could not export spans over OTLP");
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Sets up logging, and OTLP tracing when an endpoint is configured. Must run inside the
/// tokio runtime.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(level)
        .with_context(|| format!("--log-level {level:?} is not a valid level or filter"))?;
    let fmt = tracing_subscriber::fmt::layer().with_target(true);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Plain => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    }
    .context("installing the log subscriber")?;

    if !env_set("OTEL_EXPORTER_OTLP_ENDPOINT") && !env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(Telemetry {
            provider: None,
            flush: None,
        });
    }
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|_| "grpc".into());
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured by the builder's detectors.
    let resource = if env_set("OTEL_SERVICE_NAME") {
        Resource::builder().build()
    } else {
        Resource::builder().with_service_name(SERVICE_NAME).build()
    };
    let (tx, rx) = mpsc::unbounded_channel();
    match protocol.trim() {
        "grpc" => {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .context("building the OTLP gRPC exporter")?;
            exporter.set_resource(&resource);
            tokio::spawn(export_loop(exporter, rx));
        }
        "http/protobuf" => {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .context("building the OTLP HTTP exporter")?;
            exporter.set_resource(&resource);
            tokio::spawn(export_loop(exporter, rx));
        }
        other => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use grpc or http/protobuf"
        ),
    }
    let provider = SdkTracerProvider::builder()
        .with_span_processor(ChannelProcessor { tx: tx.clone() })
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing::info!(%protocol, "exporting rotation traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
        flush: Some(tx),
    })
}

impl Telemetry {
    /// Exports what is pending (bounded wait).
    pub async fn shutdown(self) {
        if let Some(tx) = &self.flush {
            let (done, wait) = oneshot::channel();
            if tx.send(Msg::Flush(done)).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
            }
        }
        if let Some(p) = self.provider {
            let _ = p.shutdown();
        }
    }
}
