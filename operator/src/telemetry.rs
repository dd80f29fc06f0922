//! Logs (plain or JSON, carrying the `trace_id` and `span_id` of the span they happen in)
//! and, when the standard `OTEL_EXPORTER_OTLP_*` variables name an endpoint, OTLP trace
//! export over gRPC or HTTP/protobuf.
//!
//! The `tracing` spans of the code (each step execution, probe sweep and API write) become
//! OpenTelemetry spans through the `tracing-opentelemetry` layer; the rotation and step spans,
//! which may outlive a process, are emitted by the runner with fixed ids (see
//! `trust_rotation_steps::runner::telemetry`), which the [`PinnableIds`] generator hands to
//! the SDK.
//!
//! Spans are handed from the SDK to a tokio task over a channel and exported there, so the
//! exporters (tonic, async reqwest) always run inside the runtime and never block a worker.
//! That task also drops executions that changed nothing together with the spans under them
//! ([`Holding`]).

use crate::args::LogFormat;
use anyhow::Context as _;
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::format::{self, Format, Full, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;
use trust_rotation_steps::runner::telemetry::{pinned_ids, DISCARD, TRACER};

const SERVICE_NAME: &str = "trust-rotation-operator";
const MAX_BATCH: usize = 512;
const BATCH_WINDOW: Duration = Duration::from_millis(200);
/// How long spans wait for the execution they belong to before they are exported anyway.
const MAX_HOLD: Duration = Duration::from_secs(600);
/// How many spans may wait at most.
const MAX_HELD: usize = 20_000;

/// Flushes pending spans on shutdown.
pub struct Telemetry {
    provider: SdkTracerProvider,
    flush: Option<mpsc::UnboundedSender<Msg>>,
}

// === ids ===

/// Random ids, except while the runner pins the ids of the span it builds.
#[derive(Debug, Default)]
pub struct PinnableIds(RandomIdGenerator);

impl IdGenerator for PinnableIds {
    fn new_trace_id(&self) -> TraceId {
        pinned_ids().map_or_else(|| self.0.new_trace_id(), |(t, _)| t)
    }

    fn new_span_id(&self) -> SpanId {
        pinned_ids().map_or_else(|| self.0.new_span_id(), |(_, s)| s)
    }
}

// === which spans are exported ===

/// Spans waiting for the local root they belong to (the span whose parent is remote or
/// absent: an execution, a rotation scope). When that root ends, its whole subtree is
/// exported, or dropped if the root is marked [`DISCARD`]. Children end before their
/// parents, so a subtree is complete when its root ends.
#[derive(Default)]
struct Holding {
    /// By the id of the (still open) span they hang under.
    waiting: HashMap<SpanId, (Instant, Vec<SpanData>)>,
    held: usize,
}

fn discarded(span: &SpanData) -> bool {
    span.attributes
        .iter()
        .any(|kv| kv.key.as_str() == DISCARD && kv.value == opentelemetry::Value::Bool(true))
}

impl Holding {
    /// Takes a span that ended; returns what to export now.
    fn take(&mut self, span: SpanData, now: Instant) -> Vec<SpanData> {
        let mut group = match self.waiting.remove(&span.span_context.span_id()) {
            Some((_, g)) => {
                self.held -= g.len();
                g
            }
            None => Vec::new(),
        };
        let local_root = span.parent_span_id == SpanId::INVALID || span.parent_span_is_remote;
        if local_root {
            if discarded(&span) {
                return Vec::new();
            }
            group.push(span);
            return group;
        }
        let parent = span.parent_span_id;
        group.push(span);
        self.held += group.len();
        self.waiting
            .entry(parent)
            .or_insert_with(|| (now, Vec::new()))
            .1
            .extend(group);
        if self.held > MAX_HELD {
            return self.drain();
        }
        Vec::new()
    }

    /// Spans that waited too long (their parent ended before them, or never ends).
    fn expire(&mut self, now: Instant) -> Vec<SpanData> {
        let old: Vec<SpanId> = self
            .waiting
            .iter()
            .filter(|(_, (since, _))| now.duration_since(*since) >= MAX_HOLD)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in old {
            if let Some((_, g)) = self.waiting.remove(&id) {
                self.held -= g.len();
                out.extend(g);
            }
        }
        out
    }

    /// Everything still waiting (at shutdown).
    fn drain(&mut self) -> Vec<SpanData> {
        self.held = 0;
        self.waiting.drain().flat_map(|(_, (_, g))| g).collect()
    }
}

// === export ===

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
    let mut holding = Holding::default();
    let mut batch: Vec<SpanData> = Vec::new();
    let mut flushes = Vec::new();
    loop {
        match rx.recv().await {
            None => break,
            Some(msg) => take(&mut holding, msg, &mut batch, &mut flushes),
        }
        let deadline = Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH && flushes.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(msg)) => take(&mut holding, msg, &mut batch, &mut flushes),
                Ok(None) | Err(_) => break,
            }
        }
        batch.extend(holding.expire(Instant::now()));
        if !flushes.is_empty() {
            batch.extend(holding.drain());
        }
        export(&exporter, &mut batch).await;
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
}

