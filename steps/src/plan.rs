//! `linkerd trust plan`: what the next (or the current) rotation does, before it does it.
//!
//! The anchor and issuer it moves to and when; every meshed workload in the order the
//! operator restarts it, with the decision the operator takes for it
//! ([`restarts::decide`], the very function [`restarts::drive`] uses); the pods it cannot
//! handle by itself and what a person does for each; an estimated duration. [`gather`] reads
//! the cluster, [`build`] is pure.

use crate::certmanager;
use crate::observe::{list_meshed_pods, MeshedPod, ObserveError};
use crate::read::{self, ReadError};
use crate::rotation::names;
use crate::rotation::restarts::{self, Decision, Gatherer, Headroom, Observed, WorkloadRef};
use crate::step::StepError;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, DynamicObject, ListParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use trust_rotation_crds::{
    ApprovalGate, Phase, RenewalMode, TrustAnchorRotation, WorkloadRestartRecord,
};

/// The steps that restart the meshed workloads (they call [`restarts::drive`]), in the order
/// a rotation reaches them: every workload is restarted once in each.
pub const RESTART_STEPS: [(&str, Phase); 3] = [
    (names::AWAIT_PROPAGATION, Phase::PropagatingTrustRoots),
    (names::ACCELERATE_REFRESH, Phase::RenewingWorkloadCerts),
    (
        names::AWAIT_PROPAGATION_REDUCED,
        Phase::RemovingOldTrustRoots,
    ),
];
/// The steps that restart the Linkerd control plane.
pub const CONTROL_PLANE_STEPS: [&str; 3] = [
    names::ROLL_CONTROL_PLANE,
    names::ROLL_CONTROL_PLANE_RENEWED,
    names::ROLL_CONTROL_PLANE_REDUCED,
];
/// What the estimate counts for a rollout whose last duration is unknown.
pub const DEFAULT_ROLLOUT_SECS: u64 = 60;
/// What the estimate adds to each batch of restarts: the operator records a restart at one
/// look and patches at the next, and sees it done at a later one (one poll each).
pub const BATCH_OVERHEAD_SECS: u64 = 2 * crate::rotation::POLL.as_secs();
/// The steps of a rotation (each waits at least one look before the next starts).
pub const STEPS: u64 = 10;

/// Errors reading what the plan needs.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
}

/// The plan; `linkerd trust plan -o json` prints exactly this (fields are only ever added).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The TrustAnchorRotation it is for.
    pub rotation: String,
    /// When the plan was made (RFC 3339).
    pub generated_at: String,
    /// The trust anchor now, and when cert-manager renews it (which starts the next rotation).
    pub anchor: CertificatePlan,
    /// `spec.automation.schedule` (scheduled anchor renewal, maintenance windows); null while
    /// this build has none.
    pub schedule: Option<SchedulePlan>,
    /// The rotation in progress; null when Synced (the plan is then for the next rotation).
    pub in_progress: Option<InProgress>,
    /// The identity issuer, and who re-issues it during the rotation.
    pub issuer: IssuerPlan,
    /// Where the rotation waits for `linkerd trust approve <step>`.
    pub approvals: Vec<ApprovalPlan>,
    /// `Automatic` (the operator restarts the workloads) or `Manual` (a person does).
    pub workload_restarts: String,
    pub max_concurrent_workloads: u32,
    /// Every meshed Deployment, StatefulSet and DaemonSet outside the control plane, in the
    /// order the operator restarts them (those it does not restart at the end).
    pub workloads: Vec<WorkloadPlan>,
    /// What the operator does not do by itself, and the command a person runs for each.
    pub person: Vec<PersonAction>,
    pub estimate: Estimate,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CertificatePlan {
    /// The cert-manager Certificate, `namespace/name`.
    pub certificate: String,
    /// SHA-256 of the certificate in its Secret (lowercase hex); null when unreadable.
    pub fingerprint: Option<String>,
    /// RFC 3339.
    pub not_after: Option<String>,
    /// When cert-manager renews it (the Certificate's `status.renewalTime`).
    pub renewal_time: Option<String>,
}

/// `spec.automation.schedule`, read with the operator's own window math
/// ([`crate::schedule`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SchedulePlan {
    /// `spec.automation.schedule.renewAnchorBefore`, as written; null when not set.
    pub renew_anchor_before: Option<String>,
    /// When the operator renews the current anchor itself (RFC 3339): once it has less
    /// validity left than `renewAnchorBefore`, at the first instant a maintenance window is
    /// open. Null when there is no scheduled renewal (or it cannot happen: see `note`).
    pub anchor_renewal: Option<String>,
    /// About the scheduled renewal: due now, waiting for a window, or why it never happens.
    pub note: Option<String>,
    /// A maintenance window is open now (true when none is configured: any time is).
    pub window_open: bool,
    /// When the open window closes (RFC 3339).
    pub window_closes: Option<String>,
    /// When the next maintenance window opens (RFC 3339); null without windows.
    pub next_window: Option<String>,
    /// The schedule is invalid: the operator's message (it acts on no schedule then).
    pub error: Option<String>,
}

