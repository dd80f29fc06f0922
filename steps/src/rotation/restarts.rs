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
use trust_rotation_crds::{Automation, RenewalMode, WorkloadRestartRecord, WorkloadRestartState};

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

/// What one workload looks like to the automation (and to `linkerd trust plan`).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub meta: ObjectMeta,
    pub template_labels: BTreeMap<String, String>,
    pub restarted_for: Option<String>,
    pub rolled_out: bool,
    pub progress_deadline_secs: i64,
    pub deadline_exceeded: bool,
    /// Desired pods (`spec.replicas`, 1 when unset; a DaemonSet's
    /// `status.desiredNumberScheduled`).
    pub replicas: i32,
    /// The rollout strategy as a person reads it: `RollingUpdate maxUnavailable=25%
    /// maxSurge=25%`, `RollingUpdate partition=0 maxUnavailable=1`, `Recreate`, `OnDelete`.
    pub strategy: String,
    /// A Deployment's `Progressing` condition with reason `NewReplicaSetAvailable`: when its
    /// last rollout completed (`lastUpdateTime`).
    pub rollout_completed_at: Option<jiff::Timestamp>,
}

impl Observed {
    /// `updateStrategy: OnDelete`: its controller never replaces pods by itself.
    pub fn on_delete(&self) -> bool {
        self.strategy == ON_DELETE
    }
}

const ON_DELETE: &str = "OnDelete";

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

/// Reads one workload; `None` when it no longer exists.
pub async fn observe(
    client: &kube::Client,
    w: &WorkloadRef,
) -> Result<Option<Observed>, StepError> {
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
                replicas: want,
                strategy: match spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) {
                    Some("Recreate") => "Recreate".to_string(),
                    _ => {
                        let ru = spec
                            .strategy
                            .as_ref()
                            .and_then(|s| s.rolling_update.as_ref());
                        format!(
                            "RollingUpdate maxUnavailable={} maxSurge={}",
                            shown_or(ru.and_then(|r| r.max_unavailable.as_ref()), "25%"),
                            shown_or(ru.and_then(|r| r.max_surge.as_ref()), "25%")
                        )
                    }
                },
                rollout_completed_at: st
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| {
                        c.type_.as_deref() == Some("Progressing")
                            && c.status.as_deref() == Some("True")
                            && c.reason.as_deref() == Some("NewReplicaSetAvailable")
                    })
                    .and_then(|c| c.last_update_time.as_ref())
                    .map(|t| t.0),
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
                progress_deadline_secs: DEFAULT_PROGRESS_DEADLINE_SECS,
                deadline_exceeded: false,
                replicas: want,
                strategy: match spec.update_strategy.as_ref() {
                    Some(u) if u.type_.as_deref() == Some(ON_DELETE) => ON_DELETE.to_string(),
                    u => {
                        let ru = u.and_then(|u| u.rolling_update.as_ref());
                        format!(
                            "RollingUpdate partition={} maxUnavailable={}",
                            ru.and_then(|r| r.partition).unwrap_or(0),
                            shown_or(ru.and_then(|r| r.max_unavailable.as_ref()), "1")
                        )
                    }
                },
                rollout_completed_at: None,
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
                progress_deadline_secs: DEFAULT_PROGRESS_DEADLINE_SECS,
                deadline_exceeded: false,
                replicas: want,
                strategy: match spec.update_strategy.as_ref() {
                    Some(u) if u.type_.as_deref() == Some(ON_DELETE) => ON_DELETE.to_string(),
                    u => {
                        let ru = u.and_then(|u| u.rolling_update.as_ref());
                        format!(
                            "RollingUpdate maxUnavailable={} maxSurge={}",
                            shown_or(ru.and_then(|r| r.max_unavailable.as_ref()), "1"),
                            shown_or(ru.and_then(|r| r.max_surge.as_ref()), "0")
                        )
                    }
                },
                rollout_completed_at: None,
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

/// What the PodDisruptionBudgets selecting a workload's pods leave room for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Headroom {
    /// No budget selects its pods.
    NoBudget,
    /// A budget never allows a disruption (`maxUnavailable: 0`, or `minAvailable` of every
    /// pod): the message names it.
    Never { budget: String, message: String },
    /// The fewest disruptions any selecting budget allows right now
    /// (`status.disruptionsAllowed`), and that budget.
    Allows { budget: String, disruptions: i32 },
}

