//! `linkerd trust approve` through the real binary, against a rotation driven by the real
//! operator on the simulator with `spec.automation.approvals.beforeIssuerRenewal`: what it
//! prints and exits with when there is nothing to approve, for a step the spec does not gate,
//! for another rotation, at the parked rotation (which then goes on), and once consumed.

mod rotating;

use kube::api::{Api, Patch, PatchParams};
use rotating::{cli, restart_app, status, wait_phase, wait_status, STEP_TIMEOUT};
use trust_rotation_crds::{ApprovalGate, Phase, TrustAnchorRotation, TrustAnchorRotationStatus};

const ANNOTATION: &str = "trust.linkerd.io/approve";

async fn annotation(client: &kube::Client) -> Option<String> {
    Api::<TrustAnchorRotation>::all(client.clone())
        .get("cluster")
        .await
        .expect("the rotation")
        .metadata
        .annotations
        .and_then(|a| a.get(ANNOTATION).cloned())
}

fn parked(s: &TrustAnchorRotationStatus) -> bool {
    s.blocking_message
        .as_deref()
        .is_some_and(|m| m.starts_with("awaiting approval: IssuerRenewal"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_parked_refused_foreign_not_gated_consumed_and_bad_step() {
    let rotating::Rotating {
        sim,
        kubeconfig: kc,
        operator,
    } = rotating::start().await;
    let client = sim.client();
    Api::<TrustAnchorRotation>::all(client.clone())
        .patch(
            "cluster",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"automation": {
                "approvals": {"beforeIssuerRenewal": true}}}})),
        )
        .await
        .expect("spec patched");
    wait_phase(&client, Phase::Synced).await;

    // A bad step name is clap's usage error, before anything is read.
    let o = cli(&kc, &["approve", "IssuerRenewl"]).await;
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert_eq!(o.stdout, "");
    assert!(
        o.stderr
            .contains("invalid value 'IssuerRenewl' for '<STEP>'")
            && o.stderr.contains(
                "unknown step \"IssuerRenewl\" to approve (IssuerRenewal or RootRemoval)"
            ),
        "{}",
        o.stderr
    );

    // Nothing in progress: refused, one line, nothing written.
    let o = cli(&kc, &["approve", "IssuerRenewal"]).await;
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert_eq!(o.stdout, "");
    assert_eq!(
        o.stderr,
        "Error: no rotation is in progress on TrustAnchorRotation cluster, so there is nothing \
         to approve (an approval names the rotation it is for; pass --rotation-id to approve \
         one ahead)\n"
    );
    assert_eq!(annotation(&client).await, None);

    let o = cli(&kc, &["renew", "anchor"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    wait_phase(&client, Phase::PropagatingTrustRoots).await;
    let id = status(&client)
        .await
        .and_then(|s| s.rotation)
        .expect("a rotation in progress")
        .id;

    // RootRemoval is not gated by this spec: written, with a note that nothing waits for it
    // (the step name is case-insensitive, the annotation canonical).
    let o = cli(&kc, &["approve", "rootremoval"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout,
        format!(
            "Approved RootRemoval for rotation {id} ({ANNOTATION} RootRemoval@{id} on \
             TrustAnchorRotation cluster).\nNote: spec.automation.approvals does not ask for \
             RootRemoval approval, so the rotation does not wait for it.\n"
        )
    );
    assert_eq!(annotation(&client).await, Some(format!("RootRemoval@{id}")));

    restart_app(&kc).await;
    let s = wait_status(&client, "parked for IssuerRenewal", STEP_TIMEOUT, parked).await;
    assert_eq!(s.phase, Some(Phase::WaitingForIdentityRotation));

    // An approval for another rotation is written but says it does not let this one go on.
    let o = cli(
        &kc,
        &[
            "approve",
            "IssuerRenewal",
            "--rotation-id",
            "an-earlier-one",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout,
        format!(
            "Approved IssuerRenewal for rotation an-earlier-one ({ANNOTATION} \
             RootRemoval@{id},IssuerRenewal@an-earlier-one on TrustAnchorRotation cluster).\n\
             Note: the rotation in progress is {id}, not an-earlier-one: this approval does not \
             let it go on.\n"
        )
    );
    wait_status(&client, "the stale approval named", STEP_TIMEOUT, |s| {
        s.blocking_message
            .as_deref()
            .is_some_and(|m| m.contains("names another rotation"))
    })
    .await;

    // The real approval replaces the stale one and keeps the other step's.
    let o = cli(&kc, &["approve", "IssuerRenewal"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout,
        format!(
            "Approved IssuerRenewal for rotation {id} ({ANNOTATION} \
             RootRemoval@{id},IssuerRenewal@{id} on TrustAnchorRotation cluster).\n\
             The operator goes on at its next look and records the approval in \
             .status.rotation.approvals; follow it with `linkerd trust status --watch`.\n"
        )
    );
    let written = format!("RootRemoval@{id},IssuerRenewal@{id}");
    assert_eq!(annotation(&client).await.as_deref(), Some(written.as_str()));

    // The operator goes on: the approval is recorded, and (issuerRenewal: Manual) it now waits
    // for the person's `renew issuer`.
    let s = wait_status(&client, "the approval consumed", STEP_TIMEOUT, |s| {
        s.rotation.as_ref().is_some_and(|r| !r.approvals.is_empty()) && !parked(s)
    })
    .await;
    let consumed = &s.rotation.as_ref().expect("in progress").approvals;
    assert_eq!(consumed.len(), 1, "{consumed:?}");
    assert_eq!(consumed[0].step, ApprovalGate::IssuerRenewal);
    assert_eq!(consumed[0].rotation_id, id);
    assert_eq!(consumed[0].approved_by.as_deref(), Some("linkerd-trust"));
    let at = consumed[0].consumed_at.0.strftime("%Y-%m-%dT%H:%M:%SZ");

    // Approving again: nothing written, the record shown.
    let o = cli(&kc, &["approve", "IssuerRenewal"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout,
        format!(
            "IssuerRenewal was already approved for rotation {id} (consumed at {at}, written by \
             linkerd-trust); nothing changed.\n"
        )
    );
    assert_eq!(annotation(&client).await.as_deref(), Some(written.as_str()));

    let o = cli(&kc, &["renew", "issuer"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    wait_phase(&client, Phase::RenewingWorkloadCerts).await;
    restart_app(&kc).await;
    wait_phase(&client, Phase::RemovingOldTrustRoots).await;
    restart_app(&kc).await;
    let s = wait_status(&client, "Synced", STEP_TIMEOUT, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;
    // RootRemoval, not gated, was never consumed.
    assert_eq!(
        s.history[0]
            .approvals
            .iter()
            .map(|a| a.step)
            .collect::<Vec<_>>(),
        [ApprovalGate::IssuerRenewal]
    );

    // Finished: refused again, the annotation left as it was.
    let o = cli(&kc, &["approve", "RootRemoval"]).await;
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(
        o.stderr
            .starts_with("Error: no rotation is in progress on TrustAnchorRotation cluster"),
        "{}",
        o.stderr
    );
    assert_eq!(annotation(&client).await.as_deref(), Some(written.as_str()));

    operator.abort();
    sim.shutdown().await;
}
