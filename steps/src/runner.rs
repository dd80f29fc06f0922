//! The generic step runner.
//!
//! It keeps a rotation's progress in `TrustAnchorRotation.status` (written with server-side
//! apply after every transition) and walks the workflow from wherever that status says it
//! stands: a restarted operator never rewinds and never re-runs a finished step. The runner,
//! not the steps, owns status writes, metrics, Events and spans.

use crate::metrics::Metrics;
use crate::step::{Outcome, ProbeSettings, Progress, Step, StepContext, StepError};
use crate::workflow::{RotationStart, Workflow};
use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::Resource;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn, Instrument};
use trust_rotation_crds::{
    Phase, RotationRecord, StepRecord, StepState, TrustAnchorRotation, TrustAnchorRotationStatus,
    HISTORY_LIMIT,
};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "trust-rotation-operator";

/// Condition types in `.status.conditions`.
pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_PROGRESSING: &str = "Progressing";
pub const CONDITION_BLOCKED: &str = "Blocked";

// === stores and sinks ===

/// Where the runner reads the rotation and writes its status.
#[async_trait]
pub trait StatusStore: Send + Sync {
    /// The rotation as it is now (`None` when it was deleted).
    async fn get(&self) -> Result<Option<TrustAnchorRotation>, StepError>;
    /// Replaces everything the operator owns in `.status` of the object with `uid` (the one
    /// the runner read; a deleted and re-created rotation must not inherit its status).
    async fn apply(
        &self,
        uid: Option<&str>,
        status: &TrustAnchorRotationStatus,
    ) -> Result<(), StepError>;
}

/// The real store: one named TrustAnchorRotation, status written by server-side apply.
pub struct KubeStatusStore {
    api: Api<TrustAnchorRotation>,
    name: String,
}

impl KubeStatusStore {
    pub fn new(client: kube::Client, name: impl Into<String>) -> Self {
        Self {
            api: Api::all(client),
            name: name.into(),
        }
    }
}

#[async_trait]
impl StatusStore for KubeStatusStore {
    async fn get(&self) -> Result<Option<TrustAnchorRotation>, StepError> {
        self.api.get_opt(&self.name).await.map_err(|e| {
            StepError::from_kube(format!("reading TrustAnchorRotation {}", self.name), e)
        })
    }

    async fn apply(
        &self,
        uid: Option<&str>,
        status: &TrustAnchorRotationStatus,
    ) -> Result<(), StepError> {
        let what = || format!("writing the status of TrustAnchorRotation {}", self.name);
        // metadata.uid is a precondition: the API server refuses the patch when the object
        // was replaced by another of the same name.
        let mut patch = serde_json::json!({
            "apiVersion": format!("{}/{}", trust_rotation_crds::GROUP, trust_rotation_crds::VERSION),
            "kind": "TrustAnchorRotation",
            "metadata": {"name": self.name},
            "status": status,
        });
        if let Some(uid) = uid {
            patch["metadata"]["uid"] = serde_json::Value::String(uid.to_string());
        }
        let applied = self
            .api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| StepError::from_kube(what(), e))?;
        if uid.is_some() && applied.metadata.uid.as_deref() != uid {
            // A server that did not enforce the precondition: undo, so that the new object
            // starts from an empty status, and let the caller start over.
            let mut obj = applied;
            obj.status = None;
            let _ = self
                .api
                .replace_status(&self.name, &kube::api::PostParams::default(), &obj)
                .await;
            return Err(StepError::transient(
                "replaced",
                format!(
                    "TrustAnchorRotation {} was deleted and re-created while being reconciled",
                    self.name
                ),
            ));
        }
        // Server-side apply removes a field this manager stops applying only when no other
        // manager owns it too (an older operator that used updates, a `kubectl edit`). Then
        // the status would keep a finished rotation: replace the status outright instead.
        let wanted = serde_json::to_value(status).unwrap_or_default();
        let got = serde_json::to_value(&applied.status).unwrap_or_default();
        if wanted != got {
            debug!("status fields co-owned by another manager survived the apply; replacing the status");
            let mut obj = applied;
            obj.status = Some(status.clone());
            self.api
                .replace_status(&self.name, &kube::api::PostParams::default(), &obj)
                .await
                .map_err(|e| StepError::from_kube(what(), e))?;
        }
        Ok(())
    }
}

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// Where the runner publishes Kubernetes Events about the rotation.
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn publish(
        &self,
        tar: &TrustAnchorRotation,
        kind: EventKind,
        reason: &'static str,
        note: String,
    );
}

