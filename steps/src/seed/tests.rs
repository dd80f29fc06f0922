//! What `linkerd trust bundle` would print, for each state a cluster can be in.

use super::*;
use crate::pki::testing::{issued, root, Ca};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use trust_rotation_crds::{RotationRecord, StepRecord};

fn record(from: &Ca, to: &Ca) -> RotationRecord {
    RotationRecord {
        id: "r".into(),
        trigger: "trust anchor renewed".into(),
        from_anchor: Some(from.parsed().fingerprint().to_string()),
        to_anchor: Some(to.parsed().fingerprint().to_string()),
        superseded_anchors: Vec::new(),
        started_at: Time(Timestamp::UNIX_EPOCH),
        finished_at: None,
        trace_parent: None,
        issuer_renewal: None,
        approvals: Vec::new(),
    }
}

fn in_rotation(from: &Ca, to: &Ca, phase: Phase, reduced: bool) -> TrustAnchorRotationStatus {
    TrustAnchorRotationStatus {
        phase: Some(phase),
        rotation: Some(record(from, to)),
        steps: vec![StepRecord {
            name: names::REDUCE_BUNDLE.into(),
            phase: Phase::RemovingOldTrustRoots,
            state: if reduced {
                StepState::Done
            } else {
                StepState::Pending
            },
            attempts: 0,
            started_at: None,
            finished_at: None,
            last_progress_time: None,
            message: None,
        }],
        ..Default::default()
    }
}

fn synced_after(from: &Ca, to: &Ca) -> TrustAnchorRotationStatus {
    let mut done = record(from, to);
    done.finished_at = Some(Time(Timestamp::UNIX_EPOCH));
    TrustAnchorRotationStatus {
        phase: Some(Phase::Synced),
        history: vec![done],
        ..Default::default()
    }
}

fn bundle(certs: &[&Ca]) -> Bundle {
    Bundle::from_certs(certs.iter().map(|c| c.parsed()))
}

fn fps(b: &Bundle) -> Vec<String> {
    b.fingerprints().into_iter().map(String::from).collect()
}

fn fp(c: &Ca) -> String {
    c.parsed().fingerprint().to_string()
}

#[test]
fn a_fresh_mesh_is_seeded_with_the_anchor_alone() {
    let anchor = root("anchor");
    let issuer = issued("identity", &anchor, true);
    let plan = plan(&SeedInput {
        anchor: &anchor.parsed(),
        current: None,
        previous: None,
        issuer: &[issuer.parsed()],
        status: None,
    });
    assert_eq!(fps(&plan.bundle), vec![fp(&anchor)]);
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    assert!(plan.rotation.is_none());
    assert!(!plan.unchanged(), "creating the ConfigMap is a change");
}

#[test]
fn re_running_the_bootstrap_mid_rotation_keeps_the_old_root() {
    let old = root("old");
    let new = root("new");
    let old_issuer = issued("identity", &old, true);
    let current = bundle(&[&old, &new]);
    let status = in_rotation(&old, &new, Phase::WaitingForIdentityRotation, false);
    let plan = plan(&SeedInput {
        anchor: &new.parsed(),
        current: Some(&current),
        previous: Some(&old.parsed()),
        issuer: &[old_issuer.parsed()],
        status: Some(&status),
    });
    assert_eq!(fps(&plan.bundle), vec![fp(&old), fp(&new)]);
    assert!(
        plan.unchanged(),
        "the bundle already is what the rotation needs"
    );
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    assert_eq!(plan.rotation, Some(Phase::WaitingForIdentityRotation));
    let old_row = plan.roots.iter().find(|r| r.cert == old.parsed()).unwrap();
    assert_eq!(old_row.role, Role::RotationOld);
}

#[test]
fn an_overwritten_bundle_mid_rotation_is_planned_back_to_the_union() {
    // A GitOps tool re-applied the new anchor alone: the plan restores the old root from
    // the previous-anchor Secret.
    let old = root("old");
    let new = root("new");
    let old_issuer = issued("identity", &old, true);
    let current = bundle(&[&new]);
    let status = in_rotation(&old, &new, Phase::WaitingForIdentityRotation, false);
    let plan = plan(&SeedInput {
        anchor: &new.parsed(),
        current: Some(&current),
        previous: Some(&old.parsed()),
        issuer: &[old_issuer.parsed()],
        status: Some(&status),
    });
    assert!(plan.bundle.contains(&fp(&old)) && plan.bundle.contains(&fp(&new)));
    assert!(!plan.unchanged());
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
}

