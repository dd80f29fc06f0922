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
pub mod approval;
pub mod bundle;
pub mod control_plane;
pub mod guard;
pub mod invariant;
pub mod issuer;
pub mod propagation;
pub mod refresh;
pub mod restarts;
pub mod retarget;
pub mod trigger;
pub mod validate;

use crate::pki::Certificate;
use crate::step::{Step, StepContext, StepError};
use crate::workflow::Workflow;
use std::time::Duration;
use trust_rotation_crds::{CertificateRef, Phase, RotationRecord};

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
        Box::new(
            control_plane::RollControlPlane::new(
                names::ROLL_CONTROL_PLANE_RENEWED,
                Phase::RefreshingControlPlane,
                names::AWAIT_ISSUER,
            )
            .inside_windows(),
        ),
        Box::new(bundle::ReduceBundle::default()),
        Box::new(
            control_plane::RollControlPlane::new(
                names::ROLL_CONTROL_PLANE_REDUCED,
                Phase::RefreshingControlPlane,
                names::REDUCE_BUNDLE,
            )
            .inside_windows(),
        ),
        Box::new(propagation::AwaitPropagation::new(
            names::AWAIT_PROPAGATION_REDUCED,
            Phase::RemovingOldTrustRoots,
            false,
        )),
    ];
    Workflow::new(Box::new(trigger::AnchorTrigger), steps)
        .expect("the rotation workflow has unique step names")
        .with_target_watch(Box::new(retarget::AnchorTargetWatch))
}

/// The new root this rotation moves to, read from the anchor Secret and checked against the
/// rotation record. A newer anchor is normally seen first by the runner, which retargets the
/// rotation before the step runs (see [`retarget`]); a step sees it only when the anchor
/// changed in between, or went back to the anchor this rotation replaces.
pub(crate) async fn current_new_root(
    ctx: &StepContext,
) -> Result<Result<Certificate, String>, StepError> {
    let anchor = crate::read::anchor(&ctx.client, &ctx.spec.trust_anchor).await?;
    Ok(check_new_root(&anchor, &ctx.rotation, &ctx.spec.trust_anchor).map(|()| anchor))
}

/// Pure part of [`current_new_root`]: `Err` is the message the step blocks with.
pub fn check_new_root(
    anchor: &Certificate,
    rotation: &RotationRecord,
    anchor_ref: &CertificateRef,
) -> Result<(), String> {
    let Some(to) = rotation.to_anchor.as_deref() else {
        return Ok(());
    };
    let now = anchor.fingerprint();
    if to == now {
        return Ok(());
    }
    let (to_s, now_s) = (
        crate::pki::short_fingerprint(to),
        crate::pki::short_fingerprint(now),
    );
    let renew = format!(
        "`cmctl renew -n {} {}` (or `linkerd trust renew anchor --force`)",
        anchor_ref.namespace, anchor_ref.certificate
    );
    if rotation.from_anchor.as_deref() == Some(now) {
        return Err(format!(
            "the anchor Secret holds {now_s} again, the trust anchor this rotation replaces (restored from a backup?), while the rotation moves to {to_s}: the operator does not rotate back, since pods may already trust or chain to {to_s}, and cert-manager has discarded the key of any anchor it renewed. Renew the trust anchor with {renew}: the operator then moves this rotation on to the new anchor, keeping every root pods still use in the trust bundle until every pod carries the new one"
        ));
    }
    Err(format!(
        "the trust anchor was renewed again during this rotation (the rotation moves to {to_s}, the anchor Secret now holds {now_s}): the operator retargets the rotation to {now_s} at its next look, keeping every root pods still use in the trust bundle; nothing to do"
    ))
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
        assert!(wf.target_watch().is_some(), "a renewed anchor retargets");
    }

    #[test]
    fn a_step_seeing_another_anchor_says_what_happens_and_the_way_out() {
        use crate::pki::testing::root;
        let (a, b, c) = (
            root("root").parsed(),
            root("root").parsed(),
            root("root").parsed(),
        );
        let anchor_ref = CertificateRef::default_trust_anchor();
        let rotation = RotationRecord {
            id: "r".into(),
            trigger: "t".into(),
            from_anchor: Some(a.fingerprint().into()),
            to_anchor: Some(b.fingerprint().into()),
            superseded_anchors: vec![],
            started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            ),
            finished_at: None,
            trace_parent: None,
            issuer_renewal: None,
            approvals: Vec::new(),
        };
        assert_eq!(check_new_root(&b, &rotation, &anchor_ref), Ok(()));
        let newer = check_new_root(&c, &rotation, &anchor_ref).unwrap_err();
        assert!(newer.contains("retargets the rotation"), "{newer}");
        assert!(!newer.contains("restor"), "no restore advice: {newer}");
        let back = check_new_root(&a, &rotation, &anchor_ref).unwrap_err();
        assert!(
            back.contains("cmctl renew -n cert-manager linkerd-trust-anchor")
                && back.contains("does not rotate back"),
            "{back}"
        );
    }
}