/// Events through kube's [`Recorder`] (events.k8s.io/v1), regarding the TrustAnchorRotation.
pub struct KubeEvents {
    recorder: Recorder,
}

impl KubeEvents {
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }
}

#[async_trait]
impl EventSink for KubeEvents {
    async fn publish(
        &self,
        tar: &TrustAnchorRotation,
        kind: EventKind,
        reason: &'static str,
        note: String,
    ) {
        let event = KubeEvent {
            type_: match kind {
                EventKind::Normal => EventType::Normal,
                EventKind::Warning => EventType::Warning,
            },
            reason: reason.into(),
            note: Some(truncate(&note, 1000)),
            action: "Rotate".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &tar.object_ref(&())).await {
            // Events are best effort: a failure must not stop the rotation.
            warn!(error = %e, reason, "could not publish an Event");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

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

/// Executes a [`Workflow`] for one TrustAnchorRotation.
pub struct Runner {
    workflow: Workflow,
    store: Arc<dyn StatusStore>,
    events: Arc<dyn EventSink>,
    metrics: Option<Metrics>,
    client: kube::Client,
    config: RunnerConfig,
    clock: Clock,
    /// Consecutive transient failures per step and when the step may run again (in memory:
    /// a restart starts backoff afresh).
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    /// Steps already reported as past their deadline in this process.
    stalled: Mutex<HashSet<String>>,
    pods: Option<Arc<dyn crate::snapshot::PodSource>>,
    /// Waiting steps whose unchanged status was not rewritten: executions not yet counted in
    /// `.status.steps[].attempts`, and when the status was last written.
    quiet: Mutex<HashMap<String, (u32, Instant)>>,
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
            failures: Mutex::default(),
            stalled: Mutex::default(),
            pods: None,
            quiet: Mutex::default(),
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

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Looks at the rotation once and moves it as far as it can go now. Returns when to look
    /// again (sooner if a watched object changes).
    pub async fn reconcile(&self) -> Result<Requeue, StepError> {
        let Some(tar) = self.store.get().await? else {
            return Ok(Requeue(self.config.resync));
        };
        let mut status = tar.status.clone().unwrap_or_default();
        status.observed_generation = tar.metadata.generation;

        if let Err(message) = tar.spec.validate() {
            let was = status.blocking_message.clone();
            set_blocked(&mut status, Some(&message), self.now());
            self.write(&tar, &status).await?;
            if was.as_deref() != Some(message.as_str()) {
                self.events
                    .publish(&tar, EventKind::Warning, "InvalidSpec", message)
                    .await;
            }
            return Ok(Requeue(self.config.resync));
        }

        if tar.spec.paused {
            return self.pause(&tar, status).await;
        }

        if status.rotation.is_none() {
            // `None`: a rotation has just started and runs below.
            if let Some(requeue) = self.synced(&tar, &mut status).await? {
                return Ok(requeue);
            }
        }
        self.advance(tar, status).await
    }

    /// Paused: the only write is the acknowledgement in the status.
    async fn pause(
        &self,
        tar: &TrustAnchorRotation,
        mut status: TrustAnchorRotationStatus,
    ) -> Result<Requeue, StepError> {
        let before = status.clone();
        let now = self.now();
        set_condition(
            &mut status.conditions,
            CONDITION_PROGRESSING,
            false,
            "Paused",
            "spec.paused is true: the operator makes no writes until it is set back to false",
            now,
            tar.metadata.generation,
        );
        if let Some(m) = &self.metrics {
            m.observe_status(&status);
        }
        if status != before {
            self.write(tar, &status).await?;
            self.events
                .publish(
                    tar,
                    EventKind::Normal,
                    "Paused",
                    "spec.paused is true: rotation paused".into(),
                )
                .await;
        }
        Ok(Requeue(self.config.resync))
    }

    /// No rotation in progress: refresh what the status shows and start one if needed.
    /// Returns `None` when a rotation has started.
    async fn synced(
        &self,
        tar: &TrustAnchorRotation,
        status: &mut TrustAnchorRotationStatus,
    ) -> Result<Option<Requeue>, StepError> {
        let now = self.now();
        let view = match self
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
        apply_progress(status, view.progress);
        status.phase = Some(Phase::Synced);
        status.current_step = None;
        status.steps.clear();
        if let Some(message) = view.blocked {
            let was = status.blocking_message.clone();
            set_blocked(status, Some(&message), now);
            set_condition(
                &mut status.conditions,
                CONDITION_READY,
                false,
                "Blocked",
                &message,
                now,
                tar.metadata.generation,
            );
            self.write(tar, status).await?;
            if was.as_deref() != Some(message.as_str()) {
                self.events
                    .publish(tar, EventKind::Warning, "Blocked", message)
                    .await;
            }
            return Ok(Some(Requeue(self.config.resync)));
        }
        let Some(start) = view.start else {
            set_blocked(status, None, now);
            set_condition(
                &mut status.conditions,
                CONDITION_READY,
                true,
                "Synced",
                "the trust bundle holds exactly the current trust anchor",
                now,
                tar.metadata.generation,
            );
            set_condition(
                &mut status.conditions,
                CONDITION_PROGRESSING,
                false,
                "Synced",
                "no rotation in progress",
                now,
                tar.metadata.generation,
            );
            if tar.status.as_ref() != Some(status) {
                self.write(tar, status).await?;
            } else if let Some(m) = &self.metrics {
                // A restarted operator has nothing to write but must still publish.
                m.observe_status(status);
            }
            return Ok(Some(Requeue(self.config.resync)));
        };
        self.start_rotation(tar, status, start, now).await?;
        Ok(None)
    }

    async fn start_rotation(
        &self,
        tar: &TrustAnchorRotation,
        status: &mut TrustAnchorRotationStatus,
        start: RotationStart,
        now: Timestamp,
    ) -> Result<(), StepError> {
        let (id, trace_parent) = telemetry::start_rotation_trace(&start, now);
        info!(rotation = %id, trigger = %start.trigger, "starting a trust-anchor rotation");
        status.rotation = Some(RotationRecord {
            id: id.clone(),
            trigger: start.trigger.clone(),
            from_anchor: start.from_anchor,
            to_anchor: start.to_anchor,
            started_at: Time(now),
            finished_at: None,
            trace_parent: Some(trace_parent),
        });
        status.steps = self
            .workflow
            .steps()
            .iter()
            .map(|s| pending_record(s.as_ref()))
            .collect();
        let first = &self.workflow.steps()[0];
        status.phase = Some(first.phase());
        status.current_step = Some(first.name().to_string());
        set_blocked(status, None, now);
        set_condition(
            &mut status.conditions,
            CONDITION_READY,
            false,
            "Rotating",
            &start.trigger,
            now,
            tar.metadata.generation,
        );
        set_condition(
            &mut status.conditions,
            CONDITION_PROGRESSING,
            true,
            "RotationStarted",
            &start.trigger,
            now,
            tar.metadata.generation,
        );
        self.write(tar, status).await?;
        if let Some(m) = &self.metrics {
            m.rotation_started();
        }
        self.events
            .publish(
                tar,
                EventKind::Normal,
                "RotationStarted",
                format!("rotation {id} started: {}", start.trigger),
            )
            .await;
        self.events
            .publish(
                tar,
                EventKind::Normal,
                "PhaseChanged",
                format!("phase Synced → {}", first.phase()),
            )
            .await;
        Ok(())
    }

    /// Runs steps from the current one until one waits, blocks or fails.
    async fn advance(
        &self,
        mut tar: TrustAnchorRotation,
        mut status: TrustAnchorRotationStatus,
    ) -> Result<Requeue, StepError> {
        let Some(rotation) = status.rotation.clone() else {
            return Ok(Requeue(self.config.resync));
        };
        status.steps = align_records(&status.steps, self.workflow.steps());
        let mut first = true;
        loop {
            if !first {
                // Re-read between steps so that `paused` set meanwhile stops the next write.
                match self.store.get().await? {
                    // Deleted, or replaced by a new object: its status is not ours to carry on.
                    Some(fresh) if fresh.metadata.uid == tar.metadata.uid => tar = fresh,
                    Some(_) => return Ok(Requeue(Duration::ZERO)),
                    None => return Ok(Requeue(self.config.resync)),
                }
                if tar.spec.paused {
                    return self.pause(&tar, status).await;
                }
            }
            first = false;
            let Some(idx) = status.steps.iter().position(|r| r.state != StepState::Done) else {
                return self.finish(&tar, status, rotation).await;
            };
            let step = self.workflow.steps()[idx].as_ref();
            let now = self.now();
            let previous_phase = status.phase;
            status.phase = Some(step.phase());
            status.current_step = Some(step.name().to_string());
            if status.steps[idx].state == StepState::Pending {
                // Persist the start before the step's first write, so that a restarted
                // operator sees the same start time (RollControlPlane keys its restart on it).
                let rec = &mut status.steps[idx];
                rec.state = StepState::Waiting;
                rec.started_at = Some(Time(now));
                rec.message = None;
                set_condition(
                    &mut status.conditions,
                    CONDITION_PROGRESSING,
                    true,
                    "StepStarted",
                    &format!("step {} started", step.name()),
                    now,
                    tar.metadata.generation,
                );
                self.write(&tar, &status).await?;
                if previous_phase != Some(step.phase()) {
                    self.events
                        .publish(
                            &tar,
                            EventKind::Normal,
                            "PhaseChanged",
                            format!(
                                "phase {} → {} (step {})",
                                previous_phase.unwrap_or(Phase::Synced),
                                step.phase(),
                                step.name()
                            ),
                        )
                        .await;
                }
            }
            let started_at = status.steps[idx]
                .started_at
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(now);
            let stalled = self.check_deadline(&tar, step, started_at, now).await;
            // Backing off: a watch event is no reason to hammer a failing API sooner.
            if let Some(wait) = self.backing_off(step.name()) {
                return Ok(Requeue(wait));
            }
            let uncounted = self.take_uncounted(step.name());
            status.steps[idx].attempts = status.steps[idx]
                .attempts
                .saturating_add(uncounted)
                .saturating_add(1);
            let attempt = status.steps[idx].attempts;

            let ctx = StepContext::new(
                self.client.clone(),
                tar.metadata.name.clone().unwrap_or_default(),
                tar.spec.clone(),
                rotation.clone(),
                status.steps.clone(),
                started_at,
                now,
                self.config.probe.clone(),
            )
            .with_pods(self.pods.clone());
            let span = tracing::info_span!("step", rotation = %rotation.id, step = step.name(), phase = %step.phase(), attempt, outcome = tracing::field::Empty);
            let began = Instant::now();
            let began_wall = std::time::SystemTime::now();
            let result =
                match tokio::time::timeout(step.timeout(), step.run(&ctx).instrument(span.clone()))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(StepError::transient(
                        "timeout",
                        format!(
                            "step {} did not finish one execution within {:?}; retrying",
                            step.name(),
                            step.timeout()
                        ),
                    )),
                };
            let took = began.elapsed();
            let execution = |outcome: &'static str, detail: Option<&str>| {
                telemetry::execution_span(
                    &rotation,
                    step.name(),
                    step.phase(),
                    outcome,
                    attempt,
                    (began_wall, std::time::SystemTime::now()),
                    detail,
                )
            };
            apply_progress(&mut status, ctx.take_progress());
            let label = match &result {
                Ok(o) => o.label(),
                Err(_) => "error",
            };
            span.record("outcome", label);
            if let Some(m) = &self.metrics {
                m.observe_step(step.name(), label, took);
                if let Err(e) = &result {
                    m.observe_error(step.name(), e.category());
                }
            }
            let now = self.now();
            let gen = tar.metadata.generation;
            match result {
                Ok(Outcome::Done) => {
                    self.clear_failures(step.name());
                    let rec = &mut status.steps[idx];
                    rec.state = StepState::Done;
                    rec.finished_at = Some(Time(now));
                    rec.message = None;
                    let was_blocked = status.blocking_message.is_some();
                    set_blocked(&mut status, None, now);
                    info!(rotation = %rotation.id, step = step.name(), attempts = attempt, "step done");
                    self.write(&tar, &status).await?;
                    execution("done", None);
                    telemetry::step_span(&rotation, &status.steps[idx], started_at, now);
                    if was_blocked {
                        self.events
                            .publish(
                                &tar,
                                EventKind::Normal,
                                "Unblocked",
                                format!("step {} is no longer blocked", step.name()),
                            )
                            .await;
                    }
                }
                Ok(Outcome::Wait {
                    reason,
                    retry_after,
                }) => {
                    self.clear_failures(step.name());
                    let rec = &mut status.steps[idx];
                    rec.state = StepState::Waiting;
                    rec.message = Some(reason.clone());
                    let was_blocked = status.blocking_message.is_some();
                    set_blocked(&mut status, None, now);
                    // Past its deadline, the condition says so (the step keeps trying).
                    let (why, text) = match &stalled {
                        Some(note) => ("StepStalled", format!("{note}: {reason}")),
                        None => ("Waiting", reason.clone()),
                    };
                    set_condition(
                        &mut status.conditions,
                        CONDITION_PROGRESSING,
                        true,
                        why,
                        &text,
                        now,
                        gen,
                    );
                    debug!(rotation = %rotation.id, step = step.name(), %reason, "waiting");
                    // Waiting can last hours: an unchanged status (but for the attempt count and
                    // observation times) is rewritten only once per resync interval.
                    if self.worth_writing(step.name(), tar.status.as_ref(), &status) {
                        self.write(&tar, &status).await?;
                        self.wrote(step.name());
                        // A span for every look that changed something; quiet looks only
                        // count in the metrics.
                        execution("wait", Some(&reason));
                    } else {
                        self.skipped(step.name(), uncounted);
                        if let Some(m) = &self.metrics {
                            m.observe_status(&status);
                        }
                    }
                    if was_blocked {
                        self.events
                            .publish(
                                &tar,
                                EventKind::Normal,
                                "Unblocked",
                                format!("step {} is no longer blocked: {reason}", step.name()),
                            )
                            .await;
                    }
                    return Ok(Requeue(retry_after.min(self.config.resync)));
                }
                Ok(Outcome::Blocked { message }) => {
                    self.clear_failures(step.name());
                    execution("blocked", Some(&message));
                    return self.block(&tar, &mut status, idx, message).await;
                }
                Err(e) if e.is_transient() => {
                    execution("error", Some(e.message()));
                    let delay = self.bump_failures(step.name());
                    warn!(rotation = %rotation.id, step = step.name(), error = %e, category = e.category(), retry_in = ?delay, "step failed; retrying");
                    let rec = &mut status.steps[idx];
                    rec.message = Some(format!(
                        "retrying in {}s after error: {}",
                        delay.as_secs(),
                        e.message()
                    ));
                    // A transient failure is no reason for a write storm: the message is
                    // persisted, but only while the API server takes writes.
                    if let Err(write_err) = self.write(&tar, &status).await {
                        debug!(error = %write_err, "could not record the transient failure");
                    }
                    return Ok(Requeue(delay));
                }
                Err(e) => {
                    execution("error", Some(e.message()));
                    self.clear_failures(step.name());
                    let message = format!("{} (error category {}; the operator retries on its own once this is fixed)", e.message(), e.category());
                    return self.block(&tar, &mut status, idx, message).await;
                }
            }
        }
    }

    async fn block(
        &self,
        tar: &TrustAnchorRotation,
        status: &mut TrustAnchorRotationStatus,
        idx: usize,
        message: String,
    ) -> Result<Requeue, StepError> {
        let now = self.now();
        let rec = &mut status.steps[idx];
        rec.state = StepState::Blocked;
        rec.message = Some(message.clone());
        let name = rec.name.clone();
        let was = status.blocking_message.clone();
        set_blocked(status, Some(&message), now);
        set_condition(
            &mut status.conditions,
            CONDITION_PROGRESSING,
            false,
            "Blocked",
            &message,
            now,
            tar.metadata.generation,
        );
        warn!(step = %name, %message, "rotation blocked");
        self.write(tar, status).await?;
        if was.as_deref() != Some(message.as_str()) {
            self.events
                .publish(
                    tar,
                    EventKind::Warning,
                    "Blocked",
                    format!("step {name}: {message}"),
                )
                .await;
        }
        Ok(Requeue(self.config.resync.min(Duration::from_secs(10))))
    }

    async fn finish(
        &self,
        tar: &TrustAnchorRotation,
        mut status: TrustAnchorRotationStatus,
        mut rotation: RotationRecord,
    ) -> Result<Requeue, StepError> {
        let now = self.now();
        rotation.finished_at = Some(Time(now));
        telemetry::rotation_done(&rotation, now);
        status.history.insert(0, rotation.clone());
        status.history.truncate(HISTORY_LIMIT);
        status.rotation = None;
        status.steps.clear();
        status.current_step = None;
        let previous = status.phase;
        status.phase = Some(Phase::Synced);
        status.workload_certificate_refresh_interval = None;
        set_blocked(&mut status, None, now);
        set_condition(
            &mut status.conditions,
            CONDITION_READY,
            true,
            "Synced",
            "rotation finished: the trust bundle holds exactly the current trust anchor",
            now,
            tar.metadata.generation,
        );
        set_condition(
            &mut status.conditions,
            CONDITION_PROGRESSING,
            false,
            "RotationComplete",
            &format!("rotation {} finished", rotation.id),
            now,
            tar.metadata.generation,
        );
        self.write(tar, &status).await?;
        if let Some(m) = &self.metrics {
            m.rotation_finished();
        }
        info!(rotation = %rotation.id, "rotation finished");
        self.events
            .publish(
                tar,
                EventKind::Normal,
                "PhaseChanged",
                format!("phase {} → Synced", previous.unwrap_or(Phase::Synced)),
            )
            .await;
        self.events
            .publish(
                tar,
                EventKind::Normal,
                "RotationComplete",
                format!("rotation {} finished", rotation.id),
            )
            .await;
        Ok(Requeue(self.config.resync))
    }

    async fn check_deadline(
        &self,
        tar: &TrustAnchorRotation,
        step: &dyn Step,
        started_at: Timestamp,
        now: Timestamp,
    ) -> Option<String> {
        let deadline = step.deadline()?;
        let elapsed = Duration::try_from(now.duration_since(started_at)).ok()?;
        if elapsed <= deadline {
            return None;
        }
        let note = format!(
            "step {} has been running for {}s, longer than its {}s deadline; it keeps trying",
            step.name(),
            elapsed.as_secs(),
            deadline.as_secs()
        );
        let key = format!("{}/{}", started_at, step.name());
        let fresh = self
            .stalled
            .lock()
            .map(|mut s| s.insert(key))
            .unwrap_or(false);
        if fresh {
            self.events
                .publish(
                    tar,
                    EventKind::Warning,
                    "StepStalled",
                    format!("{note}: see its message in .status.steps"),
                )
                .await;
        }
        Some(note)
    }

    /// Executions of `step` not yet counted in the persisted attempts (and forgets them: the
    /// caller counts them now).
    fn take_uncounted(&self, step: &str) -> u32 {
        self.quiet
            .lock()
            .ok()
            .and_then(|mut q| q.get_mut(step).map(|e| std::mem::take(&mut e.0)))
            .unwrap_or(0)
    }

    fn worth_writing(
        &self,
        step: &str,
        persisted: Option<&TrustAnchorRotationStatus>,
        next: &TrustAnchorRotationStatus,
    ) -> bool {
        let Some(persisted) = persisted else {
            return true;
        };
        if without_noise(persisted) != without_noise(next) {
            return true;
        }
        match self
            .quiet
            .lock()
            .ok()
            .and_then(|q| q.get(step).map(|e| e.1))
        {
            Some(last) => last.elapsed() >= self.config.resync,
            None => true,
        }
    }

    fn wrote(&self, step: &str) {
        if let Ok(mut q) = self.quiet.lock() {
            q.insert(step.to_string(), (0, Instant::now()));
        }
    }

    /// The status was not written: this execution and the `carried` ones stay uncounted.
    fn skipped(&self, step: &str, carried: u32) {
        if let Ok(mut q) = self.quiet.lock() {
            let e = q.entry(step.to_string()).or_insert((0, Instant::now()));
            e.0 = carried.saturating_add(1);
        }
    }

    /// Records a transient failure; returns the delay before the next attempt.
    fn bump_failures(&self, step: &str) -> Duration {
        self.failures
            .lock()
            .map(|mut f| {
                let entry = f.entry(step.to_string()).or_insert((0, Instant::now()));
                entry.0 = entry.0.saturating_add(1);
                let delay = self.config.backoff(entry.0);
                entry.1 = Instant::now() + delay;
                delay
            })
            .unwrap_or(self.config.backoff_base)
    }

    /// How long the step must still wait after its last transient failure, if at all.
    fn backing_off(&self, step: &str) -> Option<Duration> {
        let f = self.failures.lock().ok()?;
        let (_, not_before) = f.get(step)?;
        let now = Instant::now();
        (*not_before > now).then(|| *not_before - now)
    }

    fn clear_failures(&self, step: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(step);
        }
    }

