//! `linkerd trust status [--watch]`: the TrustAnchorRotation's phase and counts, followed live.

use crate::client::explain_read;
use futures::StreamExt;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use trust_rotation_crds::{Phase, TrustAnchorRotation, TrustAnchorRotationStatus};

/// The operator's workload restarts in the step in progress, against the plan
/// (`linkerd trust plan`): `restarts 3/10 (restarting emojivoto/deployment/web; 1 skipped)`,
/// from `status.workloadRestarts`. `None` when the step has no record (no rotation, a step that
/// restarts nothing, `workloadRestarts: Manual`).
pub fn restarts(status: &TrustAnchorRotationStatus) -> Option<String> {
    use trust_rotation_crds::WorkloadRestartState as S;
    let id = &status.rotation.as_ref()?.id;
    let step = status.current_step.as_deref()?;
    let records: Vec<_> = status
        .workload_restarts
        .iter()
        .filter(|r| &r.rotation_id == id && r.step == step)
        .collect();
    if records.is_empty() {
        return None;
    }
    let count = |s: S| records.iter().filter(|r| r.state == s).count();
    let restarting: Vec<&str> = records
        .iter()
        .filter(|r| r.state == S::Restarting)
        .map(|r| r.workload.as_str())
        .collect();
    let mut parts = Vec::new();
    if !restarting.is_empty() {
        parts.push(format!("restarting {}", restarting.join(", ")));
    }
    if count(S::Pending) > 0 {
        parts.push(format!("{} pending", count(S::Pending)));
    }
    if count(S::Skipped) > 0 {
        parts.push(format!("{} skipped", count(S::Skipped)));
    }
    let mut s = format!("restarts {}/{}", count(S::Restarted), records.len());
    if !parts.is_empty() {
        s.push_str(&format!(" ({})", parts.join("; ")));
    }
    Some(s)
}

/// One status line: `<time>  <phase>  bundle c/t  certificates c/t[  step S][  restarts r/t
/// (...)][  blocked: msg]`.
pub fn line(at: jiff::Timestamp, status: Option<&TrustAnchorRotationStatus>) -> String {
    let phase = status
        .and_then(|s| s.phase)
        .map(|p| p.to_string())
        .unwrap_or_else(|| "Pending".into());
    let count = |c: Option<&trust_rotation_crds::Convergence>| {
        c.map(|c| c.summary.clone()).unwrap_or_else(|| "-".into())
    };
    let mut s = format!(
        "{}  {phase:<27} bundle {:<9} certificates {}",
        at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        count(status.and_then(|s| s.trust_bundle.as_ref())),
        count(status.and_then(|s| s.workload_certificates.as_ref())),
    );
    if let Some(step) = status.and_then(|s| s.current_step.as_deref()) {
        s.push_str(&format!("  step {step}"));
    }
    if let Some(r) = status.and_then(restarts) {
        s.push_str(&format!("  {r}"));
    }
    if let Some(m) = status
        .and_then(|s| s.blocking_message.as_deref())
        .filter(|m| !m.is_empty())
    {
        s.push_str(&format!("  blocked: {m}"));
    }
    s
}

/// What a line shows, to print only changes.
fn key(status: Option<&TrustAnchorRotationStatus>) -> String {
    line(jiff::Timestamp::UNIX_EPOCH, status)
}

/// Prints the current status, and with `watch`, every change until the rotation is Synced
/// again (after having left Synced, or right away when no rotation is in progress).
pub async fn run(client: &kube::Client, name: &str, watch: bool) -> anyhow::Result<()> {
    let api: Api<TrustAnchorRotation> = Api::all(client.clone());
    let tar = trust_rotation_steps::read::rotation(client, name)
        .await
        .map_err(|e| anyhow::anyhow!(explain_read(&e.or_pass("--rotation"))))?;
    println!("{}", line(jiff::Timestamp::now(), tar.status.as_ref()));
    if !watch {
        return Ok(());
    }
    let mut last = key(tar.status.as_ref());
    let mut left_synced = is_rotating(tar.status.as_ref());
    if !left_synced && phase_of(tar.status.as_ref()) == Some(Phase::Synced) {
        eprintln!("(Synced; waiting for a rotation to start, Ctrl-C to stop)");
    }
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // Back off on errors instead of spinning (e.g. while the API server is unreachable).
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(event) = event else {
            anyhow::bail!("the watch on TrustAnchorRotation {name} ended unexpectedly");
        };
        let obj = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
            Ok(watcher::Event::Delete(_)) => {
                anyhow::bail!("TrustAnchorRotation {name} was deleted")
            }
            Ok(_) => continue,
            Err(e) => {
                eprintln!("watch interrupted ({e}); retrying");
                continue;
            }
        };
        let status = obj.status.as_ref();
        let k = key(status);
        if k != last {
            println!("{}", line(jiff::Timestamp::now(), status));
            last = k;
        }
        if is_rotating(status) {
            left_synced = true;
        } else if left_synced && phase_of(status) == Some(Phase::Synced) {
            return Ok(());
        }
    }
}