#[test]
fn a_rotation_whose_old_root_is_lost_everywhere_is_refused() {
    let old = root("old");
    let new = root("new");
    let old_issuer = issued("identity", &old, true);
    let current = bundle(&[&new]);
    let status = in_rotation(&old, &new, Phase::WaitingForIdentityRotation, false);
    let plan = plan(&SeedInput {
        anchor: &new.parsed(),
        current: Some(&current),
        previous: None,
        issuer: &[old_issuer.parsed()],
        status: Some(&status),
    });
    assert!(
        plan.refusals
            .iter()
            .any(|r| r.contains("still needs its old root")
                && r.contains(short_fingerprint(&fp(&old)))),
        "{:?}",
        plan.refusals
    );
    assert!(
        plan.refusals.iter().any(|r| r.contains("chains to none")),
        "{:?}",
        plan.refusals
    );
}

#[test]
fn after_reduce_bundle_the_old_root_goes() {
    let old = root("old");
    let new = root("new");
    let new_issuer = issued("identity", &new, true);
    let current = bundle(&[&old, &new]);
    let status = in_rotation(&old, &new, Phase::RemovingOldTrustRoots, true);
    let plan = plan(&SeedInput {
        anchor: &new.parsed(),
        current: Some(&current),
        previous: Some(&old.parsed()),
        issuer: &[new_issuer.parsed()],
        status: Some(&status),
    });
    assert_eq!(fps(&plan.bundle), vec![fp(&new)]);
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
}

#[test]
fn a_synced_mesh_keeps_a_peer_root_and_drops_a_retired_one() {
    let older = root("older");
    let anchor = root("anchor");
    let peer = root("peer");
    let issuer = issued("identity", &anchor, true);
    let current = bundle(&[&older, &peer, &anchor]);
    let status = synced_after(&older, &anchor);
    let plan = plan(&SeedInput {
        anchor: &anchor.parsed(),
        current: Some(&current),
        previous: Some(&older.parsed()),
        issuer: &[issuer.parsed()],
        status: Some(&status),
    });
    assert_eq!(fps(&plan.bundle), vec![fp(&peer), fp(&anchor)]);
    let role = |c: &Ca| {
        plan.roots
            .iter()
            .find(|r| r.cert == c.parsed())
            .unwrap()
            .role
    };
    assert_eq!(role(&peer), Role::Foreign);
    assert_eq!(role(&older), Role::Retired);
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
}

#[test]
fn dropping_the_root_the_issuer_chains_to_is_refused() {
    // The anchor Secret was renewed but no rotation has started (the operator is not
    // running): seeding the new anchor alone would cut off the issuer still in use.
    let old = root("old");
    let new = root("new");
    let old_issuer = issued("identity", &old, true);
    let current = bundle(&[&old]);
    let status = synced_after(&old, &old);
    let plan = plan(&SeedInput {
        anchor: &new.parsed(),
        current: Some(&current),
        previous: Some(&old.parsed()),
        issuer: &[old_issuer.parsed()],
        status: Some(&status),
    });
    assert!(
        plan.refusals
            .iter()
            .any(|r| r.contains("identity issuer chains to it")),
        "{:?}",
        plan.refusals
    );
    assert!(!plan.bundle.contains(&fp(&old)));
}

#[test]
fn an_unreadable_issuer_refuses_nothing_on_its_account() {
    let old = root("old");
    let new = root("new");
    let current = bundle(&[&old]);
    let plan = plan(&SeedInput {
        anchor: &new.parsed(),
        current: Some(&current),
        previous: None,
        issuer: &[],
        status: None,
    });
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    assert!(
        plan.bundle.contains(&fp(&old)),
        "an unknown root is kept as foreign"
    );
}