    async fn write(
        &self,
        tar: &TrustAnchorRotation,
        status: &TrustAnchorRotationStatus,
    ) -> Result<(), StepError> {
        self.store
            .apply(tar.metadata.uid.as_deref(), status)
            .await?;
        if let Some(m) = &self.metrics {
            m.observe_status(status);
        }
        Ok(())
    }
}

// === status helpers ===

/// The status without what changes on every look (attempt counts, observation times).
fn without_noise(s: &TrustAnchorRotationStatus) -> TrustAnchorRotationStatus {
    let mut s = s.clone();
    for r in &mut s.steps {
        r.attempts = 0;
    }
    for c in [&mut s.trust_bundle, &mut s.workload_certificates]
        .into_iter()
        .flatten()
    {
        c.observed_at = None;
    }
    s
}

fn pending_record(step: &dyn Step) -> StepRecord {
    StepRecord {
        name: step.name().to_string(),
        phase: step.phase(),
        state: StepState::Pending,
        attempts: 0,
        started_at: None,
        finished_at: None,
        message: None,
    }
}

/// The persisted records in workflow order; steps unknown to the status start Pending.
fn align_records(persisted: &[StepRecord], steps: &[Box<dyn Step>]) -> Vec<StepRecord> {
    steps
        .iter()
        .map(|s| {
            persisted
                .iter()
                .find(|r| r.name == s.name())
                .cloned()
                .unwrap_or_else(|| pending_record(s.as_ref()))
        })
        .collect()
}

