//! The runner's decisions as pure functions.
//!
//! Each function takes the status as persisted, what just happened (a step's outcome, the
//! trigger's view, a pause), what the runner remembers about the step, and the time; it
//! returns the next status, what the runner must now do (write the status, publish Events,
//! record spans) and when to look again. Nothing here talks to Kubernetes, reads a clock or
//! touches a metric: the executor in [`super`] performs the [`Effect`]s, and is the one
//! place that decides whether this replica may write.

use super::{CONDITION_BLOCKED, CONDITION_PROGRESSING, CONDITION_READY};
use crate::step::{Outcome, Progress, StepError, StepReport};
use crate::workflow::{Retarget, RotationStart, SyncedView};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::time::Duration;
use trust_rotation_crds::{
    Phase, RotationRecord, StepRecord, StepState, TrustAnchorRotationStatus, HISTORY_LIMIT,
};

/// How soon a blocked rotation looks again at most (it also wakes on watch events).
const BLOCKED_RESYNC: Duration = Duration::from_secs(10);

// === inputs and outputs ===

/// The moment a decision is taken for: the time, the generation of the spec it answers, and
/// the runner's timing.
#[derive(Debug, Clone, Copy)]
pub struct Moment<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub config: &'a super::RunnerConfig,
}

/// What a decision needs to know about the step at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFacts {
    pub name: String,
    pub phase: Phase,
    /// How long a wait may see nothing move before it is a stall.
    pub stall_timeout: Duration,
}

/// What the runner remembers about a step between executions, in memory only: a restarted
/// operator starts it afresh (backoff from the base, the status written on the first look).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepMemory {
    /// Consecutive failed executions.
    pub failures: u32,
    /// When the current run of failures began.
    pub failing_since: Option<Timestamp>,
    /// No execution before this time (backoff after a failure).
    pub retry_at: Option<Timestamp>,
    /// Executions not yet counted in the persisted `attempts` (their look changed nothing,
    /// so the status was not rewritten).
    pub uncounted: u32,
    /// When this process last wrote the status for this step.
    pub written_at: Option<Timestamp>,
}

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// One Kubernetes Event about the rotation.
///
/// kube's event recorder folds Events with the same type, reason and action into one series
/// and keeps the first note, so the action carries a digest of the note: two different
/// messages are two visible Events, the same message repeated is one Event counted again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub kind: EventKind,
    pub reason: &'static str,
    pub action: String,
    pub note: String,
}

impl EventRecord {
    fn new(kind: EventKind, reason: &'static str, verb: &str, note: String) -> Self {
        Self {
            kind,
            reason,
            action: format!("{verb}-{:08x}", digest(&note)),
            note,
        }
    }
}

/// A stable 32-bit FNV-1a digest (the action must not change between processes).
fn digest(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Something the executor must do after a decision, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write the new status. A best-effort write may fail without failing the reconcile.
    WriteStatus {
        best_effort: bool,
    },
    /// Publish the new status's gauges without writing it (nothing worth a write changed).
    PublishStatus,
    Event(EventRecord),
    /// A span for this execution of the step.
    ExecutionSpan {
        outcome: &'static str,
        detail: Option<String>,
    },
    /// The span of the step that just finished (from its start to now).
    StepSpan {
        step: String,
    },
    RotationStarted,
    /// The rotation (now in `.status.history[0]`) finished.
    RotationFinished,
    /// The rotation changed target: `previous` is its record before (its spans so far hang
    /// under `previous`'s root span, which ends now), `interrupted` the step that was in
    /// progress and starts over (its span ends now too).
    RotationRetargeted {
        previous: Box<RotationRecord>,
        interrupted: Option<Box<StepRecord>>,
    },
}

/// When to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on with the next step now.
    Continue,
    /// Look again after this long (sooner if something watched changes).
    Requeue(Duration),
}

