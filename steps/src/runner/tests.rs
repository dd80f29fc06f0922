//! Runner tests with an in-memory status store, scripted steps and a fake clock.

use super::*;
use crate::error::ErrorCategory;
use crate::step::{Step, StepReport};
use crate::workflow::{RotationStart, SyncedView, Trigger};
use async_trait::async_trait;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use trust_rotation_crds::TrustAnchorRotationSpec;
use trust_rotation_crds::{Phase, HISTORY_LIMIT};

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
    /// Reads left until someone changes the spec just before one (a new generation naming
    /// another anchor Secret).
    respec_in: Mutex<Option<usize>>,
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
    fn spec_anchor_secret(&self) -> String {
        let tar = self.tar.lock().unwrap();
        tar.as_ref().unwrap().spec.trust_anchor.secret.clone()
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
        let mut tar = self.tar.lock().unwrap();
        let mut respec_in = self.respec_in.lock().unwrap();
        if let Some(n) = respec_in.as_mut() {
            *n -= 1;
            if *n == 0 {
                *respec_in = None;
                let t = tar.as_mut().unwrap();
                t.spec.trust_anchor.secret = "renamed".into();
                t.metadata.generation = Some(2);
            }
        }
        Ok(tar.clone())
    }
    async fn apply(
        &self,
        _read: &TrustAnchorRotation,
        status: &TrustAnchorRotationStatus,
    ) -> Result<TrustAnchorRotation, StepError> {
        if *self.fail_writes.lock().unwrap() {
            return Err(StepError::transient(
                ErrorCategory::KubeConnection,
                "connection refused",
            ));
        }
        self.writes.lock().unwrap().push(status.clone());
        let mut tar = self.tar.lock().unwrap();
        let t = tar.as_mut().expect("the rotation exists");
        t.status = Some(status.clone());
        Ok(t.clone())
    }
}

#[derive(Default)]
struct FakeEvents(Mutex<Vec<EventRecord>>);

impl FakeEvents {
    fn reasons(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().iter().map(|e| e.reason).collect()
    }
    fn notes(&self, reason: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.reason == reason)
            .map(|e| e.note.clone())
            .collect()
    }
}

#[async_trait]
impl EventSink for FakeEvents {
    async fn publish(&self, _tar: &TrustAnchorRotation, event: &EventRecord) {
        self.0.lock().unwrap().push(event.clone());
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
    async fn run(&self, ctx: &StepContext) -> Result<StepReport, StepError> {
        self.log.lock().unwrap().push(self.name.clone());
        self.started.lock().unwrap().push(ctx.step_started_at);
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(Outcome::Done))
            .map(StepReport::from)
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
        scripts: HashMap<&str, Vec<Result<Outcome, StepError>>>,
        start: bool,
        config: RunnerConfig,
    ) -> Runner {
        self.build(scripts, start, config, None)
    }