fn apply_progress(status: &mut TrustAnchorRotationStatus, p: Progress) {
    if let Some(v) = p.trust_bundle {
        status.trust_bundle = Some(v);
    }
    if let Some(v) = p.workload_certificates {
        status.workload_certificates = Some(v);
    }
    if let Some(v) = p.active_anchor {
        status.active_anchor = Some(v);
    }
    if let Some(v) = p.active_issuer {
        status.active_issuer = Some(v);
    }
    if let Some(v) = p.previous_anchor {
        status.previous_anchor = Some(v);
    }
    if let Some(v) = p.refresh_interval {
        status.workload_certificate_refresh_interval = v;
    }
}

fn set_blocked(status: &mut TrustAnchorRotationStatus, message: Option<&str>, now: Timestamp) {
    status.blocking_message = message.map(str::to_string);
    let gen = status.observed_generation;
    match message {
        Some(m) => set_condition(
            &mut status.conditions,
            CONDITION_BLOCKED,
            true,
            "Blocked",
            m,
            now,
            gen,
        ),
        None => set_condition(
            &mut status.conditions,
            CONDITION_BLOCKED,
            false,
            "NotBlocked",
            "nothing blocks the rotation",
            now,
            gen,
        ),
    }
}

/// Sets a condition, keeping its `lastTransitionTime` unless its status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    let status = if value { "True" } else { "False" };
    let message = truncate(message, 1000);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: Time(now),
            observed_generation: generation,
        }),
    }
}

