//! Runner tests with an in-memory status store, scripted steps and a fake clock.

use super::*;
use crate::workflow::{SyncedView, Trigger};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use trust_rotation_crds::TrustAnchorRotationSpec;

// === fakes ===

/// A kube client that fails every request: runner tests never reach the cluster.
pub(crate) fn offline_client() -> kube::Client {
    let svc = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
        Err::<http::Response<kube::client::Body>, _>(std::io::Error::other(
            "no cluster in unit tests",
        ))
    });
    kube::Client::new(svc, "default")
}

#[derive(Default)]
struct FakeStore {
    tar: Mutex<Option<TrustAnchorRotation>>,
    writes: Mutex<Vec<TrustAnchorRotationStatus>>,
    fail_writes: Mutex<bool>,
}

impl FakeStore {
    fn with(spec: TrustAnchorRotationSpec) -> Arc<Self> {
        let mut tar = TrustAnchorRotation::new("cluster", spec);
        tar.metadata.generation = Some(1);
        Arc::new(Self {
            tar: Mutex::new(Some(tar)),
            ..Default::default()
        })
    }
    fn status(&self) -> TrustAnchorRotationStatus {
        self.tar
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .status
            .clone()
            .unwrap_or_default()
    }
    fn set_paused(&self, paused: bool) {
        self.tar.lock().unwrap().as_mut().unwrap().spec.paused = paused;
    }
    fn phases_written(&self) -> Vec<Phase> {
        let mut out: Vec<Phase> = Vec::new();
        for s in self.writes.lock().unwrap().iter() {
            if let Some(p) = s.phase {
                if out.last() != Some(&p) {
                    out.push(p);
                }
            }
        }
        out
    }
}

#[async_trait]
impl StatusStore for FakeStore {
    async fn get(&self) -> Result<Option<TrustAnchorRotation>, StepError> {
        Ok(self.tar.lock().unwrap().clone())
    }
    async fn apply(
        &self,
        _uid: Option<&str>,
        status: &TrustAnchorRotationStatus,
    ) -> Result<(), StepError> {
        if *self.fail_writes.lock().unwrap() {
            return Err(StepError::transient(
                "kube_connection",
                "connection refused",
            ));
        }
        self.writes.lock().unwrap().push(status.clone());
        if let Some(t) = self.tar.lock().unwrap().as_mut() {
            t.status = Some(status.clone());
        }
        Ok(())
    }
}

#[derive(Default)]
struct FakeEvents(Mutex<Vec<(EventKind, &'static str, String)>>);

impl FakeEvents {
    fn reasons(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().iter().map(|e| e.1).collect()
    }
}

#[async_trait]
impl EventSink for FakeEvents {
    async fn publish(
        &self,
        _tar: &TrustAnchorRotation,
        kind: EventKind,
        reason: &'static str,
        note: String,
    ) {
        self.0.lock().unwrap().push((kind, reason, note));
    }
}

/// What scripted steps did, shared by all of them: `(step name, run number)`.
type RunLog = Arc<Mutex<Vec<String>>>;

struct Scripted {
    name: String,
    phase: Phase,
    script: Mutex<VecDeque<Result<Outcome, StepError>>>,
    log: RunLog,
    started: Arc<Mutex<Vec<Timestamp>>>,
}

#[async_trait]
impl Step for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    fn phase(&self) -> Phase {
        self.phase
    }
    fn deadline(&self) -> Option<Duration> {
        Some(Duration::from_secs(600))
    }
    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        self.log.lock().unwrap().push(self.name.clone());
        self.started.lock().unwrap().push(ctx.step_started_at);
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(Outcome::Done))
    }
}

struct FakeTrigger(Mutex<Option<RotationStart>>);

struct FailingTrigger(StepError);

#[async_trait]
impl Trigger for FailingTrigger {
    async fn observe(
        &self,
        _c: &kube::Client,
        _s: &TrustAnchorRotationSpec,
        _p: Option<&dyn crate::snapshot::PodSource>,
    ) -> Result<SyncedView, StepError> {
        Err(self.0.clone())
    }
}

