//! Every transition rule as a row: previous status, what happened, memory, now → the step's
//! state, `blockingMessage`, the writes, the Events and when to look again.

use super::*;
use crate::error::ErrorCategory;
use crate::runner::RunnerConfig;

const T0: i64 = 1_800_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs).unwrap()
}

fn facts() -> StepFacts {
    StepFacts {
        name: "AwaitPropagation".into(),
        phase: Phase::PropagatingTrustRoots,
        stall_timeout: Duration::from_secs(300),
    }
}

/// A rotation waiting in its only step since T0, with `message` and maybe blocked.
fn waiting(message: &str, blocked: Option<&str>) -> TrustAnchorRotationStatus {
    TrustAnchorRotationStatus {
        phase: Some(Phase::PropagatingTrustRoots),
        current_step: Some("AwaitPropagation".into()),
        steps: vec![StepRecord {
            state: if blocked.is_some() && message == "blocked" {
                StepState::Blocked
            } else {
                StepState::Waiting
            },
            attempts: 3,
            started_at: Some(Time(at(0))),
            last_progress_time: Some(Time(at(0))),
            message: Some(message.into()),
            ..pending_record(&facts())
        }],
        blocking_message: blocked.map(str::to_string),
        rotation: Some(RotationRecord {
            id: "r1".into(),
            trigger: "anchor renewed".into(),
            from_anchor: None,
            to_anchor: None,
            superseded_anchors: vec![],
            started_at: Time(at(0)),
            finished_at: None,
            trace_parent: None,
            issuer_renewal: None,
            approvals: Vec::new(),
        }),
        ..Default::default()
    }
}

fn wait(reason: &str) -> Result<StepReport, StepError> {
    Ok(Outcome::wait(reason, Duration::from_secs(2)).into())
}

struct Row {
    name: &'static str,
    prev: TrustAnchorRotationStatus,
    result: Result<StepReport, StepError>,
    memory: StepMemory,
    now: i64,
    state: StepState,
    blocking: Option<&'static str>,
    writes: bool,
    events: &'static [&'static str],
    next: Next,
}

