//! `spec.automation.workloadRestarts: Automatic` on the cluster simulator, with the real
//! operator binary: after `renew anchor` the rotation reaches Synced with no further command,
//! restarting the Deployments, StatefulSets and DaemonSets itself, one at a time, never taking
//! a workload below what its rollout strategy allows; a PodDisruptionBudget that allows no
//! disruption makes the operator skip (and name) its workload.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use trust_rotation_crds::{Phase, TrustAnchorRotation, WorkloadRestartState};

const T: Duration = Duration::from_secs(240);

/// `int` or `N%` of `of`, rounded down or up, as Kubernetes scales rollout bounds.
fn scaled(v: Option<&IntOrString>, of: i64, up: bool, default: &str) -> i64 {
    let v = v
        .cloned()
        .unwrap_or_else(|| IntOrString::String(default.to_string()));
    match v {
        IntOrString::Int(i) => i64::from(i),
        IntOrString::String(s) => {
            let pct: f64 = s.trim_end_matches('%').parse().expect("a percentage");
            let x = pct * of as f64 / 100.0;
            (if up { x.ceil() } else { x.floor() }) as i64
        }
    }
}

/// Every meshed workload in `namespaces` (`ns/kind/name`) with the most pods its rollout
/// strategy lets be unavailable.
async fn workloads_and_bounds(
    client: &kube::Client,
    namespaces: &[String],
) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for ns in namespaces {
        for d in Api::<Deployment>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .expect("deployments")
        {
            let spec = d.spec.clone();
            let replicas = i64::from(spec.replicas.unwrap_or(1));
            let s = spec.strategy.unwrap_or_default();
            let bound = if s.type_.as_deref() == Some("Recreate") {
                replicas
            } else {
                let ru = s.rolling_update.unwrap_or_default();
                let surge = scaled(ru.max_surge.as_ref(), replicas, true, "25%");
                let unavailable = scaled(ru.max_unavailable.as_ref(), replicas, false, "25%");
                if surge == 0 && unavailable == 0 {
                    1
                } else {
                    unavailable
                }
            };
            out.insert(
                format!("{ns}/deployment/{}", d.metadata.name.unwrap_or_default()),
                bound,
            );
        }
        for s in Api::<StatefulSet>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .expect("statefulsets")
        {
            let spec = s.spec.clone();
            let replicas = i64::from(spec.replicas.unwrap_or(1));
            let ru = spec
                .update_strategy
                .and_then(|u| u.rolling_update)
                .unwrap_or_default();
            let bound = scaled(ru.max_unavailable.as_ref(), replicas, false, "1").max(1);
            out.insert(
                format!("{ns}/statefulset/{}", s.metadata.name.unwrap_or_default()),
                bound,
            );
        }
        for d in Api::<DaemonSet>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .expect("daemonsets")
        {
            let desired = i64::from(
                d.status
                    .as_ref()
                    .map(|s| s.desired_number_scheduled)
                    .unwrap_or(0),
            );
            let ru = d
                .spec
                .clone()
                .update_strategy
                .and_then(|u| u.rolling_update)
                .unwrap_or_default();
            let surge = scaled(ru.max_surge.as_ref(), desired, true, "0");
            let mut bound = scaled(ru.max_unavailable.as_ref(), desired, true, "1");
            if surge == 0 && bound == 0 {
                bound = 1;
            }
            out.insert(
                format!("{ns}/daemonset/{}", d.metadata.name.unwrap_or_default()),
                bound,
            );
        }
    }
    out
}

async fn start(sim: &cluster_sim::Sim) -> std::sync::Arc<Ops> {
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    patch_spec(
        &client,
        serde_json::json!({"automation": {
            "issuerRenewal": "Automatic",
            "workloadRestarts": "Automatic",
        }}),
    )
    .await;
    wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.trust_bundle.is_some()
    })
    .await;
    ops
}

