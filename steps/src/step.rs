//! The `Step` trait: one pluggable unit of a workflow, and what it may tell the runner.
//!
//! A step re-checks the world every time it runs (so running it twice is harmless), makes at
//! most a few idempotent writes, and answers with an [`Outcome`]. It never writes the
//! TrustAnchorRotation status, never records metrics or Events: the
//! [`runner`](crate::runner) does all of that, and opens the span of each execution, under
//! which the step's API writes and probe sweeps are spans. What a step wants the status to
//! show (counts, certificate summaries, the refresh interval) it returns with its outcome, as
//! a [`StepReport`].

pub use crate::error::ErrorCategory;
use async_trait::async_trait;
use jiff::Timestamp;
use std::time::Duration;
use trust_rotation_crds::{
    ApprovalRecord, CertificateSummary, Convergence, IssuerRenewalRecord, Phase, RotationRecord,
    StepRecord, TrustAnchorRotationSpec, WorkloadRestartRecord,
};

/// How a step's single execution ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The step has finished; the runner moves on and never runs it again in this rotation.
    Done,
    /// The cluster has not converged yet: look again after `retry_after`.
    ///
    /// `reason` is written for a person: what the step waits for, who is left (grouped by
    /// workload) and the command that moves it on. If nothing moves for the stall timeout it
    /// becomes the rotation's `blockingMessage`, unless `patience` says the wait is expected
    /// to last until then (proxies that answer and will renew on their own by that time).
    Wait {
        reason: String,
        retry_after: Duration,
        patience: Option<Timestamp>,
    },
    /// A human must act; `message` says what happened and how to fix it. The runner looks
    /// again periodically and continues on its own once the cause is gone.
    Blocked { message: String },
}

impl Outcome {
    pub fn wait(reason: impl Into<String>, retry_after: Duration) -> Self {
        Outcome::Wait {
            reason: reason.into(),
            retry_after,
            patience: None,
        }
    }

    /// A wait that is not a stall before `until` (it may still end sooner).
    pub fn expected_until(self, until: Timestamp) -> Self {
        match self {
            Outcome::Wait {
                reason,
                retry_after,
                patience,
            } => Outcome::Wait {
                reason,
                retry_after,
                patience: Some(patience.map_or(until, |p| p.max(until))),
            },
            other => other,
        }
    }

    /// This outcome together with what the status should show.
    pub fn with(self, progress: Progress) -> StepReport {
        StepReport {
            outcome: self,
            progress,
            warnings: Vec::new(),
            notices: Vec::new(),
        }
    }

    pub fn blocked(message: impl Into<String>) -> Self {
        Outcome::Blocked {
            message: message.into(),
        }
    }

    /// A static label for metrics and spans.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Wait { .. } => "wait",
            Outcome::Blocked { .. } => "blocked",
        }
    }
}

/// What one execution of a step returns when it did not fail: where it stands, and what the
/// rotation's status (and metrics) should show.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    pub outcome: Outcome,
    pub progress: Progress,
    /// Something the step did that a person should hear about even though the rotation goes
    /// on (for example a trust bundle restored after someone else rewrote it): the runner
    /// publishes each as a Warning Event on the TrustAnchorRotation.
    pub warnings: Vec<StepWarning>,
    /// Something the operator did by itself or on a person's approval (it triggered a
    /// certificate's re-issuance, consumed an approval): published as Normal Events.
    pub notices: Vec<StepWarning>,
}

impl StepReport {
    /// This report with a Warning Event to publish.
    pub fn warn(mut self, reason: &'static str, note: impl Into<String>) -> Self {
        self.warnings.push(StepWarning {
            reason,
            note: note.into(),
        });
        self
    }

    /// This report with a Normal Event to publish.
    pub fn notice(mut self, reason: &'static str, note: impl Into<String>) -> Self {
        self.notices.push(StepWarning {
            reason,
            note: note.into(),
        });
        self
    }
}

/// A Warning Event a step asks the runner to publish (`reason` is CamelCase, stable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepWarning {
    pub reason: &'static str,
    pub note: String,
}

impl From<Outcome> for StepReport {
    fn from(outcome: Outcome) -> Self {
        outcome.with(Progress::default())
    }
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The API server or a pod was briefly unavailable: retry with backoff.
    Transient,
    /// Retrying the same thing will fail the same way until someone changes the cluster.
    Permanent,
}

