//! RollControlPlane: `kubectl rollout restart` of the control-plane Deployments after a bundle
//! change, the proxy injector first, then waiting until each is Available with every pod
//! started after the restart.
//!
//! The restart stamp is the step's persisted start time, so a resumed operator computes the
//! same `kubectl.kubernetes.io/restartedAt` value and never restarts a Deployment twice.

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

/// Whether the Deployment's template was restarted at or after `stamp`.
fn restarted_since(view: &DeploymentView, stamp: Timestamp) -> bool {
    view.restarted_at
        .as_deref()
        .and_then(|s| s.parse::<Timestamp>().ok())
        .is_some_and(|t| t.as_second() >= stamp.as_second())
}

/// Decides over the Deployments in order (the injector first): the injector is restarted
/// and must be Available with fresh pods before any other Deployment restarts; the others
/// restart together.
pub fn decide_roll(views: &[DeploymentView], stamp: Timestamp) -> RollDecision {
    let Some((first, rest)) = views.split_first() else {
        return RollDecision::Done;
    };
    for group in [std::slice::from_ref(first), rest] {
        let to_restart: Vec<String> = group
            .iter()
            .filter(|v| !restarted_since(v, stamp))
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
        // Pods must have started after the bundle changed, and after our restart.
        let bundle_changed = ctx.finished_at(self.after).unwrap_or(ctx.step_started_at);
        let stamp = ctx.step_started_at.max(bundle_changed);
        let mut views = Vec::new();
        for name in cp.deployments() {
            match read_deployment(&ctx.client, &cp.namespace, &name, Timestamp::from_second(stamp.as_second()).unwrap_or(stamp)).await? {
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
        match decide_roll(&views, stamp) {
            RollDecision::Done => Ok(Outcome::Done),
            RollDecision::Wait(reason) => Ok(Outcome::wait(reason, POLL)),
            RollDecision::Restart(names) => {
                let value = restart_stamp(stamp);
                let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &cp.namespace);
                for name in &names {
                    let patch = serde_json::json!({
                        "spec": {"template": {"metadata": {"annotations": {
                            crate::snapshot::RESTARTED_AT_ANNOTATION: value
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

    fn view(name: &str, restarted: Option<&str>, complete: bool, stale: &[&str]) -> DeploymentView {
        DeploymentView {
            name: name.into(),
            restarted_at: restarted.map(str::to_string),
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
        let stamp: Timestamp = "2026-11-29T16:00:00Z".parse().unwrap();
        let s = "2026-11-29T16:00:00Z";
        let old = "2026-01-01T00:00:00Z";
        let names = [
            "linkerd-proxy-injector",
            "linkerd-identity",
            "linkerd-destination",
        ];
        // Nothing restarted yet: only the injector.
        let v: Vec<_> = names
            .iter()
            .map(|n| view(n, Some(old), true, &[]))
            .collect();
        assert_eq!(
            decide_roll(&v, stamp),
            RollDecision::Restart(vec!["linkerd-proxy-injector".into()])
        );
        // Injector restarted but still rolling: wait, nothing else restarts.
        let mut v: Vec<_> = names.iter().map(|n| view(n, None, true, &[])).collect();
        v[0] = view(names[0], Some(s), false, &[]);
        assert!(
            matches!(decide_roll(&v, stamp), RollDecision::Wait(m) if m.contains("linkerd-proxy-injector"))
        );
        // Injector rolled but an old pod lingers: wait.
        v[0] = view(names[0], Some(s), true, &["linkerd/inj-old"]);
        assert!(
            matches!(decide_roll(&v, stamp), RollDecision::Wait(m) if m.contains("linkerd/inj-old"))
        );
        // Injector done: identity and destination together.
        v[0] = view(names[0], Some(s), true, &[]);
        assert_eq!(
            decide_roll(&v, stamp),
            RollDecision::Restart(vec![
                "linkerd-identity".into(),
                "linkerd-destination".into()
            ])
        );
        // A resumed operator sees its own stamp (or a later manual restart) and does not restart again.
        v[1] = view(names[1], Some(s), true, &[]);
        v[2] = view(names[2], Some("2026-11-29T16:05:00Z"), false, &[]);
        assert!(
            matches!(decide_roll(&v, stamp), RollDecision::Wait(m) if m.contains("linkerd-destination"))
        );
        v[2] = view(names[2], Some(s), true, &[]);
        assert_eq!(decide_roll(&v, stamp), RollDecision::Done);
    }

    #[test]
    fn stamp_is_rfc3339_seconds() {
        let t: Timestamp = "2026-11-29T16:00:00.123456Z".parse().unwrap();
        assert_eq!(restart_stamp(t), "2026-11-29T16:00:00Z");
    }
}
