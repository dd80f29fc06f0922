//! RollControlPlane: `kubectl rollout restart` of the control-plane Deployments after a bundle
//! change, the proxy injector first, then waiting until each has rolled out onto the restarted
//! template.
//!
//! Each restart marks the pod template with `trust.linkerd.io/restarted-for:
//! <rotation id>/<step name>` (next to `kubectl.kubernetes.io/restartedAt`), so a resumed
//! operator sees that this step already restarted a Deployment and never restarts it twice,
//! while the same step type later in the workflow (a different name) restarts it again.
//!
//! Whether a restart has rolled out is judged the way the Deployment controller reports it,
//! never by comparing clocks: the Deployment's controller has observed the marked template
//! (`observedGeneration`), the newest ReplicaSet whose template carries the marker has every
//! desired replica available, no other ReplicaSet of the Deployment still has a pod, and the
//! Deployment's `updatedReplicas`/`availableReplicas` agree. (Comparing the step's finish time,
//! on the operator's clock, with each pod's start time, on its kubelet's clock, can wait
//! forever when the clocks disagree or round differently.)

use super::{names, POLL};
use crate::read;
use crate::read::RESTARTED_FOR_ANNOTATION;
use crate::runner::telemetry::TracedWrite as _;
use crate::runner::FIELD_MANAGER;
use crate::step::{Outcome, Step, StepContext, StepError, StepReport};
use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams, Patch, PatchParams};

use trust_rotation_crds::Phase;

/// What RollControlPlane should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollDecision {
    /// Restart these Deployments (template annotation) now.
    Restart(Vec<String>),
    Wait(String),
    Done,
}

/// One ReplicaSet of a control-plane Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaSetView {
    pub name: String,
    /// `spec.template.metadata.annotations["trust.linkerd.io/restarted-for"]`.
    pub restarted_for: Option<String>,
    /// `deployment.kubernetes.io/revision`.
    pub revision: i64,
    /// `spec.replicas`.
    pub desired: i32,
    /// `status.replicas`: its pods that exist.
    pub pods: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

/// A control-plane Deployment's rollout: its status and its ReplicaSets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RolloutView {
    pub name: String,
    /// The marker on the Deployment's pod template.
    pub restarted_for: Option<String>,
    pub generation: i64,
    pub observed_generation: i64,
    /// `spec.replicas`.
    pub desired: i32,
    /// `status.replicas`, `status.updatedReplicas`, `status.availableReplicas`.
    pub replicas: i32,
    pub updated: i32,
    pub available: i32,
    /// The ReplicaSets the Deployment owns.
    pub replica_sets: Vec<ReplicaSetView>,
}

impl RolloutView {
    /// `None` once the restart marked `marker` has rolled out; else what it waits for.
    pub fn pending(&self, marker: &str) -> Option<String> {
        let name = &self.name;
        if self.observed_generation < self.generation {
            return Some(format!(
                "deployment/{name}: the Deployment controller has not observed the restart yet \
                 (observedGeneration {} < generation {})",
                self.observed_generation, self.generation
            ));
        }
        let Some(new) = self
            .replica_sets
            .iter()
            .filter(|rs| rs.restarted_for.as_deref() == Some(marker))
            .max_by_key(|rs| rs.revision)
        else {
            return Some(format!(
                "deployment/{name}: no ReplicaSet with the restarted template yet"
            ));
        };
        if new.desired < self.desired || new.available < self.desired {
            return Some(format!(
                "deployment/{name}: new ReplicaSet {} has {}/{} available",
                new.name, new.available, self.desired
            ));
        }
        let old: Vec<String> = self
            .replica_sets
            .iter()
            .filter(|rs| rs.name != new.name && rs.pods > 0)
            .map(|rs| {
                format!(
                    "{} ({} pod{})",
                    rs.name,
                    rs.pods,
                    if rs.pods == 1 { "" } else { "s" }
                )
            })
            .collect();
        if !old.is_empty() {
            return Some(format!(
                "deployment/{name}: older ReplicaSet(s) still run pods started before the restart: {}",
                old.join(", ")
            ));
        }
        if self.updated < self.desired
            || self.replicas != self.updated
            || self.available < self.desired
        {
            return Some(format!(
                "deployment/{name}: {}/{} updated, {}/{} available, {} total replicas",
                self.updated, self.desired, self.available, self.desired, self.replicas
            ));
        }
        None
    }
}

