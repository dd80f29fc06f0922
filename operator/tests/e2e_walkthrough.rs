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
