//! Bad PKI input is caught before anything disruptive, through the real operator binary on
//! the cluster simulator: a trust anchor that is not a CA never enters the bundle, and an
//! identity issuer Linkerd cannot use never gets the control plane restarted onto it. Each
//! blocks with a message naming the certificate and the fix, and the rotation completes once
//! the person fixed the Certificate and renewed it.

mod common;

use common::*;
use kube::api::{Patch, PatchParams};
use std::time::Duration;
use trust_rotation_crds::Phase;

const T: Duration = Duration::from_secs(60);

async fn patch_certificate(client: &kube::Client, ns: &str, name: &str, spec: serde_json::Value) {
    certificate_api(client, ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
        .expect("Certificate patched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ca_anchor_never_enters_the_bundle_and_a_fixed_one_is_rotated_to() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let a = secret_cert_fingerprint(&client, "cert-manager", "linkerd-trust-anchor").await;
    sim.oracle().reset();

    // Someone edits the anchor's Certificate wrongly and renews it.
    patch_certificate(
        &client,
        "cert-manager",
        "linkerd-trust-anchor",
        serde_json::json!({"isCA": false}),
    )
    .await;
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let bad = renewed_anchor(&client, &a).await;
    let s = wait_status(&client, "blocked on the non-CA anchor", T, |s| {
        s.blocking_message
            .as_deref()
            .is_some_and(|m| m.contains("not a CA certificate"))
    })
    .await;
    let m = s.blocking_message.unwrap();
    assert!(m.contains(&bad[..12]), "names the certificate: {m}");
    assert!(
        m.contains("cmctl renew -n cert-manager linkerd-trust-anchor"),
        "says how to fix it: {m}"
    );
    assert_eq!(s.current_step.as_deref(), Some("ReconcileBundle"));
    assert_eq!(
        bundle_fingerprints(&client).await,
        std::slice::from_ref(&a),
        "nothing changed"
    );

    // Fixed and renewed: the rotation moves to the good anchor; the bad one never was in
    // the bundle.
    patch_certificate(
        &client,
        "cert-manager",
        "linkerd-trust-anchor",
        serde_json::json!({"isCA": true}),
    )
    .await;
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let good = renewed_anchor(&client, &bad).await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    assert_eq!(
        bundle_fingerprints(&client).await,
        [a.clone(), good.clone()]
    );
    rollout_restart(&client, APP_NS).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    let s = finish_from_identity_rotation(&client, T).await;
    assert_eq!(s.history[0].to_anchor.as_deref(), Some(good.as_str()));
    assert_eq!(bundle_fingerprints(&client).await, [good]);
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_linkerd_cannot_use_blocks_before_the_control_plane_restarts() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    sim.oracle().reset();
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    rollout_restart(&client, APP_NS).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    let identity_generation = deployment_generation(&client, "linkerd", "linkerd-identity").await;

    // The issuer is re-issued with a P-384 key: Linkerd's identity needs P-256.
    patch_certificate(
        &client,
        "linkerd",
        "linkerd-identity-issuer",
        serde_json::json!({"privateKey": {"algorithm": "ECDSA", "size": 384}}),
    )
    .await;
    cmctl_renew(&client, "linkerd", "linkerd-identity-issuer").await;
    let s = wait_status(&client, "blocked on the P-384 issuer", T, |s| {
        s.blocking_message
            .as_deref()
            .is_some_and(|m| m.contains("ECDSA P-256"))
    })
    .await;
    let m = s.blocking_message.unwrap();
    assert!(
        m.contains("ECDSA P-384") && m.contains("cmctl renew -n linkerd linkerd-identity-issuer"),
        "{m}"
    );
    assert_eq!(s.phase, Some(Phase::WaitingForIdentityRotation));
    assert_eq!(
        deployment_generation(&client, "linkerd", "linkerd-identity").await,
        identity_generation,
        "the control plane was not restarted onto it"
    );

    // Fixed: the rotation goes on and completes.
    patch_certificate(
        &client,
        "linkerd",
        "linkerd-identity-issuer",
        serde_json::json!({"privateKey": {"algorithm": "ECDSA", "size": 256}}),
    )
    .await;
    let s = finish_from_identity_rotation(&client, T).await;
    assert!(s.blocking_message.is_none());
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}
