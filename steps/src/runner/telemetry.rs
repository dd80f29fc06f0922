//! The spans of a rotation, and the ids that tie them into one trace across operator
//! processes.
//!
//! A rotation is one trace whose id is the rotation id. Its tree:
//!
//! ```text
//! rotation                      root, from the rotation's start to its finish
//! ├─ start rotation / finish rotation / pause rotation    the runner's own status writes
//! ├─ step <name>                one per step, from the step's start to its finish
//! │  └─ execute <name>          one per execution of the step that changed something
//! │     ├─ probe sweep          probes of meshed pods' proxies
//! │     ├─ <verb> <Kind> <ns>/<name>   every API write (the status, the bundle...)
//! │     └─ publish Event <reason>
//! ```
//!
//! Executions, probe sweeps and writes are ordinary `tracing` spans, exported by the
//! `tracing-opentelemetry` layer the binary installs. The `rotation` and `step` spans may
//! outlive the process that started them (an operator restarted mid-step, SIGKILLed even),
//! so they are emitted once, when they finish, with their persisted start time, by whichever
//! process finishes them. Their ids are fixed in advance so that children emitted earlier,
//! possibly by another process, already point at them:
//!
//! - the rotation span's trace and span ids are the persisted `status.rotation.traceParent`;
//! - a step span's id is derived from that traceparent and the step's name
//!   ([`RotationTrace::step_span_id`]).
//!
//! The OpenTelemetry SDK draws span ids from its `IdGenerator`; the binary installs one that
//! returns [`pinned_ids`] when they are set, which is how those fixed ids reach the SDK.
//!
//! Executions that only looked again and changed nothing are marked with [`DISCARD`]: the
//! binary's span pipeline drops them together with everything under them, so a wait of
//! hours is a handful of spans, not one every few seconds.

use crate::workflow::RotationStart;
use jiff::Timestamp;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::future::Future;
use std::time::SystemTime;
use tracing::field::Empty;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use trust_rotation_crds::{Phase, RotationRecord, StepRecord};

/// The instrumentation scope of the spans the runner emits itself.
pub const TRACER: &str = "trust-rotation-operator";

/// A span attribute: `true` means "do not export this span nor anything under it". Set on
/// executions that changed nothing, and on the probe span that decides whether a new
/// rotation is sampled.
pub const DISCARD: &str = "trust_rotation.discard";

// === fixed ids ===

thread_local! {
    static PINNED: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// The trace and span ids the span being built on this thread must have, if any. The
/// binary's `IdGenerator` returns these instead of random ids while they are set.
pub fn pinned_ids() -> Option<(TraceId, SpanId)> {
    PINNED.with(Cell::get)
}

/// Builds a span with these ids (see [`pinned_ids`]).
fn with_pinned<R>(ids: (TraceId, SpanId), build: impl FnOnce() -> R) -> R {
    struct Unpin;
    impl Drop for Unpin {
        fn drop(&mut self) {
            PINNED.with(|p| p.set(None));
        }
    }
    PINNED.with(|p| p.set(Some(ids)));
    let _unpin = Unpin;
    build()
}

/// Whether the SDK gave a span the ids it was asked for. When it did not (a tracer provider
/// without the pinning `IdGenerator`), the tree is broken: say so once.
fn check_pinned(sc: &SpanContext, ids: (TraceId, SpanId)) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if sc.is_valid() && (sc.trace_id() != ids.0 || sc.span_id() != ids.1) {
        WARNED.call_once(|| {
            tracing::warn!(
                "the tracer provider ignores fixed span ids: install an IdGenerator that \
                 returns runner::telemetry::pinned_ids(), or rotation and step spans will \
                 not be the parents of their executions"
            )
        });
    }
}

// === the rotation's trace ===

/// A rotation's persisted trace context: the ids of its root span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationTrace {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

