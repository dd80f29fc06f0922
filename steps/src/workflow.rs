//! A workflow: what starts a rotation, and the ordered steps that carry it out.

use crate::step::{Progress, Step, StepError};
use async_trait::async_trait;
use std::collections::HashSet;
use trust_rotation_crds::{RotationRecord, StepRecord, TrustAnchorRotationSpec};

/// Why a rotation starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationStart {
    /// For people, e.g. `trust anchor renewed (fingerprint 3f2a…)`.
    pub trigger: String,
    pub from_anchor: Option<String>,
    pub to_anchor: Option<String>,
}

/// What the trigger saw while no rotation is in progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncedView {
    /// Certificate summaries and counts for the status.
    pub progress: Progress,
    /// `Some` when a rotation must start now.
    pub start: Option<RotationStart>,
    /// Something a human must fix before the operator can even tell whether a rotation is
    /// needed (a missing ConfigMap, an unreadable Secret).
    pub blocked: Option<String>,
    /// The current trust anchor's validity, for the scheduled renewal.
    pub anchor: Option<crate::schedule::AnchorValidity>,
    /// What the scheduled renewal did or decided at this look (filled in by the runner).
    pub scheduled: Option<crate::schedule::ScheduledNote>,
}

/// Observes the cluster while Synced and decides whether a rotation starts.
#[async_trait]
pub trait Trigger: Send + Sync {
    async fn observe(
        &self,
        client: &kube::Client,
        spec: &TrustAnchorRotationSpec,
        pods: Option<&dyn crate::snapshot::PodSource>,
    ) -> Result<SyncedView, StepError>;
}

/// A rotation in progress whose target moved (for the trust-anchor rotation: the anchor was
/// renewed again): what the rotation becomes. The workflow decides it; the runner records
/// it, resets the steps to redo and says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retarget {
    /// The reason of the Warning Event, e.g. `AnchorRenewedMidRotation`.
    pub reason: &'static str,
    /// For people: what changed and what happens now (the Warning Event's note).
    pub message: String,
    /// A few words appended to the rotation's trigger, e.g. `retargeted to 9f3e…`.
    pub summary: String,
    /// The rotation's record after the retarget.
    pub from_anchor: Option<String>,
    pub to_anchor: Option<String>,
    pub superseded_anchors: Vec<String>,
    /// The first step to run again: it and every step after it start over (Pending).
    pub redo_from: String,
}

/// Watches the target of a rotation in progress, before each step runs.
#[async_trait]
pub trait TargetWatch: Send + Sync {
    /// `Some` when the rotation must change target now. `records` are the steps' records as
    /// persisted. An error is not fatal: the runner goes on with the step, which reads the
    /// same objects and reports the problem its own way.
    async fn check(
        &self,
        client: &kube::Client,
        spec: &TrustAnchorRotationSpec,
        rotation: &RotationRecord,
        records: &[StepRecord],
    ) -> Result<Option<Retarget>, StepError>;
}

/// An ordered list of steps with unique names and the trigger that starts them.
pub struct Workflow {
    trigger: Box<dyn Trigger>,
    steps: Vec<Box<dyn Step>>,
    target_watch: Option<Box<dyn TargetWatch>>,
}

/// A workflow that cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkflowError {
    #[error("a workflow needs at least one step")]
    Empty,
    #[error(
        "step name {0:?} appears twice: every step needs a unique name, since it keys the status"
    )]
    DuplicateName(String),
}

impl Workflow {
    pub fn new(
        trigger: Box<dyn Trigger>,
        steps: Vec<Box<dyn Step>>,
    ) -> Result<Self, WorkflowError> {
        if steps.is_empty() {
            return Err(WorkflowError::Empty);
        }
        let mut seen = HashSet::new();
        for s in &steps {
            if !seen.insert(s.name().to_string()) {
                return Err(WorkflowError::DuplicateName(s.name().to_string()));
            }
        }
        Ok(Self {
            trigger,
            steps,
            target_watch: None,
        })
    }

    /// Checks the rotation's target with `watch` before every step execution.
    pub fn with_target_watch(mut self, watch: Box<dyn TargetWatch>) -> Self {
        self.target_watch = Some(watch);
        self
    }

    pub fn target_watch(&self) -> Option<&dyn TargetWatch> {
        self.target_watch.as_deref()
    }

    pub fn steps(&self) -> &[Box<dyn Step>] {
        &self.steps
    }

    pub fn trigger(&self) -> &dyn Trigger {
        self.trigger.as_ref()
    }
}