    fn build(
        &self,
        mut scripts: HashMap<&str, Vec<Result<Outcome, StepError>>>,
        start: bool,
        config: RunnerConfig,
        watch: Option<Box<dyn crate::workflow::TargetWatch>>,
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
        let mut workflow = Workflow::new(Box::new(trigger), steps).unwrap();
        if let Some(w) = watch {
            workflow = workflow.with_target_watch(w);
        }
        Runner::new(
            workflow,
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
        async fn run(&self, _ctx: &StepContext) -> Result<StepReport, StepError> {
            self.0.set_paused(true); // the user pauses while this step runs
            Ok(Outcome::Done.into())
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
                ErrorCategory::KubeForbidden,
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
        .map(|_| {
            Err(StepError::transient(
                ErrorCategory::KubeConnection,
                "connection reset",
            ))
        })
        .collect();
    let config = RunnerConfig {
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(120),
        ..Default::default()
    };
    let r = h.runner_with(scripts(vec![("First", errs)]), true, config);
    let mut delays = Vec::new();
    for _ in 0..10 {
        let d = r.reconcile().await.unwrap().0;
        delays.push(d.as_secs());
        // An early wake-up (a watch event) does not run the step before its time.
        let runs = h.runs().len();
        h.tick(i64::try_from(d.as_secs()).unwrap() - 1);
        let early = r.reconcile().await.unwrap().0;
        assert!(early <= d, "{early:?} > {d:?}");
        assert_eq!(h.runs().len(), runs, "no attempt while backing off");
        h.tick(1);
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 120, 120, 120]);
    let s = h.store.status();
    assert!(
        s.blocking_message
            .is_some_and(|m| m.contains("has failed on every attempt")),
        "failures that outlast the stall timeout are shown"
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
async fn a_wait_with_nothing_moving_becomes_the_blocking_message_and_clears_on_progress() {
    let h = Harness::new();
    let stuck = || {
        Ok(Outcome::wait(
            "3 pods still carry the old bundle: kubectl -n emojivoto rollout restart deploy/web",
            Duration::from_secs(5),
        ))
    };
    let r = h.runner(
        scripts(vec![(
            "First",
            vec![
                stuck(),
                stuck(),
                stuck(),
                stuck(),
                Ok(Outcome::wait(
                    "2 pods still carry the old bundle: kubectl -n emojivoto rollout restart deploy/web",
                    Duration::from_secs(5),
                )),
            ],
        )]),
        true,
    );
    r.reconcile().await.unwrap();
    let since = h.store.status().steps[0]
        .last_progress_time
        .clone()
        .unwrap();
    h.tick(299);
    r.reconcile().await.unwrap();
    assert_eq!(
        h.store.status().blocking_message,
        None,
        "not yet: 5m default"
    );
    h.tick(2);
    r.reconcile().await.unwrap();
    let s = h.store.status();
    let message = s
        .blocking_message
        .clone()
        .expect("stalled after spec.stallTimeout");
    assert!(
        message.contains("step First has seen no progress since"),
        "{message}"
    );
    assert!(message.contains("rollout restart deploy/web"), "{message}");
    assert_eq!(
        s.steps[0].last_progress_time,
        Some(since),
        "unchanged while stuck"
    );
    assert_eq!(s.steps[0].state, StepState::Waiting, "it keeps trying");
    let blocked = s.conditions.iter().find(|c| c.type_ == "Blocked").unwrap();
    assert_eq!(
        (blocked.status.as_str(), blocked.reason.as_str()),
        ("True", "Stalled")
    );
    // Still stuck: the same message, no second Event.
    h.tick(30);
    r.reconcile().await.unwrap();
    assert_eq!(h.events.notes("Stalled").len(), 1);
    assert_eq!(h.store.status().blocking_message, Some(message));
    // One pod moves: cleared at once, and said so.
    h.tick(5);
    r.reconcile().await.unwrap();
    let s = h.store.status();
    assert_eq!(s.blocking_message, None);
    assert_eq!(h.events.reasons().last(), Some(&"Unblocked"));
}

#[tokio::test]
async fn a_wait_expected_to_last_is_not_a_stall_until_then() {
    let h = Harness::new();
    let until = Timestamp::from_second(1_800_000_000 + 3600).unwrap();
    let renewing = || {
        Ok(
            Outcome::wait("proxies renew on their own", Duration::from_secs(5))
                .expected_until(until),
        )
    };
    let r = h.runner(
        scripts(vec![("First", vec![renewing(), renewing(), renewing()])]),
        true,
    );
    r.reconcile().await.unwrap();
    h.tick(1800);
    r.reconcile().await.unwrap();
    assert_eq!(
        h.store.status().blocking_message,
        None,
        "renewal time still ahead"
    );
    h.tick(1801);
    r.reconcile().await.unwrap();
    assert!(
        h.store.status().blocking_message.is_some(),
        "past it, nothing moved"
    );
}

#[tokio::test]
async fn spec_stall_timeout_is_honoured_and_validated() {
    let h = Harness::new();
    h.store
        .tar
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .spec
        .stall_timeout = "1m".into();
    let r = h.runner(scripts(vec![("First", vec![wait(), wait()])]), true);
    r.reconcile().await.unwrap();
    h.tick(61);
    r.reconcile().await.unwrap();
    assert!(h
        .store
        .status()
        .blocking_message
        .unwrap()
        .contains("stall timeout 1m"));

    let h = Harness::new();
    h.store
        .tar
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .spec
        .stall_timeout = "10s".into();
    h.runner(HashMap::new(), true).reconcile().await.unwrap();
    let s = h.store.status();
    assert!(s.blocking_message.unwrap().contains("spec.stallTimeout"));
    assert!(h.runs().is_empty(), "an unusable spec runs nothing");
    assert_eq!(h.events.reasons(), ["InvalidSpec"]);
}

#[tokio::test]
async fn transient_failures_lasting_the_stall_timeout_are_shown() {
    let h = Harness::new();
    let fail = || {
        Err(StepError::transient(
            ErrorCategory::KubeConnection,
            "connection refused",
        ))
    };
    let r = h.runner(
        scripts(vec![("First", (0..12).map(|_| fail()).collect())]),
        true,
    );
    r.reconcile().await.unwrap();
    assert_eq!(h.store.status().blocking_message, None);
    for _ in 0..10 {
        h.tick(121);
        r.reconcile().await.unwrap();
    }
    let message = h.store.status().blocking_message.unwrap();
    assert!(
        message.contains("has failed on every attempt since"),
        "{message}"
    );
    assert!(message.contains("connection refused"), "{message}");
}

#[tokio::test]
async fn every_phase_change_is_its_own_event_for_kubes_recorder() {
    let h = Harness::new();
    let r = h.runner(HashMap::new(), true);
    r.reconcile().await.unwrap();
    let events = h.events.0.lock().unwrap().clone();
    let changes: Vec<_> = events
        .iter()
        .filter(|e| e.reason == "PhaseChanged")
        .collect();
    assert_eq!(
        changes.iter().map(|e| e.note.as_str()).collect::<Vec<_>>(),
        [
            "phase Synced → RefreshingControlPlane (step First)",
            "phase RefreshingControlPlane → PropagatingTrustRoots (step Second)",
            "phase PropagatingTrustRoots → RefreshingControlPlane (step Third)",
            "phase RefreshingControlPlane → RemovingOldTrustRoots (step Fourth)",
            "phase RemovingOldTrustRoots → Synced",
        ]
    );
    // kube's recorder keys a series on (type, reason, action): different notes must differ.
    let keys: HashSet<_> = changes
        .iter()
        .map(|e| (e.reason, e.action.clone()))
        .collect();
    assert_eq!(keys.len(), changes.len());
    assert!(changes.iter().all(|e| e.action.len() <= 128));
}

/// Moves the target to `cc` once the rotation stands at step `at`, keeping `bb`, and redoing
/// from `redo`; fails while `fail` is set.
struct FakeWatch {
    at: &'static str,
    redo: &'static str,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl crate::workflow::TargetWatch for FakeWatch {
    async fn check(
        &self,
        _c: &kube::Client,
        _s: &TrustAnchorRotationSpec,
        rotation: &RotationRecord,
        records: &[trust_rotation_crds::StepRecord],
    ) -> Result<Option<crate::workflow::Retarget>, StepError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StepError::transient(
                ErrorCategory::KubeConnection,
                "connection refused",
            ));
        }
        // Once the step `at` has run (not merely become current).
        let current = records.iter().find(|r| r.state != StepState::Done);
        if rotation.to_anchor.as_deref() == Some("cc")
            || current.is_none_or(|r| r.name != self.at || r.state == StepState::Pending)
        {
            return Ok(None);
        }
        Ok(Some(crate::workflow::Retarget {
            reason: "AnchorRenewedMidRotation",
            message: "the anchor was renewed again".into(),
            summary: "retargeted from bb to cc".into(),
            from_anchor: rotation.from_anchor.clone(),
            to_anchor: Some("cc".into()),
            superseded_anchors: vec!["bb".into()],
            redo_from: self.redo.into(),
        }))
    }
}

#[tokio::test]
async fn a_retarget_redoes_the_steps_from_where_the_workflow_says_and_finishes() {
    let h = Harness::new();
    let watch = FakeWatch {
        at: "Third",
        redo: "Second",
        fail: std::sync::atomic::AtomicBool::new(false),
    };
    // Third waits the first time; the target moves while it waits.
    let r = h.build(
        scripts(vec![("Third", vec![wait()])]),
        true,
        RunnerConfig::default(),
        Some(Box::new(watch)),
    );
    r.reconcile().await.unwrap();
    assert_eq!(h.runs(), ["First", "Second", "Third"]);
    let before = h.store.status().rotation.unwrap();
    h.tick(5);
    r.reconcile().await.unwrap();
    // Second and Third again, First not, then the rest: finished in one go.
    assert_eq!(
        h.runs(),
        ["First", "Second", "Third", "Second", "Third", "Fourth"]
    );
    let s = h.store.status();
    assert!(s.rotation.is_none(), "finished");
    let done = &s.history[0];
    assert_eq!(s.history.len(), 1, "one rotation in the history");
    assert_ne!(
        done.id, before.id,
        "the second round has its own id and trace"
    );
    assert!(
        done.trace_parent
            .as_deref()
            .is_some_and(|t| t.contains(&done.id)),
        "{:?}",
        done.trace_parent
    );
    assert_eq!(done.started_at, before.started_at);
    assert_eq!(done.to_anchor.as_deref(), Some("cc"));
    assert_eq!(done.superseded_anchors, ["bb"]);
    assert!(
        done.trigger.ends_with(&format!(
            "retargeted from bb to cc (continues rotation {})",
            before.id
        )),
        "{}",
        done.trigger
    );
    let reasons = h.events.reasons();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == "AnchorRenewedMidRotation")
            .count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(
        h.events.notes("AnchorRenewedMidRotation"),
        ["the anchor was renewed again"]
    );
    // Phases as written: back from Third's to Second's, then on.
    assert_eq!(
        h.store.phases_written(),
        [
            Phase::RefreshingControlPlane,
            Phase::PropagatingTrustRoots,
            Phase::RefreshingControlPlane,
            Phase::PropagatingTrustRoots,
            Phase::RefreshingControlPlane,
            Phase::RemovingOldTrustRoots,
            Phase::Synced
        ]
    );
    let notes = h.events.notes("PhaseChanged");
    assert!(
        notes.contains(
            &"phase RefreshingControlPlane → PropagatingTrustRoots (step Second)".to_string()
        ),
        "{notes:?}"
    );
}

