//! The trust anchor renewed again mid-rotation: the rotation moves on to the newest anchor.
//!
//! cert-manager discards the private key of an anchor it renews (`rotationPolicy: Always`),
//! so a rotation can never go back to the anchor it was moving to: it can only move on to the
//! newest one. What stays safe is to keep, in the trust bundle, every root a pod may still
//! use (the rotation's `fromAnchor` and each anchor it moved to before, its
//! `supersededAnchors`) until every pod carries the newest anchor and holds a certificate
//! chaining to it; ReduceBundle then removes them all at once.
//!
//! Where the rotation stood decides what is redone:
//!
//! | where the rotation stood | the abandoned target B | redone |
//! |---|---|---|
//! | ReconcileBundle not done, B not in the bundle | no pod can carry it: dropped | from ReconcileBundle (nothing disruptive happened yet) |
//! | bundle expanded (ReconcileBundle done, or B already in the bundle) up to ReduceBundle's write | kept as superseded | from ReconcileBundle: expand with the newest anchor, restart the control plane, every pod again, re-issue the issuer from the newest anchor, ... |
//! | ReduceBundle wrote the reduced bundle (only B left of the old roots) | it is the bundle's root now: the rotation's new `fromAnchor` | everything: a fresh rotation from B to the newest (same rotation id) |
//!
//! The anchor Secret going back to the rotation's own `fromAnchor` (restored from a backup)
//! is not a target: the steps block with the way out (renew the anchor again).

use super::names;
use crate::pki::short_fingerprint;
use crate::read;
use crate::step::StepError;
use crate::workflow::{Retarget, TargetWatch};
use async_trait::async_trait;
use trust_rotation_crds::{RotationRecord, StepRecord, StepState, TrustAnchorRotationSpec};

/// The Warning Event's reason.
pub const REASON: &str = "AnchorRenewedMidRotation";

/// Whether and how the rotation moves to `newest` (the fingerprint the anchor Secret holds
/// now). `bundle` lists the fingerprints the trust bundle holds now (`None`: unreadable).
pub fn decide_retarget(
    rotation: &RotationRecord,
    records: &[StepRecord],
    newest: &str,
    bundle: Option<&[&str]>,
) -> Option<Retarget> {
    let to = rotation.to_anchor.as_deref()?;
    if to == newest {
        return None;
    }
    let state = |name: &str| records.iter().find(|r| r.name == name).map(|r| r.state);
    let done = |name: &str| state(name) == Some(StepState::Done);
    let holds = |fp: &str| bundle.is_some_and(|b| b.contains(&fp));
    let from = rotation.from_anchor.as_deref();
    let old_roots: Vec<&str> = from
        .into_iter()
        .chain(rotation.superseded_anchors.iter().map(String::as_str))
        .filter(|f| *f != to)
        .collect();
    // The reduced bundle is written: no old root is left. ReduceBundle may have written it
    // and not yet recorded that it is done.
    let reduce_started = state(names::REDUCE_BUNDLE).is_some_and(|s| s != StepState::Pending);
    let reduced = done(names::REDUCE_BUNDLE)
        || (reduce_started && bundle.is_some() && !old_roots.iter().any(|&f| holds(f)));
    let (newest_s, to_s) = (short_fingerprint(newest), short_fingerprint(to));
    if reduced {
        return Some(Retarget {
            reason: REASON,
            message: format!(
                "the trust anchor was renewed again (the anchor Secret now holds {newest_s}) after this rotation had \
                 reduced the trust bundle to {to_s}: the rotation starts over as a rotation from {to_s} to {newest_s}. \
                 {to_s} stays in the trust bundle until every pod carries {newest_s} and holds a certificate chaining to \
                 it; restart the workloads when the status asks, and re-issue the identity issuer again when it asks \
                 (it must be signed by {newest_s})"
            ),
            summary: format!("retargeted from {to_s} to {newest_s} after the bundle was reduced"),
            from_anchor: Some(to.to_string()),
            to_anchor: Some(newest.to_string()),
            superseded_anchors: vec![],
            redo_from: names::COPY_PREVIOUS_ANCHOR.to_string(),
        });
    }
    if from == Some(newest) {
        // Rotating back to the anchor being replaced: not a way out (see check_new_root).
        return None;
    }
    // Pods may carry (or chain to) the abandoned target once the bundle held it.
    let keep = done(names::RECONCILE_BUNDLE) || holds(to);
    let mut superseded = rotation.superseded_anchors.clone();
    if keep && !superseded.iter().any(|f| f == to) {
        superseded.push(to.to_string());
    }
    superseded.retain(|f| f != newest);
    let issuer_again = if done(names::AWAIT_ISSUER) {
        format!(
            "; the identity issuer re-issued from {to_s} must be re-issued again, from {newest_s}, when the status asks"
        )
    } else {
        format!("; re-issue the identity issuer only when the status asks (it must be signed by {newest_s})")
    };
    let kept: Vec<&str> = old_roots
        .iter()
        .copied()
        .chain(keep.then_some(to))
        .filter(|f| *f != newest)
        .map(short_fingerprint)
        .collect();
    let message = if keep {
        format!(
            "the trust anchor was renewed again mid-rotation (the anchor Secret now holds {newest_s}; this rotation was \
             moving to {to_s}, whose key cert-manager has discarded): the rotation now moves to {newest_s}. The trust \
             bundle keeps {} next to {newest_s} until every pod carries {newest_s} and holds a certificate chaining to \
             it. The steps from {} run again: the bundle is expanded with {newest_s}, the control plane restarts, and \
             every meshed workload must be restarted again when the status asks{issuer_again}",
            kept.join(" and "),
            names::RECONCILE_BUNDLE
        )
    } else {
        format!(
            "the trust anchor was renewed again before the trust bundle was expanded (the anchor Secret now holds \
             {newest_s}; this rotation was moving to {to_s}, which no pod can carry): the rotation now moves to \
             {newest_s}, nothing disruptive had happened yet"
        )
    };
    Some(Retarget {
        reason: REASON,
        message,
        summary: format!("retargeted from {to_s} to {newest_s}"),
        from_anchor: rotation.from_anchor.clone(),
        to_anchor: Some(newest.to_string()),
        superseded_anchors: superseded,
        redo_from: names::RECONCILE_BUNDLE.to_string(),
    })
}

