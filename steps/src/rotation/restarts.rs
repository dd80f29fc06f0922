//! Automatic workload restarts (`spec.automation.workloadRestarts: Automatic`): where the
//! user guide tells a person to restart the meshed workloads (the expanded bundle has to
//! reach every pod, the re-issued issuer's certificates have to reach them, the reduced
//! bundle has to reach them), the waiting step restarts the Deployments, StatefulSets and
//! DaemonSets whose pods hold it, as `kubectl rollout restart` does.
//!
//! - `maxConcurrentWorkloads` at a time; the next batch starts only when each restarted
//!   workload has rolled out (observed generation, updated/ready/available replicas per kind)
//!   and its pods have converged (they no longer hold the step).
//! - The workload's own rollout strategy bounds its pods' unavailability: the operator only
//!   patches the pod template. A workload with a PodDisruptionBudget that never allows a
//!   disruption (`maxUnavailable: 0`, or `minAvailable` of every pod) is skipped and named; one
//!   that allows none right now waits for its turn.
//! - A rollout that does not complete within its progress deadline (the Deployment's
//!   `progressDeadlineSeconds`, 600 s for the others) stops the automation: no other
//!   workload is touched, and the rotation blocks naming the workload and its failing pods
//!   until the rollout completes or a person skips it (`linkerd trust skip KIND/NAME -n NS`,
//!   the annotation [`SKIP_ANNOTATION`]).
//! - Bare pods, Job and CronJob pods are never deleted: the step's waiting message keeps
//!   naming them and what a person does.
//!
//! `status.workloadRestarts` is the record (one entry per workload and step, for the rotation
//! in progress), written ahead: a workload is recorded `Restarting` first, and its template is
//! patched at the next look, once the status holds the record, so no restart goes unrecorded.
//! The pod template then carries [`RESTARTED_FOR_ANNOTATION`] (`<rotation id>/<step>`), so a
//! restarted operator or a new leader never restarts a workload twice for the same step, even
//! when the status write after the patch was lost.

use crate::convergence::PodStatus;
use crate::observe::MeshedPod;
use crate::runner::telemetry::TracedWrite as _;
use crate::runner::FIELD_MANAGER;
use crate::step::{Outcome, StepContext, StepError, StepWarning};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use trust_rotation_crds::{RenewalMode, WorkloadRestartRecord, WorkloadRestartState};

/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// The pod-template annotation that says which rotation and step restarted the workload.
pub const RESTARTED_FOR_ANNOTATION: &str = "trust.linkerd.io/restarted-for";
/// The TrustAnchorRotation annotation `linkerd trust skip` writes: comma-separated
/// `<namespace>/<kind>/<name>@<rotation id>` entries.
pub const SKIP_ANNOTATION: &str = "trust.linkerd.io/skip";
/// Event reasons.
pub const WORKLOAD_RESTARTED: &str = "WorkloadRestarted";
pub const WORKLOAD_SKIPPED: &str = "WorkloadRestartSkipped";
/// How long a StatefulSet or DaemonSet rollout may take without completing (Kubernetes has
/// no `progressDeadlineSeconds` for them; a Deployment's own value applies to it).
pub const DEFAULT_PROGRESS_DEADLINE_SECS: i64 = 600;

/// The kinds the operator restarts, as pod owners name them.
pub const KINDS: [&str; 3] = ["deployment", "statefulset", "daemonset"];

/// A restartable workload: `namespace/kind/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

impl WorkloadRef {
    /// From a pod's namespace and its owner `kind/name`, when the kind is restartable.
    pub fn of_owner(namespace: &str, owner: Option<&str>) -> Option<Self> {
        let (kind, name) = owner?.split_once('/')?;
        KINDS.contains(&kind).then(|| Self {
            namespace: namespace.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
        })
    }