/// The headroom the budgets in `pdbs` leave a workload whose pods carry `template_labels`.
pub fn pdb_headroom(
    pdbs: &[PodDisruptionBudget],
    template_labels: &BTreeMap<String, String>,
) -> Headroom {
    let mut least: Option<(String, i32)> = None;
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
            let message = format!(
                "PodDisruptionBudget {name} allows no disruption ({}): restarting it would break the budget",
                spec.max_unavailable
                    .as_ref()
                    .map(|v| format!("maxUnavailable: {}", show(v)))
                    .or_else(|| spec.min_available.as_ref().map(|v| format!("minAvailable: {}", show(v))))
                    .unwrap_or_default()
            );
            return Headroom::Never {
                budget: name,
                message,
            };
        }
        let allowed = st.disruptions_allowed.unwrap_or(0);
        if least.as_ref().is_none_or(|(_, n)| allowed < *n) {
            least = Some((name, allowed));
        }
    }
    match least {
        Some((budget, disruptions)) => Headroom::Allows {
            budget,
            disruptions,
        },
        None => Headroom::NoBudget,
    }
}

/// Why a PodDisruptionBudget stops the operator from restarting a workload: `Err(message)`
/// when it never allows a disruption (skip it), `Ok(true)` when it allows none right now
/// (wait), `Ok(false)` when nothing stops it.
fn judge_pdbs(
    pdbs: &[PodDisruptionBudget],
    template_labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    match pdb_headroom(pdbs, template_labels) {
        Headroom::Never { message, .. } => Err(message),
        Headroom::Allows { disruptions, .. } => Ok(disruptions <= 0),
        Headroom::NoBudget => Ok(false),
    }
}

/// What the automation does with one workload whose pods hold a step. One decision, used by
/// the operator ([`drive`]) and by `linkerd trust plan` ([`crate::plan`]), so that the plan is
/// what the operator does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The workload no longer exists: nothing to restart.
    Gone,
    /// `linkerd trust skip` named it for this rotation.
    SkippedByPerson,
    /// Its namespace does not match `spec.automation.namespaceSelector`: a person restarts it.
    OutsideNamespaceSelector,
    /// Its labels do not match `spec.automation.workloadSelector`: a person restarts it.
    OutsideWorkloadSelector,
    /// Its pod template already says it was restarted for this rotation and step (an earlier
    /// execution whose status write was lost): the operator resumes waiting for it.
    AlreadyRestarted,
    /// `updateStrategy: OnDelete`: a restart would replace no pod; a person deletes them.
    OnDelete,
    /// A PodDisruptionBudget never allows a disruption: skipped, a person decides.
    BudgetNeverAllows(String),
    /// The operator restarts it, in its turn; `budget_busy`: a PodDisruptionBudget allows no
    /// disruption right now, so it waits (later workloads may go first).
    Restart { budget_busy: bool },
}

impl Decision {
    /// The operator restarts it (now, or once its budget allows).
    pub fn restarts(&self) -> bool {
        matches!(self, Decision::Restart { .. } | Decision::AlreadyRestarted)
    }

    /// Why the operator does not restart `w`, as its records and Events say it.
    pub fn why_not(&self, w: &WorkloadRef) -> Option<String> {
        match self {
            Decision::Gone => Some(format!("{w} no longer exists")),
            Decision::SkippedByPerson => Some(format!("{w} skipped by linkerd trust skip")),
            Decision::OutsideNamespaceSelector => Some(format!(
                "{w}: namespace {} is outside spec.automation.namespaceSelector",
                w.namespace
            )),
            Decision::OutsideWorkloadSelector => Some(format!(
                "{w}: its labels are outside spec.automation.workloadSelector"
            )),
            Decision::OnDelete => Some(format!("{w} uses updateStrategy OnDelete: its controller does not replace pods on a restart; delete its pods to move them")),
            Decision::BudgetNeverAllows(why) => Some(format!("{w} skipped: {why}")),
            Decision::AlreadyRestarted | Decision::Restart { .. } => None,
        }
    }
}

/// Everything [`decide`] looks at for one workload.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// `linkerd trust skip` named it for the rotation in progress.
    pub skipped_by_person: bool,
    /// Its namespace's labels (read only when `namespaceSelector` is set).
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// The workload itself; `None` when it no longer exists.
    pub observed: Option<&'a Observed>,
    /// `<rotation id>/<step>` of the step being driven, if any.
    pub marker: Option<&'a str>,
    /// The PodDisruptionBudgets of its namespace.
    pub pdbs: &'a [PodDisruptionBudget],
}