#[test]
fn after_run_rules() {
    let cfg = RunnerConfig::default();
    let written_just_now = StepMemory {
        written_at: Some(at(10)),
        ..Default::default()
    };
    // The status as a previous identical look left it (conditions and all).
    let settled = after_run(
        &waiting("3 left", None),
        0,
        &facts(),
        3,
        wait("3 left"),
        &StepMemory::default(),
        Moment {
            now: at(10),
            generation: Some(1),
            config: &cfg,
        },
    )
    .status;
    let rows = vec![
        Row {
            name: "done: finished, blocking cleared, span, go on",
            prev: waiting("3 left", None),
            result: Ok(Outcome::Done.into()),
            memory: StepMemory::default(),
            now: 20,
            state: StepState::Done,
            blocking: None,
            writes: true,
            events: &[],
            next: Next::Continue,
        },
        Row {
            name: "wait that moved: written, requeued at retry_after",
            prev: waiting("3 left", None),
            result: wait("2 left"),
            memory: written_just_now.clone(),
            now: 20,
            state: StepState::Waiting,
            blocking: None,
            writes: true,
            events: &[],
            next: Next::Requeue(Duration::from_secs(2)),
        },
        Row {
            name: "unchanged wait within the resync: not written",
            prev: settled,
            result: wait("3 left"),
            memory: written_just_now.clone(),
            now: 20,
            state: StepState::Waiting,
            blocking: None,
            writes: false,
            events: &[],
            next: Next::Requeue(Duration::from_secs(2)),
        },
        Row {
            name: "wait with nothing moving past the stall timeout: stalled",
            prev: waiting("3 left", None),
            result: wait("3 left"),
            memory: StepMemory::default(),
            now: 300,
            state: StepState::Waiting,
            blocking: Some("step AwaitPropagation has seen no progress since"),
            writes: true,
            events: &["Stalled"],
            next: Next::Requeue(Duration::from_secs(2)),
        },
        Row {
            name: "stalled and moving again: cleared",
            prev: waiting("3 left", Some("step AwaitPropagation has seen no progress")),
            result: wait("2 left"),
            memory: StepMemory::default(),
            now: 400,
            state: StepState::Waiting,
            blocking: None,
            writes: true,
            events: &["Unblocked"],
            next: Next::Requeue(Duration::from_secs(2)),
        },
        Row {
            name: "blocked: parks with the message, looks again soon",
            prev: waiting("3 left", None),
            result: Ok(Outcome::blocked("the bundle lost the new root").into()),
            memory: StepMemory::default(),
            now: 20,
            state: StepState::Blocked,
            blocking: Some("the bundle lost the new root"),
            writes: true,
            events: &["Blocked"],
            next: Next::Requeue(BLOCKED_RESYNC),
        },
        Row {
            name: "blocked again with the same message: no second Event",
            prev: waiting("blocked", Some("the bundle lost the new root")),
            result: Ok(Outcome::blocked("the bundle lost the new root").into()),
            memory: StepMemory::default(),
            now: 20,
            state: StepState::Blocked,
            blocking: Some("the bundle lost the new root"),
            writes: true,
            events: &[],
            next: Next::Requeue(BLOCKED_RESYNC),
        },
        Row {
            name: "unblocked: waiting again, said so",
            prev: waiting("blocked", Some("the bundle lost the new root")),
            result: wait("3 left"),
            memory: StepMemory::default(),
            now: 20,
            state: StepState::Waiting,
            blocking: None,
            writes: true,
            events: &["Unblocked"],
            next: Next::Requeue(Duration::from_secs(2)),
        },
        Row {
            name: "transient error: backs off, not blocked yet",
            prev: waiting("3 left", None),
            result: Err(StepError::transient(
                ErrorCategory::KubeConnection,
                "connection refused",
            )),
            memory: StepMemory {
                failures: 2,
                failing_since: Some(at(10)),
                ..Default::default()
            },
            now: 20,
            state: StepState::Waiting,
            blocking: None,
            writes: true,
            events: &[],
            next: Next::Requeue(Duration::from_secs(4)),
        },
        Row {
            name: "transient errors for the stall timeout: shown",
            prev: waiting("3 left", None),
            result: Err(StepError::transient(
                ErrorCategory::KubeConnection,
                "connection refused",
            )),
            memory: StepMemory {
                failures: 9,
                failing_since: Some(at(0)),
                ..Default::default()
            },
            now: 400,
            state: StepState::Waiting,
            blocking: Some("has failed on every attempt since"),
            writes: true,
            events: &[],
            next: Next::Requeue(Duration::from_secs(120)),
        },
        Row {
            name: "permanent error: blocks with the category",
            prev: waiting("3 left", None),
            result: Err(StepError::permanent(
                ErrorCategory::KubeForbidden,
                "configmaps is forbidden",
            )),
            memory: StepMemory::default(),
            now: 20,
            state: StepState::Blocked,
            blocking: Some("configmaps is forbidden (error category kube_forbidden"),
            writes: true,
            events: &["Blocked"],
            next: Next::Requeue(BLOCKED_RESYNC),
        },
    ];
    for row in rows {
        let m = Moment {
            now: at(row.now),
            generation: Some(1),
            config: &cfg,
        };
        let t = after_run(&row.prev, 0, &facts(), 4, row.result, &row.memory, m);
        let name = row.name;
        assert_eq!(t.status.steps[0].state, row.state, "{name}");
        match (row.blocking, t.status.blocking_message.as_deref()) {
            (None, None) => {}
            (Some(want), Some(got)) => assert!(got.contains(want), "{name}: {got}"),
            (want, got) => panic!("{name}: blockingMessage {got:?}, want {want:?}"),
        }
        let blocked_condition = t
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_BLOCKED)
            .map(|c| c.status.clone());
        assert_eq!(
            blocked_condition.as_deref().unwrap_or("False"),
            if row.blocking.is_some() {
                "True"
            } else {
                "False"
            },
            "{name}: the Blocked condition follows blockingMessage"
        );
        assert_eq!(t.writes(), row.writes, "{name}");
        let reasons: Vec<_> = t.events().map(|e| e.reason).collect();
        assert_eq!(reasons, row.events, "{name}");
        assert_eq!(t.next, row.next, "{name}");
    }
}