fn phase_of(s: Option<&TrustAnchorRotationStatus>) -> Option<Phase> {
    s.and_then(|s| s.phase)
}

fn is_rotating(s: Option<&TrustAnchorRotationStatus>) -> bool {
    matches!(phase_of(s), Some(p) if p != Phase::Synced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use trust_rotation_crds::{RotationRecord, WorkloadRestartRecord, WorkloadRestartState};

    fn record(step: &str, workload: &str, state: WorkloadRestartState) -> WorkloadRestartRecord {
        WorkloadRestartRecord {
            rotation_id: "r1".into(),
            step: step.into(),
            workload: workload.into(),
            state,
            at: Time(jiff::Timestamp::UNIX_EPOCH),
            message: None,
        }
    }

    #[test]
    fn the_line_shows_restart_progress_of_the_step_in_progress() {
        use WorkloadRestartState::*;
        let mut workload_restarts = vec![
            // The previous step's records are not this step's progress.
            record("AwaitPropagation", "emojivoto/deployment/emoji", Restarted),
            record(
                "AwaitPropagationReduced",
                "emojivoto/daemonset/node-agent",
                Restarted,
            ),
            record(
                "AwaitPropagationReduced",
                "emojivoto/deployment/emoji",
                Restarted,
            ),
            record(
                "AwaitPropagationReduced",
                "emojivoto/deployment/voting",
                Restarted,
            ),
            record(
                "AwaitPropagationReduced",
                "emojivoto/deployment/web",
                Restarting,
            ),
            record(
                "AwaitPropagationReduced",
                "emojivoto/statefulset/vote-store",
                Skipped,
            ),
            record("AwaitPropagationReduced", "emojivoto/deployment/z", Pending),
        ];
        // Another rotation's are not either.
        workload_restarts.push(WorkloadRestartRecord {
            rotation_id: "r0".into(),
            ..record(
                "AwaitPropagationReduced",
                "emojivoto/deployment/old",
                Restarted,
            )
        });
        let status = TrustAnchorRotationStatus {
            phase: Some(Phase::RemovingOldTrustRoots),
            current_step: Some("AwaitPropagationReduced".into()),
            rotation: Some(RotationRecord {
                id: "r1".into(),
                trigger: "t".into(),
                from_anchor: None,
                to_anchor: None,
                superseded_anchors: vec![],
                started_at: Time(jiff::Timestamp::UNIX_EPOCH),
                finished_at: None,
                trace_parent: None,
                issuer_renewal: None,
                approvals: vec![],
            }),
            workload_restarts,
            ..Default::default()
        };
        let l = line(jiff::Timestamp::UNIX_EPOCH, Some(&status));
        assert_eq!(
            l,
            "1970-01-01T00:00:00Z  RemovingOldTrustRoots       bundle -         certificates -  \
             step AwaitPropagationReduced  restarts 3/6 (restarting emojivoto/deployment/web; \
             1 pending; 1 skipped)"
        );
        // The phase stays the second field (scripts split on whitespace).
        assert_eq!(l.split_whitespace().nth(1), Some("RemovingOldTrustRoots"));
        // A step with no record, or no rotation: nothing about restarts.
        let waiting = TrustAnchorRotationStatus {
            current_step: Some("AwaitIssuer".into()),
            ..status.clone()
        };
        assert!(!line(jiff::Timestamp::UNIX_EPOCH, Some(&waiting)).contains("restarts"));
        assert_eq!(restarts(&TrustAnchorRotationStatus::default()), None);
    }
}