// === telemetry ===

/// Spans of a rotation: one root span when it starts (whose context is persisted as the
/// rotation's `traceParent`) and one span per step, emitted when the step finishes with the
/// step's real start and end times, so a rotation is one trace in Jaeger/Tempo even when
/// several operator processes carried it out.
pub mod telemetry {
    use super::*;
    use opentelemetry::trace::{
        Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
        TraceState, Tracer as _,
    };
    use opentelemetry::{Context, KeyValue};
    use std::time::SystemTime;

    const TRACER: &str = "trust-rotation-operator";

    fn system_time(t: Timestamp) -> SystemTime {
        SystemTime::from(t)
    }

    /// Starts the rotation's trace. Returns the rotation id (the trace id) and its
    /// W3C `traceparent`.
    pub fn start_rotation_trace(start: &RotationStart, now: Timestamp) -> (String, String) {
        let tracer = opentelemetry::global::tracer(TRACER);
        let mut attrs = vec![KeyValue::new("rotation.trigger", start.trigger.clone())];
        if let Some(f) = &start.from_anchor {
            attrs.push(KeyValue::new("rotation.from_anchor", f.clone()));
        }
        if let Some(t) = &start.to_anchor {
            attrs.push(KeyValue::new("rotation.to_anchor", t.clone()));
        }
        let mut span = tracer
            .span_builder("rotation")
            .with_kind(SpanKind::Internal)
            .with_start_time(system_time(now))
            .with_attributes(attrs)
            .start(&tracer);
        let sc = span.span_context().clone();
        span.end_with_timestamp(system_time(now));
        let (trace_id, span_id) = if sc.is_valid() {
            (sc.trace_id(), sc.span_id())
        } else {
            // Tracing is off: still give the rotation a trace-shaped id, so that turning
            // tracing on mid-rotation keeps one trace for the rest of it.
            (
                TraceId::from_bytes(rand::random::<[u8; 16]>()),
                SpanId::from_bytes(rand::random::<[u8; 8]>()),
            )
        };
        (trace_id.to_string(), format!("00-{trace_id}-{span_id}-01"))
    }