/// The restart stamp (RFC 3339, seconds, UTC) for a step that started at `started`.
pub fn restart_stamp(started: Timestamp) -> String {
    Timestamp::from_second(started.as_second())
        .unwrap_or(started)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The marker of one step of one rotation.
pub fn restart_marker(rotation_id: &str, step: &str) -> String {
    format!("{rotation_id}/{step}")
}

/// Decides over the Deployments in order (the injector first): the injector is restarted
/// and must have rolled out before any other Deployment restarts; the others restart
/// together.
pub fn decide_roll(views: &[RolloutView], marker: &str) -> RollDecision {
    let Some((first, rest)) = views.split_first() else {
        return RollDecision::Done;
    };
    for group in [std::slice::from_ref(first), rest] {
        let to_restart: Vec<String> = group
            .iter()
            .filter(|v| v.restarted_for.as_deref() != Some(marker))
            .map(|v| v.name.clone())
            .collect();
        if !to_restart.is_empty() {
            return RollDecision::Restart(to_restart);
        }
        let pending: Vec<String> = group.iter().filter_map(|v| v.pending(marker)).collect();
        if !pending.is_empty() {
            return RollDecision::Wait(format!(
                "waiting for the control plane to roll: {}",
                pending.join("; ")
            ));
        }
    }
    RollDecision::Done
}

fn template_marker(t: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Option<String> {
    t.and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(RESTARTED_FOR_ANNOTATION))
        .cloned()
}

/// Reads a Deployment and the ReplicaSets it owns. `Ok(None)` when the Deployment does not
/// exist.
pub async fn read_rollout(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<RolloutView>, StepError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(d) = api
        .get_opt(name)
        .await
        .map_err(|e| StepError::from_kube(format!("reading Deployment {namespace}/{name}"), e))?
    else {
        return Ok(None);
    };
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let labels = d
        .spec
        .selector
        .match_labels
        .as_ref()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let list = sets
        .list(&ListParams::default().labels(&labels))
        .await
        .map_err(|e| {
            StepError::from_kube(
                format!("listing the ReplicaSets of Deployment {namespace}/{name}"),
                e,
            )
        })?;
    let replica_sets = list
        .items
        .iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .map(|rs| ReplicaSetView {
            name: rs.metadata.name.clone().unwrap_or_default(),
            restarted_for: template_marker(rs.spec.template.as_ref()),
            revision: rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
            desired: rs.spec.replicas.unwrap_or(1),
            pods: rs.status.as_ref().map_or(0, |s| s.replicas),
            available: rs
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0),
        })
        .collect();
    let status = d.status.as_ref();
    Ok(Some(RolloutView {
        name: name.to_string(),
        restarted_for: template_marker(Some(&d.spec.template)),
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: status.and_then(|s| s.observed_generation).unwrap_or(0),
        desired: d.spec.replicas.unwrap_or(1),
        replicas: status.and_then(|s| s.replicas).unwrap_or(0),
        updated: status.and_then(|s| s.updated_replicas).unwrap_or(0),
        available: status.and_then(|s| s.available_replicas).unwrap_or(0),
        replica_sets,
    }))
}

/// Restarts and waits for the control plane after the step named `after` changed the bundle.
pub struct RollControlPlane {
    name: &'static str,
    phase: Phase,
    after: &'static str,
    /// Whether the maintenance windows hold back its first restart.
    in_windows: bool,
}

impl RollControlPlane {
    pub fn new(name: &'static str, phase: Phase, after: &'static str) -> Self {
        Self {
            name,
            phase,
            after,
            in_windows: false,
        }
    }