#[test]
fn paused_and_resumed() {
    let cfg = RunnerConfig::default();
    let m = Moment {
        now: at(5),
        generation: Some(2),
        config: &cfg,
    };
    let prev = waiting("3 left", None);
    let t = paused(&prev, m);
    assert!(t.writes());
    assert_eq!(t.events().map(|e| e.reason).collect::<Vec<_>>(), ["Paused"]);
    assert_eq!(t.status.steps, prev.steps, "nothing else changes");
    // Paused again: nothing to write.
    let again = paused(&t.status, m);
    assert!(!again.writes());
    assert_eq!(again.events().count(), 0);
    // Resumed: the step runs again where it was.
    let resumed = after_run(
        &t.status,
        0,
        &facts(),
        4,
        wait("3 left"),
        &StepMemory::default(),
        m,
    );
    let progressing = resumed
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_PROGRESSING)
        .unwrap();
    assert_eq!(progressing.reason, "Waiting");
}

#[test]
fn finished_goes_to_history_and_synced() {
    let cfg = RunnerConfig::default();
    let m = Moment {
        now: at(99),
        generation: Some(1),
        config: &cfg,
    };
    let mut prev = waiting("", None);
    prev.steps[0].state = StepState::Done;
    prev.workload_certificate_refresh_interval = Some("5m".into());
    let t = finish(&prev, m);
    assert_eq!(t.status.phase, Some(Phase::Synced));
    assert!(t.status.rotation.is_none() && t.status.steps.is_empty());
    assert_eq!(t.status.history[0].finished_at, Some(Time(at(99))));
    assert_eq!(t.status.workload_certificate_refresh_interval, None);
    assert!(t.effects.contains(&Effect::RotationFinished));
    assert_eq!(
        t.events().map(|e| e.note.as_str()).collect::<Vec<_>>(),
        [
            "phase PropagatingTrustRoots → Synced",
            "rotation r1 finished"
        ]
    );
}

#[test]
fn event_actions_differ_exactly_when_notes_differ() {
    let a = EventRecord::new(EventKind::Warning, "Blocked", "Block", "one".into());
    let b = EventRecord::new(EventKind::Warning, "Blocked", "Block", "two".into());
    let a2 = EventRecord::new(EventKind::Warning, "Blocked", "Block", "one".into());
    assert_ne!(a.action, b.action);
    assert_eq!(a.action, a2.action, "a repeat folds into one series");
    assert!(a.action.starts_with("Block-"));
}

#[test]
fn entering_a_pending_step_persists_its_start_once() {
    let cfg = RunnerConfig::default();
    let m = Moment {
        now: at(7),
        generation: Some(1),
        config: &cfg,
    };
    let mut prev = waiting("", None);
    prev.phase = Some(Phase::RefreshingControlPlane);
    prev.steps[0] = pending_record(&facts());
    let t = enter_step(&prev, 0, &facts(), m).expect("a pending step starts");
    assert_eq!(t.status.steps[0].started_at, Some(Time(at(7))));
    assert_eq!(t.status.steps[0].state, StepState::Waiting);
    assert!(t.writes());
    assert_eq!(
        t.events().map(|e| e.note.as_str()).collect::<Vec<_>>(),
        ["phase RefreshingControlPlane → PropagatingTrustRoots (step AwaitPropagation)"]
    );
    assert!(
        enter_step(&t.status, 0, &facts(), m).is_none(),
        "started steps are left alone"
    );
}

