//! The mesh seen through the simulator's API, as the operator and the CLI see it: meshed
//! pods by label, a proxy's chain through port-forward, the oracle on `/metrics`, and a
//! rollout restart done with a patch.

mod mesh_common;

use cluster_sim::{Durations, Sim, SimConfig, Topology};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use mesh_common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_through_the_api() {
    let sim = Sim::start(SimConfig {
        topology: Topology::Demo,
        durations: Durations::fast(),
        ..SimConfig::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let client = sim.client();
    let all: Api<Pod> = Api::all(client.clone());
    let meshed = all
        .list(&ListParams::default().labels("linkerd.io/control-plane-ns=linkerd"))
        .await
        .unwrap();
    assert_eq!(
        meshed.items.len(),
        7,
        "the control plane and emojivoto are meshed and converged before the kubeconfig exists"
    );

    // The proxy's chain, through the API server's port-forward.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "emojivoto");
    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .remove(0);
    let name = web.metadata.name.clone().unwrap();
    let mut pf = pods.portforward(&name, &[4191]).await.unwrap();
    let stream = pf.take_stream(4191).unwrap();
    let chain = probe_chain_over(
        stream,
        "web.emojivoto.serviceaccount.identity.linkerd.cluster.local",
    )
    .await
    .unwrap();
    let issuer =
        secret_value(sim.store(), "linkerd", "linkerd-identity-issuer", "tls.crt").unwrap();
    assert_eq!(chain[1], pem_ders(&issuer)[0]);

    // The oracle on the simulator's /metrics.
    let metrics = client
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .unwrap();
    assert!(
        metrics.contains("cluster_sim_mtls_ok_ratio 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cluster_sim_meshed_pods_without_valid_certificate 0\n"),
        "{metrics}"
    );

    // `kubectl rollout restart` is a patch of the template's annotations.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "emojivoto");
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-29T16:00:00Z"}}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = deploys.get("web").await.unwrap();
        let s = d.status.clone().unwrap_or_default();
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(1)
            && s.replicas == Some(1)
            && s.available_replicas == Some(1);
        let current = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        if done && current.len() == 1 && current[0].metadata.name.as_deref() != Some(name.as_str())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout restart did not finish: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sim.oracle().report().min_ratio, 1.0);
    sim.shutdown().await;
}
