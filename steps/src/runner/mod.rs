//! The generic step runner.
//!
//! It keeps a rotation's progress in `TrustAnchorRotation.status` (written with server-side
//! apply after every transition) and walks the workflow from wherever that status says it
//! stands: a restarted operator never rewinds and never re-runs a finished step. The runner,
//! not the steps, owns status writes, metrics, Events and spans.
//!
//! It is split the way linkerd2's policy controller splits index from controller:
//! [`transition`] decides (previous status + what happened + memory + now → next status and
//! effects) with no IO; this module executes those decisions; [`store`] is the Kubernetes
//! side (status writes, Events); [`telemetry`] the spans.

pub mod store;
pub mod telemetry;
pub mod transition;

pub use store::{EventSink, KubeEvents, KubeStatusStore, StatusStore};
pub use transition::{EventKind, EventRecord, StepMemory};

use crate::metrics::Metrics;
use crate::step::{Outcome, ProbeSettings, StepContext, StepError};
use crate::workflow::Workflow;
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use telemetry::TracedWrite as _;
use tracing::{debug, info, warn, Instrument};
use transition::{Effect, Moment, Next, StepFacts, SyncedDecision, Transition};
use trust_rotation_crds::{
    RotationRecord, StepState, TrustAnchorRotation, TrustAnchorRotationStatus,
};

/// The `step` label of errors met while checking a rotation's target (not a step).
const TARGET_WATCH: &str = "TargetWatch";

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "trust-rotation-operator";

/// Condition types in `.status.conditions`.
pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_PROGRESSING: &str = "Progressing";
pub const CONDITION_BLOCKED: &str = "Blocked";

// === configuration ===

/// Timing of the runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// How often to look again when nothing else says when (Synced, blocked).
    pub resync: Duration,
    /// First retry delay after a transient error; doubles per consecutive failure.
    pub backoff_base: Duration,
    /// The longest retry delay.
    pub backoff_cap: Duration,
    pub probe: ProbeSettings,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(120),
            probe: ProbeSettings::default(),
        }
    }
}

impl RunnerConfig {
    /// `base * 2^(failures-1)`, capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.backoff_base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.backoff_cap)
            .min(self.backoff_cap)
    }
}

/// Now, to the second: what the API server stores, so that statuses compare equal after a
/// round trip.
pub fn now_seconds() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// A clock, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What the runner asks of its caller after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requeue(pub Duration);

// === impl Runner ===

/// Decides whether this replica may write now (it holds the leadership Lease). Checked before
/// every status write and Event; a refusal ends the reconcile without side effects.
pub type WriteGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// Executes a [`Workflow`] for one TrustAnchorRotation: reads, asks [`transition`] what to
/// do, and performs the effects.
pub struct Runner {
    workflow: Workflow,
    store: Arc<dyn StatusStore>,
    events: Arc<dyn EventSink>,
    metrics: Option<Metrics>,
    client: kube::Client,
    config: RunnerConfig,
    clock: Clock,
    gate: Option<WriteGate>,
    pods: Option<Arc<dyn crate::snapshot::PodSource>>,
    /// What the runner remembers about each step between executions (see [`StepMemory`]).
    memory: Mutex<HashMap<String, StepMemory>>,
}

impl Runner {
    pub fn new(
        workflow: Workflow,
        store: Arc<dyn StatusStore>,
        events: Arc<dyn EventSink>,
        client: kube::Client,
        config: RunnerConfig,
    ) -> Self {
        Self {
            workflow,
            store,
            events,
            metrics: None,
            client,
            config,
            clock: Arc::new(now_seconds),
            gate: None,
            pods: None,
            memory: Mutex::default(),
        }
    }