#[async_trait]
impl Trigger for FakeTrigger {
    async fn observe(
        &self,
        _c: &kube::Client,
        _s: &TrustAnchorRotationSpec,
        _p: Option<&dyn crate::snapshot::PodSource>,
    ) -> Result<SyncedView, StepError> {
        Ok(SyncedView {
            start: self.0.lock().unwrap().take(),
            ..Default::default()
        })
    }
}

const NAMES: [(&str, Phase); 4] = [
    ("First", Phase::RefreshingControlPlane),
    ("Second", Phase::PropagatingTrustRoots),
    ("Third", Phase::RefreshingControlPlane),
    ("Fourth", Phase::RemovingOldTrustRoots),
];

struct Harness {
    store: Arc<FakeStore>,
    events: Arc<FakeEvents>,
    log: RunLog,
    started: Arc<Mutex<Vec<Timestamp>>>,
    clock: Arc<AtomicI64>,
}

impl Harness {
    fn new() -> Self {
        Self {
            store: FakeStore::with(TrustAnchorRotationSpec::default()),
            events: Arc::default(),
            log: Arc::default(),
            started: Arc::default(),
            clock: Arc::new(AtomicI64::new(1_800_000_000)),
        }
    }

    /// A fresh runner (as after an operator restart) whose steps follow `scripts`.
    fn runner(
        &self,
        scripts: HashMap<&str, Vec<Result<Outcome, StepError>>>,
        start: bool,
    ) -> Runner {
        self.runner_with(scripts, start, RunnerConfig::default())
    }

    fn runner_with(
        &self,
        mut scripts: HashMap<&str, Vec<Result<Outcome, StepError>>>,
        start: bool,
        config: RunnerConfig,
    ) -> Runner {
        let steps: Vec<Box<dyn Step>> = NAMES
            .iter()
            .map(|(n, p)| {
                Box::new(Scripted {
                    name: n.to_string(),
                    phase: *p,
                    script: Mutex::new(scripts.remove(n).unwrap_or_default().into()),
                    log: self.log.clone(),
                    started: self.started.clone(),
                }) as Box<dyn Step>
            })
            .collect();
        let trigger = FakeTrigger(Mutex::new(start.then(|| RotationStart {
            trigger: "trust anchor renewed".into(),
            from_anchor: Some("aa".into()),
            to_anchor: Some("bb".into()),
        })));
        let clock = self.clock.clone();
        Runner::new(
            Workflow::new(Box::new(trigger), steps).unwrap(),
            self.store.clone(),
            self.events.clone(),
            offline_client(),
            config,
        )
        .with_clock(Arc::new(move || {
            Timestamp::from_second(clock.load(Ordering::SeqCst)).unwrap()
        }))
    }

    fn tick(&self, secs: i64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }

