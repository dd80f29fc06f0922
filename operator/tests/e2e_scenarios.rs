//! What the operator does off the happy path, on the cluster simulator: startup checks, a
//! block that resolves itself, pausing, and the built-in consumer of the refresh interval.

mod common;

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::time::Duration;
use trust_rotation_crds::{Phase, TrustAnchorRotation};

const T: Duration = Duration::from_secs(60);

/// The rotation's Event reasons once they include every one of `wanted`, or after 30 s. The
/// operator publishes an Event after the status write it reports (Synced first, then
/// RotationComplete), so a test that saw the status must let the Event arrive.
async fn rotation_event_reasons_including(client: &kube::Client, wanted: &[&str]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reasons = event_reasons(client).await;
        if wanted.iter().all(|w| reasons.iter().any(|r| r == w))
            || tokio::time::Instant::now() >= deadline
        {
            return reasons;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crd_is_a_one_line_error_with_the_install_hint() {
    let sim = cluster_sim::Sim::start(cluster_sim::SimConfig {
        topology: cluster_sim::Topology::Demo,
        durations: cluster_sim::Durations::fast(),
        ..Default::default()
    })
    .await
    .expect("simulator");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_trust-rotation-operator"))
        .arg("--kubeconfig")
        .arg(sim.kubeconfig_path())
        .args(["--admin-addr", "127.0.0.1:0"])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("trustanchorrotations.trust.linkerd.io")
            && lines[0].contains("helm install"),
        "{stderr}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_issuer_renewal_blocks_with_a_recovery_message_then_resumes() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    // The mistake: renewing the issuer before the data plane carries the expanded bundle.
    cmctl_renew(&client, "linkerd", "linkerd-identity-issuer").await;
    let s = wait_status(&client, "blocked", T, |s| s.blocking_message.is_some()).await;
    let msg = s.blocking_message.clone().unwrap_or_default();
    assert!(
        msg.contains("re-issued under the new trust anchor")
            && msg.contains("before every meshed pod carried the expanded trust bundle"),
        "{msg}"
    );
    assert!(
        msg.contains("kubectl -n emojivoto rollout restart deployment/"),
        "{msg}"
    );
    assert_eq!(s.phase, Some(Phase::PropagatingTrustRoots));
    assert!(s
        .conditions
        .iter()
        .any(|c| c.type_ == "Blocked" && c.status == "True"));

    // The recovery the message gives: restart the data plane. The rotation resumes by itself.
    rollout_restart(&client, APP_NS).await;
    let s = wait_status(&client, "unblocked and past the issuer", T, |s| {
        s.blocking_message.is_none()
            && matches!(
                s.phase,
                Some(Phase::RenewingWorkloadCerts)
                    | Some(Phase::RefreshingControlPlane)
                    | Some(Phase::RemovingOldTrustRoots)
            )
    })
    .await;
    assert!(s
        .conditions
        .iter()
        .any(|c| c.type_ == "Blocked" && c.status == "False"));
    rollout_restart(&client, APP_NS).await;
    wait_phase(
        &client,
        Phase::RemovingOldTrustRoots,
        "AwaitPropagationReduced",
        T,
    )
    .await;
    rollout_restart(&client, APP_NS).await;
    wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;

    let wanted = [
        "RotationStarted",
        "PhaseChanged",
        "Blocked",
        "Unblocked",
        "RotationComplete",
    ];
    let reasons = rotation_event_reasons_including(&client, &wanted).await;
    for r in wanted {
        assert!(
            reasons.iter().any(|x| x == r),
            "event {r} recorded: {reasons:?}"
        );
    }
    ops.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_rotation_makes_no_progress_and_resumes_in_place() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;

    patch_spec(&client, serde_json::json!({"paused": true})).await;
    wait_status(&client, "paused acknowledged", T, |s| {
        s.conditions.iter().any(|c| c.reason == "Paused")
    })
    .await;
    rollout_restart(&client, APP_NS).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = status(&client).await;
    assert_eq!(
        s.current_step.as_deref(),
        Some("AwaitPropagation"),
        "no step runs while paused"
    );

    patch_spec(&client, serde_json::json!({"paused": false})).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    ops.stop().await;
    sim.shutdown().await;
}

fn annotation(ns: &Namespace, key: &str) -> Option<String> {
    ns.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_refresh_consumer_renews_certificates_without_a_restart_and_cleans_up() {
    let sim = start_sim().await;
    let client = sim.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // Something the user set on the namespace must survive.
    let user_env = r#"[{"name":"RUST_LOG","value":"linkerd=debug"}]"#;
    namespaces
        .patch(
            APP_NS,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"config.linkerd.io/proxy-additional-env": user_env}}})),
        )
        .await
        .expect("annotated");
    patch_spec(&client, serde_json::json!({"manageProxyRefreshEnv": true, "workloadCertificateRefreshInterval": "1s"})).await;
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    sim.oracle().reset();

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    let ns = namespaces.get(APP_NS).await.expect("namespace");
    let env = annotation(&ns, "config.linkerd.io/proxy-additional-env").unwrap_or_default();
    assert!(
        env.contains("RUST_LOG") && env.contains("LINKERD2_PROXY_IDENTITY_MAX_REFRESH"),
        "{env}"
    );
    rollout_restart(&client, APP_NS).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;

    // Renew the issuer and do NOT restart: proxies started during propagation renew by
    // themselves within the published interval.
    cmctl_renew(&client, "linkerd", "linkerd-identity-issuer").await;
    wait_phase(
        &client,
        Phase::RemovingOldTrustRoots,
        "AwaitPropagationReduced",
        T,
    )
    .await;
    let ns = namespaces.get(APP_NS).await.expect("namespace");
    assert_eq!(
        annotation(&ns, "config.linkerd.io/proxy-additional-env").as_deref(),
        Some(r#"[{"name":"RUST_LOG","value":"linkerd=debug"}]"#),
        "only the operator's entry is removed"
    );
    assert_eq!(annotation(&ns, "trust.linkerd.io/managed-proxy-env"), None);
    rollout_restart(&client, APP_NS).await;
    wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_the_standby_takes_over() {
    let sim = start_sim().await;
    let client = sim.client();
    let a = Operator::spawn(
        sim.kubeconfig_path(),
        &[("POD_NAME", "replica-a".to_string())],
    );
    let b = Operator::spawn(
        sim.kubeconfig_path(),
        &[("POD_NAME", "replica-b".to_string())],
    );
    a.wait_ready().await;
    b.wait_ready().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let gens = futures::future::join_all(
        CONTROL_PLANE
            .iter()
            .map(|d| deployment_generation(&client, "linkerd", d)),
    )
    .await;
    let holder = lease_holder(&client)
        .await
        .expect("a leader holds the lease");
    let (leader, standby, standby_name) = if holder.starts_with("replica-a-") {
        (a, b, "replica-b-")
    } else {
        (b, a, "replica-a-")
    };

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    // Both replicas ran, yet each control-plane Deployment restarted exactly once.
    for (i, d) in CONTROL_PLANE.iter().enumerate() {
        assert_eq!(
            deployment_generation(&client, "linkerd", d).await,
            gens[i] + 1,
            "{d}"
        );
    }

    leader.kill().await;
    let deadline = tokio::time::Instant::now() + T;
    while !lease_holder(&client)
        .await
        .is_some_and(|h| h.starts_with(standby_name))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rollout_restart(&client, APP_NS).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    let status = standby.terminate().await;
    assert!(status.success());
    assert_eq!(
        lease_holder(&client).await,
        None,
        "a clean shutdown releases the lease"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_status_was_lost_is_finished_safely() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    let old = secret_cert_fingerprint(&client, "cert-manager", "linkerd-previous-anchor").await;

    // Someone deletes and re-creates the rotation: its status (and progress) is gone.
    lose_status(&client).await;
    let s = wait_status(&client, "the interrupted rotation resumed", T, |s| {
        s.rotation
            .as_ref()
            .is_some_and(|r| r.trigger.contains("interrupted"))
    })
    .await;
    assert_eq!(
        s.rotation.as_ref().and_then(|r| r.from_anchor.clone()),
        Some(old.clone())
    );
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    assert_eq!(
        bundle_fingerprints(&client).await.len(),
        2,
        "nothing was reduced early"
    );
    rollout_restart(&client, APP_NS).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    let s = finish_from_identity_rotation(&client, T).await;
    assert!(
        !s.history.is_empty(),
        "the finished rotation is in the history"
    );
    assert_eq!(s.history.len(), 1);
    assert_eq!(bundle_fingerprints(&client).await.len(), 1);
    ops.stop().await;
    sim.shutdown().await;
}

/// Deletes and re-creates the TrustAnchorRotation: its status (and progress) is gone.
async fn lose_status(client: &kube::Client) {
    let tars: Api<TrustAnchorRotation> = Api::all(client.clone());
    tars.delete("cluster", &Default::default())
        .await
        .expect("deleted");
    for _ in 0..50 {
        let tar = TrustAnchorRotation::new("cluster", Default::default());
        if tars.create(&Default::default(), &tar).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the TrustAnchorRotation could not be re-created");
}

/// The status is lost later in the rotation, twice: while waiting for the issuer, and again
/// once the issuer moved. Each time the trigger sees the previous anchor still in the bundle
/// next to the current one and finishes the rotation; nothing is reduced early, nothing is
/// reported Synced while the old root is there, and mTLS holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_lost_after_the_issuer_moved_is_resumed_without_reducing_early() {
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

    lose_status(&client).await;
    let s = wait_status(&client, "resumed", T, |s| {
        s.rotation
            .as_ref()
            .is_some_and(|r| r.trigger.contains("interrupted"))
    })
    .await;
    assert_ne!(s.phase, Some(Phase::Synced));
    // Every pod already carries both roots: the rotation is back where it was.
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    assert_eq!(bundle_fingerprints(&client).await.len(), 2);

    cmctl_renew(&client, "linkerd", "linkerd-identity-issuer").await;
    wait_phase(
        &client,
        Phase::RenewingWorkloadCerts,
        "AccelerateRefresh",
        T,
    )
    .await;
    lose_status(&client).await;
    wait_status(&client, "resumed again", T, |s| {
        s.rotation
            .as_ref()
            .is_some_and(|r| r.trigger.contains("interrupted"))
    })
    .await;
    // The issuer already moved: the rotation goes on from where the person is.
    wait_phase(
        &client,
        Phase::RenewingWorkloadCerts,
        "AccelerateRefresh",
        T,
    )
    .await;
    assert_eq!(
        bundle_fingerprints(&client).await.len(),
        2,
        "nothing was reduced early"
    );
    rollout_restart(&client, APP_NS).await;
    wait_phase(
        &client,
        Phase::RemovingOldTrustRoots,
        "AwaitPropagationReduced",
        T,
    )
    .await;
    rollout_restart(&client, APP_NS).await;
    let s = wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;
    assert!(s.blocking_message.is_none());
    assert_eq!(bundle_fingerprints(&client).await.len(), 1);
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

/// Notes of the PhaseChanged Events, as `kubectl describe` shows them (one per Event object).
async fn phase_change_notes(client: &kube::Client) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let mut evs: Vec<_> = api
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("PhaseChanged"))
        .collect();
    evs.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
    evs.into_iter().filter_map(|e| e.note).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_names_the_pod_and_the_fix_then_clears_and_every_phase_change_is_an_event() {
    let sim = start_sim().await;
    let client = sim.client();
    patch_spec(&client, serde_json::json!({"stallTimeout": "30s"})).await;
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    create_bare_meshed_pod(&client, "nightly-report").await;

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    rollout_restart(&client, APP_NS).await;
    // Every Deployment's pods converge; the bare pod never does, and nothing moves.
    let s = wait_status(&client, "stalled", T, |s| s.blocking_message.is_some()).await;
    let msg = s.blocking_message.clone().unwrap_or_default();
    assert!(
        msg.contains("has seen no progress since") && msg.contains("stall timeout 30s"),
        "{msg}"
    );
    assert!(
        msg.contains("kubectl -n emojivoto delete pod nightly-report"),
        "the message names the fix: {msg}"
    );
    assert_eq!(s.phase, Some(Phase::PropagatingTrustRoots));
    let text = ops.metrics().await;
    assert_eq!(metric(&text, "trust_rotation_blocked"), Some(1.0), "{text}");

    // The fix the message gives: the rotation moves on and the message is gone.
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), APP_NS)
        .delete("nightly-report", &Default::default())
        .await
        .expect("deleted");
    let s = wait_status(&client, "moving again", T, |s| {
        s.blocking_message.is_none() && s.phase != Some(Phase::PropagatingTrustRoots)
    })
    .await;
    assert_eq!(s.phase, Some(Phase::WaitingForIdentityRotation));
    finish_from_identity_rotation(&client, T).await;

    // kube's recorder folds Events by (type, reason, action): each phase change must still be
    // its own Event with its own note, in order.
    let notes = phase_change_notes(&client).await;
    let phases: Vec<&str> = notes
        .iter()
        .filter_map(|n| n.strip_prefix("phase "))
        .map(|n| n.split(" (").next().unwrap_or(n))
        .collect();
    assert_eq!(
        phases,
        [
            "Synced → RefreshingControlPlane",
            "RefreshingControlPlane → PropagatingTrustRoots",
            "PropagatingTrustRoots → WaitingForIdentityRotation",
            "WaitingForIdentityRotation → RenewingWorkloadCerts",
            "RenewingWorkloadCerts → RefreshingControlPlane",
            "RefreshingControlPlane → RemovingOldTrustRoots",
            "RemovingOldTrustRoots → Synced",
        ],
        "{notes:?}"
    );
    ops.stop().await;
    sim.shutdown().await;
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchor_renewed_twice_mid_rotation_is_followed_to_the_newest_without_breaking_mtls() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.trust_bundle.is_some()
    })
    .await;
    let a = secret_cert_fingerprint(&client, "cert-manager", "linkerd-trust-anchor").await;
    sim.oracle().reset();

    // The rotation A → B starts and expands the bundle.
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let s = wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    let b = secret_cert_fingerprint(&client, "cert-manager", "linkerd-trust-anchor").await;
    let first = s.rotation.clone().expect("a rotation");
    assert_eq!(first.to_anchor.as_deref(), Some(b.as_str()));
    assert_eq!(bundle_fingerprints(&client).await, [a.clone(), b.clone()]);

    // Renewed again right after the expansion: the rotation moves on to C and keeps B.
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let c = renewed_anchor(&client, &b).await;
    let s = wait_status(&client, "retargeted to C", T, |s| {
        s.rotation
            .as_ref()
            .is_some_and(|r| r.to_anchor.as_deref() == Some(c.as_str()))
    })
    .await;
    let second = s.rotation.clone().unwrap();
    assert_eq!(second.from_anchor.as_deref(), Some(a.as_str()));
    assert_eq!(second.superseded_anchors, std::slice::from_ref(&b));
    assert_ne!(second.id, first.id, "a new round");
    assert!(
        second.trigger.contains(&first.id),
        "the trigger names the rotation it continues: {}",
        second.trigger
    );
    assert_eq!(
        s.blocking_message, None,
        "no dead end: {:?}",
        s.blocking_message
    );
    let s = wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    assert_eq!(s.blocking_message, None);
    assert_eq!(
        sorted(bundle_fingerprints(&client).await),
        sorted(vec![a.clone(), b.clone(), c.clone()]),
        "every root a pod may use, and the newest"
    );
    rollout_restart(&client, APP_NS).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;

    // The issuer is re-issued from C and the workloads restart onto it: pods now hold
    // certificates chaining to C. Then the anchor is renewed a second time.
    cmctl_renew(&client, "linkerd", "linkerd-identity-issuer").await;
    wait_phase(
        &client,
        Phase::RenewingWorkloadCerts,
        "AccelerateRefresh",
        T,
    )
    .await;
    rollout_restart(&client, APP_NS).await;
    wait_status(&client, "pods on the issuer C signed", T, |s| {
        s.workload_certificates
            .as_ref()
            .is_some_and(|w| w.converged > 0)
    })
    .await;
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let d = renewed_anchor(&client, &c).await;
    let s = wait_status(&client, "retargeted to D", T, |s| {
        s.rotation
            .as_ref()
            .is_some_and(|r| r.to_anchor.as_deref() == Some(d.as_str()))
    })
    .await;
    let third = s.rotation.clone().unwrap();
    assert_eq!(third.from_anchor.as_deref(), Some(a.as_str()));
    assert_eq!(third.superseded_anchors, [b.clone(), c.clone()]);
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    assert_eq!(
        sorted(bundle_fingerprints(&client).await),
        sorted(vec![a.clone(), b.clone(), c.clone(), d.clone()])
    );
    rollout_restart(&client, APP_NS).await;
    // The issuer must be re-issued again, from D: the status says so.
    let s = wait_status(&client, "asked to renew the issuer again", T, |s| {
        s.current_step.as_deref() == Some("AwaitIssuer")
            && s.steps
                .iter()
                .any(|r| r.name == "AwaitIssuer" && r.message.is_some())
    })
    .await;
    let asking = s
        .steps
        .iter()
        .find(|r| r.name == "AwaitIssuer")
        .and_then(|r| r.message.clone())
        .unwrap_or_default();
    assert!(
        asking.contains("cmctl renew -n linkerd linkerd-identity-issuer")
            && asking.contains("again"),
        "{asking}"
    );

    let s = finish_from_identity_rotation(&client, T).await;
    assert_eq!(s.history.len(), 1, "one rotation");
    let done = &s.history[0];
    assert_eq!(done.to_anchor.as_deref(), Some(d.as_str()));
    assert_eq!(done.superseded_anchors, [b.clone(), c.clone()]);
    assert_eq!(
        bundle_fingerprints(&client).await,
        std::slice::from_ref(&d),
        "only the newest anchor is left"
    );
    assert_eq!(
        secret_cert_fingerprint(&client, "cert-manager", "linkerd-previous-anchor").await,
        d
    );
    let reasons = event_reasons(&client).await;
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "AnchorRenewedMidRotation")
            .count(),
        2,
        "{reasons:?}"
    );
    ops.expect_metric("trust_rotation_rotations_retargeted_total", 2.0)
        .await;
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}
