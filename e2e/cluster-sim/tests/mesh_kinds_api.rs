//! The new kinds through the API server, as a person and the operator use them: the real
//! kubectl's `rollout restart` + `rollout status` of a StatefulSet and a DaemonSet, the
//! eviction subresource with and without PodDisruptionBudget headroom (kube-rs
//! `Api::evict`, and `kubectl drain`), and graceful pod deletion.

mod mesh_common;

use cluster_sim::{Durations, Sim, SimConfig, Topology};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams};
use std::process::Command;
use std::time::Duration;

async fn start() -> Sim {
    Sim::start(SimConfig {
        topology: Topology::DemoAllKinds,
        durations: Durations::fast(),
        ..SimConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("starting the simulator: {e:#}"))
}

fn kubectl_available() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn kubectl(sim: &Sim, args: &[&str]) -> (bool, String) {
    let kc = sim.kubeconfig_path().to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let home =
        std::env::temp_dir().join(format!("cluster-sim-kubectl-home-{}", std::process::id()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .args(&args)
            .env("KUBECONFIG", kc)
            .env("HOME", home)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("running kubectl: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_restart_and_status_of_statefulsets_and_daemonsets() {
    if !kubectl_available() {
        eprintln!("SKIPPED: kubectl is not installed (install kubectl to run this test)");
        return;
    }
    let sim = start().await;
    for (kind, done) in [
        (
            "sts/vote-store",
            "partitioned roll out complete: 2 new pods have been updated...",
        ),
        (
            "ds/node-agent",
            "daemon set \"node-agent\" successfully rolled out",
        ),
    ] {
        let before = sim
            .store()
            .list(&mesh_common::k("", "pods"), Some("emojivoto"))
            .0
            .iter()
            .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        let (ok, out) = kubectl(&sim, &["-n", "emojivoto", "rollout", "restart", kind]).await;
        assert!(ok, "rollout restart {kind}: {out}");
        assert!(out.contains("restarted"), "{out}");
        let (ok, out) = kubectl(
            &sim,
            &[
                "-n",
                "emojivoto",
                "rollout",
                "status",
                kind,
                "--timeout=60s",
            ],
        )
        .await;
        assert!(ok, "rollout status {kind}: {out}");
        assert!(
            out.trim_end().ends_with(done),
            "rollout status {kind} said: {out}"
        );
        // Every pod of the workload was replaced.
        let app = kind.split('/').nth(1).unwrap();
        let now: Vec<_> = sim
            .store()
            .list(&mesh_common::k("", "pods"), Some("emojivoto"))
            .0
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["app"] == app)
            .collect();
        assert!(!now.is_empty());
        assert!(
            now.iter()
                .all(|p| !before.contains(&p["metadata"]["uid"].as_str().unwrap().to_string())),
            "{kind}: an old pod is left after rollout status said done"
        );
    }
    let (ok, out) = kubectl(
        &sim,
        &["-n", "emojivoto", "rollout", "history", "sts/vote-store"],
    )
    .await;
    assert!(ok && out.contains("REVISION"), "{out}");
    assert_eq!(
        sim.oracle().report().min_ratio,
        1.0,
        "{:?}",
        sim.oracle().report().intervals
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_honours_the_disruption_budget() {
    let sim = start().await;
    // kube-rs retries 429 by default (up to 15 times, minutes in all); see each answer.
    let kc = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "emojivoto");
    // vote-store: 2 replicas, PDB maxUnavailable 1.
    mesh_common::wait_for("the PDB's status", Duration::from_secs(10), || {
        sim.store()
            .get(
                &mesh_common::k("policy", "poddisruptionbudgets"),
                Some("emojivoto"),
                "vote-store",
            )
            .is_some_and(|p| {
                p["status"]["disruptionsAllowed"] == 1 && p["status"]["currentHealthy"] == 2
            })
    })
    .await;
    // The app would exit at once on SIGTERM and the pod be gone before we look: let it use
    // (a short) grace period, as a real app that drains does (the annotation is read when
    // the deletion arrives).
    pods.patch(
        "vote-store-1",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {
            "cluster-sim.test/ignore-sigterm": "true"
        }}})),
    )
    .await
    .expect("annotated");
    // The Eviction body as kubectl drain sends it: kube-rs' `EvictParams` writes
    // `delete_options`, which an API server ignores (unknown field), so its grace period
    // would never arrive and the pod would take its 30s default.
    let eviction = http::Request::post("/api/v1/namespaces/emojivoto/pods/vote-store-1/eviction")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": "vote-store-1", "namespace": "emojivoto"},
                "deleteOptions": {"gracePeriodSeconds": 3},
            }))
            .unwrap(),
        )
        .unwrap();
    let status: k8s_openapi::apimachinery::pkg::apis::meta::v1::Status = client
        .request(eviction)
        .await
        .expect("one disruption is allowed");
    assert_eq!(status.status.as_deref(), Some("Success"), "{status:?}");
    let p = pods
        .get("vote-store-1")
        .await
        .expect("terminating, not gone");
    assert!(
        p.metadata.deletion_timestamp.is_some(),
        "deleted with its grace period"
    );
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(3));
    assert!(p
        .status
        .unwrap()
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "DisruptionTarget"
            && c.reason.as_deref() == Some("EvictionByEvictionAPI")));
    // No headroom: a budget that needs both pods refuses, with the real message and cause.
    mesh_common::wait_for("vote-store-1 back", Duration::from_secs(20), || {
        sim.store()
            .get(
                &mesh_common::k("", "pods"),
                Some("emojivoto"),
                "vote-store-1",
            )
            .is_some_and(|p| {
                p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
    })
    .await;
    sim.store()
        .mutate(&mesh_common::k("policy", "poddisruptionbudgets"), Some("emojivoto"), "vote-store", |p| {
            p["spec"] = serde_json::json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "vote-store"}}});
            Ok(())
        })
        .unwrap();
    mesh_common::wait_for(
        "the PDB to observe minAvailable 2",
        Duration::from_secs(10),
        || {
            sim.store()
                .get(
                    &mesh_common::k("policy", "poddisruptionbudgets"),
                    Some("emojivoto"),
                    "vote-store",
                )
                .is_some_and(|p| {
                    p["status"]["observedGeneration"] == p["metadata"]["generation"]
                        && p["status"]["desiredHealthy"] == 2
                        && p["status"]["currentHealthy"] == 2
                })
        },
    )
    .await;
    let err = pods
        .evict("vote-store-0", &EvictParams::default())
        .await
        .expect_err("no disruption allowed");
    let kube::Error::Api(s) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(s.code, 429);
    assert_eq!(s.reason, "TooManyRequests");
    assert_eq!(
        s.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let causes = s.details.map(|d| d.causes).unwrap_or_default();
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "DisruptionBudget");
    assert_eq!(
        causes[0].message,
        "The disruption budget vote-store needs 2 healthy pods and has 2 currently"
    );
    assert!(pods
        .get("vote-store-0")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());
    // A pod no budget covers is evicted at once; a missing one is 404.
    let web = pods
        .list(&kube::api::ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .remove(0);
    pods.evict(
        web.metadata.name.as_deref().unwrap(),
        &EvictParams::default(),
    )
    .await
    .expect("no PDB covers web");
    let err = pods
        .evict("nope", &EvictParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_evicts_within_the_budget() {
    if !kubectl_available() {
        eprintln!("SKIPPED: kubectl is not installed (install kubectl to run this test)");
        return;
    }
    let sim = start().await;
    let (ok, out) = kubectl(
        &sim,
        &["drain", "node-1", "--ignore-daemonsets", "--timeout=60s"],
    )
    .await;
    assert!(ok, "kubectl drain: {out}");
    assert!(out.contains("node/node-1 drained"), "{out}");
    let left: Vec<String> = sim
        .store()
        .list(&mesh_common::k("", "pods"), None)
        .0
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"] == "node-1"
                && p["metadata"]["ownerReferences"][0]["kind"] != "DaemonSet"
                && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        })
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(left.is_empty(), "still on node-1 after the drain: {left:?}");
    let node = sim
        .store()
        .get(&mesh_common::k("", "nodes"), None, "node-1")
        .unwrap();
    assert_eq!(node["spec"]["unschedulable"], true, "cordoned");
    sim.shutdown().await;
}