/// The result of a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub status: TrustAnchorRotationStatus,
    pub memory: StepMemory,
    pub effects: Vec<Effect>,
    pub next: Next,
}

impl Transition {
    fn new(status: TrustAnchorRotationStatus, next: Next) -> Self {
        Self {
            status,
            memory: StepMemory::default(),
            effects: Vec::new(),
            next,
        }
    }

    fn with(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }

    fn event(self, kind: EventKind, reason: &'static str, verb: &str, note: String) -> Self {
        self.with(Effect::Event(EventRecord::new(kind, reason, verb, note)))
    }

    /// The Events this transition publishes (for tests and logs).
    pub fn events(&self) -> impl Iterator<Item = &EventRecord> {
        self.effects.iter().filter_map(|e| match e {
            Effect::Event(ev) => Some(ev),
            _ => None,
        })
    }

    pub fn writes(&self) -> bool {
        self.effects
            .iter()
            .any(|e| matches!(e, Effect::WriteStatus { .. }))
    }
}

// === the decisions ===

/// The spec cannot be used: say why where people look, and retry on the resync.
pub fn invalid_spec(prev: &TrustAnchorRotationStatus, message: &str, m: Moment) -> Transition {
    let mut status = prev.clone();
    status.observed_generation = m.generation;
    set_blocked(&mut status, Some(("InvalidSpec", message)), m);
    let mut t = Transition::new(status, Next::Requeue(m.config.resync))
        .with(Effect::WriteStatus { best_effort: false });
    if prev.blocking_message.as_deref() != Some(message) {
        t = t.event(
            EventKind::Warning,
            "InvalidSpec",
            "ValidateSpec",
            message.to_string(),
        );
    }
    t
}

/// `spec.paused`: the only write is the acknowledgement.
pub fn paused(prev: &TrustAnchorRotationStatus, m: Moment) -> Transition {
    let mut status = prev.clone();
    status.observed_generation = m.generation;
    set_condition(
        &mut status.conditions,
        CONDITION_PROGRESSING,
        false,
        "Paused",
        "spec.paused is true: the operator makes no writes until it is set back to false",
        m.now,
        m.generation,
    );
    let t = Transition::new(status.clone(), Next::Requeue(m.config.resync));
    if &status == prev {
        return t.with(Effect::PublishStatus);
    }
    t.with(Effect::WriteStatus { best_effort: false }).event(
        EventKind::Normal,
        "Paused",
        "Pause",
        "spec.paused is true: rotation paused".into(),
    )
}

/// What to do while no rotation is in progress.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncedDecision {
    Stay(Box<Transition>),
    /// A rotation starts from this status (the trigger's view applied).
    Start(Box<TrustAnchorRotationStatus>, RotationStart),
}