    /// Lets steps read meshed pods from a watch-fed cache.
    pub fn with_pods(mut self, pods: Arc<dyn crate::snapshot::PodSource>) -> Self {
        self.pods = Some(pods);
        self
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Writes only while `gate` says so.
    pub fn with_write_gate(mut self, gate: WriteGate) -> Self {
        self.gate = Some(gate);
        self
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    fn moment(&self, tar: &TrustAnchorRotation) -> Moment<'_> {
        Moment {
            now: self.now(),
            generation: tar.metadata.generation,
            config: &self.config,
        }
    }

    /// The workflow's steps as the transition sees them, for this spec.
    fn facts(&self, tar: &TrustAnchorRotation) -> Vec<StepFacts> {
        let spec_timeout = tar
            .spec
            .stall_timeout()
            .unwrap_or(Duration::from_secs(5 * 60));
        self.workflow
            .steps()
            .iter()
            .map(|s| StepFacts {
                name: s.name().to_string(),
                phase: s.phase(),
                stall_timeout: s.stall_timeout(spec_timeout),
            })
            .collect()
    }

    fn memory_of(&self, step: &str) -> StepMemory {
        self.memory
            .lock()
            .ok()
            .and_then(|m| m.get(step).cloned())
            .unwrap_or_default()
    }

    fn remember(&self, step: &str, memory: StepMemory) {
        if let Ok(mut m) = self.memory.lock() {
            m.insert(step.to_string(), memory);
        }
    }

    /// Looks at the rotation once and moves it as far as it can go now. Returns when to look
    /// again (sooner if a watched object changes).
    pub async fn reconcile(&self) -> Result<Requeue, StepError> {
        let Some(tar) = self.store.get().await? else {
            return Ok(Requeue(self.config.resync));
        };
        self.reconcile_read(tar).await
    }

    /// [`Runner::reconcile`] from the rotation as the caller has just read it (the
    /// controller lists every TrustAnchorRotation each look; reading this one again would
    /// cost a round trip before anything acts).
    pub async fn reconcile_read(&self, tar: TrustAnchorRotation) -> Result<Requeue, StepError> {
        let prev = tar.status.clone().unwrap_or_default();
        if let Err(message) = tar.spec.validate() {
            let t = transition::invalid_spec(&prev, &message, self.moment(&tar));
            let scope = scope(&prev, "block");
            return self
                .perform(tar, t, None)
                .instrument(scope)
                .await
                .map(|(_, r)| r);
        }
        let now = self.now();
        // A schedule that cannot be read blocks only what a closed window holds: holding a
        // renewed anchor out of the trust bundle would not be safe to hold.
        let (schedule, window) =
            crate::schedule::WindowState::of(&tar.spec.automation.schedule, now);
        if let Some(m) = &self.metrics {
            m.observe_window(&window);
        }
        // Outside the windows: look again when the next one opens, if that comes before the
        // next look anyway.
        let wake = |Requeue(d): Requeue| match &window {
            crate::schedule::WindowState::Closed { opens_at, .. } => {
                let until = Duration::try_from(now.duration_until(*opens_at)).unwrap_or_default();
                Requeue(d.min(until.max(Duration::from_secs(1))))
            }
            _ => Requeue(d),
        };
        if tar.spec.paused {
            let t = transition::paused(&prev, self.moment(&tar));
            let scope = scope(&prev, "pause");
            return self
                .perform(tar, t, None)
                .instrument(scope)
                .await
                .map(|(_, r)| r);
        }
        let (tar, status, target_just_read) = if prev.rotation.is_none() {
            match self.synced(tar, prev, &schedule, &window).await? {
                Ok((tar, status)) => (tar, status, true),
                Err(requeue) => return Ok(wake(requeue)),
            }
        } else {
            (tar, prev, false)
        };
        self.advance(tar, status, &window, target_just_read)
            .await
            .map(wake)
    }

    /// No rotation in progress: refresh what the status shows and start one if needed.
    /// Returns the rotation just started, or when to look again.
    async fn synced(
        &self,
        tar: TrustAnchorRotation,
        prev: TrustAnchorRotationStatus,
        schedule: &crate::schedule::Parsed,
        window: &crate::schedule::WindowState,
    ) -> Result<Result<(TrustAnchorRotation, TrustAnchorRotationStatus), Requeue>, StepError> {
        let mut view = match self
            .workflow
            .trigger()
            .observe(&self.client, &tar.spec, self.pods.as_deref())
            .await
        {
            Ok(v) => v,
            Err(e) => {
                if let Some(m) = &self.metrics {
                    m.observe_error("Synced", e.category());
                }
                if e.is_transient() {
                    return Err(e);
                }
                // A missing or unreadable anchor: say so where people look.
                crate::workflow::SyncedView {
                    blocked: Some(format!("{} (error category {})", e.message(), e.category())),
                    ..Default::default()
                }
            }
        };
        if view.start.is_none() && view.blocked.is_none() {
            if let crate::schedule::WindowState::Invalid { message } = window {
                view.blocked = Some(format!(
                    "{message}; until it is fixed the operator renews nothing on schedule and, in a rotation, holds what a closed maintenance window holds (a renewed anchor still enters the trust bundle)"
                ));
            } else {
                view.scheduled = self
                    .scheduled_renewal(&tar, &prev, &view, schedule, window)
                    .await?;
            }
        }
        let m = self.moment(&tar);
        match transition::synced(&prev, view, m) {
            SyncedDecision::Stay(t) => self.perform(tar, *t, None).await.map(|(_, r)| Err(r)),
            SyncedDecision::Start(from, start) => {
                let trace = telemetry::start_rotation_trace(&start, m.now);
                info!(rotation = %trace.0, trigger = %start.trigger, "starting a trust-anchor rotation");
                let facts = self.facts(&tar);
                let t = transition::start_rotation(&from, start, trace, &facts, m);
                let status = t.status.clone();
                let scope = scope(&status, "start");
                let (tar, _) = self.perform(tar, t, None).instrument(scope).await?;
                Ok(Ok((tar, status)))
            }
        }
    }

    /// The scheduled renewal of the trust anchor (`spec.automation.schedule.renewAnchorBefore`)
    /// while Synced: triggers it, as `cmctl renew` does, when it is due inside a maintenance
    /// window, at most once per anchor (the status records it). Says why when it does not.
    async fn scheduled_renewal(
        &self,
        tar: &TrustAnchorRotation,
        prev: &TrustAnchorRotationStatus,
        view: &crate::workflow::SyncedView,
        schedule: &crate::schedule::Parsed,
        window: &crate::schedule::WindowState,
    ) -> Result<Option<crate::schedule::ScheduledNote>, StepError> {
        use crate::schedule::{NoteKind, ScheduledNote};
        let Some(anchor) = &view.anchor else {
            return Ok(None);
        };
        let now = self.now();
        let reason = match crate::schedule::plan_renewal(
            schedule.renew_anchor_before,
            anchor,
            window,
            prev.scheduled_renewal.as_ref(),
            now,
        ) {
            None => return Ok(None),
            Some(Err(note)) => return Ok(Some(note)),
            Some(Ok(reason)) => reason,
        };
        // Only the leader writes (the trigger included). The trigger comes before the record:
        // a crash in between cannot renew twice, since cert-manager then either is still
        // issuing (`renew` leaves it alone) or has issued a new anchor, which is not due.
        if !self.may_write() {
            return Ok(None);
        }
        let r = &tar.spec.trust_anchor;
        let what = format!("Certificate {}/{}", r.namespace, r.certificate);
        let renewed = crate::certmanager::renew(&self.client, &r.namespace, &r.certificate)
            .instrument(telemetry::write_span(
                "patch",
                "Certificate/status",
                &r.namespace,
                &r.certificate,
            ))
            .await;
        let reason = match renewed {
            Ok(crate::certmanager::Renewed::Triggered) => {
                info!(anchor = %anchor.fingerprint, %reason, "scheduled renewal: triggered the trust anchor's re-issuance");
                format!("{reason}: the operator triggered the re-issuance of {what}, as `cmctl renew` does")
            }
            Ok(crate::certmanager::Renewed::AlreadyIssuing) => {
                format!("{reason}: cert-manager was already re-issuing {what}")
            }
            Err(e) => {
                let e = e.into_step_error(&what);
                if let Some(m) = &self.metrics {
                    m.observe_error("Synced", e.category());
                }
                if e.is_transient() {
                    return Err(e);
                }
                return Ok(Some(ScheduledNote {
                    kind: NoteKind::NotScheduled,
                    record: trust_rotation_crds::ScheduledRenewalRecord {
                        anchor: anchor.fingerprint.clone(),
                        triggered_at: None,
                        reason: format!("{reason}, but the renewal could not be triggered: {e}"),
                    },
                }));
            }
        };
        Ok(Some(ScheduledNote {
            kind: NoteKind::Triggered,
            record: trust_rotation_crds::ScheduledRenewalRecord {
                anchor: anchor.fingerprint.clone(),
                triggered_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
                reason,
            },
        }))
    }

    /// Runs steps from the current one until one waits, blocks or fails.
    async fn advance(
        &self,
        mut tar: TrustAnchorRotation,
        mut status: TrustAnchorRotationStatus,
        window: &crate::schedule::WindowState,
        target_just_read: bool,
    ) -> Result<Requeue, StepError> {
        let Some(mut rotation) = status.rotation.clone() else {
            return Ok(Requeue(self.config.resync));
        };
        let facts = self.facts(&tar);
        status.steps = transition::align_records(&status.steps, &facts);
        let mut first = true;
        // At most one retarget per reconcile: a target that keeps moving is looked at again
        // on the next one, after the steps had a chance to report.
        let mut retargeted = false;
        loop {
            // The target as looked at together with the re-read below (one round trip).
            let mut target_read = None;
            if !first {
                // Re-read between steps so that `paused` set meanwhile stops the next write.
                let look_at_target = !retargeted;
                let (fresh, target) = tokio::join!(self.store.get(), async {
                    match look_at_target {
                        true => Some(self.check_target(&tar, &rotation, &status).await),
                        false => None,
                    }
                });
                match fresh? {
                    // Deleted, or replaced by a new object: its status is not ours to carry on.
                    Some(fresh) if fresh.metadata.uid == tar.metadata.uid => {
                        // A changed spec may name another anchor: its target is looked at again.
                        if fresh.metadata.generation == tar.metadata.generation {
                            target_read = target;
                        }
                        tar = fresh;
                    }
                    Some(_) => return Ok(Requeue(Duration::ZERO)),
                    None => return Ok(Requeue(self.config.resync)),
                }
                if tar.spec.paused {
                    let t = transition::paused(&status, self.moment(&tar));
                    let scope = scope(&status, "pause");
                    return self
                        .perform(tar, t, None)
                        .instrument(scope)
                        .await
                        .map(|(_, r)| r);
                }
            }
            // A rotation this look started has the target just read: not read again before
            // its first step.
            let target_fresh = first && target_just_read;
            first = false;
            if !retargeted && !target_fresh {
                let target = match target_read {
                    Some(t) => t,
                    None => self.check_target(&tar, &rotation, &status).await,
                };
                if let Some(rt) = target {
                    retargeted = true;
                    info!(rotation = %rotation.id, from = ?rotation.to_anchor, to = ?rt.to_anchor, redo_from = %rt.redo_from, "the rotation's target moved: retargeting");
                    let m = self.moment(&tar);
                    let trace = telemetry::start_rotation_trace(
                        &crate::workflow::RotationStart {
                            trigger: rt.summary.clone(),
                            from_anchor: rt.from_anchor.clone(),
                            to_anchor: rt.to_anchor.clone(),
                        },
                        m.now,
                    );
                    let t = transition::retarget(&status, rt, trace, &facts, m);
                    let spans = Finished::of(&t);
                    status = t.status.clone();
                    if let Some(r) = &status.rotation {
                        rotation = r.clone();
                    }
                    // The steps reset start afresh (no backoff carried over).
                    for rec in status
                        .steps
                        .iter()
                        .filter(|r| r.state == StepState::Pending)
                    {
                        self.remember(&rec.name, StepMemory::default());
                    }
                    let scope = scope(&status, "retarget");
                    (tar, _) = self.perform(tar, t, None).instrument(scope).await?;
                    spans.emit();
                    continue;
                }
            }
            let Some(idx) = status.steps.iter().position(|r| r.state != StepState::Done) else {
                let t = transition::finish(&status, self.moment(&tar));
                let spans = Finished::of(&t);
                let scope = scope(&status, "finish");
                let (_, requeue) = self.perform(tar, t, None).instrument(scope).await?;
                // After the scope closed: a parent ends after its children.
                spans.emit();
                return Ok(requeue);
            };
            let step = self.workflow.steps()[idx].as_ref();
            let fact = &facts[idx];
            let enter = transition::enter_step(&status, idx, fact, self.moment(&tar));
            // Everything this execution does (its first status write included) is under its
            // span, itself under the step's span. Opened after the step's start was read from
            // the clock, so that the step's span, which starts then, holds it.
            let span = telemetry::execution_span(&rotation, &fact.name, fact.phase);
            let mut entered = false;
            if let Some(t) = enter {
                status = t.status.clone();
                (tar, _) = self.perform(tar, t, None).instrument(span.clone()).await?;
                entered = true;
            }
            let memory = self.memory_of(&fact.name);
            // Backing off: a watch event is no reason to hammer a failing API sooner.
            if let Some(wait) = transition::backing_off(&memory, self.now()) {
                if !entered {
                    telemetry::discard(&span);
                }
                return Ok(Requeue(wait));
            }
            let attempt = transition::attempt_number(&status.steps[idx], &memory);
            span.record("attempt", attempt);
            let started_at = status.steps[idx]
                .started_at
                .as_ref()
                .map_or_else(|| self.now(), |t| t.0);
            let ctx = StepContext::new(
                self.client.clone(),
                tar.metadata.name.clone().unwrap_or_default(),
                tar.spec.clone(),
                rotation.clone(),
                status.steps.clone(),
                started_at,
                self.now(),
                self.config.probe.clone(),
            )
            .with_pods(self.pods.clone())
            .with_window(window.clone())
            .with_approval(crate::rotation::approval::Annotation::of(&tar.metadata))
            .with_workload_restarts(
                status.workload_restarts.clone(),
                tar.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(crate::rotation::restarts::SKIP_ANNOTATION))
                    .cloned(),
            );
            let began = Instant::now();
            let result =
                match tokio::time::timeout(step.timeout(), step.run(&ctx).instrument(span.clone()))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(StepError::transient(
                        crate::error::ErrorCategory::Timeout,
                        format!(
                            "step {} did not finish one execution within {:?}; retrying",
                            step.name(),
                            step.timeout()
                        ),
                    )),
                };
            let label = match &result {
                Ok(r) => r.outcome.label(),
                Err(_) => "error",
            };
            if let Some(m) = &self.metrics {
                m.observe_step(step.name(), label, began.elapsed());
                if let Err(e) = &result {
                    m.observe_error(step.name(), e.category());
                }
            }
            span.in_scope(|| match &result {
                Err(e) if e.is_transient() => {
                    warn!(rotation = %rotation.id, step = step.name(), error = %e, category = e.category(), "step failed; retrying")
                }
                Err(e) => {
                    warn!(rotation = %rotation.id, step = step.name(), error = %e, category = e.category(), "step failed")
                }
                Ok(r) => match &r.outcome {
                    Outcome::Done => {
                        info!(rotation = %rotation.id, step = step.name(), attempts = attempt, "step done")
                    }
                    Outcome::Wait { reason, .. } => {
                        debug!(rotation = %rotation.id, step = step.name(), %reason, "waiting")
                    }
                    Outcome::Blocked { message } => {
                        warn!(rotation = %rotation.id, step = step.name(), %message, "rotation blocked")
                    }
                },
            });
            let t = transition::after_run(
                &status,
                idx,
                fact,
                attempt,
                result,
                &memory,
                self.moment(&tar),
            );
            self.remember(&fact.name, t.memory.clone());
            status = t.status.clone();
            // A look that changed nothing is not worth a span (only a metric).
            let quiet = !entered
                && !t
                    .effects
                    .iter()
                    .any(|e| matches!(e, Effect::ExecutionSpan { .. }));
            let spans = Finished::of(&t);
            let performed = self
                .perform(tar, t, Some(Execution { span: &span }))
                .instrument(span.clone())
                .await;
            if quiet {
                telemetry::discard(&span);
            }
            drop(span);
            let (written, next) = performed?;
            // After the execution's span closed: a parent ends after its children. Only once
            // the step's end is persisted, or it would have two spans.
            spans.emit();
            tar = written;
            if next != Requeue(Duration::ZERO) {
                return Ok(next);
            }
        }
    }

    /// Performs a transition's effects in order. Returns the object as last written and when
    /// to look again (`Requeue(ZERO)` for "go on now").
    async fn perform(
        &self,
        mut tar: TrustAnchorRotation,
        t: Transition,
        execution: Option<Execution<'_>>,
    ) -> Result<(TrustAnchorRotation, Requeue), StepError> {
        let requeue = match t.next {
            Next::Continue => Requeue(Duration::ZERO),
            Next::Requeue(d) => Requeue(d),
        };
        for effect in &t.effects {
            match effect {
                Effect::WriteStatus { best_effort } => match self
                    .write(&tar, &t.status)
                    .traced_write(
                        "apply",
                        "TrustAnchorRotation/status",
                        "",
                        tar.metadata.name.as_deref().unwrap_or_default(),
                    )
                    .await
                {
                    Ok(written) => tar = written,
                    Err(e) if *best_effort => {
                        debug!(error = %e, "could not record the status; retrying later")
                    }
                    Err(e) => return Err(e),
                },
                Effect::PublishStatus => {
                    if let Some(m) = &self.metrics {
                        m.observe_status(&t.status);
                    }
                }
                Effect::Event(ev) => {
                    if self.may_write() {
                        let span = telemetry::write_span("publish", "Event", "", ev.reason);
                        self.events.publish(&tar, ev).instrument(span).await;
                    }
                }
                Effect::ExecutionSpan { outcome, detail } => {
                    if let Some(x) = &execution {
                        telemetry::record_execution(x.span, outcome, detail.as_deref());
                    }
                }
                // Emitted by the caller once the spans under them are closed (`Finished`).
                Effect::StepSpan { .. } => {}
                Effect::RotationStarted => {
                    if let Some(m) = &self.metrics {
                        m.rotation_started();
                    }
                }
                Effect::RotationFinished => {
                    if let Some(done) = t.status.history.first() {
                        info!(rotation = %done.id, "rotation finished");
                    }
                    if let Some(m) = &self.metrics {
                        m.rotation_finished();
                    }
                }
                Effect::RotationRetargeted { .. } => {
                    if let Some(m) = &self.metrics {
                        m.rotation_retargeted();
                    }
                }
            }
        }
        Ok((tar, requeue))
    }

    /// Asks the workflow whether the rotation's target moved. A failed look is logged and
    /// counted, never fatal: the step about to run reads the same objects and says what is
    /// wrong its own way.
    async fn check_target(
        &self,
        tar: &TrustAnchorRotation,
        rotation: &RotationRecord,
        status: &TrustAnchorRotationStatus,
    ) -> Option<crate::workflow::Retarget> {
        let watch = self.workflow.target_watch()?;
        match watch
            .check(&self.client, &tar.spec, rotation, &status.steps)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                debug!(rotation = %rotation.id, error = %e, "could not check the rotation's target; the step will look");
                if let Some(m) = &self.metrics {
                    m.observe_error(TARGET_WATCH, e.category());
                }
                None
            }
        }
    }

    fn may_write(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| g())
    }

    async fn write(
        &self,
        tar: &TrustAnchorRotation,
        status: &TrustAnchorRotationStatus,
    ) -> Result<TrustAnchorRotation, StepError> {
        if !self.may_write() {
            return Err(StepError::transient(
                crate::error::ErrorCategory::NotLeader,
                "this replica does not hold the leadership Lease: it makes no writes",
            ));
        }
        let written = self.store.apply(tar, status).await?;
        if let Some(m) = &self.metrics {
            m.observe_status(status);
        }
        Ok(written)
    }
}

