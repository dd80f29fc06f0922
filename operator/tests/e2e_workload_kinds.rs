//! The guide's rotation on a mesh of every workload kind a real cluster runs, through the real
//! operator binary on the simulator: StatefulSets, DaemonSets, a CronJob firing during the
//! rotation, finished Job pods, an evicted pod, a bare pod and a pod that terminates slowly.
//! Each ends Synced with mTLS intact, and no step waits on a pod that cannot change.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use std::time::Duration;
use trust_rotation_crds::{Phase, TrustAnchorRotationStatus};

const T: Duration = Duration::from_secs(120);

/// The message of step `name` in the status, if any.
fn step_message(s: &TrustAnchorRotationStatus, name: &str) -> String {
    s.steps
        .iter()
        .find(|r| r.name == name)
        .and_then(|r| r.message.clone())
        .unwrap_or_default()
}

fn phase_of(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Waits until the pod `name` in `emojivoto` satisfies `pred`, and returns it.
async fn wait_pod(
    client: &kube::Client,
    what: &str,
    name: &str,
    pred: impl Fn(&Pod) -> bool,
) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), APP_NS);
    for _ in 0..600 {
        if let Some(p) = api
            .get_opt(name)
            .await
            .expect("get pod")
            .filter(|p| pred(p))
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pod {name} never became {what}");
}

/// A meshed Job (native-sidecar proxy, as Linkerd recommends for Jobs) whose pod runs briefly
/// and succeeds; returns that pod's name once it is `Succeeded`.
async fn run_job_to_completion(client: &kube::Client, name: &str) -> String {
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": APP_NS},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {"config.linkerd.io/proxy-enable-native-sidecar": "true"}},
            "spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "example.test/backfill:v1", "command": ["sh", "-c", "sleep 0.3"]}
            ]}
        }}
    }))
    .unwrap();
    Api::<Job>::namespaced(client.clone(), APP_NS)
        .create(&PostParams::default(), &job)
        .await
        .expect("the Job is created");
    let pods: Api<Pod> = Api::namespaced(client.clone(), APP_NS);
    for _ in 0..600 {
        let list = pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await
            .expect("pods");
        if let Some(p) = list.items.iter().find(|p| phase_of(p) == "Succeeded") {
            let meshed = p
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("linkerd.io/control-plane-ns"));
            assert!(meshed, "the Job's pod was meshed");
            return p.metadata.name.clone().unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the Job {name} never completed");
}

/// Waits for Synced after a rotation and checks mTLS never degraded.
async fn assert_synced_with_mtls_intact(sim: &cluster_sim::Sim) -> TrustAnchorRotationStatus {
    let s = wait_status(&sim.client(), "Synced after the rotation", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none() && !s.history.is_empty()
    })
    .await;
    assert!(s.blocking_message.is_none(), "{:?}", s.blocking_message);
    assert_mtls_intact(sim);
    s
}

/// Starts the operator, waits for Synced, and starts a rotation (the guide's step 1); returns
/// once AwaitPropagation asks for restarts.
async fn start_rotation(sim: &cluster_sim::Sim) -> std::sync::Arc<Ops> {
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.trust_bundle.is_some()
    })
    .await;
    sim.oracle().reset();
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    ops
}

/// The guide's walkthrough on every kind: each restarted with its own `rollout restart`, a
/// CronJob firing throughout, a Job pod finished before the rotation. The restart message
/// names one command per workload, and never a finished pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_kind_rotates_each_with_its_own_restart() {
    let sim = start_all_kinds_sim().await;
    let client = sim.client();
    let finished = run_job_to_completion(&client, "backfill").await;
    let started = jiff::Timestamp::now();
    let ops = start_rotation(&sim).await;

    // One command per workload, with its pod count; the Job's finished pod is not one.
    let s = wait_status(&client, "restart commands per workload", T, |s| {
        let m = step_message(s, "AwaitPropagation");
        m.contains("daemonset/") && m.contains("deployment/")
    })
    .await;
    let msg = step_message(&s, "AwaitPropagation");
    for command in [
        "kubectl -n emojivoto rollout restart daemonset/node-agent (3 pods)",
        "kubectl -n emojivoto rollout restart deployment/web",
    ] {
        assert!(msg.contains(command), "{command} in: {msg}");
    }
    assert_eq!(
        msg.matches("rollout restart daemonset/node-agent").count(),
        1,
        "one command per workload: {msg}"
    );
    assert!(
        !msg.contains(&finished),
        "a Succeeded pod is no target: {msg}"
    );

    // The person restarts the Deployments first: what is left names the other kinds.
    rollout_restart(&client, APP_NS).await;
    let s = wait_status(&client, "the StatefulSet and DaemonSet left", T, |s| {
        let m = step_message(s, "AwaitPropagation");
        m.contains("statefulset/") && !m.contains("deployment/")
    })
    .await;
    let msg = step_message(&s, "AwaitPropagation");
    for command in [
        "kubectl -n emojivoto rollout restart statefulset/vote-store (2 pods)",
        "kubectl -n emojivoto rollout restart daemonset/node-agent (3 pods)",
    ] {
        assert!(msg.contains(command), "{command} in: {msg}");
    }
    assert!(
        !msg.contains(&finished),
        "a Succeeded pod is no target: {msg}"
    );
    rollout_restart_one::<StatefulSet>(&client, APP_NS, "vote-store").await;
    rollout_restart_one::<DaemonSet>(&client, APP_NS, "node-agent").await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    finish_from_identity_rotation(&client, T).await;
    assert_synced_with_mtls_intact(&sim).await;

    // The CronJob fired during the rotation and its pods finished: they never held a step.
    let fired = Api::<Job>::namespaced(client.clone(), APP_NS)
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items
        .into_iter()
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "CronJob" && o.name == "nightly-report")
        })
        .filter(|j| {
            j.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| t.0 > started)
        })
        .filter(|j| j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0)
        .count();
    assert!(
        fired > 0,
        "the CronJob ran to completion during the rotation"
    );
    ops.stop().await;
    sim.shutdown().await;
}