/// No rotation in progress: show what the trigger saw, and start a rotation if it says so.
pub fn synced(prev: &TrustAnchorRotationStatus, view: SyncedView, m: Moment) -> SyncedDecision {
    let mut status = prev.clone();
    status.observed_generation = m.generation;
    apply_progress(&mut status, view.progress);
    status.phase = Some(Phase::Synced);
    status.current_step = None;
    status.steps.clear();
    if let Some(message) = view.blocked {
        set_blocked(&mut status, Some(("Blocked", &message)), m);
        set_condition(
            &mut status.conditions,
            CONDITION_READY,
            false,
            "Blocked",
            &message,
            m.now,
            m.generation,
        );
        let mut t = Transition::new(status, Next::Requeue(m.config.resync))
            .with(Effect::WriteStatus { best_effort: false });
        if prev.blocking_message.as_deref() != Some(message.as_str()) {
            t = t.event(EventKind::Warning, "Blocked", "Block", message);
        }
        return SyncedDecision::Stay(Box::new(t));
    }
    if let Some(mut start) = view.start {
        // The operator's scheduled renewal of the anchor this rotation moves from started it.
        if let Some(r) = status.scheduled_renewal.as_ref().filter(|r| {
            r.triggered_at.is_some() && start.from_anchor.as_deref() == Some(r.anchor.as_str())
        }) {
            start.trigger = format!("{}; {}", r.reason, start.trigger);
        }
        return SyncedDecision::Start(Box::new(status), start);
    }
    let mut scheduled_event = None;
    if let Some(n) = view.scheduled {
        if status.scheduled_renewal.as_ref() != Some(&n.record) {
            let kind = match n.kind {
                crate::schedule::NoteKind::NotScheduled => EventKind::Warning,
                _ => EventKind::Normal,
            };
            scheduled_event = Some(EventRecord::new(
                kind,
                n.kind.reason(),
                "Schedule",
                n.record.reason.clone(),
            ));
            status.scheduled_renewal = Some(n.record);
        }
    }
    set_blocked(&mut status, None, m);
    set_condition(
        &mut status.conditions,
        CONDITION_READY,
        true,
        "Synced",
        "the trust bundle holds exactly the current trust anchor",
        m.now,
        m.generation,
    );
    set_condition(
        &mut status.conditions,
        CONDITION_PROGRESSING,
        false,
        "Synced",
        "no rotation in progress",
        m.now,
        m.generation,
    );
    let t = Transition::new(status.clone(), Next::Requeue(m.config.resync));
    let t = if &status == prev {
        // A restarted operator has nothing to write but must still publish.
        t.with(Effect::PublishStatus)
    } else {
        t.with(Effect::WriteStatus { best_effort: false })
    };
    SyncedDecision::Stay(Box::new(match scheduled_event {
        Some(ev) => t.with(Effect::Event(ev)),
        None => t,
    }))
}

/// A rotation starts: every step Pending, the first one current.
pub fn start_rotation(
    from: &TrustAnchorRotationStatus,
    start: RotationStart,
    (id, trace_parent): (String, String),
    steps: &[StepFacts],
    m: Moment,
) -> Transition {
    let mut status = from.clone();
    let Some(first) = steps.first() else {
        return Transition::new(status, Next::Requeue(m.config.resync));
    };
    status.rotation = Some(RotationRecord {
        id: id.clone(),
        trigger: start.trigger.clone(),
        from_anchor: start.from_anchor,
        to_anchor: start.to_anchor,
        superseded_anchors: vec![],
        started_at: Time(m.now),
        finished_at: None,
        trace_parent: Some(trace_parent),
        issuer_renewal: None,
        approvals: Vec::new(),
    });
    status.steps = steps.iter().map(pending_record).collect();
    status.phase = Some(first.phase);
    status.current_step = Some(first.name.clone());
    set_blocked(&mut status, None, m);
    set_condition(
        &mut status.conditions,
        CONDITION_READY,
        false,
        "Rotating",
        &start.trigger,
        m.now,
        m.generation,
    );
    set_condition(
        &mut status.conditions,
        CONDITION_PROGRESSING,
        true,
        "RotationStarted",
        &start.trigger,
        m.now,
        m.generation,
    );
    Transition::new(status, Next::Continue)
        .with(Effect::WriteStatus { best_effort: false })
        .with(Effect::RotationStarted)
        .event(
            EventKind::Normal,
            "RotationStarted",
            "Rotate",
            format!("rotation {id} started: {}", start.trigger),
        )
        .event(
            EventKind::Normal,
            "PhaseChanged",
            "ChangePhase",
            format!("phase Synced → {} (step {})", first.phase, first.name),
        )
}