/// Four steps, the way the rotation's are laid out: a copy, an expansion, a wait, a reduction.
fn four() -> Vec<StepFacts> {
    [
        ("Copy", Phase::RefreshingControlPlane),
        ("Expand", Phase::RefreshingControlPlane),
        ("Wait", Phase::PropagatingTrustRoots),
        ("Reduce", Phase::RemovingOldTrustRoots),
    ]
    .into_iter()
    .map(|(n, p)| StepFacts {
        name: n.into(),
        phase: p,
        stall_timeout: Duration::from_secs(300),
    })
    .collect()
}

/// A rotation A → B standing at step `current` (in `state`), everything before it done.
fn standing_at(
    current: usize,
    state: StepState,
    blocked: Option<&str>,
) -> TrustAnchorRotationStatus {
    let steps = four();
    let mut s = waiting("", blocked);
    s.rotation.as_mut().unwrap().from_anchor = Some("aa".into());
    s.rotation.as_mut().unwrap().to_anchor = Some("bb".into());
    s.rotation.as_mut().unwrap().trace_parent = Some("tp-1".into());
    s.phase = Some(steps[current].phase);
    s.current_step = Some(steps[current].name.clone());
    s.steps = steps
        .iter()
        .enumerate()
        .map(|(i, f)| StepRecord {
            state: match i.cmp(&current) {
                std::cmp::Ordering::Less => StepState::Done,
                std::cmp::Ordering::Equal => state,
                std::cmp::Ordering::Greater => StepState::Pending,
            },
            started_at: (i <= current).then(|| Time(at(i as i64))),
            finished_at: (i < current).then(|| Time(at(i as i64 + 1))),
            attempts: if i <= current { 2 } else { 0 },
            message: (i == current).then(|| "waiting for pods".to_string()),
            ..pending_record(f)
        })
        .collect();
    s
}

fn moved_to(to: &str, superseded: &[&str], redo_from: &str) -> Retarget {
    Retarget {
        reason: "AnchorRenewedMidRotation",
        message: format!("renewed again: now moving to {to}"),
        summary: format!("retargeted to {to}"),
        from_anchor: Some("aa".into()),
        to_anchor: Some(to.into()),
        superseded_anchors: superseded.iter().map(|s| s.to_string()).collect(),
        redo_from: redo_from.into(),
    }
}

struct RetargetRow {
    name: &'static str,
    prev: TrustAnchorRotationStatus,
    retarget: Retarget,
    /// The state of each of the four steps after the retarget.
    states: [StepState; 4],
    current: &'static str,
    /// The step whose span ends as interrupted.
    interrupted: Option<&'static str>,
    events: &'static [&'static str],
}

