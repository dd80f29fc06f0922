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
/// writes and reads: retries with backoff, nothing repeated, mTLS intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_walkthrough_survives_api_faults() {
    let sim = start_sim().await;
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    let rule = |s: &str| cluster_sim::ErrorRule::parse(s).expect("rule");
    // Faults on what only the operator does (the test's own kubectl-like calls stay reliable).
    sim.faults().set(cluster_sim::FaultConfig {
        latency: std::time::Duration::from_millis(5),
        errors: vec![
            rule("patch:configmaps:503:0.3"),
            rule("patch:secrets:503:0.3"),
            rule("patch:trustanchorrotations:409:0.2"),
            rule("list:events:500:0.3"),
            // kube's client retries 503s by itself; 500s reach the steps as errors.
            rule("get:secrets:500:0.2"),
            rule("create:events:503:0.5"),
        ],
        watch_cut_after_events: Some(10),
        ..Default::default()
    });
    walkthrough(&sim, &ops).await;
    sim.faults().set(Default::default());
    // The faults did hit the operator: steps failed and were retried.
    let text = ops.metrics().await;
    let errors: f64 = text
        .lines()
        .filter(|l| l.starts_with("trust_rotation_step_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors > 0.0, "no step error was recorded:\n{text}");
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
