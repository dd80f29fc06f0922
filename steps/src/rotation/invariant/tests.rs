//! The invariant and every decision about it, as pure functions.

use super::*;
use crate::pki::testing::{issued, root, Ca};
use crate::rotation::propagation::tests::pod;

struct World {
    old: Ca,
    new: Ca,
    old_issuer: Ca,
    new_issuer: Ca,
    foreign: Ca,
}

fn world() -> World {
    let old = root("old");
    let new = root("new");
    let old_issuer = issued("identity", &old, true);
    let new_issuer = issued("identity", &new, true);
    World {
        foreign: root("peer"),
        old,
        new,
        old_issuer,
        new_issuer,
    }
}

fn cm() -> ConfigMapRef {
    ConfigMapRef::default()
}

fn expect(w: &World, stage: Stage, issuer: &Ca, old_known: bool) -> Expectation {
    Expectation {
        old: vec![OldRoot {
            fingerprint: w.old.parsed().fingerprint().to_string(),
            cert: old_known.then(|| w.old.parsed()),
        }],
        to: w.new.parsed(),
        issuer: vec![issuer.parsed()],
        stage,
        propagated: false,
    }
}

fn observed(certs: &[&Ca], writer: Option<&str>) -> TrustBundle {
    let bundle = Bundle::from_certs(certs.iter().map(|c| c.parsed()));
    TrustBundle {
        value: bundle.to_pem(),
        bundle,
        owner: None,
        last_writer: writer.map(|m| BundleWriter {
            manager: m.to_string(),
            operation: Some("Update".into()),
            time: Some("2026-12-01T10:00:00Z".parse().unwrap()),
        }),
    }
}

fn carrying(name: &str, certs: &[&Ca]) -> MeshedPod {
    let mut p = pod("emojivoto", name, None);
    p.trust_anchors_env = Some(
        Bundle::from_certs(certs.iter().map(|c| c.parsed()))
            .to_pem()
            .into(),
    );
    p
}

#[test]
fn the_expanded_bundle_with_both_roots_and_a_foreign_one_holds() {
    let w = world();
    let e = expect(&w, Stage::Expanded, &w.old_issuer, true);
    let obs = observed(&[&w.foreign, &w.old, &w.new], None);
    let pods = vec![
        carrying("web-1", &[&w.old]),
        carrying("web-2", &[&w.old, &w.new]),
    ];
    assert_eq!(judge(&obs, &e, &pods, &cm()), Verdict::Holds);
    let foreign = foreign_roots(&obs.bundle, &e);
    assert_eq!(foreign.len(), 1);
    assert_eq!(foreign[0].fingerprint, w.foreign.parsed().fingerprint());
}

#[test]
fn a_bootstrap_rerun_that_dropped_the_old_root_is_restored_and_the_writer_named() {
    let w = world();
    let e = expect(&w, Stage::Expanded, &w.old_issuer, true);
    // `linkerd trust bundle | kubectl apply -f -` left the new root only. The issuer still
    // chains to the old root, so the invariant is broken twice over.
    let obs = observed(&[&w.new], Some("kubectl-client-side-apply"));
    let v = check(&obs.bundle, &e).unwrap_err();
    assert_eq!(v.missing.len(), 1);
    assert!(v.issuer_unanchored.is_some());
    let pods = vec![carrying("web-1", &[&w.old])];
    let Verdict::Restore { value, note } = judge(&obs, &e, &pods, &cm()) else {
        panic!("expected a restore");
    };
    let restored = Bundle::parse(&value).unwrap();
    // The observed roots keep their place; the missing one is added.
    assert_eq!(
        restored.fingerprints(),
        vec![w.new.parsed().fingerprint(), w.old.parsed().fingerprint()]
    );
    assert!(
        note.contains("kubectl (field manager kubectl-client-side-apply"),
        "{note}"
    );
    assert!(
        note.contains(short_fingerprint(w.old.parsed().fingerprint())),
        "{note}"
    );
    // Judged again on the restored value: it holds.
    let again = TrustBundle {
        value: value.clone(),
        bundle: restored,
        ..obs
    };
    assert_eq!(judge(&again, &e, &pods, &cm()), Verdict::Holds);
}