    /// Parses `namespace/kind/name` (the record's form).
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.splitn(3, '/');
        let (namespace, kind, name) = (it.next()?, it.next()?, it.next()?);
        let kind = normalize_kind(kind)?;
        (!namespace.is_empty() && !name.is_empty()).then(|| Self {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
        })
    }

    pub fn owner(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

/// `deploy`, `deployments`, `Deployment`... → `deployment` (and the same for the other two).
pub fn normalize_kind(kind: &str) -> Option<&'static str> {
    match kind.to_ascii_lowercase().as_str() {
        "deploy" | "deployment" | "deployments" | "deployment.apps" | "deployments.apps" => {
            Some("deployment")
        }
        "sts" | "statefulset" | "statefulsets" | "statefulset.apps" | "statefulsets.apps" => {
            Some("statefulset")
        }
        "ds" | "daemonset" | "daemonsets" | "daemonset.apps" | "daemonsets.apps" => {
            Some("daemonset")
        }
        _ => None,
    }
}

/// The workloads the skip annotation names for `rotation_id`.
pub fn skips(value: Option<&str>, rotation_id: &str) -> BTreeSet<WorkloadRef> {
    value
        .unwrap_or_default()
        .split(',')
        .filter_map(|e| {
            let (w, id) = e.trim().rsplit_once('@')?;
            (id.trim() == rotation_id).then(|| WorkloadRef::parse(w.trim()))?
        })
        .collect()
}

/// The annotation value with `workload@rotation_id` added (idempotent).
pub fn add_skip(existing: Option<&str>, workload: &WorkloadRef, rotation_id: &str) -> String {
    let entry = format!("{workload}@{rotation_id}");
    let mut entries: Vec<String> = existing
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if !entries.contains(&entry) {
        entries.push(entry);
    }
    entries.join(",")
}

/// Whether `labels` match `selector` (matchLabels and matchExpressions, as Kubernetes does).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// What one workload looks like to the automation.
#[derive(Debug, Clone, Default)]
struct Observed {
    meta: ObjectMeta,
    template_labels: BTreeMap<String, String>,
    restarted_for: Option<String>,
    rolled_out: bool,
    /// `OnDelete`: its controller never replaces pods by itself.
    on_delete: bool,
    progress_deadline_secs: i64,
    deadline_exceeded: bool,
}

