//! The user guide's rotation, end to end on the cluster simulator, with the real operator
//! binary.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_walkthrough_rotates_without_breaking_mtls() {
    let sim = start_sim().await;
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    walkthrough(&sim, &ops).await;
    ops.stop().await;
    sim.shutdown().await;
}

/// The same, probing proxies through the API server's port-forward (how the operator runs
/// out of cluster, where pod IPs are not routable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_walkthrough_with_port_forward_probes() {
    let sim = start_sim().await;
    let ops = Ops::new(
        sim.kubeconfig_path(),
        vec![("TRUST_ROTATION_PROBE", "port-forward".to_string())],
    );
    ops.start().await;
    walkthrough(&sim, &ops).await;
    ops.stop().await;
    sim.shutdown().await;
}

/// The same while the API server is slow, drops watches and fails a share of the operator's
/// writes and reads: retries with backoff, nothing repeated, mTLS intact. Until the first
/// step error is recorded every Secret read of the operator fails (so the faults certainly
/// reach a step, not only the read layer's own retries); after it, a share of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_walkthrough_survives_api_faults() {
    let sim = start_sim().await;
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    // Faults on the operator's requests only (the test's own calls stay reliable).
    let rule = |s: &str| {
        cluster_sim::ErrorRule::parse(s)
            .expect("rule")
            .for_client("trust-rotation-operator")
    };
    let faults = |secret_reads: &str| cluster_sim::FaultConfig {
        latency: std::time::Duration::from_millis(5),
        errors: vec![
            rule("patch:configmaps:503:0.3"),
            rule("patch:secrets:503:0.3"),
            rule("patch:trustanchorrotations:409:0.2"),
            rule("list:events:500:0.3"),
            // kube's client retries 503s by itself; 500s reach the read layer, which retries
            // twice before a step sees the error.
            rule(secret_reads),
            rule("create:events:503:0.5"),
        ],
        watch_cut_after_events: Some(10),
        ..Default::default()
    };
    sim.faults().set(faults("get:secrets:500:1.0"));
    let step_errors = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("trust_rotation_step_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // The first step error (at the latest when the walkthrough renews the anchor and the
    // operator reads it) eases the Secret reads to one in five failing.
    let easing = {
        let (sim_faults, ops) = (sim.faults().clone(), ops.clone());
        let eased = faults("get:secrets:500:0.2");
        tokio::spawn(async move {
            while step_errors(&ops.metrics().await) == 0.0 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            sim_faults.set(eased);
        })
    };
    walkthrough(&sim, &ops).await;
    easing.abort();
    sim.faults().set(Default::default());
    // The faults did hit the operator: steps failed and were retried.
    let text = ops.metrics().await;
    assert!(
        step_errors(&text) > 0.0,
        "no step error was recorded:\n{text}"
    );
    ops.stop().await;
    sim.shutdown().await;
}

/// The same with 300 more meshed pods in three namespaces: the pod cache, bounded probe
/// concurrency and the paged reads carry a larger mesh through the rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_walkthrough_with_a_larger_mesh() {
    let sim = start_sim_with(300).await;
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    walkthrough(&sim, &ops).await;
    ops.stop().await;
    sim.shutdown().await;
}