#[test]
fn reordering_or_reformatting_is_not_drift() {
    let w = world();
    let e = expect(&w, Stage::Expanded, &w.old_issuer, true);
    let mut obs = observed(&[&w.new, &w.old], Some("argocd-controller"));
    obs.value = format!("\n{}\n\n", obs.value);
    assert_eq!(judge(&obs, &e, &[], &cm()), Verdict::Holds);
}

#[test]
fn a_pod_that_already_carries_the_broken_bundle_blocks_without_a_write() {
    let w = world();
    let e = expect(&w, Stage::Expanded, &w.old_issuer, true);
    let obs = observed(&[&w.new], Some("kubectl-client-side-apply"));
    // web was restarted after the bundle lost the old root: its proxy rejects every peer whose
    // certificate still comes from the old issuer.
    let pods = vec![
        carrying("web-7f9c-abcde", &[&w.new]),
        carrying("voting-1", &[&w.old, &w.new]),
    ];
    let Verdict::Block(m) = judge(&obs, &e, &pods, &cm()) else {
        panic!("expected a block");
    };
    assert!(m.contains("emojivoto/web-7f9c-abcde"), "{m}");
    assert!(!m.contains("voting-1"), "{m}");
    assert!(
        m.contains("kubectl -n emojivoto rollout restart deployment/web"),
        "{m}"
    );
    assert!(m.contains("kubectl-client-side-apply"), "{m}");
    assert!(m.contains(read::SEED_BUNDLE_COMMAND), "{m}");
    // Once the person restored the bundle, the pod is still at risk until it restarts.
    let fixed = observed(&[&w.old, &w.new], Some("kubectl-client-side-apply"));
    let Verdict::Block(m) = judge(&fixed, &e, &pods, &cm()) else {
        panic!("expected a block until the pod restarts");
    };
    assert!(m.contains("restart them"), "{m}");
    // A restart right after the repair would hand out the lagging injector's old view.
    assert!(m.contains("wait a minute for the proxy injector"), "{m}");
    // Restored by the operator itself: no writer to blame.
    let Verdict::Block(m) = judge(&observed(&[&w.old, &w.new], None), &e, &pods, &cm()) else {
        panic!("expected a block until the pod restarts");
    };
    assert!(!m.contains("unknown writer"), "{m}");
    let restarted = vec![
        carrying("web-7f9c-fghij", &[&w.old, &w.new]),
        pods[1].clone(),
    ];
    assert_eq!(judge(&fixed, &e, &restarted, &cm()), Verdict::Holds);
}

#[test]
fn a_root_the_operator_has_no_copy_of_blocks() {
    let w = world();
    let e = expect(&w, Stage::Expanded, &w.old_issuer, false);
    let obs = observed(&[&w.new], Some("helm"));
    let Verdict::Block(m) = judge(&obs, &e, &[], &cm()) else {
        panic!("expected a block");
    };
    assert!(m.contains("no copy of the previous anchor"), "{m}");
    assert!(m.contains("Helm (field manager helm"), "{m}");
}

#[test]
fn an_issuer_under_no_rotation_root_blocks() {
    let w = world();
    let stranger = root("stranger");
    let foreign_issuer = issued("identity", &stranger, true);
    let e = expect(&w, Stage::Expanded, &foreign_issuer, true);
    let obs = observed(&[&w.old, &w.new], None);
    let Verdict::Block(m) = judge(&obs, &e, &[], &cm()) else {
        panic!("expected a block");
    };
    assert!(m.contains("identity issuer"), "{m}");
    assert!(m.contains("an unknown writer"), "{m}");
}

#[test]
fn before_the_expansion_only_the_old_root_is_required() {
    let w = world();
    let e = expect(&w, Stage::Expanding, &w.old_issuer, true);
    assert_eq!(
        judge(&observed(&[&w.old], None), &e, &[], &cm()),
        Verdict::Holds
    );
    // The old root replaced by the new one before the operator expanded: restored (the
    // expansion adds the new one).
    assert!(matches!(
        judge(&observed(&[&w.new], Some("kubectl")), &e, &[], &cm()),
        Verdict::Restore { .. }
    ));
}