impl RotationTrace {
    /// Parses a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
    pub fn parse(trace_parent: &str) -> Option<Self> {
        let mut parts = trace_parent.trim().split('-');
        let (Some("00"), Some(t), Some(s), Some(f), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if t.len() != 32 || s.len() != 16 || f.len() != 2 {
            return None;
        }
        let trace = RotationTrace {
            trace_id: TraceId::from_hex(t).ok()?,
            span_id: SpanId::from_hex(s).ok()?,
            flags: TraceFlags::new(u8::from_str_radix(f, 16).ok()?),
        };
        (trace.trace_id != TraceId::INVALID && trace.span_id != SpanId::INVALID).then_some(trace)
    }

    /// The rotation's trace, when its record carries one.
    pub fn of(rotation: &RotationRecord) -> Option<Self> {
        rotation.trace_parent.as_deref().and_then(Self::parse)
    }

    pub fn trace_parent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            self.flags.to_u8()
        )
    }

    /// The id of the span of step `step` of this rotation: the same in every process.
    pub fn step_span_id(&self, step: &str) -> SpanId {
        let mut h = Sha256::new();
        h.update(self.trace_id.to_bytes());
        h.update(self.span_id.to_bytes());
        h.update(step.as_bytes());
        let d = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        if id == [0; 8] {
            id[7] = 1;
        }
        SpanId::from_bytes(id)
    }

    fn remote(&self, span_id: SpanId) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            self.trace_id,
            span_id,
            self.flags,
            true,
            TraceState::default(),
        ))
    }

    /// The rotation span, as a remote parent.
    pub fn context(&self) -> Context {
        self.remote(self.span_id)
    }

    /// The span of step `step`, as a remote parent.
    pub fn step_context(&self, step: &str) -> Context {
        self.remote(self.step_span_id(step))
    }
}

/// The remote context a `traceparent` describes (the rotation span).
pub fn parent_context(trace_parent: &str) -> Option<Context> {
    RotationTrace::parse(trace_parent).map(|t| t.context())
}

fn random_ids() -> (TraceId, SpanId) {
    loop {
        let t = TraceId::from_bytes(rand::random::<[u8; 16]>());
        let s = SpanId::from_bytes(rand::random::<[u8; 8]>());
        if t != TraceId::INVALID && s != SpanId::INVALID {
            return (t, s);
        }
    }
}

/// Starts a rotation's trace: picks the ids of its root span and asks the sampler whether
/// the trace is recorded. Nothing is exported now (the root span is emitted when the
/// rotation finishes, see [`rotation_span`]). Returns the rotation id (the trace id) and
/// the W3C `traceparent` to persist.
pub fn start_rotation_trace(start: &RotationStart, _now: Timestamp) -> (String, String) {
    let ids = random_ids();
    let tracer = opentelemetry::global::tracer(TRACER);
    let mut probe = with_pinned(ids, || {
        tracer
            .span_builder("rotation")
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new(DISCARD, true),
                KeyValue::new("rotation.trigger", start.trigger.clone()),
            ])
            .start_with_context(&tracer, &Context::new())
    });
    let sc = probe.span_context().clone();
    probe.end();
    // Without a tracer (tracing off), or one that ignores the fixed ids, the trace is marked
    // sampled: turning tracing on mid-rotation then still records the rest of it.
    let sampled = !(sc.is_valid() && sc.trace_id() == ids.0) || sc.is_sampled();
    check_pinned(&sc, ids);
    let trace = RotationTrace {
        trace_id: ids.0,
        span_id: ids.1,
        flags: if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
    };
    (ids.0.to_string(), trace.trace_parent())
}

fn system_time(t: Timestamp) -> SystemTime {
    SystemTime::from(t)
}

/// Emits the span of step `rec`, which just finished: from its persisted start until now,
/// a child of the rotation span, with the id its executions already point at.
pub fn step_span(rotation: &RotationRecord, rec: &StepRecord) {
    step_span_ended(rotation, rec, "done");
}

/// Like [`step_span`], for a step that ended with `outcome` (`done`, or `retargeted` for a
/// step in progress when its rotation changed target: it starts over under a new span).
pub fn step_span_ended(rotation: &RotationRecord, rec: &StepRecord, outcome: &'static str) {
    let Some(trace) = RotationTrace::of(rotation) else {
        return;
    };
    let end = SystemTime::now();
    let start = rec
        .started_at
        .as_ref()
        .map_or(end, |t| system_time(t.0).min(end));
    let ids = (trace.trace_id, trace.step_span_id(&rec.name));
    let tracer = opentelemetry::global::tracer(TRACER);
    let mut span = with_pinned(ids, || {
        tracer
            .span_builder(format!("step {}", rec.name))
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("rotation", rotation.id.clone()),
                KeyValue::new("step", rec.name.clone()),
                KeyValue::new("phase", rec.phase.as_str()),
                KeyValue::new("outcome", outcome),
                KeyValue::new("attempts", i64::from(rec.attempts)),
            ])
            .start_with_context(&tracer, &trace.context())
    });
    check_pinned(span.span_context(), ids);
    span.set_status(Status::Ok);
    span.end_with_timestamp(end);
}