/// The schedule section, from the spec, the current anchor's validity and the time. Pure.
pub fn schedule_plan(
    schedule: &trust_rotation_crds::Schedule,
    anchor_validity: Option<(Timestamp, Timestamp)>,
    now: Timestamp,
) -> SchedulePlan {
    use crate::schedule::{anchor_renewal, AnchorRenewal, Parsed, WindowState};
    let mut out = SchedulePlan {
        renew_anchor_before: schedule.renew_anchor_before.clone(),
        anchor_renewal: None,
        note: None,
        window_open: true,
        window_closes: None,
        next_window: None,
        error: None,
    };
    let parsed = match Parsed::parse(schedule) {
        Ok(p) => p,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let state = parsed.window_at(now);
    out.window_open = state.is_open();
    if let WindowState::Open { closes_at, .. } = &state {
        out.window_closes = Some(rfc3339(*closes_at));
    }
    out.next_window = state.next_opening().map(rfc3339);
    let Some((not_before, not_after)) = anchor_validity else {
        if parsed.renew_anchor_before.is_some() {
            out.note = Some("the trust anchor cannot be read: when it is due is unknown".into());
        }
        return out;
    };
    // The first instant at or after `t` when the operator may act.
    let first_open = |t: Timestamp| match parsed.window_at(t) {
        WindowState::Closed { opens_at, .. } => opens_at,
        _ => t,
    };
    match anchor_renewal(parsed.renew_anchor_before, not_before, not_after, now) {
        AnchorRenewal::Off => {}
        AnchorRenewal::NotDue { due_at } => {
            let at = first_open(due_at);
            out.anchor_renewal = Some(rfc3339(at));
            out.note = Some(if at == due_at {
                format!("due at {}", rfc3339(due_at))
            } else {
                format!(
                    "due at {}, outside the maintenance windows: renewed when the next opens",
                    rfc3339(due_at)
                )
            });
        }
        AnchorRenewal::Due { reason } => {
            out.anchor_renewal = Some(rfc3339(first_open(now)));
            out.note = Some(reason);
        }
        AnchorRenewal::LongerThanLifetime { message } => out.note = Some(message),
    }
    out
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InProgress {
    pub id: String,
    pub phase: Option<String>,
    pub current_step: Option<String>,
    pub from_anchor: Option<String>,
    pub to_anchor: Option<String>,
    pub started_at: String,
    pub blocking_message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerPlan {
    #[serde(flatten)]
    pub certificate: CertificatePlan,
    /// `Manual`: a person re-issues it when the rotation waits in WaitingForIdentityRotation;
    /// `Automatic`: the operator does.
    pub renewal: String,
    /// The operator waits for `linkerd trust approve IssuerRenewal` first.
    pub approval_required: bool,
    /// What a person runs, when a person must.
    pub command: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPlan {
    /// `IssuerRenewal` or `RootRemoval`.
    pub step: String,
    pub command: String,
}

/// Who restarts a workload.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RestartBy {
    /// The operator, in `order`.
    Operator,
    /// The operator skips it (a PodDisruptionBudget, OnDelete, `linkerd trust skip`): a
    /// person replaces its pods.
    Skipped,
    /// Outside the automation (`workloadRestarts: Manual`, or its selectors): a person.
    Person,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadPlan {
    /// 1-based position among the workloads the operator restarts; null for the others.
    pub order: Option<u32>,
    /// `namespace/kind/name`, as `status.workloadRestarts` names it.
    pub workload: String,
    pub namespace: String,
    /// `deployment`, `statefulset` or `daemonset`.
    pub kind: String,
    pub name: String,
    /// `RollingUpdate maxUnavailable=25% maxSurge=25%`, `RollingUpdate partition=0
    /// maxUnavailable=1`, `Recreate`, `OnDelete`.
    pub strategy: Option<String>,
    /// Desired pods.
    pub replicas: Option<i32>,
    /// Meshed pods it has now.
    pub meshed_pods: u32,
    /// PodDisruptionBudget headroom: null when no budget selects its pods.
    pub budget: Option<BudgetPlan>,
    /// The last rollout's duration in seconds (Deployments: the newest ReplicaSet's creation to
    /// the `Progressing` condition's `lastUpdateTime` with reason `NewReplicaSetAvailable`);
    /// null when unknown.
    pub last_rollout_seconds: Option<u64>,
    pub restart_by: RestartBy,
    /// Why not the operator, or why it waits.
    pub reason: Option<String>,
    /// What a person runs (at each of the three restart steps).
    pub command: Option<String>,
    /// The rotation in progress: its records for this workload, in step order.
    pub progress: Vec<StepProgress>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetPlan {
    pub name: String,
    /// `status.disruptionsAllowed` now; null when it never allows one.
    pub disruptions_allowed: Option<i32>,
    /// It never allows a disruption (`maxUnavailable: 0`, `minAvailable` of every pod).
    pub never: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StepProgress {
    pub step: String,
    /// `Pending`, `Restarting`, `Restarted` or `Skipped`.
    pub state: String,
    pub at: String,
    pub message: Option<String>,
}

/// Something the operator leaves to a person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PersonAction {
    /// `bare-pod`, `job-pod`, `cronjob-pod`, `other-pod` (another owner kind),
    /// `budget-never-allows`, `on-delete`, `skipped`, `outside-selectors`, `manual-restarts`.
    pub kind: String,
    /// `namespace/pod` or `namespace/kind/name`.
    pub target: String,
    pub reason: String,
    pub command: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// The whole rotation, in seconds, from the anchor's renewal to Synced.
    pub seconds: u64,
    /// Of which the workload restarts (all three steps).
    pub workload_restart_seconds: u64,
    /// Of which the control plane's three restarts.
    pub control_plane_seconds: u64,
    /// Batches of `maxConcurrentWorkloads` per restart step.
    pub batches_per_step: u32,
    pub default_rollout_seconds: u64,
    /// What the figure assumes and leaves out.
    pub assumptions: Vec<String>,
}

/// The last rollout of a Deployment: from its newest ReplicaSet's creation to the
/// `NewReplicaSetAvailable` update of its `Progressing` condition. `None` when either is
/// unknown or they disagree (a condition older than the ReplicaSet).
pub fn last_rollout_secs(
    newest_replicaset: Option<Timestamp>,
    completed: Option<Timestamp>,
) -> Option<u64> {
    let (start, end) = (newest_replicaset?, completed?);
    let secs = end.as_second() - start.as_second();
    (secs >= 0).then_some(secs as u64)
}

/// The newest ReplicaSet of the Deployment with uid `owner` (highest revision, then newest).
fn newest_replicaset(sets: &[ReplicaSet], owner: &str) -> Option<Timestamp> {
    sets.iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == owner)
        })
        .max_by_key(|rs| {
            (
                rs.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                    .and_then(|r| r.parse::<i64>().ok())
                    .unwrap_or(0),
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
        .and_then(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// One meshed workload as gathered: the decision, the workload, its budget headroom, its
/// meshed pods.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub workload: WorkloadRef,
    pub decision: Decision,
    pub observed: Option<Observed>,
    pub headroom: Headroom,
    pub last_rollout_secs: Option<u64>,
    pub pods: Vec<MeshedPod>,
}

/// Everything [`build`] needs.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub tar: TrustAnchorRotation,
    pub now: Timestamp,
    pub anchor: CertificatePlan,
    pub issuer: CertificatePlan,
    pub schedule: Option<SchedulePlan>,
    /// In [`restarts::restart_order`].
    pub workloads: Vec<Gathered>,
    /// Meshed pods outside the control plane whose owner the operator cannot restart.
    pub other_pods: Vec<MeshedPod>,
    /// The control plane's slowest last rollout, in seconds.
    pub control_plane_rollout_secs: Option<u64>,
}

async fn certificate_plan(
    client: &kube::Client,
    r: &trust_rotation_crds::CertificateRef,
    issuer: bool,
) -> Result<CertificatePlan, PlanError> {
    let read = if issuer {
        read::issuer_chain(client, r).await
    } else {
        read::anchor_certificates(client, r).await
    };
    // A missing or unparsable Secret leaves the fingerprint unknown (`linkerd trust check`
    // says why); an API failure is an error.
    let cert = match read {
        Ok(mut chain) => Some(chain.swap_remove(0)),
        Err(e) if e.kube_error().is_none() => None,
        Err(e) => return Err(e.into()),
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &r.namespace, &certmanager::certificate());
    // The Certificate may be unreadable (no cert-manager CRD, no RBAC): its renewal time is
    // then unknown, which the plan says.
    let renewal_time = api
        .get_opt(&r.certificate)
        .await
        .ok()
        .flatten()
        .and_then(|o| {
            o.data
                .pointer("/status/renewalTime")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
    Ok(CertificatePlan {
        certificate: format!("{}/{}", r.namespace, r.certificate),
        fingerprint: cert.as_ref().map(|c| c.fingerprint().to_string()),
        not_after: cert.as_ref().map(|c| rfc3339(c.not_after())),
        renewal_time,
    })
}

/// Reads what the plan needs: the rotation's certificates, every meshed pod, and for each
/// meshed workload the operator's decision (through the operator's own [`Gatherer`]).
pub async fn gather(
    client: &kube::Client,
    linkerd_ns: &str,
    tar: TrustAnchorRotation,
) -> Result<Inputs, PlanError> {
    let now = Timestamp::now();
    let anchor = certificate_plan(client, &tar.spec.trust_anchor, false).await?;
    let anchor_validity = read::anchor(client, &tar.spec.trust_anchor)
        .await
        .ok()
        .map(|c| (c.not_before(), c.not_after()));
    let issuer = certificate_plan(client, &tar.spec.identity_issuer, true).await?;
    let pods = list_meshed_pods(client, linkerd_ns).await?;
    let mut by_workload: BTreeMap<WorkloadRef, Vec<MeshedPod>> = BTreeMap::new();
    let mut other_pods = Vec::new();
    for p in pods.iter().filter(|p| p.is_workload()) {
        match WorkloadRef::of_owner(&p.pod.namespace, p.owner.as_deref()) {
            Some(w) => by_workload.entry(w).or_default().push(p.clone()),
            None => other_pods.push(p.clone()),
        }
    }
    let status = tar.status.clone().unwrap_or_default();
    let rotation = status.rotation.as_ref();
    let skips = rotation
        .map(|r| {
            restarts::skips(
                tar.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(restarts::SKIP_ANNOTATION))
                    .map(String::as_str),
                &r.id,
            )
        })
        .unwrap_or_default();
    // The step being driven, when the rotation is in one that restarts workloads.
    let marker = rotation.and_then(|r| {
        let step = status.current_step.as_deref()?;
        RESTART_STEPS
            .iter()
            .any(|(s, _)| *s == step)
            .then(|| format!("{}/{step}", r.id))
    });
    let auto = &tar.spec.automation;
    let mut gatherer = Gatherer::default();
    let mut replicasets: BTreeMap<String, Vec<ReplicaSet>> = BTreeMap::new();
    let mut workloads = Vec::new();
    for w in restarts::restart_order(by_workload.keys().cloned()) {
        let (decision, observed) = gatherer
            .decide(client, auto, &w, skips.contains(&w), marker.as_deref())
            .await?;
        let observed = match observed {
            Some(o) => Some(o),
            None if decision == Decision::Gone => None,
            None => restarts::observe(client, &w).await?,
        };
        if decision == Decision::Gone || observed.is_none() {
            continue;
        }
        let pdbs = gatherer.pdbs(client, &w.namespace).await?.to_vec();
        let headroom = observed
            .as_ref()
            .map(|o| restarts::pdb_headroom(&pdbs, &o.template_labels))
            .unwrap_or(Headroom::NoBudget);
        let last_rollout_secs = match (&observed, w.kind.as_str()) {
            (Some(o), "deployment") => {
                let sets = replicaset_list(client, &mut replicasets, &w.namespace).await?;
                let uid = o.meta.uid.clone().unwrap_or_default();
                last_rollout_secs(newest_replicaset(sets, &uid), o.rollout_completed_at)
            }
            _ => None,
        };
        let pods = by_workload.remove(&w).unwrap_or_default();
        workloads.push(Gathered {
            workload: w,
            decision,
            observed,
            headroom,
            last_rollout_secs,
            pods,
        });
    }
    // The control plane's own rollouts, for the estimate.
    let mut control_plane_rollout_secs: Option<u64> = None;
    let cp = &tar.spec.control_plane;
    for d in cp.deployments() {
        let w = WorkloadRef {
            namespace: cp.namespace.clone(),
            kind: "deployment".into(),
            name: d,
        };
        if let Some(o) = restarts::observe(client, &w).await? {
            let sets = replicaset_list(client, &mut replicasets, &w.namespace).await?;
            let uid = o.meta.uid.clone().unwrap_or_default();
            if let Some(s) =
                last_rollout_secs(newest_replicaset(sets, &uid), o.rollout_completed_at)
            {
                control_plane_rollout_secs = Some(control_plane_rollout_secs.unwrap_or(0).max(s));
            }
        }
    }
    let schedule = Some(schedule_plan(
        &tar.spec.automation.schedule,
        anchor_validity,
        now,
    ));
    Ok(Inputs {
        tar,
        now,
        anchor,
        issuer,
        schedule,
        workloads,
        other_pods,
        control_plane_rollout_secs,
    })
}

async fn replicaset_list<'a>(
    client: &kube::Client,
    cache: &'a mut BTreeMap<String, Vec<ReplicaSet>>,
    ns: &str,
) -> Result<&'a [ReplicaSet], PlanError> {
    if !cache.contains_key(ns) {
        let list = Api::<ReplicaSet>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| ReadError::api(format!("listing ReplicaSets in {ns}"), e))?;
        cache.insert(ns.to_string(), list.items);
    }
    Ok(&cache[ns])
}

fn restart_command(w: &WorkloadRef) -> String {
    format!(
        "kubectl -n {} rollout restart {}/{}",
        w.namespace, w.kind, w.name
    )
}

fn delete_pods_command(w: &WorkloadRef, pods: &[MeshedPod]) -> String {
    let names: Vec<&str> = pods.iter().map(|p| p.pod.name.as_str()).collect();
    if names.is_empty() {
        format!(
            "kubectl -n {} delete pod <each pod of {}/{}>, one at a time",
            w.namespace, w.kind, w.name
        )
    } else {
        format!(
            "kubectl -n {} delete pod {} (one at a time, each once its replacement is Ready)",
            w.namespace,
            names.join(" ")
        )
    }
}

/// RFC 3339 in whole seconds, UTC.
fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Whole seconds as `1h 2m 3s`.
pub fn human_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// The plan, from what [`gather`] read. Pure.
pub fn build(inputs: &Inputs) -> Plan {
    let tar = &inputs.tar;
    let spec = &tar.spec;
    let auto = &spec.automation;
    let automatic = auto.workload_restarts == RenewalMode::Automatic;
    let status = tar.status.clone().unwrap_or_default();
    let rotation = status.rotation.as_ref();
    let name = tar.metadata.name.clone().unwrap_or_default();

    let in_progress = rotation.map(|r| InProgress {
        id: r.id.clone(),
        phase: status.phase.map(|p| p.to_string()),
        current_step: status.current_step.clone(),
        from_anchor: r.from_anchor.clone(),
        to_anchor: r.to_anchor.clone(),
        started_at: rfc3339(r.started_at.0),
        blocking_message: status.blocking_message.clone().filter(|m| !m.is_empty()),
    });

    let issuer_approval = ApprovalGate::IssuerRenewal.required(&auto.approvals);
    let issuer_cmd = format!(
        "cmctl renew -n {} {} (or linkerd trust renew issuer), when the rotation reaches WaitingForIdentityRotation",
        spec.identity_issuer.namespace, spec.identity_issuer.certificate
    );
    let issuer = IssuerPlan {
        certificate: inputs.issuer.clone(),
        renewal: format!("{:?}", auto.issuer_renewal),
        approval_required: issuer_approval,
        command: match auto.issuer_renewal {
            RenewalMode::Manual => Some(issuer_cmd),
            RenewalMode::Automatic => None,
        },
    };
    let approvals: Vec<ApprovalPlan> = ApprovalGate::ALL
        .into_iter()
        .filter(|g| g.required(&auto.approvals))
        .map(|g| ApprovalPlan {
            step: g.to_string(),
            command: format!("linkerd trust approve {g}"),
        })
        .collect();

    let records: Vec<&WorkloadRestartRecord> = status
        .workload_restarts
        .iter()
        .filter(|r| rotation.is_some_and(|rot| rot.id == r.rotation_id))
        .collect();
    let progress_of = |w: &WorkloadRef| -> Vec<StepProgress> {
        let key = w.to_string();
        RESTART_STEPS
            .iter()
            .filter_map(|(step, _)| {
                records
                    .iter()
                    .find(|r| r.workload == key && r.step == *step)
                    .map(|r| StepProgress {
                        step: step.to_string(),
                        state: format!("{:?}", r.state),
                        at: rfc3339(r.at.0),
                        message: r.message.clone(),
                    })
            })
            .collect()
    };

    let mut operator: Vec<WorkloadPlan> = Vec::new();
    let mut others: Vec<WorkloadPlan> = Vec::new();
    let mut person: Vec<PersonAction> = Vec::new();
    let mut rollouts: Vec<u64> = Vec::new();
    for g in &inputs.workloads {
        let w = &g.workload;
        let o = g.observed.as_ref();
        let on_delete = o.is_some_and(|o| o.on_delete());
        let manual_command = if on_delete {
            delete_pods_command(w, &g.pods)
        } else {
            restart_command(w)
        };
        let (restart_by, reason, command, action_kind) = if !automatic {
            (
                RestartBy::Person,
                Some("spec.automation.workloadRestarts is Manual: a person restarts it at each of the three restart steps".to_string()),
                Some(manual_command.clone()),
                Some("manual-restarts"),
            )
        } else {
            match &g.decision {
                Decision::Restart { budget_busy } => (
                    RestartBy::Operator,
                    budget_busy.then(|| match &g.headroom {
                        Headroom::Allows { budget, .. } => format!(
                            "waits while PodDisruptionBudget {budget} allows no disruption (later workloads may go first)"
                        ),
                        _ => "waits for its PodDisruptionBudget".to_string(),
                    }),
                    None,
                    None,
                ),
                Decision::AlreadyRestarted => (
                    RestartBy::Operator,
                    Some("already restarted for the current step".to_string()),
                    None,
                    None,
                ),
                Decision::SkippedByPerson => (
                    RestartBy::Skipped,
                    g.decision.why_not(w),
                    Some(manual_command.clone()),
                    Some("skipped"),
                ),
                Decision::OnDelete => (
                    RestartBy::Skipped,
                    g.decision.why_not(w),
                    Some(manual_command.clone()),
                    Some("on-delete"),
                ),
                Decision::BudgetNeverAllows(why) => (
                    RestartBy::Skipped,
                    Some(why.clone()),
                    Some(format!(
                        "{manual_command} (when a disruption is acceptable; the budget does not stop a rollout, the operator honours it)"
                    )),
                    Some("budget-never-allows"),
                ),
                Decision::OutsideNamespaceSelector | Decision::OutsideWorkloadSelector => (
                    RestartBy::Person,
                    g.decision.why_not(w),
                    Some(manual_command.clone()),
                    Some("outside-selectors"),
                ),
                Decision::Gone => continue,
            }
        };
        if let (Some(kind), Some(cmd), Some(why)) = (action_kind, &command, &reason) {
            person.push(PersonAction {
                kind: kind.to_string(),
                target: w.to_string(),
                reason: why.clone(),
                command: cmd.clone(),
            });
        }
        let budget = match &g.headroom {
            Headroom::NoBudget => None,
            Headroom::Never { budget, .. } => Some(BudgetPlan {
                name: budget.clone(),
                disruptions_allowed: None,
                never: true,
            }),
            Headroom::Allows {
                budget,
                disruptions,
            } => Some(BudgetPlan {
                name: budget.clone(),
                disruptions_allowed: Some(*disruptions),
                never: false,
            }),
        };
        let plan = WorkloadPlan {
            order: None,
            workload: w.to_string(),
            namespace: w.namespace.clone(),
            kind: w.kind.clone(),
            name: w.name.clone(),
            strategy: o.map(|o| o.strategy.clone()),
            replicas: o.map(|o| o.replicas),
            meshed_pods: g.pods.len() as u32,
            budget,
            last_rollout_seconds: g.last_rollout_secs,
            restart_by,
            reason,
            command,
            progress: progress_of(w),
        };
        if restart_by == RestartBy::Operator || !automatic {
            rollouts.push(g.last_rollout_secs.unwrap_or(DEFAULT_ROLLOUT_SECS));
        }
        if restart_by == RestartBy::Operator {
            operator.push(plan);
        } else {
            others.push(plan);
        }
    }
    for (i, p) in operator.iter_mut().enumerate() {
        p.order = Some(i as u32 + 1);
    }
    for p in &inputs.other_pods {
        let (kind, reason) = match p.owner.as_deref().and_then(|o| o.split_once('/')) {
            None => (
                "bare-pod",
                "a bare pod: nothing recreates it, and the operator never deletes a pod".to_string(),
            ),
            Some(("job", j)) => (
                "job-pod",
                format!("a pod of Job {j}: the operator never deletes it; it holds the rotation until it finishes"),
            ),
            Some(("cronjob", c)) => (
                "cronjob-pod",
                format!("a pod of CronJob {c}: it holds the rotation until it finishes; later runs get the current bundle"),
            ),
            Some((k, n)) => (
                "other-pod",
                format!("owned by {k}/{n}, which the operator does not restart"),
            ),
        };
        person.push(PersonAction {
            kind: kind.to_string(),
            target: p.pod.to_string(),
            reason,
            command: p.restart_command(),
        });
    }

    // The estimate.
    let max = auto.max_concurrent_workloads.max(1) as usize;
    let (per_step, batches) = if automatic {
        let batches: Vec<u64> = rollouts
            .chunks(max)
            .map(|b| b.iter().copied().max().unwrap_or(0) + BATCH_OVERHEAD_SECS)
            .collect();
        (batches.iter().sum::<u64>(), batches.len() as u32)
    } else {
        // A person's `kubectl rollout restart` of everything at once.
        let slowest = rollouts.iter().copied().max();
        (
            slowest.map_or(0, |s| s + BATCH_OVERHEAD_SECS),
            u32::from(slowest.is_some()),
        )
    };
    let workload_restart_seconds = per_step * RESTART_STEPS.len() as u64;
    let cp_rollout = inputs
        .control_plane_rollout_secs
        .unwrap_or(DEFAULT_ROLLOUT_SECS);
    let control_plane_seconds =
        (cp_rollout + BATCH_OVERHEAD_SECS) * CONTROL_PLANE_STEPS.len() as u64;
    let poll = crate::rotation::POLL.as_secs();
    let seconds = workload_restart_seconds + control_plane_seconds + STEPS * poll;
    let mut assumptions = vec![
        format!(
            "every workload is restarted three times, once in each of {} ({}), {}",
            RESTART_STEPS
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>()
                .join(", "),
            RESTART_STEPS
                .iter()
                .map(|(_, p)| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if automatic {
                format!(
                    "in batches of maxConcurrentWorkloads ({max}) in the order listed; a batch takes its slowest workload's last rollout plus {BATCH_OVERHEAD_SECS}s of the operator's looks"
                )
            } else {
                "by a person, all at once (workloadRestarts: Manual), taking the slowest last rollout".to_string()
            }
        ),
        format!("a workload whose last rollout duration is unknown counts {DEFAULT_ROLLOUT_SECS}s"),
        format!(
            "the control plane is restarted three times ({}), each taking {cp_rollout}s{}",
            CONTROL_PLANE_STEPS.join(", "),
            if inputs.control_plane_rollout_secs.is_some() {
                " (its slowest last rollout)"
            } else {
                " (its last rollout is unknown)"
            }
        ),
        format!("each of the {STEPS} steps waits one look ({poll}s) at least"),
    ];
    let mut left_out = vec!["cert-manager's issuance of the new anchor and issuer"];
    if auto.issuer_renewal == RenewalMode::Manual {
        left_out.push("a person renewing the identity issuer");
    }
    if !approvals.is_empty() {
        left_out.push("approvals");
    }
    if !person.is_empty() && automatic {
        left_out.push("a person replacing the pods listed under what a person must do");
    }
    left_out.push("PodDisruptionBudgets that allow no disruption at the moment");
    if let Some(s) = inputs.schedule.as_ref().filter(|s| s.next_window.is_some()) {
        {
            left_out.push("waiting for a maintenance window");
            assumptions.push(format!(
                "maintenance windows: outside them the operator starts no restart, re-issues no issuer and removes no root; a rotation longer than the open window{} parks until the next one{}",
                s.window_closes
                    .as_deref()
                    .map(|c| format!(" (closes {c})"))
                    .unwrap_or_default(),
                s.next_window
                    .as_deref()
                    .map(|n| format!(" (opens {n})"))
                    .unwrap_or_default()
            ));
        }
    }
    if !automatic {
        left_out.push("the time until a person restarts the workloads");
    }
    assumptions.push(format!("not counted: {}", left_out.join(", ")));

    let mut workloads = operator;
    workloads.extend(others);
    Plan {
        rotation: name,
        generated_at: rfc3339(inputs.now),
        anchor: inputs.anchor.clone(),
        schedule: inputs.schedule.clone(),
        in_progress,
        issuer,
        approvals,
        workload_restarts: format!("{:?}", auto.workload_restarts),
        max_concurrent_workloads: auto.max_concurrent_workloads.max(1),
        workloads,
        person,
        estimate: Estimate {
            seconds,
            workload_restart_seconds,
            control_plane_seconds,
            batches_per_step: batches,
            default_rollout_seconds: DEFAULT_ROLLOUT_SECS,
            assumptions,
        },
    }
}

/// The names of the workloads the operator restarts, in its order (what a CI gate compares
/// with `status.workloadRestarts`).
pub fn operator_order(plan: &Plan) -> Vec<String> {
    plan.workloads
        .iter()
        .filter(|w| w.restart_by == RestartBy::Operator)
        .map(|w| w.workload.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::propagation::tests::pod;
    use trust_rotation_crds::TrustAnchorRotationSpec;

    fn gathered(w: &str, decision: Decision, rollout: Option<u64>) -> Gathered {
        Gathered {
            workload: WorkloadRef::parse(w).unwrap(),
            decision,
            observed: Some(Observed {
                replicas: 2,
                strategy: "RollingUpdate maxUnavailable=25% maxSurge=25%".into(),
                ..Default::default()
            }),
            headroom: Headroom::NoBudget,
            last_rollout_secs: rollout,
            pods: vec![],
        }
    }

    fn inputs(automatic: bool) -> Inputs {
        let mut spec = TrustAnchorRotationSpec::default();
        spec.automation.max_concurrent_workloads = 2;
        if automatic {
            spec.automation.workload_restarts = RenewalMode::Automatic;
        }
        let cert = |c: &str| CertificatePlan {
            certificate: c.into(),
            fingerprint: None,
            not_after: None,
            renewal_time: None,
        };
        let mut bare = pod("app", "debug", None);
        bare.owner = None;
        Inputs {
            tar: TrustAnchorRotation::new("cluster", spec),
            now: Timestamp::UNIX_EPOCH,
            anchor: cert("cert-manager/linkerd-trust-anchor"),
            issuer: cert("linkerd/linkerd-identity-issuer"),
            schedule: None,
            workloads: vec![
                gathered(
                    "app/deploy/a",
                    Decision::Restart { budget_busy: false },
                    Some(10),
                ),
                gathered(
                    "app/deploy/b",
                    Decision::Restart { budget_busy: false },
                    None,
                ),
                gathered(
                    "app/sts/c",
                    Decision::BudgetNeverAllows(
                        "PodDisruptionBudget c allows no disruption".into(),
                    ),
                    Some(5),
                ),
                gathered(
                    "app/sts/d",
                    Decision::Restart { budget_busy: true },
                    Some(30),
                ),
            ],
            other_pods: vec![bare],
            control_plane_rollout_secs: None,
        }
    }

    #[test]
    fn the_plan_orders_the_operators_restarts_first_and_estimates_in_batches() {
        let plan = build(&inputs(true));
        let rows: Vec<(Option<u32>, &str, RestartBy)> = plan
            .workloads
            .iter()
            .map(|w| (w.order, w.workload.as_str(), w.restart_by))
            .collect();
        assert_eq!(
            rows,
            [
                (Some(1), "app/deployment/a", RestartBy::Operator),
                (Some(2), "app/deployment/b", RestartBy::Operator),
                (Some(3), "app/statefulset/d", RestartBy::Operator),
                (None, "app/statefulset/c", RestartBy::Skipped),
            ]
        );
        assert!(plan.workloads[2]
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("waits")));
        let kinds: Vec<(&str, &str)> = plan
            .person
            .iter()
            .map(|a| (a.kind.as_str(), a.target.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("budget-never-allows", "app/statefulset/c"),
                ("bare-pod", "app/debug")
            ]
        );
        assert_eq!(
            plan.person[1].command,
            "kubectl -n app delete pod debug (a bare pod: nothing recreates it)"
        );
        // Batches of two: [10, 60 (unknown)] and [30], each its slowest plus the looks.
        let e = &plan.estimate;
        assert_eq!(e.batches_per_step, 2);
        assert_eq!(
            e.workload_restart_seconds,
            3 * ((60 + BATCH_OVERHEAD_SECS) + (30 + BATCH_OVERHEAD_SECS))
        );
        assert_eq!(
            e.control_plane_seconds,
            3 * (DEFAULT_ROLLOUT_SECS + BATCH_OVERHEAD_SECS)
        );
        assert_eq!(
            e.seconds,
            e.workload_restart_seconds + e.control_plane_seconds + STEPS * 2
        );
        assert!(e.assumptions.iter().any(|a| a.contains("counts 60s")));
        assert_eq!(
            operator_order(&plan),
            ["app/deployment/a", "app/deployment/b", "app/statefulset/d"]
        );
    }

    #[test]
    fn with_manual_restarts_a_person_restarts_everything() {
        let plan = build(&inputs(false));
        assert!(plan
            .workloads
            .iter()
            .all(|w| w.restart_by == RestartBy::Person && w.order.is_none()));
        assert_eq!(
            plan.workloads[0].command.as_deref(),
            Some("kubectl -n app rollout restart deployment/a")
        );
        assert!(operator_order(&plan).is_empty());
        assert_eq!(plan.estimate.batches_per_step, 1);
        assert_eq!(
            plan.estimate.workload_restart_seconds,
            3 * (60 + BATCH_OVERHEAD_SECS)
        );
        assert_eq!(
            plan.issuer.command.as_deref(),
            Some("cmctl renew -n linkerd linkerd-identity-issuer (or linkerd trust renew issuer), when the rotation reaches WaitingForIdentityRotation")
        );
    }

    #[test]
    fn the_schedule_section_uses_the_operators_window_math() {
        let ts = |s: &str| s.parse::<Timestamp>().unwrap();
        let schedule: trust_rotation_crds::Schedule = serde_json::from_value(serde_json::json!({
            "renewAnchorBefore": "720h",
            "maintenanceWindows": [{"weekdays": ["Tue"], "start": "02:00", "duration": "4h", "timeZone": "UTC"}],
        }))
        .unwrap();
        let anchor = Some((ts("2026-02-01T00:00:00Z"), ts("2027-02-01T00:00:00Z")));
        // Wednesday noon: closed; due on Saturday 2027-01-02, renewed the Tuesday after.
        let s = schedule_plan(&schedule, anchor, ts("2026-12-02T12:00:00Z"));
        assert_eq!(s.renew_anchor_before.as_deref(), Some("720h"));
        assert!(!s.window_open);
        assert_eq!(s.next_window.as_deref(), Some("2026-12-08T02:00:00Z"));
        assert_eq!(s.anchor_renewal.as_deref(), Some("2027-01-05T02:00:00Z"));
        assert_eq!(
            s.note.as_deref(),
            Some("due at 2027-01-02T00:00:00Z, outside the maintenance windows: renewed when the next opens")
        );
        // Inside the window: open until it closes.
        let s = schedule_plan(&schedule, anchor, ts("2026-12-08T03:00:00Z"));
        assert!(s.window_open);
        assert_eq!(s.window_closes.as_deref(), Some("2026-12-08T06:00:00Z"));
        // No schedule: any time, no scheduled renewal.
        let none = schedule_plan(&Default::default(), anchor, ts("2026-12-02T12:00:00Z"));
        assert!(none.window_open && none.next_window.is_none() && none.anchor_renewal.is_none());
        // A bad zone is the operator's message.
        let bad: trust_rotation_crds::Schedule = serde_json::from_value(serde_json::json!({
            "maintenanceWindows": [{"weekdays": ["Tue"], "start": "02:00", "duration": "4h", "timeZone": "Mars/Olympus"}],
        }))
        .unwrap();
        assert!(schedule_plan(&bad, anchor, ts("2026-12-02T12:00:00Z"))
            .error
            .is_some_and(|e| e.contains("Mars/Olympus")));
    }

    #[test]
    fn last_rollouts_need_both_ends_in_order() {
        let t = |s: i64| Some(Timestamp::from_second(s).unwrap());
        assert_eq!(last_rollout_secs(t(100), t(145)), Some(45));
        assert_eq!(last_rollout_secs(t(100), t(90)), None);
        assert_eq!(last_rollout_secs(None, t(90)), None);
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(125), "2m 5s");
        assert_eq!(human_duration(3725), "1h 2m 5s");
    }
}