#[test]
fn once_propagated_a_pod_without_the_new_root_is_at_risk() {
    let w = world();
    let mut e = expect(&w, Stage::Expanded, &w.new_issuer, true);
    let obs = observed(&[&w.old, &w.new], None);
    let pods = vec![carrying("web-1", &[&w.old])];
    // Before AwaitPropagation finished, pods without the new root are what it waits for.
    assert_eq!(judge(&obs, &e, &pods, &cm()), Verdict::Holds);
    e.propagated = true;
    assert!(matches!(judge(&obs, &e, &pods, &cm()), Verdict::Block(m) if m.contains("web-1")));
}

#[test]
fn a_control_plane_proxy_started_after_the_bundle_broke_is_at_risk() {
    let w = world();
    let e = expect(&w, Stage::Expanded, &w.old_issuer, true);
    let obs = observed(&[&w.new], Some("kubectl-client-side-apply"));
    let mut before = pod("linkerd", "linkerd-destination-1", None);
    before.proxy_started_at = Some("2026-12-01T09:00:00Z".parse().unwrap());
    let mut after = pod("linkerd", "linkerd-destination-2", None);
    after.proxy_started_at = Some("2026-12-01T10:05:00Z".parse().unwrap());
    assert!(matches!(
        judge(&obs, &e, std::slice::from_ref(&before), &cm()),
        Verdict::Restore { .. }
    ));
    let Verdict::Block(m) = judge(&obs, &e, &[before, after], &cm()) else {
        panic!("expected a block");
    };
    assert!(
        m.contains("linkerd-destination-2") && !m.contains("linkerd-destination-1"),
        "{m}"
    );
}

#[test]
fn after_the_reduction_only_the_new_root_is_required() {
    let w = world();
    let e = expect(&w, Stage::Reduced, &w.new_issuer, true);
    let pods = vec![carrying("web-1", &[&w.new])];
    assert_eq!(
        judge(&observed(&[&w.new], None), &e, &pods, &cm()),
        Verdict::Holds
    );
    // A foreign root may stay; the new one may not go.
    assert_eq!(
        judge(&observed(&[&w.foreign, &w.new], None), &e, &pods, &cm()),
        Verdict::Holds
    );
    let Verdict::Restore { value, .. } =
        judge(&observed(&[&w.foreign], Some("flux")), &e, &pods, &cm())
    else {
        panic!("expected the new root restored");
    };
    assert!(Bundle::parse(&value)
        .unwrap()
        .contains(w.new.parsed().fingerprint()));
}

#[test]
fn a_superseded_anchor_endangers_pods_only_once_the_issuer_moved_to_it() {
    // The rotation A → B was retargeted to C before the issuer moved: nobody's certificate
    // chains to B, so the original pods (carrying A alone) are not at risk.
    let w = world();
    let c = root("newest");
    let mut e = expect(&w, Stage::Expanded, &w.old_issuer, true);
    e.old.push(OldRoot {
        fingerprint: w.new.parsed().fingerprint().to_string(),
        cert: Some(w.new.parsed()),
    });
    e.to = c.parsed();
    let original = vec![carrying("web-1", &[&w.old])];
    assert!(pods_at_risk(&original, &e, None, None).is_empty());
    let obs = observed(&[&w.old, &w.new, &c], None);
    assert_eq!(judge(&obs, &e, &original, &cm()), Verdict::Holds);

    // Had the issuer moved to B, peers would hold certificates chaining to B: a pod without
    // B is at risk.
    e.issuer = vec![w.new_issuer.parsed()];
    let at_risk = pods_at_risk(&original, &e, None, None);
    assert_eq!(at_risk.len(), 1);
    assert_eq!(
        at_risk[0].lacks,
        vec![w.new.parsed().fingerprint().to_string()]
    );
}