#[tokio::test]
async fn a_failing_target_watch_does_not_stop_the_steps() {
    let h = Harness::new();
    let r = h.build(
        HashMap::new(),
        true,
        RunnerConfig::default(),
        Some(Box::new(FakeWatch {
            at: "Third",
            redo: "Second",
            fail: std::sync::atomic::AtomicBool::new(true),
        })),
    );
    r.reconcile().await.unwrap();
    assert_eq!(h.runs(), ["First", "Second", "Third", "Fourth"]);
    assert_eq!(h.store.status().history[0].to_anchor.as_deref(), Some("bb"));
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
        ErrorCategory::MissingResource,
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
        ErrorCategory::KubeConnection,
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
    let r = h.runner(scripts(vec![("First", waits)]), true);
    r.reconcile().await.unwrap();
    let after_first = h.store.writes.lock().unwrap().len();
    h.tick(1);
    r.reconcile().await.unwrap();
    r.reconcile().await.unwrap();
    assert_eq!(
        h.store.writes.lock().unwrap().len(),
        after_first,
        "unchanged waits are not rewritten"
    );
    assert_eq!(h.store.status().steps[0].attempts, 1);
    h.tick(30);
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

// === spans ===

mod spans {
    use super::*;
    use crate::runner::telemetry::{pinned_ids, RotationTrace, DISCARD};
    use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{
        IdGenerator, RandomIdGenerator, SdkTracerProvider, SpanData, SpanProcessor,
    };
    use tracing_subscriber::layer::SubscriberExt as _;

    /// What the operator binary installs: random ids unless the runner pins them.
    #[derive(Debug, Default)]
    struct Pinnable(RandomIdGenerator);
    impl IdGenerator for Pinnable {
        fn new_trace_id(&self) -> TraceId {
            pinned_ids().map_or_else(|| self.0.new_trace_id(), |(t, _)| t)
        }
        fn new_span_id(&self) -> SpanId {
            pinned_ids().map_or_else(|| self.0.new_span_id(), |(_, s)| s)
        }
    }

    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);
    impl SpanProcessor for Collect {
        fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn discarded(s: &SpanData) -> bool {
        s.attributes
            .iter()
            .any(|kv| kv.key.as_str() == DISCARD && kv.value == opentelemetry::Value::Bool(true))
    }

    fn attr(s: &SpanData, key: &str) -> Option<String> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    #[tokio::test]
    async fn a_rotation_is_one_tree_across_runners_and_quiet_looks_are_discarded() {
        let collect = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_id_generator(Pinnable::default())
            .with_span_processor(collect.clone())
            .build();
        // The rotation and step spans go through the global tracer; other tests' spans may
        // land here too, so only this rotation's trace is looked at.
        opentelemetry::global::set_tracer_provider(provider.clone());
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);

        let h = Harness::new();
        // Spans end when emitted (the real time): the rotation started an hour ago.
        h.clock
            .store(Timestamp::now().as_second() - 3600, Ordering::SeqCst);
        // The first process starts the rotation; First waits, then looks again (nothing
        // changed: a quiet look), then it "dies".
        let r = h.runner(scripts(vec![("First", vec![wait(), wait()])]), true);
        r.reconcile().await.unwrap();
        r.reconcile().await.unwrap();
        let rotation = h.store.status().rotation.expect("a rotation");
        // A new process finishes it, blocking once in Third.
        let r = h.runner(
            scripts(vec![("Third", vec![Ok(Outcome::blocked("fix it"))])]),
            false,
        );
        r.reconcile().await.unwrap();
        r.reconcile().await.unwrap();
        assert!(h.store.status().rotation.is_none(), "finished");

        let trace = RotationTrace::of(&rotation).expect("a traceparent");
        let spans: Vec<SpanData> = collect
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.span_context.trace_id() == trace.trace_id)
            .cloned()
            .collect();
        let named = |n: &str| -> Vec<&SpanData> { spans.iter().filter(|s| s.name == n).collect() };
        let kept = |n: &str| -> Vec<&SpanData> {
            named(n).into_iter().filter(|s| !discarded(s)).collect()
        };

        let roots = kept("rotation");
        assert_eq!(roots.len(), 1, "one root, emitted at the finish");
        let root = roots[0];
        assert_eq!(root.span_context.span_id(), trace.span_id);
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        assert_eq!(
            root.start_time,
            std::time::SystemTime::from(rotation.started_at.0),
            "from the rotation's persisted start"
        );
        for (name, _) in NAMES {
            let steps = named(&format!("step {name}"));
            assert_eq!(steps.len(), 1, "one span for step {name}");
            assert_eq!(steps[0].span_context.span_id(), trace.step_span_id(name));
            assert_eq!(steps[0].parent_span_id, trace.span_id);
            assert!(steps[0].parent_span_is_remote);
            for x in named(&format!("execute {name}")) {
                assert_eq!(
                    x.parent_span_id,
                    trace.step_span_id(name),
                    "an execution of {name} is under its step's span"
                );
                assert!(x.parent_span_is_remote, "a local root, for the exporter");
            }
        }
        let first = named("execute First");
        assert_eq!(first.len(), 3, "wait, quiet wait, done");
        assert_eq!(
            first.iter().map(|s| discarded(s)).collect::<Vec<_>>(),
            [false, true, false],
            "only the look that changed nothing is discarded"
        );
        assert_eq!(attr(first[0], "outcome").as_deref(), Some("wait"));
        assert_eq!(attr(first[2], "outcome").as_deref(), Some("done"));
        let third = named("execute Third");
        assert_eq!(attr(third[0], "outcome").as_deref(), Some("blocked"));
        assert!(
            matches!(third[0].status, opentelemetry::trace::Status::Error { .. }),
            "a blocked execution is an error span"
        );
        // Every status write is under an execution or the runner's own rotation work.
        let by_id: HashMap<SpanId, &SpanData> = spans
            .iter()
            .map(|s| (s.span_context.span_id(), s))
            .collect();
        let writes = named("apply TrustAnchorRotation/status cluster");
        assert!(writes.len() >= 8, "{}", writes.len());
        for w in writes {
            let p = by_id[&w.parent_span_id];
            assert!(
                p.name.starts_with("execute ") || p.name.ends_with(" rotation"),
                "a status write under {}",
                p.name
            );
        }
        assert_eq!(
            by_id[&named("start rotation")[0].parent_span_id].name,
            "rotation"
        );
    }
}