/// Why a step's execution failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct StepError {
    category: ErrorCategory,
    class: ErrorClass,
    message: String,
}

impl StepError {
    pub fn transient(category: ErrorCategory, message: impl Into<String>) -> Self {
        Self {
            category,
            class: ErrorClass::Transient,
            message: message.into(),
        }
    }

    pub fn permanent(category: ErrorCategory, message: impl Into<String>) -> Self {
        Self {
            category,
            class: ErrorClass::Permanent,
            message: message.into(),
        }
    }

    /// A Kubernetes API error while doing `what`, classified by [`ErrorCategory::of_kube`]
    /// (the one classifier): transient when retrying may succeed by itself.
    pub fn from_kube(what: impl std::fmt::Display, err: kube::Error) -> Self {
        let category = ErrorCategory::of_kube(&err);
        let message = format!("{what}: {err}");
        if category.is_transient() {
            Self::transient(category, message)
        } else {
            Self::permanent(category, message)
        }
    }

    /// A static label for metrics (`category="..."`): [`ErrorCategory::label`].
    pub fn category(&self) -> &'static str {
        self.category.label()
    }

    /// The category itself.
    pub fn error_category(&self) -> ErrorCategory {
        self.category
    }

    pub fn class(&self) -> ErrorClass {
        self.class
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<crate::read::ReadError> for StepError {
    /// A missing or invalid object needs a person (permanent); an API failure is classified
    /// like any other Kubernetes error.
    fn from(e: crate::read::ReadError) -> Self {
        let category = e.category();
        let message = e.to_string();
        if e.is_transient() {
            Self::transient(category, message)
        } else {
            Self::permanent(category, message)
        }
    }
}

impl From<crate::observe::ObserveError> for StepError {
    fn from(e: crate::observe::ObserveError) -> Self {
        let category = e.category();
        let message = e.to_string();
        if category.is_transient() {
            Self::transient(category, message)
        } else {
            Self::permanent(category, message)
        }
    }
}

/// What a step wants the rotation's status (and metrics) to show. `None` leaves a field as it
/// is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub trust_bundle: Option<Convergence>,
    pub workload_certificates: Option<Convergence>,
    pub active_anchor: Option<CertificateSummary>,
    pub active_issuer: Option<CertificateSummary>,
    pub previous_anchor: Option<CertificateSummary>,
    /// `Some(Some(v))` publishes an interval, `Some(None)` clears it.
    pub refresh_interval: Option<Option<String>>,
    /// Roots in the bundle that are neither the anchor nor one a rotation replaces.
    pub foreign_roots: Option<Vec<CertificateSummary>>,
    /// Approvals this execution consumed (recorded in `status.rotation.approvals`).
    pub approvals: Vec<ApprovalRecord>,
    /// The operator triggered the identity issuer's re-issuance
    /// (`status.rotation.issuerRenewal`).
    pub issuer_renewal: Option<IssuerRenewalRecord>,
    /// Every automatic workload restart record of one step (`status.workloadRestarts`): the
    /// step's name and its records, which replace that step's records in the status.
    pub workload_restarts: Option<(String, Vec<WorkloadRestartRecord>)>,
}

impl Progress {
    /// Later reports win field by field.
    pub fn merge(&mut self, other: Progress) {
        macro_rules! take {
            ($($f:ident),*) => {$( if other.$f.is_some() { self.$f = other.$f; } )*};
        }
        take!(
            trust_bundle,
            workload_certificates,
            active_anchor,
            active_issuer,
            previous_anchor,
            refresh_interval,
            foreign_roots,
            issuer_renewal,
            workload_restarts
        );
        self.approvals.extend(other.approvals);
    }
}

/// How pods' proxies are probed (settings of the operator, not of the rotation).
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub mode: crate::probe::ProbeMode,
    pub concurrency: usize,
    pub timeout: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            mode: crate::probe::ProbeMode::Direct,
            concurrency: 50,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Everything a step may look at while it runs.