/// The step at `idx` becomes current. A Pending step starts: its start is persisted before
/// its first execution, so that a restarted operator sees the same start time. `None` when
/// nothing needs writing.
pub fn enter_step(
    prev: &TrustAnchorRotationStatus,
    idx: usize,
    step: &StepFacts,
    m: Moment,
) -> Option<Transition> {
    let rec = prev.steps.get(idx)?;
    if rec.state != StepState::Pending {
        return None;
    }
    let mut status = prev.clone();
    let previous_phase = status.phase;
    status.phase = Some(step.phase);
    status.current_step = Some(step.name.clone());
    let rec = &mut status.steps[idx];
    rec.state = StepState::Waiting;
    rec.started_at = Some(Time(m.now));
    rec.last_progress_time = Some(Time(m.now));
    rec.message = None;
    set_condition(
        &mut status.conditions,
        CONDITION_PROGRESSING,
        true,
        "StepStarted",
        &format!("step {} started", step.name),
        m.now,
        m.generation,
    );
    let mut t =
        Transition::new(status, Next::Continue).with(Effect::WriteStatus { best_effort: false });
    if previous_phase != Some(step.phase) {
        t = t.event(
            EventKind::Normal,
            "PhaseChanged",
            "ChangePhase",
            format!(
                "phase {} → {} (step {})",
                previous_phase.unwrap_or(Phase::Synced),
                step.phase,
                step.name
            ),
        );
    }
    Some(t)
}

/// The workflow moved the rotation's target ([`Retarget`]): record the new target, reset
/// every step from `redo_from` on to Pending, make the first step that is not done current,
/// and say so with a Warning Event. The rotation continues under a new id and trace
/// (`(id, trace_parent)`, as for a start; its start time stays): whatever the steps keyed
/// on the id (restart markers, spans) belongs to the round before, so the steps that run
/// again act and report afresh. The trigger names the id it continues. The executor clears
/// its memory of the steps reset.
pub fn retarget(
    prev: &TrustAnchorRotationStatus,
    rt: Retarget,
    (id, trace_parent): (String, String),
    steps: &[StepFacts],
    m: Moment,
) -> Transition {
    let mut status = prev.clone();
    let Some(rotation) = status.rotation.as_mut() else {
        return Transition::new(status, Next::Requeue(m.config.resync));
    };
    let previous = rotation.clone();
    rotation.from_anchor = rt.from_anchor;
    rotation.to_anchor = rt.to_anchor;
    rotation.superseded_anchors = rt.superseded_anchors;
    rotation.trigger = format!(
        "{}; {} (continues rotation {})",
        rotation.trigger, rt.summary, previous.id
    );
    rotation.id = id;
    rotation.trace_parent = Some(trace_parent);
    // An unknown step name is a workflow bug: redoing everything is the safe reading.
    let redo = steps
        .iter()
        .position(|s| s.name == rt.redo_from)
        .unwrap_or(0);
    let records = align_records(&prev.steps, steps);
    let interrupted = records
        .iter()
        .enumerate()
        .find(|(_, r)| r.state != StepState::Done)
        .filter(|(i, r)| *i >= redo && r.state != StepState::Pending)
        .map(|(_, r)| Box::new(r.clone()));
    status.steps = records
        .into_iter()
        .zip(steps)
        .enumerate()
        .map(|(i, (r, f))| if i >= redo { pending_record(f) } else { r })
        .collect();
    let previous_phase = status.phase;
    let current = status
        .steps
        .iter()
        .position(|r| r.state != StepState::Done)
        .and_then(|i| steps.get(i));
    if let Some(step) = current {
        status.phase = Some(step.phase);
        status.current_step = Some(step.name.clone());
    }
    set_blocked(&mut status, None, m);
    set_condition(
        &mut status.conditions,
        CONDITION_PROGRESSING,
        true,
        "Retargeted",
        &rt.message,
        m.now,
        m.generation,
    );
    let mut t = Transition::new(status, Next::Continue)
        .with(Effect::WriteStatus { best_effort: false })
        .with(Effect::RotationRetargeted {
            previous: Box::new(previous),
            interrupted,
        })
        .event(EventKind::Warning, rt.reason, "Retarget", rt.message);
    if let Some(step) = current.filter(|s| Some(s.phase) != previous_phase) {
        t = t.event(
            EventKind::Normal,
            "PhaseChanged",
            "ChangePhase",
            format!(
                "phase {} → {} (step {})",
                previous_phase.unwrap_or(Phase::Synced),
                step.phase,
                step.name
            ),
        );
    }
    t
}