#[tokio::test]
async fn outside_the_windows_the_runner_looks_again_when_the_next_opens() {
    use trust_rotation_crds::{MaintenanceWindow, Weekday};
    let window = |tz: &str| MaintenanceWindow {
        weekdays: Weekday::ALL.to_vec(),
        start: "08:01".into(),
        duration: "1h".into(),
        time_zone: tz.into(),
    };
    let mut spec = TrustAnchorRotationSpec::default();
    spec.automation.schedule.maintenance_windows = vec![window("UTC")];
    let h = Harness {
        store: FakeStore::with(spec.clone()),
        ..Harness::new()
    };
    // 08:00:00 UTC: the window opens in 60 s, after the next resync anyway.
    let r = h.runner(HashMap::new(), false);
    assert_eq!(
        r.reconcile().await.unwrap(),
        Requeue(Duration::from_secs(30))
    );
    // 08:00:50: it opens in 10 s, sooner than the resync: look again then.
    h.tick(50);
    assert_eq!(
        r.reconcile().await.unwrap(),
        Requeue(Duration::from_secs(10))
    );
    // Open: the resync again.
    h.tick(20);
    assert_eq!(
        r.reconcile().await.unwrap(),
        Requeue(Duration::from_secs(30))
    );
    assert_eq!(h.store.status().blocking_message, None);

    // A zone the operator does not know: named, never read as open.
    spec.automation.schedule.maintenance_windows = vec![window("UTC"), window("Mars/Olympus")];
    let h = Harness {
        store: FakeStore::with(spec),
        ..Harness::new()
    };
    h.runner(HashMap::new(), false).reconcile().await.unwrap();
    let m = h.store.status().blocking_message.unwrap_or_default();
    assert!(
        m.starts_with("spec.automation.schedule.maintenanceWindows[1].timeZone: \"Mars/Olympus\""),
        "{m}"
    );
}

