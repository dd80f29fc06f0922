//! `spec.automation` on the cluster simulator, with the real operator binary: the operator
//! re-issues the identity issuer by itself (`issuerRenewal: Automatic`), and parks at the
//! approval points (`approvals`) until `linkerd trust approve` writes its annotation.

mod common;

use common::*;
use std::time::Duration;
use trust_rotation_crds::{ApprovalGate, Phase};

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_issuer_renewal_needs_no_renew_issuer_command() {
    let sim = start_sim().await;
    let client = sim.client();
    let namespaces = workload_namespaces(&client).await;
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    patch_spec(
        &client,
        serde_json::json!({"automation": {"issuerRenewal": "Automatic"}}),
    )
    .await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let old_issuer = secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await;
    sim.oracle().reset();

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    // Nothing is re-issued before the bundle has propagated.
    assert_eq!(
        secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await,
        old_issuer
    );
    restart_data_plane(&client, &namespaces).await;
    // No `renew issuer`: the operator triggers it once every pod carries both roots.
    let s = wait_phase(
        &client,
        Phase::RenewingWorkloadCerts,
        "AccelerateRefresh",
        T,
    )
    .await;
    let rotation = s.rotation.clone().expect("in progress");
    let renewal = rotation
        .issuer_renewal
        .clone()
        .expect("the trigger is recorded");
    assert_eq!(renewal.rotation_id, rotation.id);
    assert_eq!(
        renewal.replaced_issuer.as_deref(),
        Some(old_issuer.as_str())
    );
    assert_ne!(
        secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await,
        old_issuer
    );
    restart_data_plane(&client, &namespaces).await;
    wait_phase(
        &client,
        Phase::RemovingOldTrustRoots,
        "AwaitPropagationReduced",
        T,
    )
    .await;
    restart_data_plane(&client, &namespaces).await;
    let s = wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;
    assert_eq!(
        s.history[0]
            .issuer_renewal
            .as_ref()
            .map(|r| &r.triggered_at),
        Some(&renewal.triggered_at),
        "the history keeps the record"
    );
    let reasons = event_reasons(&client).await;
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "IssuerRenewalTriggered")
            .count(),
        1,
        "exactly one re-issuance triggered: {reasons:?}"
    );
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_park_the_rotation_until_approved_for_this_rotation() {
    let sim = start_sim().await;
    let client = sim.client();
    let namespaces = workload_namespaces(&client).await;
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    patch_spec(
        &client,
        serde_json::json!({"automation": {"issuerRenewal": "Automatic",
            "approvals": {"beforeIssuerRenewal": true, "beforeRootRemoval": true}}}),
    )
    .await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let old_issuer = secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await;
    sim.oracle().reset();

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    restart_data_plane(&client, &namespaces).await;
    let parked = |gate: &'static str| {
        move |s: &trust_rotation_crds::TrustAnchorRotationStatus| {
            s.blocking_message
                .as_deref()
                .is_some_and(|m| m.starts_with(&format!("awaiting approval: {gate}")))
        }
    };
    let s = wait_status(
        &client,
        "parked for IssuerRenewal",
        T,
        parked("IssuerRenewal"),
    )
    .await;
    let id = s.rotation.clone().expect("in progress").id;
    assert_eq!(s.phase, Some(Phase::WaitingForIdentityRotation));
    let m = s.blocking_message.clone().unwrap_or_default();
    assert!(
        m.contains("`linkerd trust approve IssuerRenewal`") && m.contains(&id),
        "{m}"
    );
    ops.expect_metric(
        "trust_rotation_approvals_pending{step=\"IssuerRenewal\"}",
        1.0,
    )
    .await;

    // An approval of another rotation (an old one left in Git) does not approve this one.
    approve(&client, ApprovalGate::IssuerRenewal, "an-earlier-rotation").await;
    let s = wait_status(&client, "the stale approval named", T, |s| {
        s.blocking_message
            .as_deref()
            .is_some_and(|m| m.contains("names another rotation"))
    })
    .await;
    assert_eq!(s.phase, Some(Phase::WaitingForIdentityRotation));
    assert!(s
        .rotation
        .as_ref()
        .is_some_and(|r| r.issuer_renewal.is_none()));
    assert_eq!(
        secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await,
        old_issuer,
        "nothing re-issued while parked"
    );

    approve(&client, ApprovalGate::IssuerRenewal, &id).await;
    wait_phase(
        &client,
        Phase::RenewingWorkloadCerts,
        "AccelerateRefresh",
        T,
    )
    .await;
    ops.expect_metric(
        "trust_rotation_approvals_pending{step=\"IssuerRenewal\"}",
        0.0,
    )
    .await;
    restart_data_plane(&client, &namespaces).await;

    // Before the old root leaves the bundle.
    let s = wait_status(&client, "parked for RootRemoval", T, parked("RootRemoval")).await;
    assert_eq!(s.current_step.as_deref(), Some("ReduceBundle"));
    assert_eq!(
        bundle_fingerprints(&client).await.len(),
        2,
        "both roots kept"
    );
    ops.expect_metric(
        "trust_rotation_approvals_pending{step=\"RootRemoval\"}",
        1.0,
    )
    .await;
    approve(&client, ApprovalGate::RootRemoval, &id).await;
    wait_phase(
        &client,
        Phase::RemovingOldTrustRoots,
        "AwaitPropagationReduced",
        T,
    )
    .await;
    restart_data_plane(&client, &namespaces).await;
    let s = wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;
    let approvals = &s.history[0].approvals;
    assert_eq!(
        approvals.iter().map(|a| a.step).collect::<Vec<_>>(),
        [ApprovalGate::IssuerRenewal, ApprovalGate::RootRemoval]
    );
    assert!(approvals
        .iter()
        .all(|a| a.rotation_id == id && a.approved_by.as_deref() == Some("linkerd-trust")));
    let reasons = event_reasons(&client).await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "ApprovalConsumed").count(),
        2,
        "{reasons:?}"
    );
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}