/// How long the step must still wait after a failure before it may run again.
pub fn backing_off(memory: &StepMemory, now: Timestamp) -> Option<Duration> {
    let at = memory.retry_at?;
    let left = Duration::try_from(now.duration_until(at)).ok()?;
    (!left.is_zero()).then_some(left)
}

/// The number of the execution about to run (persisted attempts plus uncounted ones).
pub fn attempt_number(rec: &StepRecord, memory: &StepMemory) -> u32 {
    rec.attempts
        .saturating_add(memory.uncounted)
        .saturating_add(1)
}

/// The step at `idx` ran (execution number `attempt`) and ended with `result`.
pub fn after_run(
    prev: &TrustAnchorRotationStatus,
    idx: usize,
    step: &StepFacts,
    attempt: u32,
    result: Result<StepReport, StepError>,
    memory: &StepMemory,
    m: Moment,
) -> Transition {
    let mut status = prev.clone();
    status.phase = Some(step.phase);
    status.current_step = Some(step.name.clone());
    let Some(rec) = status.steps.get_mut(idx) else {
        return Transition::new(status, Next::Requeue(m.config.resync));
    };
    rec.attempts = attempt;
    let report = match result {
        Ok(report) => report,
        Err(e) if e.is_transient() => return failed(status, idx, step, e, memory, m),
        Err(e) => {
            let message = format!(
                "{} (error category {}; the operator retries on its own once this is fixed)",
                e.message(),
                e.category()
            );
            return block(prev, status, idx, step, message, "error", m);
        }
    };
    apply_progress(&mut status, report.progress);
    let t = match report.outcome {
        Outcome::Done => done(prev, status, idx, step, m),
        Outcome::Blocked { message } => block(prev, status, idx, step, message, "blocked", m),
        Outcome::Wait {
            reason,
            retry_after,
            patience,
        } => wait(
            prev,
            status,
            idx,
            step,
            (reason, retry_after, patience),
            memory,
            m,
        ),
    };
    // What the step did that a person should hear about, whatever the outcome.
    let t = report.warnings.into_iter().fold(t, |t, w| {
        t.event(EventKind::Warning, w.reason, "Reconcile", w.note)
    });
    report.notices.into_iter().fold(t, |t, n| {
        t.event(EventKind::Normal, n.reason, "Automate", n.note)
    })
}

fn done(
    prev: &TrustAnchorRotationStatus,
    mut status: TrustAnchorRotationStatus,
    idx: usize,
    step: &StepFacts,
    m: Moment,
) -> Transition {
    let rec = &mut status.steps[idx];
    rec.state = StepState::Done;
    rec.finished_at = Some(Time(m.now));
    rec.last_progress_time = Some(Time(m.now));
    rec.message = None;
    set_blocked(&mut status, None, m);
    let mut t = Transition::new(status, Next::Continue)
        .with(Effect::WriteStatus { best_effort: false })
        .with(Effect::ExecutionSpan {
            outcome: "done",
            detail: None,
        })
        .with(Effect::StepSpan {
            step: step.name.clone(),
        });
    if prev.blocking_message.is_some() {
        t = t.event(
            EventKind::Normal,
            unblocked_reason(prev),
            "Unblock",
            format!("step {} is no longer blocked: it finished", step.name),
        );
    }
    t
}

