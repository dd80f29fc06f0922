//! RollControlPlane: `kubectl rollout restart` of the control-plane Deployments after a bundle
//! change, the proxy injector first, then waiting until each is Available with every pod
//! started after the restart.
//!
//! Each restart marks the pod template with `trust.linkerd.io/restarted-for:
//! <rotation id>/<step name>` (next to `kubectl.kubernetes.io/restartedAt`), so a resumed
//! operator sees that this step already restarted a Deployment and never restarts it twice,
//! while the same step type later in the workflow (a different name) restarts it again.

use super::POLL;
use crate::runner::FIELD_MANAGER;
use crate::snapshot::{read_deployment, DeploymentView};
use crate::step::{Outcome, Step, StepContext, StepError};
use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use std::time::Duration;
use trust_rotation_crds::Phase;

/// What RollControlPlane should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollDecision {
    /// Restart these Deployments (template annotation) now.
    Restart(Vec<String>),
    Wait(String),
    Done,
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
/// and must be Available with fresh pods before any other Deployment restarts; the others
/// restart together.
pub fn decide_roll(views: &[DeploymentView], marker: &str) -> RollDecision {
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
        let pending: Vec<String> = group
            .iter()
            .filter_map(|v| {
                if !v.rollout_complete() {
                    Some(v.progress())
                } else if !v.stale_pods.is_empty() {
                    Some(format!(
                        "deployment/{}: pod(s) {} still run a proxy started before the restart",
                        v.name,
                        v.stale_pods.join(", ")
                    ))
                } else {
                    None
                }
            })
            .collect();
        if !pending.is_empty() {
            return RollDecision::Wait(format!(
                "waiting for the control plane to roll: {}",
                pending.join("; ")
            ));
        }
    }
    RollDecision::Done
}

/// Restarts and waits for the control plane after the step named `after` changed the bundle.
pub struct RollControlPlane {
    name: &'static str,
    phase: Phase,
    after: &'static str,
}

impl RollControlPlane {
    pub fn new(name: &'static str, phase: Phase, after: &'static str) -> Self {
        Self { name, phase, after }
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

    fn deadline(&self) -> Option<Duration> {
        Some(Duration::from_secs(10 * 60))
    }

    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        let cp = &ctx.spec.control_plane;
        // Pods must have started after the change this step rolls the control plane for.
        let changed = ctx.finished_at(self.after).unwrap_or(ctx.step_started_at);
        let since = Timestamp::from_second(changed.as_second()).unwrap_or(changed);
        let marker = restart_marker(&ctx.rotation.id, self.name);
        let mut views = Vec::new();
        for name in cp.deployments() {
            match read_deployment(&ctx.client, &cp.namespace, &name, since).await? {
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
                let value = restart_stamp(ctx.now);
                let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &cp.namespace);
                for name in &names {
                    let patch = serde_json::json!({
                        "spec": {"template": {"metadata": {"annotations": {
                            crate::snapshot::RESTARTED_AT_ANNOTATION: value,
                            crate::snapshot::RESTARTED_FOR_ANNOTATION: marker,
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
                        "restarted {} (restartedAt {value}); waiting for them to become Available",
                        names.join(", ")
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

    fn view(name: &str, marker: Option<&str>, complete: bool, stale: &[&str]) -> DeploymentView {
        DeploymentView {
            name: name.into(),
            restarted_at: None,
            restarted_for: marker.map(str::to_string),
            generation: 2,
            observed_generation: 2,
            desired: 1,
            replicas: if complete { 1 } else { 2 },
            updated: 1,
            available: 1,
            stale_pods: stale.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn injector_first_then_the_rest_together() {
        let m = restart_marker("r1", "RollControlPlane");
        let s = Some(m.as_str());
        let names = [
            "linkerd-proxy-injector",
            "linkerd-identity",
            "linkerd-destination",
        ];
        // Nothing restarted yet (or restarted by an earlier step): only the injector.
        let earlier = restart_marker("r1", "RollControlPlaneRenewed");
        let v: Vec<_> = names
            .iter()
            .map(|n| view(n, Some(earlier.as_str()), true, &[]))
            .collect();
        assert_eq!(
            decide_roll(&v, &m),
            RollDecision::Restart(vec!["linkerd-proxy-injector".into()])
        );
        // Injector restarted but still rolling: wait, nothing else restarts.
        let mut v: Vec<_> = names.iter().map(|n| view(n, None, true, &[])).collect();
        v[0] = view(names[0], s, false, &[]);
        assert!(
            matches!(decide_roll(&v, &m), RollDecision::Wait(w) if w.contains("linkerd-proxy-injector"))
        );
        // Injector rolled but an old pod lingers: wait.
        v[0] = view(names[0], s, true, &["linkerd/inj-old"]);
        assert!(
            matches!(decide_roll(&v, &m), RollDecision::Wait(w) if w.contains("linkerd/inj-old"))
        );
        // Injector done: identity and destination together.
        v[0] = view(names[0], s, true, &[]);
        assert_eq!(
            decide_roll(&v, &m),
            RollDecision::Restart(vec![
                "linkerd-identity".into(),
                "linkerd-destination".into()
            ])
        );
        // A resumed operator sees its own marker and does not restart again.
        v[1] = view(names[1], s, true, &[]);
        v[2] = view(names[2], s, false, &[]);
        assert!(
            matches!(decide_roll(&v, &m), RollDecision::Wait(w) if w.contains("linkerd-destination"))
        );
        v[2] = view(names[2], s, true, &[]);
        assert_eq!(decide_roll(&v, &m), RollDecision::Done);
    }

    #[test]
    fn stamp_is_rfc3339_seconds() {
        let t: Timestamp = "2026-11-29T16:00:00.123456Z".parse().unwrap();
        assert_eq!(restart_stamp(t), "2026-11-29T16:00:00Z");
    }
}