fn take(
    holding: &mut Holding,
    msg: Msg,
    batch: &mut Vec<SpanData>,
    flushes: &mut Vec<oneshot::Sender<()>>,
) {
    match msg {
        Msg::Span(s) => batch.extend(holding.take(*s, Instant::now())),
        Msg::Flush(done) => flushes.push(done),
    }
}

async fn export<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let n = spans.len();
    if let Err(e) = exporter.export(spans).await {
        tracing::warn!(error = %e, spans = n, "could not export spans over OTLP");
    }
}

// === logs ===

/// The trace and span ids of the innermost traced span an event happens in: entering a span
/// makes its OpenTelemetry context current (the layer's context activation).
fn current_ids() -> Option<(TraceId, SpanId)> {
    let cx = Context::current();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
}

/// An event formatter that adds `trace_id` and `span_id` to every line logged inside a span:
/// as two more JSON fields, or `trace_id=… span_id=…` at the end of a plain line.
struct WithTraceIds<F> {
    /// The formatter for a writer without colours, and for one with.
    inner: (F, F),
    json: bool,
}

impl WithTraceIds<Format<Full>> {
    fn plain() -> Self {
        Self {
            inner: (
                format().with_target(true).with_ansi(false),
                format().with_target(true).with_ansi(true),
            ),
            json: false,
        }
    }
}

impl WithTraceIds<Format<Json>> {
    fn json() -> Self {
        let f = || format().json().flatten_event(true).with_target(true);
        Self {
            inner: (f(), f()),
            json: true,
        }
    }
}

fn format() -> Format<Full> {
    format::format()
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let inner = if writer.has_ansi_escapes() {
            &self.inner.1
        } else {
            &self.inner.0
        };
        let Some((trace_id, span_id)) = current_ids() else {
            return inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        inner.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        match line.strip_suffix('}') {
            Some(object) if self.json => writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            _ => writeln!(writer, "{line} trace_id={trace_id} span_id={span_id}"),
        }
    }
}

// === setup ===