fn wait(
    prev: &TrustAnchorRotationStatus,
    mut status: TrustAnchorRotationStatus,
    idx: usize,
    step: &StepFacts,
    (reason, retry_after, patience): (String, Duration, Option<Timestamp>),
    memory: &StepMemory,
    m: Moment,
) -> Transition {
    let rec = &mut status.steps[idx];
    rec.state = StepState::Waiting;
    rec.message = Some(reason.clone());
    let since = if moved(prev, &status, idx) {
        m.now
    } else {
        status.steps[idx]
            .last_progress_time
            .as_ref()
            .or(status.steps[idx].started_at.as_ref())
            .map_or(m.now, |t| t.0)
    };
    status.steps[idx].last_progress_time = Some(Time(since));
    let quiet_for = Duration::try_from(since.duration_until(m.now)).unwrap_or_default();
    let patient = patience.is_some_and(|p| m.now < p);
    // The stall message must not change on every look (it would be rewritten and re-sent
    // as an Event each time): it names the time since when, not the elapsed time.
    let stall = (quiet_for >= step.stall_timeout && !patient).then(|| {
        format!(
            "step {} has seen no progress since {} (stall timeout {}): {reason}",
            step.name,
            since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            human_duration(step.stall_timeout),
        )
    });
    match &stall {
        Some(message) => {
            set_blocked(&mut status, Some(("Stalled", message)), m);
            set_condition(
                &mut status.conditions,
                CONDITION_PROGRESSING,
                false,
                "StepStalled",
                message,
                m.now,
                m.generation,
            );
        }
        None => {
            set_blocked(&mut status, None, m);
            set_condition(
                &mut status.conditions,
                CONDITION_PROGRESSING,
                true,
                "Waiting",
                &reason,
                m.now,
                m.generation,
            );
        }
    }
    let requeue = Next::Requeue(retry_after.min(m.config.resync));
    let mut t = Transition::new(status, requeue);
    // Waiting can last hours: an unchanged status (but for the attempt count and observation
    // times) is rewritten only once per resync interval.
    let recent = memory.written_at.is_some_and(|w| {
        Duration::try_from(w.duration_until(m.now)).unwrap_or_default() < m.config.resync
    });
    if without_noise(prev) == without_noise(&t.status) && recent {
        t.memory = StepMemory {
            uncounted: memory.uncounted.saturating_add(1),
            ..memory.clone()
        };
        // The persisted attempts stay as they were; the uncounted ones are added later.
        t.status.steps[idx].attempts = prev.steps[idx].attempts;
        return t.with(Effect::PublishStatus);
    }
    t.memory.written_at = Some(m.now);
    t = t.with(Effect::WriteStatus { best_effort: false });
    // A span for every look that changed something; quiet looks only count in metrics.
    t = t.with(Effect::ExecutionSpan {
        outcome: "wait",
        detail: Some(reason.clone()),
    });
    match (&stall, prev.blocking_message.as_deref()) {
        (Some(message), was) if was != Some(message.as_str()) => {
            t = t.event(EventKind::Warning, "Stalled", "Stall", message.clone());
        }
        (None, Some(_)) => {
            t = t.event(
                EventKind::Normal,
                unblocked_reason(prev),
                "Unblock",
                format!("step {} is moving again: {reason}", step.name),
            );
        }
        _ => {}
    }
    t
}

fn block(
    prev: &TrustAnchorRotationStatus,
    mut status: TrustAnchorRotationStatus,
    idx: usize,
    step: &StepFacts,
    message: String,
    outcome: &'static str,
    m: Moment,
) -> Transition {
    let rec = &mut status.steps[idx];
    rec.state = StepState::Blocked;
    rec.message = Some(message.clone());
    set_blocked(&mut status, Some(("Blocked", &message)), m);
    set_condition(
        &mut status.conditions,
        CONDITION_PROGRESSING,
        false,
        "Blocked",
        &message,
        m.now,
        m.generation,
    );
    let mut t = Transition::new(status, Next::Requeue(m.config.resync.min(BLOCKED_RESYNC)))
        .with(Effect::WriteStatus { best_effort: false })
        .with(Effect::ExecutionSpan {
            outcome,
            detail: Some(message.clone()),
        });
    if prev.blocking_message.as_deref() != Some(message.as_str()) {
        // Parked outside the maintenance windows: expected, not a problem to look at.
        let (kind, reason) = if message.starts_with(crate::schedule::OUTSIDE_WINDOWS) {
            (EventKind::Normal, crate::schedule::WINDOW_CLOSED)
        } else {
            (EventKind::Warning, "Blocked")
        };
        t = t.event(
            kind,
            reason,
            "Block",
            format!("step {}: {message}", step.name),
        );
    }
    t
}