/// The decision for one workload, in the order the operator checks: a person's skip, the
/// namespace selector, existence, the workload selector, an earlier restart for this step,
/// `OnDelete`, PodDisruptionBudgets. Pure: the callers gather the facts. The budgets come
/// last, so a caller may first decide with no budgets and read them only when the answer is
/// [`Decision::Restart`].
pub fn decide(auto: &Automation, f: &Facts<'_>) -> Decision {
    if f.skipped_by_person {
        return Decision::SkippedByPerson;
    }
    if let Some(sel) = &auto.namespace_selector {
        if !selector_matches(sel, f.namespace_labels) {
            return Decision::OutsideNamespaceSelector;
        }
    }
    let Some(o) = f.observed else {
        return Decision::Gone;
    };
    if let Some(sel) = &auto.workload_selector {
        if !selector_matches(sel, &o.meta.labels.clone().unwrap_or_default()) {
            return Decision::OutsideWorkloadSelector;
        }
    }
    if f.marker.is_some() && o.restarted_for.as_deref() == f.marker {
        return Decision::AlreadyRestarted;
    }
    if o.on_delete() {
        return Decision::OnDelete;
    }
    match judge_pdbs(f.pdbs, &o.template_labels) {
        Err(why) => Decision::BudgetNeverAllows(why),
        Ok(budget_busy) => Decision::Restart { budget_busy },
    }
}

/// The order in which the operator takes the workloads that hold a step: by namespace, then
/// kind (`daemonset`, `deployment`, `statefulset`), then name; `maxConcurrentWorkloads` at a
/// time. A workload whose budget allows no disruption right now waits, and the next one may go
/// before it.
pub fn restart_order(workloads: impl IntoIterator<Item = WorkloadRef>) -> Vec<WorkloadRef> {
    let set: BTreeSet<WorkloadRef> = workloads.into_iter().collect();
    set.into_iter().collect()
}

/// Reads what [`decide`] needs, each namespace's labels and budgets once.
#[derive(Debug, Default)]
pub struct Gatherer {
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pdbs: BTreeMap<String, Vec<PodDisruptionBudget>>,
}

impl Gatherer {
    /// The labels of Namespace `ns` (empty when it does not exist).
    pub async fn namespace_labels(
        &mut self,
        client: &kube::Client,
        ns: &str,
    ) -> Result<&BTreeMap<String, String>, StepError> {
        if !self.namespaces.contains_key(ns) {
            let labels = Api::<Namespace>::all(client.clone())
                .get_opt(ns)
                .await
                .map_err(|e| StepError::from_kube(format!("reading Namespace {ns}"), e))?
                .and_then(|n| n.metadata.labels)
                .unwrap_or_default();
            self.namespaces.insert(ns.to_string(), labels);
        }
        Ok(&self.namespaces[ns])
    }

    /// The PodDisruptionBudgets of `ns`.
    pub async fn pdbs(
        &mut self,
        client: &kube::Client,
        ns: &str,
    ) -> Result<&[PodDisruptionBudget], StepError> {
        if !self.pdbs.contains_key(ns) {
            let list = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .map_err(|e| {
                    StepError::from_kube(format!("listing PodDisruptionBudgets in {ns}"), e)
                })?;
            self.pdbs.insert(ns.to_string(), list.items);
        }
        Ok(&self.pdbs[ns])
    }

    /// Decides for `w`, reading only what the decision needs, in the order [`decide`] looks:
    /// the namespace only with a namespace selector, the workload only when neither a skip nor
    /// the namespace settles it, the budgets only when everything else says restart. Returns
    /// the workload as read, when it was.
    pub async fn decide(
        &mut self,
        client: &kube::Client,
        auto: &Automation,
        w: &WorkloadRef,
        skipped_by_person: bool,
        marker: Option<&str>,
    ) -> Result<(Decision, Option<Observed>), StepError> {
        let labels = if !skipped_by_person && auto.namespace_selector.is_some() {
            self.namespace_labels(client, &w.namespace).await?.clone()
        } else {
            BTreeMap::new()
        };
        let mut facts = Facts {
            skipped_by_person,
            namespace_labels: &labels,
            observed: None,
            marker,
            pdbs: &[],
        };
        // Without the workload, decide answers Gone only once the skip and the namespace let it
        // through: then the workload is read.
        let before = decide(auto, &facts);
        if before != Decision::Gone {
            return Ok((before, None));
        }
        let observed = observe(client, w).await?;
        facts.observed = observed.as_ref();
        let without_budgets = decide(auto, &facts);
        if !matches!(without_budgets, Decision::Restart { .. }) {
            return Ok((without_budgets, observed));
        }
        facts.pdbs = self.pdbs(client, &w.namespace).await?;
        let decision = decide(auto, &facts);
        Ok((decision, observed))
    }
}

