//! One leader, one rotation, on the cluster simulator through the real binary: a leader that
//! is stopped (SIGSTOP) is replaced only once its Lease expired and writes nothing when it
//! resumes; a standby exports no rotation gauges; status writes lose to a newer object; a
//! rotation created after start-up is picked up from its watch; a second rotation is refused.
//!
//! Each replica talks to the simulator through its own recording proxy
//! (`common::recorder`), so every request is attributed to the replica that sent it.

mod common;

use common::recorder::Recorder;
use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use std::time::{Duration, Instant};
use trust_rotation_crds::{Phase, TrustAnchorRotation, TrustAnchorRotationStatus};
use trust_rotation_steps::runner::{store, KubeStatusStore, StatusStore};

const T: Duration = Duration::from_secs(60);
/// The tests' `--lease-duration`.
const LEASE: Duration = Duration::from_secs(2);

async fn wait_metric(op: &Operator, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = op.metrics().await;
        if pred(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}; last scrape:\n{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_is_replaced_only_after_its_lease_expired_and_never_writes_again() {
    let sim = start_sim().await;
    let client = sim.client();
    let rec_a = Recorder::start(sim.kubeconfig_path()).await;
    let rec_b = Recorder::start(sim.kubeconfig_path()).await;
    let a = Operator::spawn(rec_a.kubeconfig(), &[("POD_NAME", "replica-a".into())]);
    let b = Operator::spawn(rec_b.kubeconfig(), &[("POD_NAME", "replica-b".into())]);
    a.wait_ready().await;
    b.wait_ready().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let holder = lease_holder(&client)
        .await
        .expect("a leader holds the Lease");
    let (leader, standby, rec_leader, rec_standby, standby_prefix) =
        if holder.starts_with("replica-a-") {
            (a, b, rec_a, rec_b, "replica-b-")
        } else {
            (b, a, rec_b, rec_a, "replica-a-")
        };

    // Metrics: the leader exports the rotation, the standby only itself.
    wait_metric(
        &leader,
        "the leader exports trust_rotation_leader 1 and the phase",
        |m| {
            metric(m, "trust_rotation_leader") == Some(1.0)
                && metric(m, "trust_rotation_phase{phase=\"Synced\"}") == Some(1.0)
        },
    )
    .await;
    let m = standby.metrics().await;
    assert_eq!(metric(&m, "trust_rotation_leader"), Some(0.0), "{m}");
    assert!(
        !m.contains("trust_rotation_phase") && !m.contains("trust_rotation_trust_bundle"),
        "a standby exports no rotation gauge:\n{m}"
    );
    assert!(
        m.contains("process_start_time_seconds") && m.contains("process_resident_memory_bytes"),
        "{m}"
    );
    assert!(
        rec_standby
            .log()
            .iter()
            .filter(|r| r.is_write())
            .all(|r| r.is_lease()),
        "the standby wrote only to the Lease: {:?}",
        rec_standby
            .log()
            .iter()
            .filter(|r| r.is_write() && !r.is_lease())
            .collect::<Vec<_>>()
    );

    // The leader is busy with a rotation when it freezes.
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    let gens = futures::future::join_all(
        CONTROL_PLANE
            .iter()
            .map(|d| deployment_generation(&client, "linkerd", d)),
    )
    .await;
    let stopped_at = Instant::now();
    leader.signal("STOP");
    let took_at = wait_holder(&client, standby_prefix).await;
    // The stopped leader's last renewal landed at most one retry period (2/15 of the lease)
    // before the stop; the standby may claim one full lease after it saw that renewal.
    assert!(
        took_at - stopped_at >= LEASE - Duration::from_millis(500),
        "the standby took over {:?} after the leader stopped: before its Lease expired",
        took_at - stopped_at
    );
    let first_new_write = wait_until(T, || {
        rec_standby
            .writes_after(stopped_at)
            .into_iter()
            .find(|r| !r.is_lease())
    })
    .await;
    assert!(
        first_new_write.at >= stopped_at + LEASE - Duration::from_millis(500),
        "the new leader wrote {:?} after the stop",
        first_new_write.at - stopped_at
    );

    // The old leader resumes: it must notice it lost and write nothing at all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resumed_at = Instant::now();
    leader.signal("CONT");
    rollout_restart(&client, APP_NS).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    wait_metric(&leader, "the resumed replica stands by", |m| {
        metric(m, "trust_rotation_leader") == Some(0.0) && !m.contains("trust_rotation_phase")
    })
    .await;
    let late = rec_leader.writes_after(resumed_at);
    assert!(late.is_empty(), "the resumed replica wrote: {late:?}");
    assert!(
        rec_leader.log().iter().any(|r| r.at > resumed_at),
        "the resumed replica is alive (it reads as a standby)"
    );
    assert!(lease_holder(&client)
        .await
        .is_some_and(|h| h.starts_with(standby_prefix)));
    // No step's side effect was repeated by the change of leader.
    for (i, d) in CONTROL_PLANE.iter().enumerate() {
        assert_eq!(
            deployment_generation(&client, "linkerd", d).await,
            gens[i],
            "{d} was restarted again"
        );
    }
    assert_mtls_intact(&sim);
    let status = standby.terminate().await;
    assert!(status.success(), "{status:?}");
    leader.kill().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_stall_stops_writing_at_its_renew_deadline() {
    let sim = start_sim().await;
    let client = sim.client();
    let rec_a = Recorder::start(sim.kubeconfig_path()).await;
    let rec_b = Recorder::start(sim.kubeconfig_path()).await;
    let a = Operator::spawn(rec_a.kubeconfig(), &[("POD_NAME", "replica-a".into())]);
    let b = Operator::spawn(rec_b.kubeconfig(), &[("POD_NAME", "replica-b".into())]);
    a.wait_ready().await;
    b.wait_ready().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let holder = lease_holder(&client)
        .await
        .expect("a leader holds the Lease");
    let (leader, standby, rec_leader, standby_prefix) = if holder.starts_with("replica-a-") {
        (a, b, rec_a, "replica-b-")
    } else {
        (b, a, rec_b, "replica-a-")
    };
    let gens = futures::future::join_all(
        CONTROL_PLANE
            .iter()
            .map(|d| deployment_generation(&client, "linkerd", d)),
    )
    .await;

    // The API server stops answering the leader's Lease requests for 20 s just as a rotation
    // starts (an overloaded etcd behind one API server replica, say).
    let stall = Duration::from_secs(20);
    let stalled_at = Instant::now();
    rec_leader.stall("/leases/", stall);
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_holder(&client, standby_prefix).await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    wait_metric(&leader, "the stalled replica stands by", |m| {
        metric(m, "trust_rotation_leader") == Some(0.0)
    })
    .await;
    // The stall ends; the old leader hears about the Lease again, as a standby.
    tokio::time::sleep(
        (stalled_at + stall + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    )
    .await;
    rollout_restart(&client, APP_NS).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    finish_from_identity_rotation(&client, T).await;
    // Its last renewal was sent before the stall: its leadership ended 2/3 of a lease later,
    // and it never wrote again, during the stall or after it.
    let deadline = stalled_at + LEASE * 2 / 3 + Duration::from_millis(100);
    let late: Vec<_> = rec_leader
        .writes_after(deadline)
        .into_iter()
        .filter(|r| !r.is_lease())
        .collect();
    assert!(
        late.is_empty(),
        "the stalled leader wrote after its renew deadline: {late:?}"
    );
    assert!(
        rec_leader
            .log()
            .iter()
            .any(|r| r.is_lease() && r.at > stalled_at + stall),
        "the stalled replica went back to watching the Lease after the stall"
    );
    assert!(lease_holder(&client)
        .await
        .is_some_and(|h| h.starts_with(standby_prefix)));
    for (i, d) in CONTROL_PLANE.iter().enumerate() {
        assert_eq!(
            deployment_generation(&client, "linkerd", d).await,
            gens[i] + 3,
            "{d} restarted exactly three times across the change of leader"
        );
    }
    assert_mtls_intact(&sim);
    leader.kill().await;
    standby.kill().await;
    sim.shutdown().await;
}

async fn wait_until<R>(timeout: Duration, f: impl Fn() -> Option<R>) -> R {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = f() {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real API server refuses a server-side apply whose `metadata.resourceVersion` is not the
/// stored one with 409, also on the status subresource (the registry compares versions before
/// the status strategy copies the old object: apiextensions-apiserver
/// `pkg/registry/customresource/status_strategy.go`); the simulator does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_computed_from_an_older_object_is_refused_and_the_fresh_one_written() {
    let sim = start_sim().await;
    let client = sim.client();
    let api: Api<TrustAnchorRotation> = Api::all(client.clone());
    let read = api.get("cluster").await.expect("the rotation");
    let store = KubeStatusStore::new(client.clone(), "cluster");
    let first = TrustAnchorRotationStatus {
        blocking_message: Some("first".into()),
        ..Default::default()
    };
    let written = store.apply(&read, &first).await.expect("written");
    // A second writer still holding the first read (a stale leader) loses.
    let stale = TrustAnchorRotationStatus {
        blocking_message: Some("stale".into()),
        ..Default::default()
    };
    let err = store
        .apply(&read, &stale)
        .await
        .expect_err("a status computed from an older object is refused");
    assert_eq!(err.category(), store::CONFLICT, "{err}");
    assert!(err.is_transient(), "the runner reads again: {err}");
    assert_eq!(
        status(&client).await.blocking_message.as_deref(),
        Some("first")
    );
    // Built on what was written, it goes through.
    let next = TrustAnchorRotationStatus {
        blocking_message: Some("next".into()),
        ..Default::default()
    };
    store.apply(&written, &next).await.expect("written");
    assert_eq!(
        status(&client).await.blocking_message.as_deref(),
        Some("next")
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_created_after_start_up_is_picked_up_from_its_watch() {
    let sim = start_bare_sim().await;
    let client = sim.client();
    let crd: CustomResourceDefinition = {
        use kube::CustomResourceExt;
        TrustAnchorRotation::crd()
    };
    install_crd(&client, &crd).await;
    create_previous_anchor_secret(&client).await;
    // A resync far away: only the watch can make the operator look.
    let op = Operator::spawn_with(sim.kubeconfig_path(), &[], &[("--resync-interval", "1h")]);
    op.wait_ready().await;
    wait_metric(&op, "leading", |m| {
        metric(m, "trust_rotation_leader") == Some(1.0)
    })
    .await;
    let created = Instant::now();
    create_rotation(&client, "cluster").await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    eprintln!(
        "a TrustAnchorRotation created after start-up was Synced {:?} later (resync 1h)",
        created.elapsed()
    );
    // Its objects are watched: a renewed anchor starts the rotation without a resync.
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    op.terminate().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rotation_is_refused_and_the_control_plane_restarts_as_with_one() {
    let sim = start_bare_sim().await;
    let client = sim.client();
    // A CRD from before the name rule (the rule would refuse the second object itself).
    let mut crd: CustomResourceDefinition = {
        use kube::CustomResourceExt;
        TrustAnchorRotation::crd()
    };
    for v in &mut crd.spec.versions {
        if let Some(s) = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            s.x_kubernetes_validations = None;
        }
    }
    install_crd(&client, &crd).await;
    create_previous_anchor_secret(&client).await;
    create_rotation(&client, "cluster").await;
    let op = Operator::spawn(sim.kubeconfig_path(), &[]);
    op.wait_ready().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let gens = futures::future::join_all(
        CONTROL_PLANE
            .iter()
            .map(|d| deployment_generation(&client, "linkerd", d)),
    )
    .await;

    create_rotation(&client, "mesh-b").await;
    let api: Api<TrustAnchorRotation> = Api::all(client.clone());
    let refused = wait_until_async(T, || async {
        api.get("mesh-b")
            .await
            .ok()
            .and_then(|t| t.status)
            .filter(|s| s.blocking_message.is_some())
    })
    .await;
    let msg = refused.blocking_message.clone().unwrap_or_default();
    assert!(
        msg.contains("mesh-b is refused")
            && msg.contains("kubectl delete trustanchorrotation mesh-b"),
        "{msg}"
    );
    assert!(refused
        .conditions
        .iter()
        .any(|c| c.type_ == "Blocked" && c.status == "True"));

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, d) in CONTROL_PLANE.iter().enumerate() {
        assert_eq!(
            deployment_generation(&client, "linkerd", d).await,
            gens[i] + 1,
            "{d} restarted exactly once, as with one rotation"
        );
    }
    let b = api
        .get("mesh-b")
        .await
        .expect("mesh-b")
        .status
        .unwrap_or_default();
    assert!(
        b.rotation.is_none() && b.phase.is_none() && b.steps.is_empty(),
        "{b:?}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    assert!(events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some("DuplicateRotation")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("mesh-b")));
    op.terminate().await;
    sim.shutdown().await;
}

async fn wait_until_async<R, F: std::future::Future<Output = Option<R>>>(
    timeout: Duration,
    f: impl Fn() -> F,
) -> R {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = f().await {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