fn template_meta(
    t: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> (BTreeMap<String, String>, Option<String>) {
    let m = t.metadata.clone().unwrap_or_default();
    (
        m.labels.unwrap_or_default(),
        m.annotations
            .and_then(|a| a.get(RESTARTED_FOR_ANNOTATION).cloned()),
    )
}

async fn observe(client: &kube::Client, w: &WorkloadRef) -> Result<Option<Observed>, StepError> {
    let what = format!("reading {w}");
    let err = |e| StepError::from_kube(what.clone(), e);
    let o = match w.kind.as_str() {
        "deployment" => {
            let Some(d) = Api::<Deployment>::namespaced(client.clone(), &w.namespace)
                .get_opt(&w.name)
                .await
                .map_err(err)?
            else {
                return Ok(None);
            };
            let spec = d.spec.clone();
            let st = d.status.clone().unwrap_or_default();
            let want = spec.replicas.unwrap_or(1);
            let (template_labels, restarted_for) = template_meta(&spec.template);
            Observed {
                rolled_out: st.observed_generation >= d.metadata.generation
                    && st.updated_replicas.unwrap_or(0) == want
                    && st.replicas.unwrap_or(0) == want
                    && st.available_replicas.unwrap_or(0) == want,
                deadline_exceeded: st.conditions.iter().flatten().any(|c| {
                    c.type_.as_deref() == Some("Progressing")
                        && c.status.as_deref() == Some("False")
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                }),
                progress_deadline_secs: spec
                    .progress_deadline_seconds
                    .map_or(DEFAULT_PROGRESS_DEADLINE_SECS, i64::from),
                on_delete: false,
                meta: d.metadata,
                template_labels,
                restarted_for,
            }
        }
        "statefulset" => {
            let Some(s) = Api::<StatefulSet>::namespaced(client.clone(), &w.namespace)
                .get_opt(&w.name)
                .await
                .map_err(err)?
            else {
                return Ok(None);
            };
            let spec = s.spec.clone();
            let st = s.status.clone().unwrap_or_default();
            let want = spec.replicas.unwrap_or(1);
            let (template_labels, restarted_for) = template_meta(&spec.template);
            let revisions_agree = match (&st.current_revision, &st.update_revision) {
                (Some(c), Some(u)) => c == u,
                _ => true,
            };
            Observed {
                rolled_out: st.observed_generation >= s.metadata.generation
                    && st.updated_replicas.unwrap_or(0) == want
                    && st.ready_replicas.unwrap_or(0) == want
                    && st.replicas == want
                    && revisions_agree,
                on_delete: spec
                    .update_strategy
                    .as_ref()
                    .and_then(|u| u.type_.as_deref())
                    == Some("OnDelete"),
                progress_deadline_secs: DEFAULT_PROGRESS_DEADLINE_SECS,
                deadline_exceeded: false,
                meta: s.metadata,
                template_labels,
                restarted_for,
            }
        }
        _ => {
            let Some(d) = Api::<DaemonSet>::namespaced(client.clone(), &w.namespace)
                .get_opt(&w.name)
                .await
                .map_err(err)?
            else {
                return Ok(None);
            };
            let spec = d.spec.clone();
            let st = d.status.clone().unwrap_or_default();
            let (template_labels, restarted_for) = template_meta(&spec.template);
            let want = st.desired_number_scheduled;
            Observed {
                rolled_out: st.observed_generation >= d.metadata.generation
                    && st.updated_number_scheduled.unwrap_or(0) == want
                    && st.number_available.unwrap_or(0) == want,
                on_delete: spec
                    .update_strategy
                    .as_ref()
                    .and_then(|u| u.type_.as_deref())
                    == Some("OnDelete"),
                progress_deadline_secs: DEFAULT_PROGRESS_DEADLINE_SECS,
                deadline_exceeded: false,
                meta: d.metadata,
                template_labels,
                restarted_for,
            }
        }
    };
    Ok(Some(o))
}

/// `kubectl rollout restart`, plus the record of which rotation and step did it.
async fn restart(ctx: &StepContext, w: &WorkloadRef, marker: &str) -> Result<(), StepError> {
    let body = json!({"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT_ANNOTATION: ctx.now.to_string(),
        RESTARTED_FOR_ANNOTATION: marker,
    }}}}});
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patch = Patch::Merge(&body);
    let c = ctx.client.clone();
    let ns = w.namespace.as_str();
    let r = match w.kind.as_str() {
        "deployment" => Api::<Deployment>::namespaced(c, ns)
            .patch(&w.name, &pp, &patch)
            .traced_write("patch", "Deployment", ns, &w.name)
            .await
            .map(|_| ()),
        "statefulset" => Api::<StatefulSet>::namespaced(c, ns)
            .patch(&w.name, &pp, &patch)
            .traced_write("patch", "StatefulSet", ns, &w.name)
            .await
            .map(|_| ()),
        _ => Api::<DaemonSet>::namespaced(c, ns)
            .patch(&w.name, &pp, &patch)
            .traced_write("patch", "DaemonSet", ns, &w.name)
            .await
            .map(|_| ()),
    };
    r.map_err(|e| StepError::from_kube(format!("restarting {w}"), e))
}

/// Why a PodDisruptionBudget stops the operator from restarting a workload: `Err(message)`
/// when it never allows a disruption (skip it), `Ok(true)` when it allows none right now
/// (wait), `Ok(false)` when nothing stops it.
fn judge_pdbs(
    pdbs: &[PodDisruptionBudget],
    template_labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let mut busy = false;
    for pdb in pdbs {
        let Some(spec) = &pdb.spec else { continue };
        let Some(sel) = &spec.selector else { continue };
        // An empty selector selects every pod of its namespace (policy/v1).
        if !selector_matches(sel, template_labels) {
            continue;
        }
        let name = pdb.metadata.name.clone().unwrap_or_default();
        let st = pdb.status.clone().unwrap_or_default();
        let zero = |v: &IntOrString| match v {
            IntOrString::Int(i) => *i <= 0,
            IntOrString::String(s) => s.trim_end_matches('%').trim().parse::<f64>() == Ok(0.0),
        };
        let all = |v: &IntOrString| match v {
            IntOrString::Int(i) => st.expected_pods.is_some_and(|n| n > 0 && *i >= n),
            IntOrString::String(s) => s.trim_end_matches('%').trim().parse::<f64>() == Ok(100.0),
        };
        if spec.max_unavailable.as_ref().is_some_and(zero)
            || spec.min_available.as_ref().is_some_and(all)
        {
            return Err(format!(
                "PodDisruptionBudget {name} allows no disruption ({}): restarting it would break the budget",
                spec.max_unavailable
                    .as_ref()
                    .map(|v| format!("maxUnavailable: {}", show(v)))
                    .or_else(|| spec.min_available.as_ref().map(|v| format!("minAvailable: {}", show(v))))
                    .unwrap_or_default()
            ));
        }
        if st.disruptions_allowed.unwrap_or(0) <= 0 {
            busy = true;
        }
    }
    Ok(busy)
}