#[test]
fn retarget_rules() {
    use StepState::*;
    let cfg = RunnerConfig::default();
    let m = Moment {
        now: at(50),
        generation: Some(3),
        config: &cfg,
    };
    let rows = [
        RetargetRow {
            name: "still copying: only the record changes, the copy goes on",
            prev: standing_at(0, Waiting, None),
            retarget: moved_to("cc", &[], "Expand"),
            states: [Waiting, Pending, Pending, Pending],
            current: "Copy",
            interrupted: None,
            events: &["AnchorRenewedMidRotation"],
        },
        RetargetRow {
            name: "expansion blocked on the changed anchor: redone, unblocked",
            prev: standing_at(1, Blocked, Some("the trust anchor changed again")),
            retarget: moved_to("cc", &[], "Expand"),
            states: [Done, Pending, Pending, Pending],
            current: "Expand",
            interrupted: Some("Expand"),
            events: &["AnchorRenewedMidRotation"],
        },
        RetargetRow {
            name: "waiting for pods: back to the expansion, phase changes back",
            prev: standing_at(2, Waiting, None),
            retarget: moved_to("cc", &["bb"], "Expand"),
            states: [Done, Pending, Pending, Pending],
            current: "Expand",
            interrupted: Some("Wait"),
            events: &["AnchorRenewedMidRotation", "PhaseChanged"],
        },
        RetargetRow {
            name: "reducing: a fresh start from the first step",
            prev: standing_at(3, Waiting, None),
            retarget: Retarget {
                from_anchor: Some("bb".into()),
                ..moved_to("cc", &[], "Copy")
            },
            states: [Pending, Pending, Pending, Pending],
            current: "Copy",
            interrupted: Some("Reduce"),
            events: &["AnchorRenewedMidRotation", "PhaseChanged"],
        },
        RetargetRow {
            name: "an unknown step to redo from: everything is redone",
            prev: standing_at(2, Waiting, None),
            retarget: moved_to("cc", &["bb"], "NoSuchStep"),
            states: [Pending, Pending, Pending, Pending],
            current: "Copy",
            interrupted: Some("Wait"),
            events: &["AnchorRenewedMidRotation", "PhaseChanged"],
        },
    ];
    for row in rows {
        let name = row.name;
        let rt = row.retarget.clone();
        let t = retarget(
            &row.prev,
            row.retarget,
            ("r2".into(), "tp-2".into()),
            &four(),
            m,
        );
        let s = &t.status;
        let r = s.rotation.as_ref().expect("still a rotation");
        assert_eq!(r.to_anchor, rt.to_anchor, "{name}");
        assert_eq!(r.from_anchor, rt.from_anchor, "{name}");
        assert_eq!(r.superseded_anchors, rt.superseded_anchors, "{name}");
        assert_eq!(r.id, "r2", "{name}: a new round");
        assert_eq!(r.trace_parent.as_deref(), Some("tp-2"), "{name}");
        assert_eq!(
            r.started_at,
            Time(at(0)),
            "{name}: the rotation's start stays"
        );
        assert_eq!(
            r.trigger,
            format!("anchor renewed; {} (continues rotation r1)", rt.summary),
            "{name}"
        );
        let states: Vec<StepState> = s.steps.iter().map(|r| r.state).collect();
        assert_eq!(states, row.states, "{name}");
        for rec in s.steps.iter().filter(|r| r.state == Pending) {
            assert_eq!(rec.attempts, 0, "{name}: {} starts afresh", rec.name);
            assert!(rec.started_at.is_none() && rec.message.is_none(), "{name}");
        }
        assert_eq!(s.current_step.as_deref(), Some(row.current), "{name}");
        let phase = four()
            .into_iter()
            .find(|f| f.name == row.current)
            .unwrap()
            .phase;
        assert_eq!(s.phase, Some(phase), "{name}");
        assert_eq!(
            s.blocking_message, None,
            "{name}: nothing blocks a retargeted rotation"
        );
        let progressing = s
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_PROGRESSING)
            .unwrap();
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "Retargeted"),
            "{name}"
        );
        assert!(t.writes(), "{name}");
        assert_eq!(t.next, Next::Continue, "{name}");
        let reasons: Vec<_> = t.events().map(|e| e.reason).collect();
        assert_eq!(reasons, row.events, "{name}");
        let warning = t.events().next().unwrap();
        assert_eq!(warning.kind, EventKind::Warning, "{name}");
        assert_eq!(warning.note, rt.message, "{name}");
        let Some(Effect::RotationRetargeted {
            previous,
            interrupted,
        }) = t
            .effects
            .iter()
            .find(|e| matches!(e, Effect::RotationRetargeted { .. }))
        else {
            panic!("{name}: no RotationRetargeted effect");
        };
        assert_eq!(previous.to_anchor.as_deref(), Some("bb"), "{name}");
        assert_eq!(previous.trace_parent.as_deref(), Some("tp-1"), "{name}");
        assert_eq!(
            interrupted.as_ref().map(|r| r.name.as_str()),
            row.interrupted,
            "{name}"
        );
        if let Some(i) = interrupted {
            assert_ne!(i.state, Pending, "{name}: the interrupted record as it was");
        }
        // The next look enters the current step without a second PhaseChanged.
        let idx = s.steps.iter().position(|r| r.state != Done).unwrap();
        if let Some(enter) = enter_step(s, idx, &four()[idx], m) {
            assert_eq!(enter.events().count(), 0, "{name}");
        }
    }
}