    /// The remote context a `traceparent` describes.
    pub fn parent_context(trace_parent: &str) -> Option<Context> {
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
        let trace_id = TraceId::from_hex(t).ok()?;
        let span_id = SpanId::from_hex(s).ok()?;
        let flags = u8::from_str_radix(f, 16).ok()?;
        let sc = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        );
        sc.is_valid()
            .then(|| Context::new().with_remote_span_context(sc))
    }

    /// Emits the span of one finished step.
    pub fn step_span(
        rotation: &RotationRecord,
        rec: &StepRecord,
        started_at: Timestamp,
        finished_at: Timestamp,
    ) {
        let Some(parent) = rotation.trace_parent.as_deref().and_then(parent_context) else {
            return;
        };
        let tracer = opentelemetry::global::tracer(TRACER);
        let mut span = tracer
            .span_builder(format!("step {}", rec.name))
            .with_kind(SpanKind::Internal)
            .with_start_time(system_time(started_at))
            .with_attributes([
                KeyValue::new("rotation", rotation.id.clone()),
                KeyValue::new("step", rec.name.clone()),
                KeyValue::new("phase", rec.phase.as_str()),
                KeyValue::new("outcome", "done"),
                KeyValue::new("attempts", i64::from(rec.attempts)),
            ])
            .start_with_context(&tracer, &parent);
        span.set_status(Status::Ok);
        span.end_with_timestamp(system_time(finished_at));
    }

    /// Emits the span of one execution of a step (a child of the rotation's root span).
    pub fn execution_span(
        rotation: &RotationRecord,
        step: &str,
        phase: Phase,
        outcome: &'static str,
        attempt: u32,
        (start, end): (SystemTime, SystemTime),
        detail: Option<&str>,
    ) {
        let Some(parent) = rotation.trace_parent.as_deref().and_then(parent_context) else {
            return;
        };
        let tracer = opentelemetry::global::tracer(TRACER);
        let mut attrs = vec![
            KeyValue::new("rotation", rotation.id.clone()),
            KeyValue::new("step", step.to_string()),
            KeyValue::new("phase", phase.as_str()),
            KeyValue::new("outcome", outcome),
            KeyValue::new("attempt", i64::from(attempt)),
        ];
        if let Some(d) = detail {
            attrs.push(KeyValue::new("detail", d.to_string()));
        }
        let mut span = tracer
            .span_builder(format!("execute {step}"))
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attrs)
            .start_with_context(&tracer, &parent);
        if outcome == "error" || outcome == "blocked" {
            span.set_status(Status::error(detail.unwrap_or(outcome).to_string()));
        }
        span.end_with_timestamp(end);
    }

    /// Emits a marker span when the rotation finishes.
    pub fn rotation_done(rotation: &RotationRecord, now: Timestamp) {
        let Some(parent) = rotation.trace_parent.as_deref().and_then(parent_context) else {
            return;
        };
        let tracer = opentelemetry::global::tracer(TRACER);
        let mut span = tracer
            .span_builder("rotation finished")
            .with_start_time(system_time(rotation.started_at.0))
            .with_attributes([KeyValue::new("rotation", rotation.id.clone())])
            .start_with_context(&tracer, &parent);
        span.end_with_timestamp(system_time(now));
    }
}

#[cfg(test)]
mod tests;
