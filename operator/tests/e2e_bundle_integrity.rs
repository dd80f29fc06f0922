//! The bundle invariant on the cluster simulator, through the real operator binary: people
//! and other controllers rewrite the trust-roots ConfigMap in the middle of a rotation, and
//! mTLS must not break.

mod common;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::time::Duration;
use trust_rotation_crds::Phase;

const T: Duration = Duration::from_secs(60);

/// Wait until the proxy injector sees the ConfigMap as it is now: like the real one, the
/// simulated injector reads the bundle through a volume the kubelet refreshes with a delay.
async fn injector_catches_up() {
    tokio::time::sleep(cluster_sim::Durations::fast().volume_propagation * 3).await;
}

async fn anchor_pem(client: &kube::Client) -> String {
    let s = Api::<Secret>::namespaced(client.clone(), "cert-manager")
        .get("linkerd-trust-anchor")
        .await
        .expect("anchor Secret");
    String::from_utf8(s.data.expect("data")["tls.crt"].0.clone()).expect("utf8")
}

fn fingerprint(pem: &str) -> String {
    trust_rotation_steps::pki::parse_pem_certificate(pem)
        .expect("a certificate")
        .fingerprint()
        .to_string()
}

/// What `kubectl apply -f` of a hand-made (or stale) manifest does to the bundle: an update
/// by the field manager `kubectl-client-side-apply`.
async fn kubectl_apply_bundle(client: &kube::Client, roots: &[&str]) {
    let value: String = roots.concat();
    Api::<ConfigMap>::namespaced(client.clone(), "linkerd")
        .patch(
            "linkerd-identity-trust-roots",
            &PatchParams {
                field_manager: Some("kubectl-client-side-apply".into()),
                ..Default::default()
            },
            &Patch::Merge(serde_json::json!({"data": {"ca-bundle.crt": value}})),
        )
        .await
        .expect("bundle applied");
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + T;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Every application pod is Ready and none is terminating.
async fn app_pods_ready(client: &kube::Client, want: usize) -> bool {
    let pods = Api::<Pod>::namespaced(client.clone(), APP_NS)
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items;
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    live.len() == want
        && live.iter().all(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
}

async fn app_pod_count(client: &kube::Client) -> usize {
    Api::<Pod>::namespaced(client.clone(), APP_NS)
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count()
}

/// The operator puts the missing root back, so the bundle is `expected` (fingerprints, in
/// order), and a BundleDrift Event names kubectl and the root it restored.
async fn restored_by_the_operator(client: &kube::Client, expected: &[String], restored: &str) {
    wait_for("the missing root restored", || async {
        bundle_fingerprints(client).await == expected
    })
    .await;
    wait_for("a BundleDrift Event naming kubectl", || async {
        event_notes(client, "BundleDrift")
            .await
            .iter()
            .any(|n| n.contains("kubectl-client-side-apply") && n.contains(&restored[..12]))
    })
    .await;
}

/// The guide's restart of the application once the injector has the repaired bundle: every
/// restarted pod becomes ready.
async fn restart_app_onto_the_repaired_bundle(client: &kube::Client, pods: usize) {
    injector_catches_up().await;
    rollout_restart(client, APP_NS).await;
    wait_for("the restarted application pods ready", || {
        app_pods_ready(client, pods)
    })
    .await;
}

/// The guide's steps 1 and 2: renew the anchor, restart the data plane, wait for
/// WaitingForIdentityRotation. Returns (old, new) anchor PEMs.
async fn to_identity_rotation(client: &kube::Client) -> (String, String) {
    let old = anchor_pem(client).await;
    cmctl_renew(client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    rollout_restart(client, APP_NS).await;
    wait_phase(client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    let new = anchor_pem(client).await;
    assert_ne!(fingerprint(&old), fingerprint(&new));
    (old, new)
}

/// The reproduction: the README's bootstrap re-run in WaitingForIdentityRotation
/// leaves the new root only. The operator puts the old root back at once and says who
/// removed it, so the restart that follows (and the guide's own restarts) keep mTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_rerun_mid_rotation_is_restored_and_the_writer_named() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let pods = app_pod_count(&client).await;
    let (old, new) = to_identity_rotation(&client).await;
    sim.oracle().reset();

    kubectl_apply_bundle(&client, &[&new]).await;
    restored_by_the_operator(
        &client,
        &[fingerprint(&new), fingerprint(&old)],
        &fingerprint(&old),
    )
    .await;

    // The restart that took the pod down before (once the injector has the repaired bundle):
    // it becomes ready.
    restart_app_onto_the_repaired_bundle(&client, pods).await;
    let s = finish_from_identity_rotation(&client, T).await;
    assert!(s.blocking_message.is_none());
    assert_eq!(bundle_fingerprints(&client).await, [fingerprint(&new)]);
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

/// A pod restarted while the bundle lacked the old root carries that bundle: restoring the
/// ConfigMap cannot help it, so the operator blocks (naming the pod, who changed the bundle
/// and the fix) and writes nothing; once the person restored the bundle and restarted the
/// pod, the rotation completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_took_the_broken_bundle_blocks_until_it_is_restarted() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let pods = app_pod_count(&client).await;
    let (old, new) = to_identity_rotation(&client).await;

    // The operator is paused, so nothing repairs the bundle before the restart.
    patch_spec(&client, serde_json::json!({"paused": true})).await;
    wait_status(&client, "paused acknowledged", T, |s| {
        s.conditions.iter().any(|c| c.reason == "Paused")
    })
    .await;
    kubectl_apply_bundle(&client, &[&new]).await;
    let broken = trust_rotation_steps::bundle::trust_root_sha256(&new);
    injector_catches_up().await;
    rollout_restart(&client, APP_NS).await;
    wait_for("a pod admitted with the broken bundle", || async {
        Api::<Pod>::namespaced(client.clone(), APP_NS)
            .list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .iter()
            .any(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("linkerd.io/trust-root-sha256"))
                    == Some(&broken)
            })
    })
    .await;

    patch_spec(&client, serde_json::json!({"paused": false})).await;
    let s = wait_status(&client, "blocked on the pods at risk", T, |s| {
        s.blocking_message
            .as_deref()
            .is_some_and(|m| m.contains("emojivoto/") && m.contains("kubectl-client-side-apply"))
    })
    .await;
    let m = s.blocking_message.unwrap();
    assert!(m.contains("rollout restart"), "{m}");
    assert!(m.contains("linkerd trust bundle"), "{m}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        bundle_fingerprints(&client).await,
        [fingerprint(&new)],
        "no write while blocked"
    );

    // The fix the message gives: the whole bundle back, then restart the named workloads.
    kubectl_apply_bundle(&client, &[&old, &new]).await;
    restart_app_onto_the_repaired_bundle(&client, pods).await;
    wait_status(&client, "unblocked", T, |s| s.blocking_message.is_none()).await;
    sim.oracle().reset();
    let s = finish_from_identity_rotation(&client, T).await;
    assert_eq!(s.history.len(), 1);
    assert_eq!(bundle_fingerprints(&client).await, [fingerprint(&new)]);
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

/// A multicluster peer's root first in the bundle: the rotation finds the old root by the
/// issuer's chain, keeps the peer's root throughout and after, lists it in the status, and a
/// reordered re-apply mid-rotation is not drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_root_survives_the_rotation_and_reordering_is_not_drift() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let peer = {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "root.east.cluster.local");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).expect("peer root").pem()
    };
    let old = anchor_pem(&client).await;
    kubectl_apply_bundle(&client, &[&peer, &old]).await;
    wait_status(&client, "the foreign root listed", T, |s| {
        s.phase == Some(Phase::Synced)
            && s.foreign_roots
                .iter()
                .map(|r| r.fingerprint.as_str())
                .collect::<Vec<_>>()
                == [fingerprint(&peer)]
    })
    .await;
    rollout_restart(&client, APP_NS).await;
    sim.oracle().reset();

    let (_, new) = to_identity_rotation(&client).await;
    let s = status(&client).await;
    assert_eq!(
        s.rotation.and_then(|r| r.from_anchor),
        Some(fingerprint(&old)),
        "the old root is the one the issuer chains to, not the first one"
    );
    assert_eq!(
        bundle_fingerprints(&client).await,
        [fingerprint(&peer), fingerprint(&old), fingerprint(&new)]
    );
    // A GitOps tool re-applies the same roots in another order.
    kubectl_apply_bundle(&client, &[&new, &peer, &old]).await;
    let s = finish_from_identity_rotation(&client, T).await;
    assert_eq!(
        bundle_fingerprints(&client).await,
        [fingerprint(&new), fingerprint(&peer)],
        "exactly the old root was removed"
    );
    assert_eq!(
        s.foreign_roots
            .iter()
            .map(|r| r.fingerprint.clone())
            .collect::<Vec<_>>(),
        [fingerprint(&peer)]
    );
    assert!(event_notes(&client, "BundleDrift").await.is_empty());
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

/// An Argo CD Application owns the ConfigMap: it would put its copy back over the expanded
/// bundle. The operator does not start the rotation (blockingMessage names the Application
/// and the fix) and writes nothing; once the ConfigMap is taken out of the Application, the
/// rotation starts and expands the bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_owned_by_argo_cd_blocks_the_start_until_it_is_released() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "linkerd");
    let tracking = |v: serde_json::Value| {
        let cms = cms.clone();
        async move {
            cms.patch(
                "linkerd-identity-trust-roots",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                    "argocd.argoproj.io/tracking-id": v
                }}})),
            )
            .await
            .expect("annotate the ConfigMap");
        }
    };
    tracking(serde_json::json!(
        "linkerd-cp:/ConfigMap:linkerd/linkerd-identity-trust-roots"
    ))
    .await;
    let old = anchor_pem(&client).await;
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let s = wait_status(&client, "blocked on the Argo CD Application", T, |s| {
        s.blocking_message
            .as_deref()
            .is_some_and(|m| m.contains("Argo CD Application linkerd-cp"))
    })
    .await;
    assert_eq!(s.phase, Some(Phase::Synced), "the rotation has not started");
    assert!(s.rotation.is_none());
    assert_eq!(bundle_fingerprints(&client).await, [fingerprint(&old)]);

    tracking(serde_json::Value::Null).await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    let new = anchor_pem(&client).await;
    assert_eq!(
        bundle_fingerprints(&client).await,
        [fingerprint(&old), fingerprint(&new)]
    );
    let s = wait_status(&client, "unblocked", T, |s| s.blocking_message.is_none()).await;
    assert!(s.rotation.is_some());
    ops.stop().await;
    sim.shutdown().await;
}