/// Reads the anchor Secret before each step; on a new anchor, the trust bundle too.
pub struct AnchorTargetWatch;

#[async_trait]
impl TargetWatch for AnchorTargetWatch {
    async fn check(
        &self,
        client: &kube::Client,
        spec: &TrustAnchorRotationSpec,
        rotation: &RotationRecord,
        records: &[StepRecord],
    ) -> Result<Option<Retarget>, StepError> {
        let anchor = read::anchor(client, &spec.trust_anchor).await?;
        if rotation
            .to_anchor
            .as_deref()
            .is_none_or(|to| to == anchor.fingerprint())
        {
            return Ok(None);
        }
        let observed = read::split_missing(read::trust_bundle(client, &spec.trust_roots).await)?;
        let roots: Option<Vec<&str>> = observed.as_ref().ok().map(|b| b.bundle.fingerprints());
        Ok(decide_retarget(
            rotation,
            records,
            anchor.fingerprint(),
            roots.as_deref(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::workflow;
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use trust_rotation_crds::Phase;

    const A: &str = "aaaa0000000000000000000000000000000000000000000000000000000000000000";
    const B: &str = "bbbb0000000000000000000000000000000000000000000000000000000000000000";
    const C: &str = "cccc0000000000000000000000000000000000000000000000000000000000000000";
    const D: &str = "dddd0000000000000000000000000000000000000000000000000000000000000000";

    fn rotation(superseded: &[&str]) -> RotationRecord {
        RotationRecord {
            id: "r".into(),
            trigger: "trust anchor renewed".into(),
            from_anchor: Some(A.into()),
            to_anchor: Some(B.into()),
            superseded_anchors: superseded.iter().map(|s| s.to_string()).collect(),
            started_at: Time(Timestamp::UNIX_EPOCH),
            finished_at: None,
            trace_parent: None,
            issuer_renewal: None,
            approvals: Vec::new(),
        }
    }

    /// The real workflow's records: the steps before `current` done, `current` in `state`.
    fn records_at(current: &str, state: StepState) -> Vec<StepRecord> {
        let mut before = true;
        workflow()
            .steps()
            .iter()
            .map(|s| {
                let st = if s.name() == current {
                    before = false;
                    state
                } else if before {
                    StepState::Done
                } else {
                    StepState::Pending
                };
                StepRecord {
                    name: s.name().into(),
                    phase: Phase::RefreshingControlPlane,
                    state: st,
                    attempts: 0,
                    started_at: None,
                    finished_at: None,
                    last_progress_time: None,
                    message: None,
                }
            })
            .collect()
    }

    struct Row {
        name: &'static str,
        rotation: RotationRecord,
        at: (&'static str, StepState),
        newest: &'static str,
        bundle: Option<&'static [&'static str]>,
        /// `None`: no retarget; else (from, superseded, redo_from, message contains).
        want: Option<(
            &'static str,
            &'static [&'static str],
            &'static str,
            &'static str,
        )>,
    }

    #[test]
    fn retarget_rules() {
        use StepState::*;
        let rows = [
            Row {
                name: "same anchor: nothing to do",
                rotation: rotation(&[]),
                at: (names::AWAIT_ISSUER, Waiting),
                newest: B,
                bundle: Some(&[A, B]),
                want: None,
            },
            Row {
                name: "before the bundle was expanded: B dropped, redo from ReconcileBundle",
                rotation: rotation(&[]),
                at: (names::RECONCILE_BUNDLE, Blocked),
                newest: C,
                bundle: Some(&[A]),
                want: Some((A, &[], names::RECONCILE_BUNDLE, "which no pod can carry")),
            },
            Row {
                name: "still copying the previous anchor: B dropped",
                rotation: rotation(&[]),
                at: (names::COPY_PREVIOUS_ANCHOR, Waiting),
                newest: C,
                bundle: Some(&[A]),
                want: Some((A, &[], names::RECONCILE_BUNDLE, "nothing disruptive")),
            },
            Row {
                name: "bundle written but ReconcileBundle not recorded done: B kept",
                rotation: rotation(&[]),
                at: (names::RECONCILE_BUNDLE, Waiting),
                newest: C,
                bundle: Some(&[A, B]),
                want: Some((
                    A,
                    &[B],
                    names::RECONCILE_BUNDLE,
                    "keeps aaaa00000000 and bbbb00000000",
                )),
            },
            Row {
                name: "propagating: B kept, redo from ReconcileBundle",
                rotation: rotation(&[]),
                at: (names::AWAIT_PROPAGATION, Waiting),
                newest: C,
                bundle: Some(&[A, B]),
                want: Some((A, &[B], names::RECONCILE_BUNDLE, "restarted again")),
            },
            Row {
                name: "ReconcileBundle done but the bundle lost B (drift): still kept",
                rotation: rotation(&[]),
                at: (names::AWAIT_PROPAGATION, Waiting),
                newest: C,
                bundle: Some(&[A]),
                want: Some((A, &[B], names::RECONCILE_BUNDLE, "keeps")),
            },
            Row {
                name: "waiting for the issuer: the message names the issuer step",
                rotation: rotation(&[]),
                at: (names::AWAIT_ISSUER, Waiting),
                newest: C,
                bundle: Some(&[A, B]),
                want: Some((
                    A,
                    &[B],
                    names::RECONCILE_BUNDLE,
                    "only when the status asks",
                )),
            },
            Row {
                name: "issuer renewed from B: it must be re-issued again",
                rotation: rotation(&[]),
                at: (names::ACCELERATE_REFRESH, Waiting),
                newest: C,
                bundle: Some(&[A, B]),
                want: Some((
                    A,
                    &[B],
                    names::RECONCILE_BUNDLE,
                    "re-issued again, from cccc00000000",
                )),
            },
            Row {
                name: "ReduceBundle waiting on pods, bundle still A+B: redo, not fresh",
                rotation: rotation(&[]),
                at: (names::REDUCE_BUNDLE, Waiting),
                newest: C,
                bundle: Some(&[A, B]),
                want: Some((A, &[B], names::RECONCILE_BUNDLE, "keeps")),
            },
            Row {
                name: "ReduceBundle wrote B only, not yet recorded: fresh rotation B → C",
                rotation: rotation(&[]),
                at: (names::REDUCE_BUNDLE, Waiting),
                newest: C,
                bundle: Some(&[B]),
                want: Some((B, &[], names::COPY_PREVIOUS_ANCHOR, "starts over")),
            },
            Row {
                name: "ReduceBundle waiting, bundle unreadable: redo keeps everything",
                rotation: rotation(&[]),
                at: (names::REDUCE_BUNDLE, Waiting),
                newest: C,
                bundle: None,
                want: Some((A, &[B], names::RECONCILE_BUNDLE, "keeps")),
            },
            Row {
                name: "after the reduction: fresh rotation B → C",
                rotation: rotation(&[]),
                at: (names::AWAIT_PROPAGATION_REDUCED, Waiting),
                newest: C,
                bundle: Some(&[B]),
                want: Some((
                    B,
                    &[],
                    names::COPY_PREVIOUS_ANCHOR,
                    "from bbbb00000000 to cccc00000000",
                )),
            },
            Row {
                name: "after the reduction, back to A: a fresh rotation B → A is fine",
                rotation: rotation(&[]),
                at: (names::ROLL_CONTROL_PLANE_REDUCED, Waiting),
                newest: A,
                bundle: Some(&[B]),
                want: Some((B, &[], names::COPY_PREVIOUS_ANCHOR, "starts over")),
            },
            Row {
                name: "back to the rotation's own from anchor mid-rotation: no retarget",
                rotation: rotation(&[]),
                at: (names::AWAIT_PROPAGATION, Waiting),
                newest: A,
                bundle: Some(&[A, B]),
                want: None,
            },
            Row {
                name: "a third renewal: both intermediate anchors kept",
                rotation: RotationRecord {
                    to_anchor: Some(C.into()),
                    ..rotation(&[B])
                },
                at: (names::AWAIT_PROPAGATION, Waiting),
                newest: D,
                bundle: Some(&[A, B, C]),
                want: Some((
                    A,
                    &[B, C],
                    names::RECONCILE_BUNDLE,
                    "keeps aaaa00000000 and bbbb00000000 and cccc00000000",
                )),
            },
            Row {
                name: "back to a superseded anchor: it is the target, no longer superseded",
                rotation: RotationRecord {
                    to_anchor: Some(C.into()),
                    ..rotation(&[B])
                },
                at: (names::AWAIT_PROPAGATION, Waiting),
                newest: B,
                bundle: Some(&[A, B, C]),
                want: Some((A, &[C], names::RECONCILE_BUNDLE, "keeps")),
            },
            Row {
                name: "no recorded target (a status from an older operator): nothing to compare",
                rotation: RotationRecord {
                    to_anchor: None,
                    ..rotation(&[])
                },
                at: (names::AWAIT_PROPAGATION, Waiting),
                newest: C,
                bundle: Some(&[A, B]),
                want: None,
            },
        ];
        for row in rows {
            let got = decide_retarget(
                &row.rotation,
                &records_at(row.at.0, row.at.1),
                row.newest,
                row.bundle,
            );
            match (row.want, got) {
                (None, None) => {}
                (None, Some(r)) => panic!("{}: unexpected retarget {r:?}", row.name),
                (Some(_), None) => panic!("{}: expected a retarget", row.name),
                (Some((from, superseded, redo, says)), Some(r)) => {
                    assert_eq!(r.from_anchor.as_deref(), Some(from), "{}", row.name);
                    assert_eq!(r.to_anchor.as_deref(), Some(row.newest), "{}", row.name);
                    assert_eq!(r.superseded_anchors, superseded, "{}", row.name);
                    assert_eq!(r.redo_from, redo, "{}", row.name);
                    assert_eq!(r.reason, REASON);
                    assert!(r.message.contains(says), "{}: {}", row.name, r.message);
                    assert!(
                        r.message.contains(short_fingerprint(row.newest)),
                        "{}: the message names the newest anchor: {}",
                        row.name,
                        r.message
                    );
                }
            }
        }
    }
}