#[test]
fn retarget_without_a_rotation_changes_nothing() {
    let cfg = RunnerConfig::default();
    let m = Moment {
        now: at(50),
        generation: Some(3),
        config: &cfg,
    };
    let prev = TrustAnchorRotationStatus::default();
    let t = retarget(
        &prev,
        moved_to("cc", &[], "Expand"),
        ("r2".into(), "tp-2".into()),
        &four(),
        m,
    );
    assert_eq!(t.status, prev);
    assert!(!t.writes() && t.events().count() == 0);
}

#[test]
fn workload_restart_records_replace_their_steps_and_drop_older_rotations() {
    use trust_rotation_crds::{WorkloadRestartRecord, WorkloadRestartState};
    let rec = |rotation: &str, step: &str, w: &str, state| WorkloadRestartRecord {
        rotation_id: rotation.into(),
        step: step.into(),
        workload: w.into(),
        state,
        at: Time(at(0)),
        message: None,
    };
    let mut status = waiting("w", None);
    status.workload_restarts = vec![
        rec(
            "r0",
            "AwaitPropagation",
            "a/deployment/old",
            WorkloadRestartState::Restarted,
        ),
        rec(
            "r1",
            "AwaitPropagation",
            "a/deployment/x",
            WorkloadRestartState::Pending,
        ),
        rec(
            "r1",
            "AccelerateRefresh",
            "a/deployment/x",
            WorkloadRestartState::Restarted,
        ),
    ];
    apply_progress(
        &mut status,
        Progress {
            workload_restarts: Some((
                "AwaitPropagation".into(),
                vec![rec(
                    "r1",
                    "AwaitPropagation",
                    "a/deployment/x",
                    WorkloadRestartState::Restarting,
                )],
            )),
            ..Default::default()
        },
    );
    let got: Vec<(&str, &str, WorkloadRestartState)> = status
        .workload_restarts
        .iter()
        .map(|r| (r.rotation_id.as_str(), r.step.as_str(), r.state))
        .collect();
    assert_eq!(
        got,
        [
            ("r1", "AccelerateRefresh", WorkloadRestartState::Restarted),
            ("r1", "AwaitPropagation", WorkloadRestartState::Restarting),
        ]
    );
    // No progress about restarts: the records stay as they are.
    apply_progress(&mut status, Progress::default());
    assert_eq!(status.workload_restarts.len(), 2);
}

#[test]
fn a_window_park_is_a_normal_event_no_stall_and_its_end_says_the_window_opened() {
    let cfg = RunnerConfig::default();
    let m = |s| Moment {
        now: at(s),
        generation: Some(1),
        config: &cfg,
    };
    let park = crate::schedule::WindowState::Closed {
        opens_at: at(7200),
        local: "Tue 2027-01-12 03:00 UTC".into(),
    }
    .park()
    .unwrap();
    let prev = waiting("3 left", None);
    let blocked: Result<StepReport, StepError> = Ok(Outcome::blocked(park.clone()).into());
    let t = after_run(
        &prev,
        0,
        &facts(),
        4,
        blocked.clone(),
        &StepMemory::default(),
        m(5),
    );
    assert_eq!(t.status.blocking_message.as_deref(), Some(park.as_str()));
    let events: Vec<(EventKind, &str)> = t.events().map(|e| (e.kind, e.reason)).collect();
    assert_eq!(events, [(EventKind::Normal, "MaintenanceWindowClosed")]);
    // Hours later, parked all along: the same message, no Event, never a stall.
    let later = after_run(
        &t.status,
        0,
        &facts(),
        5,
        blocked,
        &StepMemory::default(),
        m(7000),
    );
    assert_eq!(later.events().count(), 0);
    assert_eq!(later.status.blocking_message, t.status.blocking_message);
    assert!(!later
        .status
        .conditions
        .iter()
        .any(|c| c.reason == "StepStalled"));
    // The window opened: the step moves on, and the Event says why.
    let moved = after_run(
        &later.status,
        0,
        &facts(),
        6,
        wait("2 left"),
        &StepMemory::default(),
        m(7201),
    );
    assert_eq!(moved.status.blocking_message, None);
    assert_eq!(
        moved.events().map(|e| e.reason).collect::<Vec<_>>(),
        ["MaintenanceWindowOpened"]
    );
}