/// Logs in `format` to `writer` as `filter` says, and the operator's spans to `provider`.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    provider: &SdkTracerProvider,
    writer: W,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // The operator's own spans only (not the Kubernetes client's per-request spans), and
    // whatever --log-level says: a quiet log does not mean no traces.
    let traced = Targets::new()
        .with_target("trust_rotation_steps", tracing::Level::INFO)
        .with_target("trust_rotation_operator", tracing::Level::INFO);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(TRACER))
        .with_threads(false)
        .with_filter(traced);
    let fmt = match format {
        LogFormat::Plain => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .event_format(WithTraceIds::plain())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .event_format(WithTraceIds::json())
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry().with(otel).with(fmt)
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Sets up logging, the tracing layer, and OTLP export when an endpoint is configured. Must
/// run inside the tokio runtime.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(level)
        .with_context(|| format!("--log-level {level:?} is not a valid level or filter"))?;

    let exporting =
        env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|_| "grpc".into());
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured by the builder's detectors;
    // OTEL_TRACES_SAMPLER(_ARG) by the provider's default configuration.
    let instance = format!("{:032x}", rand::random::<u128>());
    let resource = if env_set("OTEL_SERVICE_NAME") {
        Resource::builder()
    } else {
        Resource::builder().with_service_name(SERVICE_NAME)
    }
    .with_attribute(KeyValue::new("service.instance.id", instance))
    .build();
    let mut provider = SdkTracerProvider::builder()
        .with_id_generator(PinnableIds::default())
        .with_resource(resource.clone());
    let mut flush = None;
    if exporting {
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
        provider = provider.with_span_processor(ChannelProcessor { tx: tx.clone() });
        flush = Some(tx);
    }
    // Without an endpoint spans go nowhere, but they still give logs their trace ids (a
    // rotation's trace id is its id).
    let provider = provider.build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    subscriber(format, filter, &provider, std::io::stdout)
        .try_init()
        .context("installing the log subscriber")?;
    if exporting {
        tracing::info!(%protocol, "exporting rotation traces over OTLP");
    }
    Ok(Telemetry { provider, flush })
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
        let _ = self.provider.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
    use opentelemetry::InstrumentationScope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;
    use trust_rotation_crds::{Phase, RotationRecord};
    use trust_rotation_steps::runner::telemetry::{execution_span, RotationTrace};

    fn span(id: u64, parent: u64, remote: bool, discard: bool) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(7u128),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: remote,
            span_kind: SpanKind::Internal,
            name: format!("span {id}").into(),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: if discard {
                vec![KeyValue::new(DISCARD, true)]
            } else {
                vec![]
            },
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::default(),
        }
    }

    fn ids(spans: &[SpanData]) -> Vec<u64> {
        let mut v: Vec<u64> = spans
            .iter()
            .map(|s| u64::from_be_bytes(s.span_context.span_id().to_bytes()))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn an_execution_is_exported_with_its_subtree_or_dropped_with_it() {
        let now = Instant::now();
        let mut h = Holding::default();
        // execution 1 (remote parent 100) > write 2 > nothing; probe 3
        assert!(h.take(span(2, 1, false, false), now).is_empty());
        assert!(h.take(span(3, 1, false, false), now).is_empty());
        assert_eq!(ids(&h.take(span(1, 100, true, false), now)), [1, 2, 3]);
        // execution 4 changed nothing: it goes with everything under it, nested or not
        assert!(h.take(span(6, 5, false, false), now).is_empty());
        assert!(h.take(span(5, 4, false, false), now).is_empty());
        assert!(h.take(span(4, 100, true, true), now).is_empty());
        // a root (the rotation span) and a remote child (a step span) go at once
        assert_eq!(ids(&h.take(span(100, 0, false, false), now)), [100]);
        assert_eq!(ids(&h.take(span(101, 100, true, false), now)), [101]);
        // the discarded probe of a rotation's sampling decision
        assert!(h.take(span(102, 0, false, true), now).is_empty());
        assert_eq!(h.held, 0);
        assert!(h.waiting.is_empty());
    }

    #[tokio::test]
    async fn spans_whose_parent_never_ends_are_exported_in_the_end() {
        let now = Instant::now();
        let mut h = Holding::default();
        assert!(h.take(span(2, 1, false, false), now).is_empty());
        assert!(h.expire(now + MAX_HOLD / 2).is_empty());
        assert!(h
            .take(span(3, 9, false, false), now + MAX_HOLD / 2)
            .is_empty());
        assert_eq!(ids(&h.expire(now + MAX_HOLD)), [2]);
        assert_eq!(ids(&h.drain()), [3], "everything goes out at shutdown");
        assert_eq!(h.held, 0);
    }

    #[tokio::test]
    async fn too_many_waiting_spans_are_exported_as_they_are() {
        let now = Instant::now();
        let mut h = Holding::default();
        let mut out = Vec::new();
        for i in 0..=MAX_HELD as u64 {
            out.extend(h.take(span(i + 1_000_000, i + 1, false, false), now));
        }
        assert_eq!(out.len(), MAX_HELD + 1);
        assert_eq!(h.held, 0);
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// Logs an event inside an execution of a rotation and one outside any span; returns the
    /// two lines and the rotation's trace.
    fn log_inside_and_outside(format: LogFormat) -> (String, String, RotationTrace) {
        let provider = SdkTracerProvider::builder()
            .with_id_generator(PinnableIds::default())
            .build();
        let buffer = Buffer::default();
        let sub = subscriber(format, EnvFilter::new("info"), &provider, buffer.clone());
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let rotation = RotationRecord {
            id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            trigger: "test".into(),
            from_anchor: None,
            to_anchor: None,
            superseded_anchors: vec![],
            started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            ),
            finished_at: None,
            trace_parent: Some(tp.into()),
            issuer_renewal: None,
            approvals: Vec::new(),
        };
        tracing::subscriber::with_default(sub, || {
            let span = execution_span(&rotation, "AwaitPropagation", Phase::PropagatingTrustRoots);
            span.in_scope(|| tracing::info!(pods = 3, "inside"));
            drop(span);
            tracing::info!("outside");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        (
            lines[0].to_string(),
            lines[1].to_string(),
            RotationTrace::parse(tp).unwrap(),
        )
    }

    #[test]
    fn json_logs_carry_the_trace_and_span_ids_as_fields() {
        let (inside, outside, trace) = log_inside_and_outside(LogFormat::Json);
        let inside: serde_json::Value = serde_json::from_str(&inside).expect("one JSON object");
        assert_eq!(inside["message"], "inside");
        assert_eq!(inside["pods"], 3);
        assert_eq!(inside["trace_id"], trace.trace_id.to_string());
        let span_id = inside["span_id"].as_str().expect("a span id");
        assert_eq!(span_id.len(), 16);
        assert_ne!(
            span_id,
            trace.step_span_id("AwaitPropagation").to_string(),
            "the execution's own span, a child of the step's"
        );
        let outside: serde_json::Value = serde_json::from_str(&outside).expect("one JSON object");
        assert_eq!(outside["message"], "outside");
        assert!(outside.get("trace_id").is_none() && outside.get("span_id").is_none());
    }

    #[test]
    fn plain_logs_end_with_the_trace_and_span_ids() {
        let (inside, outside, trace) = log_inside_and_outside(LogFormat::Plain);
        assert!(inside.contains("inside"), "{inside}");
        let (_, ids) = inside.split_once(" trace_id=").expect("ids at the end");
        let (t, s) = ids.split_once(" span_id=").expect("a span id");
        assert_eq!(t, trace.trace_id.to_string());
        assert_eq!(s.len(), 16, "{inside}");
        assert!(!outside.contains("trace_id"), "{outside}");
    }

    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Collect {
        fn on_start(&self, _span: &mut Span, _cx: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    #[test]
    fn rotation_and_step_spans_get_the_persisted_ids() {
        use trust_rotation_steps::runner::telemetry::{
            rotation_span, start_rotation_trace, step_span,
        };
        let collect = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_id_generator(PinnableIds::default())
            .with_span_processor(collect.clone())
            .build();
        opentelemetry::global::set_tracer_provider(provider);
        let start = trust_rotation_steps::workflow::RotationStart {
            trigger: "trust anchor renewed".into(),
            from_anchor: None,
            to_anchor: None,
        };
        let (id, tp) = start_rotation_trace(&start, jiff::Timestamp::now());
        let trace = RotationTrace::parse(&tp).expect("a valid traceparent");
        assert_eq!(id, trace.trace_id.to_string());
        assert!(tp.ends_with("-01"), "sampled by the default sampler: {tp}");
        let started =
            jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 60).unwrap();
        let time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let rotation = RotationRecord {
            id: id.clone(),
            trigger: start.trigger.clone(),
            from_anchor: None,
            to_anchor: None,
            superseded_anchors: vec![],
            started_at: time(started),
            finished_at: None,
            trace_parent: Some(tp.clone()),
            issuer_renewal: None,
            approvals: Vec::new(),
        };
        let rec = trust_rotation_crds::StepRecord {
            name: "AwaitPropagation".into(),
            phase: Phase::PropagatingTrustRoots,
            state: trust_rotation_crds::StepState::Done,
            attempts: 3,
            started_at: Some(time(started)),
            finished_at: None,
            last_progress_time: None,
            message: None,
        };
        step_span(&rotation, &rec);
        rotation_span(&rotation);

        let spans: Vec<SpanData> = collect
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.span_context.trace_id() == trace.trace_id)
            .cloned()
            .collect();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["rotation", "step AwaitPropagation", "rotation"]);
        assert!(discarded(&spans[0]), "the sampling probe is never exported");
        let step = &spans[1];
        assert_eq!(
            step.span_context.span_id(),
            trace.step_span_id("AwaitPropagation")
        );
        assert_eq!(step.parent_span_id, trace.span_id);
        assert_eq!(step.start_time, SystemTime::from(started));
        let root = &spans[2];
        assert!(!discarded(root));
        assert_eq!(root.span_context.span_id(), trace.span_id);
        assert_eq!(root.parent_span_id, SpanId::INVALID, "a root");
        assert_eq!(root.start_time, SystemTime::from(started));
        assert!(root.end_time.duration_since(root.start_time).unwrap() >= Duration::from_secs(60));
        assert_eq!(
            pinned_ids(),
            None,
            "ids are pinned only while those spans are built"
        );
    }
}
