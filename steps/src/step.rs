//! The `Step` trait: one pluggable unit of a workflow, and what it may tell the runner.
//!
//! A step re-checks the world every time it runs (so running it twice is harmless), makes at
//! most a few idempotent writes, and answers with an [`Outcome`]. It never writes the
//! TrustAnchorRotation status, never records metrics or Events, never opens spans: the
//! [`runner`](crate::runner) does all of that. What a step wants the status to show (counts,
//! certificate summaries, the refresh interval) it hands over through
//! [`StepContext::report`].

use async_trait::async_trait;
use jiff::Timestamp;
use std::sync::Mutex;
use std::time::Duration;
use trust_rotation_crds::{
    CertificateSummary, Convergence, Phase, RotationRecord, StepRecord, TrustAnchorRotationSpec,
};

/// How a step's single execution ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The step has finished; the runner moves on and never runs it again in this rotation.
    Done,
    /// The cluster has not converged yet: look again after `retry_after`.
    Wait {
        reason: String,
        retry_after: Duration,
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
    category: &'static str,
    class: ErrorClass,
    message: String,
}

impl StepError {
    pub fn transient(category: &'static str, message: impl Into<String>) -> Self {
        Self {
            category,
            class: ErrorClass::Transient,
            message: message.into(),
        }
    }

    pub fn permanent(category: &'static str, message: impl Into<String>) -> Self {
        Self {
            category,
            class: ErrorClass::Permanent,
            message: message.into(),
        }
    }

    /// Classifies a Kubernetes API error: server-side and connection problems are transient;
    /// 4xx answers (other than conflicts, throttling and timeouts) are permanent.
    pub fn from_kube(what: impl std::fmt::Display, err: kube::Error) -> Self {
        let message = format!("{what}: {err}");
        match &err {
            kube::Error::Api(status) => match status.code {
                409 | 429 | 408 | 500..=599 => Self::transient("kube_api", message),
                401 | 403 => Self::permanent("kube_forbidden", message),
                404 => Self::permanent("kube_not_found", message),
                422 | 400 => Self::permanent("kube_invalid", message),
                _ => Self::permanent("kube_api", message),
            },
            _ => Self::transient("kube_connection", message),
        }
    }

    /// A static label for metrics (`category="..."`).
    pub fn category(&self) -> &'static str {
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
            refresh_interval
        );
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
    progress: Mutex<Progress>,
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
            progress: Mutex::new(Progress::default()),
        }
    }

    /// Reads meshed pods from `pods` instead of listing them.
    pub fn with_pods(
        mut self,
        pods: Option<std::sync::Arc<dyn crate::snapshot::PodSource>>,
    ) -> Self {
        self.pods = pods;
        self
    }

    /// Hands what the status should show to the runner.
    pub fn report(&self, progress: Progress) {
        if let Ok(mut p) = self.progress.lock() {
            p.merge(progress);
        }
    }

    /// Everything reported during this execution.
    pub fn take_progress(&self) -> Progress {
        self.progress
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
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

    /// How long the step may stay unfinished before the runner reports it as stalled
    /// (it keeps trying). `None` when waiting on people is expected to take long.
    fn deadline(&self) -> Option<Duration> {
        Some(Duration::from_secs(15 * 60))
    }

    /// Re-checks the world, makes the step's idempotent writes, and says where it stands.
    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError>;
}
