//! Holding a rotation at PropagatingTrustRoots ("roll forward, never back": the bundle trusting
//! old + new is safe for as long as you like), with cert-manager renewing the identity issuer
//! on its own schedule meanwhile, as docs/operations.md says it may; and that routine renewal
//! arriving too early (before the restarts) with `issuerRenewal: Automatic`.

mod common;

use cluster_sim::mesh::Durations;
use common::*;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trust_rotation_crds::{Phase, TrustAnchorRotation};

const T: Duration = Duration::from_secs(60);

/// cert-manager's routine renewal of a Certificate: its `status.renewalTime` has come (set to
/// the past here, as time passing would), so cert-manager re-issues it (reason `Renewing`),
/// signed by whatever its issuer signs with at that moment.
async fn scheduled_renewal_due(client: &kube::Client, ns: &str, name: &str) {
    let past = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(60))
        .expect("a minute ago")
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    certificate_api(client, ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"renewalTime": past}})),
        )
        .await
        .expect("renewal time set");
}

async fn secret_cert(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> trust_rotation_steps::pki::Certificate {
    let s = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("secret");
    let pem = String::from_utf8(s.data.expect("data")["tls.crt"].0.clone()).expect("utf8");
    trust_rotation_steps::pki::parse_pem_certificate(&pem).expect("certificate")
}

/// Waits until the Secret's certificate is no longer `old`.
async fn reissued(client: &kube::Client, ns: &str, name: &str, old: &str) -> String {
    for _ in 0..600 {
        let now = secret_cert_fingerprint(client, ns, name).await;
        if now != old {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Secret {ns}/{name} was never re-issued");
}

/// Every distinct set of roots the trust-roots ConfigMap held, in order, from a watch.
fn record_bundles(client: &kube::Client) -> Arc<Mutex<Vec<BTreeSet<String>>>> {
    let seen: Arc<Mutex<Vec<BTreeSet<String>>>> = Arc::default();
    let out = seen.clone();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "linkerd");
    let cfg = watcher::Config::default().fields("metadata.name=linkerd-identity-trust-roots");
    tokio::spawn(async move {
        let mut stream = watcher(api, cfg)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(cm)) = stream.next().await {
            let Some(pem) = cm.data.as_ref().and_then(|d| d.get("ca-bundle.crt")) else {
                continue;
            };
            let Ok(b) = trust_rotation_steps::bundle::Bundle::parse(pem) else {
                continue;
            };
            let roots: BTreeSet<String> =
                b.fingerprints().into_iter().map(str::to_string).collect();
            let mut v = out.lock().unwrap();
            if v.last() != Some(&roots) {
                v.push(roots);
            }
        }
    });
    seen
}

/// Every distinct `blockingMessage` the rotation showed, from a watch.
fn record_blocking(client: &kube::Client) -> Arc<Mutex<Vec<String>>> {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let out = seen.clone();
    let api: Api<TrustAnchorRotation> = Api::all(client.clone());
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(tar)) = stream.next().await {
            if let Some(m) = tar.status.and_then(|s| s.blocking_message) {
                let mut v = out.lock().unwrap();
                if !v.contains(&m) {
                    v.push(m);
                }
            }
        }
    });
    seen
}