/// The Event reason when a step moves on after `prev`'s blocking message: a maintenance
/// window opened, or the block cleared.
fn unblocked_reason(prev: &TrustAnchorRotationStatus) -> &'static str {
    match prev.blocking_message.as_deref() {
        Some(m) if m.starts_with(crate::schedule::OUTSIDE_WINDOWS) => {
            crate::schedule::WINDOW_OPENED
        }
        _ => "Unblocked",
    }
}

/// A transient failure: back off, say so in the step's record, and once failures have lasted
/// the stall timeout, in `blockingMessage` too.
fn failed(
    mut status: TrustAnchorRotationStatus,
    idx: usize,
    step: &StepFacts,
    e: StepError,
    memory: &StepMemory,
    m: Moment,
) -> Transition {
    let failures = memory.failures.saturating_add(1);
    let delay = m.config.backoff(failures);
    let failing_since = memory.failing_since.unwrap_or(m.now);
    let rec = &mut status.steps[idx];
    rec.message = Some(format!(
        "retrying in {}s after error: {}",
        delay.as_secs(),
        e.message()
    ));
    let failing_for = Duration::try_from(failing_since.duration_until(m.now)).unwrap_or_default();
    if failing_for >= step.stall_timeout {
        let message = format!(
            "step {} has failed on every attempt since {} ({failures} attempts, error category {}): {}",
            step.name,
            failing_since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            e.category(),
            e.message()
        );
        set_blocked(&mut status, Some(("Failing", &message)), m);
    }
    let mut t = Transition::new(status, Next::Requeue(delay))
        // A transient failure is no reason for a write storm: the message is persisted, but
        // only while the API server takes writes.
        .with(Effect::WriteStatus { best_effort: true })
        .with(Effect::ExecutionSpan {
            outcome: "error",
            detail: Some(e.message().to_string()),
        });
    t.memory = StepMemory {
        failures,
        failing_since: Some(failing_since),
        retry_at: Some(m.now + delay),
        uncounted: 0,
        written_at: Some(m.now),
    };
    t
}

/// Every step is done: the rotation goes to the history and the status back to Synced.
pub fn finish(prev: &TrustAnchorRotationStatus, m: Moment) -> Transition {
    let mut status = prev.clone();
    let Some(mut rotation) = status.rotation.take() else {
        return Transition::new(status, Next::Requeue(m.config.resync));
    };
    rotation.finished_at = Some(Time(m.now));
    let id = rotation.id.clone();
    status.history.insert(0, rotation);
    status.history.truncate(HISTORY_LIMIT);
    status.steps.clear();
    status.current_step = None;
    let previous = status.phase;
    status.phase = Some(Phase::Synced);
    status.workload_certificate_refresh_interval = None;
    set_blocked(&mut status, None, m);
    set_condition(
        &mut status.conditions,
        CONDITION_READY,
        true,
        "Synced",
        "rotation finished: the trust bundle holds exactly the current trust anchor",
        m.now,
        m.generation,
    );
    set_condition(
        &mut status.conditions,
        CONDITION_PROGRESSING,
        false,
        "RotationComplete",
        &format!("rotation {id} finished"),
        m.now,
        m.generation,
    );
    Transition::new(status, Next::Requeue(m.config.resync))
        .with(Effect::WriteStatus { best_effort: false })
        .with(Effect::RotationFinished)
        .event(
            EventKind::Normal,
            "PhaseChanged",
            "ChangePhase",
            format!("phase {} → Synced", previous.unwrap_or(Phase::Synced)),
        )
        .event(
            EventKind::Normal,
            "RotationComplete",
            "Rotate",
            format!("rotation {id} finished"),
        )
}

