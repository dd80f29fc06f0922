//! The trust-anchor rotation: the trigger that starts it and the seven step types of the
//! user guide, in the order a rotation walks them.
//!
//! | step | phase |
//! |---|---|
//! | CopyPreviousAnchor | RefreshingControlPlane |
//! | ReconcileBundle (old + new) | RefreshingControlPlane |
//! | RollControlPlane | RefreshingControlPlane |
//! | AwaitPropagation | PropagatingTrustRoots |
//! | AwaitIssuer | WaitingForIdentityRotation |
//! | AccelerateRefresh | RenewingWorkloadCerts |
//! | RollControlPlaneRenewed | RefreshingControlPlane |
//! | ReduceBundle (new only) | RefreshingControlPlane |
//! | RollControlPlaneReduced | RefreshingControlPlane |
//! | AwaitPropagationReduced | RemovingOldTrustRoots |

pub mod anchor;
pub mod bundle;
pub mod control_plane;
pub mod guard;
pub mod issuer;
pub mod propagation;
pub mod refresh;
pub mod trigger;

use crate::pki::Certificate;
use crate::step::{Step, StepContext, StepError};
use crate::workflow::Workflow;
use std::time::Duration;
use trust_rotation_crds::Phase;

/// Stable step names (they key `.status.steps`: never rename them).
pub mod names {
    pub const COPY_PREVIOUS_ANCHOR: &str = "CopyPreviousAnchor";
    pub const RECONCILE_BUNDLE: &str = "ReconcileBundle";
    pub const ROLL_CONTROL_PLANE: &str = "RollControlPlane";
    pub const AWAIT_PROPAGATION: &str = "AwaitPropagation";
    pub const AWAIT_ISSUER: &str = "AwaitIssuer";
    pub const ACCELERATE_REFRESH: &str = "AccelerateRefresh";
    pub const ROLL_CONTROL_PLANE_RENEWED: &str = "RollControlPlaneRenewed";
    pub const REDUCE_BUNDLE: &str = "ReduceBundle";
    pub const ROLL_CONTROL_PLANE_REDUCED: &str = "RollControlPlaneReduced";
    pub const AWAIT_PROPAGATION_REDUCED: &str = "AwaitPropagationReduced";
}

/// How soon a waiting step looks again by default (watch events wake it sooner).
pub const POLL: Duration = Duration::from_secs(2);

/// The full rotation workflow of the user guide.
pub fn workflow() -> Workflow {
    let steps: Vec<Box<dyn Step>> = vec![
        Box::new(anchor::CopyPreviousAnchor),
        Box::new(bundle::ReconcileBundle),
        Box::new(control_plane::RollControlPlane::new(
            names::ROLL_CONTROL_PLANE,
            Phase::RefreshingControlPlane,
            names::RECONCILE_BUNDLE,
        )),
        Box::new(propagation::AwaitPropagation::new(
            names::AWAIT_PROPAGATION,
            Phase::PropagatingTrustRoots,
            true,
        )),
        Box::new(issuer::AwaitIssuer),
        Box::new(refresh::AccelerateRefresh::default()),
        // Control-plane proxies got their certificates from the old issuer when they
        // restarted onto the expanded bundle, and nothing accelerates their refresh: restart
        // them (the bundle still holds both roots) so that their live certificates chain to
        // the new root before it becomes the only one.
        Box::new(control_plane::RollControlPlane::new(
            names::ROLL_CONTROL_PLANE_RENEWED,
            Phase::RefreshingControlPlane,
            names::AWAIT_ISSUER,
        )),
        Box::new(bundle::ReduceBundle),
        Box::new(control_plane::RollControlPlane::new(
            names::ROLL_CONTROL_PLANE_REDUCED,
            Phase::RefreshingControlPlane,
            names::REDUCE_BUNDLE,
        )),
        Box::new(propagation::AwaitPropagation::new(
            names::AWAIT_PROPAGATION_REDUCED,
            Phase::RemovingOldTrustRoots,
            false,
        )),
    ];
    Workflow::new(Box::new(trigger::AnchorTrigger), steps)
        .expect("the rotation workflow has unique step names")
}

/// The new root this rotation moves to, read from the anchor Secret and checked against the
/// rotation record. A different anchor means it was renewed again mid-rotation.
pub(crate) async fn current_new_root(
    ctx: &StepContext,
) -> Result<Result<Certificate, String>, StepError> {
    let anchor = crate::snapshot::read_anchor(&ctx.client, &ctx.spec.trust_anchor).await?;
    Ok(check_new_root(&anchor, ctx.rotation.to_anchor.as_deref()).map(|()| anchor))
}

/// Pure part of [`current_new_root`].
pub fn check_new_root(anchor: &Certificate, to_anchor: Option<&str>) -> Result<(), String> {
    match to_anchor {
        Some(fp) if fp != anchor.fingerprint() => Err(format!(
            "the trust anchor changed again during this rotation (the rotation moves to {}, the anchor Secret now holds {}); \
             the bundle must not lose a root that pods still use: let cert-manager settle, then finish this rotation by \
             restoring the anchor or start over by setting the bundle to the roots pods hold",
            crate::pki::short_fingerprint(fp),
            crate::pki::short_fingerprint(anchor.fingerprint())
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_walks_the_guides_phases() {
        let wf = workflow();
        let mut phases: Vec<Phase> = vec![Phase::Synced];
        for s in wf.steps() {
            if phases.last() != Some(&s.phase()) {
                phases.push(s.phase());
            }
        }
        phases.push(Phase::Synced);
        assert_eq!(
            phases,
            [
                Phase::Synced,
                Phase::RefreshingControlPlane,
                Phase::PropagatingTrustRoots,
                Phase::WaitingForIdentityRotation,
                Phase::RenewingWorkloadCerts,
                Phase::RefreshingControlPlane,
                Phase::RemovingOldTrustRoots,
                Phase::Synced,
            ]
        );
        let names: Vec<&str> = wf.steps().iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), 10);
    }
}
