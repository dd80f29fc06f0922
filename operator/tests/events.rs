//! The operator's Events against the simulator: published in order by a background task, and
//! not by a replica that no longer leads.

mod common;

use common::{event_reasons, start_bare_sim};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use trust_rotation_crds::{TrustAnchorRotation, TrustAnchorRotationSpec};
use trust_rotation_steps::runner::{EventKind, EventRecord, EventSink, KubeEvents};

fn record(reason: &'static str) -> EventRecord {
    EventRecord {
        kind: EventKind::Normal,
        reason,
        action: format!("Test{reason}"),
        note: format!("note of {reason}"),
    }
}

/// Reasons of the Events about the rotation, oldest first, once there are `n` (or after 20 s).
async fn reasons(client: &kube::Client, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = event_reasons(client).await;
        if out.len() >= n || tokio::time::Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_out_in_order_and_only_while_leading() {
    let sim = start_bare_sim().await;
    let client = sim.client();
    // What the Events are about (the API server does not check that it exists).
    let mut tar = TrustAnchorRotation::new("cluster", TrustAnchorRotationSpec::default());
    tar.metadata.uid = Some("8d1f0c2a-0000-4000-8000-000000000001".into());

    let leading = Arc::new(AtomicBool::new(true));
    let gate = {
        let leading = leading.clone();
        Arc::new(move || leading.load(Ordering::SeqCst)) as trust_rotation_steps::runner::WriteGate
    };
    let events = KubeEvents::new(client.clone(), Some("replica-a".into()), Some(gate));

    // In the order published.
    for reason in ["First", "Second", "Third"] {
        events.publish(&tar, &record(reason)).await;
    }
    assert_eq!(reasons(&client, 3).await, ["First", "Second", "Third"]);

    // A replica that lost its Lease publishes nothing, not even what it had queued.
    leading.store(false, Ordering::SeqCst);
    events.publish(&tar, &record("WhileFollowing")).await;
    // (The publishing task takes it off the queue at once; leave it ample time.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    leading.store(true, Ordering::SeqCst);
    events.publish(&tar, &record("Fourth")).await;
    assert_eq!(
        reasons(&client, 4).await,
        ["First", "Second", "Third", "Fourth"]
    );
    sim.shutdown().await;
}