// === status helpers ===

/// Whether anything a person would see moved between two looks at the step at `idx`: a
/// convergence count or the pods left, a certificate, or what the step says it waits for.
fn moved(prev: &TrustAnchorRotationStatus, next: &TrustAnchorRotationStatus, idx: usize) -> bool {
    let counts = |s: &TrustAnchorRotationStatus| {
        [&s.trust_bundle, &s.workload_certificates].map(|c| {
            c.as_ref()
                .map(|c| (c.converged, c.target, c.unconverged.clone()))
        })
    };
    let certs = |s: &TrustAnchorRotationStatus| {
        [&s.active_anchor, &s.active_issuer, &s.previous_anchor]
            .map(|c| c.as_ref().map(|c| c.fingerprint.clone()))
    };
    let message = |s: &TrustAnchorRotationStatus| s.steps.get(idx).and_then(|r| r.message.clone());
    counts(prev) != counts(next) || certs(prev) != certs(next) || message(prev) != message(next)
}

/// The status without what changes on every look (attempt counts, observation times).
pub fn without_noise(s: &TrustAnchorRotationStatus) -> TrustAnchorRotationStatus {
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

pub fn pending_record(step: &StepFacts) -> StepRecord {
    StepRecord {
        name: step.name.clone(),
        phase: step.phase,
        state: StepState::Pending,
        attempts: 0,
        started_at: None,
        finished_at: None,
        last_progress_time: None,
        message: None,
    }
}

/// The persisted records in workflow order; steps unknown to the status start Pending.
pub fn align_records(persisted: &[StepRecord], steps: &[StepFacts]) -> Vec<StepRecord> {
    steps
        .iter()
        .map(|s| {
            persisted
                .iter()
                .find(|r| r.name == s.name)
                .cloned()
                .unwrap_or_else(|| pending_record(s))
        })
        .collect()
}

pub fn apply_progress(status: &mut TrustAnchorRotationStatus, p: Progress) {
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
    if let Some(v) = p.foreign_roots {
        status.foreign_roots = v;
    }
    if let Some((step, records)) = p.workload_restarts {
        let current = status.rotation.as_ref().map(|r| r.id.clone());
        status
            .workload_restarts
            .retain(|r| Some(&r.rotation_id) == current.as_ref() && r.step != step);
        status.workload_restarts.extend(records);
    }
    if let Some(rotation) = status.rotation.as_mut() {
        if let Some(v) = p.issuer_renewal {
            rotation.issuer_renewal = Some(v);
        }
        for a in p.approvals {
            if !rotation
                .approvals
                .iter()
                .any(|x| x.step == a.step && x.rotation_id == a.rotation_id)
            {
                rotation.approvals.push(a);
            }
        }
    }
}

/// Sets or clears `blockingMessage` and the Blocked condition (`(reason, message)`).
fn set_blocked(status: &mut TrustAnchorRotationStatus, blocked: Option<(&str, &str)>, m: Moment) {
    status.blocking_message = blocked.map(|(_, message)| message.to_string());
    let (value, reason, message) = match blocked {
        Some((reason, message)) => (true, reason, message),
        None => (false, "NotBlocked", "nothing blocks the rotation"),
    };
    set_condition(
        &mut status.conditions,
        CONDITION_BLOCKED,
        value,
        reason,
        message,
        m.now,
        m.generation,
    );
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
    let message = super::store::truncate(message, 1000);
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

/// `1h5m`, `5m`, `40s`.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests;