/// The acceptance test: automation fully on, `renew anchor` and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_restarts_rotate_every_kind_with_no_further_command() {
    let sim = start_all_kinds_sim().await;
    let client = sim.client();
    let namespaces = workload_namespaces(&client).await;
    let ops = start(&sim).await;
    let bounds = workloads_and_bounds(&client, &namespaces).await;
    let kinds: BTreeSet<&str> = bounds.keys().filter_map(|k| k.split('/').nth(1)).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["daemonset", "deployment", "statefulset"]),
        "the topology has every kind: {bounds:?}"
    );
    sim.oracle().reset();
    sim.mesh().reset_max_unavailable();

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    // One workload at a time (maxConcurrentWorkloads defaults to 1).
    let watcher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut most = 0usize;
            loop {
                let s = status(&client).await;
                let n = s
                    .workload_restarts
                    .iter()
                    .filter(|r| r.state == WorkloadRestartState::Restarting)
                    .count();
                most = most.max(n);
                if s.phase == Some(Phase::Synced) && s.rotation.is_none() && !s.history.is_empty() {
                    return most;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let s = wait_status(&client, "Synced with no further command", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none() && !s.history.is_empty()
    })
    .await;
    assert!(s.blocking_message.is_none(), "{:?}", s.blocking_message);
    assert_mtls_intact(&sim);
    assert_eq!(
        watcher.await.expect("watcher"),
        1,
        "at most one workload restarting at a time"
    );

    // Every workload restarted once where the bundle changed (expansion, reduction), at most
    // once for the new issuer's certificates; all rolled out; none skipped.
    let id = s.history[0].id.clone();
    let mut per_step: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in &s.workload_restarts {
        assert_eq!(r.rotation_id, id);
        assert_eq!(r.state, WorkloadRestartState::Restarted, "{r:?}");
        per_step
            .entry(r.step.as_str())
            .or_default()
            .push(r.workload.as_str());
    }
    let all: Vec<&str> = bounds.keys().map(String::as_str).collect();
    for step in ["AwaitPropagation", "AwaitPropagationReduced"] {
        let mut got = per_step.get(step).cloned().unwrap_or_default();
        got.sort();
        assert_eq!(got, all, "{step} restarted every workload once");
    }
    for w in per_step.get("AccelerateRefresh").into_iter().flatten() {
        assert!(all.contains(w), "{w}");
    }
    let restarted = event_notes(&client, "WorkloadRestarted").await;
    assert_eq!(
        restarted.len(),
        s.workload_restarts.len(),
        "one Event per workload restart: {restarted:#?}"
    );
    ops.expect_metric(
        "trust_rotation_workloads_restarted",
        s.workload_restarts.len() as f64,
    )
    .await;
    ops.expect_metric("trust_rotation_workloads_pending", 0.0)
        .await;
    ops.expect_metric("trust_rotation_workloads_skipped", 0.0)
        .await;

    // No workload ever had more pods unavailable than its strategy allows.
    let seen = sim.mesh().max_unavailable();
    assert!(
        seen.values().any(|&v| v > 0),
        "the simulator saw the rollouts take pods down: {seen:?}"
    );
    for (w, bound) in &bounds {
        let max = seen.get(w).copied().unwrap_or(0);
        assert!(
            max <= *bound,
            "{w}: {max} unavailable, strategy allows {bound}"
        );
    }
    ops.stop().await;
    sim.shutdown().await;
}