    /// Starts restarting only inside a maintenance window (a restart already started
    /// completes). Not for the restart onto the expanded bundle: until the old+new bundle has
    /// reached the control plane, holding the rotation is not safe.
    pub fn inside_windows(mut self) -> Self {
        self.in_windows = true;
        self
    }
}

#[async_trait]
impl Step for RollControlPlane {
    fn name(&self) -> &str {
        self.name
    }

    fn phase(&self) -> Phase {
        self.phase
    }

    async fn run(&self, ctx: &StepContext) -> Result<StepReport, StepError> {
        // The bundle invariant first: no restart onto a broken bundle.
        let progress = crate::guarded!(ctx).progress();
        Ok(self.execute(ctx).await?.with(progress))
    }
}

impl RollControlPlane {
    async fn execute(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        let cp = &ctx.spec.control_plane;
        let marker = restart_marker(&ctx.rotation.id, self.name);
        let mut views = Vec::new();
        for name in cp.deployments() {
            match read_rollout(&ctx.client, &cp.namespace, &name).await? {
                Some(v) => views.push(v),
                None => {
                    return Ok(Outcome::blocked(format!(
                        "control-plane Deployment {}/{name} does not exist: check spec.controlPlane of the TrustAnchorRotation \
                         and that Linkerd is installed (`linkerd check`)",
                        cp.namespace
                    )))
                }
            }
        }
        match decide_roll(&views, &marker) {
            RollDecision::Done => Ok(Outcome::Done),
            RollDecision::Wait(reason) => Ok(Outcome::wait(reason, POLL)),
            RollDecision::Restart(names) => {
                // The step's first restart waits for a maintenance window; one started
                // before the window closed completes.
                let started = views
                    .iter()
                    .any(|v| v.restarted_for.as_deref() == Some(marker.as_str()));
                if self.in_windows && !started {
                    let park = if self.after == names::REDUCE_BUNDLE {
                        ctx.window.park_reduced()
                    } else {
                        ctx.window.park()
                    };
                    if let Some(m) = park {
                        return Ok(Outcome::blocked(m));
                    }
                }
                let value = restart_stamp(ctx.now);
                let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &cp.namespace);
                for name in &names {
                    let patch = serde_json::json!({
                        "spec": {"template": {"metadata": {"annotations": {
                            read::RESTARTED_AT_ANNOTATION: value,
                            read::RESTARTED_FOR_ANNOTATION: marker,
                        }}}}
                    });
                    api.patch(
                        name,
                        &PatchParams {
                            field_manager: Some(FIELD_MANAGER.into()),
                            ..Default::default()
                        },
                        &Patch::Strategic(&patch),
                    )
                    .traced_write("patch", "Deployment", &cp.namespace, name)
                    .await
                    .map_err(|e| {
                        StepError::from_kube(
                            format!("restarting Deployment {}/{name}", cp.namespace),
                            e,
                        )
                    })?;
                }
                Ok(Outcome::wait(
                    format!(
                        "restarted {} (restartedAt {value}) after {}; waiting for them to roll out",
                        names.join(", "),
                        self.after
                    ),
                    POLL,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(
        name: &str,
        marker: Option<&str>,
        revision: i64,
        pods: i32,
        available: i32,
    ) -> ReplicaSetView {
        ReplicaSetView {
            name: name.into(),
            restarted_for: marker.map(str::to_string),
            revision,
            desired: pods.max(available),
            pods,
            available,
        }
    }

    /// A Deployment of one replica restarted with `marker` whose rollout is complete.
    fn rolled(name: &str, marker: &str) -> RolloutView {
        RolloutView {
            name: name.into(),
            restarted_for: Some(marker.into()),
            generation: 3,
            observed_generation: 3,
            desired: 1,
            replicas: 1,
            updated: 1,
            available: 1,
            replica_sets: vec![
                rs(&format!("{name}-old"), None, 1, 0, 0),
                rs(&format!("{name}-new"), Some(marker), 2, 1, 1),
            ],
        }
    }

    /// The same Deployment before the restart (with another step's marker, or none).
    fn unmarked(name: &str, marker: Option<&str>) -> RolloutView {
        RolloutView {
            restarted_for: marker.map(str::to_string),
            replica_sets: vec![rs(&format!("{name}-old"), marker, 1, 1, 1)],
            ..rolled(name, "unused")
        }
    }

    const NAMES: [&str; 3] = [
        "linkerd-proxy-injector",
        "linkerd-identity",
        "linkerd-destination",
    ];

    #[test]
    fn injector_first_then_the_rest_together() {
        let m = restart_marker("r1", "RollControlPlane");
        // Nothing restarted yet (or restarted by an earlier step): only the injector.
        let earlier = restart_marker("r1", "RollControlPlaneRenewed");
        let v: Vec<_> = NAMES.iter().map(|n| unmarked(n, Some(&earlier))).collect();
        assert_eq!(
            decide_roll(&v, &m),
            RollDecision::Restart(vec!["linkerd-proxy-injector".into()])
        );
        // Injector restarted but its new ReplicaSet is not available yet: nothing else restarts.
        let mut v: Vec<_> = NAMES.iter().map(|n| unmarked(n, None)).collect();
        v[0] = rolled(NAMES[0], &m);
        v[0].replica_sets[1].available = 0;
        v[0].available = 0;
        assert!(
            matches!(decide_roll(&v, &m), RollDecision::Wait(w) if w.contains("new ReplicaSet linkerd-proxy-injector-new has 0/1 available"))
        );
        // Injector done: identity and destination together.
        v[0] = rolled(NAMES[0], &m);
        assert_eq!(
            decide_roll(&v, &m),
            RollDecision::Restart(vec![
                "linkerd-identity".into(),
                "linkerd-destination".into()
            ])
        );
        // A resumed operator sees its own marker and does not restart again.
        v[1] = rolled(NAMES[1], &m);
        v[2] = rolled(NAMES[2], &m);
        v[2].observed_generation = 2;
        assert!(
            matches!(decide_roll(&v, &m), RollDecision::Wait(w) if w.contains("linkerd-destination") && w.contains("not observed the restart"))
        );
        v[2] = rolled(NAMES[2], &m);
        assert_eq!(decide_roll(&v, &m), RollDecision::Done);
    }

    #[test]
    fn waits_for_old_pods_to_go_and_for_the_marked_replica_set() {
        let m = restart_marker("r1", "RollControlPlaneReduced");
        // The old ReplicaSet still has a pod (terminating or not scaled down yet).
        let mut v = rolled("linkerd-identity", &m);
        v.replica_sets[0].pods = 1;
        v.replicas = 2;
        let w = v.pending(&m).expect("waits");
        assert!(w.contains("linkerd-identity-old (1 pod)"), "{w}");
        // The controller observed the template but has not created the marked ReplicaSet.
        let mut v = rolled("linkerd-identity", &m);
        v.replica_sets.truncate(1);
        assert!(v
            .pending(&m)
            .expect("waits")
            .contains("no ReplicaSet with the restarted template"));
        // A later restart by someone else keeps the marker: the newest marked one counts.
        let mut v = rolled("linkerd-identity", &m);
        v.replica_sets[1].pods = 0;
        v.replica_sets[1].available = 0;
        v.replica_sets
            .push(rs("linkerd-identity-newer", Some(&m), 3, 1, 1));
        assert_eq!(v.pending(&m), None);
    }

    #[test]
    fn no_clock_is_consulted() {
        // Whatever time the pods of the marked ReplicaSet report having started (a kubelet's
        // clock may be behind the operator's), the rollout is judged by the ReplicaSets alone.
        let m = restart_marker("r1", "RollControlPlaneReduced");
        let views: Vec<_> = NAMES.iter().map(|n| rolled(n, &m)).collect();
        assert_eq!(decide_roll(&views, &m), RollDecision::Done);
    }

    #[test]
    fn stamp_is_rfc3339_seconds() {
        let t: Timestamp = "2026-11-29T16:00:00.123456Z".parse().unwrap();
        assert_eq!(restart_stamp(t), "2026-11-29T16:00:00Z");
    }
}