/// Emits the rotation's root span when the rotation finishes: from its persisted start until
/// now, with the persisted trace and span ids, so that every span of the rotation, whichever
/// process emitted it, hangs under it.
pub fn rotation_span(rotation: &RotationRecord) {
    rotation_span_ended(rotation, "done");
}

/// Like [`rotation_span`], with the outcome: `done`, or `retargeted` for the part of a
/// rotation before it changed target (it continues under a new id and trace).
pub fn rotation_span_ended(rotation: &RotationRecord, outcome: &'static str) {
    let Some(trace) = RotationTrace::of(rotation) else {
        return;
    };
    let end = SystemTime::now();
    let start = system_time(rotation.started_at.0).min(end);
    let mut attrs = vec![
        KeyValue::new("rotation", rotation.id.clone()),
        KeyValue::new("rotation.trigger", rotation.trigger.clone()),
        KeyValue::new("rotation.outcome", outcome),
    ];
    if let Some(f) = &rotation.from_anchor {
        attrs.push(KeyValue::new("rotation.from_anchor", f.clone()));
    }
    if let Some(t) = &rotation.to_anchor {
        attrs.push(KeyValue::new("rotation.to_anchor", t.clone()));
    }
    let ids = (trace.trace_id, trace.span_id);
    let tracer = opentelemetry::global::tracer(TRACER);
    let mut span = with_pinned(ids, || {
        tracer
            .span_builder("rotation")
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attrs)
            // A root: never the child of whatever span is current.
            .start_with_context(&tracer, &Context::new())
    });
    check_pinned(span.span_context(), ids);
    span.set_status(Status::Ok);
    span.end_with_timestamp(end);
}

// === tracing spans ===

/// The span of one execution of a step: a child of the step's span. Its outcome is filled
/// in by [`record_execution`], or it is dropped by [`discard`].
pub fn execution_span(rotation: &RotationRecord, step: &str, phase: Phase) -> tracing::Span {
    let span = tracing::info_span!(
        "execute",
        otel.name = %format!("execute {step}"),
        rotation = %rotation.id,
        step,
        phase = %phase,
        attempt = Empty,
        outcome = Empty,
        detail = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    if let Some(trace) = RotationTrace::of(rotation) {
        let _ = span.set_parent(trace.step_context(step));
    }
    span
}

/// What an execution ended with (the transition's `ExecutionSpan` effect).
pub fn record_execution(span: &tracing::Span, outcome: &'static str, detail: Option<&str>) {
    span.record("outcome", outcome);
    if let Some(d) = detail {
        span.record("detail", d);
    }
    if outcome == "error" || outcome == "blocked" {
        span.record("otel.status_code", "error");
        span.record("otel.status_description", detail.unwrap_or(outcome));
    }
}

/// Marks `span` (and everything under it) as not worth exporting.
pub fn discard(span: &tracing::Span) {
    span.set_attribute(DISCARD, true);
}

/// A span under the rotation span for the runner's own work outside a step (starting,
/// finishing or pausing the rotation), so that its writes are in the rotation's trace.
pub fn rotation_scope(rotation: &RotationRecord, what: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        "rotation",
        otel.name = %format!("{what} rotation"),
        rotation = %rotation.id,
    );
    if let Some(trace) = RotationTrace::of(rotation) {
        let _ = span.set_parent(trace.context());
    }
    span
}

/// The span of one API write: `<verb> <kind> <namespace>/<name>`, a child of the current
/// span. The operator's writes always happen inside an execution or a [`rotation_scope`];
/// outside any span (nothing to attach it to) there is no span.
pub fn write_span(verb: &str, kind: &str, namespace: &str, name: &str) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    let target = if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    };
    tracing::info_span!(
        "write",
        otel.name = %format!("{verb} {kind} {target}"),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
    )
}

/// Runs an API write inside a [`write_span`], which records a failure as its status.
pub trait TracedWrite: Future + Sized {
    fn traced_write(
        self,
        verb: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Self::Output>;
}

impl<F, T, E> TracedWrite for F
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    fn traced_write(
        self,
        verb: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<T, E>> {
        let span = write_span(verb, kind, namespace, name);
        async move {
            let result = self.instrument(span.clone()).await;
            if let Err(e) = &result {
                span.record("otel.status_code", "error");
                span.record("otel.status_description", e.to_string());
            }
            result
        }
    }
}