fn show(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// What the automation did in one execution of a waiting step.
#[derive(Debug, Default)]
pub struct Drive {
    /// Every record of this step for this rotation (replaces them in the status).
    pub records: Option<Vec<WorkloadRestartRecord>>,
    /// Normal Events: one per workload restart.
    pub notices: Vec<StepWarning>,
    /// Warning Events: skips.
    pub warnings: Vec<StepWarning>,
    /// A short account for the waiting message, e.g. `automatic restarts: ...`.
    pub summary: Option<String>,
    /// Set when a rollout did not progress: the automation stops here.
    pub blocked: Option<String>,
}

impl Drive {
    /// The step's report: its outcome with what the automation says, the records in the
    /// progress, the Events.
    pub fn report(
        self,
        step: &str,
        outcome: Outcome,
        mut progress: crate::step::Progress,
    ) -> crate::step::StepReport {
        let outcome = self.outcome(outcome);
        if let Some(records) = self.records {
            progress.workload_restarts = Some((step.to_string(), records));
        }
        let mut report = outcome.with(progress);
        report.notices = self.notices;
        report.warnings = self.warnings;
        report
    }

    /// The step's outcome with what the automation says.
    pub fn outcome(&self, outcome: Outcome) -> Outcome {
        if let Some(m) = &self.blocked {
            return match outcome {
                Outcome::Done => Outcome::Done,
                Outcome::Wait { reason, .. } | Outcome::Blocked { message: reason } => {
                    Outcome::blocked(format!("{m}; {reason}"))
                }
            };
        }
        match (outcome, &self.summary) {
            (
                Outcome::Wait {
                    reason,
                    retry_after,
                    patience,
                },
                Some(s),
            ) => Outcome::Wait {
                reason: format!("{s}; {reason}"),
                retry_after,
                patience,
            },
            (o, _) => o,
        }
    }
}

fn record(
    ctx: &StepContext,
    step: &str,
    w: &WorkloadRef,
    state: WorkloadRestartState,
    message: Option<String>,
) -> WorkloadRestartRecord {
    WorkloadRestartRecord {
        rotation_id: ctx.rotation.id.clone(),
        step: step.to_string(),
        workload: w.to_string(),
        state,
        at: Time(ctx.now),
        message,
    }
}

/// Restarts what holds `step`, when the rotation automates it. `unconverged` are the pods
/// the step waits for; `pods` every meshed pod it saw (for the failing pods of a rollout).
/// `done`: the step is finishing; the records are settled without touching anything.
pub async fn drive<S>(
    ctx: &StepContext,
    step: &str,
    unconverged: &[PodStatus<S>],
    pods: &[MeshedPod],
    done: bool,
) -> Result<Drive, StepError> {
    let auto = &ctx.spec.automation;
    if auto.workload_restarts != RenewalMode::Automatic {
        return Ok(Drive::default());
    }
    let mut records: BTreeMap<String, WorkloadRestartRecord> = ctx
        .workload_restarts
        .iter()
        .filter(|r| r.rotation_id == ctx.rotation.id && r.step == step)
        .map(|r| (r.workload.clone(), r.clone()))
        .collect();
    let mut out = Drive::default();
    if done {
        // Every pod converged: nothing is pending any more.
        records.retain(|_, r| r.state != WorkloadRestartState::Pending);
        for r in records.values_mut() {
            if r.state == WorkloadRestartState::Restarting {
                r.state = WorkloadRestartState::Restarted;
            }
        }
        out.records = Some(records.into_values().collect());
        return Ok(out);
    }
    // Who holds the step, by workload.
    let mut holding: BTreeMap<WorkloadRef, Vec<String>> = BTreeMap::new();
    for p in unconverged {
        if let Some(w) = WorkloadRef::of_owner(&p.pod.namespace, p.owner.as_deref()) {
            holding.entry(w).or_default().push(p.pod.to_string());
        }
    }
    let skipped_by_person = skips(ctx.skip_annotation.as_deref(), &ctx.rotation.id);
    let marker = format!("{}/{step}", ctx.rotation.id);

    // 1. The workloads restarted earlier: rolled out and converged, still rolling, or stuck.
    let mut in_flight = 0usize;
    let mut stuck: Vec<String> = Vec::new();
    for r in records.values_mut() {
        let Some(w) = WorkloadRef::parse(&r.workload) else {
            continue;
        };
        if r.state != WorkloadRestartState::Skipped && skipped_by_person.contains(&w) {
            r.state = WorkloadRestartState::Skipped;
            r.message = Some(format!("{w} skipped by linkerd trust skip"));
            r.at = Time(ctx.now);
            out.warnings.push(StepWarning {
                reason: WORKLOAD_SKIPPED,
                note: format!("{w}: skipped on request (linkerd trust skip); its pods still hold the rotation until a person replaces them"),
            });
            continue;
        }
        if r.state != WorkloadRestartState::Restarting {
            continue;
        }
        let Some(o) = observe(&ctx.client, &w).await? else {
            r.state = WorkloadRestartState::Restarted; // gone: nothing left to wait for
            continue;
        };
        if o.restarted_for.as_deref() != Some(marker.as_str()) {
            // Write-ahead: an earlier look recorded (and the runner persisted) the intent;
            // the template patch follows now. Its marker makes this happen once, whatever
            // happens to the status write after it.
            restart(ctx, &w, &marker).await?;
            out.notices.push(StepWarning {
                reason: WORKLOAD_RESTARTED,
                note: format!("restarted {w} (rollout restart) so its pods move on ({step})"),
            });
            r.at = Time(ctx.now);
            in_flight += 1;
            continue;
        }
        if o.rolled_out && !holding.contains_key(&w) {
            r.state = WorkloadRestartState::Restarted;
            r.message = None;
            continue;
        }
        in_flight += 1;
        let waited = ctx.now.as_second() - r.at.0.as_second();
        if o.deadline_exceeded || waited > o.progress_deadline_secs {
            let failing: Vec<String> = pods
                .iter()
                .filter(|p| {
                    p.pod.namespace == w.namespace
                        && p.owner.as_deref() == Some(w.owner().as_str())
                        && (!p.ready || p.deleting)
                })
                .take(10)
                .map(|p| p.pod.to_string())
                .collect();
            let m = format!(
                "the rollout of {w} did not complete within {}s (failing pods: {})",
                o.progress_deadline_secs,
                if failing.is_empty() {
                    "none not ready; its pods still hold the step".to_string()
                } else {
                    failing.join(", ")
                }
            );
            r.message = Some(m.clone());
            stuck.push(format!(
                "{m}: fix it (the automation continues once it rolls out) or skip it with `linkerd trust skip {}/{} -n {}` (its pods then still hold the rotation until a person replaces them)",
                w.kind, w.name, w.namespace
            ));
        }
    }
    if !stuck.is_empty() {
        out.blocked = Some(format!(
            "automatic workload restarts stopped, no other workload is touched: {}",
            stuck.join("; ")
        ));
    }

    // 2. The workloads that hold the step and were not started yet: pending, skipped or started.
    let max = auto.max_concurrent_workloads.max(1) as usize;
    let mut ns_labels: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut pdbs: BTreeMap<String, Vec<PodDisruptionBudget>> = BTreeMap::new();
    let mut left_to_person: Vec<String> = Vec::new();
    for w in holding.keys() {
        if records
            .get(&w.to_string())
            .is_some_and(|r| r.state != WorkloadRestartState::Pending)
        {
            continue;
        }
        if skipped_by_person.contains(w) {
            records.insert(
                w.to_string(),
                record(
                    ctx,
                    step,
                    w,
                    WorkloadRestartState::Skipped,
                    Some(format!("{w} skipped by linkerd trust skip")),
                ),
            );
            continue;
        }
        if let Some(sel) = &auto.namespace_selector {
            if !ns_labels.contains_key(&w.namespace) {
                let labels = Api::<Namespace>::all(ctx.client.clone())
                    .get_opt(&w.namespace)
                    .await
                    .map_err(|e| {
                        StepError::from_kube(format!("reading Namespace {}", w.namespace), e)
                    })?
                    .and_then(|n| n.metadata.labels)
                    .unwrap_or_default();
                ns_labels.insert(w.namespace.clone(), labels);
            }
            if !selector_matches(sel, &ns_labels[&w.namespace]) {
                left_to_person.push(w.to_string());
                continue;
            }
        }
        let Some(o) = observe(&ctx.client, w).await? else {
            continue;
        };
        if let Some(sel) = &auto.workload_selector {
            if !selector_matches(sel, &o.meta.labels.clone().unwrap_or_default()) {
                left_to_person.push(w.to_string());
                continue;
            }
        }
        if o.restarted_for.as_deref() == Some(marker.as_str()) {
            // Restarted by an earlier execution whose status write was lost: resume.
            records.insert(
                w.to_string(),
                record(ctx, step, w, WorkloadRestartState::Restarting, None),
            );
            in_flight += 1;
            continue;
        }
        if o.on_delete {
            let m = format!("{w} uses updateStrategy OnDelete: its controller does not replace pods on a restart; delete its pods to move them");
            out.warnings.push(StepWarning {
                reason: WORKLOAD_SKIPPED,
                note: m.clone(),
            });
            records.insert(
                w.to_string(),
                record(ctx, step, w, WorkloadRestartState::Skipped, Some(m)),
            );
            continue;
        }
        if !pdbs.contains_key(&w.namespace) {
            let list = Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &w.namespace)
                .list(&ListParams::default())
                .await
                .map_err(|e| {
                    StepError::from_kube(
                        format!("listing PodDisruptionBudgets in {}", w.namespace),
                        e,
                    )
                })?;
            pdbs.insert(w.namespace.clone(), list.items);
        }
        let busy = match judge_pdbs(&pdbs[&w.namespace], &o.template_labels) {
            Err(why) => {
                let m = format!("{w} skipped: {why}; its pods ({}) still hold the rotation until a person replaces them", holding[w].join(", "));
                out.warnings.push(StepWarning {
                    reason: WORKLOAD_SKIPPED,
                    note: m.clone(),
                });
                records.insert(
                    w.to_string(),
                    record(ctx, step, w, WorkloadRestartState::Skipped, Some(m)),
                );
                continue;
            }
            Ok(busy) => busy,
        };
        if out.blocked.is_none() && !busy && in_flight < max {
            // Recorded first; the next look (once the status holds it) patches the template,
            // so that no restart ever goes unrecorded.
            in_flight += 1;
            records.insert(
                w.to_string(),
                record(ctx, step, w, WorkloadRestartState::Restarting, None),
            );
        } else {
            // Kept as it was when already pending: no status write per look.
            records
                .entry(w.to_string())
                .or_insert_with(|| record(ctx, step, w, WorkloadRestartState::Pending, None));
        }
    }
    // A pending workload whose pods converged by themselves needs no restart any more.
    records.retain(|k, r| {
        r.state != WorkloadRestartState::Pending
            || WorkloadRef::parse(k).is_some_and(|w| holding.contains_key(&w))
    });

    let count = |s: WorkloadRestartState| records.values().filter(|r| r.state == s).count();
    // Only skipped workloads left that the operator could restart: a person must act.
    let skipped_holding: Vec<String> = records
        .values()
        .filter(|r| r.state == WorkloadRestartState::Skipped)
        .filter(|r| WorkloadRef::parse(&r.workload).is_some_and(|w| holding.contains_key(&w)))
        .map(|r| r.message.clone().unwrap_or_else(|| r.workload.clone()))
        .collect();
    if out.blocked.is_none()
        && count(WorkloadRestartState::Restarting) == 0
        && count(WorkloadRestartState::Pending) == 0
        && !skipped_holding.is_empty()
    {
        out.blocked = Some(format!(
            "automatic restarts: every other workload is done; the operator does not restart these, a person must replace their pods (the rotation continues once they converge): {}",
            skipped_holding.join("; ")
        ));
    }
    let restarting: Vec<&str> = records
        .values()
        .filter(|r| r.state == WorkloadRestartState::Restarting)
        .map(|r| r.workload.as_str())
        .collect();
    let skipped: Vec<String> = records
        .values()
        .filter(|r| r.state == WorkloadRestartState::Skipped)
        .map(|r| r.message.clone().unwrap_or_else(|| r.workload.clone()))
        .collect();
    let mut summary = format!(
        "automatic restarts: {} restarted, {} in progress{}, {} pending, {} skipped",
        count(WorkloadRestartState::Restarted),
        restarting.len(),
        if restarting.is_empty() {
            String::new()
        } else {
            format!(" ({})", restarting.join(", "))
        },
        count(WorkloadRestartState::Pending),
        skipped.len()
    );
    if !skipped.is_empty() {
        summary.push_str(&format!(" ({})", skipped.join("; ")));
    }
    if !left_to_person.is_empty() {
        summary.push_str(&format!(
            "; outside the automation's selectors, restart them yourself: {}",
            left_to_person.join(", ")
        ));
    }
    out.summary = Some(summary);
    out.records = Some(records.into_values().collect());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn workloads_parse_and_skips_count_only_for_their_rotation() {
        let w = WorkloadRef::parse("app/deploy/web").unwrap();
        assert_eq!(w.to_string(), "app/deployment/web");
        assert_eq!(WorkloadRef::parse("app/job/x"), None);
        assert_eq!(WorkloadRef::of_owner("app", Some("job/x")), None);
        let v = add_skip(None, &w, "r1");
        let v = add_skip(Some(&v), &w, "r1");
        assert_eq!(v, "app/deployment/web@r1");
        assert!(skips(Some(&v), "r1").contains(&w));
        assert!(
            skips(Some(&v), "r2").is_empty(),
            "a skip for another rotation"
        );
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        let sel = LabelSelector {
            match_labels: Some(labels.clone()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
        };
        assert!(selector_matches(&sel, &labels));
        assert!(
            selector_matches(&LabelSelector::default(), &labels),
            "empty selects all"
        );
        let not_in = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: "NotIn".into(),
                values: Some(vec!["web".into()]),
            }]),
            ..Default::default()
        };
        assert!(!selector_matches(&not_in, &labels));
    }

    #[test]
    fn a_budget_that_never_allows_a_disruption_is_a_skip() {
        use k8s_openapi::api::policy::v1::{PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
        let labels: BTreeMap<String, String> = [("app".to_string(), "db".to_string())]
            .into_iter()
            .collect();
        let pdb = |max: Option<IntOrString>, min: Option<IntOrString>, allowed: i32| {
            PodDisruptionBudget {
                metadata: ObjectMeta {
                    name: Some("db".into()),
                    ..Default::default()
                },
                spec: Some(PodDisruptionBudgetSpec {
                    max_unavailable: max,
                    min_available: min,
                    selector: Some(LabelSelector {
                        match_labels: Some(labels.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                status: Some(PodDisruptionBudgetStatus {
                    disruptions_allowed: Some(allowed),
                    expected_pods: Some(3),
                    ..Default::default()
                }),
            }
        };
        let e = judge_pdbs(&[pdb(Some(IntOrString::Int(0)), None, 0)], &labels).unwrap_err();
        assert!(
            e.contains("PodDisruptionBudget db") && e.contains("maxUnavailable: 0"),
            "{e}"
        );
        assert!(judge_pdbs(
            &[pdb(None, Some(IntOrString::String("100%".into())), 0)],
            &labels
        )
        .is_err());
        assert_eq!(
            judge_pdbs(&[pdb(Some(IntOrString::Int(1)), None, 0)], &labels),
            Ok(true),
            "busy now: wait"
        );
        assert_eq!(
            judge_pdbs(&[pdb(Some(IntOrString::Int(1)), None, 1)], &labels),
            Ok(false)
        );
        let other: BTreeMap<String, String> = Default::default();
        assert_eq!(
            judge_pdbs(&[pdb(Some(IntOrString::Int(0)), None, 0)], &other),
            Ok(false)
        );
    }
}