pub struct StepContext {
    pub client: kube::Client,
    /// Name of the TrustAnchorRotation.
    pub name: String,
    pub spec: TrustAnchorRotationSpec,
    /// The rotation in progress.
    pub rotation: RotationRecord,
    /// The records of every step of the workflow as persisted before this execution.
    pub records: Vec<StepRecord>,
    /// When this step first started (persisted, so identical across operator restarts).
    pub step_started_at: Timestamp,
    /// When this execution started.
    pub now: Timestamp,
    pub probe: ProbeSettings,
    /// The operator's pod cache, when it has one.
    pub pods: Option<std::sync::Arc<dyn crate::snapshot::PodSource>>,
    /// The TrustAnchorRotation's approval annotation and who wrote it, as read for this
    /// execution (see [`crate::rotation::approval`]).
    pub approval: crate::rotation::approval::Annotation,
    /// `status.workloadRestarts` as persisted before this execution.
    pub workload_restarts: Vec<WorkloadRestartRecord>,
    /// The TrustAnchorRotation's `trust.linkerd.io/skip` annotation (`linkerd trust skip`).
    pub skip_annotation: Option<String>,
    /// Where `spec.automation.schedule.maintenanceWindows` stand now: a step holds back its
    /// disruptive actions while they are closed ([`crate::schedule::WindowState::park`]).
    pub window: crate::schedule::WindowState,
}

impl StepContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        name: String,
        spec: TrustAnchorRotationSpec,
        rotation: RotationRecord,
        records: Vec<StepRecord>,
        step_started_at: Timestamp,
        now: Timestamp,
        probe: ProbeSettings,
    ) -> Self {
        Self {
            client,
            name,
            spec,
            rotation,
            records,
            step_started_at,
            now,
            probe,
            pods: None,
            approval: Default::default(),
            workload_restarts: Vec::new(),
            skip_annotation: None,
            window: crate::schedule::WindowState::Always,
        }
    }

    /// With the maintenance windows' state at this execution.
    pub fn with_window(mut self, window: crate::schedule::WindowState) -> Self {
        self.window = window;
        self
    }

    /// With the automatic workload restarts recorded so far and the skip annotation.
    pub fn with_workload_restarts(
        mut self,
        records: Vec<WorkloadRestartRecord>,
        skip_annotation: Option<String>,
    ) -> Self {
        self.workload_restarts = records;
        self.skip_annotation = skip_annotation;
        self
    }

    /// With the approval annotation read from the TrustAnchorRotation.
    pub fn with_approval(mut self, approval: crate::rotation::approval::Annotation) -> Self {
        self.approval = approval;
        self
    }

    /// Reads meshed pods from `pods` instead of listing them.
    pub fn with_pods(
        mut self,
        pods: Option<std::sync::Arc<dyn crate::snapshot::PodSource>>,
    ) -> Self {
        self.pods = pods;
        self
    }

    /// When the step named `name` finished in this rotation, if it has.
    pub fn finished_at(&self, name: &str) -> Option<Timestamp> {
        self.records
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.finished_at.as_ref())
            .map(|t| t.0)
    }

    /// The probe configuration for this rotation's mesh.
    pub fn probe_config(&self) -> crate::probe::ProbeConfig {
        crate::probe::ProbeConfig {
            mode: self.probe.mode,
            concurrency: self.probe.concurrency,
            timeout: self.probe.timeout,
            trust_domain: self.spec.trust_domain.clone(),
            linkerd_ns: self.spec.control_plane.namespace.clone(),
        }
    }
}

/// One pluggable unit of a workflow.
#[async_trait]
pub trait Step: Send + Sync {
    /// Stable name, unique within the workflow; it becomes the status entry, so it must never
    /// change between releases.
    fn name(&self) -> &str;

    /// The phase the rotation reports while this step runs.
    fn phase(&self) -> Phase;

    /// The longest a single execution may take before the runner abandons it and retries.
    fn timeout(&self) -> Duration {
        Duration::from_secs(60)
    }

    /// How long the step may wait with nothing moving (no count, no observed state, no
    /// message changed) before the runner turns its wait into the rotation's
    /// `blockingMessage` (it keeps trying). `spec_timeout` is `spec.stallTimeout`; a step that
    /// is expected to take longer says so here, or per wait with [`Outcome::expected_until`].
    fn stall_timeout(&self, spec_timeout: Duration) -> Duration {
        spec_timeout
    }

    /// Re-checks the world, makes the step's idempotent writes, and says where it stands.
    async fn run(&self, ctx: &StepContext) -> Result<StepReport, StepError>;
}