/// Waits until every Deployment in `namespaces` finished its rollout (as `kubectl rollout
/// status` does) and no pod of the old ReplicaSets is left.
async fn rollouts_done(client: &kube::Client, namespaces: &[String]) {
    for _ in 0..600 {
        let mut done = true;
        for ns in namespaces {
            let deps = Api::<Deployment>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
                .expect("deployments");
            for d in deps.items {
                let want = d.spec.replicas.unwrap_or(1);
                let gen = d.metadata.generation.unwrap_or(0);
                let s = d.status.unwrap_or_default();
                done &= s.observed_generation.unwrap_or(0) >= gen
                    && s.updated_replicas.unwrap_or(0) == want
                    && s.available_replicas.unwrap_or(0) == want
                    && s.replicas.unwrap_or(0) == want;
            }
        }
        if done && workload_pods_terminating(client).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the rollouts in {namespaces:?} never finished");
}

async fn workload_pods_terminating(client: &kube::Client) -> usize {
    Api::<k8s_openapi::api::core::v1::Pod>::all(client.clone())
        .list(&ListParams::default().labels("linkerd.io/control-plane-ns=linkerd"))
        .await
        .expect("pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .count()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// From the phase after the issuer moved to the new anchor, the guide's remaining restarts,
/// to Synced.
async fn finish_after_issuer(client: &kube::Client, namespaces: &[String]) {
    let s = wait_status(client, "past the issuer", T, |s| {
        matches!(
            (s.phase, s.current_step.as_deref()),
            (
                Some(Phase::RenewingWorkloadCerts),
                Some("AccelerateRefresh")
            ) | (
                Some(Phase::RemovingOldTrustRoots),
                Some("AwaitPropagationReduced")
            )
        ) || s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;
    if s.phase == Some(Phase::RenewingWorkloadCerts) {
        restart_data_plane(client, namespaces).await;
        wait_phase(
            client,
            Phase::RemovingOldTrustRoots,
            "AwaitPropagationReduced",
            T,
        )
        .await;
    }
    if s.phase != Some(Phase::Synced) {
        restart_data_plane(client, namespaces).await;
    }
    wait_status(client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_hold_at_propagating_trust_roots_survives_a_routine_issuer_renewal() {
    let sim = start_sim().await;
    let client = sim.client();
    let namespaces = workload_namespaces(&client).await;
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    // Automatic: the hold must also keep the operator from re-issuing anything by itself.
    patch_spec(
        &client,
        serde_json::json!({"automation": {"issuerRenewal": "Automatic"}}),
    )
    .await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let old_root = secret_cert_fingerprint(&client, "cert-manager", "linkerd-trust-anchor").await;
    let old_issuer = secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await;
    assert_eq!(bundle_fingerprints(&client).await, [old_root.as_str()]);
    let bundles = record_bundles(&client);
    let blocking = record_blocking(&client);
    sim.oracle().reset();

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let new_root = renewed_anchor(&client, &old_root).await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    patch_spec(&client, serde_json::json!({"paused": true})).await;
    wait_status(&client, "paused acknowledged", T, |s| {
        s.conditions.iter().any(|c| c.reason == "Paused")
    })
    .await;

    // The guide's restart, done while held: every pod now carries old + new.
    restart_data_plane(&client, &namespaces).await;
    rollouts_done(&client, &namespaces).await;

    // cert-manager's schedule comes round during the hold: the issuer is re-issued by the
    // ClusterIssuer, which signs with the anchor Secret's key, now the new anchor's.
    scheduled_renewal_due(&client, "linkerd", "linkerd-identity-issuer").await;
    let new_issuer = reissued(&client, "linkerd", "linkerd-identity-issuer", &old_issuer).await;
    let issuer = secret_cert(&client, "linkerd", "linkerd-identity-issuer").await;
    let anchor = secret_cert(&client, "cert-manager", "linkerd-trust-anchor").await;
    assert_eq!(issuer.fingerprint(), new_issuer);
    assert_eq!(anchor.fingerprint(), new_root);
    assert!(
        issuer.is_signed_by(&anchor),
        "the routine renewal chains to the new anchor"
    );
    // Once identity has the new issuer (the kubelet's Secret volume delay), workloads
    // restarted during the hold get certificates chaining to the new anchor while the control
    // plane keeps its own from the old one: a mesh of mixed chains, which old + new trusts.
    tokio::time::sleep(Durations::fast().volume_propagation * 3).await;
    restart_data_plane(&client, &namespaces).await;
    rollouts_done(&client, &namespaces).await;

    // Held: nothing moves, the bundle keeps both roots.
    for _ in 0..10 {
        let s = status(&client).await;
        assert_eq!(s.phase, Some(Phase::PropagatingTrustRoots), "held");
        assert_eq!(s.current_step.as_deref(), Some("AwaitPropagation"), "held");
        assert_eq!(
            bundle_fingerprints(&client)
                .await
                .into_iter()
                .collect::<BTreeSet<_>>(),
            set(&[&old_root, &new_root]),
            "old + new throughout the hold"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Resumed in place: the issuer is found re-issued and the workloads already on it, so no
    // restart is needed until the old root has left the bundle.
    patch_spec(&client, serde_json::json!({"paused": false})).await;
    wait_phase(
        &client,
        Phase::RemovingOldTrustRoots,
        "AwaitPropagationReduced",
        T,
    )
    .await;
    restart_data_plane(&client, &namespaces).await;
    wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;

    let s = status(&client).await;
    assert_eq!(bundle_fingerprints(&client).await, [new_root.as_str()]);
    assert_eq!(
        secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await,
        new_issuer,
        "the routine renewal's issuer is the one kept: the operator re-issued nothing"
    );
    assert_eq!(
        s.history[0].issuer_renewal, None,
        "no re-issuance triggered: the issuer already chained to the new anchor"
    );
    let reasons = event_reasons(&client).await;
    assert!(
        !reasons.iter().any(|r| r == "IssuerRenewalTriggered"),
        "{reasons:?}"
    );
    // Roll forward only: old, old + new, new; never a root removed early or put back.
    assert_eq!(
        *bundles.lock().unwrap(),
        [
            set(&[&old_root]),
            set(&[&old_root, &new_root]),
            set(&[&new_root])
        ]
    );
    let blocking = blocking.lock().unwrap().clone();
    assert!(
        !blocking
            .iter()
            .any(|m| m.contains("re-issued under the new trust anchor")),
        "a renewal after every pod carries both roots is no early renewal: {blocking:?}"
    );
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

/// e2e_scenarios covers a person's `cmctl renew` of the issuer before the restarts (blocked,
/// then resumed after the restart). Here it is cert-manager's own schedule, with
/// `issuerRenewal: Automatic`: once the restart recovers it, the operator finds the issuer
/// already on the new anchor and triggers no second re-issuance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routine_issuer_renewal_before_the_restarts_is_not_repeated_by_automatic_renewal() {
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
    let old_root = secret_cert_fingerprint(&client, "cert-manager", "linkerd-trust-anchor").await;
    let old_issuer = secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await;
    let bundles = record_bundles(&client);

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let new_root = renewed_anchor(&client, &old_root).await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    scheduled_renewal_due(&client, "linkerd", "linkerd-identity-issuer").await;
    let new_issuer = reissued(&client, "linkerd", "linkerd-identity-issuer", &old_issuer).await;
    let s = wait_status(&client, "blocked", T, |s| s.blocking_message.is_some()).await;
    let msg = s.blocking_message.clone().unwrap_or_default();
    assert!(
        msg.contains("re-issued under the new trust anchor")
            && msg.contains("kubectl -n emojivoto rollout restart deployment/"),
        "{msg}"
    );
    assert_eq!(s.phase, Some(Phase::PropagatingTrustRoots));
    assert_eq!(
        bundle_fingerprints(&client)
            .await
            .into_iter()
            .collect::<BTreeSet<_>>(),
        set(&[&old_root, &new_root]),
        "the bundle is not touched while blocked"
    );

    restart_data_plane(&client, &namespaces).await;
    finish_after_issuer(&client, &namespaces).await;

    let s = status(&client).await;
    assert_eq!(bundle_fingerprints(&client).await, [new_root.as_str()]);
    assert_eq!(
        secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await,
        new_issuer,
        "not re-issued a second time"
    );
    assert_eq!(s.history[0].issuer_renewal, None);
    let reasons = event_reasons(&client).await;
    assert!(
        !reasons.iter().any(|r| r == "IssuerRenewalTriggered"),
        "{reasons:?}"
    );
    assert_eq!(
        *bundles.lock().unwrap(),
        [
            set(&[&old_root]),
            set(&[&old_root, &new_root]),
            set(&[&new_root])
        ]
    );
    ops.stop().await;
    sim.shutdown().await;
}