/// Records which anchor Secret each look at the target read, and after which steps.
struct SpecWatch {
    seen: Arc<Mutex<Vec<String>>>,
    log: RunLog,
}

#[async_trait]
impl crate::workflow::TargetWatch for SpecWatch {
    async fn check(
        &self,
        _c: &kube::Client,
        s: &TrustAnchorRotationSpec,
        _rotation: &RotationRecord,
        _records: &[trust_rotation_crds::StepRecord],
    ) -> Result<Option<crate::workflow::Retarget>, StepError> {
        let after = self.log.lock().unwrap().len();
        self.seen
            .lock()
            .unwrap()
            .push(format!("{} after {after}", s.trust_anchor.secret));
        Ok(None)
    }
}

#[tokio::test]
async fn the_target_is_read_with_the_re_read_spec_and_not_right_after_the_start() {
    let h = Harness::new();
    let default_secret = h.store.spec_anchor_secret();
    // The spec changes just before the re-read between First and Second (the look's first
    // read is the second).
    *h.store.respec_in.lock().unwrap() = Some(2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let r = h.build(
        HashMap::new(),
        true,
        RunnerConfig::default(),
        Some(Box::new(SpecWatch {
            seen: seen.clone(),
            log: h.log.clone(),
        })),
    );
    r.reconcile().await.unwrap();
    assert_eq!(h.runs(), ["First", "Second", "Third", "Fourth"]);
    // None before First (the look that started the rotation had just read the anchor); before
    // Second one with the spec as it was, alongside the re-read, then one with the new spec.
    assert_eq!(
        *seen.lock().unwrap(),
        [
            format!("{default_secret} after 1"),
            "renamed after 1".to_string(),
            "renamed after 2".to_string(),
            "renamed after 3".to_string(),
            "renamed after 4".to_string(),
        ]
    );
}