#[test]
fn the_scheduled_renewal_is_recorded_once_and_names_the_rotation_it_starts() {
    use crate::schedule::{NoteKind, ScheduledNote};
    use trust_rotation_crds::ScheduledRenewalRecord;
    let cfg = RunnerConfig::default();
    let m = Moment {
        now: at(5),
        generation: Some(1),
        config: &cfg,
    };
    let synced = TrustAnchorRotationStatus {
        phase: Some(Phase::Synced),
        ..Default::default()
    };
    let note = |kind, triggered: bool, reason: &str| ScheduledNote {
        kind,
        record: ScheduledRenewalRecord {
            anchor: "aaaa".into(),
            triggered_at: triggered.then(|| Time(at(5))),
            reason: reason.into(),
        },
    };
    let stay = |prev: &TrustAnchorRotationStatus, n: Option<ScheduledNote>| match synced_view(
        prev, n, None, m,
    ) {
        SyncedDecision::Stay(t) => *t,
        SyncedDecision::Start(..) => panic!("no rotation starts"),
    };
    // Due outside the windows: recorded and said once.
    let waiting = stay(
        &synced,
        Some(note(NoteKind::AwaitingWindow, false, "due; waits")),
    );
    assert_eq!(
        waiting
            .events()
            .map(|e| (e.kind, e.reason))
            .collect::<Vec<_>>(),
        [(EventKind::Normal, "AnchorRenewalScheduled")]
    );
    let again = stay(
        &waiting.status,
        Some(note(NoteKind::AwaitingWindow, false, "due; waits")),
    );
    assert_eq!(again.events().count(), 0);
    // Triggered.
    let triggered = stay(
        &waiting.status,
        Some(note(NoteKind::Triggered, true, "scheduled renewal: due")),
    );
    assert!(triggered.writes());
    assert_eq!(
        triggered.events().map(|e| e.reason).collect::<Vec<_>>(),
        ["AnchorRenewalTriggered"]
    );
    // The lifetime guard is a Warning.
    let guard = stay(
        &synced,
        Some(note(NoteKind::NotScheduled, false, "too long")),
    );
    assert_eq!(
        guard.events().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Warning]
    );
    // The rotation from the renewed anchor names the schedule; one from another does not.
    let start = |from: &str| RotationStart {
        trigger: "trust anchor renewed: bbbb".into(),
        from_anchor: Some(from.into()),
        to_anchor: Some("bbbb".into()),
    };
    let SyncedDecision::Start(_, s) = synced_view(&triggered.status, None, Some(start("aaaa")), m)
    else {
        panic!("starts")
    };
    assert_eq!(
        s.trigger,
        "scheduled renewal: due; trust anchor renewed: bbbb"
    );
    let SyncedDecision::Start(_, s) = synced_view(&triggered.status, None, Some(start("cccc")), m)
    else {
        panic!("starts")
    };
    assert_eq!(s.trigger, "trust anchor renewed: bbbb");
}

fn synced_view(
    prev: &TrustAnchorRotationStatus,
    scheduled: Option<crate::schedule::ScheduledNote>,
    start: Option<RotationStart>,
    m: Moment,
) -> SyncedDecision {
    synced(
        prev,
        SyncedView {
            start,
            scheduled,
            ..Default::default()
        },
        m,
    )
}