/// The execution a transition answers, for its span.
struct Execution<'a> {
    span: &'a tracing::Span,
}

/// The span of the runner's own work on the rotation `status` carries, if any.
fn scope(status: &TrustAnchorRotationStatus, what: &'static str) -> tracing::Span {
    status
        .rotation
        .as_ref()
        .map_or_else(tracing::Span::none, |r| telemetry::rotation_scope(r, what))
}

/// The step and rotation spans a transition finishes, emitted after the spans under them.
struct Finished {
    steps: Vec<(RotationRecord, trust_rotation_crds::StepRecord)>,
    rotation: Option<RotationRecord>,
    /// The round before a retarget, and its step in progress.
    retargeted: Option<(RotationRecord, Option<trust_rotation_crds::StepRecord>)>,
}

impl Finished {
    fn of(t: &Transition) -> Self {
        let mut steps = Vec::new();
        let mut rotation = None;
        let mut retargeted = None;
        for effect in &t.effects {
            match effect {
                Effect::StepSpan { step } => {
                    if let (Some(r), Some(rec)) = (
                        t.status.rotation.as_ref(),
                        t.status.steps.iter().find(|r| &r.name == step),
                    ) {
                        steps.push((r.clone(), rec.clone()));
                    }
                }
                Effect::RotationFinished => rotation = t.status.history.first().cloned(),
                Effect::RotationRetargeted {
                    previous,
                    interrupted,
                } => retargeted = Some(((**previous).clone(), interrupted.as_deref().cloned())),
                _ => {}
            }
        }
        Self {
            steps,
            rotation,
            retargeted,
        }
    }

    fn emit(self) {
        for (rotation, rec) in &self.steps {
            telemetry::step_span(rotation, rec);
        }
        if let Some((previous, interrupted)) = &self.retargeted {
            if let Some(rec) = interrupted {
                telemetry::step_span_ended(previous, rec, "retargeted");
            }
            telemetry::rotation_span_ended(previous, "retargeted");
        }
        if let Some(r) = &self.rotation {
            telemetry::rotation_span(r);
        }
    }
}

#[cfg(test)]
mod tests;
