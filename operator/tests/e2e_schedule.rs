//! `spec.automation.schedule` on the cluster simulator, with the real operator binary whose
//! wall clock libfaketime moves hours ahead (its timers, on the monotonic clock, run as
//! usual): the schedule renews the trust anchor by itself and the automation carries the
//! rotation to Synced with no command; a maintenance window closing mid-rotation parks it at
//! the next disruptive step, with nothing disruptive done while parked, until the next window
//! opens; an anchor cert-manager renews outside the windows is still added to the bundle and
//! rolled to the control plane, then held before any workload restart; and a window in an
//! unknown time zone is named in the blocking message.

mod common;

use common::*;
use std::time::Duration;
use trust_rotation_crds::{ApprovalGate, Phase};
use trust_rotation_steps::schedule::OUTSIDE_WINDOWS;

const T: Duration = Duration::from_secs(60);

/// Both automations on, restarting every workload at once (the demo has a handful).
fn automation(schedule: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"automation": {
        "issuerRenewal": "Automatic",
        "workloadRestarts": "Automatic",
        "maxConcurrentWorkloads": 10,
        "schedule": schedule,
    }})
}

fn count(reasons: &[String], reason: &str) -> usize {
    reasons.iter().filter(|r| *r == reason).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_renews_the_anchor_and_the_rotation_reaches_synced_with_no_command() {
    let sim = start_sim_with_day_long_certs().await;
    let client = sim.client();
    // Two hours ahead, the operator sees the anchor (8760h, issued now) with 8758h left.
    let clock = FakeClock::new("+2h");
    let ops = Ops::new(sim.kubeconfig_path(), clock.env());
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    let old_anchor = secret_cert_fingerprint(&client, "cert-manager", "linkerd-trust-anchor").await;
    sim.oracle().reset();

    // No command: only the spec.
    patch_spec(
        &client,
        automation(serde_json::json!({"renewAnchorBefore": "8759h"})),
    )
    .await;
    let s = wait_status(&client, "the scheduled renewal", T, |s| {
        s.scheduled_renewal
            .as_ref()
            .is_some_and(|r| r.triggered_at.is_some())
    })
    .await;
    let record = s.scheduled_renewal.clone().expect("recorded");
    assert_eq!(record.anchor, old_anchor);
    assert!(
        record.reason.starts_with("scheduled renewal:")
            && record.reason.contains("renewAnchorBefore (364d23h)"),
        "{}",
        record.reason
    );
    // The new anchor has 8758h left on this clock too: without the schedule it is not
    // renewed again once this rotation is done.
    patch_spec(
        &client,
        serde_json::json!({"automation": {"schedule": null}}),
    )
    .await;

    let s = wait_status(&client, "Synced after the rotation", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none() && !s.history.is_empty()
    })
    .await;
    let new_anchor = secret_cert_fingerprint(&client, "cert-manager", "linkerd-trust-anchor").await;
    assert_ne!(new_anchor, old_anchor);
    assert_eq!(bundle_fingerprints(&client).await, [new_anchor]);
    let done = &s.history[0];
    assert!(
        done.trigger.starts_with("scheduled renewal:")
            && done
                .trigger
                .contains("spec.automation.schedule.renewAnchorBefore")
            && done.trigger.contains("trust anchor renewed"),
        "the trigger names the schedule: {}",
        done.trigger
    );
    assert_eq!(done.from_anchor.as_deref(), Some(old_anchor.as_str()));
    assert!(
        done.issuer_renewal.is_some(),
        "the issuer re-issued by the operator"
    );
    assert_eq!(
        s.scheduled_renewal.as_ref().map(|r| &r.anchor),
        Some(&old_anchor),
        "the record stays: a restarted operator does not renew that anchor again"
    );
    let reasons = event_reasons(&client).await;
    assert_eq!(count(&reasons, "AnchorRenewalTriggered"), 1, "{reasons:?}");
    assert_eq!(count(&reasons, "RotationComplete"), 1, "{reasons:?}");
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_closing_mid_rotation_parks_at_the_next_boundary_until_the_next_opens() {
    let sim = start_sim_with_day_long_certs().await;
    let client = sim.client();
    let clock = FakeClock::new("+0");
    let ops = Ops::new(sim.kubeconfig_path(), clock.env());
    ops.start().await;
    // Window A is open now (from this hour, for 2h, every day); B opens 4h after this hour.
    // Two hours on, A has closed and B is 1-2h away; four hours on, B is open.
    let hour = this_hour();
    let b_opens = hour + 4 * 3600;
    let mut spec = automation(serde_json::json!({"maintenanceWindows": [
        {"weekdays": EVERY_DAY, "start": hh_mm(hour), "duration": "2h"},
        {"weekdays": EVERY_DAY, "start": hh_mm(b_opens), "duration": "2h", "timeZone": "UTC"},
    ]}));
    // Held before the issuer moves, so that the window closes at a known point.
    spec["automation"]["approvals"] = serde_json::json!({"beforeIssuerRenewal": true});
    patch_spec(&client, spec).await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    ops.expect_metric("trust_rotation_maintenance_window_open", 1.0)
        .await;
    let old_issuer = secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await;
    sim.oracle().reset();

    // Inside the window: the expansion, and the workload restarts it needs, go ahead.
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let s = wait_status(&client, "parked for IssuerRenewal", T, |s| {
        s.blocking_message
            .as_deref()
            .is_some_and(|m| m.starts_with("awaiting approval: IssuerRenewal"))
    })
    .await;
    let id = s.rotation.clone().expect("in progress").id;
    assert!(
        !s.workload_restarts.is_empty(),
        "the operator restarted the workloads"
    );

    // The window closes mid-rotation; a person approves meanwhile.
    clock.set("+2h");
    ops.expect_metric("trust_rotation_maintenance_window_open", 0.0)
        .await;
    ops.expect_metric(
        "trust_rotation_maintenance_window_next_open_timestamp_seconds",
        b_opens as f64,
    )
    .await;
    approve(&client, ApprovalGate::IssuerRenewal, &id).await;
    let s = wait_status(&client, "parked outside the windows", T, |s| {
        s.blocking_message
            .as_deref()
            .is_some_and(|m| m.starts_with(OUTSIDE_WINDOWS))
    })
    .await;
    let message = s.blocking_message.clone().unwrap_or_default();
    let b_local = jiff::Timestamp::from_second(b_opens)
        .expect("a time")
        .strftime("%a %Y-%m-%d %H:%M UTC")
        .to_string();
    assert!(
        message.contains(&format!("the next opens {b_local}"))
            && message
                .contains("the mesh is safe to hold here (old and new anchors are both trusted)"),
        "{message}"
    );
    assert_eq!(s.phase, Some(Phase::WaitingForIdentityRotation));
    assert_eq!(s.current_step.as_deref(), Some("AwaitIssuer"));
    let rotation = s.rotation.clone().expect("in progress");
    assert_eq!(
        rotation.approvals.len(),
        1,
        "the approval is consumed all the same"
    );
    ops.expect_metric("trust_rotation_blocked", 0.0).await;

    // Parked: several looks later, nothing disruptive happened.
    let before = (
        generations(&client, "linkerd").await,
        generations(&client, APP_NS).await,
    );
    let restarts_before = s.workload_restarts.clone();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = status(&client).await;
    assert_eq!(s.blocking_message.as_deref(), Some(message.as_str()));
    assert_eq!(
        (
            generations(&client, "linkerd").await,
            generations(&client, APP_NS).await
        ),
        before,
        "no restart"
    );
    assert_eq!(s.workload_restarts, restarts_before);
    assert_eq!(
        secret_cert_fingerprint(&client, "linkerd", "linkerd-identity-issuer").await,
        old_issuer,
        "no re-issuance"
    );
    assert_eq!(
        bundle_fingerprints(&client).await.len(),
        2,
        "both roots kept"
    );
    assert!(rotation.issuer_renewal.is_none());
    assert!(
        !s.conditions
            .iter()
            .any(|c| c.reason == "StepStalled" && c.status == "False"),
        "a park is no stall: {:?}",
        s.conditions
    );

    // The next window opens: the rotation resumes by itself and completes.
    clock.set("+4h");
    let s = wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;
    assert!(s.history[0].issuer_renewal.is_some());
    assert_eq!(bundle_fingerprints(&client).await.len(), 1);
    let reasons = event_reasons(&client).await;
    assert!(
        count(&reasons, "MaintenanceWindowClosed") >= 1
            && count(&reasons, "MaintenanceWindowOpened") >= 1,
        "{reasons:?}"
    );
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

const EVERY_DAY: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The start of the current hour, in Unix seconds: window starts are set relative to it.
fn this_hour() -> i64 {
    jiff::Timestamp::now().as_second().div_euclid(3600) * 3600
}

/// `HH:MM` (UTC) of `secs`, a window's `start`.
fn hh_mm(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .expect("a time")
        .strftime("%H:%M")
        .to_string()
}

/// Generations of the Deployments in `namespace`, by name.
async fn generations(client: &kube::Client, namespace: &str) -> Vec<(String, Option<i64>)> {
    kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
        .expect("deployments")
        .into_iter()
        .map(|d| (d.metadata.name.unwrap_or_default(), d.metadata.generation))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_windows_an_anchor_renewed_by_cert_manager_is_expanded_then_held() {
    let sim = start_sim_with_day_long_certs().await;
    let client = sim.client();
    let clock = FakeClock::new("+0");
    let ops = Ops::new(sim.kubeconfig_path(), clock.env());
    ops.start().await;
    // The only window opens two hours after this hour, every day: closed now.
    let start = hh_mm(this_hour() + 2 * 3600);
    patch_spec(
        &client,
        automation(serde_json::json!({"maintenanceWindows": [
            {"weekdays": EVERY_DAY, "start": start, "duration": "1h"},
        ]})),
    )
    .await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    ops.expect_metric("trust_rotation_maintenance_window_open", 0.0)
        .await;
    let control_plane = generations(&client, "linkerd").await;
    let workloads = generations(&client, APP_NS).await;
    sim.oracle().reset();

    // cert-manager renews the anchor on its own schedule, outside any window.
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let s = wait_status(&client, "held before the workload restarts", T, |s| {
        s.blocking_message
            .as_deref()
            .is_some_and(|m| m.starts_with(OUTSIDE_WINDOWS))
    })
    .await;
    // Never held: the expansion and the control plane's restart onto it.
    assert_eq!(s.phase, Some(Phase::PropagatingTrustRoots));
    assert_eq!(s.current_step.as_deref(), Some("AwaitPropagation"));
    assert_eq!(bundle_fingerprints(&client).await.len(), 2, "old + new");
    let rolled = generations(&client, "linkerd").await;
    assert!(
        rolled
            .iter()
            .zip(&control_plane)
            .all(|((_, now), (_, before))| now > before),
        "the control plane rolled onto the expanded bundle: {control_plane:?} → {rolled:?}"
    );
    // Held: no workload restarted, each one recorded as pending.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(generations(&client, APP_NS).await, workloads);
    let s = status(&client).await;
    assert!(
        !s.workload_restarts.is_empty()
            && s.workload_restarts
                .iter()
                .all(|r| r.state == trust_rotation_crds::WorkloadRestartState::Pending),
        "{:?}",
        s.workload_restarts
    );

    // The window opens: the operator restarts them and the rotation completes.
    clock.set("+2h");
    wait_status(&client, "Synced", T, |s| {
        s.phase == Some(Phase::Synced) && s.rotation.is_none()
    })
    .await;
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}

/// A schedule the operator cannot read holds what a closed window holds, and nothing more: an
/// anchor cert-manager renews meanwhile still enters the trust bundle (holding it out would
/// not be safe to hold), and the automatic restarts wait, naming the bad field and its fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_time_zone_is_named_with_its_fix_and_holds_only_the_gated_steps() {
    let sim = start_sim().await;
    let client = sim.client();
    let ops = Ops::new(sim.kubeconfig_path(), vec![]);
    ops.start().await;
    wait_status(&client, "Synced", T, |s| s.phase == Some(Phase::Synced)).await;
    // Every day, all day: the only thing that can hold the rotation is the bad zone.
    let window = |tz: &str| serde_json::json!({"weekdays": EVERY_DAY, "start": "00:00", "duration": "24h", "timeZone": tz});
    patch_spec(
        &client,
        serde_json::json!({"automation": {"workloadRestarts": "Automatic", "schedule": {"maintenanceWindows": [
            window("UTC"), window("Europe/Berln"),
        ]}}}),
    )
    .await;
    let named = |m: &str| {
        m.contains("spec.automation.schedule.maintenanceWindows[1].timeZone")
            && m.contains("\"Europe/Berln\"")
            && m.contains("IANA time zone name such as Europe/Berlin")
    };
    let s = wait_status(&client, "the bad zone named", T, |s| {
        s.blocking_message.as_deref().is_some_and(named)
    })
    .await;
    assert!(
        s.conditions
            .iter()
            .any(|c| c.type_ == "Blocked" && c.status == "True"),
        "{:?}",
        s.conditions
    );

    // cert-manager renews the anchor: the bundle takes it in, the restarts wait.
    let workloads = generations(&client, APP_NS).await;
    cmctl_renew(&client, "cert-manager", "linkerd-trust-anchor").await;
    let s = wait_status(
        &client,
        "the automatic restarts held by the bad zone",
        T,
        |s| {
            s.phase == Some(Phase::PropagatingTrustRoots)
                && s.blocking_message.as_deref().is_some_and(named)
        },
    )
    .await;
    assert!(
        s.blocking_message
            .as_deref()
            .is_some_and(|m| m.contains("holds what a closed maintenance window holds")),
        "{:?}",
        s.blocking_message
    );
    assert_eq!(
        bundle_fingerprints(&client).await.len(),
        2,
        "the renewed anchor entered the trust bundle next to the old one"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        generations(&client, APP_NS).await,
        workloads,
        "no workload restarted"
    );

    // Fixed: the restarts go on.
    patch_spec(
        &client,
        serde_json::json!({"automation": {"schedule": {"maintenanceWindows": [
            window("UTC"), window("Europe/Berlin"),
        ]}}}),
    )
    .await;
    wait_status(&client, "the restarts done", T, |s| {
        s.phase == Some(Phase::WaitingForIdentityRotation) && s.blocking_message.is_none()
    })
    .await;
    assert_mtls_intact(&sim);
    ops.stop().await;
    sim.shutdown().await;
}