/// Another field manager rewrites the bundle in WaitingForIdentityRotation: first with the
/// same roots and other whitespace (not drift: nothing is written, nothing blocks), then with
/// the old root only (the new anchor is the rotation's own and no pod carries a bundle without
/// it yet: restored at once, with a BundleDrift Event naming the writer). The guide's restarts
/// that follow keep mTLS and the rotation completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitespace_is_not_drift_and_an_old_only_bundle_is_restored() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let pods = app_pod_count(&client).await;
    let (old, new) = to_identity_rotation(&client).await;
    sim.oracle().reset();

    // Same roots, other whitespace.
    let spaced = format!("\n{}\n\n{}\n", old.trim_end(), new.trim_end());
    kubectl_apply_bundle(&client, &[&spaced]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = status(&client).await;
    assert_eq!(s.blocking_message, None);
    assert_eq!(s.phase, Some(Phase::WaitingForIdentityRotation));
    assert_eq!(
        bundle_fingerprints(&client).await,
        [fingerprint(&old), fingerprint(&new)]
    );
    assert!(event_notes(&client, "BundleDrift").await.is_empty());

    // The old root only: the new anchor is put back, and the writer named.
    kubectl_apply_bundle(&client, &[&old]).await;
    restored_by_the_operator(
        &client,
        &[fingerprint(&old), fingerprint(&new)],
        &fingerprint(&new),
    )
    .await;
    restart_app_onto_the_repaired_bundle(&client, pods).await;
    let s = finish_from_identity_rotation(&client, T).await;
    assert!(s.blocking_message.is_none());
    assert_eq!(bundle_fingerprints(&client).await, [fingerprint(&new)]);
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}