/// An evicted pod and a bare pod present at the start: the bare pod is named with its fix
/// (delete it: nothing recreates it) and the person deletes it; the evicted pod, which
/// runs no proxy, holds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_pod_never_blocks_and_a_bare_pod_is_named_until_deleted() {
    let sim = start_all_kinds_sim().await;
    let client = sim.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), APP_NS);
    create_bare_meshed_pod(&client, "debug-shell").await;
    wait_pod(&client, "Running", "debug-shell", |p| {
        phase_of(p) == "Running"
    })
    .await;
    // Node pressure (the simulator's kubelet evicts on this annotation).
    let victim = pods
        .list(&ListParams::default().labels("linkerd.io/proxy-deployment=emoji"))
        .await
        .expect("pods")
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap_or_default();
    pods.patch(
        &victim,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
            "cluster-sim.test/evict": "The node was low on resource: memory."}}})),
    )
    .await
    .expect("annotated");
    wait_pod(&client, "Evicted", &victim, |p| {
        p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
            && phase_of(p) == "Failed"
    })
    .await;
    let ops = start_rotation(&sim).await;

    rollout_restart_all_kinds(&client, APP_NS).await;
    let fix = "kubectl -n emojivoto delete pod debug-shell (a bare pod: nothing recreates it)";
    let s = wait_status(&client, "only the bare pod left", T, |s| {
        s.trust_bundle
            .as_ref()
            .is_some_and(|t| t.unconverged == ["emojivoto/debug-shell"])
            && step_message(s, "AwaitPropagation").contains(fix)
    })
    .await;
    let msg = step_message(&s, "AwaitPropagation");
    assert!(!msg.contains(&victim), "an evicted pod is no target: {msg}");
    assert!(
        !msg.contains("rollout restart"),
        "only the bare pod is left: {msg}"
    );
    assert_eq!(s.phase, Some(Phase::PropagatingTrustRoots));

    pods.delete("debug-shell", &Default::default())
        .await
        .expect("deleted as told");
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    finish_from_identity_rotation(&client, T).await;
    assert_synced_with_mtls_intact(&sim).await;
    let evicted = pods
        .get(&victim)
        .await
        .expect("the evicted pod stays until deleted");
    assert_eq!(phase_of(&evicted), "Failed");
    ops.stop().await;
    sim.shutdown().await;
}

/// A Deployment whose pods ignore SIGTERM and take their 20 s grace period to go: every
/// restart leaves the old pod serving (and an mTLS peer) while Terminating. It counts until it
/// is gone, in every phase: the rotation never moves past a pod that still serves with what it
/// had, and mTLS holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_terminating_slowly_counts_until_it_is_gone() {
    let sim = start_all_kinds_sim().await;
    let client = sim.client();
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "slow", "namespace": APP_NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "slow"}},
            "template": {
                "metadata": {"labels": {"app": "slow"},
                             "annotations": {"cluster-sim.test/ignore-sigterm": "true"}},
                "spec": {"terminationGracePeriodSeconds": 20,
                         "containers": [{"name": "main", "image": "example.test/slow:v1"}]}
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), APP_NS)
        .create(&PostParams::default(), &d)
        .await
        .expect("create the Deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), APP_NS);
    let slow_pods = || async {
        pods.list(&ListParams::default().labels("app=slow"))
            .await
            .expect("pods")
            .items
    };
    for _ in 0..600 {
        if slow_pods().await.iter().any(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ops = start_rotation(&sim).await;
    rollout_restart_all_kinds(&client, APP_NS).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    cmctl_renew(&client, "linkerd", "linkerd-identity-issuer").await;
    wait_phase(
        &client,
        Phase::RenewingWorkloadCerts,
        "AccelerateRefresh",
        T,
    )
    .await;
    rollout_restart_all_kinds(&client, APP_NS).await;
    wait_phase(
        &client,
        Phase::RemovingOldTrustRoots,
        "AwaitPropagationReduced",
        T,
    )
    .await;

    // The last restart: the old `slow` pod serves on, Terminating, with the expanded bundle.
    rollout_restart_all_kinds(&client, APP_NS).await;
    let terminating = loop {
        let found = slow_pods()
            .await
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_some());
        if let Some(p) = found {
            break p.metadata.name.unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Waited for, not restarted again, and counted until it is gone.
    let waiting = format!("wait for pod {terminating} to finish terminating");
    let s = wait_status(&client, "the terminating pod waited for", T, |s| {
        step_message(s, "AwaitPropagationReduced").contains(&waiting)
    })
    .await;
    assert_eq!(s.phase, Some(Phase::RemovingOldTrustRoots));
    let s = assert_synced_with_mtls_intact(&sim).await;
    assert!(
        pods.get_opt(&terminating).await.expect("get").is_none(),
        "Synced only once the terminating pod is gone: {s:?}"
    );
    ops.stop().await;
    sim.shutdown().await;
}
