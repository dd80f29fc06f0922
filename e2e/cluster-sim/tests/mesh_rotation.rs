//! Trust-anchor rotations done by hand through the store, judged by the mTLS oracle: the
//! guide's order keeps every pair of meshed pods talking; the two classic mistakes do not.

mod mesh_common;

use cluster_sim::mesh::Durations;
use mesh_common::*;
use std::time::Duration;

fn durations(workload_cert_lifetime: Duration) -> Durations {
    Durations {
        workload_cert_lifetime,
        ..Durations::fast()
    }
}

/// Step 1 of every rotation: a new root, and the bundle holding old + new.
async fn new_root_and_expanded_bundle(store: &cluster_sim::store::Store) -> (String, String) {
    let old_root = secret_value(store, "cert-manager", "linkerd-trust-anchor", "tls.crt").unwrap();
    renew(store, "cert-manager", "linkerd-trust-anchor").await;
    let new_root = secret_value(store, "cert-manager", "linkerd-trust-anchor", "tls.crt").unwrap();
    assert_ne!(
        pem_ders(&old_root),
        pem_ders(&new_root),
        "renewing the anchor makes a new root"
    );
    set_bundle(store, &format!("{}{}", old_root, new_root));
    (old_root, new_root)
}

async fn wait_event(store: &cluster_sim::store::Store, reason: &str) {
    wait_for(&format!("event {reason}"), Duration::from_secs(10), || {
        !events(store, reason).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_order_keeps_mtls_up_throughout() {
    let d = durations(Duration::from_secs(6));
    let (store, mesh) = demo(d.clone()).await;
    mesh.oracle().reset();

    let (_old_root, new_root) = new_root_and_expanded_bundle(&store).await;
    restart_and_wait(&store, &control_plane()).await;
    restart_and_wait(&store, &apps()).await;
    let expanded = sha256_hex(bundle(&store).as_bytes());
    for (ns, app) in apps() {
        for p in pods_of(&store, ns, app) {
            assert_eq!(
                p["metadata"]["annotations"]["linkerd.io/trust-root-sha256"],
                expanded.as_str(),
                "{app} has the expanded bundle"
            );
        }
    }

    renew(&store, "linkerd", "linkerd-identity-issuer").await;
    wait_event(&store, "IssuerUpdated").await;
    let issuer =
        pem_ders(&secret_value(&store, "linkerd", "linkerd-identity-issuer", "tls.crt").unwrap())
            [0]
        .clone();
    // Proxies refresh at 70% of their 6s certificates: every one re-certifies by itself.
    wait_all_on_issuer(&store, &issuer, Duration::from_secs(20)).await;

    // Only now drop the old root.
    set_bundle(&store, &new_root);
    restart_and_wait(&store, &control_plane()).await;
    restart_and_wait(&store, &apps()).await;

    let r = mesh.oracle().report();
    assert!(
        r.samples > 20,
        "the oracle sampled throughout ({} samples)",
        r.samples
    );
    assert_eq!(
        r.min_ratio, 1.0,
        "mTLS broke during a correct rotation: {:?}",
        r.intervals
    );
    assert!(r.intervals.is_empty());
    assert_eq!(r.current.certified_pods, 7);
    assert!(events(&store, "IssuerUpdateSkipped").is_empty());
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_old_root_before_workloads_recertify_breaks_mtls() {
    // Long-lived workload certificates: nobody re-certifies during the test by itself.
    let (store, mesh) = demo(durations(Duration::from_secs(120))).await;
    mesh.oracle().reset();
    let (_old, new_root) = new_root_and_expanded_bundle(&store).await;
    restart_and_wait(&store, &control_plane()).await;
    restart_and_wait(&store, &apps()).await;
    renew(&store, "linkerd", "linkerd-identity-issuer").await;
    wait_event(&store, "IssuerUpdated").await;
    assert_eq!(
        mesh.oracle().report().min_ratio,
        1.0,
        "fine so far: every pod trusts both roots"
    );

    // The mistake: workloads still hold certificates from the old issuer.
    set_bundle(&store, &new_root);
    restart_and_wait(&store, &control_plane()).await;
    let during = mesh.oracle().report();
    assert!(
        during.current.ratio < 1.0,
        "control-plane proxies that trust only the new root cannot verify the workloads: {:?}",
        during.current
    );
    assert!(
        during
            .current
            .failing_pods
            .iter()
            .any(|p| p.starts_with("emojivoto/")),
        "{:?}",
        during.current.failing_pods
    );
    // Restarting everything onto the new root heals it; the dip stays on record.
    restart_and_wait(&store, &apps()).await;
    wait_for("mTLS to recover", Duration::from_secs(10), || {
        mesh.oracle().ratio() == 1.0
    })
    .await;
    let r = mesh.oracle().report();
    assert!(r.min_ratio < 1.0);
    let dip = r.intervals.first().expect("the dip is recorded");
    assert!(dip.end.is_some(), "and it ended: {dip:?}");
    assert!(!dip.pods.is_empty());
    let why = dip.example.as_deref().unwrap_or("");
    assert!(
        why.contains("rejects") && why.contains("does not verify"),
        "{why}"
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_the_issuer_before_the_bundle_propagated_breaks_mtls() {
    let (store, mesh) = demo(durations(Duration::from_secs(120))).await;
    mesh.oracle().reset();
    let old_issuer =
        pem_ders(&secret_value(&store, "linkerd", "linkerd-identity-issuer", "tls.crt").unwrap())
            [0]
        .clone();
    new_root_and_expanded_bundle(&store).await;

    // The mistake: the issuer is renewed while identity still runs with the old bundle.
    renew(&store, "linkerd", "linkerd-identity-issuer").await;
    wait_event(&store, "IssuerUpdateSkipped").await;
    let skipped = events(&store, "IssuerUpdateSkipped").pop().unwrap();
    assert_eq!(skipped["type"], "Warning");
    assert_eq!(skipped["involvedObject"]["kind"], "Deployment");
    assert_eq!(skipped["involvedObject"]["name"], "linkerd-identity");
    assert!(events(&store, "IssuerUpdated").is_empty());
    // Identity kept the old issuer: workloads still get certificates from it.
    for (pod, chain) in chains(&store).await {
        assert_eq!(chain.unwrap()[1], old_issuer, "{pod}");
    }

    // The control plane restarts onto the expanded bundle; identity now loads the new
    // issuer, and proxies that only trust the old root cannot verify what it signs.
    restart_and_wait(&store, &control_plane()).await;
    wait_for("mTLS to break", Duration::from_secs(10), || {
        mesh.oracle().ratio() < 1.0
    })
    .await;
    let r = mesh.oracle().report();
    assert!(r.min_ratio < 1.0);
    assert!(
        r.current
            .failing_pods
            .iter()
            .any(|p| p.starts_with("emojivoto/")),
        "{:?}",
        r.current
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_restarted_with_a_bundle_that_lacks_the_issuers_root_crash_loops() {
    let (store, mesh) = demo(durations(Duration::from_secs(120))).await;
    renew(&store, "cert-manager", "linkerd-trust-anchor").await;
    // The bundle was never expanded; the issuer is renewed under the new root anyway.
    renew(&store, "linkerd", "linkerd-identity-issuer").await;
    wait_event(&store, "IssuerUpdateSkipped").await;
    restart(&store, "linkerd", "linkerd-identity");
    wait_for("identity to crash-loop", Duration::from_secs(10), || {
        store
            .list(&k("", "pods"), Some("linkerd"))
            .0
            .iter()
            .any(|p| {
                p["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c["name"] == "identity"
                                && c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                                && c["restartCount"].as_i64() >= Some(1)
                        })
                    })
            })
    })
    .await;
    // maxUnavailable 0: the old identity pod keeps serving, the rollout does not finish.
    assert!(!rollout_done(&store, "linkerd", "linkerd-identity"));
    assert_eq!(mesh.oracle().ratio(), 1.0);
    mesh.shutdown().await;
}

/// Hazard 3: once the root Secret changes, cert-manager's own scheduled renewal of the
/// identity issuer signs it with the new root, whatever state the bundle is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_issuer_renewal_after_a_new_root_uses_the_new_root() {
    let (store, mesh) = demo(durations(Duration::from_secs(120))).await;
    // The issuer renews itself every few seconds.
    store
        .mutate(
            &k("cert-manager.io", "certificates"),
            Some("linkerd"),
            "linkerd-identity-issuer",
            |c| {
                c["spec"]["duration"] = serde_json::json!("3s");
                c["spec"]["renewBefore"] = serde_json::json!("1s");
                Ok(())
            },
        )
        .unwrap();
    let rev = cert_revision(&store, "linkerd", "linkerd-identity-issuer");
    wait_for(
        "the spec change to re-issue",
        Duration::from_secs(5),
        || cert_revision(&store, "linkerd", "linkerd-identity-issuer") > rev,
    )
    .await;
    renew(&store, "cert-manager", "linkerd-trust-anchor").await;
    let new_root = secret_value(&store, "cert-manager", "linkerd-trust-anchor", "tls.crt").unwrap();
    // Nobody touches the issuer: its next scheduled renewal comes from the new root.
    wait_for(
        "a scheduled renewal under the new root",
        Duration::from_secs(10),
        || {
            secret_value(&store, "linkerd", "linkerd-identity-issuer", "ca.crt").as_deref()
                == Some(new_root.as_str())
        },
    )
    .await;
    wait_event(&store, "IssuerUpdateSkipped").await;
    assert_eq!(mesh.oracle().ratio(), 1.0, "identity kept the old issuer");
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_identity_certificates_expire_and_the_oracle_says_why() {
    let (store, mesh) = demo(durations(Duration::from_secs(6))).await;
    mesh.oracle().reset();
    // Nobody answers CSRs any more: every proxy keeps its certificate until it expires.
    store
        .mutate(
            &k("apps", "deployments"),
            Some("linkerd"),
            "linkerd-identity",
            |d| {
                d["spec"]["replicas"] = serde_json::json!(0);
                Ok(())
            },
        )
        .expect("scale identity to zero");
    wait_for("mTLS to break", Duration::from_secs(20), || {
        mesh.oracle().ratio() < 1.0
    })
    .await;
    let why = mesh.oracle().report().current.example.unwrap_or_default();
    assert!(
        why.contains("has no valid certificate (it expired at ")
            && why.ends_with(
                "its last renewal failed: identity service unavailable: no running identity pod"
            ),
        "{why}"
    );
    mesh.shutdown().await;
}
