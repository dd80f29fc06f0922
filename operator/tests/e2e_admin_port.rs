//! A workload whose proxy admin server listens on another port
//! (`config.linkerd.io/admin-port`): the operator probes it where it listens, so the rotation
//! sees its certificates move and completes, through the real operator binary on the
//! simulator.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, PostParams};
use std::time::Duration;
use trust_rotation_crds::Phase;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_admin_port_is_probed_where_the_proxy_listens() {
    let sim = start_sim().await;
    let client = sim.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), APP_NS);
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "metrics", "namespace": APP_NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "metrics"}},
            "template": {
                "metadata": {"labels": {"app": "metrics"},
                             "annotations": {"config.linkerd.io/admin-port": "9995"}},
                "spec": {"containers": [{"name": "main", "image": "example.test/metrics:v1"}]}
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create the Deployment");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), APP_NS);
    let mut port = None;
    for _ in 0..200 {
        let list = pods
            .list(&ListParams::default().labels("app=metrics"))
            .await
            .expect("pods");
        port = list.items.iter().find_map(|p| {
            trust_rotation_steps::observe::meshed_pod_from(p, "linkerd")
                .filter(|m| m.ready)
                .map(|m| m.admin_port)
        });
        if port.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(port, Some(9995), "the injector moved the admin server");

    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    sim.oracle().reset();
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    wait_phase(&client, Phase::PropagatingTrustRoots, "AwaitPropagation", T).await;
    rollout_restart(&client, APP_NS).await;
    wait_phase(&client, Phase::WaitingForIdentityRotation, "AwaitIssuer", T).await;
    // RenewingWorkloadCerts waits for every pod's live certificate, read through its admin
    // port: on the default port this pod would stay unreachable and the rotation stall.
    let s = finish_from_identity_rotation(&client, T).await;
    assert!(s.blocking_message.is_none());
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}