fn shown_or(v: Option<&IntOrString>, default: &str) -> String {
    v.map(show).unwrap_or_else(|| default.to_string())
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
pub async fn drive<'p, S>(
    ctx: &StepContext,
    step: &str,
    unconverged: &[PodStatus<S>],
    pods: impl IntoIterator<Item = &'p MeshedPod> + Clone,
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
                .clone()
                .into_iter()
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

    // 2. The workloads that hold the step and were not started yet: pending, skipped or started,
    // in the order and by the decision `linkerd trust plan` shows.
    let max = auto.max_concurrent_workloads.max(1) as usize;
    let mut gather = Gatherer::default();
    let mut left_to_person: Vec<String> = Vec::new();
    for w in restart_order(holding.keys().cloned()) {
        let w = &w;
        if records
            .get(&w.to_string())
            .is_some_and(|r| r.state != WorkloadRestartState::Pending)
        {
            continue;
        }
        let (decision, _) = gather
            .decide(
                &ctx.client,
                auto,
                w,
                skipped_by_person.contains(w),
                Some(&marker),
            )
            .await?;
        let busy = match decision {
            Decision::Gone => continue,
            Decision::SkippedByPerson => {
                records.insert(
                    w.to_string(),
                    record(
                        ctx,
                        step,
                        w,
                        WorkloadRestartState::Skipped,
                        decision.why_not(w),
                    ),
                );
                continue;
            }
            Decision::OutsideNamespaceSelector | Decision::OutsideWorkloadSelector => {
                left_to_person.push(w.to_string());
                continue;
            }
            Decision::AlreadyRestarted => {
                // Restarted by an earlier execution whose status write was lost: resume.
                records.insert(
                    w.to_string(),
                    record(ctx, step, w, WorkloadRestartState::Restarting, None),
                );
                in_flight += 1;
                continue;
            }
            Decision::OnDelete | Decision::BudgetNeverAllows(_) => {
                let why = decision.why_not(w).unwrap_or_default();
                let m = if matches!(decision, Decision::OnDelete) {
                    why
                } else {
                    format!(
                        "{why}; its pods ({}) still hold the rotation until a person replaces them",
                        holding[w].join(", ")
                    )
                };
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
            Decision::Restart { budget_busy } => budget_busy,
        };
        // Outside the maintenance windows no new restart starts (those started complete).
        if out.blocked.is_none() && !busy && in_flight < max && ctx.window.is_open() {
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
    // Parked outside the maintenance windows once the restarts started have completed.
    let park = if step == super::names::AWAIT_PROPAGATION_REDUCED {
        ctx.window.park_reduced()
    } else {
        ctx.window.park()
    };
    if let Some(m) = park {
        let state = |s| records.values().any(|r| r.state == s);
        if out.blocked.is_none()
            && state(WorkloadRestartState::Pending)
            && !state(WorkloadRestartState::Restarting)
        {
            out.blocked = Some(m);
        }
    }

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

    /// The one decision the operator and `linkerd trust plan` share, check by check, in the
    /// order the operator applies them.
    #[test]
    fn the_decision_checks_skip_selectors_marker_on_delete_then_budgets() {
        use k8s_openapi::api::policy::v1::{PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
        let labels = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let sel = |kv: &[(&str, &str)]| LabelSelector {
            match_labels: Some(labels(kv)),
            ..Default::default()
        };
        let budget = |max: i32, allowed: i32| PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(max)),
                selector: Some(sel(&[("app", "web")])),
                ..Default::default()
            }),
            status: Some(PodDisruptionBudgetStatus {
                disruptions_allowed: Some(allowed),
                expected_pods: Some(2),
                ..Default::default()
            }),
        };
        let web = Observed {
            meta: ObjectMeta {
                labels: Some(labels(&[("tier", "front")])),
                ..Default::default()
            },
            template_labels: labels(&[("app", "web")]),
            replicas: 2,
            ..Default::default()
        };
        let ns = labels(&[("team", "a")]);
        let auto = Automation {
            workload_restarts: RenewalMode::Automatic,
            ..Default::default()
        };
        let facts = Facts {
            skipped_by_person: false,
            namespace_labels: &ns,
            observed: Some(&web),
            marker: Some("r1/AwaitPropagation"),
            pdbs: &[],
        };
        assert_eq!(
            decide(&auto, &facts),
            Decision::Restart { budget_busy: false }
        );
        let w = WorkloadRef::parse("app/deploy/web").unwrap();
        assert_eq!(Decision::Restart { budget_busy: false }.why_not(&w), None);

        // A person's skip comes first, even for a workload that is gone.
        let skipped = Facts {
            skipped_by_person: true,
            observed: None,
            ..facts
        };
        assert_eq!(decide(&auto, &skipped), Decision::SkippedByPerson);
        assert_eq!(
            Decision::SkippedByPerson.why_not(&w).as_deref(),
            Some("app/deployment/web skipped by linkerd trust skip")
        );
        // The namespace selector is checked before the workload is needed.
        let other_team = Automation {
            namespace_selector: Some(sel(&[("team", "b")])),
            ..auto.clone()
        };
        let gone = Facts {
            observed: None,
            ..facts
        };
        assert_eq!(
            decide(&other_team, &gone),
            Decision::OutsideNamespaceSelector
        );
        assert_eq!(decide(&auto, &gone), Decision::Gone);
        let back_end = Automation {
            workload_selector: Some(sel(&[("tier", "back")])),
            ..auto.clone()
        };
        assert_eq!(decide(&back_end, &facts), Decision::OutsideWorkloadSelector);
        // Restarted for this step already (the status write was lost): resumed, not judged
        // again, whatever its budget says now.
        let marked = Observed {
            restarted_for: Some("r1/AwaitPropagation".into()),
            ..web.clone()
        };
        let never = [budget(0, 0)];
        assert_eq!(
            decide(
                &auto,
                &Facts {
                    observed: Some(&marked),
                    pdbs: &never,
                    ..facts
                }
            ),
            Decision::AlreadyRestarted
        );
        // A marker of another step is no earlier restart.
        assert_eq!(
            decide(
                &auto,
                &Facts {
                    observed: Some(&marked),
                    marker: Some("r1/AccelerateRefresh"),
                    ..facts
                }
            ),
            Decision::Restart { budget_busy: false }
        );
        let on_delete = Observed {
            strategy: "OnDelete".into(),
            ..web.clone()
        };
        assert_eq!(
            decide(
                &auto,
                &Facts {
                    observed: Some(&on_delete),
                    pdbs: &never,
                    ..facts
                }
            ),
            Decision::OnDelete
        );
        let d = decide(
            &auto,
            &Facts {
                pdbs: &never,
                ..facts
            },
        );
        assert!(
            matches!(&d, Decision::BudgetNeverAllows(m) if m.contains("PodDisruptionBudget web") && m.contains("maxUnavailable: 0")),
            "{d:?}"
        );
        assert!(d
            .why_not(&w)
            .is_some_and(|m| m.starts_with("app/deployment/web skipped: PodDisruptionBudget web")));
        let busy = [budget(1, 0)];
        assert_eq!(
            decide(
                &auto,
                &Facts {
                    pdbs: &busy,
                    ..facts
                }
            ),
            Decision::Restart { budget_busy: true }
        );
        assert_eq!(
            pdb_headroom(&busy, &web.template_labels),
            Headroom::Allows {
                budget: "web".into(),
                disruptions: 0
            }
        );
        assert_eq!(
            pdb_headroom(&never, &labels(&[("app", "db")])),
            Headroom::NoBudget
        );
    }

    #[test]
    fn the_order_is_namespace_kind_name() {
        let order = restart_order(
            [
                "b/deploy/a",
                "a/sts/z",
                "a/deploy/y",
                "a/ds/x",
                "a/deploy/b",
                "a/deploy/b",
            ]
            .iter()
            .map(|s| WorkloadRef::parse(s).unwrap()),
        );
        let names: Vec<String> = order.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "a/daemonset/x",
                "a/deployment/b",
                "a/deployment/y",
                "a/statefulset/z",
                "b/deployment/a"
            ]
        );
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