/// A PodDisruptionBudget with `maxUnavailable: 0`: the operator restarts every other
/// workload, skips that one and names it (status, Event, metric, blockingMessage); the person
/// replaces its pods and the rotation goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_allowing_no_disruption_is_skipped_and_named() {
    let sim = start_all_kinds_sim().await;
    let client = sim.client();
    let ops = start(&sim).await;
    // The StatefulSet's budget now allows no disruption at all.
    Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(client.clone(), APP_NS)
        .patch(
            "vote-store",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"maxUnavailable": 0}})),
        )
        .await
        .expect("PDB patched");
    let generation = |s: &StatefulSet| s.metadata.generation.unwrap_or(0);
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), APP_NS);
    let before = generation(&sts_api.get("vote-store").await.expect("sts"));
    sim.oracle().reset();

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let s = wait_status(&client, "the StatefulSet named as skipped", T, |s| {
        s.blocking_message.as_deref().is_some_and(|m| {
            m.contains("emojivoto/statefulset/vote-store")
                && m.contains("PodDisruptionBudget vote-store allows no disruption")
        })
    })
    .await;
    assert_eq!(s.current_step.as_deref(), Some("AwaitPropagation"));
    let skipped: Vec<_> = s
        .workload_restarts
        .iter()
        .filter(|r| r.state == WorkloadRestartState::Skipped)
        .collect();
    assert_eq!(skipped.len(), 1, "{:#?}", s.workload_restarts);
    assert_eq!(skipped[0].workload, "emojivoto/statefulset/vote-store");
    assert!(
        s.workload_restarts
            .iter()
            .any(|r| r.state == WorkloadRestartState::Restarted),
        "the others were restarted"
    );
    ops.expect_metric("trust_rotation_workloads_skipped", 1.0)
        .await;
    let notes = event_notes(&client, "WorkloadRestartSkipped").await;
    assert!(notes.iter().any(|n| n.contains("vote-store")), "{notes:?}");
    // The operator never touched it.
    assert_eq!(
        generation(&sts_api.get("vote-store").await.expect("sts")),
        before
    );

    // The person replaces its pods at each step that waits for them; the rest is automatic.
    let mut restarted_for: BTreeSet<String> = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let s = status(&client).await;
        if s.phase == Some(Phase::Synced) && s.rotation.is_none() && !s.history.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:#?}");
        if let (Some(m), Some(step)) = (&s.blocking_message, &s.current_step) {
            if m.contains("statefulset/vote-store") && restarted_for.insert(step.clone()) {
                rollout_restart_one::<StatefulSet>(&client, APP_NS, "vote-store").await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(restarted_for.contains("AwaitPropagation"));
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

/// A rollout that never completes (a crash-looping image): the automation stops, touches no
/// other workload and names the workload and its failing pods; `linkerd trust skip` lets it
/// go on; the skipped workload's pods are the person's to replace, and the rotation finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_never_completes_stops_the_automation_until_skipped() {
    use trust_rotation_steps::rotation::restarts;
    let sim = start_all_kinds_sim().await;
    let client = sim.client();
    let ops = start(&sim).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), APP_NS);
    // A broken image: every new pod of web crash-loops; its rollout never completes.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "progressDeadlineSeconds": 3,
                "template": {"metadata": {"annotations": {"cluster-sim.test/crash-loop": "true"}}},
            }})),
        )
        .await
        .expect("web broken");
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), APP_NS);
    let sts_generation = || async {
        sts_api
            .get("vote-store")
            .await
            .expect("sts")
            .metadata
            .generation
            .unwrap_or(0)
    };
    let before = sts_generation().await;

    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let s = wait_status(&client, "the automation stopped on web", T, |s| {
        s.blocking_message.as_deref().is_some_and(|m| {
            m.contains("automatic workload restarts stopped")
                && m.contains("emojivoto/deployment/web did not complete within 3s")
                && m.contains("failing pods: emojivoto/web-")
                && m.contains("linkerd trust skip deployment/web -n emojivoto")
        })
    })
    .await;
    // Nothing else is touched while it is stopped (vote-store comes after web).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sts_generation().await, before, "vote-store untouched");
    let s2 = status(&client).await;
    assert!(
        s2.workload_restarts
            .iter()
            .any(|r| r.workload == "emojivoto/statefulset/vote-store"
                && r.state == WorkloadRestartState::Pending),
        "{:#?}",
        s2.workload_restarts
    );

    // linkerd trust skip deploy/web -n emojivoto (the same annotation value).
    let id = s.rotation.as_ref().expect("in progress").id.clone();
    let w = restarts::WorkloadRef::parse("emojivoto/deploy/web").expect("workload");
    let api = Api::<TrustAnchorRotation>::all(client.clone());
    let tar = api.get("cluster").await.expect("rotation");
    let existing = tar
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(restarts::SKIP_ANNOTATION))
        .cloned();
    api.patch(
        "cluster",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
            restarts::SKIP_ANNOTATION: restarts::add_skip(existing.as_deref(), &w, &id),
        }}})),
    )
    .await
    .expect("skipped");
    // The automation goes on with vote-store.
    wait_status(&client, "vote-store restarted after the skip", T, |s| {
        s.workload_restarts.iter().any(|r| {
            r.workload == "emojivoto/statefulset/vote-store"
                && r.step == "AwaitPropagation"
                && r.state == WorkloadRestartState::Restarted
        })
    })
    .await;
    let s = wait_status(&client, "web named as the person's to replace", T, |s| {
        s.blocking_message.as_deref().is_some_and(|m| {
            m.contains("a person must replace their pods") && m.contains("emojivoto/deployment/web")
        })
    })
    .await;
    assert!(s
        .workload_restarts
        .iter()
        .any(|r| r.workload == "emojivoto/deployment/web"
            && r.state == WorkloadRestartState::Skipped));

    // The person fixes the image; web's pods are then replaced by its own rollout, and at
    // each later step that waits for them the person restarts web.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"template": {"metadata": {
                "annotations": {"cluster-sim.test/crash-loop": null}}}}})),
        )
        .await
        .expect("web fixed");
    let mut restarted_for: BTreeSet<String> = BTreeSet::from(["AwaitPropagation".to_string()]);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let s = status(&client).await;
        if s.phase == Some(Phase::Synced) && s.rotation.is_none() && !s.history.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:#?}");
        if let (Some(m), Some(step)) = (&s.blocking_message, &s.current_step) {
            if m.contains("deployment/web") && restarted_for.insert(step.clone()) {
                rollout_restart_one::<Deployment>(&client, APP_NS, "web").await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

/// Operator restarts throughout the automation (SIGKILL, a fresh process each time): it
/// resumes from `status.workloadRestarts` and the template's `trust.linkerd.io/restarted-for`,
/// and never restarts a workload twice for the same step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restarts_never_restart_a_workload_twice() {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use trust_rotation_steps::rotation::restarts::{
        RESTARTED_AT_ANNOTATION, RESTARTED_FOR_ANNOTATION,
    };
    let sim = start_sim().await;
    let client = sim.client();
    let ops = start(&sim).await;
    sim.oracle().reset();
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let killer = {
        let ops = ops.clone();
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let s = status(&client).await;
                if s.rotation.is_none() && !s.history.is_empty() {
                    return;
                }
                ops.kill_and_restart().await;
            }
        })
    };
    let s = wait_status(&client, "Synced through operator restarts", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none() && !s.history.is_empty()
    })
    .await;
    killer.await.expect("killer");
    let id = s.history[0].id.clone();
    // One ReplicaSet (one template) per Deployment and step that restarted it: a second
    // restart for the same step would carry another restartedAt, hence another ReplicaSet.
    let mut templates: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rs in Api::<ReplicaSet>::namespaced(client.clone(), APP_NS)
        .list(&ListParams::default())
        .await
        .expect("replicasets")
    {
        let owner = rs
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Deployment")
            .map(|o| o.name.clone())
            .unwrap_or_default();
        let a = rs
            .spec
            .template
            .and_then(|t| t.metadata)
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        if let Some(marker) = a.get(RESTARTED_FOR_ANNOTATION) {
            if marker.starts_with(&id) {
                templates
                    .entry((owner, marker.clone()))
                    .or_default()
                    .insert(a.get(RESTARTED_AT_ANNOTATION).cloned().unwrap_or_default());
            }
        }
    }
    assert!(
        !templates.is_empty(),
        "the operator restarted the Deployments"
    );
    for ((deployment, marker), at) in &templates {
        assert_eq!(
            at.len(),
            1,
            "{deployment} restarted more than once for {marker}: {at:?}"
        );
    }
    let records: BTreeSet<(String, String)> = s
        .workload_restarts
        .iter()
        .filter(|r| r.workload.contains("/deployment/"))
        .map(|r| {
            (
                r.workload
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                format!("{id}/{}", r.step),
            )
        })
        .collect();
    let seen: BTreeSet<(String, String)> = templates.keys().cloned().collect();
    assert_eq!(records, seen, "the status records every restart");
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}
