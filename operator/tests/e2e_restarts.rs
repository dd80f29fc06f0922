//! The guide's rotation with the operator SIGKILLed and restarted inside every step: it must
//! resume where it stopped, never repeat a finished step's writes (one control-plane restart
//! per RollControlPlane step), and still never break mTLS.

mod common;

use common::*;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use trust_rotation_crds::TrustAnchorRotation;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_inside_every_step_resumes_without_repeating_work() {
    let sim = start_sim().await;
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;

    // Whenever the status names a step not yet interrupted, SIGKILL the operator and start a
    // new process (which must first wait for the dead leader's Lease to expire).
    let killed: Arc<Mutex<Vec<String>>> = Arc::default();
    let traceparents: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let killer = {
        let ops = ops.clone();
        let killed = killed.clone();
        let traceparents = traceparents.clone();
        let api: Api<TrustAnchorRotation> = Api::all(sim.client());
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(tar)) = stream.next().await {
                let Some(status) = tar.status else { continue };
                let Some(rotation) = status.rotation else {
                    continue;
                };
                if let Some(tp) = rotation.trace_parent {
                    traceparents.lock().unwrap().insert(tp);
                }
                let Some(step) = status.current_step else {
                    continue;
                };
                if killed.lock().unwrap().contains(&step) {
                    continue;
                }
                killed.lock().unwrap().push(step);
                ops.kill_and_restart().await;
            }
        })
    };

    walkthrough(&sim, &ops).await;
    killer.abort();

    let killed = killed.lock().unwrap().clone();
    let every_step: Vec<String> = trust_rotation_steps::rotation::workflow()
        .steps()
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    assert_eq!(
        killed, every_step,
        "the operator was killed once inside every step, in order"
    );
    assert_eq!(
        traceparents.lock().unwrap().len(),
        1,
        "one trace context for the whole rotation across {} operator processes",
        killed.len() + 1
    );
    ops.stop().await;
    sim.shutdown().await;
}