    fn runs(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn wait() -> Result<Outcome, StepError> {
    Ok(Outcome::wait("pods not ready", Duration::from_secs(5)))
}

fn scripts(
    pairs: Vec<(&'static str, Vec<Result<Outcome, StepError>>)>,
) -> HashMap<&'static str, Vec<Result<Outcome, StepError>>> {
    pairs.into_iter().collect()
}

// === tests ===

#[tokio::test]
async fn synced_without_trigger_writes_ready_once() {
    let h = Harness::new();
    let r = h.runner(HashMap::new(), false);
    assert_eq!(
        r.reconcile().await.unwrap(),
        Requeue(Duration::from_secs(30))
    );
    assert_eq!(
        r.reconcile().await.unwrap(),
        Requeue(Duration::from_secs(30))
    );
    let s = h.store.status();
    assert_eq!(s.phase, Some(Phase::Synced));
    assert!(s
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"));
    assert_eq!(
        h.store.writes.lock().unwrap().len(),
        1,
        "an unchanged status is not rewritten"
    );
    assert!(h.runs().is_empty());
}

#[tokio::test]
async fn full_rotation_walks_every_step_once_and_records_history() {
    let h = Harness::new();
    let r = h.runner(HashMap::new(), true);
    r.reconcile().await.unwrap();
    assert_eq!(h.runs(), ["First", "Second", "Third", "Fourth"]);
    let s = h.store.status();
    assert_eq!(s.phase, Some(Phase::Synced));
    assert!(s.rotation.is_none());
    assert!(s.steps.is_empty());
    assert_eq!(s.history.len(), 1);
    assert_eq!(s.history[0].trigger, "trust anchor renewed");
    assert!(s.history[0].finished_at.is_some());
    let tp = s.history[0].trace_parent.clone().unwrap();
    assert!(tp.starts_with(&format!("00-{}-", s.history[0].id)), "{tp}");
    assert_eq!(
        h.store.phases_written(),
        [
            Phase::RefreshingControlPlane,
            Phase::PropagatingTrustRoots,
            Phase::RefreshingControlPlane,
            Phase::RemovingOldTrustRoots,
            Phase::Synced
        ]
    );
    let reasons = h.events.reasons();
    assert_eq!(
        reasons.iter().filter(|r| **r == "PhaseChanged").count(),
        5,
        "{reasons:?}"
    );
    assert!(reasons.contains(&"RotationStarted") && reasons.contains(&"RotationComplete"));
    // Nothing more to do.
    r.reconcile().await.unwrap();
    assert_eq!(h.runs().len(), 4);
}

#[tokio::test]
async fn status_is_written_before_a_step_first_runs() {
    let h = Harness::new();
    let r = h.runner(scripts(vec![("First", vec![wait()])]), true);
    r.reconcile().await.unwrap();
    let writes = h.store.writes.lock().unwrap().clone();
    // rotation started, First started (Waiting, attempts 0), First waited.
    let started = writes
        .iter()
        .find(|s| {
            s.steps
                .first()
                .is_some_and(|r| r.state == StepState::Waiting && r.attempts == 0)
        })
        .expect("a write persisting the step's start before it ran");
    assert!(started.steps[0].started_at.is_some());
    let last = writes.last().unwrap();
    assert_eq!(last.steps[0].message.as_deref(), Some("pods not ready"));
    assert_eq!(last.steps[0].attempts, 1);
    assert_eq!(last.current_step.as_deref(), Some("First"));
}

#[tokio::test]
async fn resumes_from_each_step_without_rerunning_finished_ones() {
    for (stop_at, _) in NAMES {
        let h = Harness::new();
        // The first operator process gets as far as `stop_at`, which waits.
        let r1 = h.runner(scripts(vec![(stop_at, vec![wait()])]), true);
        r1.reconcile().await.unwrap();
        let before = h.runs();
        assert_eq!(before.last().map(String::as_str), Some(stop_at));
        let first_start = *h.started.lock().unwrap().last().unwrap();
        drop(r1);
        h.tick(120);
        // A new process (no memory) continues from the same step with the same start time.
        let r2 = h.runner(HashMap::new(), false);
        r2.reconcile().await.unwrap();
        let runs = h.runs();
        let after: Vec<&str> = runs[before.len()..].iter().map(String::as_str).collect();
        let expected: Vec<&str> = NAMES
            .iter()
            .map(|n| n.0)
            .skip_while(|n| *n != stop_at)
            .collect();
        assert_eq!(after, expected, "resume from {stop_at}");
        assert_eq!(
            h.started.lock().unwrap()[before.len()],
            first_start,
            "persisted start time of {stop_at}"
        );
        let s = h.store.status();
        assert_eq!(s.phase, Some(Phase::Synced));
        assert_eq!(s.history.len(), 1);
    }
}

#[tokio::test]
async fn same_step_type_twice_is_tracked_by_name() {
    let h = Harness::new();
    // First and Third share a phase; Third waits: the status must say Third, not First.
    let r = h.runner(scripts(vec![("Third", vec![wait()])]), true);
    r.reconcile().await.unwrap();
    let s = h.store.status();
    assert_eq!(s.current_step.as_deref(), Some("Third"));
    assert_eq!(s.steps[0].state, StepState::Done);
    assert_eq!(s.steps[2].state, StepState::Waiting);
}

#[tokio::test]
async fn pause_stops_before_the_next_write_and_resumes_in_place() {
    let h = Harness::new();
    let r = h.runner(scripts(vec![("Second", vec![wait()])]), true);
    r.reconcile().await.unwrap();
    assert_eq!(h.runs(), ["First", "Second"]);
    h.store.set_paused(true);
    let writes_before = h.store.writes.lock().unwrap().len();
    r.reconcile().await.unwrap();
    r.reconcile().await.unwrap();
    assert_eq!(h.runs(), ["First", "Second"], "no step runs while paused");
    let writes = h.store.writes.lock().unwrap().clone();
    assert_eq!(
        writes.len(),
        writes_before + 1,
        "only the Paused acknowledgement is written, once"
    );
    assert!(writes
        .last()
        .unwrap()
        .conditions
        .iter()
        .any(|c| c.reason == "Paused"));
    assert_eq!(h.store.status().current_step.as_deref(), Some("Second"));
    h.store.set_paused(false);
    r.reconcile().await.unwrap();
    assert_eq!(h.runs(), ["First", "Second", "Second", "Third", "Fourth"]);
    assert!(h.events.reasons().contains(&"Paused"));
}

#[tokio::test]
async fn pause_set_between_steps_is_honoured() {
    let h = Harness::new();
    struct PausingStep(Arc<FakeStore>);
    #[async_trait]
    impl Step for PausingStep {
        fn name(&self) -> &str {
            "Pauser"
        }
        fn phase(&self) -> Phase {
            Phase::RefreshingControlPlane
        }
        async fn run(&self, _ctx: &StepContext) -> Result<Outcome, StepError> {
            self.0.set_paused(true); // the user pauses while this step runs
            Ok(Outcome::Done)
        }
    }
    let log = h.log.clone();
    let next = Scripted {
        name: "Next".into(),
        phase: Phase::PropagatingTrustRoots,
        script: Mutex::default(),
        log,
        started: h.started.clone(),
    };
    let trigger = FakeTrigger(Mutex::new(Some(RotationStart {
        trigger: "t".into(),
        from_anchor: None,
        to_anchor: None,
    })));
    let r = Runner::new(
        Workflow::new(
            Box::new(trigger),
            vec![Box::new(PausingStep(h.store.clone())), Box::new(next)],
        )
        .unwrap(),
        h.store.clone(),
        h.events.clone(),
        offline_client(),
        RunnerConfig::default(),
    );
    r.reconcile().await.unwrap();
    assert!(h.runs().is_empty(), "Next must not run once paused");
    let s = h.store.status();
    assert_eq!(s.steps[0].state, StepState::Done);
    assert_eq!(s.steps[1].state, StepState::Pending);
}

#[tokio::test]
async fn blocked_then_recovers_by_itself() {
    let h = Harness::new();
    let r = h.runner(
        scripts(vec![(
            "Second",
            vec![
                Ok(Outcome::blocked("pod web-1 is stuck: delete it")),
                Ok(Outcome::blocked("pod web-1 is stuck: delete it")),
                Ok(Outcome::Done),
            ],
        )]),
        true,
    );
    let requeue = r.reconcile().await.unwrap();
    assert!(
        requeue.0 <= Duration::from_secs(10),
        "blocked steps are re-checked soon: {requeue:?}"
    );
    let s = h.store.status();
    assert_eq!(
        s.blocking_message.as_deref(),
        Some("pod web-1 is stuck: delete it")
    );
    assert_eq!(s.steps[1].state, StepState::Blocked);
    assert!(s
        .conditions
        .iter()
        .any(|c| c.type_ == "Blocked" && c.status == "True"));
    r.reconcile().await.unwrap();
    assert_eq!(
        h.events
            .reasons()
            .iter()
            .filter(|r| **r == "Blocked")
            .count(),
        1,
        "the same block is announced once"
    );
    r.reconcile().await.unwrap();
    let s = h.store.status();
    assert_eq!(s.phase, Some(Phase::Synced));
    assert!(s.blocking_message.is_none());
    assert!(s
        .conditions
        .iter()
        .any(|c| c.type_ == "Blocked" && c.status == "False"));
    assert!(h.events.reasons().contains(&"Unblocked"));
}

#[tokio::test]
async fn permanent_error_parks_with_a_message_and_resumes() {
    let h = Harness::new();
    let r = h.runner(
        scripts(vec![(
            "First",
            vec![Err(StepError::permanent(
                "kube_forbidden",
                "cannot patch deployments in linkerd: forbidden",
            ))],
        )]),
        true,
    );
    r.reconcile().await.unwrap();
    let s = h.store.status();
    let msg = s.blocking_message.unwrap();
    assert!(
        msg.contains("forbidden") && msg.contains("kube_forbidden"),
        "{msg}"
    );
    r.reconcile().await.unwrap();
    assert_eq!(h.store.status().phase, Some(Phase::Synced));
}

#[tokio::test]
async fn transient_errors_back_off_exponentially_with_a_cap() {
    let h = Harness::new();
    let errs: Vec<_> = (0..10)
        .map(|_| Err(StepError::transient("kube_connection", "connection reset")))
        .collect();
    // Milliseconds instead of seconds so the test can wait them out.
    let config = RunnerConfig {
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(120),
        ..Default::default()
    };
    let r = h.runner_with(scripts(vec![("First", errs)]), true, config);
    let mut delays = Vec::new();
    for _ in 0..10 {
        let d = r.reconcile().await.unwrap().0;
        delays.push(d.as_millis());
        // An early wake-up (a watch event) does not run the step before its time.
        let runs = h.runs().len();
        let early = r.reconcile().await.unwrap().0;
        assert!(early <= d, "{early:?} > {d:?}");
        assert_eq!(h.runs().len(), runs, "no attempt while backing off");
        tokio::time::sleep(d + Duration::from_millis(1)).await;
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
    let s = h.store.status();
    assert!(
        s.blocking_message.is_none(),
        "transient errors do not block"
    );
    assert!(s.steps[0]
        .message
        .as_deref()
        .unwrap()
        .contains("connection reset"));
    // Success resets the backoff.
    r.reconcile().await.unwrap();
    assert_eq!(h.store.status().phase, Some(Phase::Synced));
}

#[test]
fn backoff_doubles_and_caps() {
    let c = RunnerConfig::default();
    let secs: Vec<u64> = (1..=10).map(|n| c.backoff(n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
}

#[tokio::test]
async fn status_write_failures_surface_and_nothing_is_skipped() {
    let h = Harness::new();
    let r = h.runner(HashMap::new(), true);
    *h.store.fail_writes.lock().unwrap() = true;
    assert!(r.reconcile().await.is_err());
    assert!(
        h.runs().is_empty(),
        "no step runs before its start is persisted"
    );
    *h.store.fail_writes.lock().unwrap() = false;
    // The trigger fired once already (it is consumed): a fresh runner sees no rotation
    // recorded, so the real trigger (which re-reads the world) would start it again.
    assert!(h.store.status().rotation.is_none());
}

#[tokio::test]
async fn history_is_bounded() {
    let h = Harness::new();
    for _ in 0..(HISTORY_LIMIT + 2) {
        let r = h.runner(HashMap::new(), true);
        r.reconcile().await.unwrap();
        h.tick(10);
    }
    let s = h.store.status();
    assert_eq!(s.history.len(), HISTORY_LIMIT);
    assert!(
        s.history[0].started_at.0 > s.history[1].started_at.0,
        "newest first"
    );
}

#[tokio::test]
async fn stalled_step_is_reported_once() {
    let h = Harness::new();
    let r = h.runner(scripts(vec![("First", vec![wait(), wait(), wait()])]), true);
    r.reconcile().await.unwrap();
    h.tick(601);
    r.reconcile().await.unwrap();
    r.reconcile().await.unwrap();
    assert_eq!(
        h.events
            .reasons()
            .iter()
            .filter(|r| **r == "StepStalled")
            .count(),
        1
    );
    let s = h.store.status();
    let progressing = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.reason, "StepStalled");
    assert!(
        progressing
            .message
            .contains("longer than its 600s deadline"),
        "{}",
        progressing.message
    );
}

#[test]
fn workflow_rejects_duplicate_names() {
    let mk = |n: &str| {
        Box::new(Scripted {
            name: n.into(),
            phase: Phase::Synced,
            script: Mutex::default(),
            log: Arc::default(),
            started: Arc::default(),
        }) as Box<dyn Step>
    };
    let t = || Box::new(FakeTrigger(Mutex::new(None))) as Box<dyn Trigger>;
    assert!(matches!(
        Workflow::new(t(), vec![mk("A"), mk("A")]),
        Err(crate::workflow::WorkflowError::DuplicateName(n)) if n == "A"
    ));
    assert!(Workflow::new(t(), vec![]).is_err());
}

#[test]
fn traceparent_round_trips() {
    let ctx = telemetry::parent_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .unwrap();
    use opentelemetry::trace::TraceContextExt;
    assert_eq!(
        ctx.span().span_context().trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(telemetry::parent_context("garbage").is_none());
    assert!(
        telemetry::parent_context("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
            .is_none()
    );
}

#[tokio::test]
async fn synced_permanent_errors_are_shown_transient_ones_retried() {
    let h = Harness::new();
    let mk = |e: StepError| {
        let step = Box::new(Scripted {
            name: "Only".into(),
            phase: Phase::RefreshingControlPlane,
            script: Mutex::default(),
            log: Arc::default(),
            started: Arc::default(),
        }) as Box<dyn Step>;
        Runner::new(
            Workflow::new(Box::new(FailingTrigger(e)), vec![step]).unwrap(),
            h.store.clone(),
            h.events.clone(),
            offline_client(),
            RunnerConfig::default(),
        )
    };
    let r = mk(StepError::permanent(
        "missing_anchor",
        "the trust-anchor Secret cert-manager/linkerd-trust-anchor does not exist",
    ));
    r.reconcile().await.unwrap();
    let s = h.store.status();
    assert!(s
        .blocking_message
        .unwrap()
        .contains("linkerd-trust-anchor does not exist"));
    assert!(s
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "False"));
    assert!(h.events.reasons().contains(&"Blocked"));
    let r = mk(StepError::transient(
        "kube_connection",
        "connection refused",
    ));
    assert!(
        r.reconcile().await.is_err(),
        "transient errors are retried by the caller"
    );
}

#[tokio::test]
async fn a_restarted_operator_publishes_metrics_without_writing() {
    use prometheus_client::encoding::text::encode;
    let h = Harness::new();
    h.runner(HashMap::new(), false).reconcile().await.unwrap();
    let writes = h.store.writes.lock().unwrap().len();
    // A new process with fresh metrics, nothing to change in the status.
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = crate::metrics::Metrics::register(&mut registry);
    let r = h.runner(HashMap::new(), false).with_metrics(metrics);
    r.reconcile().await.unwrap();
    assert_eq!(h.store.writes.lock().unwrap().len(), writes, "no write");
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("trust_rotation_phase{phase=\"Synced\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn unchanged_waits_are_written_once_per_resync_with_exact_attempts() {
    let h = Harness::new();
    let waits: Vec<_> = (0..6).map(|_| wait()).collect();
    let config = RunnerConfig {
        resync: Duration::from_millis(300),
        ..Default::default()
    };
    let r = h.runner_with(scripts(vec![("First", waits)]), true, config);
    r.reconcile().await.unwrap();
    let after_first = h.store.writes.lock().unwrap().len();
    r.reconcile().await.unwrap();
    r.reconcile().await.unwrap();
    assert_eq!(
        h.store.writes.lock().unwrap().len(),
        after_first,
        "unchanged waits are not rewritten"
    );
    assert_eq!(h.store.status().steps[0].attempts, 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    r.reconcile().await.unwrap();
    assert_eq!(
        h.store.writes.lock().unwrap().len(),
        after_first + 1,
        "rewritten once the resync interval passed"
    );
    assert_eq!(
        h.store.status().steps[0].attempts,
        4,
        "every execution counted"
    );
    r.reconcile().await.unwrap();
    // Done: written, with the uncounted execution included.
    r.reconcile().await.unwrap();
    r.reconcile().await.unwrap();
    let s = h.store.status();
    assert_eq!(s.phase, Some(Phase::Synced));
    let rec = &h
        .store
        .writes
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|w| !w.steps.is_empty())
        .cloned()
        .unwrap()
        .steps[0];
    assert_eq!(rec.attempts, 7, "6 waits and the run that finished");
}
